"""POST /api/v1/events: every reply of issue 2, shown by a test."""
from __future__ import annotations

import gzip
import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import ApiKey
from apps.accounts.services import api_key_create, api_key_revoke
from apps.ingestion.models import RawEvent
from tests.conftest import post_events, throttle_event, usage_event

pytestmark = pytest.mark.django_db


def test_valid_batch_is_stored_and_answered_202(api_client, ingest_key, project):
    events = [usage_event(), throttle_event()]
    response = post_events(api_client, ingest_key, events)
    assert response.status_code == 202
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    stored = RawEvent.objects.filter(project=project)
    assert {str(e.event_id) for e in stored} == {e["event_id"] for e in events}
    usage = stored.get(type="usage")
    assert (usage.input_tokens, usage.output_tokens, usage.duration_ms) == (1250, 875, 2000)
    assert usage.step == "persona_generation" and usage.end_at - usage.timestamp == timedelta(seconds=2)


def test_optional_fields_default(api_client, ingest_key, project):
    event = usage_event()
    del event["step"], event["input_tokens"], event["output_tokens"]
    assert post_events(api_client, ingest_key, [event]).status_code == 202
    stored = RawEvent.objects.get(project=project)
    assert stored.step == "default" and stored.input_tokens == 0 and stored.output_tokens == 0
    throttle = throttle_event()
    del throttle["status_code"], throttle["attempt"]
    assert post_events(api_client, ingest_key, [throttle]).status_code == 202
    stored = RawEvent.objects.get(project=project, type="throttle")
    assert stored.status_code == 429 and stored.attempt == 1


def test_resent_event_is_reported_duplicate_and_stored_once(api_client, ingest_key, project):
    events = [usage_event(), usage_event()]
    post_events(api_client, ingest_key, events)
    response = post_events(api_client, ingest_key, events + [usage_event()])
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "duplicates": 2, "rejected": []}
    assert RawEvent.objects.filter(project=project).count() == 3


def test_same_event_id_twice_in_one_batch_is_stored_once(api_client, ingest_key, project):
    event = usage_event()
    response = post_events(api_client, ingest_key, [event, dict(event)])
    assert response.json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    assert RawEvent.objects.filter(project=project).count() == 1


def test_event_ids_are_unique_per_project_not_globally(api_client, ingest_key, other_team_project):
    event = usage_event()
    other_key = api_key_create(project=other_team_project).plaintext
    assert post_events(api_client, ingest_key, [event]).json()["accepted"] == 1
    assert post_events(api_client, other_key, [event]).json()["accepted"] == 1


def test_bad_event_is_rejected_alone_with_207(api_client, ingest_key, project):
    good, bad = usage_event(), usage_event(input_tokens=-5)
    response = post_events(api_client, ingest_key, [good, bad])
    assert response.status_code == 207
    body = response.json()
    assert body["accepted"] == 1 and body["duplicates"] == 0
    assert body["rejected"] == [
        {"index": 1, "event_id": bad["event_id"], "errors": {"input_tokens": ["Expected `int` >= 0 - at `$.input_tokens`"]}}
    ]
    assert RawEvent.objects.filter(project=project).count() == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"event_id": "not-a-uuid"}, "event_id"),
        ({"type": "telemetry"}, "type"),
        ({"session_id": ""}, "session_id"),
        ({"session_id": "s" * 201}, "session_id"),
        ({"session_id": "tab\there"}, "session_id"),
        ({"step": "s" * 101}, "step"),
        ({"provider": "p" * 101}, "provider"),
        ({"model": "m" * 201}, "model"),
        ({"timestamp": "2026-11-20T09:00:00"}, "timestamp"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"attributes": {"nested": {"a": 1}}}, "attributes"),
        ({"attributes": {"big": "x" * 5000}}, "attributes"),
        ({"attributes": ["a"]}, "attributes"),
        ({"duration_ms": -1}, "duration_ms"),
        ({"duration_ms": 24 * 3600 * 1000 + 1}, "duration_ms"),
        ({"time_to_first_token_ms": 2001}, "time_to_first_token_ms"),
        ({"output_tokens": 10**9 + 1}, "output_tokens"),
        ({"input_tokens": 1.5}, "input_tokens"),
        ({"input_tokens": "12"}, "input_tokens"),
        ({"cache_read_tokens": 1000, "cache_write_tokens": 251}, "cache_read_tokens"),
        ({"tool_tokens": 1251}, "tool_tokens"),
        ({"thought_tokens": 876}, "thought_tokens"),
        ({"call_id": ""}, "call_id"),
    ],
)
def test_usage_event_rule_violations_name_the_field(api_client, ingest_key, overrides, field):
    response = post_events(api_client, ingest_key, [usage_event(**overrides)])
    assert response.status_code == 207
    (rejection,) = response.json()["rejected"]
    assert field in rejection["errors"], rejection


def test_missing_required_field_is_named(api_client, ingest_key):
    event = usage_event()
    del event["session_id"]
    (rejection,) = post_events(api_client, ingest_key, [event]).json()["rejected"]
    assert rejection["errors"] == {"session_id": ["Object missing required field `session_id`"]}


def test_subset_rule_error_names_both_cache_fields(api_client, ingest_key):
    (rejection,) = post_events(
        api_client, ingest_key, [usage_event(cache_read_tokens=1000, cache_write_tokens=251)]
    ).json()["rejected"]
    assert set(rejection["errors"]) == {"cache_read_tokens", "cache_write_tokens"}


def test_timestamp_more_than_five_minutes_ahead_is_rejected(api_client, ingest_key):
    soon = (timezone.now() + timedelta(minutes=4)).isoformat()
    later = (timezone.now() + timedelta(minutes=6)).isoformat()
    response = post_events(api_client, ingest_key, [usage_event(timestamp=soon), usage_event(timestamp=later)])
    assert response.json()["accepted"] == 1
    assert response.json()["rejected"][0]["errors"] == {"timestamp": ["timestamp is more than 5 minutes in the future."]}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"wait_ms": -1}, "wait_ms"), ({"attempt": 0}, "attempt"), ({"status_code": 99}, "status_code"),
     ({"retry_after_ms": "soon"}, "retry_after_ms")],
)  # fmt: skip
def test_throttle_event_rule_violations_name_the_field(api_client, ingest_key, overrides, field):
    (rejection,) = post_events(api_client, ingest_key, [throttle_event(**overrides)]).json()["rejected"]
    assert field in rejection["errors"]


def test_non_object_events_are_rejected_per_event(api_client, ingest_key):
    response = post_events(api_client, ingest_key, [usage_event(), 42, "x", None, []])
    assert response.status_code == 207
    body = response.json()
    assert body["accepted"] == 1
    assert [r["index"] for r in body["rejected"]] == [1, 2, 3, 4]
    assert all(r["event_id"] is None for r in body["rejected"])


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "malformed_json"),
        (b"", "malformed_json"),
        (b'{"events": [1,', "malformed_json"),
        (b'{"events": {}}', "invalid_batch"),
        (b'{"batch": []}', "invalid_batch"),
        (b"[]", "invalid_batch"),
        (b'"events"', "invalid_batch"),
        (b'{"events": []}', "invalid_batch_size"),
        (b"\xff\xfe\x00", "malformed_json"),
        (b'{"events": [' + b"[" * 5000 + b"]" * 5000 + b"]}", "malformed_json"),
    ],
)
def test_malformed_batches_are_400_and_store_nothing(api_client, ingest_key, project, body, code):
    response = post_events(api_client, ingest_key, body=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert RawEvent.objects.count() == 0


def test_more_than_1000_events_is_400(api_client, ingest_key):
    response = post_events(api_client, ingest_key, [usage_event() for _ in range(1001)])
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_batch_size"
    assert RawEvent.objects.count() == 0


def test_1000_events_are_accepted(api_client, ingest_key):
    response = post_events(api_client, ingest_key, [usage_event(session_id=f"s{i % 7}") for i in range(1000)])
    assert response.json()["accepted"] == 1000


def test_missing_key_is_401(api_client, project):
    response = post_events(api_client, None, [usage_event()])
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    ["Bearer tsk_abcdefgh_" + "A" * 40, "Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer ", "tsk_only"],
)
def test_unknown_or_malformed_key_is_401(api_client, project, header):
    response = post_events(api_client, None, [usage_event()], headers={"HTTP_AUTHORIZATION": header})
    assert response.status_code == 401
    assert "error" in response.json()


def test_wrong_secret_for_a_real_prefix_is_401(api_client, ingest_key):
    forged = ingest_key[:-4] + "zzzz"
    assert post_events(api_client, forged, [usage_event()]).status_code == 401


def test_revoked_key_is_401(api_client, ingest_key, project):
    api_key_revoke(prefix=ingest_key.split("_")[1])
    response = post_events(api_client, ingest_key, [usage_event()])
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_read_key_cannot_ingest_403(api_client, read_key):
    response = post_events(api_client, read_key, [usage_event()])
    assert response.status_code == 403
    assert response.json()["error"] == {
        "code": "insufficient_scope",
        "message": "This endpoint needs a key with the 'ingest' scope.",
    }


def test_body_over_one_mib_is_413(api_client, ingest_key):
    response = post_events(api_client, ingest_key, body=b'{"events": ["' + b"x" * (1024 * 1024) + b'"]}')
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_gzip_body_is_accepted(api_client, ingest_key, project):
    response = post_events(api_client, ingest_key, [usage_event() for _ in range(50)], gzip_body=True)
    assert response.status_code == 202
    assert RawEvent.objects.filter(project=project).count() == 50


def test_gzip_bomb_over_eight_mib_is_413(api_client, ingest_key):
    bomb = gzip.compress(b'{"events": ["' + b"a" * (9 * 1024 * 1024) + b'"]}')
    assert len(bomb) < 1024 * 1024
    response = post_events(api_client, ingest_key, body=bomb, headers={"HTTP_CONTENT_ENCODING": "gzip"})
    assert response.status_code == 413


def test_corrupt_gzip_is_400(api_client, ingest_key):
    response = post_events(api_client, ingest_key, body=b"\x1f\x8bnot gzip", headers={"HTTP_CONTENT_ENCODING": "gzip"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_gzip"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
def test_non_json_body_is_415(api_client, ingest_key, content_type):
    response = post_events(api_client, ingest_key, [usage_event()], content_type=content_type)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_unknown_content_encoding_is_415(api_client, ingest_key):
    response = post_events(api_client, ingest_key, [usage_event()], headers={"HTTP_CONTENT_ENCODING": "br"})
    assert response.status_code == 415


def test_key_over_its_rate_limit_gets_429_with_retry_after(api_client, project):
    key = api_key_create(project=project, rate_limit_per_minute=3).plaintext
    statuses = [post_events(api_client, key, [usage_event()]).status_code for _ in range(4)]
    assert statuses[:3] == [202, 202, 202]
    response = post_events(api_client, key, [usage_event()])
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 61
    assert response.json()["error"]["code"] == "rate_limited"


def test_get_is_405_json(api_client, ingest_key):
    response = api_client.get("/api/v1/events", HTTP_AUTHORIZATION=f"Bearer {ingest_key}")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_unknown_api_path_is_json_404(api_client):
    response = api_client.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_unknown_fields_are_ignored_for_forward_compatibility(api_client, ingest_key):
    response = post_events(api_client, ingest_key, [usage_event(sdk_version="9.9")])
    assert response.status_code == 202


def test_openapi_schema_documents_the_ingest_endpoint(api_client):
    response = api_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    operation = schema["paths"]["/api/v1/events"]["post"]
    assert set(operation["responses"]) >= {"202", "207", "400", "401", "403", "413", "415", "429"}
    events_schema = operation["requestBody"]["content"]["application/json"]["schema"]["properties"]["events"]
    assert events_schema["maxItems"] == 1000
    assert api_client.get("/api/docs/").status_code == 200


def test_key_is_shown_once_and_stored_as_hash(project):
    issued = api_key_create(project=project, scope=ApiKey.Scope.INGEST)
    prefix, secret = issued.plaintext.split("_")[1:]
    stored = ApiKey.objects.get(prefix=prefix)
    assert issued.plaintext.startswith(f"tsk_{prefix}_")
    assert secret not in stored.secret_hash and len(stored.secret_hash) == 64


def test_event_ids_of_rejections_are_reported(api_client, ingest_key):
    event_id = str(uuid.uuid4())
    (rejection,) = post_events(api_client, ingest_key, [usage_event(event_id=event_id, duration_ms="long")]).json()["rejected"]
    assert rejection["event_id"] == event_id


def test_deeply_nested_json_is_400_not_a_crash(api_client, ingest_key):
    nested = b"[" * 3000 + b"]" * 3000
    body = b'{"events": [' + json.dumps(usage_event()).encode() + b', {"attributes": ' + nested + b"}]}"
    response = post_events(api_client, ingest_key, body=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


def test_moderately_nested_attributes_reject_only_that_event(api_client, ingest_key):
    event = usage_event(attributes={"a": [[[[1]]]]})
    response = post_events(api_client, ingest_key, [usage_event(), event])
    assert response.status_code == 207
    assert response.json()["rejected"][0]["event_id"] == event["event_id"]


def test_the_readme_example_batch_is_accepted(api_client, ingest_key):
    from pathlib import Path

    body = (Path(__file__).resolve().parents[2] / "docs" / "example-batch.json").read_bytes()
    response = post_events(api_client, ingest_key, body=body)
    assert response.status_code == 202
    assert response.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
