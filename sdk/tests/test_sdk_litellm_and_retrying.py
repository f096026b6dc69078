"""LiteLLMCallback with real litellm.completion(mock_response=...), and the `retrying` helper."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from sdk_fakes import FakeIngestServer

import tokensite_client as ts
from tokensite_client.litellm_loader import bundled_tokenizers_dir, import_litellm

litellm = import_litellm()
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def tracker(make_tracker: Any, ingest: FakeIngestServer) -> ts.Tracker:
    return make_tracker(ingest.url)


@pytest.fixture
def callback(tracker: ts.Tracker) -> Iterator[Any]:
    # litellm registers one logger per class for the life of the process: start each test
    # from empty lists so this test's tracker is the one that hears the calls.
    litellm.logging_callback_manager._reset_all_callbacks()
    handler = ts.LiteLLMCallback(tracker)
    litellm.callbacks = [handler]
    yield handler
    litellm.logging_callback_manager._reset_all_callbacks()
    litellm.callbacks = []


def usage_events(tracker: ts.Tracker, ingest: FakeIngestServer, expected: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5  # litellm runs sync success callbacks on its own thread
    while tracker.stats().recorded < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tracker.flush(5)
    return sorted(ingest.events_of_type("usage"), key=lambda event: event["timestamp"])


def test_litellm_is_offline_with_bundled_tokenizers() -> None:
    import os

    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(bundled_tokenizers_dir())
    assert litellm.disable_hf_tokenizer_download is True


def test_sync_completion_is_recorded_once_with_its_step(tracker: ts.Tracker, ingest: FakeIngestServer,
                                                        callback: Any) -> None:
    with tracker.step("persona_generation"):
        response = litellm.completion(model="gpt-4o", messages=MESSAGES, mock_response="Hello there")
    (usage,) = usage_events(tracker, ingest, 1)
    assert (usage["provider"], usage["model"], usage["step"]) == ("openai", "gpt-4o", "persona_generation")
    assert (usage["input_tokens"], usage["output_tokens"]) == (response.usage.prompt_tokens,
                                                               response.usage.completion_tokens)
    assert usage["duration_ms"] >= 0 and "time_to_first_token_ms" not in usage


def test_async_completion_is_recorded_once(tracker: ts.Tracker, ingest: FakeIngestServer, callback: Any) -> None:
    async def main() -> None:
        with tracker.step("async"):
            await litellm.acompletion(model="anthropic/claude-3-5-sonnet-20241022", messages=MESSAGES,
                                      mock_response="hey")
        await asyncio.sleep(0.1)

    asyncio.run(main())
    (usage,) = usage_events(tracker, ingest, 1)
    assert (usage["provider"], usage["step"]) == ("anthropic", "async")


def test_streamed_completion_has_time_to_first_token(tracker: ts.Tracker, ingest: FakeIngestServer,
                                                     callback: Any) -> None:
    for _ in litellm.completion(model="gpt-4o", messages=MESSAGES, mock_response="one two three", stream=True,
                                stream_options={"include_usage": True}):
        pass
    (usage,) = usage_events(tracker, ingest, 1)
    assert 0 <= usage["time_to_first_token_ms"] <= usage["duration_ms"]
    assert usage["output_tokens"] > 0


def test_cache_and_reasoning_details_come_from_litellms_usage(tracker: ts.Tracker, ingest: FakeIngestServer,
                                                              callback: Any) -> None:
    mocked = litellm.ModelResponse(
        model="gpt-4o", choices=[{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                  "finish_reason": "stop"}],
        usage=litellm.Usage(prompt_tokens=1000, completion_tokens=200, total_tokens=1200,
                            prompt_tokens_details={"cached_tokens": 600, "cache_write_tokens": 100},
                            completion_tokens_details={"reasoning_tokens": 150}))
    litellm.completion(model="gpt-4o", messages=MESSAGES, mock_response=mocked)
    (usage,) = usage_events(tracker, ingest, 1)
    assert (usage["input_tokens"], usage["output_tokens"], usage["cache_read_tokens"], usage["cache_write_tokens"],
            usage["thought_tokens"]) == (1000, 200, 600, 100, 150)


def test_rate_limit_failure_becomes_a_throttle_event(tracker: ts.Tracker, ingest: FakeIngestServer,
                                                     callback: Any) -> None:
    with pytest.raises(litellm.RateLimitError):
        litellm.completion(model="gpt-4o", messages=MESSAGES, mock_response=litellm.RateLimitError(
            message="slow down", llm_provider="openai", model="gpt-4o"))
    deadline = time.monotonic() + 5
    while tracker.stats().recorded < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tracker.flush(5)
    (throttle,) = ingest.events_of_type("throttle")
    assert (throttle["status_code"], throttle["model"], throttle["attributes"]) == (
        429, "gpt-4o", {"wait_measured": False})


def rate_limit_error(retry_after: str) -> openai.RateLimitError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(429, headers={"retry-after": retry_after}, request=request)
    return openai.RateLimitError("rate limited", response=response, body=None)


def test_retrying_decorator_records_each_measured_wait_linked_to_the_call(
        tracker: ts.Tracker, ingest: FakeIngestServer) -> None:
    failures = [rate_limit_error("0.1"), rate_limit_error("0.05")]

    @ts.retrying(tracker, model="gpt-4o", provider="openai")
    def ask() -> str:
        if failures:
            raise failures.pop(0)
        with tracker.call(model="gpt-4o", provider="openai") as call:
            call.set_usage(input_tokens=10, output_tokens=3)
        return "ok"

    started = time.perf_counter()
    assert ask() == "ok"
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert tracker.flush(5)
    throttles = sorted(ingest.events_of_type("throttle"), key=lambda e: e["attempt"])
    (usage,) = ingest.events_of_type("usage")
    assert [(t["attempt"], t["retry_after_ms"]) for t in throttles] == [(1, 100.0), (2, 50.0)]
    assert 150 <= sum(t["wait_ms"] for t in throttles) <= elapsed_ms
    assert throttles[0]["call_id"] == throttles[1]["call_id"] == usage["call_id"]


def test_retrying_gives_up_after_max_attempts_and_ignores_other_errors(tracker: ts.Tracker) -> None:
    calls = []

    @ts.retrying(tracker, max_attempts=3, base_delay_s=0.001)
    def always_limited() -> None:
        calls.append(1)
        raise rate_limit_error("0")

    with pytest.raises(openai.RateLimitError):
        always_limited()
    assert len(calls) == 3

    @ts.retrying(tracker)
    def broken() -> None:
        raise KeyError("not a rate limit")

    with pytest.raises(KeyError):
        broken()
    assert tracker.stats().recorded == 2


def test_retrying_async_decorator_and_context_manager(tracker: ts.Tracker, ingest: FakeIngestServer) -> None:
    failures = [rate_limit_error("0.05")]

    @ts.retrying(tracker, model="m", provider="p")
    async def ask() -> str:
        if failures:
            raise failures.pop(0)
        return "ok"

    assert asyncio.run(ask()) == "ok"
    with ts.retrying(tracker, model="m", provider="p") as retry:
        retry.record(wait_ms=1200, status_code=529, retry_after_ms=1000)  # the app slept itself
        slept = retry.sleep(0.02, status_code=503)
    assert tracker.flush(5)
    throttles = ingest.events_of_type("throttle")
    assert sorted((t["status_code"], t["attempt"]) for t in throttles) == [(429, 1), (503, 2), (529, 1)]
    manual = [t for t in throttles if t["status_code"] in (503, 529)]
    assert manual[0]["call_id"] == manual[1]["call_id"] == retry.call_id
    assert abs(next(t["wait_ms"] for t in manual if t["status_code"] == 503) - slept * 1000) < 5
