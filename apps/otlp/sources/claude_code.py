"""Claude Code (service.name "claude-code"): its log events, its beta traces, its metrics.

What Claude Code 2.1 sends (fixtures in tests/otlp/agents/fixtures/claude_code_*):
- logs: one `claude_code.api_request` event per model call, after the call, with the call's own
  Anthropic usage (`input_tokens` WITHOUT cache reads and writes, `cache_read_tokens`,
  `cache_creation_tokens` and its 5m/1h split), `duration_ms` and `ttft_ms` of the successful
  attempt, `request_id`, and the agent's own `cost_usd`. These are the usage events.
- traces (only with CLAUDE_CODE_ENHANCED_TELEMETRY_BETA=1): a `claude_code.llm_request` span per
  call repeating the same usage (without the 1h split or cost) and, when the call was retried, its
  `attempt` count and one `gen_ai.request.attempt` span event per attempt. A retry that finally
  succeeded appears nowhere else, so the throttle events come from these spans; their usage is not
  counted again (the log event is the one usage event of the call).
- `api_error` log events only for a call that finally failed (retries exhausted): a throttle event
  when its status is 429, 503 or 529.
- metrics (token and cost counters): acknowledged, never counted.
Claude Code claims every record it sends, so the generic GenAI source never counts its spans.
"""
from __future__ import annotations

from tokensite_client.agent_ids import CLAUDE_CODE, claude_code_throttle_id, claude_code_usage_id
from tokensite_client.events import MAX_STEP_CHARS, THROTTLE_STATUSES

from apps.otlp.records import SIGNAL_LOGS, SIGNAL_TRACES, TelemetryRecord
from apps.otlp.sources import (
    SourceOutput,
    as_float,
    as_int,
    as_text,
    event_attributes,
    event_id_for,
    iso_from_unix_nano,
)

SERVICE_NAME = "claude-code"
# anthropic.provider as Claude Code reports it -> the provider name prices are looked up under.
PROVIDERS = {"firstParty": "anthropic", "bedrock": "bedrock", "vertex": "vertex_ai", "foundry": "azure_ai"}
# query_source of the main conversation; any other (a sub-agent, compaction, a title) is its own step.
MAIN_QUERY_SOURCES = frozenset({"sdk", "repl_main_thread", "print", ""})
MAIN_THREAD_PREFIX = "repl_main_thread:"
BUILTIN_AGENT_PREFIX = "agent:builtin:"
CUSTOM_AGENT_PREFIX = "agent:custom"


def _event_name(record: TelemetryRecord) -> str:
    return record.name.removeprefix("claude_code.")


class ClaudeCodeSource:
    name = CLAUDE_CODE

    def claims(self, record: TelemetryRecord) -> bool:
        return record.service_name == SERVICE_NAME or record.scope.startswith("com.anthropic.claude_code")

    def convert(self, records: list[TelemetryRecord]) -> SourceOutput:
        output = SourceOutput()
        for record in records:
            if record.signal == SIGNAL_LOGS and _event_name(record) == "api_request":
                self._usage(record, output)
            elif record.signal == SIGNAL_LOGS and _event_name(record) == "api_error":
                self._final_error(record, output)
            elif record.signal == SIGNAL_TRACES and record.name == "claude_code.llm_request":
                self._retries(record, output)
            else:
                output.ignored += 1
        return output

    def _common(self, record: TelemetryRecord) -> dict:
        provider = as_text(record.get("anthropic.provider"))
        return {
            "session_id": as_text(record.get("session.id")) or as_text(record.get("gen_ai.conversation.id")),
            "provider": PROVIDERS.get(provider, provider or "anthropic"),
            "model": as_text(record.get("model")) or as_text(record.get("gen_ai.request.model")),
            "step": _step(record),
        }

    def _attributes(self, record: TelemetryRecord, extra: dict | None = None) -> dict:
        return event_attributes(record, source=SERVICE_NAME, version=record.service_version, extra=extra)

    def _usage(self, record: TelemetryRecord, output: SourceOutput) -> None:
        common = self._common(record)
        counts = {key: as_int(record.get(key)) for key in (
            "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
            "cache_creation_1h_tokens")}
        uncached, produced = counts["input_tokens"], counts["output_tokens"]
        if not common["session_id"] or not common["model"] or uncached is None or produced is None:
            output.rejected.append(f"{SERVICE_NAME} api_request without session.id, model or token counts")
            return
        cache_read = counts["cache_read_tokens"] or 0
        cache_write = counts["cache_creation_tokens"] or 0
        duration_ms = max(as_float(record.get("duration_ms")) or 0.0, 0.0)
        ttft_ms = as_float(record.get("ttft_ms"))
        request_id = as_text(record.get("request_id"))
        # The event is logged when the call ends; the usage event starts when its successful attempt did.
        started_ns = record.start_unix_nano - int(duration_ms * 1_000_000)
        event = {
            "event_id": (claude_code_usage_id(common["session_id"], request_id) if request_id else
                         event_id_for(CLAUDE_CODE, common["session_id"], record.start_unix_nano, "usage")),
            "type": "usage",
            **common,
            "timestamp": iso_from_unix_nano(started_ns),
            "duration_ms": duration_ms,
            # Claude Code's input_tokens leaves cache reads and writes out (Anthropic's convention).
            "input_tokens": uncached + cache_read + cache_write,
            "output_tokens": produced,
            "cache_read_tokens": cache_read,
            "cache_write_tokens": cache_write,
            "call_id": request_id or None,
            "attributes": self._attributes(record, {
                "agent_cost_usd": as_float(record.get("cost_usd")),
                "request_id": request_id,
                "prompt_id": as_text(record.get("prompt.id")),
            }),
        }
        if ttft_ms is not None and ttft_ms >= 0:
            event["time_to_first_token_ms"] = ttft_ms
        if counts["cache_creation_1h_tokens"]:
            # The one-hour part of the writes (2x input, not 1.25x); more than the writes is rejected.
            event["cache_write_1h_tokens"] = counts["cache_creation_1h_tokens"]
        output.events.append(event)
        output.used += 1

    def _final_error(self, record: TelemetryRecord, output: SourceOutput) -> None:
        status = as_int(record.get("status_code"))
        common = self._common(record)
        if status not in THROTTLE_STATUSES or not common["session_id"]:
            output.ignored += 1
            return
        attempt = as_int(record.get("attempt")) or 1
        request_id = as_text(record.get("request_id"))
        # The call gave up after this attempt: nothing was waited after it.
        output.events.append({
            "event_id": event_id_for(CLAUDE_CODE, common["session_id"], request_id or record.start_unix_nano,
                                     "throttle", attempt, "final"),
            "type": "throttle",
            **common,
            "timestamp": iso_from_unix_nano(record.start_unix_nano),
            "wait_ms": 0,
            "status_code": status,
            "attempt": max(1, min(attempt, 10_000)),
            "call_id": request_id or None,
            "attributes": self._attributes(record, {"final_attempt": True}),
        })
        output.used += 1

    def _retries(self, record: TelemetryRecord, output: SourceOutput) -> None:
        """One throttle event per failed attempt of a span's call, waiting until the next attempt began.

        Claude Code marks when each attempt starts, not when it failed: the wait is the gap between
        two attempt starts, which includes the failed attempt's own (short, refused) round trip.
        """
        attempts = sorted(
            (event.time_unix_nano, as_int(event.attributes.get("attempt")) or index + 1)
            for index, event in enumerate(record.events) if event.name == "gen_ai.request.attempt")
        common = self._common(record)
        if len(attempts) < 2 or not common["session_id"]:
            output.ignored += 1
            return
        request_id = as_text(record.get("request_id")) or as_text(record.get("gen_ai.response.id"))
        call = request_id or record.span_id
        for (started_ns, attempt), (next_ns, _) in zip(attempts, attempts[1:]):
            output.events.append({
                "event_id": claude_code_throttle_id(common["session_id"], call, attempt),
                "type": "throttle",
                **common,
                "timestamp": iso_from_unix_nano(started_ns),
                "wait_ms": max(0, next_ns - started_ns) / 1_000_000,
                "attempt": max(1, min(attempt, 10_000)),
                "call_id": request_id or None,
                # Claude Code's attempt events do not say why an attempt failed (429, 529 or 5xx).
                "attributes": self._attributes(record, {"status_stated": False}),
            })
        output.used += 1


def _step(record: TelemetryRecord) -> str:
    """The sub-agent that made the call, else `main` for the conversation, else its query source.

    Claude Code 2.1 names a sub-agent's calls by `agent.name` (the built-in agent, e.g. `Explore`,
    or `custom` for a user's own agent) and by `query_source` (`agent:builtin:Explore`,
    `agent:custom`); the main thread's query source is `repl_main_thread` (with an output style
    appended, `repl_main_thread:outputStyle:Learning`), `sdk` or `print`.
    """
    for key in ("agent.name", "agent_type", "subagent_type"):
        if (name := as_text(record.get(key))):
            return name[:MAX_STEP_CHARS]
    query_source = as_text(record.get("query_source")) or as_text(record.get("query_source_safe"))
    if query_source in MAIN_QUERY_SOURCES or query_source.startswith(MAIN_THREAD_PREFIX):
        return "main"
    if query_source.startswith(BUILTIN_AGENT_PREFIX) and len(query_source) > len(BUILTIN_AGENT_PREFIX):
        return query_source.removeprefix(BUILTIN_AGENT_PREFIX)[:MAX_STEP_CHARS]
    if query_source.startswith(CUSTOM_AGENT_PREFIX):
        return "custom"
    return query_source[:MAX_STEP_CHARS]
