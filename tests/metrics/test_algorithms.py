"""Call rates, placement, throttling and rolling rates (DESIGN 3 to 5) against hand-computed values."""
from __future__ import annotations

import math
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.metrics.algorithms import (
    MINUTE_US,
    BucketTokens,
    Interval,
    PlacedCall,
    StepThrottle,
    bucket_call_tokens,
    bucket_start_us,
    call_tokens_per_second,
    epoch_us,
    generation_interval_us,
    generation_ms,
    ms_to_us,
    place_call,
    rate_terms,
    rolling_tokens_per_second,
    throttle_by_step,
    throttle_interval,
    throttle_share_of_wall_time,
    tokens_per_second,
    union_length_us,
)
from tests.conftest import property_examples

SECOND_US = 1_000_000
PROPERTY_SETTINGS = settings(max_examples=property_examples(200), deadline=None, database=None)


def placed(start_us: int, duration_ms: float, ttft_ms: float | None, input_tokens: int, output_tokens: int) -> PlacedCall:
    return place_call(
        start_us=start_us,
        duration_ms=duration_ms,
        time_to_first_token_ms=ttft_ms,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def test_module_does_not_import_django():
    code = "import sys, apps.metrics.algorithms; sys.exit('django' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- Call rate -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration_ms", "ttft_ms", "expected_ms"),
    [
        (3000, 500, 2500),  # 0 < ttft < duration: generation starts at the first token
        (3000, None, 3000),  # no ttft: the whole duration
        (3000, 0, 3000),
        (3000, 3000, 3000),  # ttft == duration is out of range: the whole duration
        (3000, 4000, 3000),
        (0, None, 0),
        (0, 5, 0),
        (12.5, 2.25, 10.25),
    ],
)
def test_generation_time_follows_the_ttft_rule(duration_ms, ttft_ms, expected_ms):
    assert generation_ms(duration_ms, ttft_ms) == expected_ms


def test_generation_interval_ends_when_the_call_ends():
    assert generation_interval_us(1_000_000, 3000, 500) == (1_500_000, 4_000_000)
    assert generation_interval_us(1_000_000, 3000, 3000) == (1_000_000, 4_000_000)
    assert generation_interval_us(1_000_000, 0, None) == (1_000_000, 1_000_000)
    assert generation_interval_us(0, 0.25, None) == (0, 250)  # fractional ms keep their microseconds


def test_seed_call_rate_is_350_tokens_per_second():
    # Seed: tokensOut 875 at tokensPerSecond 350 = 2.5 s of generation.
    assert call_tokens_per_second(875, 3000, 500) == 350.0
    assert rate_terms(875, 3000, 500) == (875, 2.5)


def test_calls_without_generation_time_have_no_rate_and_stay_out_of_the_sums():
    assert call_tokens_per_second(875, 0, None) is None
    assert rate_terms(875, 0, None) == (0, 0.0)


def test_session_rate_is_weighted_by_generation_time():
    terms = [rate_terms(875, 3000, 500), rate_terms(1225, 3500, None), rate_terms(999, 0, None)]
    sum_output_tokens = sum(tokens for tokens, _ in terms)
    sum_generation_seconds = sum(seconds for _, seconds in terms)
    # (875 + 1225) / (2.5 + 3.5): the zero-duration call's 999 tokens do not count.
    assert tokens_per_second(sum_output_tokens, sum_generation_seconds) == 350.0
    assert tokens_per_second(0, 0.0) is None


# --- Placement -----------------------------------------------------------------------------------


def test_epoch_us_is_exact_and_needs_an_aware_datetime():
    moment = datetime(2026, 11, 20, 9, 0, 0, 123456, tzinfo=timezone.utc)
    assert epoch_us(moment) == 1_795_165_200_123_456
    assert epoch_us(moment.astimezone(timezone(timedelta(hours=2)))) == 1_795_165_200_123_456
    with pytest.raises(ValueError):
        epoch_us(datetime(2026, 11, 20))


def test_placement_puts_input_at_the_start_and_output_over_generation():
    seed = placed(10, 3000, 500, 1250, 875)
    assert (seed.start_us, seed.generation_start_us, seed.end_us) == (10, 500_010, 3_000_010)
    assert seed.instant_tokens == 1250
    instant = placed(10, 0, None, 1250, 875)
    assert instant.instant_tokens == 2125  # duration 0: output lands with the input


def test_generation_below_a_microsecond_lands_output_at_the_start():
    # 1 ms call, first token at 0.9999 ms: 0.1 us of generation rounds to an empty interval.
    tiny = placed(0, 1, 0.9999, 5, 3)
    assert (tiny.generation_start_us, tiny.end_us) == (1000, 1000)
    assert tiny.instant_tokens == 8


def test_invalid_calls_are_rejected():
    with pytest.raises(ValueError):
        place_call(start_us=0, duration_ms=-1, time_to_first_token_ms=None, input_tokens=1, output_tokens=1)
    with pytest.raises(ValueError):
        place_call(start_us=0, duration_ms=1, time_to_first_token_ms=None, input_tokens=-1, output_tokens=1)
    with pytest.raises(ValueError):
        Interval(5, 4)


def outcome(make):
    """What building a call (or an interval tuple) gives: its fields with their types, or the error raised."""
    try:
        placed_call = make()
    except (ValueError, OverflowError, TypeError) as error:
        return type(error), str(error)
    if isinstance(placed_call, tuple):
        return tuple, [(type(value), value) for value in placed_call]
    fields = (
        placed_call.start_us,
        placed_call.end_us,
        placed_call.generation_start_us,
        placed_call.input_tokens,
        placed_call.output_tokens,
    )
    return type(placed_call), [(type(value), value) for value in fields]


@PROPERTY_SETTINGS
@given(
    start_us=st.integers(-(2**62), 2**62),
    duration_ms=st.one_of(
        st.floats(), st.floats(0, 10**7), st.integers(-5, 10**9), st.sampled_from([0.0, 0.0004, 0.0005, 1.0])
    ),
    ttft_ms=st.one_of(st.none(), st.floats(), st.integers(-5, 10**9), st.sampled_from([0.0, 0.9996, 1.0])),
    input_tokens=st.integers(-2, 3) | st.integers(0, 10**6),
    output_tokens=st.integers(-2, 3) | st.integers(0, 10**6),
)
def test_place_call_is_a_validated_call_over_the_generation_interval(
    start_us, duration_ms, ttft_ms, input_tokens, output_tokens
):
    # place_call builds its PlacedCall without the dataclass __init__, and generation_interval_us
    # inlines ms_to_us and generation_ms: same fields, same errors as the plain definitions.
    def interval() -> tuple[int, int]:
        end_us = start_us + ms_to_us(duration_ms)
        return end_us - ms_to_us(generation_ms(duration_ms, ttft_ms)), end_us

    def reference() -> PlacedCall:
        generation_start_us, end_us = interval()
        return PlacedCall(start_us, end_us, generation_start_us, input_tokens, output_tokens)

    assert outcome(lambda: generation_interval_us(start_us, duration_ms, ttft_ms)) == outcome(interval)
    assert outcome(lambda: placed(start_us, duration_ms, ttft_ms, input_tokens, output_tokens)) == outcome(reference)


# --- Throttling ----------------------------------------------------------------------------------


def test_union_counts_overlapping_waits_once():
    assert union_length_us([Interval(0, 2), Interval(1, 3), Interval(5, 6), Interval(5, 5)]) == 4
    assert union_length_us([Interval(5, 6), Interval(0, 10)]) == 10
    assert union_length_us([]) == 0


def test_throttle_interval_starts_at_the_event_timestamp():
    assert throttle_interval(7, 2.5) == Interval(7, 2507)


def test_share_of_wall_time_is_the_union_of_waits_over_the_session_span():
    waits = [throttle_interval(0, 2000), throttle_interval(SECOND_US, 2000)]  # union [0, 3 s)
    assert throttle_share_of_wall_time(waits, 0, 10 * SECOND_US) == 0.3
    # A wait before the first call extends the wall time: [-5 s, 10 s) = 15 s, waits 3 s + 1 s.
    earlier = [*waits, throttle_interval(-5 * SECOND_US, 1000)]
    assert throttle_share_of_wall_time(earlier, 0, 10 * SECOND_US) == 4 / 15
    # Only waits: they are the whole wall time.
    assert throttle_share_of_wall_time(waits, None, None) == 1.0


def test_share_of_wall_time_is_zero_without_wall_time():
    assert throttle_share_of_wall_time([], None, None) == 0.0
    assert throttle_share_of_wall_time([], 5, 5) == 0.0
    assert throttle_share_of_wall_time([throttle_interval(5, 0)], 5, 5) == 0.0


def test_linked_throttle_waits_go_to_the_step_of_their_usage_event():
    throttles = [("call-1", "default", 1000.0), ("call-2", "default", 1500.0), (None, "summary", 250.0)]
    usages = [("call-1", "persona_generation"), (None, "summary")]
    # call-2 has no usage event (yet): its wait stays on the throttle event's own step.
    assert throttle_by_step(throttles, usages) == {
        "persona_generation": StepThrottle(1, 1000.0),
        "default": StepThrottle(1, 1500.0),
        "summary": StepThrottle(1, 250.0),
    }


def test_seed_throttle_wait_sums_to_2500_ms():
    totals = throttle_by_step([("a", "s", 1000.0), ("b", "s", 1500.0)], [])
    assert totals == {"s": StepThrottle(2, 2500.0)}


def test_throttle_attribution_does_not_depend_on_arrival_order():
    throttles = [(f"call-{i % 7}", f"step-{i % 3}", 0.1 * i) for i in range(50)]
    usages = [(f"call-{i % 7}", f"usage-step-{i % 4}") for i in range(30)]
    expected = throttle_by_step(throttles, usages)
    rng = random.Random(3)
    for _ in range(5):
        rng.shuffle(throttles)
        rng.shuffle(usages)
        assert throttle_by_step(throttles, usages) == expected


# --- Buckets and rolling rates -------------------------------------------------------------------


def test_seed_call_splits_exactly_over_second_buckets():
    seed = placed(0, 3000, 500, 1250, 875)
    assert bucket_call_tokens(seed, bucket_us=SECOND_US) == [
        BucketTokens(0, 1250, 175),
        BucketTokens(SECOND_US, 0, 350),
        BucketTokens(2 * SECOND_US, 0, 350),
    ]


def test_cumulative_rounding_keeps_the_total_exact():
    # 10 tokens over three equal buckets: placed before each edge rounds to 3, 7, 10.
    third = placed(0, 3000, None, 0, 10)
    assert [b.output_tokens for b in bucket_call_tokens(third, bucket_us=SECOND_US)] == [3, 4, 3]


def test_zero_duration_call_fills_one_bucket():
    instant = placed(MINUTE_US + 5, 0, None, 7, 3)
    assert bucket_call_tokens(instant) == [BucketTokens(MINUTE_US, 7, 3)]


def test_buckets_are_epoch_aligned_also_before_the_epoch():
    assert bucket_start_us(MINUTE_US + 1) == MINUTE_US
    assert bucket_start_us(-1) == -MINUTE_US


@PROPERTY_SETTINGS
@given(
    start_us=st.integers(-10 * MINUTE_US, 10 * MINUTE_US),
    duration_ms=st.floats(0, 600_000, allow_nan=False),
    ttft_ms=st.none() | st.floats(0, 600_000, allow_nan=False),
    input_tokens=st.integers(0, 10**9),
    output_tokens=st.integers(0, 10**9),
    bucket_us=st.sampled_from([SECOND_US, MINUTE_US, 60 * MINUTE_US]),
)
def test_buckets_sum_exactly_and_track_the_uniform_share(
    start_us, duration_ms, ttft_ms, input_tokens, output_tokens, bucket_us
):
    call = placed(start_us, duration_ms, ttft_ms, input_tokens, output_tokens)
    buckets = bucket_call_tokens(call, bucket_us)
    assert buckets[0].bucket_start_us == bucket_start_us(start_us, bucket_us)
    assert sum(b.input_tokens for b in buckets) == input_tokens
    assert sum(b.output_tokens for b in buckets) == output_tokens
    assert [b.bucket_start_us for b in buckets] == sorted({b.bucket_start_us for b in buckets})
    generation_us = call.end_us - call.generation_start_us
    for b in buckets:
        assert b.output_tokens >= 0
        if generation_us:
            overlap_us = min(b.bucket_start_us + bucket_us, call.end_us) - max(
                b.bucket_start_us, call.generation_start_us
            )
            exact = Fraction(output_tokens * max(overlap_us, 0), generation_us)
            assert abs(b.output_tokens - exact) <= 1


def test_rolling_rate_counts_the_oldest_bucket_pro_rata():
    buckets = [(0, 600), (MINUTE_US, 1200), (2 * MINUTE_US, 999)]  # the last starts after now
    now_us = 90 * SECOND_US
    # Window [30 s, 90 s): half of [0, 60 s) = 300, and all of the elapsed [60 s, 90 s) = 1200.
    assert rolling_tokens_per_second(buckets, now_us=now_us, window_us=MINUTE_US) == 1500 / 60
    # 5 min window covers everything elapsed: 1800 tokens over 300 s.
    assert rolling_tokens_per_second(buckets, now_us=now_us, window_us=5 * MINUTE_US) == 1800 / 300


def test_rolling_rate_of_a_steady_stream_is_exact_mid_minute():
    rate_tokens_per_second = 10
    now_us = 60 * MINUTE_US + 15 * SECOND_US
    buckets = [(m * MINUTE_US, 60 * rate_tokens_per_second) for m in range(60)]
    buckets.append((60 * MINUTE_US, 15 * rate_tokens_per_second))  # the current minute so far
    for window_us in (MINUTE_US, 5 * MINUTE_US, 60 * MINUTE_US):
        rate = rolling_tokens_per_second(buckets, now_us=now_us, window_us=window_us)
        assert math.isclose(rate, rate_tokens_per_second, rel_tol=1e-12)


def test_rolling_rate_of_nothing_is_zero():
    assert rolling_tokens_per_second([], now_us=0, window_us=MINUTE_US) == 0.0
    with pytest.raises(ValueError):
        rolling_tokens_per_second([], now_us=0, window_us=0)
