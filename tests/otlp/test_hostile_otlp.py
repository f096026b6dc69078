"""Hostile OTLP: every malformed, overflowing or absurd request gets a clear error or a partial
success, never a 500, and never stores a bad event."""
from __future__ import annotations

import gzip
import json

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from apps.ingestion.models import RawEvent
from tests.otlp.payloads import genai_span, otlp_json, traces_request
from tests.otlp.test_receiver import JSON, post_otlp

pytestmark = pytest.mark.django_db


def _reply(response) -> ExportTraceServiceResponse:
    assert response.status_code == 200, response.content
    return ExportTraceServiceResponse.FromString(response.content)


def test_truncated_protobuf_is_400_or_stores_only_whole_records(api_client, ingest_key, project):
    body = traces_request([genai_span("00000000000000a1"), genai_span("00000000000000a2")]).SerializeToString()
    statuses = set()
    for cut in range(1, len(body), 7):
        response = post_otlp(api_client, ingest_key, "traces", body[:cut])
        statuses.add(response.status_code)
        if response.status_code == 400:
            assert response.json()["error"]["code"] == "invalid_otlp"
    assert statuses <= {200, 400} and 400 in statuses
    for event in RawEvent.objects.filter(project=project):
        assert event.input_tokens == 1250 and event.output_tokens == 875


@pytest.mark.parametrize("document", [
    [],
    "resourceSpans",
    {"resourceSpans": {"not": "a list"}},
    {"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "yesterday"}]}]}]},
    {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "not-hex", "spanId": "00"}]}]}]},
    {"resourceSpans": [{"scopeSpans": [{"spans": [{"status": 5}]}]}]},
    {"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "a", "value": {"intValue": [1]}}]}]}]}]},
])
def test_json_of_the_wrong_shape_is_400(api_client, ingest_key, project, document):
    response = post_otlp(api_client, ingest_key, "traces", json.dumps(document).encode(), JSON)
    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"invalid_otlp", "malformed_json"}
    assert not RawEvent.objects.filter(project=project).exists()


def test_json_that_is_not_utf8_is_400_malformed_json(api_client, ingest_key, project):
    document = json.loads(otlp_json(traces_request([genai_span("00000000000000b1")])))
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"] = "chat \u00e9"
    body = json.dumps(document, ensure_ascii=False).encode("utf-8").replace("\u00e9".encode(), b"\xe9")
    response = post_otlp(api_client, ingest_key, "traces", body, JSON)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "malformed_json"
    offset = body.index(b"\xe9")
    assert f"byte 0xe9 at offset {offset}" in error["message"]
    assert not RawEvent.objects.filter(project=project).exists()


def test_deeply_nested_json_is_400(api_client, ingest_key):
    body = b'{"resourceSpans":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = post_otlp(api_client, ingest_key, "traces", body, JSON)
    assert response.status_code == 400


def test_sixty_four_bit_overflow_is_400(api_client, ingest_key, project):
    for field, value in (("startTimeUnixNano", "18446744073709551616"), ("endTimeUnixNano", "-1")):
        document = json.loads(otlp_json(traces_request([genai_span("00000000000000b1")])))
        document["resourceSpans"][0]["scopeSpans"][0]["spans"][0][field] = value
        response = post_otlp(api_client, ingest_key, "traces", json.dumps(document).encode(), JSON)
        assert response.status_code == 400, field
    document = json.loads(otlp_json(traces_request([genai_span("00000000000000b1")])))
    attributes = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
    next(a for a in attributes if a["key"] == "gen_ai.usage.input_tokens")["value"] = {
        "intValue": "9223372036854775808"}
    assert post_otlp(api_client, ingest_key, "traces", json.dumps(document).encode(), JSON).status_code == 400
    assert not RawEvent.objects.filter(project=project).exists()


@pytest.mark.parametrize("attributes, reason", [
    ({"gen_ai.usage.input_tokens": -5}, "negative"),
    ({"gen_ai.usage.output_tokens": 9223372036854775807}, "output_tokens"),
    ({"gen_ai.usage.input_tokens": 10**12}, "input_tokens"),
    ({"gen_ai.usage.input_tokens": "lots"}, "not an integer"),
    ({"gen_ai.usage.input_tokens": "9" * 39}, "input_tokens"),
    ({"gen_ai.usage.input_tokens": 10, "gen_ai.usage.cache_read.input_tokens": 10**10}, "input_tokens"),
])
def test_negative_or_absurd_token_counts_are_rejected_in_the_partial_success(
    api_client, ingest_key, project, attributes, reason
):
    request = traces_request([genai_span("00000000000000c1", **attributes), genai_span("00000000000000c2")])
    reply = _reply(post_otlp(api_client, ingest_key, "traces", request.SerializeToString()))
    assert reply.partial_success.rejected_spans == 1
    assert reason in reply.partial_success.error_message
    (stored,) = RawEvent.objects.filter(project=project)
    assert stored.call_id == "00000000000000c2"


def test_span_from_the_far_future_is_rejected(api_client, ingest_key, project):
    request = traces_request([genai_span("00000000000000d1", start=3e9, end=3e9 + 1)])
    reply = _reply(post_otlp(api_client, ingest_key, "traces", request.SerializeToString()))
    assert reply.partial_success.rejected_spans == 1 and "future" in reply.partial_success.error_message
    assert not RawEvent.objects.filter(project=project).exists()


def test_duplicated_records_in_one_batch_are_stored_once(api_client, ingest_key, project):
    span = genai_span("00000000000000e1")
    reply = _reply(post_otlp(api_client, ingest_key, "traces", traces_request([span, span, span]).SerializeToString()))
    assert reply.partial_success.rejected_spans == 0
    assert RawEvent.objects.filter(project=project).count() == 1


def test_gzip_bomb_is_413(api_client, ingest_key, settings):
    bomb = gzip.compress(b"\x00" * (settings.OTLP_MAX_DECOMPRESSED_BYTES + 1024 * 1024), compresslevel=9)
    assert len(bomb) < settings.OTLP_MAX_BODY_BYTES
    response = post_otlp(api_client, ingest_key, "traces", bomb, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


def test_corrupt_gzip_is_400(api_client, ingest_key):
    response = post_otlp(api_client, ingest_key, "traces", b"\x1f\x8bnot gzip", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_gzip"


def test_nul_and_oversized_text_never_reach_storage(api_client, ingest_key, project):
    request = traces_request([genai_span("00000000000000f1", **{
        "gen_ai.response.model": "gpt\x00-4o" + "x" * 5000, "gen_ai.conversation.id": "conv\x00",
        "user.id": "u" * 10_000})])
    _reply(post_otlp(api_client, ingest_key, "traces", request.SerializeToString()))
    (stored,) = RawEvent.objects.filter(project=project)
    assert "\x00" not in stored.model and len(stored.model) <= 200
    assert "\x00" not in stored.session_id and len(stored.attributes["user"]) <= 200


def test_empty_request_is_acknowledged(api_client, ingest_key, project):
    for signal in ("logs", "traces", "metrics"):
        assert post_otlp(api_client, ingest_key, signal, b"").status_code == 200
        assert post_otlp(api_client, ingest_key, signal, b"{}", JSON).status_code == 200
    assert not RawEvent.objects.filter(project=project).exists()
