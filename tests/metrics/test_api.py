"""Read APIs: /api/v1/sessions/{id}/metadata, /api/v1/sessions, /api/v1/usage."""
from __future__ import annotations

from datetime import timedelta

import pytest

from apps.metrics.selectors import session_metadata
from tests.conftest import BASE_TIME, post_events, throttle_event, usage_event

pytestmark = pytest.mark.django_db(transaction=True)


def get(client, key, path, **params):
    return client.get(path, params, HTTP_AUTHORIZATION=f"Bearer {key}")


@pytest.fixture
def two_sessions(api_client, ingest_key):
    post_events(api_client, ingest_key, [
        usage_event(session_id="older", step="plan", model="gpt-4o-mini", timestamp=BASE_TIME.isoformat()),
        usage_event(session_id="newer", step="draft", model="gpt-4o",
                    timestamp=(BASE_TIME + timedelta(hours=2)).isoformat(), attributes={"user": "alice"}),
        usage_event(session_id="newer", step="review", model="acme-unpriced",
                    timestamp=(BASE_TIME + timedelta(hours=2, seconds=5)).isoformat()),
        throttle_event(session_id="newer", timestamp=(BASE_TIME + timedelta(hours=2)).isoformat()),
    ])  # fmt: skip


def test_metadata_document_has_both_seed_shapes(api_client, read_key, project, two_sessions):
    response = get(api_client, read_key, "/api/v1/sessions/newer/metadata")
    assert response.status_code == 200
    document = response.json()
    assert document == session_metadata(project=project, session_id="newer")
    assert set(document) >= {"session_id", "project", "started_at", "ended_at", "token_usage", "tokenMetrics", "cost",
                             "bursts", "peak_concurrency", "throttle"}  # fmt: skip
    assert document["project"] == "acme/chatbot"
    assert set(document["token_usage"]) == {"total_input_tokens", "total_output_tokens", "total_tokens", "breakdown_by_step"}
    assert [s["step"] for s in document["token_usage"]["breakdown_by_step"]] == ["draft", "review", "persona_generation"]
    assert set(document["tokenMetrics"]) == {"tokensIn", "tokensOut", "tokensPerSecond", "burstTokensPerSecond",
                                             "throttleWaitTimeMs", "sessionTokenUsage"}  # fmt: skip
    assert document["tokenMetrics"]["throttleWaitTimeMs"] == 2500
    assert document["cost"]["unpriced_tokens"] == 1250 + 875
    assert document["cost"]["estimated_usd"] > 0
    assert set(document["bursts"]) == {"1s", "10s", "60s"}


def test_metadata_of_a_session_id_with_slashes_and_spaces(api_client, ingest_key, read_key):
    post_events(api_client, ingest_key, [usage_event(session_id="runs/2026 11/#1")])
    response = get(api_client, read_key, "/api/v1/sessions/runs/2026%2011/%231/metadata")
    assert response.status_code == 200
    assert response.json()["session_id"] == "runs/2026 11/#1"


def test_metadata_of_unknown_session_is_404(api_client, read_key):
    response = get(api_client, read_key, "/api/v1/sessions/nope/metadata")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "session_not_found"


def test_metadata_with_an_ingest_key_is_403(api_client, ingest_key, two_sessions):
    response = get(api_client, ingest_key, "/api/v1/sessions/newer/metadata")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


def test_read_apis_without_a_key_are_401(api_client):
    for path in ("/api/v1/sessions", "/api/v1/sessions/x/metadata", "/api/v1/usage"):
        assert api_client.get(path).status_code == 401


def test_sessions_are_listed_newest_first(api_client, read_key, two_sessions):
    body = get(api_client, read_key, "/api/v1/sessions").json()
    assert body["count"] == 2
    assert [s["session_id"] for s in body["results"]] == ["newer", "older"]
    newer = body["results"][0]
    assert newer["calls"] == 2 and newer["unpriced_tokens"] == 2125 and newer["attributes"] == {"user": "alice"}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"step": "plan"}, ["older"]),
        ({"model": "gpt-4o"}, ["newer"]),
        ({"from": (BASE_TIME + timedelta(hours=1)).isoformat()}, ["newer"]),
        ({"to": (BASE_TIME + timedelta(hours=1)).isoformat()}, ["older"]),
        ({"search": "alice"}, ["newer"]),
        ({"search": "old"}, ["older"]),
    ],
)
def test_sessions_filters(api_client, read_key, two_sessions, params, expected):
    body = get(api_client, read_key, "/api/v1/sessions", **params).json()
    assert [s["session_id"] for s in body["results"]] == expected


def test_sessions_are_paginated(api_client, ingest_key, read_key):
    post_events(api_client, ingest_key, [usage_event(session_id=f"s{i:02d}") for i in range(7)])
    body = get(api_client, read_key, "/api/v1/sessions", page_size=3, page=3).json()
    assert body["count"] == 7 and len(body["results"]) == 1 and body["next"] is None


@pytest.mark.parametrize(
    ("params", "status"),
    [({"from": "yesterday"}, 400), ({"to": "2026-13-01"}, 400), ({"page": "0"}, 404), ({"page": "x"}, 404),
     ({"from": "2026-11-21T00:00:00Z", "to": "2026-11-20T00:00:00Z"}, 400), ({"step": "s" * 101}, 400)],
)  # fmt: skip
def test_bad_filters_are_4xx_json(api_client, read_key, two_sessions, params, status):
    response = get(api_client, read_key, "/api/v1/sessions", **params)
    assert response.status_code == status
    assert set(response.json()["error"]) >= {"code", "message"}


def test_usage_grouped_by_model(api_client, read_key, two_sessions):
    body = get(api_client, read_key, "/api/v1/usage", group_by="model").json()
    rows = {row["model"]: row for row in body["results"]}
    assert rows["gpt-4o"]["input_tokens"] == 1250 and rows["gpt-4o"]["calls"] == 1
    assert rows["acme-unpriced"]["cost_usd"] is None and rows["acme-unpriced"]["unpriced_tokens"] == 2125
    assert rows["gpt-4o"]["throttle_count"] == 1


def test_usage_grouped_by_step_day_and_hour(api_client, read_key, two_sessions):
    steps = {r["step"]: r for r in get(api_client, read_key, "/api/v1/usage", group_by="step").json()["results"]}
    assert set(steps) == {"plan", "draft", "review", "persona_generation"}
    days = get(api_client, read_key, "/api/v1/usage", group_by="day").json()["results"]
    assert len(days) == 1 and days[0]["total_tokens"] == 3 * (1250 + 875)
    hours = get(api_client, read_key, "/api/v1/usage", group_by="hour").json()["results"]
    assert [h["period"][11:13] for h in hours] == ["09", "11"]


def test_usage_grouped_by_user_sums_each_developers_sessions(api_client, read_key, ingest_key, two_sessions):
    post_events(api_client, ingest_key, [
        usage_event(session_id="third", timestamp=(BASE_TIME + timedelta(hours=3)).isoformat(), input_tokens=100,
                    output_tokens=10, attributes={"user": "alice"}),
        usage_event(session_id="bobs", timestamp=(BASE_TIME + timedelta(hours=3)).isoformat(), input_tokens=7,
                    output_tokens=3, attributes={"user": "bob@example.com"}),
    ])  # fmt: skip
    body = get(api_client, read_key, "/api/v1/usage", group_by="user").json()
    assert body["group_by"] == "user"
    rows = {row["user"]: row for row in body["results"]}
    assert list(rows) == ["alice", "bob@example.com", None]  # named developers first, by name
    alice = rows["alice"]
    # "newer" (gpt-4o 1250+875, the unpriced model 1250+875, a 2.5 s throttle) and "third".
    assert (alice["sessions"], alice["calls"], alice["total_tokens"]) == (2, 3, 2 * (1250 + 875) + 110)
    assert alice["unpriced_tokens"] == 1250 + 875 and alice["cost_usd"] > 0
    assert (alice["throttle_count"], alice["throttle_wait_ms"]) == (1, 2500)
    assert (rows["bob@example.com"]["sessions"], rows["bob@example.com"]["total_tokens"]) == (1, 10)
    assert (rows[None]["sessions"], rows[None]["total_tokens"]) == (1, 1250 + 875)  # "older" names nobody
    since = (BASE_TIME + timedelta(hours=2, minutes=30)).isoformat()
    later = get(api_client, read_key, "/api/v1/usage", group_by="user", **{"from": since}).json()["results"]
    assert {row["user"]: row["total_tokens"] for row in later} == {"alice": 110, "bob@example.com": 10}


def test_usage_time_range_and_bad_group_by(api_client, read_key, two_sessions):
    since = (BASE_TIME + timedelta(hours=1)).isoformat()
    rows = get(api_client, read_key, "/api/v1/usage", group_by="model", **{"from": since}).json()["results"]
    assert {r["model"] for r in rows} >= {"gpt-4o", "acme-unpriced"} and "gpt-4o-mini" not in {r["model"] for r in rows}
    response = get(api_client, read_key, "/api/v1/usage", group_by="week")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"
