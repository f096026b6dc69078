"""POST /otlp/v1/{logs,traces,metrics}: encodings, replies and the one path into storage."""
from __future__ import annotations

import gzip
import json

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from apps.accounts.models import ApiKey
from apps.accounts.services import api_key_create
from apps.ingestion.models import RawEvent
from apps.metrics.models import SessionAggregate
from tests.otlp.payloads import (
    TRACE_ID,
    genai_log,
    genai_span,
    logs_request,
    metrics_request,
    otlp_json,
    traces_request,
)

pytestmark = pytest.mark.django_db

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def post_otlp(client, key, signal, body: bytes, media_type=PROTOBUF, **headers):
    if key:
        headers.setdefault("HTTP_AUTHORIZATION", f"Bearer {key}")
    return client.post(f"/otlp/v1/{signal}", data=body, content_type=media_type, **headers)


def stored_events(project) -> list[dict]:
    fields = ("type", "session_id", "step", "provider", "model", "input_tokens", "output_tokens",
              "cache_read_tokens", "cache_write_tokens", "thought_tokens", "duration_ms", "call_id", "attributes")
    return [
        {**{name: getattr(event, name) for name in fields}, "event_id": str(event.event_id)}
        for event in RawEvent.objects.filter(project=project).order_by("event_id")
    ]


def two_calls():
    return traces_request([
        genai_span("00f067aa0ba902b7", start=0, end=1.5, **{"gen_ai.conversation.id": "conv-1",
                                                           "user.id": "ada@example.com"}),
        genai_span("00f067aa0ba902b8", start=2, end=2.25, **{
            "gen_ai.conversation.id": "conv-1", "gen_ai.usage.input_tokens": 2000,
            "gen_ai.usage.output_tokens": 300, "gen_ai.usage.cache_read.input_tokens": 1500,
            "gen_ai.usage.reasoning.output_tokens": 120, "gen_ai.response.id": "chatcmpl-2"}),
    ])


def test_genai_spans_become_usage_events_with_protobuf_reply(api_client, ingest_key, project):
    response = post_otlp(api_client, ingest_key, "traces", two_calls().SerializeToString())
    assert response.status_code == 200 and response["Content-Type"] == PROTOBUF
    reply = ExportTraceServiceResponse.FromString(response.content)
    assert reply.partial_success.rejected_spans == 0
    assert "2 of 2 records used" in reply.partial_success.error_message
    events = {event["call_id"]: event for event in stored_events(project)}
    first = events["00f067aa0ba902b7"]
    assert (first["type"], first["session_id"], first["provider"], first["model"]) == (
        "usage", "conv-1", "openai", "gpt-4o-2024-08-06")
    assert (first["input_tokens"], first["output_tokens"], first["duration_ms"]) == (1250, 875, 1500)
    assert first["attributes"]["user"] == "ada@example.com"
    assert first["attributes"]["source"] == "support-bot" and first["attributes"]["source_version"] == "1.4.0"
    second = events["chatcmpl-2"]
    assert (second["input_tokens"], second["output_tokens"], second["cache_read_tokens"],
            second["thought_tokens"], second["duration_ms"]) == (2000, 300, 1500, 120, 250)


def test_protobuf_and_json_encodings_give_identical_events(api_client, ingest_key, project, other_team_project):
    request = two_calls()
    assert post_otlp(api_client, ingest_key, "traces", request.SerializeToString()).status_code == 200
    via_protobuf = stored_events(project)
    other_key = api_key_create(project=other_team_project, scope=ApiKey.Scope.INGEST).plaintext
    response = post_otlp(api_client, other_key, "traces", otlp_json(request), JSON)
    assert response.status_code == 200 and response["Content-Type"] == JSON
    assert "2 of 2 records used" in response.json()["partialSuccess"]["errorMessage"]
    assert stored_events(other_team_project) == via_protobuf and len(via_protobuf) == 2


def test_json_with_string_ints_and_snake_case_keys_is_accepted(api_client, ingest_key, project):
    document = json.loads(otlp_json(two_calls()))
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["start_time_unix_nano"] = str(span.pop("startTimeUnixNano"))
    span["endTimeUnixNano"] = int(span["endTimeUnixNano"])
    span["kind"] = 3
    response = post_otlp(api_client, ingest_key, "traces", json.dumps(document).encode(), JSON)
    assert response.status_code == 200
    assert RawEvent.objects.filter(project=project).count() == 2


def test_gzip_body_is_decoded(api_client, ingest_key, project):
    body = gzip.compress(two_calls().SerializeToString())
    response = post_otlp(api_client, ingest_key, "traces", body, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 200
    assert RawEvent.objects.filter(project=project).count() == 2


def test_resent_batch_is_counted_once(api_client, ingest_key, project, django_capture_on_commit_callbacks):
    body = two_calls().SerializeToString()
    with django_capture_on_commit_callbacks(execute=True):
        post_otlp(api_client, ingest_key, "traces", body)
        response = post_otlp(api_client, ingest_key, "traces", body)
    assert response.status_code == 200
    assert "0 events stored, 2 already stored" in ExportTraceServiceResponse.FromString(
        response.content).partial_success.error_message
    assert RawEvent.objects.filter(project=project).count() == 2
    session = SessionAggregate.objects.get(project=project, session_id="conv-1")
    assert (session.input_tokens, session.output_tokens) == (3250, 1175)


def test_parent_and_child_span_with_same_usage_count_once(api_client, ingest_key, project):
    request = traces_request([
        genai_span("00000000000000a1", start=0, end=3, **{"gen_ai.operation.name": "invoke_agent"}),
        genai_span("00000000000000a2", parent="00000000000000a1", start=0.5, end=2.5),
    ])
    response = post_otlp(api_client, ingest_key, "traces", request.SerializeToString())
    assert response.status_code == 200
    (event,) = stored_events(project)
    assert event["call_id"] == "00000000000000a2" and event["input_tokens"] == 1250


def test_same_response_reported_by_two_spans_in_separate_requests_counts_once(api_client, ingest_key, project):
    child = genai_span("00000000000000b2", parent="00000000000000b1", **{"gen_ai.response.id": "chatcmpl-9"})
    parent = genai_span("00000000000000b1", start=0, end=3, **{"gen_ai.response.id": "chatcmpl-9"})
    post_otlp(api_client, ingest_key, "traces", traces_request([child]).SerializeToString())
    post_otlp(api_client, ingest_key, "traces", traces_request([parent]).SerializeToString())
    assert RawEvent.objects.filter(project=project).count() == 1


def test_legacy_and_vendor_spellings_are_read(api_client, ingest_key, project):
    request = traces_request([
        genai_span("00000000000000c1", **{
            "gen_ai.provider.name": None, "gen_ai.system": "anthropic", "gen_ai.usage.input_tokens": None,
            "gen_ai.usage.output_tokens": None, "gen_ai.usage.prompt_tokens": 100,
            "gen_ai.usage.completion_tokens": 50, "gen_ai.usage.cache_read_input_tokens": 400,
            "gen_ai.usage.cache_creation_input_tokens": 200, "gen_ai.response.model": "claude-sonnet-4-5"}),
        genai_span("00000000000000c2", trace_id="6b8efff798038103d269b633813fc60c", **{
            "gen_ai.provider.name": None, "gen_ai.operation.name": None, "gen_ai.request.model": None,
            "gen_ai.response.model": None, "gen_ai.usage.input_tokens": None, "gen_ai.usage.output_tokens": None,
            "llm.model_name": "gpt-4o-mini", "llm.provider": "openai", "llm.token_count.prompt": 70,
            "llm.token_count.completion": 30, "llm.token_count.prompt_details.cache_read": 20}),
        genai_span("00000000000000c3", trace_id="7b8efff798038103d269b633813fc60c", **{
            "gen_ai.operation.name": "embeddings", "gen_ai.usage.input_tokens": None,
            "gen_ai.usage.output_tokens": None, "llm.usage.total_tokens": 42,
            "gen_ai.request.model": "text-embedding-3-small", "gen_ai.response.model": None}),
    ])
    assert post_otlp(api_client, ingest_key, "traces", request.SerializeToString()).status_code == 200
    events = {event["call_id"]: event for event in stored_events(project)}
    anthropic = events["00000000000000c1"]
    # Input without the cache (Anthropic's own convention) gets the cache added (DESIGN.md section 1).
    assert (anthropic["provider"], anthropic["input_tokens"], anthropic["output_tokens"],
            anthropic["cache_read_tokens"], anthropic["cache_write_tokens"]) == ("anthropic", 700, 50, 400, 200)
    openinference = events["00000000000000c2"]
    assert (openinference["model"], openinference["input_tokens"], openinference["output_tokens"],
            openinference["cache_read_tokens"]) == ("gpt-4o-mini", 70, 30, 20)
    embeddings = events["00000000000000c3"]
    assert (embeddings["model"], embeddings["input_tokens"], embeddings["output_tokens"]) == (
        "text-embedding-3-small", 42, 0)


def test_throttled_attempt_becomes_throttle_event_linked_to_the_retry(api_client, ingest_key, project):
    request = traces_request([
        genai_span("00000000000000d1", parent="00000000000000d0", start=0, end=0.2, status=2, **{
            "gen_ai.usage.input_tokens": None, "gen_ai.usage.output_tokens": None,
            "gen_ai.response.model": None, "error.type": "429", "http.response.status_code": 429}),
        genai_span("00000000000000d2", parent="00000000000000d0", start=2.2, end=3.0,
                   **{"gen_ai.response.id": "chatcmpl-ok"}),
    ])
    response = post_otlp(api_client, ingest_key, "traces", request.SerializeToString())
    assert response.status_code == 200
    throttle = RawEvent.objects.get(project=project, type="throttle")
    assert (throttle.status_code, throttle.wait_ms, throttle.call_id, throttle.model) == (
        429, 2000, "chatcmpl-ok", "gpt-4o")
    assert RawEvent.objects.get(project=project, type="usage").call_id == "chatcmpl-ok"


def test_genai_log_events_count_and_match_their_span(api_client, ingest_key, project):
    logs = logs_request([genai_log(1), genai_log(2), {"event_name": "gen_ai.user.message",
                                                      "attributes": {"gen_ai.system": "openai"},
                                                      "body": "prompt text is never stored"}])
    response = post_otlp(api_client, ingest_key, "logs", logs.SerializeToString())
    reply = ExportLogsServiceResponse.FromString(response.content)
    assert response.status_code == 200 and reply.partial_success.rejected_log_records == 0
    assert "2 of 3 records used, 1 carried no usage" in reply.partial_success.error_message
    assert response["X-TokenSite-Records-Used"] == "2"
    events = stored_events(project)
    assert sorted((e["input_tokens"], e["output_tokens"], e["attributes"]["user"]) for e in events) == [
        (1001, 101, "dev-1@example.com"), (1002, 102, "dev-2@example.com")]
    assert not any("prompt text" in json.dumps(e["attributes"]) for e in events)


def test_metrics_are_acknowledged_and_never_add_tokens(api_client, ingest_key, project):
    response = post_otlp(api_client, ingest_key, "metrics", metrics_request(3).SerializeToString())
    assert response.status_code == 200
    assert response["X-TokenSite-Records-Ignored"] == "3" and response["X-TokenSite-Records-Rejected"] == "0"
    assert not RawEvent.objects.filter(project=project).exists()
    json_response = post_otlp(api_client, ingest_key, "metrics", otlp_json(metrics_request(2)), JSON)
    assert json_response.status_code == 200
    assert "rejectedDataPoints" not in json_response.json().get("partialSuccess", {})


def test_otel_resource_team_attributes_are_kept_on_events(api_client, ingest_key, project):
    request = traces_request([genai_span("00000000000000e1")], resource={
        "service.name": "billing", "team": "payments", "department": "eng", "cost_center": "cc-42"})
    post_otlp(api_client, ingest_key, "traces", request.SerializeToString())
    (event,) = stored_events(project)
    assert event["session_id"] == TRACE_ID
    assert {k: event["attributes"][k] for k in ("team", "department", "cost_center", "source")} == {
        "team": "payments", "department": "eng", "cost_center": "cc-42", "source": "billing"}


@pytest.mark.parametrize("signal", ["logs", "traces", "metrics"])
def test_missing_key_is_401_and_read_key_is_403(api_client, read_key, signal):
    body = b"{}"
    response = post_otlp(api_client, None, signal, body, JSON)
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    response = post_otlp(api_client, read_key, signal, body, JSON)
    assert response.status_code == 403 and response.json()["error"]["code"] == "insufficient_scope"


def test_other_media_type_is_415(api_client, ingest_key):
    response = post_otlp(api_client, ingest_key, "traces", b"x", "text/plain")
    assert response.status_code == 415 and response.json()["error"]["code"] == "unsupported_media_type"
    response = post_otlp(api_client, ingest_key, "traces", b"x", PROTOBUF, HTTP_CONTENT_ENCODING="br")
    assert response.status_code == 415


def test_body_over_the_limit_is_413(api_client, ingest_key, settings):
    settings.OTLP_MAX_BODY_BYTES = 1000
    response = post_otlp(api_client, ingest_key, "traces", b"\x0a" * 1001)
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


def test_too_many_records_is_413(api_client, ingest_key, settings):
    settings.OTLP_MAX_RECORDS = 2
    request = logs_request([genai_log(index) for index in range(3)])
    response = post_otlp(api_client, ingest_key, "logs", request.SerializeToString())
    assert response.status_code == 413


def test_rate_limited_key_gets_429_with_retry_after(api_client, project):
    key = api_key_create(project=project, scope=ApiKey.Scope.INGEST, rate_limit_per_minute=1).plaintext
    body = metrics_request(1).SerializeToString()
    assert post_otlp(api_client, key, "metrics", body).status_code == 200
    response = post_otlp(api_client, key, "metrics", body)
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "rate_limited"


def test_throttled_attempt_exported_before_its_retry_waits_the_gap_to_it(api_client, ingest_key, project):
    failed = genai_span("00000000000000f1", parent="00000000000000f0", start=0, end=0.5, status=2, **{
        "gen_ai.usage.input_tokens": None, "gen_ai.usage.output_tokens": None, "gen_ai.response.model": None,
        "error.type": "<class 'openai.RateLimitError'>"})
    retry = genai_span("00000000000000f2", parent="00000000000000f0", start=1.75, end=2.5,
                       **{"gen_ai.response.id": "chatcmpl-retry"})
    post_otlp(api_client, ingest_key, "traces", traces_request([failed]).SerializeToString())
    assert not RawEvent.objects.filter(project=project).exists()
    post_otlp(api_client, ingest_key, "traces", traces_request([retry]).SerializeToString())
    throttle = RawEvent.objects.get(project=project, type="throttle")
    assert (throttle.status_code, throttle.wait_ms, throttle.call_id) == (429, 1250, "chatcmpl-retry")


def test_json_fast_path_reads_the_same_message_as_protobufs_own_json_parser():
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from apps.otlp.decoding import otlp_request_parse

    request = two_calls()
    span = request.resource_spans[0].scope_spans[0].spans[0]
    extra = span.attributes.add(key="tags")
    extra.value.array_value.values.add(string_value="a")
    extra.value.array_value.values.add(int_value=2)
    nested = span.attributes.add(key="meta")
    nested.value.kvlist_value.values.add(key="k", value={"bytes_value": b"\x00\x01"})
    span.events.add(name="gen_ai.choice", time_unix_nano=5)
    document = json.loads(otlp_json(request))
    document["somethingNew"] = {"ignored": True}
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["futureField"] = [1, 2]
    body = json.dumps(document).encode()
    parsed = otlp_request_parse(signal="traces", media_type=JSON, body=body)
    assert parsed == request
    assert isinstance(parsed, ExportTraceServiceRequest) and json_format.MessageToDict(parsed)


def test_time_to_first_chunk_and_stated_retry_after_are_used(api_client, ingest_key, project):
    request = traces_request([
        genai_span("0000000000000101", start=0, end=2, **{"gen_ai.response.time_to_first_chunk": 0.25,
                                                          "session.id": "s-ttft", "enduser.id": "carol"}),
        genai_span("0000000000000102", start=3, end=3.1, status=2, **{
            "gen_ai.usage.input_tokens": None, "gen_ai.usage.output_tokens": None, "gen_ai.response.model": None,
            "http.response.status_code": 529, "http.response.header.retry-after": "4", "session.id": "s-ttft"}),
    ])
    assert post_otlp(api_client, ingest_key, "traces", request.SerializeToString()).status_code == 200
    usage = RawEvent.objects.get(project=project, type="usage")
    assert (usage.session_id, usage.time_to_first_token_ms, usage.attributes["user"]) == ("s-ttft", 250, "carol")
    throttle = RawEvent.objects.get(project=project, type="throttle")
    assert (throttle.status_code, throttle.wait_ms, throttle.retry_after_ms) == (529, 4000, 4000)


def test_call_reported_as_span_and_as_log_event_counts_once(api_client, ingest_key, project):
    span = genai_span("0000000000000201", **{"gen_ai.response.id": "chatcmpl-both"})
    log = genai_log(7, **{"gen_ai.response.id": "chatcmpl-both", "gen_ai.conversation.id": "named-in-log-only"})
    log.update(trace_id=TRACE_ID, span_id="0000000000000201")
    post_otlp(api_client, ingest_key, "traces", traces_request([span]).SerializeToString())
    response = post_otlp(api_client, ingest_key, "logs", logs_request([log]).SerializeToString())
    assert "0 events stored, 1 already stored" in ExportLogsServiceResponse.FromString(
        response.content).partial_success.error_message
    assert RawEvent.objects.filter(project=project).count() == 1


def test_the_service_tier_an_openai_span_reports_prices_the_call(api_client, ingest_key, project):
    request = traces_request([
        genai_span("00000000000000d1", **{"openai.response.service_tier": "flex", "gen_ai.request.model": "gpt-5",
                                          "gen_ai.response.model": "gpt-5"}),
        genai_span("00000000000000d2", trace_id="8b8efff798038103d269b633813fc60c", **{
            "gen_ai.openai.response.service_tier": "default", "gen_ai.response.model": "gpt-5"}),
    ])
    assert post_otlp(api_client, ingest_key, "traces", request.SerializeToString()).status_code == 200
    flex, default = (RawEvent.objects.get(project=project, call_id=span) for span in ("00000000000000d1",
                                                                                       "00000000000000d2"))
    assert (flex.service_tier, flex.price_source) == ("flex", "litellm:gpt-5 [flex]")
    assert (default.service_tier, default.price_source) == ("standard", "litellm:gpt-5")
    assert flex.cost_nanousd * 2 == default.cost_nanousd  # gpt-5 flex is half the standard price
