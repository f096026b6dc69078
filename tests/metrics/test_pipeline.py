"""The pipeline under production trouble: a dead broker, concurrent folds, racing duplicate posts,
and a real Celery worker process folding events posted over HTTP."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection, connections

from apps.accounts.services import api_key_create, project_get_or_create
from apps.ingestion.models import RawEvent
from apps.ingestion.services import events_ingest
from apps.metrics import services
from apps.metrics.selectors import session_metadata
from tests.conftest import pending_count, throttle_event, usage_event
from tests.metrics.test_fold import approx_document, random_session, snapshot
from tokensite.celery import app as celery_app
from tokensite.schedule import BEAT_SCHEDULE

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


def ingest(project, events):
    return events_ingest(project=project, body=json.dumps({"events": events}).encode())


@pytest.fixture
def broker(request):
    """Point the Celery app at a broker URL and publish for real (not in-process) during the test."""
    conf = celery_app.conf
    saved = (conf.task_always_eager, conf.broker_url)

    def use(url: str) -> None:
        conf.task_always_eager = False
        conf.broker_url = url
        # Drops the cached broker connection and producer pools, as Celery does after a fork,
        # so the next publish connects to the new URL.
        celery_app._after_fork()

    yield use
    conf.task_always_eager, conf.broker_url = saved
    celery_app._after_fork()


def test_ingest_succeeds_while_the_broker_is_down_and_the_sweep_folds_later(project, broker):
    broker("redis://127.0.0.1:9/0")  # nothing listens on the discard port
    started = time.monotonic()
    result = ingest(project, [usage_event(), throttle_event()])
    assert result.accepted == 2
    assert time.monotonic() - started < 10, "a dead broker must not hold the request"
    assert pending_count() == 2

    assert services.unprocessed_sweep(min_age=timedelta(0)) == 2
    document = session_metadata(project=project, session_id="session-1")
    assert document["token_usage"]["total_tokens"] == 1250 + 875
    assert document["throttle"]["count"] == 1 and document["pending_events"] == 0


def test_the_sweep_runs_at_least_every_thirty_seconds():
    entry = BEAT_SCHEDULE["metrics-unprocessed-sweep"]
    assert entry["task"] == "apps.metrics.tasks.unprocessed_sweep" and entry["schedule"] <= 30
    assert "apps.metrics.tasks.unprocessed_sweep" in celery_app.tasks


@pytest.mark.postgres
def test_concurrent_folds_of_one_session_count_each_event_once(team, broker):
    broker("redis://127.0.0.1:9/0")  # store without folding, then fold from many threads at once
    racing = project_get_or_create(team=team, slug="racing")
    reference = project_get_or_create(team=team, slug="reference")
    import random

    events = random_session(random.Random(11), "shared", calls=120)
    for start in range(0, len(events), 10):
        ingest(racing, events[start : start + 10])
    barrier = threading.Barrier(4)
    folded: list[int] = []

    def fold() -> None:
        try:
            barrier.wait()
            folded.append(services.sessions_fold(project_id=racing.pk, session_ids=["shared"]))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=fold) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(folded) == len(events)

    celery_app.conf.task_always_eager = True
    ingest(reference, events)
    assert snapshot(racing, "shared") == approx_document(snapshot(reference, "shared"))


@pytest.mark.postgres
def test_two_requests_racing_with_the_same_batch_store_one_copy(live_server, project, ingest_key):
    events = [usage_event(session_id="race") for _ in range(200)]
    body = json.dumps({"events": events})
    barrier = threading.Barrier(2)
    replies: list[dict] = []

    def post() -> None:
        barrier.wait()
        response = httpx.post(f"{live_server.url}/api/v1/events", content=body, timeout=30,
                              headers={"Authorization": f"Bearer {ingest_key}", "Content-Type": "application/json"})  # fmt: skip
        replies.append(response.json())

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted((r["accepted"], r["duplicates"]) for r in replies) in ([(0, 200), (200, 0)], [(100, 100), (100, 100)]) or (
        sum(r["accepted"] for r in replies) == 200 and sum(r["duplicates"] for r in replies) == 200
    )
    assert RawEvent.objects.filter(project=project, session_id="race").count() == 200
    assert session_metadata(project=project, session_id="race")["calls"] == 200


def _start_worker(concurrency: int) -> subprocess.Popen:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tokensite.settings.worker_test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tokensite", "worker", "--loglevel=WARNING", "--pool=prefork",
         f"--concurrency={concurrency}", "--without-gossip", "--without-mingle", "--without-heartbeat",
         "-n", f"test-{uuid.uuid4().hex[:8]}@%h"],
        # A session of its own, so a test can kill the worker with its pool processes at once.
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def _stop(worker: subprocess.Popen) -> str:
    worker.terminate()
    try:
        output, _ = worker.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
        output, _ = worker.communicate()
    return output.decode(errors="replace")


def _wait_for(condition, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return False


requires_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL (set by .ci/run)")


@pytest.mark.postgres
@pytest.mark.redis
@requires_redis
def test_real_celery_workers_fold_events_posted_over_http(live_server, team, project, broker):
    """Two worker processes (prefork) against Redis and Postgres fold 30 batches of one session
    posted over HTTP, racing on the session's row lock; the result equals a single-batch fold."""
    broker(settings.REDIS_URL)
    celery_app.control.purge()
    key = api_key_create(project=project).plaintext
    import random

    events = random_session(random.Random(5), "worker-session", calls=150)
    worker = _start_worker(concurrency=2)
    try:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        for start in range(0, len(events), 6):
            response = httpx.post(f"{live_server.url}/api/v1/events", headers=headers, timeout=30,
                                  content=json.dumps({"events": events[start : start + 6]}))  # fmt: skip
            assert response.status_code == 202, response.text
        folded = _wait_for(lambda: pending_count(project=project) == 0)
    finally:
        output = _stop(worker)
    assert folded, f"the worker did not fold the events; its output:\n{output}"

    reference = project_get_or_create(team=team, slug="reference")
    celery_app.conf.task_always_eager = True
    ingest(reference, events)
    assert snapshot(project, "worker-session") == approx_document(snapshot(reference, "worker-session"))
