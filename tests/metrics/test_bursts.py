"""Bursts and peak concurrency (DESIGN 4) against hand-computed values and a brute-force oracle."""
from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.metrics.algorithms import (
    BURST_WINDOWS_US,
    PeakUpdateRange,
    PlacedCall,
    burst_peaks,
    generation_interval_us,
    peak_concurrency,
    peak_update_ranges,
)
from tests.conftest import property_examples

SECOND_US = 1_000_000
PROPERTY_SETTINGS = settings(max_examples=property_examples(200), deadline=None, database=None)


def close(actual: float, expected: float | Fraction) -> bool:
    return math.isclose(actual, float(expected), rel_tol=1e-9, abs_tol=1e-9)


def call(
    start_us: int, duration_ms: float, input_tokens: int, output_tokens: int, ttft_ms: float | None = None
) -> PlacedCall:
    """A usage event placed in time as ingest places it."""
    generation_start_us, end_us = generation_interval_us(start_us, duration_ms, ttft_ms)
    return PlacedCall(start_us, end_us, generation_start_us, input_tokens, output_tokens)


def burst_peak(calls: list[PlacedCall], window_us: int, start_from_us: int | None = None,
               start_to_us: int | None = None) -> float:  # fmt: skip
    return burst_peaks(calls, (window_us,), start_from_us, start_to_us)[window_us]


# --- Brute-force oracle -------------------------------------------------------------------------


def window_tokens(calls: list[PlacedCall], start_us: Fraction, window_us: int, just_after: bool) -> Fraction:
    """Exact tokens in [t, t + W), or with `just_after` the limit of windows starting at t + eps, eps -> 0+.

    An instant at x is in [t, t + W) iff t <= x < t + W; it is in [t + eps, t + eps + W) for
    every small eps iff t < x <= t + W. Spread output counts its overlap length, which is
    continuous in t, so the limit needs no special case there.
    """
    tokens = Fraction(0)
    for c in calls:
        x = c.start_us
        if just_after:
            inside = start_us < x <= start_us + window_us
        else:
            inside = start_us <= x < start_us + window_us
        if inside:
            tokens += c.instant_tokens
        if c.generation_start_us < c.end_us:
            overlap_us = min(start_us + window_us, c.end_us) - max(start_us, c.generation_start_us)
            if overlap_us > 0:
                tokens += Fraction(c.output_tokens) * overlap_us / (c.end_us - c.generation_start_us)
    return tokens


def oracle_burst(
    calls: list[PlacedCall], window_us: int, start_from_us: int | None = None, start_to_us: int | None = None
) -> Fraction:
    """Brute force: the window sum F(t) at every candidate start t, and its right limit F(t+).

    F(t) changes form only where a window edge meets a token edge: an instant at x enters as t
    passes x - W (the window [t, t + W) takes it in just after t = x - W) and leaves just after
    t = x; spread output over [g, e) changes slope where t or t + W crosses g or e. So the
    candidates are x, x - W for instants, g, g - W, e, e - W for intervals, and the range ends.
    Between two consecutive candidates F is linear, so its supremum on that open stretch is a
    limit at one of the two ends: F(c+) at the left end (the window "just taking in" an instant
    at c + W) or F(c-) = F(c) at the right end (an instant's membership (x - W, x] is closed on
    the right, intervals are continuous). Hence max over candidates c in range of F(c), and of
    F(c+) for c below the range's top (F(c+) at the top would be a start outside the range).
    Far from every token F = 0, which the initial 0 covers. O(n^2), exact in Fractions.
    """
    candidates: set[int] = set()
    for c in calls:
        edges = [c.start_us]
        if c.generation_start_us < c.end_us:
            edges += [c.generation_start_us, c.end_us]
        for edge in edges:
            candidates.update((edge, edge - window_us))
    lower = -math.inf if start_from_us is None else start_from_us
    upper = math.inf if start_to_us is None else start_to_us
    candidates.update(bound for bound in (start_from_us, start_to_us) if bound is not None)
    best = Fraction(0)
    for candidate in candidates:
        if lower <= candidate <= upper:
            best = max(best, window_tokens(calls, Fraction(candidate), window_us, just_after=False))
            if candidate < upper:
                best = max(best, window_tokens(calls, Fraction(candidate), window_us, just_after=True))
    return best * SECOND_US / window_us


def oracle_concurrency(calls: list[PlacedCall], from_us: int | None = None, to_us: int | None = None) -> int:
    """Brute force: the in-flight count only rises at a call start, so test each start (and from_us)."""
    instants = {c.start_us for c in calls}
    if from_us is not None:
        instants.add(from_us)
    return max(
        [
            sum(1 for c in calls if c.start_us <= t < c.end_us)
            for t in instants
            if (from_us is None or t >= from_us) and (to_us is None or t <= to_us)
        ],
        default=0,
    )


# --- Hand-computed values -----------------------------------------------------------------------


def test_seed_call_bursts():
    # tokensIn 1250, tokensOut 875 at 350 tokens/s: 2.5 s of generation after a 0.5 s first token.
    seed = call(0, 3000, 1250, 875, ttft_ms=500)
    # 1 s: the input instant plus the first 0.5 s of generation = 1250 + 175.
    assert burst_peaks([seed]) == {1 * SECOND_US: 1425.0, 10 * SECOND_US: 212.5, 60 * SECOND_US: 2125 / 60}


def test_instants_exactly_one_window_apart_never_share_a_window():
    calls = [call(0, 0, 1000, 0), call(SECOND_US, 0, 500, 0)]
    assert burst_peak(calls, SECOND_US) == 1000.0
    assert burst_peak([calls[0], call(SECOND_US - 1, 0, 500, 0)], SECOND_US) == 1500.0


def test_peak_is_the_limit_of_windows_that_just_take_in_an_instant():
    # 1000 tokens over [0, 1 s), then 500 at exactly 1 s. Window [t, t + 1 s): at t = 0 it holds
    # 1000 but not the instant; for small t > 0 it holds 1000 (1 - t) + 500, whose sup is 1500.
    calls = [call(0, 1000, 0, 1000), call(SECOND_US, 0, 500, 0)]
    assert burst_peak(calls, SECOND_US) == 1500.0


def test_zero_duration_call_lands_all_its_tokens_at_its_start():
    assert burst_peak([call(5 * SECOND_US, 0, 100, 50)], SECOND_US) == 150.0


def test_ttft_equal_to_duration_spreads_output_over_the_whole_call():
    # ttft == duration is not 0 < ttft < duration, so generation time is the whole 2 s.
    assert burst_peak([call(0, 2000, 0, 1000, ttft_ms=2000)], SECOND_US) == 500.0


def test_sessions_without_tokens_have_zero_bursts():
    assert burst_peak([], SECOND_US) == 0.0
    assert burst_peak([call(0, 1000, 0, 0)], SECOND_US) == 0.0


def test_restricted_range_only_sees_windows_starting_inside_it():
    calls = [call(0, 0, 100, 0), call(10 * SECOND_US, 0, 900, 0)]
    assert burst_peak(calls, SECOND_US) == 900.0
    assert burst_peak(calls, SECOND_US, start_from_us=0, start_to_us=5 * SECOND_US) == 100.0
    assert burst_peak(calls, SECOND_US, start_from_us=1, start_to_us=5 * SECOND_US) == 0.0
    # The window starting at the range's top, [9 s, 10 s), stops just short of the 900 instant.
    assert burst_peak(calls, SECOND_US, start_from_us=SECOND_US, start_to_us=9 * SECOND_US) == 0.0
    assert burst_peak(calls, SECOND_US, start_from_us=9 * SECOND_US + 1, start_to_us=None) == 900.0


def test_invalid_ranges_and_windows_are_rejected():
    with pytest.raises(ValueError):
        burst_peak([], SECOND_US, start_from_us=2, start_to_us=1)
    with pytest.raises(ValueError):
        burst_peak([], 0)
    with pytest.raises(ValueError):
        peak_concurrency([], from_us=2, to_us=1)


def test_peak_concurrency_counts_half_open_spans():
    assert peak_concurrency([call(0, 1000, 1, 1), call(500_000, 1000, 1, 1)]) == 2
    # Back to back: the first has left when the second starts.
    assert peak_concurrency([call(0, 1000, 1, 1), call(SECOND_US, 1000, 1, 1)]) == 1
    assert peak_concurrency([call(0, 0, 1, 1), call(0, 0, 1, 1)]) == 0
    assert peak_concurrency([]) == 0


def test_restricted_peak_concurrency_is_the_max_over_the_range():
    spans = [call(0, 10_000, 1, 1), call(0, 1000, 1, 1), call(5 * SECOND_US, 1000, 1, 1)]
    assert peak_concurrency(spans) == 2
    assert peak_concurrency(spans, from_us=2 * SECOND_US, to_us=4 * SECOND_US) == 1
    assert peak_concurrency(spans, from_us=5 * SECOND_US, to_us=5 * SECOND_US) == 2
    assert peak_concurrency(spans, from_us=10 * SECOND_US) == 0


def test_update_ranges_cover_the_batch_with_the_longest_window():
    window_us = 60 * SECOND_US
    (only,) = peak_update_ranges([call(100 * SECOND_US, 2000, 1, 1)])
    assert only == PeakUpdateRange(
        burst_start_from_us=40 * SECOND_US,
        burst_start_to_us=102 * SECOND_US,
        concurrency_from_us=100 * SECOND_US,
        concurrency_to_us=102 * SECOND_US,
        load_from_us=40 * SECOND_US,
        load_to_us=162 * SECOND_US,
    )
    assert only.needs(call(162 * SECOND_US, 0, 1, 1)) and only.needs(call(39 * SECOND_US, 1000, 1, 1))
    assert not only.needs(call(162 * SECOND_US + 1, 0, 1, 1))
    # Load ranges that meet merge; a call hours later gets its own range.
    near = peak_update_ranges([call(0, 0, 1, 1), call(2 * window_us, 0, 1, 1)])
    far = peak_update_ranges([call(3 * 3600 * SECOND_US, 0, 1, 1), call(0, 0, 1, 1)])
    assert [(r.burst_start_from_us, r.burst_start_to_us) for r in near] == [(-window_us, 2 * window_us)]
    assert [(r.burst_start_from_us, r.burst_start_to_us) for r in far] == [
        (-window_us, 0),
        (3 * 3600 * SECOND_US - window_us, 3 * 3600 * SECOND_US),
    ]
    assert peak_update_ranges([]) == []


def test_dense_session_matches_brute_force():
    # Many overlapping calls keep generation intervals open across the whole sweep.
    rng = random.Random(7)
    calls = [
        call(
            rng.randrange(0, 10 * SECOND_US),
            rng.uniform(0, 8000),
            rng.randrange(0, 5000),
            rng.randrange(0, 5000),
            ttft_ms=rng.choice([None, rng.uniform(0, 3000)]),
        )
        for _ in range(40)
    ]
    for window_us in (SECOND_US, 333_333):
        assert close(burst_peak(calls, window_us), oracle_burst(calls, window_us))
        restricted = (5 * SECOND_US, 7 * SECOND_US)
        assert close(burst_peak(calls, window_us, *restricted), oracle_burst(calls, window_us, *restricted))


def test_token_sums_beyond_float_precision_stay_exact():
    # 2**53 + 1 and 2**53 + 3 are no floats: the instants must be summed as ints, then rounded once.
    calls = [call(0, 0, 2**53 + 1, 0), call(1, 0, 2, 0)]
    assert burst_peak(calls, SECOND_US) == float(2**53 + 3) * SECOND_US / SECOND_US


def dense_grid_session(rng: random.Random) -> list[PlacedCall]:
    """Up to 29 calls with starts, durations and ttfts on coarse grids, and some arbitrary ones."""
    return [
        call(
            rng.randrange(0, 40) * GRID_US,
            rng.choice([0, 250, 500, 1000, 1250, 10_000, rng.randrange(1, 40) * 250]),
            rng.choice([0, 0, 1, rng.randrange(0, 5000)]),
            rng.choice([0, 1, rng.randrange(0, 5000)]),
            ttft_ms=rng.choice([None, 0.0, 250.0, rng.uniform(0, 2000), rng.randrange(0, 8) * 125.0]),
        )
        for _ in range(rng.randrange(1, 30))
    ]


def test_adding_tokens_never_lowers_a_peak():
    calls = [call(0, 3000, 1250, 875, ttft_ms=500)]
    before = burst_peaks(calls)
    after = burst_peaks(calls + [call(2 * SECOND_US, 0, 10, 0)])
    assert all(after[w] >= before[w] for w in BURST_WINDOWS_US)


# --- Properties against brute force -------------------------------------------------------------

GRID_US = 250_000  # coarse starts and durations make instants land exactly on window edges


def placed_calls(horizon_us: int = 12 * SECOND_US) -> st.SearchStrategy[PlacedCall]:
    """Calls with coarse or arbitrary starts and durations, zero durations, and every kind of ttft."""

    def build(
        start_us: int, duration_ms: float, ttft: str | float | None, input_tokens: int, output_tokens: int
    ) -> PlacedCall:
        ttft_ms = duration_ms if ttft == "duration" else ttft
        assert not isinstance(ttft_ms, str)
        return call(start_us, duration_ms, input_tokens, output_tokens, ttft_ms=ttft_ms)

    return st.builds(
        build,
        st.one_of(
            st.integers(0, horizon_us // GRID_US).map(lambda k: k * GRID_US), st.integers(0, horizon_us)
        ),
        st.one_of(
            st.just(0.0),
            st.integers(1, 12).map(lambda k: k * GRID_US / 1000),
            st.floats(0, 4000, allow_nan=False),
        ),
        st.one_of(st.none(), st.just("duration"), st.just(0.0), st.floats(0, 5000, allow_nan=False)),
        st.integers(0, 2000),
        st.integers(0, 2000),
    )


sessions = st.lists(placed_calls(), max_size=12)
windows = st.one_of(
    st.sampled_from(BURST_WINDOWS_US),
    st.integers(1, 12).map(lambda k: k * GRID_US),
    st.integers(1, 3 * SECOND_US),
)
# On the grid, range ends often fall exactly where a window edge meets a token edge.
instants = st.one_of(
    st.integers(-8, 56).map(lambda k: k * GRID_US),
    st.integers(-2 * SECOND_US, 14 * SECOND_US),
)


@PROPERTY_SETTINGS
@given(calls=sessions, window_us=windows)
def test_burst_peak_equals_brute_force(calls, window_us):
    assert close(burst_peak(calls, window_us), oracle_burst(calls, window_us))


@PROPERTY_SETTINGS
@given(calls=sessions, window_us=windows, data=st.data())
def test_restricted_burst_peak_equals_brute_force(calls, window_us, data):
    # Range ends drawn from the candidate starts too: that is where off-by-one-edge errors show.
    edges = [edge for c in calls for edge in (c.start_us, c.generation_start_us, c.end_us)]
    candidates = sorted({edge - shift for edge in edges for shift in (0, window_us)})
    bound = st.none() | instants | (st.sampled_from(candidates) if candidates else st.nothing())
    start_from_us, start_to_us = data.draw(bound), data.draw(bound)
    if start_from_us is not None and start_to_us is not None and start_from_us > start_to_us:
        start_from_us, start_to_us = start_to_us, start_from_us
    assert close(
        burst_peak(calls, window_us, start_from_us, start_to_us),
        oracle_burst(calls, window_us, start_from_us, start_to_us),
    )


@PROPERTY_SETTINGS
@given(calls=sessions, window_us=windows, starts=st.lists(instants, max_size=20))
def test_no_window_holds_more_than_the_peak(calls, window_us, starts):
    peak_tokens = burst_peak(calls, window_us) * window_us / SECOND_US
    for start_us in starts:
        tokens = float(window_tokens(calls, Fraction(start_us), window_us, just_after=False))
        assert tokens <= peak_tokens * (1 + 1e-9) + 1e-9


@PROPERTY_SETTINGS
@given(calls=sessions)
def test_all_windows_in_one_pass_equal_each_window_alone(calls):
    together = burst_peaks(calls, BURST_WINDOWS_US)
    assert together == {window_us: burst_peak(calls, window_us) for window_us in BURST_WINDOWS_US}


def shifted(calls: list[PlacedCall], shift_us: int) -> list[PlacedCall]:
    return [
        PlacedCall(
            c.start_us + shift_us,
            c.end_us + shift_us,
            c.generation_start_us + shift_us,
            c.input_tokens,
            c.output_tokens,
        )
        for c in calls
    ]


@PROPERTY_SETTINGS
@given(
    calls=sessions,
    shift_us=st.sampled_from([2**52, 2**53 - 6 * SECOND_US, 2**53, 2**60, -(2**60)]),
    bounds=st.tuples(st.none() | instants, st.none() | instants),
)
def test_bursts_are_the_same_floats_wherever_the_session_lies_in_time(calls, shift_us, bounds):
    # Only differences of instants enter the sweep, so moving every call moves no peak, to the
    # last bit. Beyond 2**53 us instants are no floats: the sweep must not compute with them as such.
    start_from_us, start_to_us = bounds
    if start_from_us is not None and start_to_us is not None and start_from_us > start_to_us:
        start_from_us, start_to_us = start_to_us, start_from_us
    moved_range = [None if b is None else b + shift_us for b in (start_from_us, start_to_us)]
    assert burst_peaks(shifted(calls, shift_us)) == burst_peaks(calls)
    assert burst_peaks(shifted(calls, shift_us), BURST_WINDOWS_US, *moved_range) == burst_peaks(
        calls, BURST_WINDOWS_US, start_from_us, start_to_us
    )


@PROPERTY_SETTINGS
@given(calls=sessions, bounds=st.tuples(st.none() | instants, st.none() | instants))
def test_peak_concurrency_equals_brute_force(calls, bounds):
    from_us, to_us = bounds
    if from_us is not None and to_us is not None and from_us > to_us:
        from_us, to_us = to_us, from_us
    assert peak_concurrency(calls) == oracle_concurrency(calls)
    assert peak_concurrency(calls, from_us, to_us) == oracle_concurrency(calls, from_us, to_us)


# Spread over minutes, so batches hit both merged and separate update ranges of the 60 s window.
spread_sessions = st.lists(placed_calls(horizon_us=400 * SECOND_US), min_size=1, max_size=16)


@PROPERTY_SETTINGS
@given(calls=spread_sessions, seed=st.integers(0, 2**32 - 1))
def test_incremental_fold_over_random_batches_equals_from_scratch(calls, seed):
    rng = random.Random(seed)
    arrival = calls[:]
    rng.shuffle(arrival)
    cuts = sorted(rng.sample(range(1, len(arrival)), rng.randint(0, len(arrival) - 1)))
    batches = [arrival[i:j] for i, j in zip([0, *cuts], [*cuts, len(arrival)])]

    stored: list[PlacedCall] = []
    bursts = {window_us: 0.0 for window_us in BURST_WINDOWS_US}
    concurrency = 0
    for batch in batches:
        stored += batch
        for update in peak_update_ranges(batch):
            loaded = [c for c in stored if update.needs(c)]
            start_range = (update.burst_start_from_us, update.burst_start_to_us)
            recomputed = burst_peaks(loaded, BURST_WINDOWS_US, *start_range)
            bursts = {w: max(bursts[w], recomputed[w]) for w in BURST_WINDOWS_US}
            concurrency = max(
                concurrency, peak_concurrency(loaded, update.concurrency_from_us, update.concurrency_to_us)
            )

    from_scratch = burst_peaks(calls, BURST_WINDOWS_US)
    for window_us in BURST_WINDOWS_US:
        assert close(bursts[window_us], from_scratch[window_us])
    assert concurrency == peak_concurrency(calls)
