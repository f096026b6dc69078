"""Budget fixtures: events folded into aggregates at chosen instants, and budgets on them."""
from __future__ import annotations

import json
import uuid
from datetime import datetime

import pytest

from apps.accounts.services import project_get_or_create
from apps.ingestion.services import events_ingest
from apps.metrics.services import sessions_fold
from tests.conftest import usage_event

# gpt-4o costs $2.50 per million input tokens (litellm's bundled map): one of these calls is $2.50.
DOLLARS_2_50 = {"provider": "openai", "model": "gpt-4o", "input_tokens": 1_000_000, "output_tokens": 0}


def spend(project, at: datetime, *, calls: int = 1, session_id: str | None = None, **overrides) -> None:
    """Ingest `calls` usage events at `at` (each $2.50 of gpt-4o unless overridden) and fold them now:
    the on-commit fold does not run inside a test transaction."""
    session_id = session_id or f"s-{uuid.uuid4().hex[:8]}"
    events = [
        usage_event(**{**DOLLARS_2_50, "session_id": session_id, "timestamp": at.isoformat(), "duration_ms": 100,
                       **overrides})
        for _ in range(calls)
    ]  # fmt: skip
    result = events_ingest(project=project, body=json.dumps({"events": events}).encode())
    assert not result.rejected, result.as_dict()
    sessions_fold(project_id=project.pk, session_ids=[session_id])


@pytest.fixture
def second_project(team):
    return project_get_or_create(team=team, slug="search")


@pytest.fixture
def receiver():
    from tests.budgets.receivers import WebhookReceiver

    started = WebhookReceiver().start()
    yield started
    started.stop()


@pytest.fixture
def smtp_server(settings):
    from tests.budgets.receivers import SmtpServer

    server = SmtpServer().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def evaluation_marks_cleared():
    """The after-fold throttle marks live in the cache, which outlives a test."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()
