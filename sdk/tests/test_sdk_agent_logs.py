"""Reading coding agents' local session logs (tokensite_client.agent_logs), shaped as Claude Code
2.1 and Codex CLI 0.171 write them."""

from __future__ import annotations

import json
from pathlib import Path

from tokensite_client.agent_ids import claude_code_usage_id, codex_usage_id
from tokensite_client.agent_logs import claude_code_events, codex_events

USAGE = {"input_tokens": 3, "cache_creation_input_tokens": 40, "cache_read_input_tokens": 500, "output_tokens": 7}


def _assistant(request_id: str, output_tokens: int, model: str = "claude-sonnet-4-5-20250929", **extra) -> dict:
    return {"type": "assistant", "sessionId": "s-1", "requestId": request_id, "timestamp": "2026-11-20T09:00:00Z",
            "version": "2.1.332", "message": {"model": model, "usage": dict(USAGE, output_tokens=output_tokens)},
            **extra}


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_response_written_as_several_lines_is_one_call_with_its_final_usage(tmp_path):
    log = _write(tmp_path / "s-1.jsonl", [
        _assistant("req_1", 1), _assistant("req_1", 7), '{"type": "assistant", "cut sh',
        _assistant("req_2", 9, model="<synthetic>"), _assistant("req_3", 2, isSidechain=True)])

    events = list(claude_code_events([log], developer="ada@example.com"))

    assert [(e["event_id"], e["step"], e["output_tokens"]) for e in events] == [
        (claude_code_usage_id("s-1", "req_1"), "main", 7), (claude_code_usage_id("s-1", "req_3"), "subagent", 2)]
    assert (events[0]["input_tokens"], events[0]["cache_read_tokens"], events[0]["cache_write_tokens"]) == (543, 500, 40)
    assert events[0]["attributes"] == {"source": "claude-code", "imported_from": "local logs",
                                       "source_version": "2.1.332", "user": "ada@example.com", "request_id": "req_1"}


def test_retried_overload_is_a_throttle_with_the_delay_claude_code_waited(tmp_path):
    error = {"type": "system", "subtype": "api_error", "error": {"status": 529}, "retryInMs": 2250,
             "retryAttempt": 1, "timestamp": "2026-11-20T08:59:58Z"}
    not_throttling = dict(error, error={"status": 401})
    log = _write(tmp_path / "s-1.jsonl", [not_throttling, error, _assistant("req_1", 7)])

    throttle, usage = claude_code_events([log])

    assert (throttle["type"], throttle["wait_ms"], throttle["status_code"], throttle["call_id"]) == (
        "throttle", 2250.0, 529, "req_1")
    assert usage["type"] == "usage"


def test_codex_response_usage_counted_once_though_its_token_count_repeats(tmp_path):
    usage = {"input_tokens": 900, "cached_input_tokens": 512, "output_tokens": 80, "reasoning_output_tokens": 16}
    token_count = {"type": "event_msg", "timestamp": "2026-11-20T09:00:01Z",
                   "payload": {"type": "token_count", "info": {"last_token_usage": usage}}}
    log = _write(tmp_path / "rollout-2026-11-20T09-00-00-c-1.jsonl", [
        {"type": "session_meta", "payload": {"id": "c-1", "cli_version": "0.171.0"}},
        {"type": "event_msg", "payload": {"type": "token_count", "info": None}},
        {"type": "turn_context", "payload": {"model": "gpt-5-codex"}},
        token_count, token_count])

    (event,) = codex_events([log])

    assert event["event_id"] == codex_usage_id("c-1", input_tokens=900, cached_tokens=512, output_tokens=80,
                                               reasoning_tokens=16)
    assert (event["input_tokens"], event["cache_read_tokens"], event["output_tokens"], event["thought_tokens"]) == (
        900, 512, 80, 16)
    assert (event["model"], event["attributes"]["source_version"]) == ("gpt-5-codex", "0.171.0")
