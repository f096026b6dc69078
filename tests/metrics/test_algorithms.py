"""Call placement, throttling and rolling rates (DESIGN 3 to 5) against hand-computed values."""
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
    epoch_us,
    generation_interval_us,
    ms_to_us,
    rolling_tokens_per_second,
    throttle_by_step,
    tokens_per_second,
    union_length_us,
    whole_ms,
)
from tests.conftest import property_examples
from tests.metrics.test_bursts import call

SECOND_US = 1_000_000
PROPERTY_SETTINGS = settings(max_examples=property_examples(200), deadline=None, database=None)


def placed(start_us: int, duration_ms: float, ttft_ms: float | None, input_tokens: int,
           output_tokens: int) -> PlacedCall:  # fmt: skip
    return call(start_us, duration_ms, input_tokens, output_tokens, ttft_ms)


def test_module_does_not_import_django():
    code = "import sys, apps.metrics.algorithms; sys.exit('django' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- Placement -----------------------------------------------------------------------------------


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
    begin_us, end_us = generation_interval_us(1_000_000, duration_ms, ttft_ms)
    assert (end_us, end_us - begin_us) == (1_000_000 + ms_to_us(duration_ms), ms_to_us(expected_ms))


def test_generation_interval_ends_when_the_call_ends():
    assert generation_interval_us(1_000_000, 3000, 500) == (1_500_000, 4_000_000)
    assert generation_interval_us(1_000_000, 3000, 3000) == (1_000_000, 4_000_000)
    assert generation_interval_us(1_000_000, 0, None) == (1_000_000, 1_000_000)
    assert generation_interval_us(0, 0.25, None) == (0, 250)  # fractional ms keep their microseconds


def test_tokens_per_second_is_output_over_generation_time_and_absent_without_one():
    begin_us, end_us = generation_interval_us(0, 3000, 500)
    assert tokens_per_second(500, end_us - begin_us) == 200.0  # 500 tokens over 2.5 s, not 3 s
    assert tokens_per_second(500, 0) is None
    # Session-weighted: sums over the calls, not a mean of their rates (100 tok/s and 10 tok/s).
    assert tokens_per_second(100 + 100, 1_000_000 + 10_000_000) == pytest.approx(200 / 11)


def test_waits_are_shown_in_whole_milliseconds_halves_to_even():
    assert [whole_ms(us) for us in (0, 499, 500, 501, 1500, 2500, 998 * 600)] == [0, 0, 0, 1, 2, 2, 599]


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
        generation_interval_us(0, -1, None)
    with pytest.raises(ValueError):
        generation_interval_us(0, math.nan, None)
    with pytest.raises(ValueError):
        PlacedCall(0, 1000, 0, -1, 1)
    with pytest.raises(ValueError):
        PlacedCall(0, 1000, 1001, 1, 1)
    with pytest.raises(ValueError):
        Interval(5, 4)


# --- Throttling ----------------------------------------------------------------------------------


def test_union_counts_overlapping_waits_once():
    assert union_length_us([Interval(0, 2), Interval(1, 3), Interval(5, 6), Interval(5, 5)]) == 4
    assert union_length_us([Interval(5, 6), Interval(0, 10)]) == 10
    assert union_length_us([]) == 0


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
