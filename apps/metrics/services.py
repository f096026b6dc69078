"""Metrics services: folding raw events into aggregates, exact, idempotent and safe under concurrent workers.

The work lives in small modules, re-exported here as the app's one service interface:
- apps.metrics.folding: the batch fold (many sessions per transaction; see its docstring for
  the locking and claiming that keep it exact);
- apps.metrics.buckets: atomic additions to time buckets and their compaction;
- apps.metrics.costs and apps.metrics.repricing: re-pricing stored events, aggregates following;
- apps.metrics.coalescing: one folder per project at a time, so backlogs fold in big batches;
- apps.metrics.background: without a broker, folding on a thread of the server process;
- apps.metrics.quarantine: sessions the fold cannot fold, set aside so they block nothing.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta

from django.utils import timezone as dj_timezone

from apps.ingestion.models import PendingEvent
from apps.metrics.background import background_fold_drain
from apps.metrics.buckets import buckets_compact
from apps.metrics.coalescing import project_fold_pending
from apps.metrics.folding import sessions_fold
from apps.metrics.models import SessionAggregate
from apps.metrics.quarantine import quarantine_release, without_quarantined
from apps.metrics.repricing import events_reprice, unpriced_events_reprice

__all__ = [
    "background_fold_drain", "buckets_compact", "events_reprice", "fold_pending_now", "pending_projects_fold_enqueue",
    "project_fold_pending", "quarantine_release", "sessions_fold", "sessions_history_pruned", "unpriced_events_reprice",
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


def fold_pending_now() -> int:
    """Fold every queued event now, on the caller's thread (quarantined sessions aside); returns how many.

    For commands and tests that need folded results at once (`seed_demo`), whatever folds in the
    background meanwhile: folding is exact under any concurrency, the lease is only an optimisation.
    Stops when a round folds nothing, so a project whose fold keeps failing cannot hold it forever.
    """
    folded = 0
    while round_folded := unprocessed_sweep(min_age=timedelta(0)):
        folded += round_folded
    return folded


def sessions_history_pruned(*, project_id: int, pruned_through: dict[str, datetime]) -> None:
    """Record that raw events of these sessions ending at or before the given instants are being
    deleted (apps.ingestion.retention). Call inside the deleting transaction: the session rows
    are locked in the order a fold locks them, so no fold reads half a deletion."""
    sessions = (
        SessionAggregate.objects.select_for_update()
        .filter(project_id=project_id, session_id__in=list(pruned_through))
        .order_by("id")
        .only("id", "session_id", "raw_pruned_through")
    )
    changed = []
    for session in sessions:
        through = pruned_through[session.session_id]
        if session.raw_pruned_through is None or session.raw_pruned_through < through:
            session.raw_pruned_through = through
            changed.append(session)
    SessionAggregate.objects.bulk_update(changed, ["raw_pruned_through"])
