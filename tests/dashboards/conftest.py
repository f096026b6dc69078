"""Dashboard fixtures: members of every role, another team, and events folded into aggregates."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from django.test import Client

from apps.accounts.services import member_add, project_get_or_create, team_get_or_create
from apps.ingestion.services import events_ingest
from apps.metrics.services import sessions_fold
from tests.conftest import throttle_event, usage_event

PASSWORD = "pw-dashboards-123"
# Recent enough for the default 24 h range of the project page.
RECENT = (datetime.now(timezone.utc) - timedelta(minutes=20)).replace(microsecond=0)


def ingest(project, events: list[dict]) -> None:
    """Ingest through the real service, then fold now: the on-commit fold does not run inside a test
    transaction (or goes to Redis when REDIS_URL is set); folding is idempotent either way."""
    result = events_ingest(project=project, body=json.dumps({"events": events}).encode())
    assert not result.rejected, result.as_dict()
    sessions_fold(project_id=project.pk, session_ids=sorted({event["session_id"] for event in events}))


def at(seconds: float) -> str:
    return (RECENT + timedelta(seconds=seconds)).isoformat()


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def users(team):
    return {
        role: member_add(team=team, username=f"{role}-user", password=PASSWORD, role=role).user
        for role in ("owner", "admin", "member", "viewer")
    }


@pytest.fixture
def outsider(db):
    """A member (owner even) of another team: must see nothing of acme."""
    globex = team_get_or_create(slug="globex")
    return member_add(team=globex, username="mallory", password=PASSWORD, role="owner").user


@pytest.fixture
def globex_project(outsider):
    from apps.accounts.models import Team

    return project_get_or_create(team=Team.objects.get(slug="globex"), slug="secret-project")


@pytest.fixture
def session_events() -> list[dict]:
    """One session: two steps, two concurrent calls, a throttle wait linked by call_id, an unpriced model."""
    return [
        usage_event(session_id="s-1", step="plan", model="gpt-4o", timestamp=at(0), duration_ms=2000,
                    input_tokens=1250, output_tokens=875, cache_read_tokens=250, attributes={"user": "alice"}),
        usage_event(session_id="s-1", step="plan", model="gpt-4o", timestamp=at(0.5), duration_ms=1000,
                    input_tokens=2000, output_tokens=500),
        throttle_event(session_id="s-1", step="draft", model="gpt-4o-mini", timestamp=at(3), wait_ms=1500,
                       call_id="call-9"),
        usage_event(session_id="s-1", step="draft", model="gpt-4o-mini", timestamp=at(4.5), duration_ms=1500,
                    time_to_first_token_ms=500, input_tokens=52000, output_tokens=1980, thought_tokens=0, call_id="call-9"),
        usage_event(session_id="s-1", step="review", model="acme-unpriced-llm", provider="self-hosted",
                    timestamp=at(7), duration_ms=800, input_tokens=300, output_tokens=100),
    ]  # fmt: skip


@pytest.fixture
def folded(project, session_events):
    ingest(project, session_events)
    return project
