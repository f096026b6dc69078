"""Codex CLI (service.name "codex_exec", "codex_cli_rs", "codex-tui"...; log events `codex.*`).

What Codex CLI 0.171 sends (fixtures in tests/otlp/agents/fixtures/codex_*). Its log records carry
no record timestamp (time_unix_nano 0): the time is the `event.timestamp` attribute.
- `codex.sse_event` with `event.kind` = `response.completed`: the call's usage, counted in the
  OpenAI Responses convention (`input_token_count` includes `cached_token_count`,
  `output_token_count` includes `reasoning_token_count`) and `ttft_ms`: the usage events.
  Its `tool_token_count` is the call's TOTAL (input + output) in this version, not tool-prompt
  tokens, so it is not read.
- `codex.api_request` per HTTP attempt (`http.response.status_code`, `duration_ms`, `attempt`):
  a 429/503/529 becomes a throttle event whose wait is the gap to the next attempt's start
  (agent_attempts); the attempt that succeeded gives the call's start and so its duration.
- spans (hundreds per turn, none with usage) and metrics: acknowledged, never counted.
The event id of a call is tokensite_client.agent_ids.codex_usage_id, which the JSONL backfill
derives from the session's `token_count` records as well.
"""
from __future__ import annotations

from datetime import datetime

from tokensite_client.agent_ids import CODEX, codex_usage_id
from tokensite_client.events import THROTTLE_STATUSES

from apps.otlp.records import SIGNAL_LOGS, TelemetryRecord
from apps.otlp.sources import (
    SourceOutput,
    as_float,
    as_int,
    as_text,
    event_attributes,
    event_id_for,
    iso_from_unix_nano,
)
from apps.otlp.sources.agent_attempts import attempt_failed, attempt_start_of, attempt_started



def _time_ns(record: TelemetryRecord) -> int:
    if record.start_unix_nano:
        return record.start_unix_nano
    text = as_text(record.get("event.timestamp"))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if moment.tzinfo is None:
        return 0
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def _event_name(record: TelemetryRecord) -> str:
    # Codex's LogRecord.event_name is its tracing call site ("event otel/src/...rs:837"); the event
    # is named in the event.name attribute.
    return as_text(record.attributes.get("event.name")) or record.name


class CodexSource:
    name = CODEX

    def claims(self, record: TelemetryRecord) -> bool:
        service = record.service_name
        return (service.startswith("codex") or _event_name(record).startswith("codex.")
                or record.scope.startswith("codex_"))

    def convert(self, records: list[TelemetryRecord]) -> SourceOutput:
        output = SourceOutput()
        for record in sorted(records, key=_time_ns):
            name = _event_name(record) if record.signal == SIGNAL_LOGS else ""
            if name == "codex.sse_event" and as_text(record.get("event.kind")) == "response.completed" \
                    and record.get("input_token_count") is not None:
                self._usage(record, output)
            elif name == "codex.api_request":
                self._attempt(record, output)
            else:
                output.ignored += 1
        return output

    def _common(self, record: TelemetryRecord) -> dict:
        return {
            "session_id": as_text(record.get("conversation.id")),
            "provider": "openai",
            "model": as_text(record.get("model")) or as_text(record.get("slug")),
            "step": "main",
        }

    def _attributes(self, record: TelemetryRecord, extra: dict | None = None) -> dict:
        version = as_text(record.get("app.version")) or record.service_version
        return event_attributes(record, source=record.service_name or "codex", version=version, extra=extra)

    def _call_id(self, session_id: str, started_ns: int) -> str:
        return f"{session_id}@{started_ns // 1_000_000}"

    def _attempt(self, record: TelemetryRecord, output: SourceOutput) -> None:
        common = self._common(record)
        ended_ns = _time_ns(record)
        if not common["session_id"] or not ended_ns:
            output.ignored += 1
            return
        status = as_int(record.get("http.response.status_code"))
        duration_ms = max(as_float(record.get("duration_ms")) or 0.0, 0.0)
        started_ns = ended_ns - int(duration_ms * 1_000_000)
        failures = attempt_started(source=CODEX, session_id=common["session_id"], call_key="responses",
                                   started_ns=started_ns)
        for failure in failures:
            output.events.append({
                "event_id": event_id_for(CODEX, common["session_id"], failure["ended_ns"], "throttle"),
                "type": "throttle",
                **common,
                "timestamp": iso_from_unix_nano(failure["ended_ns"]),
                "wait_ms": max(0, started_ns - failure["ended_ns"]) / 1_000_000,
                "status_code": failure["status"],
                "attempt": failure["attempt"],
                "call_id": self._call_id(common["session_id"], started_ns),
                "attributes": self._attributes(record),
            })
        if status in THROTTLE_STATUSES:
            attempt_failed(source=CODEX, session_id=common["session_id"], call_key="responses",
                           failure={"ended_ns": ended_ns, "status": status,
                                    "attempt": max(1, min((as_int(record.get("attempt")) or 0) + 1, 10_000))})
        output.used += 1

    def _usage(self, record: TelemetryRecord, output: SourceOutput) -> None:
        common = self._common(record)
        counts = {key: as_int(record.get(key)) for key in (
            "input_token_count", "output_token_count", "cached_token_count", "reasoning_token_count",
            "cache_write_token_count")}
        ended_ns = _time_ns(record)
        if not common["session_id"] or not common["model"] or not ended_ns \
                or counts["input_token_count"] is None or counts["output_token_count"] is None:
            output.rejected.append("codex.sse_event response.completed without conversation.id, model or counts")
            return
        started_ns = attempt_start_of(source=CODEX, session_id=common["session_id"], call_key="responses")
        ttft_ms = as_float(record.get("ttft_ms"))
        if started_ns is None or started_ns > ended_ns:
            started_ns = ended_ns
        usage = {"input_tokens": counts["input_token_count"], "cached_tokens": counts["cached_token_count"] or 0,
                 "output_tokens": counts["output_token_count"],
                 "reasoning_tokens": counts["reasoning_token_count"] or 0}
        event = {
            "event_id": codex_usage_id(common["session_id"], **usage),
            "type": "usage",
            **common,
            "timestamp": iso_from_unix_nano(started_ns),
            "duration_ms": (ended_ns - started_ns) / 1_000_000,
            "input_tokens": usage["input_tokens"],
            "output_tokens": usage["output_tokens"],
            "cache_read_tokens": usage["cached_tokens"],
            "cache_write_tokens": counts["cache_write_token_count"] or 0,
            "thought_tokens": usage["reasoning_tokens"],
            "call_id": self._call_id(common["session_id"], started_ns),
            "attributes": self._attributes(record, {"reasoning_effort": as_text(record.get("model_reasoning_effort"))}),
        }
        # Without the attempt's start (its api_request unseen, or the cache away) the duration is 0,
        # and a time to first token longer than the call would reject the whole usage event.
        if ttft_ms is not None and 0 <= ttft_ms <= event["duration_ms"]:
            event["time_to_first_token_ms"] = ttft_ms
        output.events.append(event)
        output.used += 1
