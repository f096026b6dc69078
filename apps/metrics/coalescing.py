"""One folder per project at a time, so a backlog of small ingest tasks becomes a few big folds.

Every ingest request enqueues a fold task. Folded one by one, each task pays the fixed cost of a
fold (locks, claim, peak reload, upserts) for its ~100 events. Instead a task takes the project's
*lease* and folds every session of the project with pending events, looping until none are left;
a task that finds the lease taken returns at once, because the holder will see its events:

- the events were committed before their task ran (it is enqueued on commit), and that task saw
  the lease taken, i.e. before the holder released it;
- after releasing, the holder looks for pending events once more, and folds again if it finds any.

Ingest requests also skip enqueuing while a task of the project is queued and not yet started
(the *queued mark*), so a busy project puts about one task per fold on the broker instead of one
per request (at 200 requests/s, 200 tasks/s that mostly found nothing to do). A request that sees
the mark committed its events before that task clears the mark, and the task clears it before it
looks for pending events, so the task (or the lease holder it defers to) sees them.

The lease and the mark are only optimisations: folding is exact under any concurrency
(apps.metrics.folding), a lease or mark left by a crash costs at most its TTL of delay, and the
beat sweep folds regardless.
"""
from __future__ import annotations

import logging
import time

from django.core.cache import cache

from apps.ingestion.models import PendingEvent
from apps.metrics.folding import sessions_fold

logger = logging.getLogger(__name__)

LEASE_TTL_S = 120  # longer than any fold within the budget below
FOLD_BUDGET_S = 20.0  # then the lease is handed on, so one busy project cannot hold a worker forever
PENDING_SESSIONS_PER_ROUND = 5000
QUEUED_MARK_TTL_S = 10  # a task lost before it started holds back new enqueues this long at most


def _lease_key(project_id: int) -> str:
    return f"metrics:fold-lease:{project_id}"


def _queued_key(project_id: int) -> str:
    return f"metrics:fold-queued:{project_id}"


def fold_queued_mark(*, project_id: int) -> bool:
    """Mark a fold task of the project as queued; False when one already is (then enqueue nothing).

    Call after the events to fold are committed. A cache that fails answers True: an extra task
    is harmless, a missing one is not.
    """
    try:
        return cache.add(_queued_key(project_id), 1, timeout=QUEUED_MARK_TTL_S)
    except Exception:  # noqa: BLE001 - the cache (Redis) is down: enqueue as if unmarked
        logger.warning("Cache unreachable: enqueuing a fold of project %s without the queued mark.", project_id)
        return True


def fold_queued_clear(*, project_id: int) -> None:
    """Drop the queued mark: its task started, or was never queued because publishing failed."""
    try:
        cache.delete(_queued_key(project_id))
    except Exception:  # noqa: BLE001 - the mark expires on its own
        logger.warning("Cache unreachable: the queued mark of project %s expires on its own.", project_id)


def pending_sessions(*, project_id: int, limit: int = PENDING_SESSIONS_PER_ROUND) -> list[str]:
    """Sessions of the project with events waiting to be folded (read off the pending rows' key)."""
    return list(
        PendingEvent.objects.filter(project_id=project_id)
        .values_list("session_id", flat=True)
        .distinct()[:limit]
    )


def project_fold_pending(*, project_id: int) -> tuple[int, bool]:
    """Fold the project's pending sessions under its lease.

    Returns (events folded, whether pending events remain for another task to continue: the
    budget ran out). Returns (0, False) when another worker holds the lease.
    """
    deadline = time.monotonic() + FOLD_BUDGET_S
    folded = 0
    # Before looking for pending events: a request that still sees the mark has committed its
    # events already, so the search below finds them.
    fold_queued_clear(project_id=project_id)
    while True:
        if not cache.add(_lease_key(project_id), 1, timeout=LEASE_TTL_S):
            return folded, False
        try:
            while (pending := pending_sessions(project_id=project_id)) and time.monotonic() < deadline:
                folded += sessions_fold(project_id=project_id, session_ids=pending)
        finally:
            cache.delete(_lease_key(project_id))
        if not pending_sessions(project_id=project_id, limit=1):
            return folded, False
        if time.monotonic() >= deadline:
            logger.info("Fold budget of project %s spent after %d events; handing on.", project_id, folded)
            return folded, True
