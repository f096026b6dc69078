"""No input a client can send makes the API answer 500: property tests over hostile bodies."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import post_events, property_examples, usage_event

pytestmark = pytest.mark.django_db

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(sorted(usage_event()) + ["wait_ms", "attempt", "status_code", "usage_raw",
                                                      "input_text", "messages", "attributes", "retry_after_ms"])
HOSTILE = settings(
    max_examples=property_examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@HOSTILE
@given(overrides=st.dictionaries(field_names, json_values, max_size=4))
def test_events_with_hostile_field_values_never_500(api_client, ingest_key, overrides):
    response = post_events(api_client, ingest_key, [usage_event(), usage_event(**overrides)])
    assert response.status_code in (202, 207), response.content
    assert response.json()["accepted"] >= 1


@HOSTILE
@given(body=st.binary(max_size=300))
def test_arbitrary_bytes_never_500(api_client, ingest_key, body):
    response = post_events(api_client, ingest_key, body=body)
    assert response.status_code in (202, 207, 400), response.content
    assert "error" in response.json() or "accepted" in response.json()


@HOSTILE
@given(document=json_values)
def test_arbitrary_json_documents_never_500(api_client, ingest_key, document):
    response = post_events(api_client, ingest_key, body=json.dumps(document).encode())
    assert response.status_code in (202, 207, 400), response.content


@HOSTILE
@given(session_id=st.text(min_size=1, max_size=50), params=st.dictionaries(
    st.sampled_from(["from", "to", "step", "model", "search", "page", "page_size", "group_by"]), st.text(max_size=40)))
def test_read_endpoints_never_500(api_client, read_key, session_id, params):
    from urllib.parse import quote

    headers = {"HTTP_AUTHORIZATION": f"Bearer {read_key}"}
    metadata = api_client.get(f"/api/v1/sessions/{quote(session_id, safe='')}/metadata", **headers)
    # A NUL can never be part of a stored session id: the URL itself is malformed.
    assert metadata.status_code == (400 if "\x00" in session_id else 404)
    assert api_client.get("/api/v1/sessions", params, **headers).status_code in (200, 400, 404)
    assert api_client.get("/api/v1/usage", params, **headers).status_code in (200, 400)
    tokenize = api_client.post("/api/v1/tokenize", {"model": session_id, "text": params.get("search", "")},
                               format="json", **headers)  # fmt: skip
    assert tokenize.status_code in (200, 400)


@pytest.mark.parametrize("overrides, field", [
    ({"step": "plan\u0000"}, "step"),
    ({"provider": "open\u0000ai"}, "provider"),
    ({"model": "gpt-4o\u0000"}, "model"),
    ({"call_id": "\u0000"}, "call_id"),
    ({"attributes": {"user\u0000": "ada"}}, "attributes"),
    ({"attributes": {"user": "a\u0000da"}}, "attributes"),
])
def test_nul_in_a_stored_field_rejects_that_event_only(api_client, ingest_key, overrides, field):
    # Postgres refuses NUL in text and jsonb: caught per event, the rest of the batch is stored.
    response = post_events(api_client, ingest_key, [usage_event(), usage_event(**overrides)])
    assert response.status_code == 207, response.content
    body = response.json()
    assert body["accepted"] == 1
    assert list(body["rejected"][0]["errors"]) == [field]


def test_nul_in_text_that_is_counted_not_stored_is_accepted(api_client, ingest_key):
    event = usage_event(input_text="hello\u0000world", output_text="ok")
    del event["input_tokens"], event["output_tokens"]
    response = post_events(api_client, ingest_key, [event])
    assert response.status_code == 202, response.content


def test_deeply_nested_usage_raw_with_nul_is_a_clean_rejection(api_client, ingest_key):
    depth = 3000  # deeper than Python's recursion limit; built as text since json.dumps would recurse
    nested = '{"n": ' * depth + '{"x": "\\u0000"}' + "}" * depth
    event = json.dumps(usage_event(usage_raw="@@"))
    body = ('{"events": [' + event.replace('"@@"', nested) + "]}").encode()
    response = post_events(api_client, ingest_key, body=body)
    assert response.status_code in (207, 400), response.content
    assert response.json().get("accepted", 0) == 0


@pytest.mark.parametrize("params", [
    {"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z"},
    {"from": "9999-12-31T23:59:59+00:00", "group_by": "day"},
    {"from": "0001-01-01T00:00:00-14:00", "group_by": "hour"},
    {"to": "0001-01-01T00:00:00+14:00", "group_by": "model"},
    {"from": "2026-01-01", "to": "2025-01-01", "group_by": "step"},
])
def test_read_endpoints_at_the_calendars_edges_never_500(api_client, read_key, params):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {read_key}"}
    assert api_client.get("/api/v1/sessions", params, **headers).status_code in (200, 400)
    assert api_client.get("/api/v1/usage", params, **headers).status_code in (200, 400)
