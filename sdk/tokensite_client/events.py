"""Building the event dicts of the ingest API (issue 2) on the caller's thread.

Everything here runs inside `record_*`, so it is plain dict building and cheap checks:
no I/O and no imports on the hot path. Checks that the server would make anyway are
repeated only where failing early saves an event from being rejected after the fact.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from .usage import MAX_SERVICE_TIER_CHARS, canonical_service_tier, subset_violations

# The statuses that mean "throttled, retry later" (DESIGN.md section 5): rate limited, overloaded.
THROTTLE_STATUSES = frozenset({429, 503, 529})
# The event limits of the ingest API, defined here once: the server's schema imports them, so a
# client that checks against them can never accept what the server refuses.
MAX_BATCH_EVENTS = 1000
MAX_ATTRIBUTES_BYTES = 4096
MAX_STEP_CHARS = 100
MAX_PROVIDER_CHARS = 100
MAX_MODEL_CHARS = 200
MAX_SESSION_ID_CHARS = 200
MAX_CALL_ID_CHARS = 200
MAX_DURATION_MS = 24 * 3600 * 1000
MAX_TOKENS = 10**9
# Session attributes naming who and what sent the events (DESIGN.md section 9), defined here once:
# the SDK and the server's OTLP intake set them, its pages and documents read them back.
DEVELOPER_ATTRIBUTE = "user"
SOURCE_ATTRIBUTE = "source"
SOURCE_VERSION_ATTRIBUTE = "source_version"
# The server rejects events that start earlier (and those more than 5 minutes ahead of its clock,
# which only the server can judge).
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=timezone.utc)
_EARLIEST_EVENT_EPOCH = EARLIEST_EVENT_TIME.timestamp()

AttributeValue = str | int | float | bool
Timestamp = datetime | float | None


def call_start_epoch(timestamp: Timestamp, elapsed_ms: float) -> float:
    """Seconds since the epoch at which a call or wait started: `timestamp` (an aware
    datetime or epoch seconds) or, without one, `elapsed_ms` before now, since events are
    recorded when they end. Naive datetimes are refused because guessing their zone would
    silently shift every rate and burst."""
    if timestamp is None:
        return time.time() - elapsed_ms / 1000
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware")
        epoch = timestamp.timestamp()
    else:
        epoch = float(timestamp)
    if not math.isfinite(epoch):
        raise ValueError(f"timestamp must be a finite number of seconds, got {epoch!r}")
    if epoch < _EARLIEST_EVENT_EPOCH:
        raise ValueError(f"timestamp must not be before {EARLIEST_EVENT_TIME:%Y-%m-%dT%H:%M:%SZ}")
    return epoch


# The date and time to the second of the last timestamp formatted: calls close together share
# it, so most timestamps cost a `modf` and an f-string instead of a datetime and `isoformat`
# (about 5 us on the caller's thread). One tuple, replaced whole, so threads never see half of it.
_last_second: tuple[float, str] = (math.nan, "")


def rfc3339(epoch: float) -> str:
    """UTC RFC 3339 with microseconds, the form the ingest API requires; the same text as
    `datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="microseconds")`,
    microseconds rounded half to even as datetime does."""
    global _last_second
    fraction, second = math.modf(epoch)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        micros -= 1_000_000
        second += 1.0
    elif micros < 0:
        micros += 1_000_000
        second -= 1.0
    cached_second, prefix = _last_second
    if second != cached_second:
        prefix = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        if len(prefix) != 19:  # strftime does not pad years before 1000; isoformat does
            prefix = datetime.fromtimestamp(second, timezone.utc).isoformat(timespec="seconds")[:19]
        _last_second = (second, prefix)
    return f"{prefix}.{micros:06d}+00:00"


# Event and call ids need to be unique, not secret: a private generator seeded from the OS
# (getrandbits is about 10 times cheaper than an `os.urandom` system call, and two ids are
# drawn per call). Private so that an application's `random.seed(...)` cannot make two runs
# draw the same ids (the server would drop the second run's events as duplicates); reseeded
# in a forked child, which would otherwise repeat its parent's ids.
_id_random = random.Random()
os.register_at_fork(after_in_child=_id_random.seed)
_UUID_VERSION_MASK = ~((0xF << 76) | (0x3 << 62))
_UUID_VERSION_BITS = (0x4 << 76) | (0x2 << 62)  # version 4, RFC 4122 variant


def new_event_id() -> str:
    """A random (version 4) UUID string; a few times cheaper than `str(uuid.uuid4())`,
    which matters on the record path."""
    digits = f"{_id_random.getrandbits(128) & _UUID_VERSION_MASK | _UUID_VERSION_BITS:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def check_session_id(session_id: str) -> str:
    if not (1 <= len(session_id) <= MAX_SESSION_ID_CHARS) or not session_id.isprintable():
        raise ValueError(f"session_id must be 1 to {MAX_SESSION_ID_CHARS} printable characters")
    return session_id


def check_step(step: str) -> str:
    if not isinstance(step, str) or len(step) > MAX_STEP_CHARS:
        raise ValueError(f"step must be a string of at most {MAX_STEP_CHARS} characters")
    return step


_ATTRIBUTE_TYPES = frozenset({str, int, float, bool})


def check_attributes(attributes: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """A flat copy of `attributes` that the server will accept (str/number/bool, <= 4 KiB)."""
    flat: dict[str, AttributeValue] = {}
    # An upper bound of the JSON size (12 bytes per character covers any escape), so the
    # exact size is serialised only for attributes that come near the limit.
    bound = 2
    for key, value in attributes.items():
        kind = type(value)
        # Exact types first (isinstance costs more and is only needed for subclasses).
        if (type(key) is not str or kind not in _ATTRIBUTE_TYPES) and (
                not isinstance(key, str) or not isinstance(value, (str, int, float, bool))):
            raise ValueError(f"attribute {key!r} must map a string to a string, number or bool")
        flat[key] = value
        bound += 12 * len(key) + 4 + (12 * len(value) + 2 if kind is str or isinstance(value, str) else 32)
    if bound > MAX_ATTRIBUTES_BYTES and len(json.dumps(flat, separators=(",", ":"))) > MAX_ATTRIBUTES_BYTES:
        raise ValueError(f"attributes exceed {MAX_ATTRIBUTES_BYTES} bytes as JSON")
    return flat


def _check_name(name: str, value: str, limit: int) -> None:
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"{name} must be a string of at most {limit} characters")


def _check_tokens(name: str, value: int) -> None:
    if type(value) is not int or not 0 <= value <= MAX_TOKENS:
        raise ValueError(f"{name} must be an integer from 0 to {MAX_TOKENS}, got {value!r}")


def _check_ms(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_DURATION_MS:
        raise ValueError(f"{name} must be a number of milliseconds from 0 to 24 h, got {value!r}")


def usage_event(
    *,
    session_id: str,
    step: str,
    provider: str,
    model: str,
    start_epoch: float,
    duration_ms: float,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int,
    cache_write_tokens: int,
    tool_tokens: int,
    thought_tokens: int,
    time_to_first_token_ms: float | None,
    usage_raw: Mapping[str, Any] | None,
    attributes: Mapping[str, Any] | None,
    call_id: str | None,
    cache_write_1h_tokens: int = 0,
    service_tier: str | None = None,
) -> dict[str, Any]:
    """A validated `usage` event; its timestamp is the call's start. The one-hour cache
    writes and the service tier are sent only when there are some, so events without
    them stay as they were."""
    # One expression for the usual valid event; the checks one by one (and their messages)
    # only when it fails. Seven function calls fewer on every recorded call.
    if not (type(provider) is str and len(provider) <= MAX_PROVIDER_CHARS
            and type(model) is str and len(model) <= MAX_MODEL_CHARS
            and type(duration_ms) in (float, int) and 0 <= duration_ms <= MAX_DURATION_MS
            and type(input_tokens) is int and type(output_tokens) is int and type(cache_read_tokens) is int
            and type(cache_write_tokens) is int and type(tool_tokens) is int and type(thought_tokens) is int
            and type(cache_write_1h_tokens) is int
            and 0 <= min(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, tool_tokens,
                         thought_tokens, cache_write_1h_tokens)
            and max(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, tool_tokens,
                    thought_tokens, cache_write_1h_tokens) <= MAX_TOKENS):
        _check_name("provider", provider, MAX_PROVIDER_CHARS)
        _check_name("model", model, MAX_MODEL_CHARS)
        _check_ms("duration_ms", duration_ms)
        _check_tokens("input_tokens", input_tokens)
        _check_tokens("output_tokens", output_tokens)
        _check_tokens("cache_read_tokens", cache_read_tokens)
        _check_tokens("cache_write_tokens", cache_write_tokens)
        _check_tokens("tool_tokens", tool_tokens)
        _check_tokens("thought_tokens", thought_tokens)
        _check_tokens("cache_write_1h_tokens", cache_write_1h_tokens)
    if (cache_read_tokens + cache_write_tokens > input_tokens or tool_tokens > input_tokens
            or thought_tokens > output_tokens or cache_write_1h_tokens > cache_write_tokens):
        violations = subset_violations(
            input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens, tool_tokens=tool_tokens, thought_tokens=thought_tokens,
            cache_write_1h_tokens=cache_write_1h_tokens)
        raise ValueError("; ".join(sorted({m for messages in violations.values() for m in messages})))
    event: dict[str, Any] = {
        "event_id": new_event_id(),
        "type": "usage",
        "session_id": session_id,
        "step": step,
        "provider": provider,
        "model": model,
        "timestamp": rfc3339(start_epoch),
        "duration_ms": duration_ms,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": cache_read_tokens,
        "cache_write_tokens": cache_write_tokens,
        "tool_tokens": tool_tokens,
        "thought_tokens": thought_tokens,
    }
    if cache_write_1h_tokens:
        event["cache_write_1h_tokens"] = cache_write_1h_tokens
    if service_tier is not None:
        tier = canonical_service_tier(service_tier)
        if tier is None:
            raise ValueError(f"service_tier must be a name of at most {MAX_SERVICE_TIER_CHARS} letters, digits, "
                             f"'_', '.' or '-', got {service_tier!r}")
        event["service_tier"] = tier
    if time_to_first_token_ms is not None:
        _check_ms("time_to_first_token_ms", time_to_first_token_ms)
        event["time_to_first_token_ms"] = min(time_to_first_token_ms, duration_ms)
    if usage_raw is not None:
        event["usage_raw"] = dict(usage_raw)
    if attributes:
        event["attributes"] = check_attributes(attributes)
    if call_id is not None:
        event["call_id"] = call_id
    return event


def throttle_event(
    *,
    session_id: str,
    step: str,
    provider: str,
    model: str,
    start_epoch: float,
    wait_ms: float,
    status_code: int,
    attempt: int,
    retry_after_ms: float | None,
    attributes: Mapping[str, Any] | None,
    call_id: str | None,
) -> dict[str, Any]:
    """A validated `throttle` event; its timestamp is the start of the wait."""
    _check_name("provider", provider, MAX_PROVIDER_CHARS)
    _check_name("model", model, MAX_MODEL_CHARS)
    _check_ms("wait_ms", wait_ms)
    if type(status_code) is not int or not 100 <= status_code <= 599:
        raise ValueError(f"status_code must be an HTTP status, got {status_code!r}")
    if type(attempt) is not int or attempt < 1:
        raise ValueError(f"attempt must be an integer of at least 1, got {attempt!r}")
    event: dict[str, Any] = {
        "event_id": new_event_id(),
        "type": "throttle",
        "session_id": session_id,
        "step": step,
        "provider": provider,
        "model": model,
        "timestamp": rfc3339(start_epoch),
        "wait_ms": wait_ms,
        "status_code": status_code,
        "attempt": attempt,
    }
    if retry_after_ms is not None:
        event["retry_after_ms"] = retry_after_ms
    if attributes:
        event["attributes"] = check_attributes(attributes)
    if call_id is not None:
        event["call_id"] = call_id
    return event
