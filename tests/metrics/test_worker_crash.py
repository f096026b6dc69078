"""A worker that dies holding a project's fold lease stalls nothing: real Celery workers against
Redis and PostgreSQL, no beat."""
from __future__ import annotations

import json
import os
import random
import signal
import time
from datetime import timedelta

import psycopg
import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Sum

from apps.ingestion.models import RawEvent
from apps.ingestion.services import events_ingest
from apps.metrics.folding import SESSIONS_PER_TRANSACTION
from apps.metrics.models import SessionAggregate, SessionStepAggregate, UsageBucket
from tests.conftest import BASE_TIME, pending_count, usage_event
from tests.metrics.test_pipeline import _start_worker, _stop, _wait_for, broker, requires_redis  # noqa: F401
from tokensite.celery import app as celery_app

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow,
              requires_redis]  # fmt: skip

# Three fold transactions: two full ones and a half one.
SESSIONS = 2 * SESSIONS_PER_TRANSACTION + SESSIONS_PER_TRANSACTION // 2
EVENTS_PER_SESSION = 5


def ingest(project, events):
    return events_ingest(project=project, body=json.dumps({"events": events}).encode())


def lease_key(project) -> str:
    return f"metrics:fold-lease:{project.pk}"


def assert_folded_exactly_once(project) -> None:
    """Every aggregate equals the sums of the project's raw events."""
    raw = {
        row["session_id"]: (row["input"], row["output"], row["events"])
        for row in RawEvent.objects.filter(project=project).values("session_id")
        .annotate(input=Sum("input_tokens"), output=Sum("output_tokens"), events=Count("id"))
    }  # fmt: skip
    folded = {
        session.session_id: (session.input_tokens, session.output_tokens, session.event_count)
        for session in SessionAggregate.objects.filter(project=project)
    }
    assert folded == raw
    sums = {"input": Sum("input_tokens"), "output": Sum("output_tokens")}
    totals = RawEvent.objects.filter(project=project).aggregate(**sums)
    assert SessionStepAggregate.objects.filter(session__project=project).aggregate(**sums) == totals
    assert UsageBucket.objects.filter(project=project).aggregate(**sums) == totals


def test_a_task_finding_a_dead_workers_lease_folds_when_it_expires(project, broker):  # noqa: F811
    broker(settings.REDIS_URL)
    celery_app.control.purge()
    worker = _start_worker(concurrency=1)
    try:
        ingest(project, [usage_event(session_id="warm-up")])
        assert _wait_for(lambda: pending_count(project=project) == 0), "the worker did not start"
        # The live worker releases its lease just after its commit: wait for that, or its release
        # could delete the lease set below.
        assert _wait_for(lambda: cache.get(lease_key(project)) is None), "the worker kept its lease"
        # A worker died holding the project's lease, which expires in 4 s.
        cache.set(lease_key(project), ("dead-worker", time.time() + 4), timeout=4)
        ingest(project, [usage_event(session_id="after")])
        published = time.monotonic()
        folded = _wait_for(lambda: pending_count(project=project) == 0, timeout_s=30)
        waited = time.monotonic() - published
    finally:
        output = _stop(worker)
        cache.delete(lease_key(project))
    assert folded, f"the task that found the lease taken never came back; worker output:\n{output}"
    assert 3 < waited < 15, f"folded once the lease expired, not before: {waited:.1f} s after the publish"
    assert_folded_exactly_once(project)


def test_a_worker_killed_mid_fold_stalls_nothing_without_beat(project, broker, capsys):  # noqa: F811
    broker(settings.REDIS_URL)
    celery_app.control.purge()
    rng = random.Random(12)
    events = [
        usage_event(session_id=f"s{session:04d}", timestamp=(BASE_TIME + timedelta(seconds=rng.randint(0, 600))).isoformat(),
                    duration_ms=rng.randint(0, 5000), input_tokens=rng.randint(0, 5000),
                    output_tokens=rng.randint(0, 2000))
        for session in range(SESSIONS) for _ in range(EVENTS_PER_SESSION)
    ]  # fmt: skip
    rng.shuffle(events)
    for start in range(0, len(events), 1000):
        ingest(project, events[start : start + 1000])
    # Hold one session of the second transaction so the worker is caught mid-fold: holding the
    # lease, some transaction committed, the second waiting on this row.
    held = f"s{SESSIONS_PER_TRANSACTION + SESSIONS_PER_TRANSACTION // 5:04d}"
    SessionAggregate.objects.create(project=project, session_id=held)
    db = connection.settings_dict
    blocker = psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
                              dbname=db["NAME"])
    blocker.execute("SELECT 1 FROM metrics_sessionaggregate WHERE session_id = %s FOR UPDATE", [held])

    def caught_mid_fold() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND wait_event_type = 'Lock'")  # fmt: skip
            waiting = cursor.fetchone()[0]
        return waiting > 0 and 0 < pending_count(project=project) < SESSIONS * EVENTS_PER_SESSION

    first = _start_worker(concurrency=1)
    try:
        assert _wait_for(caught_mid_fold, timeout_s=90), "the worker never got to the held session"
        assert cache.get(lease_key(project)) is not None
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        killed = time.monotonic()
        first.communicate()
        blocker.rollback()
        blocker.close()

    second = _start_worker(concurrency=1)  # and no beat
    try:
        folded = _wait_for(lambda: pending_count(project=project) == 0, timeout_s=90)
        recovered_s = time.monotonic() - killed
    finally:
        output = _stop(second)
        cache.delete(lease_key(project))
    assert folded, f"the backlog stayed unfolded; second worker's output:\n{output}"
    with capsys.disabled():
        print(f"\n  killed mid-fold: the rest of the backlog folded {recovered_s:.1f} s after the kill")
    assert recovered_s < 45, "well within the old 120 s lease"
    assert_folded_exactly_once(project)
