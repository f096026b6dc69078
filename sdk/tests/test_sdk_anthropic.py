"""instrument_anthropic with the real anthropic client against a fake Messages API on loopback."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import anthropic
import pytest
from sdk_fakes import (
    ANTHROPIC_RATELIMIT_HEADERS,
    ANTHROPIC_USAGE,
    STREAM_WORDS,
    FakeAnthropicServer,
    FakeIngestServer,
    Scripted,
)

import tokensite_client as ts

MESSAGES = [{"role": "user", "content": "Say hello to a friend."}]
MODEL = "claude-sonnet-4-5"
# ANTHROPIC_USAGE in TokenSite's convention: input includes the cached prompt tokens.
EXPECTED_COUNTS = {
    "input_tokens": 21 + 100_000 + 1200, "output_tokens": 393, "cache_read_tokens": 1200,
    "cache_write_tokens": 100_000, "cache_write_1h_tokens": 60_000, "service_tier": "priority",
}


@pytest.fixture
def tracker(make_tracker: Any, ingest: FakeIngestServer) -> ts.Tracker:
    return make_tracker(ingest.url)


def sync_client(server: FakeAnthropicServer, tracker: ts.Tracker, max_retries: int = 3) -> anthropic.Anthropic:
    return ts.instrument_anthropic(
        anthropic.Anthropic(base_url=server.url, api_key="sk-ant-test", max_retries=max_retries), tracker)


def async_client(server: FakeAnthropicServer, tracker: ts.Tracker) -> anthropic.AsyncAnthropic:
    return ts.instrument_anthropic(
        anthropic.AsyncAnthropic(base_url=server.url, api_key="sk-ant-test", max_retries=3), tracker)


def delivered(tracker: ts.Tracker, ingest: FakeIngestServer, event_type: str) -> list[dict[str, Any]]:
    assert tracker.flush(5)
    return sorted(ingest.events_of_type(event_type), key=lambda event: event["timestamp"])


def counts_of(usage: dict[str, Any]) -> dict[str, Any]:
    return {name: usage.get(name) for name in EXPECTED_COUNTS}


def test_429_then_529_become_throttle_events_with_the_waits_actually_slept(
        tracker: ts.Tracker, ingest: FakeIngestServer, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script = [
        Scripted(429, {"retry-after": "0.2", "anthropic-ratelimit-input-tokens-remaining": "0"}),
        Scripted(529, {"retry-after": "0.1"}),
    ]
    client = sync_client(anthropic_server, tracker)
    with tracker.step("summarise"):
        started = time.monotonic()
        client.messages.create(model=MODEL, max_tokens=512, messages=MESSAGES)
        call_ms = (time.monotonic() - started) * 1000
    first, second = delivered(tracker, ingest, "throttle")
    (usage,) = delivered(tracker, ingest, "usage")
    assert [(t["status_code"], t["attempt"], t["retry_after_ms"]) for t in (first, second)] == [
        (429, 1, 200.0), (529, 2, 100.0)]
    # Each retry reached the server at least the recorded wait after the refusal went out: the
    # wait is the sleep itself. (The rest of the gap is the client's own work, which a loaded CI
    # host stretches to hundreds of ms, so it has no upper bound here.)
    for throttle, gap_ms in zip((first, second), anthropic_server.retry_gaps_ms(), strict=True):
        assert throttle["retry_after_ms"] - 1 <= throttle["wait_ms"] <= gap_ms
    assert first["attributes"] == {"retry-after": 0.2, "anthropic-ratelimit-input-tokens-remaining": 0}
    assert first["call_id"] == second["call_id"] == usage["call_id"]
    assert first["provider"] == usage["provider"] == "anthropic"
    assert first["model"] == usage["model"] == MODEL
    assert usage["step"] == first["step"] == "summarise"
    assert counts_of(usage) == EXPECTED_COUNTS
    # The successful attempt only: the whole call minus the sleeps, whatever the host's load.
    assert usage["duration_ms"] <= call_ms - first["wait_ms"] - second["wait_ms"] + 1


def test_message_usage_with_one_hour_cache_split_service_tier_and_ratelimit_headers(
        tracker: ts.Tracker, ingest: FakeIngestServer, anthropic_server: FakeAnthropicServer) -> None:
    client = sync_client(anthropic_server, tracker)
    message = client.messages.create(model=MODEL, max_tokens=512, messages=MESSAGES)
    assert isinstance(message, anthropic.types.Message)
    assert message.content[0].text == "".join(STREAM_WORDS)
    assert message.usage.cache_creation.ephemeral_1h_input_tokens == 60_000
    (usage,) = delivered(tracker, ingest, "usage")
    assert counts_of(usage) == EXPECTED_COUNTS
    assert usage["usage_raw"] == ANTHROPIC_USAGE
    assert usage["attributes"] == {
        name: int(value) if value.isdigit() else value
        for name, value in ANTHROPIC_RATELIMIT_HEADERS.items() if name.startswith("anthropic-ratelimit-")}
    assert "time_to_first_token_ms" not in usage


def test_usage_without_one_hour_writes_or_tier_leaves_both_fields_out(
        tracker: ts.Tracker, ingest: FakeIngestServer, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script = [Scripted(usage={"input_tokens": 10, "output_tokens": 2,
                                               "cache_creation_input_tokens": 5})]
    sync_client(anthropic_server, tracker).messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
    (usage,) = delivered(tracker, ingest, "usage")
    assert (usage["input_tokens"], usage["cache_write_tokens"]) == (15, 5)
    assert "cache_write_1h_tokens" not in usage and "service_tier" not in usage


def test_create_with_stream_true_takes_input_from_message_start_and_output_from_message_delta(
        tracker: ts.Tracker, ingest: FakeIngestServer, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.first_chunk_delay_s = 0.05
    client = sync_client(anthropic_server, tracker)
    events = list(client.messages.create(model=MODEL, max_tokens=512, messages=MESSAGES, stream=True))
    assert [event.type for event in events][:2] == ["message_start", "content_block_start"]
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == "".join(STREAM_WORDS)
    (usage,) = delivered(tracker, ingest, "usage")
    assert counts_of(usage) == EXPECTED_COUNTS
    assert 45 <= usage["time_to_first_token_ms"] <= usage["duration_ms"]
    assert usage["attributes"]["anthropic-ratelimit-requests-remaining"] == 49


def test_messages_stream_helper_records_whichever_way_the_stream_is_read(
        tracker: ts.Tracker, ingest: FakeIngestServer, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script = [Scripted(429, {"retry-after": "0.05"})]
    client = sync_client(anthropic_server, tracker)
    with client.messages.stream(model=MODEL, max_tokens=512, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
    with client.messages.stream(model=MODEL, max_tokens=512, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    assert text == "".join(STREAM_WORDS) and final.content[0].text == text
    assert final.usage.output_tokens == 393
    (throttle,) = delivered(tracker, ingest, "throttle")
    first, second = delivered(tracker, ingest, "usage")
    assert throttle["call_id"] == first["call_id"] != second["call_id"]
    assert throttle["wait_ms"] >= 49
    for usage in (first, second):
        assert counts_of(usage) == EXPECTED_COUNTS
        assert 0 <= usage["time_to_first_token_ms"] <= usage["duration_ms"]


def test_message_delta_with_cumulative_input_counts_replaces_message_start(
        tracker: ts.Tracker, ingest: FakeIngestServer, anthropic_server: FakeAnthropicServer) -> None:
    client = sync_client(anthropic_server, tracker)
    original = anthropic_server._message_events

    def later_api_version(model: str, usage: dict[str, Any]) -> list[dict[str, Any]]:
        events = original(model, usage)
        events[-2]["usage"].update(input_tokens=30, cache_read_input_tokens=1300)
        return events

    anthropic_server._message_events = later_api_version  # type: ignore[method-assign]
    with client.messages.stream(model=MODEL, max_tokens=512, messages=MESSAGES) as stream:
        stream.until_done()
    (usage,) = delivered(tracker, ingest, "usage")
    assert (usage["input_tokens"], usage["cache_read_tokens"], usage["cache_write_1h_tokens"]) == (
        30 + 1300 + 100_000, 1300, 60_000)


def test_async_client_plain_streamed_stream_helper_and_throttled(
        tracker: ts.Tracker, ingest: FakeIngestServer, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script = [Scripted(529, {"retry-after": "0.12"})]
    client = async_client(anthropic_server, tracker)

    async def main() -> tuple[str, str]:
        with tracker.step("async-step"):
            await client.messages.create(model=MODEL, max_tokens=512, messages=MESSAGES)
            stream = await client.messages.create(model=MODEL, max_tokens=512, messages=MESSAGES, stream=True)
            streamed = "".join([e.delta.text async for e in stream if e.type == "content_block_delta"])
            async with client.messages.stream(model=MODEL, max_tokens=512, messages=MESSAGES) as helper:
                helped = "".join([text async for text in helper.text_stream])
        await client.close()
        return streamed, helped

    assert asyncio.run(main()) == ("".join(STREAM_WORDS), "".join(STREAM_WORDS))
    (throttle,) = delivered(tracker, ingest, "throttle")
    plain, streamed, helped = delivered(tracker, ingest, "usage")
    assert (throttle["status_code"], throttle["retry_after_ms"], throttle["call_id"]) == (529, 120.0, plain["call_id"])
    assert 120 <= throttle["wait_ms"] < 170
    assert {plain["step"], streamed["step"], helped["step"]} == {"async-step"}
    assert counts_of(plain) == counts_of(streamed) == counts_of(helped) == EXPECTED_COUNTS
    assert "time_to_first_token_ms" not in plain
    assert "time_to_first_token_ms" in streamed and "time_to_first_token_ms" in helped


def test_an_error_the_client_does_not_retry_reaches_the_caller_and_records_nothing(
        tracker: ts.Tracker, ingest: FakeIngestServer, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script = [Scripted(400), Scripted(400)]
    client = sync_client(anthropic_server, tracker)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, max_tokens=512, messages=MESSAGES)
    with pytest.raises(anthropic.BadRequestError), client.messages.stream(
            model=MODEL, max_tokens=512, messages=MESSAGES):
        pass
    client.messages.create(model=MODEL, max_tokens=512, messages=MESSAGES)
    assert delivered(tracker, ingest, "throttle") == []
    (usage,) = delivered(tracker, ingest, "usage")
    assert usage["call_id"] is not None and counts_of(usage) == EXPECTED_COUNTS


def test_a_call_that_fails_after_its_retries_records_the_waits_only(
        tracker: ts.Tracker, ingest: FakeIngestServer, anthropic_server: FakeAnthropicServer) -> None:
    anthropic_server.script = [Scripted(429, {"retry-after": "0.01"}) for _ in range(3)]
    client = sync_client(anthropic_server, tracker, max_retries=2)
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model=MODEL, max_tokens=512, messages=MESSAGES)
    assert [t["attempt"] for t in delivered(tracker, ingest, "throttle")] == [1, 2]
    assert delivered(tracker, ingest, "usage") == []


def test_usage_the_sdk_cannot_read_is_logged_and_the_message_still_returned(
        tracker: ts.Tracker, ingest: FakeIngestServer, anthropic_server: FakeAnthropicServer,
        caplog: pytest.LogCaptureFixture) -> None:
    broken = {**ANTHROPIC_USAGE, "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                                    "ephemeral_1h_input_tokens": 100_001}}
    anthropic_server.script = [Scripted(usage=broken)]
    with caplog.at_level(logging.WARNING, logger="tokensite_client"):
        message = sync_client(anthropic_server, tracker).messages.create(
            model=MODEL, max_tokens=512, messages=MESSAGES)
    assert message.usage.cache_creation.ephemeral_1h_input_tokens == 100_001
    assert "could not record an Anthropic call" in caplog.text
    assert delivered(tracker, ingest, "usage") == []


def test_beta_messages_are_instrumented_too(
        tracker: ts.Tracker, ingest: FakeIngestServer, anthropic_server: FakeAnthropicServer) -> None:
    client = sync_client(anthropic_server, tracker)
    client.beta.messages.create(model=MODEL, max_tokens=512, messages=MESSAGES)
    with client.beta.messages.stream(model=MODEL, max_tokens=512, messages=MESSAGES) as stream:
        stream.until_done()
    plain, streamed = delivered(tracker, ingest, "usage")
    assert counts_of(plain) == counts_of(streamed) == EXPECTED_COUNTS
    assert "time_to_first_token_ms" in streamed


def test_instrumenting_twice_or_a_foreign_object_is_refused(
        tracker: ts.Tracker, anthropic_server: FakeAnthropicServer) -> None:
    client = sync_client(anthropic_server, tracker)
    with pytest.raises(ValueError):
        ts.instrument_anthropic(client, tracker)
    with pytest.raises(TypeError):
        ts.instrument_anthropic(object(), tracker)


def test_bedrock_client_is_recorded_under_provider_bedrock(
        tracker: ts.Tracker, ingest: FakeIngestServer, anthropic_server: FakeAnthropicServer) -> None:
    bedrock = anthropic.AnthropicBedrock(base_url=anthropic_server.url, aws_region="us-east-1",
                                         aws_access_key="AKIDTEST", aws_secret_key="secret", max_retries=0)
    ts.instrument_anthropic(bedrock, tracker).messages.create(
        model="anthropic.claude-sonnet-4-5-v1:0", max_tokens=64, messages=MESSAGES)
    (usage,) = delivered(tracker, ingest, "usage")
    assert usage["provider"] == "bedrock" and counts_of(usage) == EXPECTED_COUNTS


def test_stream_closed_before_message_delta_counts_its_output_from_the_text_seen(
        tracker: ts.Tracker, ingest: FakeIngestServer, anthropic_server: FakeAnthropicServer) -> None:
    import litellm

    client = sync_client(anthropic_server, tracker)
    seen: list[str] = []
    with client.messages.create(model=MODEL, max_tokens=512, messages=MESSAGES, stream=True) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                seen.append(event.delta.text)
                if len(seen) == 2:
                    break
    (usage,) = delivered(tracker, ingest, "usage")
    assert usage["output_tokens"] == litellm.token_counter(model=MODEL, text="".join(seen)) > 1
    assert {**counts_of(usage), "output_tokens": 393} == EXPECTED_COUNTS
    assert usage["attributes"]["token_count_estimated"] is True
    assert usage["attributes"]["tokenizer"].startswith("tiktoken/")
    assert "usage_raw" not in usage
