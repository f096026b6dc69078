"""Pure metric algorithms: call placement, bursts, concurrency, throttling, rolling rates.

DESIGN.md sections 3 to 5 define every number computed here. Nothing in this module imports
Django: ingest derives each event's values with it, the fold and the pages pass it plain values,
and tests use it as the reference the compiled peaks kernel and the database's sums must equal.

Time is integer epoch microseconds (`_us`) throughout, so window edges compare exactly;
durations arrive from events as (float) milliseconds and are rounded to whole microseconds
when calls are placed in time (`generation_interval_us`).
"""
from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import repeat
from operator import sub
from typing import Protocol

US_PER_MS = 1_000
US_PER_SECOND = 1_000_000
MINUTE_US = 60 * US_PER_SECOND
# Stored burst windows (DESIGN 4): 1 s is the headline burstTokensPerSecond, 60 s compares with TPM.
BURST_WINDOWS_US: tuple[int, ...] = (1 * US_PER_SECOND, 10 * US_PER_SECOND, 60 * US_PER_SECOND)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def epoch_us(moment: datetime) -> int:
    """Exact integer microseconds since the Unix epoch of a timezone-aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("epoch_us needs a timezone-aware datetime")
    return (moment - EPOCH) // timedelta(microseconds=1)


def ms_to_us(duration_ms: float) -> int:
    """A non-negative duration in milliseconds, rounded to whole microseconds."""
    if not duration_ms >= 0:
        raise ValueError(f"duration must be >= 0 ms, got {duration_ms!r}")
    return round(duration_ms * US_PER_MS)


def whole_ms(duration_us: int) -> int:
    """A stored duration (a throttle wait's sum) as pages, documents and downloads show it: whole
    milliseconds, halves to even."""
    return round(duration_us / US_PER_MS)


# --- Call placement (DESIGN 3 and 4) ---------------------------------------------------------


def generation_interval_us(
    start_us: int, duration_ms: float, time_to_first_token_ms: float | None
) -> tuple[int, int]:
    """Half-open generation interval `[begin_us, end_us)` of a call starting at `start_us`.

    The call ends at `start_us + duration`. Its generation time is `duration - ttft` when
    `0 < ttft < duration`, else the whole duration: a missing, zero or out-of-range ttft means
    the client could not separate waiting from generating (DESIGN 3). The interval is empty
    (`begin_us == end_us`) when that time is 0 or rounds to less than a microsecond.
    """
    end_us = start_us + ms_to_us(duration_ms)
    if time_to_first_token_ms is not None and 0 < time_to_first_token_ms < duration_ms:
        return end_us - ms_to_us(duration_ms - time_to_first_token_ms), end_us
    return start_us, end_us


def tokens_per_second(output_tokens: int, generation_us: int) -> float | None:
    """Generation rate (DESIGN 3): output tokens over generation seconds, absent with no
    generation time. Of one call, or session-weighted from sums over the calls with a positive
    generation time (`timed_output_tokens` of the aggregates)."""
    return output_tokens * US_PER_SECOND / generation_us if generation_us > 0 else None


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
    The call itself is in flight over `[start_us, end_us)`; `generation_interval_us` places it.
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
# The fold computes peaks with apps.metrics.peaks_kernel (compiled); this plain sweep is the
# reference it is tested against. Positions and instant sums are ints, so they stay exact at any
# magnitude; the spread is one running float sum, reset to exactly 0 when no generation interval
# is open, so float drift does not carry across gaps.


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
    """
    if start_from_us is not None and start_to_us is not None and start_from_us > start_to_us:
        raise ValueError(f"empty window start range [{start_from_us}, {start_to_us}]")
    if any(window_us <= 0 for window_us in windows_us):
        raise ValueError(f"window lengths must be > 0 us, got {list(windows_us)}")
    # Position -> [instant tokens, slope change, intervals starting, intervals ending]. The range
    # ends are change-free edges, so F and its right limit there are candidates too.
    edges: dict[int, list] = {bound: [0, 0.0, 0, 0] for bound in (start_from_us, start_to_us) if bound is not None}
    for call in calls:
        if call.instant_tokens:
            edges.setdefault(call.start_us, [0, 0.0, 0, 0])[0] += call.instant_tokens
        if call.output_tokens and call.generation_start_us < call.end_us:
            rate = call.output_tokens / (call.end_us - call.generation_start_us)
            edge = edges.setdefault(call.generation_start_us, [0, 0.0, 0, 0])
            edge[1] -= rate
            edge[2] += 1
            edge = edges.setdefault(call.end_us, [0, 0.0, 0, 0])
            edge[1] += rate
            edge[3] += 1
    positions = sorted(edges)
    return {
        window_us: _peak_window_tokens(edges, positions, window_us, start_from_us, start_to_us)
        * US_PER_SECOND
        / window_us
        for window_us in windows_us
    }


def _peak_window_tokens(
    edges: dict[int, list], positions: list[int], window_us: int, lower_us: int | None, upper_us: int | None
) -> float:
    """Sup over window starts t in [lower_us, upper_us] of the tokens in [t, t + W): one merge of
    the edges at q with their mirrors at q - W, every breakpoint a candidate."""
    if not positions:
        return 0.0
    lower_us = positions[0] - window_us if lower_us is None else lower_us
    upper_us = positions[-1] if upper_us is None else upper_us
    peak = 0.0  # F >= 0 everywhere, and F = 0 far from every token
    instant_sum, spread_sum, slope, open_rates = 0, 0.0, 0.0, 0
    here = mirrored = 0  # the next edge and the next mirror; mirrors come first and end first
    previous_us = positions[0] - window_us
    while here < len(positions):
        position_us = positions[here]
        if mirrored < len(positions) and positions[mirrored] - window_us < position_us:
            position_us = positions[mirrored] - window_us
        if position_us > upper_us:
            break
        spread_sum += slope * (position_us - previous_us)
        at_value = instant_sum + spread_sum
        if positions[here] == position_us:  # tokens leave, intervals end
            instant_tokens, slope_change, _, ends = edges[position_us]
            instant_sum -= instant_tokens
            slope += slope_change
            open_rates -= ends
            here += 1
        if mirrored < len(positions) and positions[mirrored] - window_us == position_us:  # tokens enter
            instant_tokens, slope_change, starts, _ = edges[positions[mirrored]]
            instant_sum += instant_tokens
            slope -= slope_change
            open_rates += starts
            mirrored += 1
        if not open_rates:
            spread_sum = slope = 0.0
        if position_us >= lower_us:
            if at_value > peak:
                peak = at_value
            if position_us < upper_us and instant_sum + spread_sum > peak:
                peak = instant_sum + spread_sum
        previous_us = position_us
    return peak


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


def peak_update_ranges(new_calls: Iterable[Span]) -> list[PeakUpdateRange]:
    """Disjoint ranges to recompute when `new_calls` join a session, in time order.

    Computed for the longest burst window, which covers the shorter ones (a wider start range only adds
    windows whose sums are already <= the true peak). New calls far apart in time get separate
    ranges, so a batch spanning hours does not load every call in between.
    """
    longest_us = max(BURST_WINDOWS_US)
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


def rolling_tokens_per_second(buckets: Iterable[tuple[int, int]], *, now_us: int, window_us: int) -> float:
    """Tokens/second over the trailing window `[now_us - window_us, now_us)` from time buckets.

    `buckets` are `(bucket_start_us, tokens)` of minute buckets. Approximation: a bucket's tokens
    are taken as spread uniformly over its elapsed part
    `[bucket_start_us, min(bucket_start_us + MINUTE_US, now_us))`, and counted pro rata to that
    part's overlap with the window. Using the elapsed part rather than the whole bucket counts
    the current, still-filling bucket in full: for a steady rate the result is then exact
    whatever `now_us` is, where plain pro rata would undercount the current minute. Buckets
    starting at or after `now_us` count nothing. With a window of a minute or more only the oldest
    bucket is partly covered, so the error is bounded by how unevenly its tokens fell within it.
    """
    if window_us <= 0:
        raise ValueError(f"window length must be > 0 us, got {window_us}")
    window_from_us = now_us - window_us
    tokens_in_window = 0.0
    for start_us, tokens in buckets:
        elapsed_to_us = min(start_us + MINUTE_US, now_us)
        overlap_us = elapsed_to_us - max(start_us, window_from_us)
        if overlap_us > 0:
            tokens_in_window += tokens * overlap_us / (elapsed_to_us - start_us)
    return tokens_in_window * US_PER_SECOND / window_us
