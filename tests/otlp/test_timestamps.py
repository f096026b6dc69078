"""Event timestamps from OTLP's Unix nanoseconds: the record's instant, as RFC 3339 UTC text."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from apps.otlp.sources import iso_from_unix_nano

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _reference(nanos: int) -> str:
    return (_EPOCH + timedelta(microseconds=nanos // 1000)).isoformat().replace("+00:00", "Z")


def test_a_timestamp_is_the_records_instant_to_the_microsecond():
    rng = random.Random(13)
    around_now = 1_796_217_746_461_999_872
    samples = [0, 999, 1_000, -1, -1_000, 2**64 - 1, -(2**63), around_now, around_now // 10**9 * 10**9]
    samples += [around_now + rng.randrange(-(10**13), 10**13) for _ in range(5_000)]
    samples += [rng.randrange(-(2**63), 2**64) for _ in range(5_000)]
    samples += [rng.randrange(-(2**33), 2**33) * 1_000_000_000 for _ in range(500)]  # whole seconds
    for nanos in samples:
        assert iso_from_unix_nano(nanos) == _reference(nanos), nanos


def test_a_timestamp_parses_back_to_the_same_instant():
    text = iso_from_unix_nano(1_700_000_000_123_456_789)
    assert text == "2023-11-14T22:13:20.123456Z"
    assert datetime.fromisoformat(text) == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=timezone.utc)
