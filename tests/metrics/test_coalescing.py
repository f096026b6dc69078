"""Per-project fold lease: a backlog of ingest tasks folds in one pass, and no event is left behind."""
import json
import time

import pytest
from django.core.cache import cache

from apps.ingestion.services import events_ingest
from apps.metrics import coalescing
from apps.metrics.tasks import project_fold
from tests.conftest import pending_count, usage_event
from tokensite.celery import app as celery_app

pytestmark = pytest.mark.django_db(transaction=True)


def store_without_folding(project, events):
    """Commit events as if the broker had lost their task."""
    celery_app.conf.task_always_eager = False
    celery_app.conf.broker_url = "redis://127.0.0.1:9/0"
    celery_app._after_fork()
    try:
        events_ingest(project=project, body=json.dumps({"events": events}).encode())
    finally:
        celery_app.conf.task_always_eager = True
        celery_app._after_fork()


def test_one_task_folds_every_pending_session_of_its_project(project, other_team_project):
    store_without_folding(project, [usage_event(session_id=f"s{i}") for i in range(5)])
    store_without_folding(other_team_project, [usage_event(session_id="theirs")])
    assert sorted(coalescing.pending_sessions(project_id=project.pk)) == ["s0", "s1", "s2", "s3", "s4"]

    assert project_fold.apply(args=[project.pk]).get() == 5
    assert coalescing.pending_sessions(project_id=project.pk) == []
    assert coalescing.pending_sessions(project_id=other_team_project.pk) == ["theirs"]


def test_a_task_finding_the_lease_taken_leaves_the_work_to_the_holder(project):
    store_without_folding(project, [usage_event()])
    assert cache.add(f"metrics:fold-lease:{project.pk}", ("holder", time.time() + 12), timeout=60)
    try:
        fold = coalescing.project_fold_pending(project_id=project.pk)
        assert fold.folded == 0 and not fold.more and 11 < fold.lease_busy_for_s <= 12
        assert pending_count() == 1
    finally:
        cache.delete(f"metrics:fold-lease:{project.pk}")
    # The holder, looking again after releasing, folds what arrived meanwhile.
    assert coalescing.project_fold_pending(project_id=project.pk) == coalescing.FoldPass(1)


def test_a_spent_budget_hands_the_rest_on(project, monkeypatch):
    store_without_folding(project, [usage_event()])
    monkeypatch.setattr(coalescing, "FOLD_BUDGET_S", 0.0)
    assert coalescing.project_fold_pending(project_id=project.pk) == coalescing.FoldPass(0, more=True)
    assert cache.add(f"metrics:fold-lease:{project.pk}", 1, timeout=1), "the lease is released when handing on"
    cache.delete(f"metrics:fold-lease:{project.pk}")


def test_requests_while_a_task_is_queued_enqueue_nothing_and_that_task_folds_them(project):
    # A fold task of the project is queued and has not started: its mark is set.
    assert coalescing.fold_queued_mark(project_id=project.pk)
    try:
        for index in range(3):
            events_ingest(project=project, body=json.dumps({"events": [usage_event(session_id=f"q{index}")]}).encode())
        assert pending_count(project=project) == 3, "no task ran"
    finally:
        # The queued task starts: it clears the mark, then finds every event committed meanwhile.
        assert project_fold.apply(args=[project.pk]).get() == 3
    assert not cache.get(f"metrics:fold-queued:{project.pk}")
    # With no task queued, the next request enqueues one again (run in-process by the test settings).
    events_ingest(project=project, body=json.dumps({"events": [usage_event(session_id="after")]}).encode())
    assert pending_count(project=project) == 0


def test_a_failed_publish_leaves_no_queued_mark(project):
    store_without_folding(project, [usage_event()])
    assert coalescing.fold_queued_mark(project_id=project.pk), "the next request must be free to enqueue"
    coalescing.fold_queued_clear(project_id=project.pk)
