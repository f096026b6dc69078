"""Deterministic event ids shared by the OTLP receiver and `tokensite-client import`.

One model call must get the same event id whichever way it reaches TokenSite (a log record, a span,
an exporter's resend, or a backfill from the agent's local JSONL logs), so the server's idempotency
counts it once. The server's OTLP sources import these functions from here: never change the
namespace or the parts, or stored ids stop matching.
"""
from __future__ import annotations

import uuid

EVENT_ID_NAMESPACE = uuid.UUID("5f6b1c1e-3a51-4c52-9a43-0b7d2f3e8a11")

CLAUDE_CODE = "claude-code"
CODEX = "codex"


def event_id_for(*parts: object) -> str:
    """uuid5 over the fixed namespace and the parts joined by a unit separator (None counts as "")."""
    text = "\x1f".join("" if part is None else str(part) for part in parts)
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, text))


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
