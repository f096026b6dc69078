"""Issue 13's "Where it shows": the source and developer of each session on the project and session
pages and in the metadata document, filters by both, and the people table."""
from __future__ import annotations

import pytest

from apps.metrics.selectors import session_metadata
from tests.conftest import throttle_event, usage_event
from tests.dashboards.conftest import at, client_for, ingest
from tests.dashboards.test_pages import metrics_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def agents_project(project):
    claude = {"user": "ada@example.com", "source": "claude-code", "source_version": "2.0.14"}
    app = {"user": "bob@example.com", "source": "support-bot"}
    ingest(project, [
        usage_event(session_id="cc-1", timestamp=at(0), input_tokens=1000, output_tokens=100, attributes=claude),
        usage_event(session_id="cc-1", timestamp=at(5), input_tokens=3000, output_tokens=300, attributes=claude),
        throttle_event(session_id="cc-1", timestamp=at(3), wait_ms=2000, attributes=claude),
        usage_event(session_id="cc-2", timestamp=at(9), input_tokens=500, output_tokens=50, attributes=claude),
        usage_event(session_id="app-1", timestamp=at(1), input_tokens=200, output_tokens=20, attributes=app),
        usage_event(session_id="anon", timestamp=at(2), input_tokens=10, output_tokens=1),
    ])  # fmt: skip
    return project


def test_metadata_and_session_page_name_the_source_and_developer(agents_project, users):
    document = session_metadata(project=agents_project, session_id="cc-1")
    assert document["developer"] == "ada@example.com"
    assert document["source"] == {"name": "claude-code", "version": "2.0.14"}
    assert session_metadata(project=agents_project, session_id="anon")["source"] is None
    shown = metrics_of(client_for(users["viewer"]).get("/acme/chatbot/sessions/cc-1/").content)
    assert shown["source"]["text"].split() == ["claude-code", "2.0.14"]
    assert shown["developer"]["text"] == "ada@example.com"


def test_people_table_sums_each_developers_sessions(agents_project, users):
    response = client_for(users["viewer"]).get("/acme/chatbot/")
    people = {row["developer"]: row for row in response.context["people"]}
    ada = people["ada@example.com"]
    assert (ada["sessions"], ada["calls"], ada["total_tokens"], ada["throttle_wait_ms"]) == (2, 3, 4950, 2000)
    assert (people["bob@example.com"]["sessions"], people["bob@example.com"]["total_tokens"]) == (1, 220)
    assert people[""]["sessions"] == 1
    assert b'id="people"' in response.content and b"ada@example.com" in response.content


def test_sessions_table_filters_by_developer_and_by_source(agents_project, users):
    client = client_for(users["viewer"])
    by_developer = client.get("/acme/chatbot/", {"developer": "ada@example.com"}).context["sessions"]
    assert sorted(row["session_id"] for row in by_developer) == ["cc-1", "cc-2"]
    by_source = client.get("/acme/chatbot/", {"source": "support-bot"}).context["sessions"]
    assert [row["session_id"] for row in by_source] == ["app-1"]
    assert [(row["source"], row["developer"]) for row in by_source] == [
        ({"name": "support-bot", "version": None}, "bob@example.com")]
    both = client.get("/acme/chatbot/", {"source": "support-bot", "developer": "ada@example.com"})
    assert list(both.context["sessions"]) == [] and "No session matches these filters." in both.content.decode()
    assert client.get("/acme/chatbot/").context["sources"] == ["claude-code", "support-bot"]
