"""`tracker.budget_status()` and the budget guard, against a real HTTP server serving
`GET /api/v1/budgets` and the real openai, anthropic and litellm clients against fake providers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from sdk_fakes import FakeAnthropicServer, FakeIngestServer, FakeOpenAIServer

import tokensite_client as ts
from tokensite_client.litellm_loader import import_litellm

litellm = import_litellm()
MESSAGES = [{"role": "user", "content": "hi"}]


def budget(**overrides: Any) -> dict[str, Any]:
    """One item of `GET /api/v1/budgets` as BUDGETS_CONTRACT.md spells it: this month, 81% spent."""
    now = datetime.now(timezone.utc)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    item = {
        "id": 1, "scope": "project", "project": "checkout", "user": "", "model": "", "period": "month",
        "period_start": start.isoformat().replace("+00:00", "Z"), "period_end": end.isoformat().replace("+00:00", "Z"),
        "amount_usd": "100.00", "amount_tokens": None, "spent_usd": "81.2300", "spent_tokens": 123_456,
        "unpriced_tokens": 0, "share": 0.8123, "forecast_share": 1.2, "forecast_exceeds": True,
        "hard": False, "exceeded": False,
    }
    item.update(overrides)
    return item


SPENT_HARD = {"hard": True, "exceeded": True, "share": 1.04, "spent_usd": "104.0000"}


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def guarded(make_tracker: Any, ingest: FakeIngestServer) -> Callable[..., ts.Tracker]:
    """A tracker with the guard on, refreshing every 50 ms, once its first list has arrived."""
    def make(budgets: list[dict[str, Any]], **options: Any) -> ts.Tracker:
        ingest.budgets = budgets
        options.setdefault("budget_guard", True)
        tracker = make_tracker(ingest.url, budget_refresh_s=0.05, **options)
        wait_for(lambda: len(tracker.budget_status()) == len(budgets) and len(ingest.budget_requests) >= 1)
        return tracker
    return make


@pytest.fixture
def openai_client(openai_server: FakeOpenAIServer) -> Callable[[ts.Tracker], openai.OpenAI]:
    return lambda tracker: ts.instrument_openai(
        openai.OpenAI(base_url=openai_server.url + "/v1", api_key="sk-test", max_retries=0), tracker)


# budget_status() ----------------------------------------------------------------------------


def test_budget_status_is_the_fetched_list_typed(guarded: Any) -> None:
    tracker = guarded([budget(), budget(id=2, scope="team", project=None, amount_usd=None, amount_tokens=5_000_000,
                                        user="alice", model="gpt-4o")])
    first, second = tracker.budget_status()
    assert isinstance(first, ts.BudgetStatus)
    assert (first.id, first.scope, first.project, first.period) == (1, "project", "checkout", "month")
    assert first.amount_usd == Decimal("100.00") and first.spent_usd == Decimal("81.2300")
    assert first.period_start.tzinfo is not None and first.period_start.day == 1
    assert (first.share, first.forecast_share, first.forecast_exceeds) == (0.8123, 1.2, True)
    assert (second.amount_usd, second.amount_tokens, second.user, second.model) == (None, 5_000_000, "alice", "gpt-4o")


def test_budget_status_refreshes_in_the_background(guarded: Any, ingest: FakeIngestServer) -> None:
    tracker = guarded([budget()])
    ingest.budgets = [budget(spent_usd="99.0000", share=0.99)]
    wait_for(lambda: tracker.budget_status()[0].share == 0.99)
    assert tracker.budget_status()[0].spent_usd == Decimal("99.0000")


def test_a_failed_refresh_keeps_the_last_good_list(guarded: Any, ingest: FakeIngestServer) -> None:
    tracker = guarded([budget(**SPENT_HARD)])
    ingest.budgets_status = 503
    requests_before = len(ingest.budget_requests)
    wait_for(lambda: len(ingest.budget_requests) >= requests_before + 2)
    assert [status.id for status in tracker.budget_status()] == [1]
    with pytest.raises(ts.BudgetExceeded):
        tracker.check_budget("gpt-4o")

    ingest.budgets_status = 200
    ingest.budgets = [budget(id=1, share=0.2)]
    wait_for(lambda: tracker.budget_status()[0].share == 0.2)
    tracker.check_budget("gpt-4o")  # the server says it is no longer spent: calls pass again


def test_no_io_on_the_callers_thread_while_the_server_hangs(guarded: Any, ingest: FakeIngestServer,
                                                              openai_client: Any,
                                                              openai_server: FakeOpenAIServer) -> None:
    tracker = guarded([budget()])
    ingest.budgets_gate.clear()  # every budget request now hangs until the test ends
    try:
        time.sleep(0.2)  # the background thread is now stuck in a request
        client = openai_client(tracker)
        started = time.perf_counter()
        for _ in range(100):
            assert len(tracker.budget_status()) == 1
            tracker.check_budget("gpt-4o")
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert time.perf_counter() - started < 1.0
        assert len(openai_server.requests) == 1
    finally:
        ingest.budgets_gate.set()


def test_only_trackers_that_use_budgets_poll_for_them(make_tracker: Any, ingest: FakeIngestServer) -> None:
    ingest.budgets = [budget()]
    tracker = make_tracker(ingest.url, budget_refresh_s=0.05)
    tracker.record_usage(model="gpt-4o", provider="openai", input_tokens=3, output_tokens=2, duration_ms=10)
    assert tracker.flush(5)
    time.sleep(0.3)
    assert ingest.budget_requests == []

    assert tracker.budget_status() == []  # the first ask starts the polling, without waiting for it
    wait_for(lambda: len(tracker.budget_status()) == 1)


def test_budget_status_is_empty_without_a_server() -> None:
    tracker = ts.Tracker(url=None, budget_guard=True)
    assert tracker.budget_status() == []
    tracker.check_budget("gpt-4o")


# The guard with the real clients ----------------------------------------------------------------


def test_a_spent_hard_budget_stops_openai_calls_before_the_provider(guarded: Any, openai_client: Any,
                                                                     openai_server: FakeOpenAIServer,
                                                                     ingest: FakeIngestServer) -> None:
    tracker = guarded([budget()])
    client = openai_client(tracker)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(openai_server.requests) == 1

    ingest.budgets = [budget(**SPENT_HARD)]
    wait_for(lambda: tracker.budget_status()[0].exceeded)
    with pytest.raises(ts.BudgetExceeded) as blocked:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(ts.BudgetExceeded):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    with pytest.raises(ts.BudgetExceeded):
        client.responses.create(model="gpt-4o", input="hi")
    assert len(openai_server.requests) == 1
    assert blocked.value.budget.id == 1 and blocked.value.model == "gpt-4o"
    assert "is spent: 104%" in str(blocked.value)


def test_async_openai_calls_are_stopped_too(guarded: Any, openai_server: FakeOpenAIServer) -> None:
    tracker = guarded([budget(**SPENT_HARD)])
    client = ts.instrument_openai(openai.AsyncOpenAI(base_url=openai_server.url + "/v1", api_key="sk-test",
                                                     max_retries=0), tracker)

    async def call() -> None:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    with pytest.raises(ts.BudgetExceeded):
        asyncio.run(call())
    assert openai_server.requests == []


def test_a_spent_hard_budget_stops_anthropic_calls_and_streams(guarded: Any,
                                                                anthropic_server: FakeAnthropicServer) -> None:
    tracker = guarded([budget(**SPENT_HARD)])
    client = ts.instrument_anthropic(anthropic.Anthropic(base_url=anthropic_server.url, api_key="sk-ant-test",
                                                         max_retries=0), tracker)
    with pytest.raises(ts.BudgetExceeded):
        client.messages.create(model="claude-sonnet-4-20250514", max_tokens=64, messages=MESSAGES)
    with pytest.raises(ts.BudgetExceeded):
        with client.messages.stream(model="claude-sonnet-4-20250514", max_tokens=64, messages=MESSAGES) as stream:
            stream.get_final_message()
    assert anthropic_server.requests == []


def test_async_litellm_calls_are_stopped_before_the_provider(guarded: Any, openai_server: FakeOpenAIServer,
                                                             ingest: FakeIngestServer) -> None:
    tracker = guarded([budget(model="gpt-4o", hard=True)])
    litellm.logging_callback_manager._reset_all_callbacks()
    litellm.callbacks = [ts.LiteLLMCallback(tracker)]

    async def call() -> Any:
        return await litellm.acompletion(model="openai/gpt-4o", messages=MESSAGES, api_key="sk-test",
                                         api_base=openai_server.url + "/v1", num_retries=0)

    async def main() -> None:
        await call()
        assert len(openai_server.requests) == 1
        # litellm logs the success on this loop: let it land before the loop (and the test) ends.
        while tracker.stats().recorded < 1:
            await asyncio.sleep(0.01)
        ingest.budgets = [budget(model="gpt-4o", **SPENT_HARD)]
        while not tracker.budget_status()[0].exceeded:
            await asyncio.sleep(0.01)
        with pytest.raises(ts.BudgetExceeded):
            await call()
        assert len(openai_server.requests) == 1

    try:
        asyncio.run(asyncio.wait_for(main(), 10))
    finally:
        litellm.logging_callback_manager._reset_all_callbacks()
        litellm.callbacks = []


def test_hand_instrumented_calls_are_stopped_at_tracker_call(guarded: Any) -> None:
    tracker = guarded([budget(user="alice", **SPENT_HARD)])
    with pytest.raises(ts.BudgetExceeded):
        tracker.call("gpt-4o", "openai", attributes={"user": "alice"})
    with tracker.call("gpt-4o", "openai", attributes={"user": "bob"}) as call:
        call.set_usage(input_tokens=1, output_tokens=1)


@pytest.mark.parametrize(("narrowing", "tracker_user", "model", "stopped"), [
    ({"user": "alice"}, "alice", "gpt-4o", True),
    ({"user": "alice"}, "bob", "gpt-4o", False),
    ({"user": "alice"}, None, "gpt-4o", False),
    ({"model": "gpt-4o-mini"}, None, "gpt-4o-mini", True),
    ({"model": "gpt-4o-mini"}, None, "gpt-4o", False),
    ({"model": "gpt-4o-2024-08-06"}, None, "gpt-4o", True),  # the alias may be served by that snapshot
    ({"model": "gpt-4o", "user": "alice"}, "alice", "gpt-4o-mini", False),
    ({}, "anyone", "any-model", True),
])
def test_the_guard_applies_only_to_calls_a_narrowed_budget_counts(guarded: Any, openai_client: Any,
                                                                  openai_server: FakeOpenAIServer,
                                                                  narrowing: dict[str, str], tracker_user: str | None,
                                                                  model: str, stopped: bool) -> None:
    tracker = guarded([budget(**narrowing, **SPENT_HARD)], user=tracker_user)
    client = openai_client(tracker)
    if stopped:
        with pytest.raises(ts.BudgetExceeded):
            client.chat.completions.create(model=model, messages=MESSAGES)
    else:
        client.chat.completions.create(model=model, messages=MESSAGES)
    assert len(openai_server.requests) == (0 if stopped else 1)


@pytest.mark.parametrize(("state", "guard"), [
    ({"hard": False, "exceeded": True, "share": 1.3}, True),  # a soft budget only warns
    ({"hard": True, "exceeded": False, "share": 0.99, "forecast_exceeds": True}, True),  # not spent yet
    (SPENT_HARD, False),  # the guard is opt-in
])
def test_calls_pass_unless_a_hard_budget_is_spent_and_the_guard_is_on(guarded: Any, openai_client: Any,
                                                                       openai_server: FakeOpenAIServer,
                                                                       state: dict[str, Any], guard: bool) -> None:
    tracker = guarded([budget(**state)], budget_guard=guard)
    openai_client(tracker).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(openai_server.requests) == 1


def test_a_budget_spent_in_a_period_that_has_ended_no_longer_stops_calls(guarded: Any, ingest: FakeIngestServer,
                                                                         openai_client: Any,
                                                                         openai_server: FakeOpenAIServer) -> None:
    yesterday = datetime.now(timezone.utc) - timedelta(days=1)
    day_start = yesterday.replace(hour=0, minute=0, second=0, microsecond=0)
    ended = budget(period="day", period_start=day_start.isoformat(),
                   period_end=(day_start + timedelta(days=1)).isoformat(), **SPENT_HARD)
    tracker = guarded([ended])
    ingest.budgets_status = 503  # and the server cannot say what the new day looks like
    openai_client(tracker).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(openai_server.requests) == 1


def test_the_trackers_user_is_on_every_event(make_tracker: Any, ingest: FakeIngestServer) -> None:
    tracker = make_tracker(ingest.url, user="alice")
    tracker.record_usage(model="gpt-4o", provider="openai", input_tokens=3, output_tokens=2, duration_ms=10)
    tracker.record_usage(model="gpt-4o", provider="openai", input_tokens=3, output_tokens=2, duration_ms=10,
                         attributes={"user": "bob", "team": "x"})
    tracker.record_throttle(wait_ms=5, model="gpt-4o", provider="openai")
    assert tracker.flush(5)
    users = sorted(event["attributes"]["user"] for event in ingest.stored.values())
    assert users == ["alice", "alice", "bob"]


def test_the_guard_is_thread_safe_while_the_list_changes(guarded: Any, ingest: FakeIngestServer) -> None:
    tracker = guarded([budget()])
    errors: list[BaseException] = []
    stop = threading.Event()

    def caller() -> None:
        while not stop.is_set():
            try:
                tracker.check_budget("gpt-4o")
            except ts.BudgetExceeded:
                pass
            except BaseException as exc:  # noqa: BLE001 (any other error fails the test)
                errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for thread in threads:
        thread.start()
    for index in range(10):
        ingest.budgets = [budget(**SPENT_HARD)] if index % 2 else [budget(), budget(id=2)]
        time.sleep(0.06)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []


@pytest.fixture(autouse=True)
def _no_litellm_callbacks_left() -> Iterator[None]:
    yield
    assert not litellm.callbacks
