"""Celery tasks: thin adapters over apps.budgets.alerts."""
from __future__ import annotations

from celery import shared_task
from django.db import DatabaseError

from apps.budgets.alerts import budgets_evaluate


@shared_task(autoretry_for=(DatabaseError,), retry_backoff=True, retry_backoff_max=30, max_retries=3)
def budgets_evaluate_all() -> int:
    """Evaluate every budget and send due deliveries; returns alerts claimed."""
    return budgets_evaluate().alerts


@shared_task(autoretry_for=(DatabaseError,), retry_backoff=True, retry_backoff_max=30, max_retries=3)
def project_budgets_evaluate(project_id: int) -> int:
    """Evaluate the budgets covering one project (after its fold); returns alerts claimed."""
    return budgets_evaluate(project_id=project_id).alerts
