"""Pure metric algorithms: call rates, token placement, bursts, concurrency, throttling, rolling rates.

DESIGN.md sections 3 to 5 define every number computed here. Nothing in this module imports
Django, so the SDK and fast tests can use it; the metrics services convert model rows into the
plain values these functions take.

Time is integer epoch microseconds (`_us`) throughout, so window edges compare exactly;
durations arrive from events as (float) milliseconds and are rounded to whole microseconds
when calls are placed in time (`place_call`).
"""
from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import repeat
from operator import sub
from typing import NamedTuple, Protocol

US_PER_MS = 1_000
US_PER_SECOND = 1_000_000
MINUTE_US = 60 * US_PER_SECOND
# Stored burst windows (DESIGN 4): 1 s is the headline burstTokensPerSecond, 60 s compares with TPM.
BURST_WINDOWS_US: tuple[int, ...] = (1 * US_PER_SECOND, 10 * US_PER_SECOND, 60 * US_PER_SECOND)
ROLLING_WINDOWS_US: tuple[int, ...] = (1 * MINUTE_US, 5 * MINUTE_US, 60 * MINUTE_US)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def epoch_us(moment: datetime) -> int:
    """Exact integer microseconds since the Unix epoch of a timezone-aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("epoch_us needs a timezone-aware datetime")
    return (moment - _EPOCH) // timedelta(microseconds=1)


def ms_to_us(duration_ms: float) -> int:
    """A non-negative duration in milliseconds, rounded to whole microseconds."""
    if not duration_ms >= 0:
        raise ValueError(f"duration must be >= 0 ms, got {duration_ms!r}")
    return round(duration_ms * US_PER_MS)


# --- Call rate (DESIGN 3) ---------------------------------------------------------------------


def generation_ms(duration_ms: float, time_to_first_token_ms: float | None) -> float:
    """Generation time of a call in ms: `duration - ttft` when `0 < ttft < duration`, else `duration`.

    A missing, zero or out-of-range ttft means the client could not separate waiting from
    generating, so the whole duration counts (DESIGN 3). Precondition: `duration_ms >= 0`.
    """
    if time_to_first_token_ms is not None and 0 < time_to_first_token_ms < duration_ms:
        return duration_ms - time_to_first_token_ms
    return duration_ms


def generation_interval_us(
    start_us: int, duration_ms: float, time_to_first_token_ms: float | None
) -> tuple[int, int]:
    """Half-open generation interval `[begin_us, end_us)`, ending when the call ends.

    `end_us = start_us + duration`; the interval is empty (`begin_us == end_us`) when the
    generation time is 0 or rounds to less than a microsecond. This is
    `end_us - ms_to_us(generation_ms(...))` with both inlined (the fold places every call with it):
    the same operations in the same order, so the same values and the same errors.
    """
    if not duration_ms >= 0:
        raise ValueError(f"duration must be >= 0 ms, got {duration_ms!r}")
    duration_us = round(duration_ms * US_PER_MS)
    end_us = start_us + duration_us
    if time_to_first_token_ms is not None and 0 < time_to_first_token_ms < duration_ms:
        # duration - ttft > 0 here, so ms_to_us's check cannot fail.
        return end_us - round((duration_ms - time_to_first_token_ms) * US_PER_MS), end_us
    return end_us - duration_us, end_us


def call_tokens_per_second(
    output_tokens: int, duration_ms: float, time_to_first_token_ms: float | None
) -> float | None:
    """One call's `output_tokens / generation_seconds`; None when its generation time is 0."""
    generation_seconds = generation_ms(duration_ms, time_to_first_token_ms) / US_PER_MS
    if generation_seconds <= 0:
        return None
    return output_tokens / generation_seconds


def rate_terms(
    output_tokens: int, duration_ms: float, time_to_first_token_ms: float | None
) -> tuple[int, float]:
    """`(output_tokens, generation_seconds)` a call adds to the session-weighted rate sums.

    `(0, 0.0)` for a call with no generation time: DESIGN 3 sums only events with a positive
    generation time, so its output tokens must stay out of the numerator too.
    """
    generation_seconds = generation_ms(duration_ms, time_to_first_token_ms) / US_PER_MS
    if generation_seconds <= 0:
        return 0, 0.0
    return output_tokens, generation_seconds


def tokens_per_second(sum_output_tokens: int, sum_generation_seconds: float) -> float | None:
    """Session/step/model-weighted rate `Σ output_tokens / Σ generation_seconds`.

    Both sums run over the events with a positive generation time only (fold them with
    `rate_terms`). None when there is no such event (no positive generation time).
    """
    if sum_generation_seconds <= 0:
        return None
    return sum_output_tokens / sum_generation_seconds


# --- Token placement (DESIGN 4) ---------------------------------------------------------------


class Span(Protocol):
    """Anything occupying the half-open time span `[start_us, end_us)`."""

    @property
    def start_us(self) -> int: ...

    @property
    def end_us(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Interval:
    """A half-open span `[start_us, end_us)` of epoch microseconds (e.g. one throttle wait)."""

    start_us: int
    end_us: int

    def __post_init__(self) -> None:
        if self.end_us < self.start_us:
            raise ValueError(f"interval ends before it starts: [{self.start_us}, {self.end_us})")


@dataclass(frozen=True, slots=True)
class PlacedCall:
    """One usage event placed in time the way a rate limiter sees it (DESIGN 4).

    `input_tokens` land at the instant `start_us`; `output_tokens` are spread uniformly over
    the generation interval `[generation_start_us, end_us)`, or land at `start_us` too when that
    interval is empty (a zero duration, or a generation time that rounds below a microsecond).
    The call itself is in flight over `[start_us, end_us)`.
    Build it with `place_call` so the generation interval follows DESIGN 3.
    """

    start_us: int
    end_us: int
    generation_start_us: int
    input_tokens: int
    output_tokens: int

    def __post_init__(self) -> None:
        if not self.start_us <= self.generation_start_us <= self.end_us:
            raise ValueError(
                f"need start_us <= generation_start_us <= end_us, got "
                f"{self.start_us}, {self.generation_start_us}, {self.end_us}"
            )
        if self.input_tokens < 0 or self.output_tokens < 0:
            raise ValueError("token counts must be >= 0")

    @property
    def instant_tokens(self) -> int:
        """Tokens landing at the single instant `start_us`."""
        if self.generation_start_us == self.end_us:
            return self.input_tokens + self.output_tokens
        return self.input_tokens


def place_call(
    *,
    start_us: int,
    duration_ms: float,
    time_to_first_token_ms: float | None,
    input_tokens: int,
    output_tokens: int,
) -> PlacedCall:
    """Place one usage event in time: `start_us` is its `timestamp` (see `epoch_us`)."""
    generation_start_us, end_us = generation_interval_us(start_us, duration_ms, time_to_first_token_ms)
    return PlacedCall(start_us, end_us, generation_start_us, input_tokens, output_tokens)


# --- Bursts (DESIGN 4) ------------------------------------------------------------------------
#
# For a window length W, F(t) = tokens in [t, t + W) is a function of the window start t:
#   - an instant of a tokens at x counts for t in (x - W, x]: F jumps by +a just after t = x - W
#     and by -a just after t = x;
#   - output spread at rate r tokens/us over [g, e) counts r * |[t, t + W) ∩ [g, e)|, which is
#     continuous in t with slope +r on (g - W, e - W) and -r on (g, e): its slope changes by
#     +r at g - W, -r at e - W, -r at g and +r at e.
# So every token edge q acts at t = q and, mirrored, at t = q - W. Between consecutive
# breakpoints F is linear, and F is left-continuous (an instant's indicator of (x - W, x] is).
# Hence sup over t in [a, b] is the max of F(p) for breakpoints p in [a, b] and of the right
# limit F(p+) for p in [a, b), once a and b are breakpoints themselves. The right limit at
# x - W is the "window that just takes in the instant" of DESIGN 4: the peak is a supremum.
#
# The fold computes peaks with apps.metrics.peaks_kernel (compiled); this sweep is the reference
# it is tested against, the fallback for values beyond an int64, and what the SDK and the pages
# use. It is written for CPython's speed, and its floats must not depend on that: every
# breakpoint takes the same float operations, in the same order, as the plain sweep (a running
# slope sum and a running spread sum, both reset to exactly 0 when no generation interval is
# open), so the peaks are the same floats whichever shortcut the code takes.

_EXACT_FLOAT_INT = 2**53  # integers of at most this magnitude are exactly floats


class _TokenEdges(NamedTuple):
    """Token edges sorted by position q: what changes in F at t = q and, mirrored, at t = q - W.

    `at_edge[i]` is `(instant change, slope change, open intervals change)` at t =
    `positions_us[i]`: the instant's tokens leave, the slope changes by S (tokens/us) and
    generation intervals end. `at_mirror[i]` is the same edge at t = `positions_us[i] - W`: the
    tokens enter, the slope changes by -S and intervals begin to count. Positions and token
    counts are floats when every value is an integer a float holds exactly (`exact_floats`):
    float arithmetic is then exact on them and CPython's float operations are much faster than
    mixed int/float ones; otherwise they stay ints.
    """

    positions_us: list
    at_edge: list[tuple]
    at_mirror: list[tuple]
    exact_floats: bool


def _token_edges(calls: Iterable[PlacedCall], extra_positions_us: list[int], longest_window_us: int) -> _TokenEdges:
    """Collect and sort the calls' token edges, plus change-free edges at `extra_positions_us`."""
    calls = calls if isinstance(calls, (list, tuple)) else list(calls)
    positions_us, at_edge, at_mirror, instant_total = _edges_by_position(calls, extra_positions_us, 0.0)
    exact_floats = instant_total <= _EXACT_FLOAT_INT and (
        not positions_us
        or (
            longest_window_us <= _EXACT_FLOAT_INT
            and positions_us[0] - longest_window_us >= -_EXACT_FLOAT_INT
            and positions_us[-1] <= _EXACT_FLOAT_INT
        )
    )
    if not exact_floats:  # values a float cannot hold: ints, as exact as ever, just slower
        positions_us, at_edge, at_mirror, _ = _edges_by_position(calls, extra_positions_us, 0)
    return _TokenEdges(
        list(map(float, positions_us)) if exact_floats else positions_us,
        list(map(at_edge.__getitem__, positions_us)),
        list(map(at_mirror.__getitem__, positions_us)),
        exact_floats,
    )


def _edges_by_position(
    calls: list[PlacedCall], extra_positions_us: list[int], zero: float
) -> tuple[list[int], dict, dict, int]:
    """Sorted positions, the changes at each edge and at its mirror, and the calls' instant tokens."""
    at_edge, at_mirror, instant_total = _distinct_token_edges(calls, zero)
    if at_edge is None:
        at_edge, at_mirror, instant_total = _summed_token_edges(calls, zero)
    for position_us in extra_positions_us:
        if position_us not in at_edge:
            at_edge[position_us] = at_mirror[position_us] = (zero, 0.0, 0)
    return sorted(at_edge), at_edge, at_mirror, instant_total


def _distinct_token_edges(calls: list[PlacedCall], zero: float) -> tuple[dict | None, dict | None, int]:
    """Edges by position when no two edges share a position (the usual case), else None.

    An edge then needs no summing: its change is the call's own `(-tokens, 0.0, 0)` at the start,
    `(0, -rate, 0)` at g, `(0, rate, -1)` at e (mirrored: `(tokens, 0.0, 0)`, `(0, rate, 1)`,
    `(0, -rate, 0)`), exactly what the summed edge would hold: 0.0 - rate and 0.0 + rate are
    exact, and subtracting -S is adding S. Token counts get the type of `zero`.
    """
    at_edge: dict = {}
    at_mirror: dict = {}
    edge_count = 0
    instant_total = 0
    for call in calls:
        start_us = call.start_us
        generation_start_us = call.generation_start_us
        end_us = call.end_us
        output_tokens = call.output_tokens
        # PlacedCall.instant_tokens, inlined.
        tokens = call.input_tokens + output_tokens if generation_start_us == end_us else call.input_tokens
        if output_tokens and generation_start_us < end_us:
            rate = output_tokens / (end_us - generation_start_us)
            if tokens:
                instant_total += tokens
                tokens += zero
                if generation_start_us == start_us:
                    # No ttft (or none within the call): generation starts at the input instant.
                    at_edge[start_us] = (-tokens, -rate, 0)
                    at_mirror[start_us] = (tokens, rate, 1)
                    edge_count -= 1
                else:
                    at_edge[start_us] = (-tokens, 0.0, 0)
                    at_mirror[start_us] = (tokens, 0.0, 0)
                    at_edge[generation_start_us] = (zero, -rate, 0)
                    at_mirror[generation_start_us] = (zero, rate, 1)
                edge_count += 3
            else:
                at_edge[generation_start_us] = (zero, -rate, 0)
                at_mirror[generation_start_us] = (zero, rate, 1)
                edge_count += 2
            at_edge[end_us] = (zero, rate, -1)
            at_mirror[end_us] = (zero, -rate, 0)
        elif tokens:
            instant_total += tokens
            tokens += zero
            at_edge[start_us] = (-tokens, 0.0, 0)
            at_mirror[start_us] = (tokens, 0.0, 0)
            edge_count += 1
    if len(at_edge) != edge_count:
        return None, None, instant_total
    return at_edge, at_mirror, instant_total


def _summed_token_edges(calls: list[PlacedCall], zero: float) -> tuple[dict, dict, int]:
    """Edges by position, each the sum of the changes of every call's edge there.

    A position's slope change is one running float sum over the calls in order (-rate at a g,
    +rate at an e), as the sweep has always summed it. Token counts get the type of `zero`.
    """
    sums: dict[int, list] = {}  # position -> [instant tokens, slope change, starts, ends]
    for call in calls:
        instant_tokens = call.instant_tokens
        if instant_tokens:
            edge = sums.get(call.start_us)
            if edge is None:
                sums[call.start_us] = edge = [0, 0.0, 0, 0]
            edge[0] += instant_tokens
        if call.output_tokens and call.generation_start_us < call.end_us:
            rate = call.output_tokens / (call.end_us - call.generation_start_us)
            edge = sums.get(call.generation_start_us)
            if edge is None:
                sums[call.generation_start_us] = edge = [0, 0.0, 0, 0]
            edge[1] -= rate
            edge[2] += 1
            edge = sums.get(call.end_us)
            if edge is None:
                sums[call.end_us] = edge = [0, 0.0, 0, 0]
            edge[1] += rate
            edge[3] += 1
    at_edge = {}
    at_mirror = {}
    instant_total = 0
    for position_us, (instant_tokens, slope_change, starts, ends) in sums.items():
        instant_total += instant_tokens
        instant_tokens += zero
        at_edge[position_us] = (-instant_tokens, slope_change, -ends)
        at_mirror[position_us] = (instant_tokens, -slope_change, starts)
    return at_edge, at_mirror, instant_total


def _peak_window_tokens(edges: _TokenEdges, window_us: int, lower_us: int | None, upper_us: int | None) -> float:
    """Sup over window starts t in [lower_us, upper_us] of the tokens in [t, t + W).

    Precondition: the range ends are among the edge positions (see `burst_peaks`). One merge of
    the edges at q with their mirrors at q - W, both already sorted.

    Candidates: in the sequence F(p0), F(p0+), F(p1), F(p1+), ... over the breakpoints in range
    the sup is the max, and the first element reaching it is greater than the one before it. So
    an element can be skipped when it cannot exceed the one before it (rule A), or when the one
    after it is at least as large and always checked (rule B); since float addition is monotone,
    these hold for the computed floats as for the exact values:
      - F(p) <= F(q+) for the previous breakpoint q when the slope on (q, p) is <= 0 (A);
      - F(p+) <= F(p) at an edge (tokens leave) unless no interval is open any more, which
        resets the spread sum to exactly 0 (A);
      - at a mirror, F(p) <= F(p+) as tokens only enter (counts are >= 0, PlacedCall checks)
        (B), and F(p+) = F(p) when no tokens enter (A);
        a mirror never leaves the spread to reset: with no interval open after it, none was
        open before either (an interval ending at e is open at e - W), so both sums are 0 already.
    The first breakpoint in range has no element before it in range and is always checked.
    """
    positions_us, at_edge, at_mirror, exact_floats = edges
    count = len(positions_us)
    if not count:
        return 0.0
    if exact_floats:
        window_us = float(window_us)
    instant_sum = 0.0 if exact_floats else 0  # exact either way: instants are whole tokens
    # lower_us/upper_us None: every breakpoint p0 - W ... p_last is in range; -inf/+inf add no
    # candidate (F is 0 before the first mirror, and 0 again after the last edge).
    if lower_us is None:
        lower_us = -math.inf
        lower_index = 0
    else:
        lower_us = float(lower_us) if exact_floats else lower_us
        lower_index = bisect_left(positions_us, lower_us)
    if upper_us is None:
        upper_us = math.inf
        upper_index = count
    else:
        upper_us = float(upper_us) if exact_floats else upper_us
        upper_index = bisect_left(positions_us, upper_us) + 1
    mirror_positions_us = list(map(sub, positions_us, repeat(window_us)))
    mirror_positions_us.append(math.inf)  # sentinel: no mirror after the last edge

    peak = 0.0  # F >= 0 everywhere, and F = 0 far from every token
    spread_sum = 0.0
    slope = 0.0
    open_rates = 0  # generation intervals whose overlap may be > 0, i.e. t in (g - W, e)
    mirrored = 0  # next mirror; mirrors come first and end first
    next_mirror_us = mirror_positions_us[0]
    previous_us = next_mirror_us

    # Before the range: the same sums, no candidates.
    for position_us, (instant_change, slope_change, open_change) in zip(
        positions_us[:lower_index], at_edge[:lower_index]
    ):
        while next_mirror_us < position_us:
            spread_sum += slope * (next_mirror_us - previous_us)
            mirror_instant, mirror_slope, mirror_open = at_mirror[mirrored]
            instant_sum += mirror_instant
            slope += mirror_slope
            open_rates += mirror_open
            previous_us = next_mirror_us
            mirrored += 1
            next_mirror_us = mirror_positions_us[mirrored]
        spread_sum += slope * (position_us - previous_us)
        instant_sum += instant_change
        slope += slope_change
        open_rates += open_change
        if next_mirror_us == position_us:  # the mirror's changes come at the same breakpoint
            mirror_instant, mirror_slope, mirror_open = at_mirror[mirrored]
            instant_sum += mirror_instant
            slope += mirror_slope
            open_rates += mirror_open
            mirrored += 1
            next_mirror_us = mirror_positions_us[mirrored]
        if not open_rates:
            # Exactly zero once no interval overlaps: stops float drift carrying across gaps.
            spread_sum = slope = 0.0
        previous_us = position_us
    while next_mirror_us < lower_us:
        spread_sum += slope * (next_mirror_us - previous_us)
        mirror_instant, mirror_slope, mirror_open = at_mirror[mirrored]
        instant_sum += mirror_instant
        slope += mirror_slope
        open_rates += mirror_open
        previous_us = next_mirror_us
        mirrored += 1
        next_mirror_us = mirror_positions_us[mirrored]

    # In the range [lower_us, upper_us]: its ends are edges, so mirrors here lie strictly inside.
    for position_us, (instant_change, slope_change, open_change) in zip(
        positions_us[lower_index:upper_index], at_edge[lower_index:upper_index]
    ):
        while next_mirror_us < position_us:
            spread_sum += slope * (next_mirror_us - previous_us)
            mirror_instant, mirror_slope, mirror_open = at_mirror[mirrored]
            if mirror_instant:
                instant_sum += mirror_instant
                if instant_sum + spread_sum > peak:
                    peak = instant_sum + spread_sum
            elif slope > 0.0 and instant_sum + spread_sum > peak:
                peak = instant_sum + spread_sum
            slope += mirror_slope
            open_rates += mirror_open
            previous_us = next_mirror_us
            mirrored += 1
            next_mirror_us = mirror_positions_us[mirrored]
        spread_sum += slope * (position_us - previous_us)
        if (slope > 0.0 or position_us == lower_us) and instant_sum + spread_sum > peak:
            peak = instant_sum + spread_sum
        instant_sum += instant_change
        slope += slope_change
        open_rates += open_change
        if next_mirror_us == position_us:
            mirror_instant, mirror_slope, mirror_open = at_mirror[mirrored]
            instant_sum += mirror_instant
            slope += mirror_slope
            open_rates += mirror_open
            mirrored += 1
            next_mirror_us = mirror_positions_us[mirrored]
            if not open_rates:
                spread_sum = slope = 0.0
            if position_us < upper_us and instant_sum + spread_sum > peak:
                peak = instant_sum + spread_sum
        elif not open_rates:
            spread_sum = slope = 0.0
            if position_us < upper_us and instant_sum + spread_sum > peak:
                peak = instant_sum + spread_sum
        previous_us = position_us
    return peak


def burst_peaks(
    calls: Iterable[PlacedCall],
    windows_us: Sequence[int] = BURST_WINDOWS_US,
    start_from_us: int | None = None,
    start_to_us: int | None = None,
) -> dict[int, float]:
    """Exact burst peaks in tokens/second for several window lengths, keyed by window length in us.

    `burst(W) = sup over window starts t of (tokens in [t, t + W)) / (W seconds)` (DESIGN 4), with
    t restricted to `[start_from_us, start_to_us]` when given (either bound may be None = open).
    An instant at x is in the window iff `t <= x < t + W`; the supremum includes the limit of a
    window starting just after `x - W`, which takes in the instant at x.

    Precondition for a restricted range: `calls` holds every call placing tokens in
    `[start_from_us, start_to_us + W)` (extra calls are harmless); see `peak_update_ranges`.
    The token edges are collected and sorted once, in O(n log n); each window is then one
    linear merge of the edges with their mirrors, so n calls take O(n log n + n * windows).
    """
    if start_from_us is not None and start_to_us is not None and start_from_us > start_to_us:
        raise ValueError(f"empty window start range [{start_from_us}, {start_to_us}]")
    if any(window_us <= 0 for window_us in windows_us):
        raise ValueError(f"window lengths must be > 0 us, got {list(windows_us)}")
    # Range ends become change-free edges: their F and right limit F(+) are then candidates too.
    edges = _token_edges(
        calls,
        [bound for bound in (start_from_us, start_to_us) if bound is not None],
        max(windows_us, default=0),
    )
    return {
        window_us: _peak_window_tokens(edges, window_us, start_from_us, start_to_us)
        * US_PER_SECOND
        / window_us
        for window_us in windows_us
    }


def burst_peak(
    calls: Iterable[PlacedCall],
    window_us: int,
    start_from_us: int | None = None,
    start_to_us: int | None = None,
) -> float:
    """Exact `burst(W)` in tokens/second for one window length; see `burst_peaks`."""
    return burst_peaks(calls, (window_us,), start_from_us, start_to_us)[window_us]


@dataclass(frozen=True, slots=True)
class PeakUpdateRange:
    """Where a batch of new calls can raise a session's burst and concurrency peaks.

    Fold a batch into stored peaks (adding tokens or calls never lowers a peak):
        for r in peak_update_ranges(new_calls):
            calls = stored calls (the new ones included) with start_us <= r.load_to_us
                    and end_us >= r.load_from_us
            bursts = burst_peaks(calls, BURST_WINDOWS_US, r.burst_start_from_us, r.burst_start_to_us)
            peak_bursts = max(stored peak, bursts[W]) for each W
            peak_concurrency = max(stored peak,
                                   peak_concurrency(calls, r.concurrency_from_us, r.concurrency_to_us))
    Only windows starting in `[min new start - W, max new end]` can hold a new token, and only
    instants in `[min new start, max new end]` can see a new call in flight; every call placing
    tokens in a window starting there lies in the load range.
    """

    burst_start_from_us: int
    burst_start_to_us: int
    concurrency_from_us: int
    concurrency_to_us: int
    load_from_us: int
    load_to_us: int

    def needs(self, call: Span) -> bool:
        """Whether `call` must be loaded for this range (the service's query must match this)."""
        return call.start_us <= self.load_to_us and call.end_us >= self.load_from_us


def peak_update_ranges(
    new_calls: Iterable[Span], windows_us: Sequence[int] = BURST_WINDOWS_US
) -> list[PeakUpdateRange]:
    """Disjoint ranges to recompute when `new_calls` join a session, in time order.

    Computed for the longest window, which covers the shorter ones (a wider start range only adds
    windows whose sums are already <= the true peak). New calls far apart in time get separate
    ranges, so a batch spanning hours does not load every call in between.
    """
    longest_us = max(windows_us)
    clusters: list[list[int]] = []  # [first start, last end] of new calls with overlapping load ranges
    for call in sorted(new_calls, key=lambda c: c.start_us):
        if clusters and call.start_us - longest_us <= clusters[-1][1] + longest_us:
            clusters[-1][1] = max(clusters[-1][1], call.end_us)
        else:
            clusters.append([call.start_us, call.end_us])
    return [
        PeakUpdateRange(
            burst_start_from_us=first_start_us - longest_us,
            burst_start_to_us=last_end_us,
            concurrency_from_us=first_start_us,
            concurrency_to_us=last_end_us,
            load_from_us=first_start_us - longest_us,
            load_to_us=last_end_us + longest_us,
        )
        for first_start_us, last_end_us in clusters
    ]


# --- Peak concurrency (DESIGN 4) --------------------------------------------------------------


def peak_concurrency(spans: Iterable[Span], from_us: int | None = None, to_us: int | None = None) -> int:
    """Largest number of calls in flight at one instant t, each occupying `[start_us, end_us)`.

    Calls of duration 0 occupy no instant. With `from_us`/`to_us`, the max is over instants
    t in `[from_us, to_us]` only, and `spans` must hold every call in flight at some such t
    (extra calls are harmless). The count is right-continuous, so its max is at a start.
    """
    if from_us is not None and to_us is not None and from_us > to_us:
        raise ValueError(f"empty instant range [{from_us}, {to_us}]")
    starts_us = []
    ends_us = []
    for span in spans:
        start_us = span.start_us
        end_us = span.end_us
        if end_us > start_us:
            starts_us.append(start_us)
            ends_us.append(end_us)
    starts_us.sort()
    ends_us.sort()
    # In flight at t (changes at t included) = starts <= t - ends <= t; at the k-th start
    # (1-based, sorted) that is k - ends <= it, exact for the last of equal starts and lower for
    # the others, so the max over starts is the max of the count over start instants. Counted
    # in C (bisect over sorted lists) rather than by a Python sweep over every change.
    first = 0
    last = len(starts_us)
    peak = 0
    if from_us is not None:
        first = bisect_left(starts_us, from_us)
        peak = max(peak, bisect_right(starts_us, from_us) - bisect_right(ends_us, from_us))
    if to_us is not None:
        last = bisect_right(starts_us, to_us)
    if first < last:
        peak = max(
            peak,
            max(map(sub, range(first + 1, last + 1), map(bisect_right, repeat(ends_us), starts_us[first:last]))),
        )
    return peak


# --- Throttling (DESIGN 5) --------------------------------------------------------------------


def throttle_interval(start_us: int, wait_ms: float) -> Interval:
    """The span a throttle wait occupies: `[timestamp, timestamp + wait_ms)`."""
    return Interval(start_us, start_us + ms_to_us(wait_ms))


def union_length_us(spans: Iterable[Span]) -> int:
    """Length in us of the union of half-open spans, so overlapping spans count once."""
    covered_us = 0
    covered_to_us: int | None = None
    for span in sorted(spans, key=lambda s: s.start_us):
        if covered_to_us is None or span.start_us >= covered_to_us:
            covered_us += span.end_us - span.start_us
            covered_to_us = span.end_us
        elif span.end_us > covered_to_us:
            covered_us += span.end_us - covered_to_us
            covered_to_us = span.end_us
    return covered_us


def throttle_share_of_wall_time(
    throttle_waits: Iterable[Span], first_usage_start_us: int | None, last_usage_end_us: int | None
) -> float:
    """Share of a session's wall time spent throttled, in [0, 1].

    `throttled_us` = length of the union of the session's throttle waits, each
    `[timestamp, timestamp + wait_ms)` (see `throttle_interval`): a union, so concurrent calls
    waiting at once count that time once. `wall_us` = from the first start to the last end over
    the usage calls (`first_usage_start_us`, `last_usage_end_us`, both None when there is no usage
    event) and the throttle waits. Share = `throttled_us / wall_us`, 0 when `wall_us` is 0. The
    waits lie inside the wall span, so the share never exceeds 1.
    """
    waits = list(throttle_waits)
    starts_us = [wait.start_us for wait in waits]
    ends_us = [wait.end_us for wait in waits]
    if first_usage_start_us is not None and last_usage_end_us is not None:
        starts_us.append(first_usage_start_us)
        ends_us.append(last_usage_end_us)
    if not starts_us:
        return 0.0
    wall_us = max(ends_us) - min(starts_us)
    if wall_us <= 0:
        return 0.0
    return union_length_us(waits) / wall_us


@dataclass(frozen=True, slots=True)
class StepThrottle:
    """Throttle waits attributed to one step: how many, and their summed `wait_ms`."""

    count: int
    wait_ms: float


def throttle_by_step(
    throttle_events: Iterable[tuple[str | None, str, float]],
    usage_events: Iterable[tuple[str | None, str]],
) -> dict[str, StepThrottle]:
    """Attribute throttle waits to steps (DESIGN 5).

    `throttle_events` are `(call_id, step, wait_ms)`, `usage_events` are `(call_id, step)` of the
    same session. A wait goes to the step of the usage event with the same `call_id` when there
    is one (the call that finally succeeded), else to the throttle event's own step. Should
    several usage events share a call_id, the smallest step name wins, so the result does not
    depend on arrival order. A usage event arriving later can move a wait: recompute from the
    session's raw events rather than folding this incrementally. Sums use `math.fsum`, so they
    are also independent of order.
    """
    step_by_call_id: dict[str, str] = {}
    for call_id, step in usage_events:
        if call_id is not None:
            known_step = step_by_call_id.get(call_id)
            step_by_call_id[call_id] = step if known_step is None else min(known_step, step)
    waits_by_step: dict[str, list[float]] = {}
    for call_id, step, wait_ms in throttle_events:
        attributed_step = step_by_call_id.get(call_id, step) if call_id is not None else step
        waits_by_step.setdefault(attributed_step, []).append(wait_ms)
    return {step: StepThrottle(len(waits), math.fsum(waits)) for step, waits in waits_by_step.items()}


# --- Rolling rates from time buckets (DESIGN 3) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class BucketTokens:
    """A call's placed tokens falling in the bucket `[bucket_start_us, bucket_start_us + bucket_us)`."""

    bucket_start_us: int
    input_tokens: int
    output_tokens: int


def bucket_start_us(instant_us: int, bucket_us: int = MINUTE_US) -> int:
    """Start of the epoch-aligned bucket holding `instant_us`."""
    return instant_us - instant_us % bucket_us


def bucket_call_tokens(call: PlacedCall, bucket_us: int = MINUTE_US) -> list[BucketTokens]:
    """Split a call's placed tokens (DESIGN 4) over epoch-aligned buckets, exactly, in time order.

    The first entry is always the call's start bucket (holding its input instant, and its output
    when the generation interval is empty); later entries exist only for buckets receiving
    output. Uniform output is split by cumulative rounding: the output placed before an instant
    x is `round(output_tokens * (x - g) / (e - g))`, so each bucket gets an integer and the
    buckets sum to `output_tokens` exactly.
    """
    if bucket_us <= 0:
        raise ValueError(f"bucket length must be > 0 us, got {bucket_us}")
    first_bucket_us = bucket_start_us(call.start_us, bucket_us)
    output_by_bucket: dict[int, int] = {first_bucket_us: call.instant_tokens - call.input_tokens}
    generation_us = call.end_us - call.generation_start_us
    if generation_us:

        def placed_before(instant_us: int) -> int:
            # Round half up in integers: float rounding could break the exact total.
            return (2 * call.output_tokens * (instant_us - call.generation_start_us) + generation_us) // (
                2 * generation_us
            )

        bucket_from_us = bucket_start_us(call.generation_start_us, bucket_us)
        while bucket_from_us < call.end_us:
            share_from_us = max(bucket_from_us, call.generation_start_us)
            share_to_us = min(bucket_from_us + bucket_us, call.end_us)
            tokens = placed_before(share_to_us) - placed_before(share_from_us)
            if tokens:
                output_by_bucket[bucket_from_us] = output_by_bucket.get(bucket_from_us, 0) + tokens
            bucket_from_us += bucket_us
    return [
        BucketTokens(start_us, call.input_tokens if start_us == first_bucket_us else 0, tokens)
        for start_us, tokens in output_by_bucket.items()
    ]


def rolling_tokens_per_second(
    buckets: Iterable[tuple[int, int]], *, now_us: int, window_us: int, bucket_us: int = MINUTE_US
) -> float:
    """Tokens/second over the trailing window `[now_us - window_us, now_us)` from time buckets.

    `buckets` are `(bucket_start_us, tokens)` of equal length `bucket_us`. Approximation: a
    bucket's tokens are taken as spread uniformly over its elapsed part
    `[bucket_start_us, min(bucket_start_us + bucket_us, now_us))`, and counted pro rata to that
    part's overlap with the window. Using the elapsed part rather than the whole bucket counts
    the current, still-filling bucket in full: for a steady rate the result is then exact
    whatever `now_us` is, where plain pro rata would undercount the current minute. Buckets
    starting at or after `now_us` count nothing. With `window_us >= bucket_us` only the oldest
    bucket is partly covered, so the error is bounded by how unevenly its tokens fell within it.
    """
    if window_us <= 0 or bucket_us <= 0:
        raise ValueError("window and bucket lengths must be > 0 us")
    window_from_us = now_us - window_us
    tokens_in_window = 0.0
    for start_us, tokens in buckets:
        elapsed_to_us = min(start_us + bucket_us, now_us)
        overlap_us = elapsed_to_us - max(start_us, window_from_us)
        if overlap_us > 0:
            tokens_in_window += tokens * overlap_us / (elapsed_to_us - start_us)
    return tokens_in_window * US_PER_SECOND / window_us
