"""Celery task: a thin adapter over apps.digests.services, run hourly by beat (tokensite/schedule.py)."""
from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from apps.digests import services


@shared_task
def digests_send() -> int:
    """Send the digests that are due; returns how many mails went out."""
    return len(services.digests_send(now=timezone.now()).sent)
