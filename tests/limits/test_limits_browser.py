"""The Limits table in a real headless Chromium, from calls the real openai and anthropic clients
made through the SDK against the fake provider servers: the events reach the live server with
the rate-limit header sets those servers send. Screenshot: artifacts/limits-project.png."""
from __future__ import annotations

from pathlib import Path

import pytest

import tokensite_client as ts
from apps.ingestion.models import RawEvent
from apps.metrics.services import sessions_fold
from tests.dashboards.conftest import PASSWORD, users  # noqa: F401 (fixture)
from tests.dashboards.test_browser import ARTIFACTS, CHROMIUM, chromium_page
from tests.limits.provider_calls import (
    ANTHROPIC_MODEL, OPENAI_MODEL, call_both_providers, fake_providers, within_one_minute,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]

ROW = '#limits-table tr[data-model="{model}"][data-dimension="{dimension}"]'


def test_project_page_shows_each_models_limits_peaks_headroom_and_429s_in_chromium(
        live_server, project, users, ingest_key, tmp_path):  # noqa: F811
    tracker = ts.Tracker(url=live_server.url, api_key=ingest_key, session_id="limits-run", spool_dir=tmp_path)
    try:
        with fake_providers() as providers:
            within_one_minute()
            call_both_providers(tracker, providers)
        # A self-hosted model behind no rate limiter: its calls carry no rate-limit headers. Its
        # output is spread over its 900 ms, so it too must not straddle a minute.
        within_one_minute()
        tracker.record_usage(model="llama-3.1-8b", provider="self-hosted", input_tokens=640, output_tokens=64,
                             duration_ms=900)  # fmt: skip
        assert tracker.flush(timeout=15)
    finally:
        tracker.close()
    # Four provider calls, their three throttles (429 and 429, 529) and the self-hosted call.
    assert RawEvent.objects.filter(project=project).count() == 8
    sessions_fold(project_id=project.pk, session_ids=["limits-run"])

    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page() as (page, errors):
        page.goto(f"{live_server.url}/acme/chatbot/")
        page.fill("#id_username", "viewer-user")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server.url}/acme/chatbot/")
        table = page.locator("#limits-table")
        table.scroll_into_view_if_needed()
        models_in_order = table.locator("tbody tr[data-model]").evaluate_all(
            "rows => [...new Set(rows.map(row => row.dataset.model))]")
        cells = {
            (model, dimension): page.locator(ROW.format(model=model, dimension=dimension)).locator("td")
            .all_inner_texts()
            for model, dimension in [(ANTHROPIC_MODEL, "requests"), (ANTHROPIC_MODEL, "input_tokens"),
                                     (ANTHROPIC_MODEL, "output_tokens"), (OPENAI_MODEL, "requests"),
                                     (OPENAI_MODEL, "tokens"), ("llama-3.1-8b", "")]
        }  # fmt: skip
        table.screenshot(path=str(ARTIFACTS / "limits-table.png"))
        page.screenshot(path=str(ARTIFACTS / "limits-project.png"), full_page=True)
    assert errors == []

    # The model closest to a limit first; the one that never announced a limit last.
    assert models_in_order == [ANTHROPIC_MODEL, OPENAI_MODEL, "llama-3.1-8b"]
    # First row of a model: provider, model (with when it was announced), then the dimension's cells and its 429s.
    provider, model, *anthropic_requests, anthropic_429s = cells[(ANTHROPIC_MODEL, "requests")]
    assert (provider, model.splitlines()[0]) == ("anthropic", ANTHROPIC_MODEL)
    assert anthropic_requests == ["Requests", "50", "49", "2026-12-02T03:40:01Z", "2", "96.0%"]
    assert anthropic_429s == "1"  # the 529 that followed is an overload, not a rate limit
    assert cells[(ANTHROPIC_MODEL, "input_tokens")] == [
        "Input tokens throttles first", "30,000", "28,000", "2026-12-02T03:40:03Z", "10,000", "66.7%"]
    assert cells[(ANTHROPIC_MODEL, "output_tokens")] == [
        "Output tokens", "8,000", "7,600", "2026-12-02T03:40:02Z", "1,800", "77.5%"]
    provider, model, *openai_requests, openai_429s = cells[(OPENAI_MODEL, "requests")]
    assert (provider, openai_requests, openai_429s) == ("openai", ["Requests", "500", "499", "—", "2", "99.6%"], "1")
    assert cells[(OPENAI_MODEL, "tokens")] == [
        "Tokens (input + output) throttles first", "30,000", "27,694", "4.612s", "4,612", "84.6%"]
    assert cells[("llama-3.1-8b", "")] == [
        "self-hosted", "llama-3.1-8b", "No rate-limit headers seen for this model.", "1 req, 640 in, 64 out", "—", "0"]
