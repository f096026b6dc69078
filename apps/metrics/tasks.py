"""Celery tasks: thin adapters that take ids and call apps.metrics.services."""
from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready
from django.db import DatabaseError
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from apps.metrics import services
from apps.metrics.dispatch import project_fold_defer


@shared_task(
    bind=True,
    # The database, the cache holding the lease (Redis) or the broker failing mid-task: all pass.
    autoretry_for=(DatabaseError, RedisError, BrokerError),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=8,
)
def project_fold(self, project_id: int) -> int:
    """Fold the project's pending events into aggregates (coalesced per project); returns events folded."""
    fold = services.project_fold_pending(project_id=project_id)
    if fold.more:
        project_fold.delay(project_id)
    elif fold.lease_busy_for_s is not None and not self.request.is_eager:
        # The holder may have died mid-fold: look again when its lease expires. In-process
        # (eager) folding has no such worry, the holder is a thread of this very process, and a
        # deferred eager task would run at once, find the lease still taken, and defer again.
        project_fold_defer(project_id=project_id, countdown_s=fold.lease_busy_for_s)
    return fold.folded


@shared_task
def unprocessed_sweep() -> int:
    """Fold every session with events no task folded (broker down, worker lost)."""
    return services.unprocessed_sweep()


@shared_task
def pending_projects_fold() -> int:
    """Ask for a fold of every project with events waiting; returns how many projects."""
    return services.pending_projects_fold_enqueue()


@shared_task
def buckets_compact() -> int:
    """Roll minute buckets older than the retention window into hourly ones."""
    return services.buckets_compact()


@worker_ready.connect
def _fold_leftovers_on_start(**kwargs) -> None:
    # A worker that died mid-fold took its task along (unacknowledged, it comes back only after
    # the broker's visibility timeout): a starting worker asks for folds of whatever waits, so a
    # backlog folds once the dead worker's lease expires even with no new event and no beat.
    pending_projects_fold.delay()
