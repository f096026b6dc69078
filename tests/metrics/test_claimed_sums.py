"""claimed_sums, column-wise and compiled, gives exactly the sessions and buckets of a loop over the events."""
from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.metrics import algorithms as algo
from apps.metrics.claimed_events import CLAIM_COLUMNS, ClaimedEvents
from apps.metrics.claimed_sums import claimed_sums as claimed_sums_of_columns
from tests.conftest import property_examples
from tests.metrics.claimed_sums_reference import reference_sums

MINUTE_US = algo.MINUTE_US
T0_US = 1_795_165_680_000_000  # a minute boundary in 2026

# Starts on and around minute boundaries, before 1970 too (bucket starts floor there).
starts = st.one_of(
    st.integers(-3, 3).map(lambda minutes: T0_US + minutes * MINUTE_US),
    st.integers(T0_US - 3 * MINUTE_US, T0_US + 3 * MINUTE_US),
    st.integers(-2 * MINUTE_US, 2 * MINUTE_US),
)
durations_ms = st.one_of(
    st.just(0.0), st.sampled_from([0.0004, 0.0005, 0.0015, 60_000.0, 59_999.9995]), st.floats(0, 200_000)
)


def claimed_sums(rows: list[tuple]):
    return claimed_sums_of_columns(ClaimedEvents.from_rows(rows))


@st.composite
def claimed_event(draw, event_id: int) -> tuple:
    usage = draw(st.booleans()) or draw(st.booleans())
    start_us = draw(starts)
    duration_ms = draw(durations_ms)
    ttft_ms = draw(st.one_of(st.none(), st.just(0.0), st.just(duration_ms), st.floats(0, 250_000)))
    wait_ms = draw(st.one_of(st.sampled_from([0.0, 0.0005, 1000.0]), st.floats(0, 120_000)))
    cost = draw(st.one_of(st.none(), st.integers(0, 10**12)))
    row = {
        "id": event_id,
        "session_id": draw(st.sampled_from(["s-1", "s-2", "s-3"])),
        "type": "usage" if usage else "throttle",
        "step": draw(st.sampled_from(["", "plan", "draft"])),
        "provider": draw(st.sampled_from(["openai", "anthropic"])),
        "model": draw(st.sampled_from(["", "gpt-4o", "claude"])),
        "call_id": draw(st.sampled_from(["", "c-1", "c-2"])),
        "timestamp": start_us,
        "end_at": start_us + draw(st.integers(0, 5 * MINUTE_US)),
        "attributes": draw(st.sampled_from(["{}", json.dumps({"user": "u1"}), json.dumps({"app": "a", "user": "u2"})])),
        "duration_ms": duration_ms if usage else 0.0,
        "time_to_first_token_ms": ttft_ms if usage else None,
        "input_tokens": draw(st.one_of(st.integers(0, 5000), st.just(10**9))) if usage else 0,
        "output_tokens": draw(st.one_of(st.integers(0, 5000), st.just(10**9))) if usage else 0,
        "cache_read_tokens": draw(st.integers(0, 3000)) if usage else 0,
        "cache_write_tokens": draw(st.integers(0, 3000)) if usage else 0,
        "tool_tokens": draw(st.integers(0, 300)) if usage else 0,
        "thought_tokens": draw(st.integers(0, 300)) if usage else 0,
        "token_source": draw(st.sampled_from(["client", "estimated"])),
        "wait_ms": 0.0 if usage else wait_ms,
        "cost_nanousd": cost if usage else None,
        "price_source": ("" if cost is None else draw(st.sampled_from(["", "litellm:gpt-4o", "override"]))) if usage else "",
    }
    return tuple(row[name] for name in CLAIM_COLUMNS)


@st.composite
def claimed_events(draw) -> list[tuple]:
    return [draw(claimed_event(event_id)) for event_id in range(1, draw(st.integers(0, 40)) + 1)]


@settings(max_examples=property_examples(300), deadline=None, database=None)
@given(events=claimed_events())
def test_sessions_and_buckets_equal_the_per_event_loop(events):
    batches, buckets = claimed_sums(events)
    expected_batches, expected_buckets = reference_sums(events)
    assert (batches, buckets) == (expected_batches, expected_buckets)
    # Dict equality ignores order; the order of attribute texts decides which value is first.
    assert [list(batch.attribute_texts) for batch in batches.values()] == [
        list(batch.attribute_texts) for batch in expected_batches.values()
    ]


def usage_row(**values) -> tuple:
    row = dict.fromkeys(CLAIM_COLUMNS, 0)
    row.update(id=1, session_id="s", type="usage", step="", provider="p", model="m", call_id="", timestamp=T0_US,
               end_at=T0_US, attributes="{}", duration_ms=1000.0, time_to_first_token_ms=None, token_source="client",
               wait_ms=0.0, cost_nanousd=None, price_source="")  # fmt: skip
    row.update(values)
    return tuple(row[name] for name in CLAIM_COLUMNS)


def test_a_call_crossing_minutes_splits_its_output_as_bucket_call_tokens_does():
    (row,) = events = [usage_row(timestamp=T0_US - 30_000_000, duration_ms=100_000.0, input_tokens=7, output_tokens=900)]
    _, buckets = claimed_sums(events)
    call = algo.place_call(start_us=row[7], duration_ms=100_000.0, time_to_first_token_ms=None, input_tokens=7,
                           output_tokens=900)  # fmt: skip
    shares = algo.bucket_call_tokens(call)
    assert [(start, sums[0], sums[1]) for (start, _, _), sums in sorted(buckets.items())] == [
        (share.bucket_start_us, share.input_tokens, share.output_tokens) for share in shares
    ]
    assert len(shares) == 3


def test_a_call_too_long_for_int64_share_arithmetic_is_split_exactly():
    # 2 * output * generation time exceeds an int64: bucket_call_tokens splits it with Python ints.
    events = [
        usage_row(duration_ms=86_400_000.0, input_tokens=3, output_tokens=10**9),
        usage_row(id=2, duration_ms=150_000.0, output_tokens=5000, timestamp=T0_US + 1),
    ]
    assert claimed_sums(events) == reference_sums(events)


@pytest.mark.parametrize(
    "bad",
    [
        {"duration_ms": -1.0},
        {"duration_ms": float("nan")},
        {"duration_ms": float("inf")},
        {"type": "throttle", "wait_ms": -0.5},
        {"input_tokens": -5},
        {"output_tokens": -1},
    ],
)
def test_an_event_that_cannot_be_placed_raises_the_algorithms_error(bad):
    events = [usage_row(), usage_row(id=2, **bad)]
    with pytest.raises((ValueError, OverflowError)) as raised:
        claimed_sums(events)
    with pytest.raises((ValueError, OverflowError)) as expected:
        reference_sums(events)
    assert (type(raised.value), str(raised.value)) == (type(expected.value), str(expected.value))


def test_a_duration_beyond_exact_float_rounding_is_refused():
    # Ingestion caps durations at 24 h; a row beyond 2**53 us is refused, not rounded wrong.
    with pytest.raises(ValueError, match="beyond any call's"):
        claimed_sums([usage_row(duration_ms=2.0**53 / 1000)])


def test_totals_an_int64_cannot_hold_are_refused():
    events = [usage_row(id=number, cost_nanousd=2**61) for number in range(1, 3)]
    with pytest.raises(ValueError, match="exceed"):
        claimed_sums(events)


def test_wait_totals_an_int64_cannot_hold_are_refused_whatever_the_durations():
    # A throttle's duration is never used; a NaN there must not hide the waits' total.
    waits = [usage_row(id=number, type="throttle", duration_ms=0.0, wait_ms=8e12) for number in range(2, 602)]
    with pytest.raises(ValueError, match="exceed"):
        claimed_sums([usage_row(type="throttle", duration_ms=float("nan"), wait_ms=1.0), *waits])


def test_no_events_add_nothing():
    assert claimed_sums([]) == ({}, {})


def test_compile_kernels_command_leaves_the_sums_as_the_per_event_loop_computes_them():
    events = [usage_row(id=1, timestamp=T0_US - 30_000_000, duration_ms=100_000.0, output_tokens=900),
              usage_row(id=2, session_id="t", step="plan", input_tokens=5, output_tokens=7),
              usage_row(id=3, type="throttle", duration_ms=0.0, wait_ms=1000.0)]  # fmt: skip
    out = io.StringIO()
    call_command("compile_kernels", stdout=out)
    assert "compiled" in out.getvalue()
    assert claimed_sums(events) == reference_sums(events)
