"""Usage events from coding agents' local session logs, for `tokensite-client import`.

Claude Code keeps one JSONL file per session under ~/.claude/projects/<project>/<session>.jsonl:
an `assistant` line per response content block, carrying the Anthropic `message.usage`, the
`requestId` and the `sessionId`; a `system` line with `subtype` "api_error" for every refused
attempt it retried, with the status and the delay it waited (`retryInMs`).
Codex CLI keeps ~/.codex/sessions/YYYY/MM/DD/rollout-<time>-<session>.jsonl: a `session_meta`
line, `turn_context` lines naming the model, and an `event_msg` of type `token_count` after each
model response, whose `info.last_token_usage` is that response's usage.

Every event gets the id the OTLP receiver derives for the same call (tokensite_client.agent_ids),
so importing twice, or after the agent's telemetry already reported the calls, counts nothing twice.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .agent_ids import CLAUDE_CODE, CODEX, claude_code_throttle_id, claude_code_usage_id, codex_usage_id
from .usage import canonical_service_tier
from .events import DEVELOPER_ATTRIBUTE, SOURCE_ATTRIBUTE, SOURCE_VERSION_ATTRIBUTE, THROTTLE_STATUSES

CLAUDE_CODE_HOME_GLOB = ("~/.claude/projects", "**/*.jsonl")
CODEX_HOME_GLOB = ("~/.codex/sessions", "**/rollout-*.jsonl")


def jsonl_files(path: Path | None, default: tuple[str, str]) -> list[Path]:
    """The files to read: PATH itself if it is a file, else its matching files (default: the agent's home)."""
    root = Path(path or default[0]).expanduser()
    if root.is_file():
        return [root]
    return sorted(root.glob(default[1]))


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash: the rest of the file is still good
            if isinstance(value, dict):
                yield value


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _attributes(source: str, version: str, developer: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {SOURCE_ATTRIBUTE: source, "imported_from": "local logs"}
    if version:
        attributes[SOURCE_VERSION_ATTRIBUTE] = version[:200]
    if developer:
        attributes[DEVELOPER_ATTRIBUTE] = developer[:200]
    return attributes


def claude_code_events(files: Iterable[Path], *, developer: str = "") -> Iterator[dict[str, Any]]:
    """Usage events (one per request id) and throttle events from Claude Code session logs."""
    for path in files:
        responses: dict[str, dict[str, Any]] = {}
        refused: list[dict[str, Any]] = []
        throttles: list[dict[str, Any]] = []
        for line in _lines(path):
            if line.get("type") == "system" and line.get("subtype") == "api_error":
                error = line.get("error") if isinstance(line.get("error"), dict) else {}
                if error.get("status") in THROTTLE_STATUSES and isinstance(line.get("retryInMs"), (int, float)):
                    refused.append(line)
                continue
            message = line.get("message")
            request_id = line.get("requestId")
            if line.get("type") != "assistant" or not isinstance(message, dict) or not request_id:
                continue
            usage = message.get("usage")
            session_id = line.get("sessionId")
            if not isinstance(usage, dict) or not session_id or message.get("model") in (None, "<synthetic>"):
                continue
            # One response is written as several lines (one per content block); the last holds the final usage.
            responses[request_id] = line
            for error_line in refused:
                throttles.append(_claude_code_throttle(error_line, line, developer))
            refused = []
        yield from throttles
        for request_id, line in responses.items():
            yield _claude_code_usage(request_id, line, developer)


def _claude_code_usage(request_id: str, line: dict[str, Any], developer: str) -> dict[str, Any]:
    message, session_id = line["message"], line["sessionId"]
    usage = message["usage"]
    cache_read = _int(usage.get("cache_read_input_tokens"))
    cache_write = _int(usage.get("cache_creation_input_tokens"))
    cache_creation = usage.get("cache_creation") if isinstance(usage.get("cache_creation"), dict) else {}
    attributes = _attributes(CLAUDE_CODE, str(line.get("version") or ""), developer)
    attributes["request_id"] = request_id
    event = {
        "event_id": claude_code_usage_id(session_id, request_id),
        "type": "usage",
        "session_id": session_id,
        "step": "subagent" if line.get("isSidechain") else "main",
        "provider": "anthropic",
        "model": message["model"],
        "timestamp": line.get("timestamp"),
        "duration_ms": 0,
        # Anthropic's input_tokens leaves the cache out; DESIGN.md section 1 counts it in.
        "input_tokens": _int(usage.get("input_tokens")) + cache_read + cache_write,
        "output_tokens": _int(usage.get("output_tokens")),
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "call_id": request_id,
        "attributes": attributes,
    }
    if _int(cache_creation.get("ephemeral_1h_input_tokens")):
        event["cache_write_1h_tokens"] = _int(cache_creation.get("ephemeral_1h_input_tokens"))
    if (tier := canonical_service_tier(usage.get("service_tier"))) is not None:
        event["service_tier"] = tier
    return event


def _claude_code_throttle(error_line: dict[str, Any], answered: dict[str, Any], developer: str) -> dict[str, Any]:
    session_id, request_id = answered["sessionId"], answered["requestId"]
    attempt = max(1, _int(error_line.get("retryAttempt")) or 1)
    return {
        "event_id": claude_code_throttle_id(session_id, request_id, attempt),
        "type": "throttle",
        "session_id": session_id,
        "step": "subagent" if answered.get("isSidechain") else "main",
        "provider": "anthropic",
        "model": answered["message"].get("model", ""),
        "timestamp": error_line.get("timestamp"),
        "wait_ms": float(error_line["retryInMs"]),
        "status_code": error_line["error"]["status"],
        "attempt": attempt,
        "call_id": request_id,
        "attributes": _attributes(CLAUDE_CODE, str(error_line.get("version") or ""), developer),
    }


def codex_events(files: Iterable[Path], *, developer: str = "") -> Iterator[dict[str, Any]]:
    """One usage event per model response in Codex CLI rollout logs."""
    for path in files:
        session_id, version, model = "", "", ""
        seen: set[str] = set()
        for line in _lines(path):
            payload = line.get("payload") if isinstance(line.get("payload"), dict) else {}
            kind = line.get("type")
            if kind == "session_meta":
                session_id = str(payload.get("id") or payload.get("session_id") or "")
                version = str(payload.get("cli_version") or "")
            elif kind == "turn_context":
                model = str(payload.get("model") or model)
            elif kind == "event_msg" and payload.get("type") == "token_count":
                info = payload.get("info") if isinstance(payload.get("info"), dict) else {}
                last = info.get("last_token_usage")
                if not isinstance(last, dict) or not session_id or not model:
                    continue
                counts = {"input_tokens": _int(last.get("input_tokens")),
                          "cached_tokens": _int(last.get("cached_input_tokens")),
                          "output_tokens": _int(last.get("output_tokens")),
                          "reasoning_tokens": _int(last.get("reasoning_output_tokens"))}
                event_id = codex_usage_id(session_id, **counts)
                if event_id in seen:  # Codex repeats the last usage when only its rate limits changed
                    continue
                seen.add(event_id)
                yield {
                    "event_id": event_id,
                    "type": "usage",
                    "session_id": session_id,
                    "step": "main",
                    "provider": "openai",
                    "model": model,
                    "timestamp": line.get("timestamp"),
                    "duration_ms": 0,
                    "input_tokens": counts["input_tokens"],
                    "output_tokens": counts["output_tokens"],
                    "cache_read_tokens": counts["cached_tokens"],
                    "cache_write_tokens": _int(last.get("cache_write_input_tokens")),
                    "thought_tokens": counts["reasoning_tokens"],
                    "attributes": _attributes(CODEX, version, developer),
                }
