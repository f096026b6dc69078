"""The shortcuts of the per-call path give the same results as the plain code they replace."""

from __future__ import annotations

import itertools
import math
import os
import random
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from tokensite_client import events
from tokensite_client.client_hooks import _is_raw_response, _number_or_text, ratelimit_attributes


def _isoformat(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="microseconds")


def test_rfc3339_is_datetime_isoformat_including_rounding_at_the_second() -> None:
    now = float(int(time.time()))
    rng = random.Random(7)
    epochs = [now + rng.uniform(-3600, 3600) for _ in range(20_000)]
    epochs += [rng.uniform(946684800, 4102444800) for _ in range(20_000)]  # 2000 to 2100, one per second
    # Half microseconds round to even, and 0.9999995 s rounds up into the next second.
    epochs += [now + k / 1e6 + 0.5e-6 for k in range(-50, 50)]
    epochs += [now + 0.9999995, now + 0.9999994, math.nextafter(now + 1, 0), 946684800.0, 0.0, -1.5e-6]
    mismatches = [(epoch, events.rfc3339(epoch), _isoformat(epoch)) for epoch in epochs
                  if events.rfc3339(epoch) != _isoformat(epoch)]
    assert mismatches == []


def test_event_ids_are_version_4_uuids_that_an_application_seed_does_not_repeat() -> None:
    ids = [events.new_event_id() for _ in range(5_000)]
    assert len(set(ids)) == len(ids)
    for event_id in ids:
        parsed = uuid.UUID(event_id)
        assert (str(parsed), parsed.version, parsed.variant) == (event_id, 4, uuid.RFC_4122)
    random.seed(42)
    first = events.new_event_id()
    random.seed(42)
    assert events.new_event_id() != first


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_draws_other_event_ids_than_its_parent() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.write(write_end, " ".join(events.new_event_id() for _ in range(3)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_ids = set(os.read(read_end, 4096).decode().split())
    os.close(read_end)
    os.close(write_end)
    parent_ids = {events.new_event_id() for _ in range(3)}
    assert len(child_ids) == 3 and not child_ids & parent_ids


def _plain_number_or_text(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def test_header_values_become_the_same_numbers_or_text_as_int_then_float() -> None:
    values = ["", "0", "0012", " 12 ", "+5", "-3", "1_000", "1.5", "1e3", "inf", "Infinity", "nan", "-inf",
              "4.612s", "6m0s", "2026-12-02T03:40:01Z", "1.5 ", "\u00b2", "12\u00e9", "1f", "0x1f", "5ms"]
    values += ["".join(chars) for length in (1, 2, 3) for chars in itertools.product("09.e+-_ infaysZ", repeat=length)]
    for value in values:
        got, expected = _number_or_text(value), _plain_number_or_text(value)
        assert type(got) is type(expected), value
        assert got == expected or (got != got and expected != expected), value


def test_rate_limit_headers_are_matched_whatever_their_case_on_every_response() -> None:
    headers = httpx.Headers([("X-RateLimit-Remaining-Tokens", "27694"), ("x-ratelimit-reset-tokens", "4.612s"),
                             ("Date", "Wed, 02 Dec 2026 09:00:00 GMT"), ("x-request-id", "req_1")])
    expected = {"x-ratelimit-remaining-tokens": 27694, "x-ratelimit-reset-tokens": "4.612s"}
    # The second time the names come from the cache.
    assert ratelimit_attributes(headers, (b"x-ratelimit-",)) == expected
    assert ratelimit_attributes(headers, (b"x-ratelimit-",)) == expected
    assert ratelimit_attributes(headers, (b"anthropic-ratelimit-",)) == {}


def test_raw_responses_are_told_from_parsed_ones_by_type() -> None:
    class Raw:
        def __init__(self) -> None:
            self.http_response = object()

        def parse(self) -> dict[str, Any]:
            return {}

    class Parsed:
        def parse(self) -> dict[str, Any]:  # pydantic models have a (deprecated) parse too
            return {}

    for _ in range(2):
        assert _is_raw_response(Raw())
        assert not _is_raw_response(Parsed())
        assert not _is_raw_response({"usage": {}})


def test_usage_counts_takes_its_fields_in_order_with_their_defaults_and_stays_frozen() -> None:
    import dataclasses
    import inspect

    from tokensite_client.usage import UsageCounts

    parameters = list(inspect.signature(UsageCounts.__init__).parameters.values())[1:]
    assert [(p.name, p.default) for p in parameters] == [
        (f.name, f.default) for f in dataclasses.fields(UsageCounts)]
    counts = UsageCounts(10, 4, service_tier="flex")
    assert dataclasses.replace(counts, output_tokens=5) == UsageCounts(10, 5, service_tier="flex")
    assert hash(counts) == hash(UsageCounts(10, 4, service_tier="flex"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        counts.input_tokens = 1  # type: ignore[misc]
