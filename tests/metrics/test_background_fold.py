"""The embedded default's background folder: a reply never waits for the fold, the fold still
counts every event once, and tests and commands can wait for it without sleeping."""
from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.core.cache import cache

from apps.accounts.services import project_get_or_create
from apps.metrics import coalescing, services
from apps.metrics.models import SessionAggregate
from tests.conftest import post_events, usage_event
from tests.metrics.test_fold import approx_document, ingest, random_session, snapshot

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def background(settings):
    settings.METRICS_FOLD_THREAD = True


@contextmanager
def lease_held_elsewhere(*projects):
    """Another folder holds these projects' fold leases: nothing folds them until the block ends.

    While the test's thread writes, the folder thread must not touch the in-memory SQLite test
    database (its shared cache locks whole tables), and a held lease keeps it to the cache.
    """
    for project in projects:
        assert cache.add(coalescing._lease_key(project.pk), ("elsewhere", 2**40), timeout=300)
    try:
        yield
    finally:
        for project in projects:
            cache.delete(coalescing._lease_key(project.pk))


def test_reply_does_not_wait_for_the_fold(background, api_client, ingest_key, project):
    with lease_held_elsewhere(project):
        reply = post_events(api_client, ingest_key, [usage_event(), usage_event(session_id="session-2")])
        assert reply.status_code == 202
        assert reply.json()["accepted"] == 2
        # Stored, queued, and not folded: the reply came while no fold could run.
        assert project.raw_events.count() == 2
        assert not SessionAggregate.objects.filter(project=project).exists()
    services.background_fold_drain(timeout_s=30)
    assert sorted(SessionAggregate.objects.filter(project=project).values_list("session_id", "calls")) == [
        ("session-1", 1), ("session-2", 1),
    ]  # fmt: skip


@pytest.mark.parametrize("seed", [4, 5])
def test_background_folds_equal_a_fold_of_all_events_at_once(background, settings, team, seed):
    rng = random.Random(seed)
    sessions = [f"s-{index}" for index in range(3)]
    events = [event for session_id in sessions for event in random_session(rng, session_id)]
    in_background = project_get_or_create(team=team, slug="background")
    other = project_get_or_create(team=team, slug="other")
    shuffled = events[:]
    rng.shuffle(shuffled)
    with lease_held_elsewhere(in_background, other):
        for start in range(0, len(shuffled), 17):
            ingest(in_background, shuffled[start : start + 17])
            ingest(other, [usage_event(session_id=f"other-{start}")])
    services.background_fold_drain(timeout_s=60)

    settings.METRICS_FOLD_THREAD = False  # folded inside the request, the reference
    at_once = project_get_or_create(team=team, slug="at-once")
    ingest(at_once, events)
    for session_id in sessions:
        assert snapshot(in_background, session_id) == approx_document(snapshot(at_once, session_id))
    assert SessionAggregate.objects.filter(project=other).count() == len(range(0, len(shuffled), 17))
    assert coalescing.pending_sessions(project_id=in_background.pk) == []


def test_drain_returns_at_once_when_nothing_was_handed_over(background):
    services.background_fold_drain(timeout_s=0)


def test_fold_pending_now_folds_every_queued_event_on_the_callers_thread(background, team):
    first = project_get_or_create(team=team, slug="first")
    second = project_get_or_create(team=team, slug="second")
    with lease_held_elsewhere(first, second):
        ingest(first, [usage_event(), usage_event(session_id="b")])
        ingest(second, [usage_event()])
        # The leases keep the folder away; fold_pending_now needs none (folding is exact anyway).
        assert services.fold_pending_now() == 3
        assert SessionAggregate.objects.filter(project__in=[first, second]).count() == 3
    services.background_fold_drain(timeout_s=30)
    assert sum(SessionAggregate.objects.values_list("calls", flat=True)) == 3


@pytest.mark.slow
def test_make_run_server_counts_concurrent_posts_once_and_folds_them_before_it_stops(tmp_path):
    """`manage.py runserver` as `make run` starts it (SQLite file, no Redis): four clients post at
    once while its folder folds; stopped with Ctrl-C, it folds what is left before it exits."""
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"DJANGO_SETTINGS_MODULE": "tokensite.settings.local", "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LOG_LEVEL": "WARNING",
                "PYTHONPATH": os.pathsep.join([str(ROOT / "sdk"), str(ROOT)])})  # fmt: skip
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, cwd=ROOT, check=True)
    key = subprocess.run([*manage, "create_api_key", "--team", "t", "--project", "p"], env=env, cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]  # fmt: skip
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([*manage, "runserver", "--noreload", f"127.0.0.1:{port}"], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    ready = threading.Event()
    output: list[str] = []

    def read_output() -> None:
        for line in server.stdout:
            output.append(line)
            if "Quit the server with" in line:
                ready.set()

    threading.Thread(target=read_output, daemon=True).start()
    try:
        assert ready.wait(120), "".join(output)
        accepted = []

        def client(seed: int) -> None:
            rng = random.Random(seed)
            for batch in range(15):
                events = [usage_event(session_id=f"c{seed}-{rng.randint(0, 3)}", input_tokens=rng.randint(1, 999),
                                      output_tokens=rng.randint(1, 99), event_id=str(uuid.uuid4()))
                          for _ in range(rng.choice([1, 20, 100]))]  # fmt: skip
                body = json.dumps({"events": events + events[:1]})  # the first event twice: stored once
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                connection.request("POST", "/api/v1/events", body,
                                   {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})  # fmt: skip
                reply = connection.getresponse()
                assert reply.status == 202, reply.read()
                accepted.append(json.loads(reply.read())["accepted"])
                connection.close()

        clients = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(120) == 0, "".join(output)
    assert "Traceback" not in "".join(output), "".join(output)
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM ingestion_pendingevent").fetchone() == (0,)
        raw = db.execute(
            "SELECT session_id, COUNT(*), SUM(input_tokens), SUM(output_tokens) FROM ingestion_rawevent "
            "GROUP BY session_id ORDER BY session_id"
        ).fetchall()
        folded = db.execute(
            "SELECT session_id, calls, input_tokens, output_tokens, event_count FROM metrics_sessionaggregate "
            "ORDER BY session_id"
        ).fetchall()
    assert sum(count for _, count, _, _ in raw) == sum(accepted)
    assert folded == [(session_id, count, input_tokens, output_tokens, count)
                      for session_id, count, input_tokens, output_tokens in raw]  # fmt: skip
