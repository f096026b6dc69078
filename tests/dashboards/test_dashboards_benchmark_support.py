"""benchmarks/dashboards.py's bulk data must be stored as ingestion stores it: keyed, and folded (no pending rows)."""
from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.ingestion.models import PendingEvent, RawEvent, RawEventKey
from apps.metrics.models import SessionAggregate
from benchmarks.dashboards import _bulk_sessions
from tests.conftest import post_events, usage_event

pytestmark = pytest.mark.django_db


def test_bulk_sessions_events_are_keyed_so_a_resend_is_a_duplicate(api_client, ingest_key, project):
    made = _bulk_sessions(project, sessions=3, events_per_session=4, since=timezone.now() - timedelta(days=1),
                          rng=random.Random(2))  # fmt: skip
    assert made == RawEvent.objects.filter(project=project).count() == 12
    event_ids = set(RawEvent.objects.filter(project=project).values_list("event_id", flat=True))
    assert set(RawEventKey.objects.filter(project=project).values_list("event_id", flat=True)) == event_ids
    assert not PendingEvent.objects.filter(project=project).exists()
    assert SessionAggregate.objects.filter(project=project).count() == 3
    resent = usage_event(event_id=str(min(event_ids)), session_id="bulk-00000")
    assert post_events(api_client, ingest_key, [resent]).json() == {"accepted": 0, "duplicates": 1, "rejected": []}
    assert RawEvent.objects.filter(project=project).count() == 12
