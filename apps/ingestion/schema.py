"""The wire format of `POST /api/v1/events`, as msgspec types.

msgspec decodes and type-checks an event in a few microseconds, about a hundred times faster
than a DRF serializer, which is what lets one worker accept tens of thousands of events per
second. The same types produce the OpenAPI schema (see `event_batch_json_schema`), so the
documentation cannot drift from what the server enforces.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Union

import msgspec
from msgspec import UNSET, Meta, UnsetType
from tokensite_client.events import (
    MAX_BATCH_EVENTS,
    MAX_CALL_ID_CHARS,
    MAX_DURATION_MS,
    MAX_MODEL_CHARS,
    MAX_PROVIDER_CHARS,
    MAX_SESSION_ID_CHARS,
    MAX_STEP_CHARS,
    MAX_TOKENS,
)
from tokensite_client.usage import MAX_SERVICE_TIER_CHARS

TokenCount = Annotated[int, Meta(ge=0, le=MAX_TOKENS)]
DurationMs = Annotated[float, Meta(ge=0, le=MAX_DURATION_MS)]
AttributeValue = Union[str, int, float, bool]


class _EventBase(msgspec.Struct, kw_only=True, tag_field="type", forbid_unknown_fields=False):
    event_id: uuid.UUID
    session_id: Annotated[str, Meta(min_length=1, max_length=MAX_SESSION_ID_CHARS)]
    step: Annotated[str, Meta(min_length=1, max_length=MAX_STEP_CHARS)] = "default"
    provider: Annotated[str, Meta(max_length=MAX_PROVIDER_CHARS)] = ""
    timestamp: Annotated[datetime, Meta(tz=True)]
    attributes: dict[str, AttributeValue] | None = None
    call_id: Annotated[str, Meta(min_length=1, max_length=MAX_CALL_ID_CHARS)] | None = None


class UsageEvent(_EventBase, kw_only=True, tag="usage"):
    model: Annotated[str, Meta(min_length=1, max_length=MAX_MODEL_CHARS)]
    duration_ms: DurationMs
    time_to_first_token_ms: DurationMs | None = None
    # UNSET (rather than 0) tells "not sent" apart, so usage_raw or text can fill them in.
    input_tokens: TokenCount | UnsetType = UNSET
    output_tokens: TokenCount | UnsetType = UNSET
    cache_read_tokens: TokenCount = 0
    cache_write_tokens: TokenCount = 0
    # The part of cache_write_tokens written to a one-hour cache (Anthropic); the rest is five-minute.
    cache_write_1h_tokens: TokenCount = 0
    tool_tokens: TokenCount = 0
    thought_tokens: TokenCount = 0
    # DESIGN.md section 6: `standard` (or `default`), `flex`, `priority`, `batch`; None is standard.
    service_tier: Annotated[str, Meta(min_length=1, max_length=MAX_SERVICE_TIER_CHARS, pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    # The provider's own usage object, normalised by tokensite_client.usage (DESIGN.md section 1).
    usage_raw: dict[str, Any] | None = None
    # Text instead of counts: counted with the model's tokeniser, never stored.
    input_text: str | None = None
    output_text: str | None = None
    messages: list[dict[str, Any]] | None = None


class ThrottleEvent(_EventBase, kw_only=True, tag="throttle"):
    model: Annotated[str, Meta(max_length=MAX_MODEL_CHARS)] = ""
    wait_ms: DurationMs
    status_code: Annotated[int, Meta(ge=100, le=599)] = 429
    attempt: Annotated[int, Meta(ge=1, le=10_000)] = 1
    retry_after_ms: DurationMs | None = None


Event = Union[UsageEvent, ThrottleEvent]


class EventBatch(msgspec.Struct):
    # Raw defers each event's decoding, so one bad event is reported alone instead of failing the batch.
    events: list[msgspec.Raw]


batch_decoder = msgspec.json.Decoder(EventBatch)
event_decoder = msgspec.json.Decoder(Event)
loose_decoder = msgspec.json.Decoder()


def event_batch_json_schema() -> dict:
    """JSON Schema of a batch with its events spelled out, for the OpenAPI document."""
    (batch,), components = msgspec.json.schema_components([EventBatchDocument], ref_template="#/components/schemas/{name}")
    return {"batch": batch, "components": components}


class EventBatchDocument(msgspec.Struct):
    events: Annotated[list[Event], Meta(min_length=1, max_length=MAX_BATCH_EVENTS)]
