"""Burst and concurrency peaks of many groups of calls in one compiled pass (numba).

`algorithms.burst_peaks` and `algorithms.peak_concurrency` define these numbers (DESIGN 4) and
stay the reference the kernel is tested against (tests/metrics/test_peaks_kernel.py). The fold
needs them for every session it touches, so this module computes them for all of a transaction's
sessions in one call that releases the GIL.

The kernel is the reference's plain sweep (integer positions and instant sums, one running float
slope and spread sum reset to exactly 0 when no generation interval is open, every breakpoint a
candidate), and numba compiles IEEE arithmetic without reordering it (no fastmath), so it gives
the same floats as long as its integers fit an int64 and the rates' operands are exact floats.
Ingest guarantees that with a wide margin (at most 10**9 tokens per call, durations up to 24 h,
instants within datetime's years); `groups_peaks` refuses calls beyond it rather than wrap.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np
from numba import njit

from apps.metrics import algorithms as algo

_INT64_SAFE = 2**62  # token sums and instants below this cannot overflow int64 in the kernel
_EXACT_FLOAT_INT = 2**53  # integers up to this are exactly floats, so `output / generation time` is one rounding


@njit(cache=True, nogil=True)
def _window_peak(positions, instants, slopes, starts, ends, window_us, lower_us, upper_us):
    """Sup over window starts t in [lower_us, upper_us] of the tokens in [t, t + W): the plain
    sweep of `algorithms._peak_window_tokens` (see `algorithms` for why breakpoints suffice)."""
    count = positions.shape[0]
    peak = 0.0
    instant_sum = 0
    spread_sum = 0.0
    slope = 0.0
    open_rates = 0
    here = 0
    mirrored = 0
    previous = positions[0] - window_us
    while here < count:
        position = positions[here]
        if mirrored < count and positions[mirrored] - window_us < position:
            position = positions[mirrored] - window_us
        if position > upper_us:
            break
        spread_sum += slope * (position - previous)
        at_value = instant_sum + spread_sum
        if positions[here] == position:
            instant_sum -= instants[here]
            slope += slopes[here]
            open_rates -= ends[here]
            here += 1
        if mirrored < count and positions[mirrored] - window_us == position:
            instant_sum += instants[mirrored]
            slope -= slopes[mirrored]
            open_rates += starts[mirrored]
            mirrored += 1
        if open_rates == 0:
            spread_sum = 0.0
            slope = 0.0
        if position >= lower_us:
            if at_value > peak:
                peak = at_value
            if position < upper_us and instant_sum + spread_sum > peak:
                peak = instant_sum + spread_sum
        previous = position
    return peak


@njit(cache=True, nogil=True)
def _groups_peaks_kernel(
    starts_us, generation_starts_us, ends_us, input_tokens, output_tokens, offsets,
    has_range, burst_from_us, burst_to_us, concurrency_from_us, concurrency_to_us,
    windows_us, bursts_out, concurrency_out,
):  # fmt: skip
    for group in range(offsets.shape[0] - 1):
        first = offsets[group]
        last = offsets[group + 1]
        calls = last - first
        # Token edges in call order (instant at the start, -rate at g, +rate at e), plus the
        # burst range's ends as change-free edges; a stable sort by position then sums each
        # position's changes in call order, as the plain sweep's dict does.
        capacity = 3 * calls + 2
        edge_positions = np.empty(capacity, np.int64)
        edge_instants = np.zeros(capacity, np.int64)
        edge_slopes = np.zeros(capacity, np.float64)
        edge_starts = np.zeros(capacity, np.int64)
        edge_ends = np.zeros(capacity, np.int64)
        used = 0
        if has_range[group]:
            edge_positions[used] = burst_from_us[group]
            used += 1
            edge_positions[used] = burst_to_us[group]
            used += 1
        for call in range(first, last):
            start_us = starts_us[call]
            generation_start_us = generation_starts_us[call]
            end_us = ends_us[call]
            output = output_tokens[call]
            instant = input_tokens[call] + output if generation_start_us == end_us else input_tokens[call]
            if instant:
                edge_positions[used] = start_us
                edge_instants[used] = instant
                used += 1
            if output and generation_start_us < end_us:
                rate = output / (end_us - generation_start_us)
                edge_positions[used] = generation_start_us
                edge_slopes[used] = -rate
                edge_starts[used] = 1
                used += 1
                edge_positions[used] = end_us
                edge_slopes[used] = rate
                edge_ends[used] = 1
                used += 1
        order = np.argsort(edge_positions[:used], kind="mergesort")
        positions = np.empty(used, np.int64)
        instants = np.zeros(used, np.int64)
        slopes = np.zeros(used, np.float64)
        opened = np.zeros(used, np.int64)
        closed = np.zeros(used, np.int64)
        distinct = -1
        for index in range(used):
            edge = order[index]
            if distinct < 0 or positions[distinct] != edge_positions[edge]:
                distinct += 1
                positions[distinct] = edge_positions[edge]
            instants[distinct] += edge_instants[edge]
            if edge_starts[edge]:
                slopes[distinct] += edge_slopes[edge]  # 0.0 - rate, as `edge[1] -= rate`
                opened[distinct] += 1
            elif edge_ends[edge]:
                slopes[distinct] += edge_slopes[edge]
                closed[distinct] += 1
        distinct += 1
        for window in range(windows_us.shape[0]):
            window_us = windows_us[window]
            peak = 0.0
            if distinct:
                lower_us = burst_from_us[group] if has_range[group] else positions[0] - window_us
                upper_us = burst_to_us[group] if has_range[group] else positions[distinct - 1]
                peak = _window_peak(
                    positions[:distinct], instants[:distinct], slopes[:distinct], opened[:distinct],
                    closed[:distinct], window_us, lower_us, upper_us,
                )  # fmt: skip
            bursts_out[group, window] = peak * 1_000_000 / window_us
        # Peak concurrency: at the k-th sorted start, k minus the ends at or before it.
        flight_starts = np.empty(calls, np.int64)
        flight_ends = np.empty(calls, np.int64)
        flying = 0
        for call in range(first, last):
            if ends_us[call] > starts_us[call]:
                flight_starts[flying] = starts_us[call]
                flight_ends[flying] = ends_us[call]
                flying += 1
        flight_starts = np.sort(flight_starts[:flying])
        flight_ends = np.sort(flight_ends[:flying])
        low = 0
        high = flying
        best = 0
        if has_range[group]:
            low = np.searchsorted(flight_starts, concurrency_from_us[group], "left")
            at_from = np.searchsorted(flight_starts, concurrency_from_us[group], "right") - np.searchsorted(
                flight_ends, concurrency_from_us[group], "right"
            )
            if at_from > best:
                best = at_from
            high = np.searchsorted(flight_starts, concurrency_to_us[group], "right")
        for index in range(low, high):
            in_flight = index + 1 - np.searchsorted(flight_ends, flight_starts[index], "right")
            if in_flight > best:
                best = in_flight
        concurrency_out[group] = best


# A call as the fold keeps it: `(start_us, generation_start_us, end_us, input_tokens,
# output_tokens)`, the fields of an algorithms.PlacedCall without an object per call.
CallRow = tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class PeakGroup:
    """Calls whose peaks to compute, optionally restricted to a range (a `PeakUpdateRange`)."""

    calls: list[CallRow]
    update: algo.PeakUpdateRange | None = None


def groups_peaks(
    groups: list[PeakGroup], windows_us: tuple[int, ...] = algo.BURST_WINDOWS_US
) -> list[tuple[dict[int, float], int]]:
    """`(algorithms.burst_peaks(...), algorithms.peak_concurrency(...))` of every group, in order.

    With an `update`, bursts are restricted to its burst start range and concurrency to its
    concurrency range, as the fold's callers ask the Python functions.
    """
    if not groups:
        return []
    calls = np.array(list(chain.from_iterable(group.calls for group in groups)), np.int64).reshape(-1, 5)
    starts, generation_starts, ends, inputs, outputs = (np.ascontiguousarray(column) for column in calls.T)
    if starts.size and not (
        int(inputs.min()) >= 0 and int(outputs.min()) >= 0
        # Bounds every group's instant sum, and every instant minus a window, far from int64's ends.
        and (int(inputs.max()) + int(outputs.max())) * starts.size < _INT64_SAFE
        and int(starts.min()) > -_INT64_SAFE and int(ends.max()) < _INT64_SAFE
        and int(outputs.max()) <= _EXACT_FLOAT_INT
        and int((ends - generation_starts).max()) <= _EXACT_FLOAT_INT
    ):  # fmt: skip
        raise ValueError("Calls beyond the bounds ingest enforces: the peaks kernel cannot compute them exactly.")
    offsets = np.zeros(len(groups) + 1, np.int64)
    np.cumsum([len(group.calls) for group in groups], out=offsets[1:])
    updates = [group.update for group in groups]
    has_range = np.array([update is not None for update in updates], np.bool_)
    bursts = np.empty((len(groups), len(windows_us)), np.float64)
    concurrency = np.empty(len(groups), np.int64)
    _groups_peaks_kernel(
        starts, generation_starts, ends, inputs, outputs,
        offsets,
        has_range,
        *_bounds(updates, "burst_start_from_us", "burst_start_to_us"),
        *_bounds(updates, "concurrency_from_us", "concurrency_to_us"),
        np.array(windows_us, np.int64),
        bursts,
        concurrency,
    )  # fmt: skip
    return [(dict(zip(windows_us, row)), peak) for row, peak in zip(bursts.tolist(), concurrency.tolist())]


def _bounds(updates: list[algo.PeakUpdateRange | None], lower: str, upper: str) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.array([0 if update is None else getattr(update, lower) for update in updates], np.int64),
        np.array([0 if update is None else getattr(update, upper) for update in updates], np.int64),
    )
