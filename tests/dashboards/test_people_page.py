"""Issue 16 "People": /<team>/people/ per developer across the team's projects, in a range kept in the
URL, sortable, linking to each developer's sessions; read from the session aggregates."""
from __future__ import annotations

from datetime import timedelta

import pytest

from apps.accounts.services import project_get_or_create
from tests.conftest import throttle_event, usage_event
from tests.dashboards.conftest import RECENT, at, client_for, ingest

pytestmark = pytest.mark.django_db

ADA = {"user": "ada@example.com", "source": "claude-code", "source_version": "2.0.14"}
ADA_CODEX = {"user": "ada@example.com", "source": "codex"}
BOB = {"user": "bob@example.com", "source": "support-bot"}


@pytest.fixture
def team_usage(project, globex_project):
    """ada in two projects (two agents, three models, a throttle wait, an unpriced model), bob in one,
    a session naming nobody, ada's session of three days ago, and ada in another team."""
    agents = project_get_or_create(team=project.team, slug="agents")
    ingest(project, [
        usage_event(session_id="cc-1", timestamp=at(0), model="gpt-4o", input_tokens=1000, output_tokens=100,
                    attributes=ADA),
        usage_event(session_id="cc-1", timestamp=at(5), model="gpt-4o-mini", input_tokens=3000, output_tokens=300,
                    attributes=ADA),
        throttle_event(session_id="cc-1", timestamp=at(3), wait_ms=2000, attributes=ADA),
        usage_event(session_id="app-1", timestamp=at(1), input_tokens=200, output_tokens=20, attributes=BOB),
        usage_event(session_id="anon", timestamp=at(2), input_tokens=10, output_tokens=1),
        usage_event(session_id="old-1", timestamp=(RECENT - timedelta(days=3)).isoformat(), input_tokens=50_000,
                    output_tokens=5_000, attributes=ADA),
    ])  # fmt: skip
    ingest(agents, [
        usage_event(session_id="cx-1", timestamp=at(9), provider="self-hosted", model="acme-unpriced-llm",
                    input_tokens=500, output_tokens=50, attributes=ADA_CODEX),
    ])  # fmt: skip
    ingest(globex_project, [
        usage_event(session_id="g-1", timestamp=at(4), input_tokens=9999, output_tokens=1, attributes=ADA),
    ])  # fmt: skip
    return project


def people_of(response) -> dict[str, dict]:
    return {row["developer"]: row for row in response.context["people"]}


def test_people_page_sums_each_developer_across_the_teams_projects(team_usage, users):
    response = client_for(users["viewer"]).get("/acme/people/")
    assert response.status_code == 200
    people = people_of(response)
    assert set(people) == {"ada@example.com", "bob@example.com", ""}
    ada = people["ada@example.com"]
    assert (ada["sessions"], ada["calls"], ada["total_tokens"]) == (2, 3, 1100 + 3300 + 550)
    assert (ada["throttle_count"], ada["throttle_wait_ms"]) == (1, 2000)
    assert ada["unpriced_tokens"] == 550 and ada["cost_usd"] > 0
    assert ada["sources"] == ["claude-code", "codex"]
    assert ada["models"] == ["gpt-4o-mini", "gpt-4o", "acme-unpriced-llm"]  # most tokens first
    assert sum(ada["spark"]) == ada["total_tokens"] and ada["spark_step"] == "hour"
    assert (people["bob@example.com"]["sessions"], people["bob@example.com"]["total_tokens"]) == (1, 220)
    assert people[""]["sessions"] == 1
    html = response.content.decode()
    assert "9,999" not in html and "10,000" not in html  # the other team's usage of ada never shows
    assert 'class="sparkline"' in html and "acme-unpriced-llm" in html and "(not named)" in html


def test_the_range_is_kept_in_the_url(team_usage, users):
    client = client_for(users["member"])
    week = client.get("/acme/people/", {"range": "7d"})
    assert week.context["time_range"].key == "7d"
    ada = people_of(week)["ada@example.com"]
    assert (ada["sessions"], ada["total_tokens"]) == (3, 4950 + 55_000)
    assert ada["spark_step"] == "day" and len(ada["spark"]) == 8
    first_day = (RECENT - timedelta(days=3)).date().isoformat()
    custom = client.get("/acme/people/", {"range": "custom", "from": first_day, "to": first_day})
    assert {d: row["total_tokens"] for d, row in people_of(custom).items()} == {"ada@example.com": 55_000}
    html = custom.content.decode()
    # Sorting and the developer links keep the range.
    assert f"range=custom&amp;from={first_day}&amp;to={first_day}&amp;sort=" in html
    assert f"/acme/people/sessions/?range=custom&amp;from={first_day}&amp;to={first_day}&amp;developer=ada%40example.com" in html


@pytest.mark.parametrize(
    ("sort", "order"),
    [("-tokens", ["ada@example.com", "bob@example.com", ""]), ("tokens", ["", "bob@example.com", "ada@example.com"]),
     ("developer", ["", "ada@example.com", "bob@example.com"]), ("-throttle", ["ada@example.com", "", "bob@example.com"]),
     ("-unpriced", ["ada@example.com", "", "bob@example.com"]), ("-sessions", ["ada@example.com", "", "bob@example.com"])],
)  # fmt: skip
def test_the_table_sorts_by_each_column(team_usage, users, sort, order):
    response = client_for(users["viewer"]).get("/acme/people/", {"sort": sort})
    assert [row["developer"] for row in response.context["people"]] == order


def test_a_bad_query_falls_back_to_the_default_range_and_sort(team_usage, users):
    response = client_for(users["viewer"]).get("/acme/people/", {"sort": "password", "range": "1y"})
    assert response.status_code == 200 and response.context["time_range"].key == "24h"
    assert [row["developer"] for row in response.context["people"]][0] == "ada@example.com"  # most cost first


def test_developer_sessions_lists_one_developers_sessions_across_projects(team_usage, users):
    client = client_for(users["viewer"])
    response = client.get("/acme/people/sessions/", {"developer": "ada@example.com"})
    assert response.status_code == 200
    sessions = list(response.context["sessions"])
    assert [(row["project"].slug, row["session_id"]) for row in sessions] == [("agents", "cx-1"), ("chatbot", "cc-1")]
    html = response.content.decode()
    assert "/acme/chatbot/sessions/cc-1/" in html and "/acme/agents/sessions/cx-1/" in html
    assert "g-1" not in html and "old-1" not in html
    week = client.get("/acme/people/sessions/", {"developer": "ada@example.com", "range": "7d", "sort": "-tokens"})
    assert [row["session_id"] for row in week.context["sessions"]] == ["old-1", "cc-1", "cx-1"]
    nobody = client.get("/acme/people/sessions/", {"developer": "carol@example.com"})
    assert list(nobody.context["sessions"]) == [] and "No session of carol@example.com" in nobody.content.decode()


def test_developer_sessions_without_a_developer_goes_to_the_people_page(team_usage, users):
    response = client_for(users["viewer"]).get("/acme/people/sessions/", {"range": "7d"})
    assert response.status_code == 302 and response["Location"] == "/acme/people/?range=7d"


def test_the_project_pages_people_table_links_to_the_people_page(team_usage, users):
    html = client_for(users["viewer"]).get("/acme/chatbot/", {"range": "7d"}).content.decode()
    assert 'href="/acme/people/?range=7d" id="people-page-link"' in html
    assert 'href="/acme/people/sessions/?range=7d&amp;developer=ada%40example.com"' in html
    assert "/acme/people/" in client_for(users["viewer"]).get("/").content.decode()


def test_the_people_pages_of_another_team_are_404(team_usage, outsider):
    client = client_for(outsider)
    assert client.get("/acme/people/").status_code == 404
    assert client.get("/acme/people/sessions/", {"developer": "ada@example.com"}).status_code == 404
    assert client.get("/acme/people/sessions/").status_code == 404
    own = client.get("/globex/people/")
    assert own.status_code == 200 and set(people_of(own)) == {"ada@example.com"}
    assert people_of(own)["ada@example.com"]["total_tokens"] == 10_000
