"""Metrics services: folding raw events into aggregates, exact, idempotent and safe under concurrent workers.

The work lives in small modules, re-exported here as the app's one service interface:
- apps.metrics.folding: the batch fold (many sessions per transaction; see its docstring for
  the locking and claiming that keep it exact);
- apps.metrics.buckets: atomic additions to time buckets and their compaction;
- apps.metrics.costs: moving aggregates when a re-price changes stored costs;
- apps.metrics.coalescing: one folder per project at a time, so backlogs fold in big batches;
- apps.metrics.quarantine: sessions the fold cannot fold, set aside so they block nothing.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from datetime import timedelta

from django.utils import timezone as dj_timezone

from apps.ingestion.models import PendingEvent
from apps.metrics.buckets import BucketDelta, buckets_add, buckets_compact
from apps.metrics.coalescing import pending_sessions, project_fold_pending
from apps.metrics.costs import (
    CostChange,
    session_costs_change,
    sessions_with_unpriced_events,
    unpriced_calls_by_model,
)
from apps.metrics.folding import session_fold, sessions_fold
from apps.metrics.quarantine import quarantine_release, session_quarantine, without_quarantined

__all__ = [
    "BucketDelta", "CostChange", "buckets_add", "buckets_compact", "pending_sessions", "project_fold_pending",
    "pending_projects_fold_enqueue", "quarantine_release", "session_costs_change", "session_fold",
    "session_quarantine", "sessions_fold", "sessions_with_unpriced_events", "unpriced_calls_by_model",
    "unprocessed_sweep",
]  # fmt: skip

logger = logging.getLogger(__name__)

SWEEP_MIN_AGE = timedelta(seconds=5)  # younger events still have their own task on the way
SWEEP_MAX_SESSIONS = 5000


def pending_projects_fold_enqueue() -> int:
    """Ask a worker to fold every project with events waiting (quarantined ones aside); returns how many."""
    from apps.metrics.dispatch import project_fold_enqueue

    project_ids = list(without_quarantined(PendingEvent.objects.all()).values_list("project_id", flat=True).distinct())
    for project_id in project_ids:
        project_fold_enqueue(project_id=project_id)
    return len(project_ids)


def unprocessed_sweep(*, min_age: timedelta = SWEEP_MIN_AGE) -> int:
    """Fold every session holding events that no task folded (the broker was down, a worker died).

    Each project is folded on its own: an error folding one (a database that fails it, say) is
    logged and the sweep goes on with the others; the next sweep tries it again. Quarantined
    sessions are left alone (apps.metrics.quarantine).
    """
    cutoff = dj_timezone.now() - min_age
    pending = without_quarantined(PendingEvent.objects.filter(received_at__lt=cutoff))
    sessions_by_project: dict[int, list[str]] = defaultdict(list)
    for project_id, session_id in pending.values_list("project_id", "session_id").distinct()[:SWEEP_MAX_SESSIONS]:
        sessions_by_project[project_id].append(session_id)
    folded = 0
    for project_id, session_ids in sorted(sessions_by_project.items()):
        try:
            folded += sessions_fold(project_id=project_id, session_ids=session_ids)
        except Exception:  # noqa: BLE001 - one project's failure must not stop the sweep of the others
            logger.exception("Sweep: folding %d sessions of project %s failed.", len(session_ids), project_id)
    if folded:
        logger.info("Sweep folded %d events of %d sessions.", folded, sum(map(len, sessions_by_project.values())))
    return folded
