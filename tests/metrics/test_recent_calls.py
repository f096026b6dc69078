"""Peaks folded from a session's recent calls (apps.metrics.recent_calls): exact against the
brute-force oracle whatever order and batch sizes the calls arrive in, never lowered, and live
traffic (batches in time order) re-reads none of the session's history."""
from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.ingestion.models import RawEvent
from apps.ingestion.services import events_ingest
from apps.metrics import recent_calls, services
from apps.metrics.algorithms import BURST_WINDOWS_US, burst_peaks, peak_concurrency
from apps.metrics.models import SessionAggregate
from apps.metrics.recent_calls import RecentCalls
from tests.conftest import BASE_TIME, property_examples, usage_event
from tests.metrics.test_bursts import call, close, oracle_burst, oracle_concurrency

SECOND_US = 1_000_000
GRID_US = 250_000
PEAK_FIELDS = {1 * SECOND_US: "burst_1s", 10 * SECOND_US: "burst_10s", 60 * SECOND_US: "burst_60s"}


def usage(session_id: str, start_us: int, duration_ms: float, ttft_ms: float | None, input_tokens: int,
          output_tokens: int) -> dict:  # fmt: skip
    return usage_event(
        session_id=session_id, timestamp=(BASE_TIME + timedelta(microseconds=start_us)).isoformat(),
        duration_ms=duration_ms, time_to_first_token_ms=ttft_ms, input_tokens=input_tokens,
        output_tokens=output_tokens,
    )  # fmt: skip


def ingest(project, events: list[dict]) -> None:
    # Inside the test's transaction no on_commit hook runs: each test folds when it means to.
    events_ingest(project=project, body=json.dumps({"events": events}).encode())


def fold(project, session_ids: list[str]) -> None:
    services.sessions_fold(project_id=project.pk, session_ids=session_ids)


def stored_peaks(project, session_id: str) -> tuple[dict[int, float], int]:
    row = SessionAggregate.objects.get(project=project, session_id=session_id)
    return {window_us: getattr(row, name) for window_us, name in PEAK_FIELDS.items()}, row.peak_concurrency


def folded_calls(project, session_id: str):
    """The session's usage events as the fold places them, read back from the raw table."""
    return [
        call((timestamp - BASE_TIME) // timedelta(microseconds=1), duration_ms, input_tokens, output_tokens, ttft_ms)
        for timestamp, duration_ms, ttft_ms, input_tokens, output_tokens in RawEvent.objects.filter(
            project=project, session_id=session_id, type=RawEvent.Type.USAGE
        ).values_list("timestamp", "duration_ms", "time_to_first_token_ms", "input_tokens", "output_tokens")
    ]  # fmt: skip


# --- Random sessions delivered in random batches through the real fold --------------------------

# Calls over ten minutes: several horizons apart, so late calls land behind the recent calls.
# Starts on a coarse grid or anywhere; durations up to two minutes, so a call can still be running
# when the horizon passes its start.
call_specs = st.tuples(
    st.one_of(st.integers(0, 600 * SECOND_US // GRID_US).map(lambda k: k * GRID_US), st.integers(0, 600 * SECOND_US)),
    st.one_of(st.just(0.0), st.integers(1, 40).map(lambda k: k * GRID_US / 1000), st.floats(0, 120_000)),
    st.one_of(st.none(), st.just(0.0), st.floats(0, 5000)),
    st.integers(0, 2000),
    st.integers(0, 2000),
)


@st.composite
def deliveries(draw) -> list[list[tuple]]:
    """A session's calls in batches of one to four, in arrival order: mostly in time order, some
    sent as they end (a long call after shorter ones started later), some far behind (up to ten
    minutes late)."""
    calls = draw(st.lists(call_specs, min_size=1, max_size=24))
    delays_us = draw(st.lists(
        st.one_of(st.just(0), st.just(0), st.integers(0, 30 * SECOND_US), st.integers(0, 600 * SECOND_US)),
        min_size=len(calls), max_size=len(calls),
    ))  # fmt: skip
    arrival = [spec for _, spec in sorted(zip(delays_us, calls), key=lambda pair: pair[1][0] + pair[0])]
    sizes = draw(st.lists(st.integers(1, 4), min_size=len(arrival), max_size=len(arrival)))
    batches, start = [], 0
    for size in sizes:
        if start < len(arrival):
            batches.append(arrival[start : start + size])
            start += size
    return batches


@pytest.mark.django_db
@settings(
    max_examples=property_examples(60), deadline=None, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
@given(sessions=st.lists(deliveries(), min_size=1, max_size=2))
def test_peaks_folded_batch_by_batch_equal_the_oracle_and_never_drop(project, sessions):
    """Each fold call takes the next batch of every session; after each, the stored peaks are those
    of every call so far (the oracle at the end), and no peak is lower than before."""
    session_ids = [f"s-{uuid.uuid4()}" for _ in sessions]  # examples share the database
    before = {session_id: ({window_us: 0.0 for window_us in PEAK_FIELDS}, 0) for session_id in session_ids}
    for round_number in range(max(map(len, sessions))):
        arriving = [(session_id, batches[round_number])
                    for session_id, batches in zip(session_ids, sessions) if round_number < len(batches)]  # fmt: skip
        ingest(project, [usage(session_id, *spec) for session_id, batch in arriving for spec in batch])
        fold(project, [session_id for session_id, _ in arriving])
        for session_id, _ in arriving:
            bursts, concurrency = stored_peaks(project, session_id)
            calls = folded_calls(project, session_id)
            expected = burst_peaks(calls, BURST_WINDOWS_US)
            assert all(close(bursts[window_us], expected[window_us]) for window_us in PEAK_FIELDS)
            assert concurrency == peak_concurrency(calls)
            previous_bursts, previous_concurrency = before[session_id]
            assert all(bursts[window_us] >= previous_bursts[window_us] for window_us in PEAK_FIELDS)
            assert concurrency >= previous_concurrency
            before[session_id] = (bursts, concurrency)
    for session_id in session_ids:
        bursts, concurrency = stored_peaks(project, session_id)
        calls = folded_calls(project, session_id)
        assert all(close(bursts[window_us], oracle_burst(calls, window_us)) for window_us in PEAK_FIELDS)
        assert concurrency == oracle_concurrency(calls)


@pytest.mark.parametrize("late_by_s", [0, 30, 59, 60, 61, 75, 90, 119, 120, 121, 150, 400])
def test_late_call_meets_the_call_ending_at_the_start_of_its_reach(project, late_by_s):
    """A call arriving `late_by_s` behind the latest folded start makes a new 60 s peak together
    with an older call ending half a second inside its reach (one window back): wherever that
    older call sits relative to the recent calls' horizon, the fold must see it."""
    late_start_us = 1000 * SECOND_US
    latest_start_us = late_start_us + late_by_s * SECOND_US
    session_id = f"late-{late_by_s}"
    for batch in ([(late_start_us - 60_500_000, 1000, 0.0, 0, 100_000)],  # output over its last second
                  [(latest_start_us, 1000, None, 1, 1)],
                  [(late_start_us, 1000, None, 100_000, 0)]):  # fmt: skip
        ingest(project, [usage(session_id, *spec) for spec in batch])
        fold(project, [session_id])
    bursts, concurrency = stored_peaks(project, session_id)
    calls = folded_calls(project, session_id)
    assert close(bursts[60 * SECOND_US], oracle_burst(calls, 60 * SECOND_US))
    assert bursts[60 * SECOND_US] > 100_000 / 60  # both calls' tokens in one window
    assert all(close(bursts[window_us], oracle_burst(calls, window_us)) for window_us in PEAK_FIELDS)
    assert concurrency == oracle_concurrency(calls)


def test_session_folded_before_recent_calls_were_kept_stays_exact(project):
    """A row with no recent calls (folded by an earlier release, or above the size bound) reloads
    what it needs and keeps exact peaks, in time order or not."""
    ingest(project, [usage("old", second * SECOND_US, 4000, None, 500, 300) for second in range(0, 90, 3)])
    fold(project, ["old"])
    SessionAggregate.objects.filter(project=project, session_id="old").update(recent_calls=None)
    for batch in ([(95 * SECOND_US, 2000, None, 900, 100)], [(40 * SECOND_US, 8000, 100, 4000, 2000)],
                  [(96 * SECOND_US, 30_000, None, 10, 10), (97 * SECOND_US, 500, None, 7000, 0)]):  # fmt: skip
        ingest(project, [usage("old", *spec) for spec in batch])
        fold(project, ["old"])
        bursts, concurrency = stored_peaks(project, "old")
        calls = folded_calls(project, "old")
        assert all(close(bursts[window_us], oracle_burst(calls, window_us)) for window_us in PEAK_FIELDS)
        assert concurrency == oracle_concurrency(calls)


def test_session_with_more_recent_calls_than_the_bound_stays_exact(project, monkeypatch):
    monkeypatch.setattr(recent_calls, "MAX_CALLS", 5)
    for first in range(0, 40, 8):
        ingest(project, [usage("dense", (first + k) * SECOND_US // 4, 1500, None, 100 * k, 50) for k in range(8)])
        fold(project, ["dense"])
        bursts, concurrency = stored_peaks(project, "dense")
        calls = folded_calls(project, "dense")
        assert all(close(bursts[window_us], oracle_burst(calls, window_us)) for window_us in PEAK_FIELDS)
        assert concurrency == oracle_concurrency(calls)


# --- Live traffic reads no history --------------------------------------------------------------


def raw_event_statements(project, session_id: str, batch: list[tuple]) -> int:
    """How many statements the fold of this batch sends that read or write the raw events table."""
    ingest(project, [usage(session_id, *spec) for spec in batch])
    with CaptureQueriesContext(connection) as captured:
        fold(project, [session_id])
    return sum(1 for query in captured.captured_queries if RawEvent._meta.db_table in query["sql"])


def five_calls(first_second: int) -> list[tuple]:
    return [((first_second + 2 * k) * SECOND_US, 2500, 300, 800 + k, 200) for k in range(5)]


def test_in_order_batches_read_no_more_raw_events_than_a_first_batch(project):
    """However long the session's history, a batch of later calls costs the statements on the
    raw events that a brand-new session's first batch costs (its claim): no reload of history."""
    first_batch = raw_event_statements(project, "live", five_calls(0))
    for first_second in range(10, 400, 10):  # 40 batches, six and a half minutes of history
        assert raw_event_statements(project, "live", five_calls(first_second)) == first_batch
    # The check can fail: a batch reaching minutes behind the recent calls reloads that range.
    assert raw_event_statements(project, "live", five_calls(60)) > first_batch


# --- The state itself -----------------------------------------------------------------------------

rows = st.tuples(
    st.integers(0, 900 * SECOND_US), st.integers(0, 120 * SECOND_US), st.integers(0, 2000), st.integers(0, 2000)
).map(lambda t: (t[0], t[0] + t[1] // 2, t[0] + t[1], t[2], t[3]))


@settings(max_examples=property_examples(200), deadline=None, database=None)
@given(batches=st.lists(st.lists(rows, min_size=1, max_size=6), min_size=1, max_size=12))
def test_recent_calls_hold_every_folded_call_ending_at_or_after_the_horizon(batches):
    state = recent_calls.of_new_session(batches[0])
    folded = list(batches[0])
    for batch in batches[1:]:
        horizon_us = state.horizon_us
        state = state.advanced(batch)
        folded += batch
        assert state.horizon_us >= horizon_us  # never moves back
        assert sorted(state.calls) == sorted(call for call in folded if call[2] >= state.horizon_us)
        assert recent_calls.from_bytes(recent_calls.to_bytes(state)) == state


def test_recent_calls_keep_a_call_still_running_after_the_horizon():
    long_call = (0, 1000, 600 * SECOND_US, 10, 10)  # ten minutes long
    later_call = (300 * SECOND_US, 300 * SECOND_US, 301 * SECOND_US, 1, 1)
    state = recent_calls.of_new_session([long_call]).advanced([later_call])
    assert state.horizon_us > 0 and long_call in state.calls


def test_recent_calls_beyond_the_bound_are_not_kept(monkeypatch):
    monkeypatch.setattr(recent_calls, "MAX_CALLS", 3)
    assert RecentCalls(0, [(0, 0, 10, 1, 1)] * 3).advanced([(5, 5, 10, 1, 1)]) is None
    assert recent_calls.to_bytes(None) is None and recent_calls.from_bytes(None) is None
