"""Calls made by the real openai and anthropic clients, instrumented by the SDK, against the fake
provider servers of the SDK's tests: the events they produce carry the rate-limit header sets
those servers send, captured by the SDK exactly as in production."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anthropic
import openai

import tokensite_client as ts

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "tests"))
from sdk_fakes import (  # noqa: E402
    ANTHROPIC_RATELIMIT_HEADERS, RATELIMIT_HEADERS, FakeAnthropicServer, FakeIngestServer, FakeOpenAIServer, Scripted,
)

OPENAI_MODEL = "gpt-4o"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
MESSAGES = [{"role": "user", "content": "Say hello to a friend."}]
# Small enough that two calls stay inside Anthropic's announced per-minute limits of the fake server.
ANTHROPIC_SMALL_USAGE = {"input_tokens": 4000, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 0,
                         "output_tokens": 900}  # fmt: skip
__all__ = ["ANTHROPIC_RATELIMIT_HEADERS", "RATELIMIT_HEADERS", "Scripted"]


@dataclass
class FakeProviders:
    openai_server: FakeOpenAIServer
    anthropic_server: FakeAnthropicServer

    def clients(self, tracker: ts.Tracker) -> tuple[openai.OpenAI, anthropic.Anthropic]:
        return (
            ts.instrument_openai(openai.OpenAI(base_url=self.openai_server.url + "/v1", api_key="sk-test",
                                               max_retries=3), tracker),
            ts.instrument_anthropic(anthropic.Anthropic(base_url=self.anthropic_server.url, api_key="sk-ant-test",
                                                        max_retries=3), tracker),
        )  # fmt: skip


@contextmanager
def fake_providers() -> Iterator[FakeProviders]:
    providers = FakeProviders(FakeOpenAIServer(), FakeAnthropicServer())
    providers.openai_server.start()
    providers.anthropic_server.start()
    try:
        yield providers
    finally:
        providers.openai_server.stop()
        providers.anthropic_server.stop()


def within_one_minute() -> None:
    """Wait, when the clock minute has just turned or is about to, until 2 s into a minute: the
    calls that follow (and those that just ended) then share one minute bucket, so the peak minute
    holds all of them. Their retries wait 0.05 s each: the calls take well under a second, so 5 s
    before the turn is margin enough (and the wait, when there is one, at most 7 s)."""
    second = time.time() % 60
    if not 2 <= second <= 55:
        time.sleep((62 - second) % 60)


def call_both_providers(tracker: ts.Tracker, providers: FakeProviders) -> None:
    """Two OpenAI chat calls (the first rate-limited once) and two Anthropic messages (the first
    rate-limited, then overloaded); call `within_one_minute` first for them to share a minute."""
    openai_client, anthropic_client = providers.clients(tracker)
    providers.openai_server.script = [Scripted(429, {"retry-after": "0.05"})]
    providers.anthropic_server.script = [
        Scripted(429, {"retry-after": "0.05", "anthropic-ratelimit-input-tokens-remaining": "0"}),
        Scripted(529, {"retry-after": "0.05"}),
        Scripted(usage=ANTHROPIC_SMALL_USAGE),
        Scripted(usage=ANTHROPIC_SMALL_USAGE),
    ]
    for _ in range(2):
        openai_client.chat.completions.create(model=OPENAI_MODEL, messages=MESSAGES)
        anthropic_client.messages.create(model=ANTHROPIC_MODEL, max_tokens=512, messages=MESSAGES)


def captured_events(tmp_path: Path, *, in_one_minute: bool = False) -> list[dict]:
    """The events `call_both_providers` makes, as the SDK delivers them to an ingest server; all
    in one clock minute if `in_one_minute` (waiting for the next minute's start if need be)."""
    ingest = FakeIngestServer()
    ingest.start()
    tracker = ts.Tracker(url=ingest.url, api_key=ingest.api_key, session_id="limits-capture",
                         spool_dir=tmp_path / "spool", flush_interval_s=0.05)  # fmt: skip
    try:
        with fake_providers() as providers:
            if in_one_minute:
                within_one_minute()
            call_both_providers(tracker, providers)
        assert tracker.flush(10)
    finally:
        tracker.close(timeout=2)
        ingest.stop()
    with ingest.lock:
        return [dict(event) for event in ingest.stored.values()]
