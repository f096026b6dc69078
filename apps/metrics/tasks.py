"""Celery tasks: thin adapters that take ids and call apps.metrics.services."""
from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError

from apps.metrics import services


@shared_task(
    bind=True,
    autoretry_for=(DatabaseError,),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=8,
)
def project_fold(self, project_id: int) -> int:
    """Fold the project's pending events into aggregates (coalesced per project); returns events folded."""
    folded, more = services.project_fold_pending(project_id=project_id)
    if more:
        project_fold.delay(project_id)
    return folded


@shared_task
def unprocessed_sweep() -> int:
    """Fold every session with events no task folded (broker down, worker lost)."""
    return services.unprocessed_sweep()


@shared_task
def buckets_compact() -> int:
    """Roll minute buckets older than the retention window into hourly ones."""
    return services.buckets_compact()
