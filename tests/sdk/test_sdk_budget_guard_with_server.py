"""The SDK's budget status and guard against the real `GET /api/v1/budgets`: a developer's calls
stop once the hard budget on their spend is spent, and nobody else's do."""
from __future__ import annotations

import sys
import time
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from django.db import connection

import tokensite_client as ts
from apps.budgets import selectors as budget_selectors
from apps.budgets import triggers
from apps.budgets.services import budget_create

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "tests"))
from sdk_fakes import FakeOpenAIServer  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def provider():
    server = FakeOpenAIServer()
    server.start()
    yield server
    server.stop()


def _wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _guarded_client(url: str, key: str, user: str, spool_dir: Path, provider: FakeOpenAIServer):
    # One tracker at a time: the in-memory SQLite of the live server locks tables under concurrent writers.
    tracker = ts.Tracker(url=url, api_key=key, session_id=f"run-{user}", user=user, spool_dir=spool_dir,
                         budget_guard=True, budget_refresh_s=0.1, flush_interval_s=0.1)
    client = openai.OpenAI(base_url=provider.url + "/v1", api_key="sk-test", max_retries=0)
    return tracker, ts.instrument_openai(client, tracker)


def test_a_hard_budget_spent_by_a_developer_stops_only_their_calls(monkeypatch, live_server, team, project, ingest_key, provider,
                                                                   tmp_path):
    if connection.vendor == "sqlite":
        # Alert evaluation (tested in tests/budgets) runs on a thread of its own connection, whose
        # table locks the live server's shared in-memory SQLite answers with "table is locked".
        monkeypatch.setattr(triggers, "_dispatch", lambda *args, **kwargs: None)
    # The statuses the SDK polls are cached for STATUSES_CACHE_S (10 s): the spend shows once that
    # expires, which the test need not wait out in full.
    monkeypatch.setattr(budget_selectors, "STATUSES_CACHE_S", 1)
    # One fake gpt-4o call costs about $0.0056: the second one spends the cent.
    budget = budget_create(team=team, period="day", user="alice", amount_usd=Decimal("0.01"), hard=True)
    alice, client = _guarded_client(live_server.url, ingest_key, "alice", tmp_path / "alice", provider)
    try:
        _wait_for(lambda: len(alice.budget_status()) == 1)
        (status,) = alice.budget_status()
        assert (status.id, status.scope, status.project, status.user, status.hard) == (budget.pk, "team", None,
                                                                                         "alice", True)
        assert status.amount_usd == Decimal("0.01") and status.spent_usd == 0 and not status.exceeded

        for _ in range(2):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert alice.flush(timeout=60)
        _wait_for(lambda: alice.budget_status()[0].exceeded)
        spent = alice.budget_status()[0]
        assert spent.spent_usd > Decimal("0.01") and spent.share >= 1

        with pytest.raises(ts.BudgetExceeded) as blocked:
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert blocked.value.budget.id == budget.pk
        assert len(provider.requests) == 2
    finally:
        alice.close()

    bob, client = _guarded_client(live_server.url, ingest_key, "bob", tmp_path / "bob", provider)
    try:
        _wait_for(lambda: bool(bob.budget_status()) and bob.budget_status()[0].exceeded)
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # the budget is narrowed to alice
        assert len(provider.requests) == 3
    finally:
        bob.close()
