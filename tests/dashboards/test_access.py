"""Tenant scoping: who gets which status on every team URL."""
from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, get_resolver

from apps.dashboards.views import TeamScopedMixin
from tests.dashboards.conftest import client_for

pytestmark = pytest.mark.django_db

TEAM_URLS = [
    "/acme/chatbot/",
    "/acme/chatbot/?range=7d",
    "/acme/chatbot/live.json",
    "/acme/chatbot/settings/",
    "/acme/chatbot/sessions/s-1/",
    "/acme/chatbot/sessions/s-1/metadata.json",
    "/acme/chatbot/sessions/s-1/calls.csv",
    "/acme/people/",
    "/acme/people/?range=7d&sort=tokens",
    "/acme/people/sessions/?developer=alice",
    "/acme/digest/",
    "/acme/digest/?period=weekly&start=2026-11-23",
    "/acme/budgets/",
    "/acme/budgets/alerts/",
]


def test_every_team_url_is_served_by_a_team_scoped_view():
    team_patterns = [p for p in get_resolver().url_patterns if isinstance(p, URLPattern)]
    for include in get_resolver().url_patterns:
        team_patterns += [p for p in getattr(include, "url_patterns", []) if isinstance(p, URLPattern)]
    scoped = [p for p in team_patterns if "team_slug" in p.pattern.converters]
    assert len(scoped) == 12
    for pattern in scoped:
        assert issubclass(pattern.callback.view_class, TeamScopedMixin), pattern


@pytest.mark.parametrize("url", TEAM_URLS)
def test_anonymous_visitor_is_sent_to_login(client, folded, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("url", TEAM_URLS)
def test_member_of_another_team_gets_404_not_403(folded, outsider, url):
    response = client_for(outsider).get(url)
    assert response.status_code == 404
    assert b"s-1" not in response.content and b"chatbot" not in response.content


@pytest.mark.parametrize("url", TEAM_URLS)
def test_unknown_team_looks_exactly_like_a_foreign_team(folded, outsider, url):
    foreign = client_for(outsider).get(url)
    unknown = client_for(outsider).get(url.replace("/acme/", "/no-such-team/"))
    assert foreign.status_code == unknown.status_code == 404
    assert _without_csrf(foreign.content) == _without_csrf(unknown.content)


def _without_csrf(html: bytes) -> bytes:
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", html)


def test_settings_post_from_a_non_member_is_404(folded, outsider):
    response = client_for(outsider).post("/acme/chatbot/settings/", {"action": "key_create", "name": "x", "scope": "read"})
    assert response.status_code == 404


@pytest.mark.parametrize(
    "url_template",
    ["/acme/{slug}/", "/acme/{slug}/live.json", "/acme/{slug}/settings/", "/acme/{slug}/sessions/s-1/",
     "/acme/{slug}/sessions/s-1/metadata.json", "/acme/{slug}/sessions/s-1/calls.csv"],
)  # fmt: skip
def test_another_teams_project_is_not_reachable_through_my_team(folded, users, globex_project, url_template):
    # globex's project slug under acme's URL: the project lookup is scoped to acme, so 404.
    response = client_for(users["owner"]).get(url_template.format(slug=globex_project.slug))
    assert response.status_code == 404


def test_another_teams_session_is_not_reachable_through_my_project(folded, users, globex_project):
    from tests.dashboards.conftest import ingest
    from tests.conftest import usage_event

    ingest(globex_project, [usage_event(session_id="globex-only")])
    client = client_for(users["viewer"])
    for suffix in ("", "metadata.json", "calls.csv"):
        assert client.get(f"/acme/chatbot/sessions/globex-only/{suffix}").status_code == 404
    assert client.get(f"/globex/{globex_project.slug}/sessions/globex-only/").status_code == 404


@pytest.mark.parametrize("role", ["owner", "admin", "member", "viewer"])
@pytest.mark.parametrize("url", TEAM_URLS)
def test_every_role_reads_every_page(folded, users, role, url):
    assert client_for(users[role]).get(url).status_code == 200


def test_unknown_session_is_404_on_page_and_downloads(folded, users):
    client = client_for(users["viewer"])
    for suffix in ("", "metadata.json", "calls.csv"):
        assert client.get(f"/acme/chatbot/sessions/nope/{suffix}").status_code == 404


def test_team_overview_lists_only_my_teams(folded, users, globex_project):
    response = client_for(users["member"]).get("/")
    assert response.status_code == 200
    assert b"/acme/chatbot/" in response.content
    assert b"globex" not in response.content and b"secret-project" not in response.content


def test_overview_needs_login(client):
    assert client.get("/").status_code == 302
