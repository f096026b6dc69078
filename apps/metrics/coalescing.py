"""One folder per project at a time, so a backlog of small ingest tasks becomes a few big folds.

Every ingest request enqueues a fold task. Folded one by one, each task pays the fixed cost of a
fold (locks, claim, peak reload, upserts) for its ~100 events. Instead a task takes the project's
*lease* and folds every session of the project with pending events, looping until none are left;
a task that finds the lease taken returns at once, because the holder will see its events:

- the events were committed before their task ran (it is enqueued on commit), and that task saw
  the lease taken, i.e. before the holder released it;
- after releasing, the holder looks for pending events once more, and folds again if it finds any.

The lease is only an optimisation: folding is exact under any concurrency (apps.metrics.folding),
so a lease lost to a crash costs at most its TTL of delay, and the beat sweep folds regardless.
"""
from __future__ import annotations

import logging
import time

from django.core.cache import cache

from apps.ingestion.models import RawEvent
from apps.metrics.folding import sessions_fold

logger = logging.getLogger(__name__)

LEASE_TTL_S = 120  # longer than any fold within the budget below
FOLD_BUDGET_S = 20.0  # then the lease is handed on, so one busy project cannot hold a worker forever
PENDING_SESSIONS_PER_ROUND = 5000


def _lease_key(project_id: int) -> str:
    return f"metrics:fold-lease:{project_id}"


def pending_sessions(*, project_id: int, limit: int = PENDING_SESSIONS_PER_ROUND) -> list[str]:
    """Sessions of the project with unprocessed events (the partial index makes this cheap)."""
    return list(
        RawEvent.objects.filter(project_id=project_id, processed_at__isnull=True)
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
