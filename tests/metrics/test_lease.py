"""The fold lease: renewed while its holder folds, waited for by tasks that find it taken (not in
process, where the holder is this very process), and fold tasks that meet a dead cache or broker
are retried."""
from __future__ import annotations

import json
import time

import pytest
from celery.exceptions import Retry
from django.core.cache import cache

from apps.ingestion.services import events_ingest
from apps.metrics import coalescing, folding
from apps.metrics.tasks import project_fold
from tests.conftest import pending_count, usage_event
from tests.metrics.test_coalescing import store_without_folding
from tokensite.celery import app as celery_app

pytestmark = pytest.mark.django_db(transaction=True)


def lease_key(project) -> str:
    return f"metrics:fold-lease:{project.pk}"


def test_in_process_a_task_finding_the_lease_taken_returns_and_the_holder_folds(project, caplog):
    """`make run`: tasks run in-process, so a deferred task would run at once, find the lease
    still taken and defer again; it must return instead, as the holder folds the events."""
    cache.set(lease_key(project), ("other-thread", time.time() + 10), timeout=10)
    try:
        events_ingest(project=project, body=json.dumps({"events": [usage_event()]}).encode())
        assert pending_count() == 1
        assert not [record for record in caplog.records if record.levelname in ("WARNING", "ERROR")]
        assert cache.get(f"metrics:fold-deferred:{project.pk}") is None, "nothing was deferred"
    finally:
        cache.delete(lease_key(project))
    assert project_fold.apply(args=[project.pk]).get() == 1


def test_the_holder_renews_the_lease_while_a_round_outlasts_it(project, monkeypatch):
    monkeypatch.setattr(coalescing, "LEASE_TTL_S", 1)  # whole seconds: Redis's own unit
    monkeypatch.setattr(coalescing, "LEASE_RENEW_S", 0.2)
    store_without_folding(project, [usage_event()])
    seen: list[object] = []
    fold = folding.sessions_fold

    def slow_fold(**kwargs):
        time.sleep(2.5)  # longer than the TTL: without renewal the lease would expire meanwhile
        seen.append(cache.get(lease_key(project)))
        return fold(**kwargs)

    monkeypatch.setattr(coalescing, "sessions_fold", slow_fold)
    assert coalescing.project_fold_pending(project_id=project.pk) == coalescing.FoldPass(1)
    assert seen[0] is not None, "the lease was renewed"
    assert cache.get(lease_key(project)) is None, "and released"


def test_a_fold_task_meeting_a_dead_cache_is_retried(project, settings):
    store_without_folding(project, [usage_event()])
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:9/0"}
    }
    with pytest.raises(Retry):
        project_fold.apply(args=[project.pk])
    assert pending_count() == 1


def test_a_fold_task_meeting_a_dead_broker_is_retried(project, monkeypatch):
    store_without_folding(project, [usage_event(session_id="a"), usage_event(session_id="b")])
    # One session per round, no time left after it: the task hands the rest on to the broker.
    monkeypatch.setattr(coalescing, "PENDING_SESSIONS_PER_ROUND", 1)
    monkeypatch.setattr(coalescing, "FOLD_BUDGET_S", 0.0)
    saved = celery_app.conf.task_always_eager, celery_app.conf.broker_url
    celery_app.conf.task_always_eager = False
    celery_app.conf.broker_url = "redis://127.0.0.1:9/0"
    celery_app._after_fork()
    try:
        with pytest.raises(Retry):
            project_fold.apply(args=[project.pk])
    finally:
        celery_app.conf.task_always_eager, celery_app.conf.broker_url = saved
        celery_app._after_fork()
