"""The compiled peaks kernel gives exactly the floats and counts of algorithms.burst_peaks and
algorithms.peak_concurrency, for many groups of calls in one call."""
from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.metrics import peaks_kernel
from apps.metrics.algorithms import BURST_WINDOWS_US, PeakUpdateRange, PlacedCall, burst_peaks, peak_concurrency
from apps.metrics.peaks_kernel import PeakGroup, groups_peaks
from tests.metrics.test_bursts import (
    GRID_US, PROPERTY_SETTINGS, SECOND_US, call, dense_grid_session, instants, placed_calls, shifted,
)  # fmt: skip


def python_peaks(group: PeakGroup, windows_us=BURST_WINDOWS_US) -> tuple[dict[int, float], int]:
    calls = [PlacedCall(start_us, end_us, generation_start_us, input_tokens, output_tokens)
             for start_us, generation_start_us, end_us, input_tokens, output_tokens in group.calls]  # fmt: skip
    update = group.update
    if update is None:
        return burst_peaks(calls, windows_us), peak_concurrency(calls)
    return (
        burst_peaks(calls, windows_us, update.burst_start_from_us, update.burst_start_to_us),
        peak_concurrency(calls, update.concurrency_from_us, update.concurrency_to_us),
    )


def rows(calls) -> list[peaks_kernel.CallRow]:
    return [(c.start_us, c.generation_start_us, c.end_us, c.input_tokens, c.output_tokens) for c in calls]


def update_range(burst_bounds: tuple[int, int], concurrency_bounds: tuple[int, int]) -> PeakUpdateRange:
    return PeakUpdateRange(*sorted(burst_bounds), *sorted(concurrency_bounds), load_from_us=0, load_to_us=0)


@st.composite
def peak_groups(draw, max_calls: int = 30) -> PeakGroup:
    calls = draw(st.lists(placed_calls(), max_size=max_calls))
    if not draw(st.booleans()):
        return PeakGroup(rows(calls))
    # Range ends drawn from the token edges too: that is where off-by-one-edge errors show.
    edges = [edge - shift for c in calls for edge in (c.start_us, c.generation_start_us, c.end_us)
             for shift in (0, *BURST_WINDOWS_US)]  # fmt: skip
    bound = instants | (st.sampled_from(edges) if edges else st.nothing())
    return PeakGroup(rows(calls), update_range((draw(bound), draw(bound)), (draw(bound), draw(bound))))


@PROPERTY_SETTINGS
@given(groups=st.lists(peak_groups(), max_size=8))
def test_every_group_gets_the_python_floats_and_counts(groups):
    assert groups_peaks(groups) == [python_peaks(group) for group in groups]


@PROPERTY_SETTINGS
@given(group=peak_groups(), windows_us=st.lists(st.integers(1, 3 * SECOND_US), min_size=1, max_size=3, unique=True))
def test_any_window_lengths_give_the_python_floats(group, windows_us):
    assert groups_peaks([group], tuple(windows_us)) == [python_peaks(group, tuple(windows_us))]


def test_dense_grid_sessions_give_the_python_floats():
    # Edges on a coarse grid meet mirrors of other edges exactly, and sums of rates leave float
    # drift where intervals close: the kernel must sum and reset exactly where the Python sweep does.
    rng = random.Random(23)
    groups = []
    for _ in range(300):
        calls = dense_grid_session(rng)
        edges = sorted({c.start_us - shift for c in calls for shift in (0, *BURST_WINDOWS_US)} | {0, 10 * GRID_US})
        groups.append(PeakGroup(rows(calls)))
        groups.append(PeakGroup(rows(calls), update_range(tuple(rng.sample(edges, 2)), tuple(rng.sample(edges, 2)))))
    assert groups_peaks(groups) == [python_peaks(group) for group in groups]


@PROPERTY_SETTINGS
@given(calls=st.lists(placed_calls(), max_size=12), shift_us=st.sampled_from([2**53, 2**60, -(2**60)]))
def test_sessions_far_from_the_epoch_give_the_python_floats(calls, shift_us):
    group = PeakGroup(rows(shifted(calls, shift_us)))
    assert groups_peaks([group]) == [python_peaks(group)]


def test_rates_at_the_edge_of_exact_floats_give_the_python_floats():
    # output / generation time: one rounding of the exact quotient, as Python's int division gives.
    group = PeakGroup([(0, 0, 1_000_004, 0, 2**53 - 1)])
    assert groups_peaks([group]) == [python_peaks(group)]


@pytest.mark.parametrize(
    "calls",
    [
        rows([call(0, 1000, 2**62, 2**62, ttft_ms=100)]),  # token sums beyond int64
        [(0, 0, 1_000_004, 0, 2**53 + 1)],  # output tokens no float holds
        [(0, 0, 2**53 + 3, 0, 7)],  # a generation time no float holds
        rows([call(2**63, 1000, 10, 5)]),  # no int64 instant
    ],
)
def test_calls_beyond_what_ingest_accepts_are_refused_rather_than_wrapped(calls):
    # Ingest bounds tokens at 10**9 per call and durations at 24 h: no fold meets these.
    with pytest.raises((ValueError, OverflowError)):
        groups_peaks([PeakGroup(rows([call(0, 1000, 10, 5)])), PeakGroup(calls)])


def test_no_groups_and_groups_without_calls():
    assert groups_peaks([]) == []
    assert groups_peaks([PeakGroup([])]) == [(dict.fromkeys(BURST_WINDOWS_US, 0.0), 0)]
    assert groups_peaks([PeakGroup([], update_range((0, SECOND_US), (0, SECOND_US)))]) == [
        (dict.fromkeys(BURST_WINDOWS_US, 0.0), 0)
    ]

