"""Instrumented apps: spans (and log events) following the OpenTelemetry GenAI semantic conventions.

Every published naming is read: the current `gen_ai.provider.name` and `gen_ai.usage.*` keys,
the older `gen_ai.system` and `gen_ai.usage.prompt_tokens` / `completion_tokens`, OpenLLMetry's
`llm.usage.*` and `gen_ai.usage.cache_*_input_tokens`, and OpenInference's `llm.token_count.*`.

Token kinds are converted to DESIGN.md section 1. The current conventions say input_tokens SHOULD
include cached tokens and output_tokens includes reasoning, as OpenAI reports them; an
instrumentation that follows Anthropic's own usage object instead (input without cache) shows
itself by cache counts larger than the input, and then the cache is added to the input, as
DESIGN.md converts Anthropic's usage.

A call counts once: when spans of one trace nest and several carry usage (a framework span around
the client library's span), only the innermost in the request is used; and the event id is taken
from the provider's response id when there is one, so the same call reported by another span or
by a log event in a later request maps to the same event.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from tokensite_client.events import (
    MAX_CALL_ID_CHARS,
    MAX_DURATION_MS,
    MAX_MODEL_CHARS,
    MAX_PROVIDER_CHARS,
    MAX_SESSION_ID_CHARS,
    MAX_STEP_CHARS,
    THROTTLE_STATUSES,
)
from tokensite_client.usage import canonical_service_tier

from apps.otlp.pending_throttles import pending_add, pending_take
from apps.otlp.records import SIGNAL_LOGS, SIGNAL_TRACES, TelemetryRecord
from apps.otlp.sources import (
    SourceOutput,
    as_float,
    as_int,
    as_text,
    event_attributes,
    developer_of,
    event_id_for,
    iso_from_unix_nano,
)

SOURCE_NAME = "genai"

INPUT_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens",
              "llm.token_count.prompt")
OUTPUT_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.usage.completion_tokens",
               "llm.token_count.completion")
TOTAL_KEYS = ("gen_ai.usage.total_tokens", "llm.usage.total_tokens", "llm.token_count.total")
CACHE_READ_KEYS = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
                   "gen_ai.usage.cached_tokens", "llm.usage.cache_read_input_tokens",
                   "llm.token_count.prompt_details.cache_read")
CACHE_WRITE_KEYS = ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_write.input_tokens",
                    "gen_ai.usage.cache_creation_input_tokens", "llm.usage.cache_creation_input_tokens",
                    "llm.token_count.prompt_details.cache_write")
REASONING_KEYS = ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens",
                  "llm.usage.reasoning_tokens", "llm.token_count.completion_details.reasoning")
USAGE_KEYS = INPUT_KEYS + OUTPUT_KEYS + TOTAL_KEYS

PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system", "llm.vendor")
MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model", "llm.response.model", "llm.model_name",
              "llm.request.model")
REQUEST_MODEL_KEYS = ("gen_ai.request.model", "llm.request.model")
RESPONSE_ID_KEYS = ("gen_ai.response.id", "llm.response.id")
SESSION_KEYS = ("gen_ai.conversation.id", "session.id", "gen_ai.session.id", "langfuse.session.id",
                "traceloop.association.properties.session_id", "conversation.id")
STEP_KEYS = ("tokensite.step", "gen_ai.agent.name")
# The tier that served the call (the response's), else the one asked for (`auto` is standard).
SERVICE_TIER_KEYS = ("openai.response.service_tier", "gen_ai.openai.response.service_tier",
                     "openai.request.service_tier", "gen_ai.openai.request.service_tier")
OPERATION_KEYS = ("gen_ai.operation.name", "llm.request.type")
# Time to first token: seconds in the GenAI conventions, milliseconds where the key says so.
TTFT_SECONDS_KEYS = ("gen_ai.response.time_to_first_chunk", "gen_ai.server.time_to_first_token",
                     "gen_ai.response.time_to_first_token")
TTFT_MS_KEYS = ("llm.time_to_first_token_ms", "gen_ai.response.time_to_first_token_ms")
STATUS_KEYS = ("http.response.status_code", "http.status_code", "gen_ai.response.status_code")
RETRY_AFTER_KEYS = ("http.response.header.retry-after", "retry_after", "gen_ai.response.retry_after")
# error.type values the common clients set for a throttled call, by status.
THROTTLE_ERROR_TYPES = {
    "ratelimiterror": 429, "rate_limit_error": 429, "rate_limit_exceeded": 429, "too_many_requests": 429,
    "resource_exhausted": 429, "overloadederror": 529, "overloaded_error": 529,
    "serviceunavailableerror": 503, "service_unavailable": 503,
}
OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings", "completion", "embedding"})
LOG_EVENT_NAMES = frozenset({"gen_ai.client.inference.operation.details", "gen_ai.client.operation"})
PROVIDER_NAMES = {
    "gcp.gemini": "gemini", "gcp.gen_ai": "gemini", "gcp.vertex_ai": "vertex_ai", "google": "gemini",
    "aws.bedrock": "bedrock", "az.ai.openai": "azure", "azure.ai.openai": "azure", "az.ai.inference": "azure",
    "x_ai": "xai",
}
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _first(attributes: Mapping[str, object], keys: tuple[str, ...]) -> object:
    for key in keys:
        value = attributes.get(key)
        if value is not None and value != "":
            return value
    return None


def _count(attributes: Mapping[str, object], keys: tuple[str, ...]) -> int | None:
    value = _first(attributes, keys)
    return None if value is None else as_int(value)


_USAGE_KEY_SET = frozenset(USAGE_KEYS)
_PROVIDER_KEY_SET = frozenset(PROVIDER_KEYS)


def _has_usage(record: TelemetryRecord) -> bool:
    return not _USAGE_KEY_SET.isdisjoint(record.attributes)


def _throttle_status(record: TelemetryRecord) -> int | None:
    """The 429/503/529 a failed call reports, from its HTTP status or its error type."""
    attributes = record.attributes
    status = as_int(_first(attributes, STATUS_KEYS))
    if status in THROTTLE_STATUSES:
        return status
    error_type = as_text(attributes.get("error.type")).strip()
    if as_int(error_type) in THROTTLE_STATUSES:
        return as_int(error_type)
    # Class names come dotted and sometimes as a repr ("<class 'openai.RateLimitError'>").
    names = _IDENTIFIER_RE.findall(error_type)
    return THROTTLE_ERROR_TYPES.get(names[-1].lower()) if names else None


def _is_genai(record: TelemetryRecord) -> bool:
    attributes = record.attributes
    return (
        not _PROVIDER_KEY_SET.isdisjoint(attributes)
        or as_text(_first(attributes, OPERATION_KEYS)).lower() in OPERATIONS
        or "llm.model_name" in attributes
    )


class GenAiSource:
    name = SOURCE_NAME

    def claims(self, record: TelemetryRecord) -> bool:
        if record.signal == SIGNAL_TRACES:
            return _is_genai(record) and (_has_usage(record) or _throttle_status(record) is not None)
        if record.signal == SIGNAL_LOGS:
            return record.name in LOG_EVENT_NAMES and _has_usage(record)
        return False

    def convert(self, records: list[TelemetryRecord]) -> SourceOutput:
        output = SourceOutput()
        spans = [record for record in records if record.signal == SIGNAL_TRACES]
        outer = _spans_with_inner_usage(spans)
        throttled = [record for record in spans if not _has_usage(record)]
        call_ids: dict[tuple[str, str], str] = {}
        memo: dict = {}
        for record in records:
            if not _has_usage(record):
                continue
            if record.signal == SIGNAL_TRACES and (record.trace_id, record.span_id) in outer:
                # A span around the call's own span: its usage is the inner span's, already counted.
                output.ignored += 1
                continue
            event, reason = _usage_event(record, memo)
            if event is None:
                output.rejected.append(reason)
                continue
            call_ids[(record.trace_id, record.span_id)] = event["call_id"]
            output.events.append(event)
            output.used += 1
            if record.signal == SIGNAL_TRACES and record.parent_span_id:
                output.events.extend(_held_attempts_before(record, event))
        for record in throttled:
            event, known_wait = _throttle_event(record, spans, call_ids, memo)
            output.used += 1
            held = not known_wait and record.parent_span_id and pending_add(
                trace_id=record.trace_id, parent_span_id=record.parent_span_id,
                attempt={"span_id": record.span_id, "end_unix_nano": record.end_unix_nano, "event": event},
            )
            if not held:
                output.events.append(event)
        return output


def _held_attempts_before(record: TelemetryRecord, usage: dict) -> list[dict]:
    """Throttle events of failed attempts (from earlier requests) that this call's span retried."""
    held = pending_take(trace_id=record.trace_id, parent_span_id=record.parent_span_id)
    model = as_text(_first(record.attributes, REQUEST_MODEL_KEYS)).strip()
    events: list[dict] = []
    for attempt in held:
        event = attempt["event"]
        if attempt["end_unix_nano"] <= record.start_unix_nano and event["model"] in (model, ""):
            event = {**event, "call_id": usage["call_id"],
                     "wait_ms": min((record.start_unix_nano - attempt["end_unix_nano"]) / 1e6, MAX_DURATION_MS)}
            events.append(event)
        else:
            pending_add(trace_id=record.trace_id, parent_span_id=record.parent_span_id, attempt=attempt)
    return events


def _spans_with_inner_usage(spans: list[TelemetryRecord]) -> set[tuple[str, str]]:
    """(trace, span) of every span in the request with a usage-carrying descendant in it."""
    parent_of = {(span.trace_id, span.span_id): span.parent_span_id for span in spans if span.span_id}
    outer: set[tuple[str, str]] = set()
    for span in spans:
        if not span.span_id or not _has_usage(span):
            continue
        parent, seen = span.parent_span_id, 0
        while parent and seen < 256:
            key = (span.trace_id, parent)
            if key in outer:
                break
            outer.add(key)
            parent = parent_of.get(key, "")
            seen += 1
    return outer


def _provider(attributes: Mapping[str, object]) -> str:
    provider = as_text(_first(attributes, PROVIDER_KEYS)).strip().lower()
    return PROVIDER_NAMES.get(provider, provider)[:MAX_PROVIDER_CHARS]


def _session(record: TelemetryRecord) -> str:
    session = as_text(_first(record.attributes, SESSION_KEYS)) or as_text(_first(record.resource, SESSION_KEYS))
    session = session.strip()
    if not session or not session.isprintable():
        session = record.trace_id or f"{record.service_name or 'otel'}-{record.start_unix_nano // 86_400_000_000_000}"
    return session[:MAX_SESSION_ID_CHARS]


def _step(record: TelemetryRecord) -> str:
    step = as_text(_first(record.attributes, STEP_KEYS)) or as_text(_first(record.attributes, OPERATION_KEYS))
    step = step.strip()
    return step[:MAX_STEP_CHARS] if step and step.isprintable() else "default"


def _common(record: TelemetryRecord, memo: dict) -> dict:
    """Fields every event of a record has. `memo` (one per convert call, while its records are
    alive) shares the attributes of records from one resource, developer and scope."""
    developer = developer_of(record)
    key = (id(record.resource), developer, record.scope)
    attributes = memo.get(key)
    if attributes is None:
        # The session keeps the first value of each attribute, so nothing per call (trace ids) here.
        extra: dict[str, object] = {"instrumentation": record.scope} if record.scope else {}
        attributes = memo[key] = event_attributes(
            record, source=record.service_name or SOURCE_NAME, version=record.service_version,
            developer=developer, extra=extra,
        )
    return {
        "session_id": _session(record),
        "step": _step(record),
        "provider": _provider(record.attributes),
        "timestamp": iso_from_unix_nano(record.start_unix_nano),
        "attributes": attributes,
    }


# The token counts of a usage event, in the order they are checked; the first three must be
# integers when present (cache and reasoning counts that are not are read as 0).
_COUNT_KEYS = (
    ("input", INPUT_KEYS), ("output", OUTPUT_KEYS), ("total", TOTAL_KEYS),
    ("cache_read", CACHE_READ_KEYS), ("cache_write", CACHE_WRITE_KEYS), ("reasoning", REASONING_KEYS),
)
_REQUIRED_INTEGER = frozenset({"input", "output", "total"})


def _usage_event(record: TelemetryRecord, memo: dict) -> tuple[dict | None, str]:
    attributes = record.attributes
    counts: list[int | None] = []
    for kind, keys in _COUNT_KEYS:
        value = _first(attributes, keys)
        if value is None:
            counts.append(None)
            continue
        count = value if type(value) is int else as_int(value)
        if count is None:
            if kind in _REQUIRED_INTEGER:
                return None, f"{_where(record)}: the {kind} token count is not an integer"
        elif count < 0:
            return None, f"{_where(record)}: the {kind} token count is negative ({count})"
        counts.append(count)
    input_tokens, output_tokens, total, cache_read, cache_write, reasoning = counts
    if input_tokens is None and output_tokens is None:
        # Embeddings report only a total: it is all input.
        input_tokens, output_tokens = total, 0
    input_tokens = input_tokens or 0
    output_tokens = output_tokens or 0
    cache_read = cache_read or 0
    cache_write = cache_write or 0
    reasoning = reasoning or 0
    if cache_read + cache_write > input_tokens:
        input_tokens += cache_read + cache_write
    if reasoning > output_tokens:
        output_tokens += reasoning
    duration_ms = max(0.0, (record.end_unix_nano - record.start_unix_nano) / 1e6)
    response_id = as_text(_first(attributes, RESPONSE_ID_KEYS))
    call_key = response_id or record.span_id
    model = as_text(_first(attributes, MODEL_KEYS)).strip() or "unknown"
    event = _common(record, memo)
    if call_key and record.trace_id:
        # Not the session: a span and a log event of one call may name it differently.
        event_id = event_id_for(SOURCE_NAME, record.trace_id, call_key)
    elif call_key:
        event_id = event_id_for(SOURCE_NAME, event["session_id"], call_key)
    else:
        event_id = event_id_for(SOURCE_NAME, event["session_id"], record.start_unix_nano, model,
                                input_tokens, output_tokens)
    event["event_id"] = event_id
    event["type"] = "usage"
    event["model"] = model[:MAX_MODEL_CHARS]
    event["duration_ms"] = duration_ms
    event["input_tokens"] = input_tokens
    event["output_tokens"] = output_tokens
    event["cache_read_tokens"] = cache_read
    event["cache_write_tokens"] = cache_write
    event["thought_tokens"] = reasoning
    event["call_id"] = (call_key or event_id)[:MAX_CALL_ID_CHARS]
    ttft_ms = _ttft_ms(attributes)
    if ttft_ms is not None and 0 <= ttft_ms <= duration_ms:
        event["time_to_first_token_ms"] = ttft_ms
    if (tier := canonical_service_tier(_first(attributes, SERVICE_TIER_KEYS))) is not None:
        event["service_tier"] = tier
    return event, ""


def _where(record: TelemetryRecord) -> str:
    return f"{record.signal} record {record.name!r} (span {record.span_id or '-'})"


def _ttft_ms(attributes: Mapping[str, object]) -> float | None:
    seconds = as_float(_first(attributes, TTFT_SECONDS_KEYS))
    if seconds is not None:
        return seconds * 1000
    return as_float(_first(attributes, TTFT_MS_KEYS))


def _throttle_event(
    record: TelemetryRecord, spans: list[TelemetryRecord], call_ids: dict, memo: dict
) -> tuple[dict, bool]:
    """(event, whether its wait is known): the stated Retry-After, else the gap to the next attempt."""
    status = _throttle_status(record) or 429
    model = as_text(_first(record.attributes, REQUEST_MODEL_KEYS + MODEL_KEYS)).strip()
    retry_after_s = as_float(_first(record.attributes, RETRY_AFTER_KEYS))
    next_attempt = _next_attempt(record, spans, model)
    if retry_after_s is not None and retry_after_s >= 0:
        wait_ms = retry_after_s * 1000
    elif next_attempt is not None:
        wait_ms = max(0, next_attempt.start_unix_nano - record.end_unix_nano) / 1e6
    else:
        wait_ms = 0.0
    known_wait = (retry_after_s is not None and retry_after_s >= 0) or next_attempt is not None
    call_id = ""
    if next_attempt is not None:
        call_id = call_ids.get((next_attempt.trace_id, next_attempt.span_id), "")
    call_id = call_id or record.span_id or event_id_for(SOURCE_NAME, record.trace_id, record.start_unix_nano)
    common = _common(record, memo)
    event = {
        "event_id": event_id_for(SOURCE_NAME, "throttle", common["session_id"], record.trace_id, record.span_id,
                                 record.start_unix_nano),
        "type": "throttle",
        **common,
        "timestamp": iso_from_unix_nano(record.end_unix_nano or record.start_unix_nano),
        "model": model[:MAX_MODEL_CHARS],
        "wait_ms": min(wait_ms, MAX_DURATION_MS),
        "status_code": status,
        "call_id": call_id[:MAX_CALL_ID_CHARS],
    }
    if retry_after_s is not None and retry_after_s >= 0:
        event["retry_after_ms"] = min(retry_after_s * 1000, MAX_DURATION_MS)
    return event, known_wait


def _next_attempt(record: TelemetryRecord, spans: list[TelemetryRecord], model: str) -> TelemetryRecord | None:
    """The next span of the same trace and parent for the same model, starting after this one."""
    candidates = [
        span for span in spans
        if span.trace_id == record.trace_id and span.parent_span_id == record.parent_span_id
        and span.span_id != record.span_id and span.start_unix_nano >= record.end_unix_nano
        and as_text(_first(span.attributes, REQUEST_MODEL_KEYS)).strip() in (model, "")
    ]
    return min(candidates, key=lambda span: span.start_unix_nano, default=None) if record.trace_id else None
