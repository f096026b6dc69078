"""Per-event validation: decode, check the rules msgspec cannot express, fill in token counts.

Each event is judged alone: a bad one is returned as a rejection with field errors and never
spoils the rest of its batch.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

import msgspec
from tokensite_client.events import EARLIEST_EVENT_TIME, MAX_ATTRIBUTES_BYTES
from tokensite_client.usage import canonical_service_tier

from apps.ingestion.schema import Event, ThrottleEvent, UsageEvent, event_decoder, loose_decoder
from apps.metrics import algorithms as algo

# The accepted timestamps, compared in UTC after applying the event's offset: from
# EARLIEST_EVENT_TIME (shared with the SDK, which refuses earlier ones when recording) to
# MAX_FUTURE past the server's clock. Outside them a timestamp is a client's bug, and the far
# ends (year 1 at +14:00 is a date BC in UTC) are instants the fold's datetimes cannot hold.
MAX_FUTURE = timedelta(minutes=5)

_PATH_RE = re.compile(r" - at `\$\.?([A-Za-z_][A-Za-z0-9_]*)?")
_MISSING_RE = re.compile(r"Object missing required field `([^`]+)`")
# Fields stored as text or JSON: Postgres refuses a NUL character in either, so an event that
# carries one is rejected here rather than failing its whole batch at the database.
_STORED_TEXT_FIELDS = ("step", "provider", "model", "call_id", "attributes", "usage_raw")
# The struct of each event type: a dict event is converted straight to its own type (converting
# to the tagged union looks the union up again for every call, twice the cost); a dict without
# a known type goes to the union, which rejects it with the union's own message.
_EVENT_TYPES = {"usage": UsageEvent, "throttle": ThrottleEvent}


@dataclass
class PreparedEvent:
    """A valid event with its token counts resolved, ready to be priced and stored."""

    index: int
    event: Event
    # The attributes as JSON, encoded once for the size check and stored as is.
    attributes_json: bytes = b"{}"
    token_source: str = "client"
    tokenizer: str = ""
    cost_nanousd: int | None = None
    price_source: str = ""
    price_book: str = ""
    context_share: float | None = None  # input / the model's input window; None: unknown


class DerivedValues(NamedTuple):
    """The per-event numbers every aggregate sums, stored on the raw row (RawEvent, same names)."""

    duration_us: int
    generation_us: int
    wait_us: int
    bucket_start: datetime
    crosses_bucket: bool


def derived_values(
    kind: str, timestamp: datetime, duration_ms: float, time_to_first_token_ms: float | None, wait_ms: float
) -> DerivedValues:
    """An event's derived values, from the one definition of each (apps.metrics.algorithms)."""
    start_us = algo.epoch_us(timestamp)
    duration_us, generation_us, wait_us, bucket_us, crosses = derived_values_us(
        kind, start_us, duration_ms, time_to_first_token_ms, wait_ms
    )
    bucket_start = (timestamp - timedelta(microseconds=start_us - bucket_us)).astimezone(timezone.utc)
    return DerivedValues(duration_us, generation_us, wait_us, bucket_start, crosses)


def derived_values_us(
    kind: str, start_us: int, duration_ms: float, time_to_first_token_ms: float | None, wait_ms: float
) -> tuple[int, int, int, int, bool]:
    """`derived_values` of an event starting at `start_us`, its minute as epoch µs."""
    bucket_us = algo.bucket_start_us(start_us)
    if kind != "usage":
        return 0, 0, algo.ms_to_us(wait_ms), bucket_us, False
    generation_start_us, end_us = algo.generation_interval_us(start_us, duration_ms, time_to_first_token_ms)
    return end_us - start_us, end_us - generation_start_us, 0, bucket_us, end_us - bucket_us > algo.MINUTE_US


def event_derived_values(event: Event) -> DerivedValues:
    if isinstance(event, UsageEvent):
        return derived_values("usage", event.timestamp, event.duration_ms, event.time_to_first_token_ms, 0.0)
    return derived_values("throttle", event.timestamp, 0.0, None, event.wait_ms)


@dataclass
class Rejection:
    index: int
    event_id: str | None
    errors: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"index": self.index, "event_id": self.event_id, "errors": self.errors}


class EventRejected(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__(errors)
        self.errors = errors


def _field_of(message: str) -> str:
    if missing := _MISSING_RE.search(message):
        return missing.group(1)
    if (at := _PATH_RE.search(message)) and at.group(1):
        return at.group(1)
    return "event"


def _event_id_of(raw: bytes | dict) -> str | None:
    """Best effort: the event_id of an event that failed to decode, for the rejection entry."""
    if type(raw) is dict:
        value = raw.get("event_id")
        return str(value) if isinstance(value, (str, uuid.UUID)) and len(str(value)) <= 100 else None
    try:
        loose = loose_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    value = loose.get("event_id") if isinstance(loose, dict) else None
    return value if isinstance(value, str) and len(value) <= 100 else None


def event_decode(index: int, raw: bytes | dict, *, now: datetime, may_hold_nul: bool = True) -> PreparedEvent:
    """Decode and check one event; raises EventRejected with field errors.

    `raw` is the event's JSON, or the same event as a dict of Python values (what the OTLP
    sources build): converted by msgspec against the same types, with the same constraints, so
    both take one set of rules without a JSON encode and decode between them.
    `may_hold_nul=False` is the caller's promise that the batch has no `\\u0000` escape in it.
    """
    try:
        if type(raw) is dict:
            kind = raw.get("type")
            event = msgspec.convert(raw, _EVENT_TYPES.get(kind, Event) if type(kind) is str else Event)
        else:
            event = event_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        message = str(exc)
        raise EventRejected({_field_of(message): [message]}) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise EventRejected({"event": [f"The event could not be decoded: {exc}"]}) from None
    errors: dict[str, list[str]] = {}
    if not event.session_id.isprintable():
        errors["session_id"] = ["session_id must contain printable characters only."]
    prepared = PreparedEvent(index=index, event=event)
    if event.attributes is not None:
        prepared.attributes_json = msgspec.json.encode(event.attributes)
    if may_hold_nul:
        for name in _STORED_TEXT_FIELDS:
            # JSON spells a NUL only as \u0000: attributes whose JSON lacks it need no walk.
            if name == "attributes" and b"\\u0000" not in prepared.attributes_json:
                continue
            if _contains_nul(getattr(event, name, None)):
                errors[name] = [f"{name} must not contain NUL (\\u0000) characters."]
    if event.timestamp < EARLIEST_EVENT_TIME:
        errors["timestamp"] = [f"timestamp must not be before {EARLIEST_EVENT_TIME:%Y-%m-%dT%H:%M:%SZ}."]
    elif event.timestamp > now + MAX_FUTURE:
        errors["timestamp"] = ["timestamp is more than 5 minutes in the future."]
    if event.attributes is not None:
        if len(prepared.attributes_json) > MAX_ATTRIBUTES_BYTES:
            errors["attributes"] = [f"attributes must be at most {MAX_ATTRIBUTES_BYTES} bytes of JSON."]
    if isinstance(event, UsageEvent):
        _usage_check(prepared, errors)
    if errors:
        raise EventRejected(errors)
    return prepared


def _contains_nul(value) -> bool:
    if type(value) is str:
        return "\x00" in value
    if value is None:
        return False
    # Iterative: usage_raw may nest deeper than Python's recursion limit.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _usage_check(prepared: PreparedEvent, errors: dict[str, list[str]]) -> None:
    event: UsageEvent = prepared.event  # type: ignore[assignment]
    if event.time_to_first_token_ms is not None and event.time_to_first_token_ms > event.duration_ms:
        errors["time_to_first_token_ms"] = ["time_to_first_token_ms must not exceed duration_ms."]
    if event.usage_raw is not None:
        _counts_from_usage_raw(prepared, errors)
    if event.input_text is not None or event.output_text is not None or event.messages is not None:
        _counts_from_text(prepared, errors)
    if event.input_tokens is msgspec.UNSET:
        event.input_tokens = 0
    if event.output_tokens is msgspec.UNSET:
        event.output_tokens = 0
    if event.service_tier is not None:
        event.service_tier = canonical_service_tier(event.service_tier)
    _subset_check(event, errors)


def _counts_from_usage_raw(prepared: PreparedEvent, errors: dict[str, list[str]]) -> None:
    # The provider's own object is the source of truth: when present it sets every count field.
    from tokensite_client.usage import InvalidUsageError, normalize_usage

    event: UsageEvent = prepared.event  # type: ignore[assignment]
    try:
        counts = normalize_usage(event.provider, event.usage_raw)
    except InvalidUsageError as exc:
        for name, messages in exc.errors.items():
            errors.setdefault(name, []).extend(messages)
        return
    event.input_tokens = counts.input_tokens
    event.output_tokens = counts.output_tokens
    event.cache_read_tokens = counts.cache_read_tokens
    event.cache_write_tokens = counts.cache_write_tokens
    event.cache_write_1h_tokens = counts.cache_write_1h_tokens
    event.tool_tokens = counts.tool_tokens
    event.thought_tokens = counts.thought_tokens
    if event.service_tier is None:
        event.service_tier = counts.service_tier
    prepared.token_source = "usage_raw"


def _counts_from_text(prepared: PreparedEvent, errors: dict[str, list[str]]) -> None:
    """Count text sides the client sent no count for, with the model's own tokeniser."""
    from apps.pricing.counting import count_tokens

    event: UsageEvent = prepared.event  # type: ignore[assignment]
    if event.input_text is not None and event.messages is not None:
        errors["messages"] = ["Send input_text or messages, not both."]
        return
    tokenizers: set[str] = set()
    try:
        if event.input_tokens is msgspec.UNSET and (event.input_text is not None or event.messages is not None):
            counted = count_tokens(event.model, text=event.input_text, messages=event.messages)
            event.input_tokens = counted.tokens
            tokenizers.add(counted.tokenizer)
        if event.output_tokens is msgspec.UNSET and event.output_text is not None:
            counted = count_tokens(event.model, text=event.output_text)
            event.output_tokens = counted.tokens
            tokenizers.add(counted.tokenizer)
    except Exception as exc:  # noqa: BLE001 - any tokeniser failure on client text is that event's error, never a 500
        errors["messages" if event.messages is not None else "input_text"] = [f"Could not count tokens: {exc}"]
        return
    if tokenizers:
        prepared.token_source = "estimated"
        prepared.tokenizer = ",".join(sorted(tokenizers))
    # Texts are never stored.
    event.input_text = event.output_text = None
    event.messages = None


def _subset_check(event: UsageEvent, errors: dict[str, list[str]]) -> None:
    """DESIGN.md section 1: cache and tool tokens are inside input, thought tokens inside output."""
    if event.cache_read_tokens + event.cache_write_tokens > event.input_tokens:
        message = "cache_read_tokens + cache_write_tokens must not exceed input_tokens."
        errors.setdefault("cache_read_tokens", []).append(message)
        errors.setdefault("cache_write_tokens", []).append(message)
    if event.cache_write_1h_tokens > event.cache_write_tokens:
        errors.setdefault("cache_write_1h_tokens", []).append(
            "cache_write_1h_tokens must not exceed cache_write_tokens (the one-hour writes are a part of them)."
        )
    if event.tool_tokens > event.input_tokens:
        errors.setdefault("tool_tokens", []).append("tool_tokens must not exceed input_tokens.")
    if event.thought_tokens > event.output_tokens:
        errors.setdefault("thought_tokens", []).append("thought_tokens must not exceed output_tokens.")


def events_validate(
    raw_events: list[msgspec.Raw] | list[dict], *, now: datetime, body: bytes | None = None
) -> tuple[list[PreparedEvent], list[Rejection]]:
    """Split a batch (JSON events, or dicts of Python values) into valid events (counts resolved)
    and per-event rejections.

    `body`, the decoded JSON the events came from, lets one byte search over the batch skip the
    NUL walk: JSON can only carry a NUL as the escape `\\u0000`.
    """
    may_hold_nul = body is None or b"\\u0000" in body
    valid: list[PreparedEvent] = []
    rejected: list[Rejection] = []
    for index, raw in enumerate(raw_events):
        try:
            valid.append(event_decode(index, raw, now=now, may_hold_nul=may_hold_nul))
        except EventRejected as exc:
            rejected.append(Rejection(index=index, event_id=_event_id_of(raw), errors=exc.errors))
    return valid, rejected
