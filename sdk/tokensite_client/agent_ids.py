"""Deterministic event ids shared by the OTLP receiver and `tokensite-client import`.

One model call must get the same event id whichever way it reaches TokenSite (a log record, a span,
an exporter's resend, or a backfill from the agent's local JSONL logs), so the server's idempotency
counts it once. The server's OTLP sources import these functions from here: never change the
namespace or the parts, or stored ids stop matching.
"""
from __future__ import annotations

import hashlib
import uuid

EVENT_ID_NAMESPACE = uuid.UUID("5f6b1c1e-3a51-4c52-9a43-0b7d2f3e8a11")
_NAMESPACE_BYTES = EVENT_ID_NAMESPACE.bytes
# The character after the version nibble of a uuid5's text: the RFC 4122 variant (binary 10)
# over the two low bits of the hash's nibble at that place.
_VARIANT_DIGITS = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}

CLAUDE_CODE = "claude-code"
CODEX = "codex"


def event_id_for(*parts: object) -> str:
    """uuid5 over the fixed namespace and the parts joined by a unit separator (None counts as "")."""
    text = "\x1f".join(["" if part is None else str(part) for part in parts])
    # str(uuid.uuid5(EVENT_ID_NAMESPACE, text)) spelled out without the UUID object, because the
    # OTLP receiver derives one per record: the first 16 bytes of SHA-1 over the namespace and the
    # UTF-8 text, with version 5 and the RFC 4122 variant set. tests/sdk/test_agent_ids.py holds it
    # equal to uuid.uuid5 over many inputs.
    digest = hashlib.sha1(_NAMESPACE_BYTES + text.encode("utf-8"), usedforsecurity=False).hexdigest()
    return (f"{digest[:8]}-{digest[8:12]}-5{digest[13:16]}-{_VARIANT_DIGITS[digest[16]]}{digest[17:20]}-"
            f"{digest[20:32]}")


def claude_code_usage_id(session_id: str, request_id: str) -> str:
    """A Claude Code call: its Anthropic request id (telemetry `request_id`, JSONL `requestId`)."""
    return event_id_for(CLAUDE_CODE, session_id, request_id, "usage")


def codex_usage_id(conversation_id: str, *, input_tokens: int, cached_tokens: int, output_tokens: int,
                   reasoning_tokens: int) -> str:
    """A Codex CLI call. Its telemetry carries no response id, so the call is named by its
    conversation and its exact usage: a conversation's input grows with every call (each call
    re-sends the history), so two calls of one conversation do not share all four counts.
    """
    return event_id_for(CODEX, conversation_id, input_tokens, cached_tokens, output_tokens, reasoning_tokens,
                        "usage")


def claude_code_throttle_id(session_id: str, request_id: str, attempt: int) -> str:
    """A refused attempt of a Claude Code call (trace attempt events, JSONL api_error retries)."""
    return event_id_for(CLAUDE_CODE, session_id, request_id, "throttle", attempt)
