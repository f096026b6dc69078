"""Shared fixtures: teams, projects, keys, an API client, and event builders."""
from __future__ import annotations

import gzip
import json
import os
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from django.db import connection
from hypothesis import settings as hypothesis_settings
from rest_framework.test import APIClient

from apps.accounts.models import ApiKey
from apps.accounts.services import api_key_create, member_add, project_get_or_create, team_get_or_create

BASE_TIME = datetime(2026, 11, 20, 9, 0, 0, tzinfo=timezone.utc)

# Property tests run at the example counts they name under `make test` and in CI; `make test-fast`
# sets HYPOTHESIS_PROFILE=fast, which runs a tenth of them (and of Hypothesis's default 100).
FAST_LANE = os.environ.get("HYPOTHESIS_PROFILE") == "fast"
hypothesis_settings.register_profile("fast", max_examples=10)
hypothesis_settings.load_profile("fast" if FAST_LANE else "default")


def property_examples(count: int) -> int:
    """A property test's max_examples: `count`, or a tenth of it (at least 10) in the fast lane."""
    return max(10, count // 10) if FAST_LANE else count


@pytest.fixture
def team(db):
    return team_get_or_create(slug="acme")


@pytest.fixture
def project(team):
    return project_get_or_create(team=team, slug="chatbot")


@pytest.fixture
def ingest_key(project) -> str:
    return api_key_create(project=project, scope=ApiKey.Scope.INGEST).plaintext


@pytest.fixture
def read_key(project) -> str:
    return api_key_create(project=project, scope=ApiKey.Scope.READ).plaintext


@pytest.fixture
def other_team_project(db):
    other = team_get_or_create(slug="globex")
    return project_get_or_create(team=other, slug="chatbot")


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def owner(team):
    return member_add(team=team, username="olivia", password="pw-olivia-123", role="owner").user


def usage_event(**overrides) -> dict:
    """A valid usage event; override any field."""
    event = {
        "event_id": str(uuid.uuid4()),
        "type": "usage",
        "session_id": "session-1",
        "step": "persona_generation",
        "provider": "openai",
        "model": "gpt-4o",
        "timestamp": BASE_TIME.isoformat(),
        "duration_ms": 2000,
        "input_tokens": 1250,
        "output_tokens": 875,
    }
    event.update(overrides)
    return event


def throttle_event(**overrides) -> dict:
    event = {
        "event_id": str(uuid.uuid4()),
        "type": "throttle",
        "session_id": "session-1",
        "step": "persona_generation",
        "provider": "openai",
        "model": "gpt-4o",
        "timestamp": (BASE_TIME - timedelta(seconds=3)).isoformat(),
        "wait_ms": 2500,
        "status_code": 429,
        "attempt": 1,
    }
    event.update(overrides)
    return event


def post_events(client: APIClient, key: str | None, events: list[dict] | None = None, *, body=None, gzip_body=False,
                content_type="application/json", headers: dict | None = None):
    """POST /api/v1/events with a key, JSON-encoding `events` unless a raw `body` is given."""
    data = body if body is not None else json.dumps({"events": events}).encode()
    extra = dict(headers or {})
    if key is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    if gzip_body:
        data = gzip.compress(data)
        extra["HTTP_CONTENT_ENCODING"] = "gzip"
    return client.generic("POST", "/api/v1/events", data, content_type=content_type, **extra)


def events_unfold(project=None) -> None:
    """Put stored events back on the fold's queue (aggregates untouched), as if no task had folded them."""
    from apps.ingestion.models import PendingEvent, RawEvent

    events = RawEvent.objects.all() if project is None else RawEvent.objects.filter(project=project)
    PendingEvent.objects.bulk_create(
        [PendingEvent(project_id=project_id, session_id=session_id, raw_event_id=event_pk, received_at=received_at)
         for event_pk, project_id, session_id, received_at in events.values_list("id", "project_id", "session_id",
                                                                                 "received_at")],
        ignore_conflicts=True,
    )  # fmt: skip


def pending_count(**filters) -> int:
    from apps.ingestion.models import PendingEvent

    return PendingEvent.objects.filter(**filters).count()


def is_postgres() -> bool:
    return connection.vendor == "postgresql"



@pytest.fixture(autouse=True)
def outages_forgotten():
    """Fallback counters, pauses and log throttles (apps.core.outages) are per process: each test
    starts with none, so a broker a previous test killed is not still skipped."""
    from apps.core.outages import OUTAGES

    for outage in OUTAGES.values():
        outage.reset()


def pytest_collection_modifyitems(config, items):
    # Tests marked `postgres` need PostgreSQL's concurrency; on SQLite they are skipped with a reason.
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL; .ci/run does)")
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)
