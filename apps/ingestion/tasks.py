"""Celery tasks of the ingestion app: thin adapters over its services."""
from __future__ import annotations

from celery import shared_task

from apps.ingestion.retention import raw_events_prune as prune


@shared_task
def raw_events_prune() -> int:
    """Delete folded raw events past their project's retention (and create the coming months'
    partitions); returns how many."""
    return prune()
