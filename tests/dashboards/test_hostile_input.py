"""No query string or session id makes a dashboard page fail: bad input is a 4xx or a clean page."""
from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import property_examples
from tests.dashboards.conftest import client_for

pytestmark = pytest.mark.django_db

HOSTILE = settings(
    max_examples=property_examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
dates = st.dates().map(str) | st.sampled_from(["0001-01-01", "9999-12-31", "2026-02-30", "-1", "", "today"])
query_values = st.text(max_size=40) | dates | st.integers(-(10**20), 10**20).map(str)
queries = st.dictionaries(st.sampled_from(["range", "from", "to", "q", "sort", "page"]), query_values, max_size=6)


@HOSTILE
@given(query=queries)
def test_project_page_never_500(folded, users, team, query):
    client = client_for(users["viewer"])
    for suffix in ("", "live.json"):
        response = client.get(f"/{team.slug}/{folded.slug}/{suffix}", query)
        assert response.status_code in (200, 400), (query, response.status_code)


@HOSTILE
@given(session_id=st.text(min_size=1, max_size=60))
def test_session_pages_never_500(folded, users, team, session_id):
    client = client_for(users["viewer"])
    base = f"/{team.slug}/{folded.slug}/sessions/{quote(session_id, safe='')}/"
    for url in (base, base + "metadata.json", base + "calls.csv"):
        assert client.get(url).status_code in (200, 301, 400, 404), url


@pytest.mark.parametrize("query", [
    {"range": "custom", "from": "9999-12-30", "to": "9999-12-31"},
    {"range": "custom", "from": "0001-01-01"},
    {"range": "custom", "from": "0001-01-01", "to": "0001-01-02"},
])
def test_custom_ranges_at_the_calendars_edges_render(folded, users, team, query):
    response = client_for(users["viewer"]).get(f"/{team.slug}/{folded.slug}/", query)
    assert response.status_code == 200


settings_fields = st.fixed_dictionaries({}, optional={
    "name": query_values, "scope": st.sampled_from(["ingest", "read", "admin", ""]) | query_values,
    "prefix": query_values, "model": query_values,
    "input_per_million_usd": query_values | st.sampled_from(["1e400", "-0", "NaN", "Infinity", "0.0000001"]),
    "output_per_million_usd": query_values | st.sampled_from(["99999999.999999", "1" * 30]),
    "cache_read_per_million_usd": query_values, "cache_write_per_million_usd": query_values,
    "effective_from": dates | st.sampled_from(["0001-01-01T00:00", "9999-12-31T23:59", "2026-11-23T10:00"]),
    "reprice": st.sampled_from(["on", ""]), "username": query_values, "password": query_values,
    "role": st.sampled_from(["owner", "admin", "member", "viewer", "root"]),
    "membership": st.integers(-(10**30), 10**30).map(str) | query_values,
    "invitation": st.integers(-(10**30), 10**30).map(str) | query_values,
})


@HOSTILE
@given(action=st.sampled_from(["key_create", "key_revoke", "price_override", "member_add", "member_role",
                                "invitation_revoke", "nope"]),
       fields=settings_fields)  # fmt: skip
def test_settings_posts_never_500(folded, users, team, action, fields):
    client = client_for(users["owner"])
    url = f"/{team.slug}/{folded.slug}/settings/"
    response = client.post(url, {"action": action, **fields})
    assert response.status_code in (200, 302, 400, 403, 404), (action, fields, response.status_code)
    assert client.get(url).status_code == 200


@HOSTILE
@given(fields=st.dictionaries(st.sampled_from(["invitation", "decision"]),
                              query_values | st.sampled_from(["accept", "decline"]), max_size=2))  # fmt: skip
def test_invitation_answers_never_500(users, fields):
    response = client_for(users["viewer"]).post("/invitations/", fields)
    assert response.status_code in (302, 400, 404), (fields, response.status_code)


# OWASP's CSV-injection payloads and the variants a spreadsheet still runs: leading whitespace,
# control characters or quotes before the formula, full-width forms, and a formula after a separator.
CSV_INJECTION_PAYLOADS = [
    "=1+1", "+1+1", "-1+1", "@SUM(1,1)", "=HYPERLINK(\"http://x\")", "=cmd|' /C calc'!A0", "|cmd",
    "\t=1+1", "\r=1+1", "\n=1+1", " =1+1", "   -1", "\u3000=1", "\u00a0=1", "＝1+1", "＋1", "－1", "＠SUM(1)", "｜cmd",
    "\"=1+1", "'=1+1", "\"'=1", "“=1”", "x;=1+1", "x,=1+1", "x\t@SUM(1)", "x\n+1", "x|=1", "\tplain", "\rplain",
]  # fmt: skip


def _csv_rows(client, session_id: str) -> tuple[str, list[dict]]:
    import csv
    import io

    body = b"".join(client.get(f"/acme/chatbot/sessions/{session_id}/calls.csv").streaming_content).decode()
    return body, list(csv.DictReader(io.StringIO(body)))


@pytest.mark.parametrize("payload", CSV_INJECTION_PAYLOADS)
def test_csv_cells_a_spreadsheet_could_run_are_neutralised(project, users, payload):
    from tests.conftest import usage_event
    from tests.dashboards.conftest import ingest

    ingest(project, [usage_event(session_id="csv", step=payload, model=payload, provider=payload, call_id=payload)])
    _, rows = _csv_rows(client_for(users["viewer"]), "csv")
    for column in ("step", "model", "provider", "call_id"):
        assert rows[0][column] == "'" + payload, (column, rows[0][column])


def test_csv_neutralises_only_client_text(project, users):
    from tests.conftest import usage_event
    from tests.dashboards.conftest import ingest

    ingest(project, [usage_event(session_id="csv", step="a b; c", model="gpt-4o-mini", call_id="call-1")])
    body, rows = _csv_rows(client_for(users["viewer"]), "csv")
    assert (rows[0]["step"], rows[0]["model"], rows[0]["call_id"]) == ("a b; c", "gpt-4o-mini", "call-1")
    assert rows[0]["input_tokens"] == "1250"
    # Every cell quoted, as OWASP asks, so a cell stays whole whatever it holds.
    assert all(line.startswith('"') and line.endswith('"') for line in body.splitlines())


team_queries = st.dictionaries(
    st.sampled_from(["range", "from", "to", "sort", "page", "developer", "period", "start"]), query_values, max_size=7
)


@HOSTILE
@given(query=team_queries)
def test_people_and_digest_pages_never_500(folded, users, team, query):
    client = client_for(users["viewer"])
    for path in ("people/", "people/sessions/", "digest/"):
        response = client.get(f"/{team.slug}/{path}", query)
        assert response.status_code in (200, 302, 400), (path, query, response.status_code)


@pytest.mark.parametrize("query", [
    {"period": "daily", "start": "2999-12-31"}, {"period": "weekly", "start": "2999-12-31"},
    {"period": "weekly", "start": "2000-01-01"}, {"period": "daily", "start": "1999-12-31"},
])
def test_digest_periods_at_the_calendars_edges_render(folded, users, team, query):
    assert client_for(users["viewer"]).get(f"/{team.slug}/digest/", query).status_code == 200
