"""instrument_openai with the real openai client against a fake OpenAI server on loopback."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest
from sdk_fakes import CHAT_USAGE, RESPONSES_USAGE, STREAM_WORDS, FakeIngestServer, FakeOpenAIServer, Scripted

import tokensite_client as ts

MESSAGES = [{"role": "user", "content": "Say hello to a friend."}]


@pytest.fixture
def tracker(make_tracker: Any, ingest: FakeIngestServer) -> ts.Tracker:
    return make_tracker(ingest.url)


def sync_client(server: FakeOpenAIServer, tracker: ts.Tracker) -> openai.OpenAI:
    return ts.instrument_openai(openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=3), tracker)


def async_client(server: FakeOpenAIServer, tracker: ts.Tracker) -> openai.AsyncOpenAI:
    return ts.instrument_openai(openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=3),
                                tracker)


def delivered(tracker: ts.Tracker, ingest: FakeIngestServer, event_type: str) -> list[dict[str, Any]]:
    assert tracker.flush(5)
    return sorted(ingest.events_of_type(event_type), key=lambda event: event["timestamp"])


def test_429s_become_throttle_events_with_the_wait_actually_slept(
        tracker: ts.Tracker, ingest: FakeIngestServer, openai_server: FakeOpenAIServer) -> None:
    openai_server.script = [Scripted(429, {"retry-after": "0.25"}), Scripted(529, {"retry-after": "0.15"})]
    client = sync_client(openai_server, tracker)
    with tracker.step("persona_generation"):
        started = time.monotonic()
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        call_ms = (time.monotonic() - started) * 1000
    first, second = delivered(tracker, ingest, "throttle")
    (usage,) = delivered(tracker, ingest, "usage")
    assert [(t["status_code"], t["attempt"], t["retry_after_ms"]) for t in (first, second)] == [
        (429, 1, 250.0), (529, 2, 150.0)]
    # Each retry reached the server at least the recorded wait after the refusal went out: the
    # wait is the sleep itself. (The rest of the gap is the client's own work, which a loaded CI
    # host stretches to hundreds of ms, so it has no upper bound here.)
    for throttle, gap_ms in zip((first, second), openai_server.retry_gaps_ms(), strict=True):
        assert throttle["retry_after_ms"] - 1 <= throttle["wait_ms"] <= gap_ms
    assert first["call_id"] == second["call_id"] == usage["call_id"]
    assert usage["step"] == first["step"] == "persona_generation"
    # The successful attempt only: the whole call minus the sleeps, whatever the host's load.
    assert usage["duration_ms"] <= call_ms - first["wait_ms"] - second["wait_ms"] + 1


def test_chat_completion_usage_with_cache_reasoning_and_ratelimit_headers(
        tracker: ts.Tracker, ingest: FakeIngestServer, openai_server: FakeOpenAIServer) -> None:
    client = sync_client(openai_server, tracker)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    (usage,) = delivered(tracker, ingest, "usage")
    assert (usage["input_tokens"], usage["output_tokens"], usage["cache_read_tokens"], usage["thought_tokens"]) == (
        2006, 300, 1920, 128)
    assert usage["usage_raw"]["prompt_tokens_details"]["cached_tokens"] == 1920
    assert usage["attributes"]["x-ratelimit-remaining-tokens"] == 27694
    assert usage["attributes"]["x-ratelimit-reset-tokens"] == "4.612s"
    assert "time_to_first_token_ms" not in usage


def test_stream_asks_for_usage_and_hides_the_extra_chunk(
        tracker: ts.Tracker, ingest: FakeIngestServer, openai_server: FakeOpenAIServer) -> None:
    openai_server.first_chunk_delay_s = 0.05
    client = sync_client(openai_server, tracker)
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    chunks = list(stream)
    assert openai_server.requests[0].body["stream_options"] == {"include_usage": True}
    assert all(chunk.choices for chunk in chunks)  # the caller did not ask for usage chunks
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(STREAM_WORDS)
    (usage,) = delivered(tracker, ingest, "usage")
    assert (usage["input_tokens"], usage["output_tokens"]) == (CHAT_USAGE["prompt_tokens"],
                                                               CHAT_USAGE["completion_tokens"])
    assert 45 <= usage["time_to_first_token_ms"] <= usage["duration_ms"]
    assert "token_count_estimated" not in usage.get("attributes", {})


def test_stream_that_asked_for_usage_itself_still_sees_the_usage_chunk(
        tracker: ts.Tracker, openai_server: FakeOpenAIServer) -> None:
    client = sync_client(openai_server, tracker)
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].choices == []


def test_stream_without_usage_is_counted_from_its_text_and_marked_estimated(
        tracker: ts.Tracker, ingest: FakeIngestServer, openai_server: FakeOpenAIServer) -> None:
    import litellm

    openai_server.stream_usage = False
    client = sync_client(openai_server, tracker)
    with client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True) as stream:
        for _ in stream:
            pass
    (usage,) = delivered(tracker, ingest, "usage")
    assert usage["attributes"]["token_count_estimated"] is True
    assert usage["attributes"]["tokenizer"] == "tiktoken/o200k_base"
    assert usage["output_tokens"] == litellm.token_counter(model="gpt-4o", text="".join(STREAM_WORDS))
    assert usage["input_tokens"] == litellm.token_counter(model="gpt-4o", messages=MESSAGES)


def test_responses_api_plain_and_streamed(tracker: ts.Tracker, ingest: FakeIngestServer,
                                          openai_server: FakeOpenAIServer) -> None:
    client = sync_client(openai_server, tracker)
    client.responses.create(model="o4-mini", input="hello")
    events = list(client.responses.create(model="o4-mini", input="hello", stream=True))
    assert events[-1].type == "response.completed"
    plain, streamed = delivered(tracker, ingest, "usage")
    for usage in (plain, streamed):
        assert (usage["input_tokens"], usage["output_tokens"], usage["cache_read_tokens"],
                usage["thought_tokens"]) == (328, 52, 256, 16)
        assert usage["usage_raw"] == RESPONSES_USAGE
    assert "time_to_first_token_ms" in streamed and "time_to_first_token_ms" not in plain


def test_async_client_plain_streamed_and_throttled(tracker: ts.Tracker, ingest: FakeIngestServer,
                                                   openai_server: FakeOpenAIServer) -> None:
    openai_server.script = [Scripted(503, {"retry-after-ms": "120"})]
    client = async_client(openai_server, tracker)

    async def main() -> list[str]:
        with tracker.step("async-step"):
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
            stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
            return [chunk.choices[0].delta.content or "" async for chunk in stream]

    assert "".join(asyncio.run(main())) == "".join(STREAM_WORDS)
    (throttle,) = delivered(tracker, ingest, "throttle")
    plain, streamed = delivered(tracker, ingest, "usage")
    assert (throttle["status_code"], throttle["retry_after_ms"], throttle["call_id"]) == (503, 120.0, plain["call_id"])
    assert 120 <= throttle["wait_ms"] < 170
    assert plain["step"] == streamed["step"] == "async-step"
    assert streamed["output_tokens"] == 300 and "time_to_first_token_ms" in streamed


def test_a_call_that_fails_after_its_retries_records_the_waits_only(
        tracker: ts.Tracker, ingest: FakeIngestServer, openai_server: FakeOpenAIServer) -> None:
    openai_server.script = [Scripted(429, {"retry-after": "0.01"}) for _ in range(4)]
    client = sync_client(openai_server, tracker)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert [t["attempt"] for t in delivered(tracker, ingest, "throttle")] == [1, 2, 3]
    assert delivered(tracker, ingest, "usage") == []


def test_instrumenting_twice_is_refused(tracker: ts.Tracker, openai_server: FakeOpenAIServer) -> None:
    client = sync_client(openai_server, tracker)
    with pytest.raises(ValueError):
        ts.instrument_openai(client, tracker)
