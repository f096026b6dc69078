"""The real Python OpenTelemetry SDK and OTLP/HTTP exporter, with the official GenAI instrumentation of
the real openai client, exporting to a TokenSite server: calls, tokens, session and developer arrive
as the fake provider returned them, once each."""
from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import openai
import pytest
import requests
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from apps.ingestion.models import RawEvent
from apps.metrics.models import SessionAggregate
from apps.metrics.selectors import session_metadata
from tests.otlp.payloads import otlp_json

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "tests"))
from sdk_fakes import CHAT_USAGE, FakeOpenAIServer, Scripted  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)


class UniqueIdOpenAIServer(FakeOpenAIServer):
    """The loopback OpenAI fake, giving every completion its own id as the real API does."""

    _ids = itertools.count(1)

    @classmethod
    def _chat_completion(cls, model, usage):
        return {**FakeOpenAIServer._chat_completion(model, usage), "id": f"chatcmpl-{next(cls._ids)}"}


@pytest.fixture
def provider():
    server = UniqueIdOpenAIServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def instrumented(live_server, ingest_key, monkeypatch):
    """A tracer provider exporting with the documented variables, and openai instrumented with it."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"{live_server.url}/otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer%20{ingest_key}")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "user.email=ada@example.com,team=payments")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "support-bot")
    tracer_provider = TracerProvider(resource=Resource.create({"service.version": "2.1.0"}))
    exporter = OTLPSpanExporter()
    captured = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer_provider.add_span_processor(SimpleSpanProcessor(captured))
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider)
    yield tracer_provider, captured
    instrumentor.uninstrument()
    tracer_provider.shutdown()


def _run_app(tracer_provider, provider) -> str:
    """Two chat calls in one app run; the second is throttled once and retried by the app."""
    client = openai.OpenAI(base_url=provider.url + "/v1", api_key="sk-test", max_retries=0)
    tracer = tracer_provider.get_tracer("support-bot")
    with tracer.start_as_current_span("answer-ticket") as run:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hello?"}])
        provider.script = [Scripted(429, {"retry-after": "0.3"})]
        try:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Again?"}])
        except openai.RateLimitError:
            time.sleep(0.3)
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Again?"}])
        return format(run.get_span_context().trace_id, "032x")


def test_openai_app_instrumented_with_opentelemetry_shows_its_calls(instrumented, provider, project):
    tracer_provider, _ = instrumented
    trace_id = _run_app(tracer_provider, provider)
    assert tracer_provider.force_flush(10_000)

    usage = list(RawEvent.objects.filter(project=project, type="usage"))
    assert len(usage) == 2
    for event in usage:
        assert (event.input_tokens, event.output_tokens) == (CHAT_USAGE["prompt_tokens"],
                                                              CHAT_USAGE["completion_tokens"])
        assert (event.session_id, event.provider, event.model) == (trace_id, "openai", "gpt-4o")
        assert event.attributes["user"] == "ada@example.com" and event.attributes["team"] == "payments"
        assert event.attributes["source"] == "support-bot" and event.attributes["source_version"] == "2.1.0"
    throttle = RawEvent.objects.get(project=project, type="throttle")
    assert throttle.status_code == 429 and throttle.session_id == trace_id
    # The gap from the failed attempt's end to the retry's start: the app's 0.3 s sleep plus its own
    # exception handling on a busy machine.
    assert 300 <= throttle.wait_ms <= 400
    assert throttle.call_id in {event.call_id for event in usage}

    document = session_metadata(project=project, session_id=trace_id)
    totals = document["tokenMetrics"]["sessionTokenUsage"]
    assert (totals["input"], totals["output"]) == (2 * CHAT_USAGE["prompt_tokens"], 2 * CHAT_USAGE["completion_tokens"])
    assert document["throttle"]["count"] == 1
    session = SessionAggregate.objects.get(project=project, session_id=trace_id)
    assert session.attributes["user"] == "ada@example.com" and session.attributes["source"] == "support-bot"


def test_the_same_spans_as_otlp_json_are_the_same_events_and_count_once(
    instrumented, provider, project, live_server, ingest_key
):
    tracer_provider, captured = instrumented
    _run_app(tracer_provider, provider)
    assert tracer_provider.force_flush(10_000)
    via_protobuf = sorted(RawEvent.objects.filter(project=project).values_list("event_id", "input_tokens"))
    assert len(via_protobuf) == 3

    # The Python exporter speaks protobuf only; the JSON encoding of the very same spans:
    body = otlp_json(encode_spans(captured.get_finished_spans()))
    response = requests.post(f"{live_server.url}/otlp/v1/traces", data=body, timeout=10, headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {ingest_key}"})
    assert response.status_code == 200, response.text
    assert "0 events stored, 3 already stored" in response.json()["partialSuccess"]["errorMessage"]
    assert sorted(RawEvent.objects.filter(project=project).values_list("event_id", "input_tokens")) == via_protobuf
