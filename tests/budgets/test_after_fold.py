"""Evaluation after folds: with no beat (`make run`), ingesting events that cross a threshold
sends the alert within seconds, and a crossing inside the throttle window is not left behind."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from apps.budgets import triggers
from apps.budgets.models import BudgetAlert
from apps.budgets.services import budget_create
from tests.budgets.conftest import DOLLARS_2_50
from tests.conftest import post_events, usage_event

pytestmark = pytest.mark.django_db(transaction=True)


def calls(count: int, session_id: str) -> list[dict]:
    at = (datetime.now(timezone.utc) - timedelta(seconds=5)).isoformat()
    return [usage_event(**DOLLARS_2_50, session_id=session_id, timestamp=at, duration_ms=100) for _ in range(count)]


def test_ingested_spend_alerts_without_beat_and_a_crossing_inside_the_window_follows(
    api_client, team, project, ingest_key, receiver, monkeypatch
):
    monkeypatch.setattr(triggers, "EVALUATE_EVERY_S", 1)
    budget_create(team=team, project=project, period="month", amount_usd="10", webhook_url=receiver.url,
                  forecast_warning=False)  # fmt: skip
    assert post_events(api_client, ingest_key, calls(2, "first")).status_code == 202  # $5: 50 %
    assert receiver.wait_for(1, timeout_s=15), "no alert after the fold"
    # Inside the throttle window: the evaluation at the window's end sends these.
    assert post_events(api_client, ingest_key, calls(2, "second")).status_code == 202  # $10: 80 % and 100 %
    assert receiver.wait_for(3, timeout_s=15), "the crossing inside the window was not evaluated"
    assert sorted(r.document["alert"]["threshold"] for r in receiver.requests) == [50, 80, 100]
    assert BudgetAlert.objects.count() == 3


def test_a_project_without_budgets_is_not_evaluated(api_client, project, ingest_key):
    from django.core.cache import cache

    assert post_events(api_client, ingest_key, calls(1, "lonely")).status_code == 202
    # Neither evaluated nor queued for the end of a window: the fold's only cost was one lookup.
    assert cache.get(triggers._evaluated_key(project.pk)) is None
    assert cache.get(triggers._trailing_key(project.pk)) is None
