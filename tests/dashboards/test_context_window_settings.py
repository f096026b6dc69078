"""The settings page's context window overrides: owners and admins set and remove them, members and
viewers only read, and calls stored afterwards are measured against the new window."""
from __future__ import annotations

import pytest

from apps.ingestion.models import RawEvent
from apps.pricing.models import ContextWindowOverride
from tests.conftest import usage_event
from tests.dashboards.conftest import at, client_for, ingest

pytestmark = pytest.mark.django_db

URL = "/acme/chatbot/settings/"


def test_admin_sets_a_window_that_measures_later_calls_and_removes_it(project, users):
    client = client_for(users["admin"])
    response = client.post(URL, {"action": "context_window", "model": "gpt-4o", "max_input_tokens": "64000"})
    assert response.status_code == 302
    ingest(project, [usage_event(session_id="s", model="gpt-4o", input_tokens=48_000, timestamp=at(0))])
    assert RawEvent.objects.get().context_share == 0.75
    html = client.get(URL).content.decode()
    row = html[html.index('data-context-override="gpt-4o"') :].split("</tr>")[0]
    assert "64,000" in row and "128,000" in row  # the override beside litellm's window

    response = client.post(URL, {"action": "context_window", "model": "gpt-4o", "remove": "on"})
    assert response.status_code == 302 and not ContextWindowOverride.objects.exists()


@pytest.mark.parametrize("data", [
    {"action": "context_window", "model": "gpt-4o", "max_input_tokens": "0"},
    {"action": "context_window", "model": "gpt-4o"},
    {"action": "context_window", "model": "", "max_input_tokens": "1000"},
])  # fmt: skip
def test_a_window_that_is_not_a_positive_token_count_is_refused(project, users, data):
    response = client_for(users["owner"]).post(URL, data)
    assert response.status_code == 400
    assert not ContextWindowOverride.objects.exists()


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_members_and_viewers_cannot_set_a_window(project, users, role):
    response = client_for(users[role]).post(URL, {"action": "context_window", "model": "m", "max_input_tokens": "8"})
    assert response.status_code == 403
    assert not ContextWindowOverride.objects.exists()
