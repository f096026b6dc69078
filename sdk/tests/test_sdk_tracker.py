"""The Tracker's recording API: events, steps, calls, totals and the summary box."""

from __future__ import annotations

import asyncio
import io
import threading
from datetime import datetime, timezone
from typing import Any

import pytest
from sdk_fakes import FakeIngestServer

import tokensite_client as ts
from tokensite_client.summary import format_usd


def test_usage_event_has_the_ingest_api_fields(make_tracker: Any, ingest: FakeIngestServer) -> None:
    tracker = make_tracker(ingest.url, session_id="session-1")
    started = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    event_id = tracker.record_usage(
        model="gpt-4o", provider="openai", input_tokens=100, output_tokens=40, duration_ms=1500,
        cache_read_tokens=60, thought_tokens=10, time_to_first_token_ms=300, timestamp=started,
        attributes={"app": "demo", "retry": False}, call_id="call-1")
    assert tracker.flush(5)
    assert ingest.stored[event_id] == {
        "event_id": event_id, "type": "usage", "session_id": "session-1", "step": "default",
        "provider": "openai", "model": "gpt-4o", "timestamp": "2026-01-02T03:04:05.678901+00:00",
        "duration_ms": 1500, "time_to_first_token_ms": 300, "input_tokens": 100, "output_tokens": 40,
        "cache_read_tokens": 60, "cache_write_tokens": 0, "tool_tokens": 0, "thought_tokens": 10,
        "attributes": {"app": "demo", "retry": False}, "call_id": "call-1"}


def test_throttle_event_has_the_ingest_api_fields(make_tracker: Any, ingest: FakeIngestServer) -> None:
    tracker = make_tracker(ingest.url)
    event_id = tracker.record_throttle(wait_ms=2500, status_code=529, attempt=2, retry_after_ms=2000,
                                       model="claude-sonnet-4-20250514", provider="anthropic", call_id="c")
    assert tracker.flush(5)
    event = ingest.stored[event_id]
    assert {k: event[k] for k in ("type", "wait_ms", "status_code", "attempt", "retry_after_ms", "call_id",
                                  "model", "provider")} == {
        "type": "throttle", "wait_ms": 2500, "status_code": 529, "attempt": 2, "retry_after_ms": 2000,
        "call_id": "c", "model": "claude-sonnet-4-20250514", "provider": "anthropic"}
    assert event["timestamp"].endswith("+00:00")


def test_timestamp_defaults_to_the_calls_start(make_tracker: Any) -> None:
    tracker = make_tracker(None)
    before = datetime.now(timezone.utc).timestamp()
    tracker.record_usage(model="m", provider="p", input_tokens=1, output_tokens=1, duration_ms=2000)
    (usage,) = tracker.summary()
    assert before - 2.0 - 0.05 <= usage.timestamp.timestamp() <= before - 2.0 + 0.05


@pytest.mark.parametrize("bad", [
    {"input_tokens": -1}, {"cache_read_tokens": 90, "cache_write_tokens": 20}, {"thought_tokens": 41},
    {"tool_tokens": 101}, {"input_tokens": 1.5}, {"duration_ms": -3},
    {"attributes": {"nested": {"a": 1}}}, {"attributes": {"big": "x" * 5000}},
    {"timestamp": datetime(2026, 1, 1)},
    {"cache_write_tokens": 10, "cache_write_1h_tokens": 11}, {"service_tier": "two words"},
])
def test_events_the_server_would_reject_fail_on_the_callers_line(make_tracker: Any, bad: dict[str, Any]) -> None:
    tracker = make_tracker(None)
    arguments: dict[str, Any] = {"model": "m", "provider": "p", "input_tokens": 100, "output_tokens": 40,
                                 "duration_ms": 10, **bad}
    with pytest.raises(ValueError):
        tracker.record_usage(**arguments)
    assert tracker.stats().recorded == 0


def test_steps_nest_and_restore(make_tracker: Any) -> None:
    tracker = make_tracker(None, step="main")
    record = lambda: tracker.record_usage(model="m", provider="p", input_tokens=1, output_tokens=1,  # noqa: E731
                                          duration_ms=1)
    record()
    with tracker.step("persona_generation"):
        record()
        with tracker.step("summary_generation"):
            record()
            record()
        record()
    record()
    assert {u.step: u.calls for u in tracker.summary()} == {"main": 2, "persona_generation": 2,
                                                             "summary_generation": 2}


def test_steps_are_separate_per_thread_and_per_task(make_tracker: Any) -> None:
    tracker = make_tracker(None)
    barrier = threading.Barrier(4)

    def worker(name: str) -> None:
        with tracker.step(name):
            barrier.wait()
            for _ in range(100):
                tracker.record_usage(model="m", provider="p", input_tokens=1, output_tokens=1, duration_ms=1)

    threads = [threading.Thread(target=worker, args=(f"thread-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    async def task(name: str) -> None:
        with tracker.step(name):
            for _ in range(50):
                await asyncio.sleep(0)
                tracker.record_usage(model="m", provider="p", input_tokens=1, output_tokens=1, duration_ms=1)

    async def main() -> None:
        await asyncio.gather(*(task(f"task-{i}") for i in range(3)))

    asyncio.run(main())
    assert {u.step: u.calls for u in tracker.summary()} == {
        **{f"thread-{i}": 100 for i in range(4)}, **{f"task-{i}": 50 for i in range(3)}}


def test_call_scope_times_the_call_and_takes_usage_from_a_response(make_tracker: Any,
                                                                   ingest: FakeIngestServer) -> None:
    tracker = make_tracker(ingest.url)
    anthropic_message = {"id": "msg_1", "model": "claude-3-5-sonnet-20241022", "usage": {
        "input_tokens": 20, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 30,
        "output_tokens": 7}}
    with tracker.step("drafting"), tracker.call(model="claude-3-5-sonnet", provider="anthropic") as call:
        call.mark_first_token()
        call.set_response(anthropic_message)
    assert tracker.flush(5)
    (event,) = ingest.events_of_type("usage")
    assert event["model"] == "claude-3-5-sonnet-20241022"
    assert (event["input_tokens"], event["cache_read_tokens"], event["cache_write_tokens"]) == (150, 100, 30)
    assert event["usage_raw"] == anthropic_message["usage"]
    assert event["step"] == "drafting" and event["call_id"] == call.call_id
    assert 0 <= event["time_to_first_token_ms"] <= event["duration_ms"]


def test_one_hour_writes_and_service_tier_are_sent_as_ingest_fields(make_tracker: Any,
                                                                    ingest: FakeIngestServer) -> None:
    tracker = make_tracker(ingest.url)
    event_id = tracker.record_usage(model="claude-sonnet-4-5", provider="anthropic", input_tokens=1000,
                                    output_tokens=10, duration_ms=5, cache_write_tokens=800,
                                    cache_write_1h_tokens=600, service_tier="Priority")
    assert tracker.flush(5)
    event = ingest.stored[event_id]
    assert (event["cache_write_tokens"], event["cache_write_1h_tokens"], event["service_tier"]) == (
        800, 600, "priority")


def test_call_scope_takes_the_one_hour_split_and_tier_from_responses(make_tracker: Any,
                                                                     ingest: FakeIngestServer) -> None:
    tracker = make_tracker(ingest.url)
    anthropic_message = {"model": "claude-sonnet-4-5", "usage": {
        "input_tokens": 20, "cache_creation_input_tokens": 300, "output_tokens": 7, "service_tier": "batch",
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200}}}
    openai_completion = {"model": "gpt-5", "service_tier": "flex", "usage": {
        "prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}}
    with tracker.call(model="claude-sonnet-4-5", provider="anthropic") as call:
        call.set_response(anthropic_message)
    with tracker.call(model="gpt-5", provider="openai") as call:
        call.set_response(openai_completion)
    assert tracker.flush(5)
    anthropic, openai = sorted(ingest.events_of_type("usage"), key=lambda event: event["provider"])
    assert (anthropic["cache_write_tokens"], anthropic["cache_write_1h_tokens"], anthropic["service_tier"]) == (
        300, 200, "batch")
    assert (openai["service_tier"], "cache_write_1h_tokens" in openai) == ("flex", False)


def test_call_scope_without_usage_records_nothing(make_tracker: Any) -> None:
    tracker = make_tracker(None)
    with pytest.raises(RuntimeError):
        with tracker.call(model="m", provider="p"):
            raise RuntimeError("provider down")
    assert tracker.summary() == []


def test_summary_gives_token_usage_per_step_and_model(make_tracker: Any) -> None:
    tracker = make_tracker(None)
    with tracker.step("persona_generation"):
        tracker.record_usage(model="gpt-4o", provider="openai", input_tokens=42000, output_tokens=7500,
                             duration_ms=10, cache_read_tokens=1000, thought_tokens=500)
    with tracker.step("summary_generation"):
        tracker.record_usage(model="gpt-4o-mini", provider="openai", input_tokens=3230, output_tokens=1250,
                             duration_ms=10)
        tracker.record_throttle(wait_ms=250, model="gpt-4o-mini", provider="openai")
    persona, summary = tracker.summary()
    assert isinstance(persona, ts.TokenUsage)
    assert (persona.step, persona.model, persona.input_tokens, persona.output_tokens, persona.total_tokens,
            persona.cache_read_tokens, persona.thought_tokens) == ("persona_generation", "gpt-4o", 42000, 7500,
                                                                   49500, 1000, 500)
    assert (summary.step, summary.total_tokens, summary.throttle_count, summary.throttle_wait_ms) == (
        "summary_generation", 4480, 1, 250)
    assert persona.timestamp.tzinfo is not None


def test_print_summary_draws_the_seed_box_with_litellm_prices(make_tracker: Any) -> None:
    import litellm

    tracker = make_tracker(None)
    tracker.record_usage(model="gpt-4o", provider="openai", input_tokens=42000, output_tokens=7500,
                         duration_ms=10, cache_read_tokens=2000)
    tracker.record_usage(model="gpt-4o", provider="openai", input_tokens=3230, output_tokens=1250,
                         duration_ms=10)
    output = io.StringIO()
    tracker.print_summary(file=output)
    prompt_cost, completion_cost = litellm.cost_per_token(
        model="gpt-4o", prompt_tokens=45230, completion_tokens=8750, cache_read_input_tokens=2000)
    assert output.getvalue() == (
        "Token Usage Summary\n"
        "───────────────────────────────\n"
        "Input tokens:   45,230\n"
        "Output tokens:   8,750\n"
        "Total tokens:   53,980\n"
        "───────────────────────────────\n"
        f"Estimated cost: {format_usd(prompt_cost + completion_cost)}\n")


@pytest.mark.parametrize(("amount", "text"), [(0.42, "$0.42"), (0.4213, "$0.4213"), (0.0042, "$0.0042"),
                                              (0.19806, "$0.1981"), (0, "$0.00"), (53980.5, "$53,980.50")])
def test_money_is_formatted_for_people(amount: float, text: str) -> None:
    assert format_usd(amount) == text


def test_unknown_model_is_unpriced_not_free(make_tracker: Any) -> None:
    tracker = make_tracker(None)
    tracker.record_usage(model="my-private-model", provider="custom", input_tokens=1000, output_tokens=200,
                         duration_ms=10)
    output = io.StringIO()
    tracker.print_summary(file=output)
    assert output.getvalue().splitlines()[-1] == "Estimated cost: unknown (1,200 tokens unpriced)"


def test_count_tokens_uses_the_models_tokeniser_offline(make_tracker: Any) -> None:
    import litellm

    tracker = make_tracker(None)
    text = "Token counts should be tracked, displayed, and stored in metadata."
    assert tracker.count_tokens(model="gpt-4o", text=text) == litellm.token_counter(model="gpt-4o", text=text)
    messages = [{"role": "user", "content": text}]
    assert tracker.count_tokens(model="gpt-4o", messages=messages) > tracker.count_tokens(model="gpt-4o", text=text)
    # llama-3 names would download a Hugging Face tokenizer; the SDK keeps it offline.
    assert tracker.count_tokens(model="llama-3-70b", text=text) > 0


def test_tracker_without_url_keeps_totals_and_sends_nothing(make_tracker: Any) -> None:
    tracker = make_tracker(None)
    tracker.record_usage(model="m", provider="p", input_tokens=3, output_tokens=4, duration_ms=1)
    stats = tracker.stats()
    assert (stats.recorded, stats.delivery_enabled, stats.sent) == (1, False, 0)
    assert tracker.flush(1)


def test_a_url_without_an_api_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENSITE_API_KEY", raising=False)
    with pytest.raises(ValueError, match="api_key"):
        ts.Tracker(url="http://127.0.0.1:9")


def test_url_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, ingest: FakeIngestServer,
                                               tmp_path: Any) -> None:
    monkeypatch.setenv("TOKENSITE_URL", ingest.url)
    monkeypatch.setenv("TOKENSITE_API_KEY", ingest.api_key)
    tracker = ts.Tracker(spool_dir=tmp_path)
    try:
        tracker.record_usage(model="m", provider="p", input_tokens=1, output_tokens=1, duration_ms=1)
        assert tracker.flush(5)
        assert len(ingest.stored) == 1
    finally:
        tracker.close()
