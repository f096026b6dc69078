"""The SDK against a real TokenSite server: two lines in an app put its calls, steps, waits and
costs on the session, and events survive an outage exactly once."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import openai
import pytest

import tokensite_client as ts
from apps.ingestion.models import RawEvent
from apps.metrics.selectors import session_metadata

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "tests"))
from sdk_fakes import CHAT_USAGE, FakeOpenAIServer, Scripted  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def provider():
    server = FakeOpenAIServer()
    server.start()
    yield server
    server.stop()


def test_an_instrumented_openai_app_shows_up_on_its_session(live_server, project, ingest_key, provider, tmp_path):
    tracker = ts.Tracker(url=live_server.url, api_key=ingest_key, session_id="app-run", spool_dir=tmp_path)
    client = ts.instrument_openai(openai.OpenAI(base_url=provider.url + "/v1", api_key="sk-test", max_retries=3), tracker)
    provider.script = [Scripted(429, {"retry-after": "0.2"})]
    try:
        with tracker.step("persona_generation"):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Who are you?"}])
        with tracker.step("summary_generation"):
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Summarise."}])
        assert tracker.flush(timeout=15)
    finally:
        tracker.close()

    document = session_metadata(project=project, session_id="app-run")
    steps = document["token_usage"]["breakdown_by_step"]
    assert [(s["step"], s["calls"]) for s in steps] == [("persona_generation", 1), ("summary_generation", 1)]
    usage = document["tokenMetrics"]["sessionTokenUsage"]
    assert usage["input"] == 2 * CHAT_USAGE["prompt_tokens"]
    assert usage["cache"] == 2 * CHAT_USAGE["prompt_tokens_details"]["cached_tokens"]
    assert usage["thought"] == 2 * CHAT_USAGE["completion_tokens_details"]["reasoning_tokens"]
    assert document["throttle"]["count"] == 1
    assert 150 <= document["throttle"]["wait_ms"] <= 2000
    assert steps[0]["throttle_wait_ms"] == document["throttle"]["wait_ms"]
    assert document["cost"]["estimated_usd"] > 0 and document["cost"]["unpriced_tokens"] == 0


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_events_recorded_while_the_server_is_away_arrive_exactly_once(live_server, project, ingest_key, tmp_path):
    away = ts.Tracker(url=f"http://127.0.0.1:{_closed_port()}", api_key=ingest_key, session_id="outage",
                      spool_dir=tmp_path)  # fmt: skip
    for index in range(25):
        away.record_usage(model="gpt-4o-mini", provider="openai", input_tokens=100 + index, output_tokens=10,
                          duration_ms=50)  # fmt: skip
    away.close(timeout=3)
    assert RawEvent.objects.filter(project=project).count() == 0

    back = ts.Tracker(url=live_server.url, api_key=ingest_key, session_id="after", spool_dir=tmp_path)
    back.record_usage(model="gpt-4o-mini", provider="openai", input_tokens=1, output_tokens=1, duration_ms=5)
    assert back.flush(timeout=15)
    back.close()
    # A third tracker on the same folder must not replay anything again.
    again = ts.Tracker(url=live_server.url, api_key=ingest_key, session_id="again", spool_dir=tmp_path)
    assert again.flush(timeout=15)
    again.close()

    assert RawEvent.objects.filter(project=project, session_id="outage").count() == 25
    assert RawEvent.objects.filter(project=project).count() == 26
    assert session_metadata(project=project, session_id="outage")["token_usage"]["total_input_tokens"] == sum(
        100 + index for index in range(25))
