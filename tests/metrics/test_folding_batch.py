"""The batch fold: many sessions per transaction, backlogs split over transactions and overlapping
workers, all against a single-batch fold."""
from __future__ import annotations

import json
import random
import threading
import time

import psycopg
import pytest
from django.db import OperationalError, connections

from apps.accounts.services import project_get_or_create
from apps.ingestion import selectors as raw_events
from apps.ingestion.models import PendingEvent, RawEvent
from apps.ingestion.services import events_ingest
from apps.metrics import folding, services
from apps.metrics.models import SessionAggregate, UsageBucket
from tests.conftest import events_unfold, pending_count
from tests.metrics.test_fold import approx_document, bucket_totals, random_session, snapshot

pytestmark = pytest.mark.django_db(transaction=True)
SESSIONS = [f"batch-{number}" for number in range(7)]


def ingest(project, events):
    return events_ingest(project=project, body=json.dumps({"events": events}).encode())


def sessions_events(seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [event for session_id in SESSIONS for event in random_session(rng, session_id, calls=25)]


def unfold(project) -> None:
    """Leave the project's events stored but unfolded, as if no task had run."""
    events_unfold(project)
    SessionAggregate.objects.filter(project=project).delete()
    UsageBucket.objects.filter(project=project).delete()


def unfolded_beside_reference(team, slug: str, *, seed: int):
    """A project holding `sessions_events(seed)` unfolded, and a reference project that folded them."""
    events = sessions_events(seed=seed)
    project = project_get_or_create(team=team, slug=slug)
    reference = project_get_or_create(team=team, slug="reference")
    ingest(project, events)
    ingest(reference, events)
    unfold(project)
    return project, reference, events


def assert_same_as_reference(project, reference) -> None:
    for session_id in SESSIONS:
        assert snapshot(project, session_id) == approx_document(snapshot(reference, session_id))
    assert bucket_totals(project) == bucket_totals(reference)


class FoldThread(threading.Thread):
    """`services.sessions_fold` on a thread of its own (and so its own connection), keeping its
    result or error for the test to assert on."""

    def __init__(self, project, session_ids: list[str], barrier: threading.Barrier | None = None) -> None:
        super().__init__()
        self.project, self.session_ids, self.barrier = project, session_ids, barrier
        self.folded: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.barrier is not None:
                self.barrier.wait()
            self.folded = services.sessions_fold(project_id=self.project.pk, session_ids=self.session_ids)
        except BaseException as error:  # noqa: BLE001 - reported by the test's assertions
            self.error = error
        finally:
            connections.close_all()


@pytest.fixture
def small_transactions(monkeypatch):
    """Chunks of 3 sessions and claims of 40 events: several transactions
    for a handful of sessions, and sessions split across claims. Per-session
    lookups are split into many small UNION ALL statements, and each throttled call id gets a
    branch of its own."""
    monkeypatch.setattr(folding, "SESSIONS_PER_TRANSACTION", 3)
    monkeypatch.setattr(folding, "EVENTS_PER_TRANSACTION", 40)
    monkeypatch.setattr(raw_events, "_BRANCHES_PER_QUERY", 2)
    monkeypatch.setattr(raw_events, "_PARAMS_PER_QUERY", 7)
    monkeypatch.setattr(raw_events, "_CALL_IDS_PER_BRANCH", 1)


def test_one_fold_of_many_sessions_equals_single_batch_folds(team, small_transactions):
    events = sessions_events(seed=21)
    batched = project_get_or_create(team=team, slug="batched")
    reference = project_get_or_create(team=team, slug="reference")
    rng = random.Random(4)
    shuffled = events[:]
    rng.shuffle(shuffled)
    for start in range(0, len(shuffled), 30):
        ingest(batched, shuffled[start : start + 30])
    for session_id in SESSIONS:
        ingest(reference, [event for event in events if event["session_id"] == session_id])
    unfold(batched)

    assert services.sessions_fold(project_id=batched.pk, session_ids=list(reversed(SESSIONS))) == len(events)
    assert pending_count(project=batched) == 0
    assert_same_as_reference(batched, reference)


def test_partly_folded_sessions_fold_the_rest_exactly(team, small_transactions):
    # Half the events folded in one pass, the other half (late, out of order) in a second one.
    events = sessions_events(seed=22)
    rng = random.Random(5)
    rng.shuffle(events)
    project = project_get_or_create(team=team, slug="halves")
    reference = project_get_or_create(team=team, slug="reference")
    ingest(reference, events)
    ingest(project, events[: len(events) // 2])
    unfold(project)
    services.sessions_fold(project_id=project.pk, session_ids=SESSIONS)
    stored = RawEvent.objects.filter(project=project).count()
    ingest(project, events[len(events) // 2 :])  # folds in-process after commit
    assert RawEvent.objects.filter(project=project).count() == stored + len(events) - len(events) // 2
    assert services.sessions_fold(project_id=project.pk, session_ids=SESSIONS) == 0
    assert_same_as_reference(project, reference)


@pytest.mark.postgres
def test_workers_folding_overlapping_session_sets_count_each_event_once(team, small_transactions):
    """Four threads fold overlapping, differently ordered session lists at once: they queue on
    the session row locks (taken in id order) instead of deadlocking, and nothing counts twice."""
    racing, reference, events = unfolded_beside_reference(team, "racing", seed=23)
    session_lists = [SESSIONS[:5], list(reversed(SESSIONS[2:])), SESSIONS[::2], SESSIONS[1::2] + SESSIONS[:2]]
    barrier = threading.Barrier(len(session_lists))
    threads = [FoldThread(racing, session_ids, barrier) for session_ids in session_lists]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [thread.error for thread in threads] == [None] * len(threads)
    assert sum(thread.folded for thread in threads) == len(events)
    assert_same_as_reference(racing, reference)


@pytest.mark.postgres
def test_a_fold_of_several_transactions_runs_two_at_once_on_postgresql(team, small_transactions):
    """Seven sessions, three transactions: with a session of the first held by another
    transaction, sessions of another transaction fold meanwhile, on the fold's second connection."""
    project, reference, events = unfolded_beside_reference(team, "two-connections", seed=25)
    SessionAggregate.objects.create(project=project, session_id=SESSIONS[0])
    settings = connections["default"].settings_dict
    blocker = psycopg.connect(host=settings["HOST"] or "127.0.0.1", port=settings["PORT"] or 5432,
                              user=settings["USER"], dbname=settings["NAME"])  # fmt: skip
    blocker.execute("SELECT 1 FROM metrics_sessionaggregate WHERE session_id = %s FOR UPDATE", [SESSIONS[0]])
    others = PendingEvent.objects.filter(project=project, session_id__in=SESSIONS[3:])  # not in the held one's three
    queued = others.count()
    fold = FoldThread(project, SESSIONS)
    fold.start()
    try:
        deadline = time.monotonic() + 30
        while others.count() == queued:
            assert time.monotonic() < deadline, "every transaction waited for the held session"
            time.sleep(0.05)
        assert PendingEvent.objects.filter(project=project, session_id=SESSIONS[0]).exists()
    finally:
        blocker.rollback()
        blocker.close()
        fold.join()
    assert fold.error is None
    assert fold.folded == len(events)
    assert_same_as_reference(project, reference)


@pytest.mark.postgres
def test_a_fold_refused_a_second_connection_folds_everything_on_one(team, small_transactions, monkeypatch, caplog):
    """The server refuses the fold's second connection (at max_connections, say): every event
    still folds, exactly once, on the caller's connection."""
    from django.db.backends.postgresql.base import DatabaseWrapper

    project, reference, events = unfolded_beside_reference(team, "one-connection", seed=27)
    connect = DatabaseWrapper.get_new_connection

    def refused_off_the_callers_thread(wrapper, params):
        if threading.current_thread() is not threading.main_thread():
            raise psycopg.OperationalError("FATAL:  sorry, too many clients already")
        return connect(wrapper, params)

    monkeypatch.setattr(DatabaseWrapper, "get_new_connection", refused_off_the_callers_thread)
    assert services.sessions_fold(project_id=project.pk, session_ids=SESSIONS) == len(events)
    assert pending_count(project=project) == 0
    assert_same_as_reference(project, reference)
    assert "No second connection" in caplog.text


@pytest.mark.postgres
def test_a_claim_that_fails_raises_djangos_database_error_and_keeps_the_queue(team):
    # The claim runs on a plain psycopg cursor; its errors must still be Django's, which the fold
    # task retries on (apps.metrics.tasks.project_fold's autoretry_for).
    project = project_get_or_create(team=team, slug="locked")
    ingest(project, sessions_events(seed=29)[:50])
    unfold(project)
    queued = pending_count(project=project)
    settings_dict = connections["default"].settings_dict
    blocker = psycopg.connect(host=settings_dict["HOST"], port=settings_dict["PORT"], user=settings_dict["USER"],
                              dbname=settings_dict["NAME"])  # fmt: skip
    blocker.execute(f"SELECT 1 FROM {PendingEvent._meta.db_table} WHERE project_id = %s FOR UPDATE", [project.pk])
    connection = connections["default"]
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '200ms'")
    try:
        with pytest.raises(OperationalError, match="lock timeout"):
            services.sessions_fold(project_id=project.pk, session_ids=SESSIONS)
    finally:
        blocker.rollback()
        blocker.close()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    assert pending_count(project=project) == queued
    assert services.sessions_fold(project_id=project.pk, session_ids=SESSIONS) == queued
