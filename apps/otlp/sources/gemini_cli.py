"""Gemini CLI and its forks (Qwen Code, LLxprt Code): one telemetry family.

What Gemini CLI 0.61 sends (fixtures in tests/otlp/agents/fixtures/gemini_cli_*), as log events
named `<prefix>.<event>` (gemini_cli, qwen-code, llxprt...):
- `api_request` when an attempt starts, `api_response` when a call succeeded, with the
  provider's usageMetadata spelled `input_token_count` (promptTokenCount, cached part included),
  `output_token_count` (candidates only), `cached_content_token_count`, `thoughts_token_count`,
  `tool_token_count` (toolUsePromptTokenCount), `duration_ms`: the usage events;
- `api_error` for a refused attempt, with `status_code` and no stated delay: a throttle event
  whose wait is the gap to the next `api_request` of the same prompt (agent_attempts);
- `llm_call` spans and `gen_ai.client.inference.operation.details` log events repeating the same
  calls, and metrics: acknowledged, never counted.
Qwen Code 0.15 logs no `api_error` for an attempt it retried: its refusals show only in the HTTP
client spans it exports (`POST` with `http.status_code` 429), so for Qwen Code those spans are
paired instead, per provider URL. In its Anthropic mode Qwen Code's `input_token_count` is input +
cache reads: the cache writes the provider reported are missing from its telemetry.
Gemini CLI's resource `service.version` is the Node.js version, not the CLI's; it is not kept as
the agent version.
LLxprt Code (service.name `llxprt-code`, events `llxprt_code.*`) sends the same events with the same
count attributes, plus the `provider` it called (it is not limited to Gemini); it is recognised by
its service and event names but, unlike the others, not run by the test suite.
"""
from __future__ import annotations

from tokensite_client.events import MAX_PROVIDER_CHARS, MAX_STEP_CHARS, THROTTLE_STATUSES

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
from apps.otlp.sources.agent_attempts import attempt_failed, attempt_start_of, attempt_started

SERVICE_NAMES = frozenset({"gemini-cli", "qwen-code", "llxprt-code", "llxprt"})
EVENT_PREFIXES = ("gemini_cli.", "qwen-code.", "qwen_code.", "llxprt_code.", "llxprt.")
# LLxprt Code's provider names -> the provider names prices are looked up under.
LLXPRT_PROVIDERS = {"openai-responses": "openai", "openaivercel": "openai", "google": "gemini"}
# Agents whose refused attempts appear only in their HTTP client spans (see the module docstring).
HTTP_SPAN_THROTTLE_SERVICES = frozenset({"qwen-code"})


def _event_name(record: TelemetryRecord) -> str:
    # Asked of every record the sources before the GenAI one do not claim: one call rejects most.
    if not record.name.startswith(EVENT_PREFIXES):
        return ""
    for prefix in EVENT_PREFIXES:
        if record.name.startswith(prefix):
            return record.name[len(prefix):]
    return ""


class GeminiCliSource:
    name = "gemini-cli"

    def claims(self, record: TelemetryRecord) -> bool:
        return record.service_name in SERVICE_NAMES or bool(_event_name(record))

    def convert(self, records: list[TelemetryRecord]) -> SourceOutput:
        output = SourceOutput()
        for record in sorted(records, key=lambda item: item.start_unix_nano):
            event = _event_name(record) if record.signal == SIGNAL_LOGS else ""
            if event == "api_request":
                self._attempt_started(record, output)
            elif event == "api_response":
                self._usage(record, output)
            elif event == "api_error":
                self._attempt_failed(record, output)
            elif record.signal == SIGNAL_TRACES and record.service_name in HTTP_SPAN_THROTTLE_SERVICES \
                    and _http_status(record) is not None:
                self._http_attempt(record, output)
            else:
                output.ignored += 1
        return output

    def _agent(self, record: TelemetryRecord) -> tuple[str, str]:
        service = record.service_name or record.name.split(".", 1)[0].replace("_", "-")
        version = record.service_version
        runtime = as_text(record.resource.get("process.runtime.version"))
        if version and runtime and version.lstrip("v") == runtime.lstrip("v"):
            version = ""
        return service, version

    def _common(self, record: TelemetryRecord) -> dict:
        return {
            "session_id": as_text(record.get("session.id")),
            "provider": _provider(record),
            "model": as_text(record.get("model")) or as_text(record.get("model_name")),
            "step": (as_text(record.get("subagent_name")) or as_text(record.get("role")) or "main")[:MAX_STEP_CHARS],
        }

    def _call_key(self, record: TelemetryRecord) -> str:
        return as_text(record.get("prompt_id"))

    def _attributes(self, record: TelemetryRecord, extra: dict | None = None) -> dict:
        service, version = self._agent(record)
        return event_attributes(record, source=service, version=version, extra=extra)

    def _call_id(self, record: TelemetryRecord, started_ns: int) -> str:
        return f"{self._call_key(record)}@{started_ns // 1_000_000}"

    def _attempt_started(self, record: TelemetryRecord, output: SourceOutput) -> None:
        common = self._common(record)
        if not common["session_id"]:
            output.ignored += 1
            return
        service, _ = self._agent(record)
        started_ns = record.start_unix_nano
        failures = attempt_started(source=service, session_id=common["session_id"],
                                   call_key=self._call_key(record), started_ns=started_ns)
        for failure in failures:
            output.events.append({
                "event_id": event_id_for(service, common["session_id"], self._call_key(record),
                                         failure["ended_ns"], "throttle"),
                "type": "throttle",
                **common,
                "model": failure.get("model") or common["model"],
                "timestamp": iso_from_unix_nano(failure["ended_ns"]),
                "wait_ms": max(0, started_ns - failure["ended_ns"]) / 1_000_000,
                "status_code": failure["status"],
                "call_id": self._call_id(record, started_ns),
                "attributes": self._attributes(record),
            })
        output.used += 1

    def _attempt_failed(self, record: TelemetryRecord, output: SourceOutput) -> None:
        status = as_int(record.get("status_code")) or as_int(record.get("http.status_code"))
        common = self._common(record)
        if status not in THROTTLE_STATUSES or not common["session_id"]:
            output.ignored += 1
            return
        service, _ = self._agent(record)
        attempt_failed(source=service, session_id=common["session_id"], call_key=self._call_key(record),
                       failure={"ended_ns": record.start_unix_nano, "status": status, "model": common["model"]})
        output.used += 1

    def _usage(self, record: TelemetryRecord, output: SourceOutput) -> None:
        common = self._common(record)
        prompt = as_int(record.get("input_token_count"))
        candidates = as_int(record.get("output_token_count"))
        if not common["session_id"] or not common["model"] or prompt is None or candidates is None:
            output.rejected.append(f"{record.name} without session.id, model or token counts")
            return
        thoughts = as_int(record.get("thoughts_token_count")) or 0
        tool = as_int(record.get("tool_token_count")) or 0
        duration_ms = max(as_float(record.get("duration_ms")) or 0.0, 0.0)
        service, _ = self._agent(record)
        started_ns = attempt_start_of(source=service, session_id=common["session_id"],
                                      call_key=self._call_key(record))
        if started_ns is None or started_ns > record.start_unix_nano:
            started_ns = record.start_unix_nano - int(duration_ms * 1_000_000)
        response_id = as_text(record.get("response_id")) or as_text(record.get("gen_ai.response.id"))
        event = {
            "event_id": event_id_for(service, common["session_id"], self._call_key(record),
                                     response_id or record.start_unix_nano, "usage"),
            "type": "usage",
            **common,
            "timestamp": iso_from_unix_nano(record.start_unix_nano - int(duration_ms * 1_000_000)),
            "duration_ms": duration_ms,
            # DESIGN.md section 1, Gemini row: the prompt count already holds the cached part.
            "input_tokens": prompt + tool,
            "output_tokens": candidates + thoughts,
            "cache_read_tokens": as_int(record.get("cached_content_token_count")) or 0,
            "tool_tokens": tool,
            "thought_tokens": thoughts,
            "call_id": self._call_id(record, started_ns),
            "attributes": self._attributes(record, {"prompt_id": self._call_key(record)}),
        }
        output.events.append(event)
        output.used += 1

    def _http_attempt(self, record: TelemetryRecord, output: SourceOutput) -> None:
        """An HTTP client span to the provider: refusals wait until the next request to the same URL."""
        session_id = as_text(record.get("session.id"))
        url = as_text(record.get("http.url")) or as_text(record.get("url.full"))
        if not session_id or not url:
            output.ignored += 1
            return
        service, _ = self._agent(record)
        call_key = f"http {url}"
        failures = attempt_started(source=service, session_id=session_id, call_key=call_key,
                                   started_ns=record.start_unix_nano)
        for failure in failures:
            output.events.append({
                "event_id": event_id_for(service, session_id, call_key, failure["ended_ns"], "throttle"),
                "type": "throttle",
                "session_id": session_id,
                "step": "main",
                "provider": "",
                "model": "",
                "timestamp": iso_from_unix_nano(failure["ended_ns"]),
                "wait_ms": max(0, record.start_unix_nano - failure["ended_ns"]) / 1_000_000,
                "status_code": failure["status"],
                "attributes": self._attributes(record, {"provider_url": url}),
            })
        status = _http_status(record)
        if status in THROTTLE_STATUSES:
            attempt_failed(source=service, session_id=session_id, call_key=call_key,
                           failure={"ended_ns": record.end_unix_nano, "status": status, "model": ""})
        output.used += 1


def _provider(record: TelemetryRecord) -> str:
    """Gemini CLI and Qwen Code name no provider (Gemini, or Vertex AI when enabled); LLxprt Code,
    which talks to several, names the one it called in `provider`."""
    named = as_text(record.attributes.get("provider")).strip().lower()
    if named:
        return LLXPRT_PROVIDERS.get(named, named)[:MAX_PROVIDER_CHARS]
    return "vertex_ai" if record.get("vertex_ai_enabled") is True else "gemini"


def _http_status(record: TelemetryRecord) -> int | None:
    attributes = record.attributes
    return as_int(attributes.get("http.status_code")) or as_int(attributes.get("http.response.status_code"))
