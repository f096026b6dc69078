"""One folder per project at a time, so a backlog of small ingest tasks becomes a few big folds.

Every ingest request enqueues a fold task. Folded one by one, each task pays the fixed cost of a
fold (locks, claim, peak reload, upserts) for its ~100 events. Instead a task takes the project's
*lease* and folds every session of the project with pending events, looping until none are left.
A task that finds the lease taken leaves its events to the holder:

- the events were committed before their task ran (it is enqueued on commit), and that task saw
  the lease taken, i.e. before the holder released it;
- after releasing, the holder looks for pending events once more, and folds again if it finds any.

A holder can die without releasing (a worker killed mid-fold), so the lease is short
(LEASE_TTL_S) and its holder renews it while it folds; its value says when it expires. A task
that finds it taken asks for a fold of the project at that instant (`FoldPass.lease_busy_for_s`,
apps.metrics.dispatch.project_fold_defer), which takes the lease at once if the holder is dead,
or defers again while a live one keeps renewing. One deferred task per project is enough (the
*deferred mark*, which expires when that task is due): it stands for every task that finds the
lease taken meanwhile.

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
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches

from apps.ingestion.models import PendingEvent
from apps.metrics.folding import sessions_fold
from apps.metrics.quarantine import without_quarantined

logger = logging.getLogger(__name__)

# A killed holder delays its project's folds by at most this long. The holder renews the lease
# every LEASE_RENEW_S while it folds, whatever a round takes, so the TTL only has to cover a few
# missed renewals (a stalled process, a slow cache).
LEASE_TTL_S = 15
LEASE_RENEW_S = 5
# A lease past its stated expiry yet still there (its holder's clock is behind) is waited for
# this long at least, so the tasks that find it do not spin through the broker.
LEASE_MIN_WAIT_S = 1.0
FOLD_BUDGET_S = 20.0  # then the lease is handed on, so one busy project cannot hold a worker forever
PENDING_SESSIONS_PER_ROUND = 5000
QUEUED_MARK_TTL_S = 10  # a task lost before it started holds back new enqueues this long at most


@dataclass(frozen=True, slots=True)
class FoldPass:
    """What one task's pass over a project's pending events did."""

    folded: int
    # The budget ran out with events left: another task should continue.
    more: bool = False
    # Another worker held the lease; it expires within this many seconds unless renewed.
    lease_busy_for_s: float | None = None


def _lease_key(project_id: int) -> str:
    return f"metrics:fold-lease:{project_id}"


def _queued_key(project_id: int) -> str:
    return f"metrics:fold-queued:{project_id}"


def _deferred_key(project_id: int) -> str:
    return f"metrics:fold-deferred:{project_id}"


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


def fold_deferred_mark(*, project_id: int, countdown_s: float) -> bool:
    """Mark a fold of the project as deferred for `countdown_s`; False when one already is (then
    defer nothing). The mark expires by the time its task is due, so that task may defer again.
    A cache that fails answers True, as for the queued mark."""
    try:
        return cache.add(_deferred_key(project_id), 1, timeout=max(int(countdown_s), 1))
    except Exception:  # noqa: BLE001 - the cache (Redis) is down: defer as if unmarked
        logger.warning("Cache unreachable: deferring a fold of project %s without the deferred mark.", project_id)
        return True


def fold_deferred_clear(*, project_id: int) -> None:
    """Drop the deferred mark: its task was never scheduled because publishing failed."""
    try:
        cache.delete(_deferred_key(project_id))
    except Exception:  # noqa: BLE001 - the mark expires on its own
        logger.warning("Cache unreachable: the deferred mark of project %s expires on its own.", project_id)


def fold_queued_clear(*, project_id: int) -> None:
    """Drop the queued mark: its task started, or was never queued because publishing failed."""
    try:
        cache.delete(_queued_key(project_id))
    except Exception:  # noqa: BLE001 - the mark expires on its own
        logger.warning("Cache unreachable: the queued mark of project %s expires on its own.", project_id)


def pending_sessions(*, project_id: int, limit: int = PENDING_SESSIONS_PER_ROUND) -> list[str]:
    """Sessions of the project with events waiting to be folded (read off the pending rows' key),
    quarantined ones left out."""
    return list(
        without_quarantined(PendingEvent.objects.filter(project_id=project_id), project_id=project_id)
        .values_list("session_id", flat=True)
        .distinct()[:limit]
    )


def project_fold_pending(*, project_id: int) -> FoldPass:
    """Fold the project's pending sessions under its lease.

    Returns how many events were folded, whether pending events remain for another task to
    continue (the budget ran out), and, when another worker holds the lease, how soon it expires.
    Cache errors are raised (the task retries).
    """
    deadline = time.monotonic() + FOLD_BUDGET_S
    folded = 0
    # Before looking for pending events: a request that still sees the mark has committed its
    # events already, so the search below finds them.
    fold_queued_clear(project_id=project_id)
    while True:
        lease = _lease_take(project_id)
        if isinstance(lease, float):
            return FoldPass(folded, lease_busy_for_s=lease)
        with _lease_kept(project_id, lease):
            while (pending := pending_sessions(project_id=project_id)) and time.monotonic() < deadline:
                folded += sessions_fold(project_id=project_id, session_ids=pending)
        if not pending_sessions(project_id=project_id, limit=1):
            return FoldPass(folded)
        if time.monotonic() >= deadline:
            logger.info("Fold budget of project %s spent after %d events; handing on.", project_id, folded)
            return FoldPass(folded, more=True)


def _lease_take(project_id: int) -> str | float:
    """Take the project's lease: its token, or, held by another worker, the seconds until it expires."""
    key = _lease_key(project_id)
    token = uuid.uuid4().hex
    for _ in range(3):
        if cache.add(key, (token, time.time() + LEASE_TTL_S), timeout=LEASE_TTL_S):
            return token
        held = cache.get(key)
        if held is None:
            continue  # expired between the two calls: take it now
        # Another host's clock, or a value of an older release, may say otherwise: the lease
        # expires within its TTL from now whatever it says.
        expires_at = held[1] if _is_lease(held) else time.time() + LEASE_TTL_S
        return float(min(max(expires_at - time.time(), LEASE_MIN_WAIT_S), LEASE_TTL_S))
    return float(LEASE_TTL_S)


def _is_lease(held, token: str | None = None) -> bool:
    """Whether a cached value is a lease (token, expiry epoch), and this token's if one is given."""
    return isinstance(held, tuple) and len(held) == 2 and (token is None or held[0] == token)


@contextmanager
def _lease_kept(project_id: int, token: str):
    """Renew the lease while the block runs, on a thread of its own (a round of the fold can
    outlast the TTL), then release it if it is still this holder's."""
    key = _lease_key(project_id)
    lease_cache = caches[DEFAULT_CACHE_ALIAS]  # this thread's cache object, shared with the renewer
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LEASE_RENEW_S):
            try:
                held = lease_cache.get(key)
                if held is not None and not _is_lease(held, token):
                    logger.warning("The fold lease of project %s expired and was taken over.", project_id)
                    return
                lease_cache.set(key, (token, time.time() + LEASE_TTL_S), timeout=LEASE_TTL_S)
            except Exception:  # noqa: BLE001 - an unrenewed lease expires: other folds start, still exact
                logger.warning("Cache unreachable: the fold lease of project %s was not renewed.", project_id)

    renewer = threading.Thread(target=renew, name=f"fold-lease-{project_id}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        held = lease_cache.get(key)
        if _is_lease(held, token):
            lease_cache.delete(key)
