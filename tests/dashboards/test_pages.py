"""What the project, session and overview pages and the downloads show."""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from html import unescape
from html.parser import HTMLParser

import pytest

from apps.metrics.selectors import session_metadata
from tests.conftest import usage_event
from tests.dashboards.conftest import at, client_for, ingest

pytestmark = pytest.mark.django_db


class MetricCollector(HTMLParser):
    """Collects `data-metric` elements: their raw `data-value` and their visible text."""

    def __init__(self):
        super().__init__()
        self.metrics: dict[str, dict] = {}
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "data-metric" in attrs:
            self.metrics[attrs["data-metric"]] = {"value": attrs.get("data-value"), "text": ""}
        self._open.append((tag, attrs.get("data-metric")))

    def handle_endtag(self, tag):
        while self._open:
            open_tag, _ = self._open.pop()
            if open_tag == tag:
                break

    def handle_data(self, data):
        for _, metric in self._open:
            if metric:
                self.metrics[metric]["text"] += data


def metrics_of(html: bytes) -> dict[str, dict]:
    collector = MetricCollector()
    collector.feed(html.decode())
    return collector.metrics


def lookup(document: dict, dotted: str):
    value = document
    for part in dotted.split("."):
        value = value[part]
    return value


def test_session_page_shows_the_numbers_of_the_metadata_document(folded, users):
    document = session_metadata(project=folded, session_id="s-1")
    response = client_for(users["viewer"]).get("/acme/chatbot/sessions/s-1/")
    assert response.status_code == 200
    shown = metrics_of(response.content)
    expected_keys = {
        "token_usage.total_input_tokens", "token_usage.total_output_tokens", "token_usage.total_tokens",
        "cost.estimated_usd", "cost.unpriced_tokens", "tokenMetrics.tokensPerSecond", "tokenMetrics.throttleWaitTimeMs",
        "bursts.1s", "bursts.10s", "bursts.60s", "peak_concurrency", "throttle.count", "throttle.share_of_wall_time",
        "calls", *(f"tokenMetrics.sessionTokenUsage.{kind}" for kind in ("input", "output", "cache", "tool", "thought", "total")),
    }  # fmt: skip
    assert expected_keys <= set(shown)
    for key in expected_keys:
        expected = lookup(document, key)
        assert float(shown[key]["value"]) == pytest.approx(expected, rel=1e-12), key
    # The figures the reader sees, formatted for people, match the document too.
    assert shown["token_usage.total_tokens"]["text"] == f"{document['token_usage']['total_tokens']:,}" == "59,005"
    assert shown["tokenMetrics.sessionTokenUsage.cache"]["text"] == "250"
    assert shown["tokenMetrics.throttleWaitTimeMs"]["text"] == "1,500 ms (1.5 s)"
    assert shown["peak_concurrency"]["text"] == "2"
    assert shown["cost.unpriced_tokens"]["text"] == "400"
    assert shown["cost.estimated_usd"]["text"].startswith("$")
    # The embedded document the charts use is the same document.
    embedded = re.search(rb'<script id="session-document" type="application/json">(.*?)</script>', response.content, re.S)
    assert json.loads(embedded.group(1)) == document
    # Per-step table in the document's order (earliest usage first).
    assert [m.decode() for m in re.findall(rb'<tr data-step="([^"]+)">', response.content)] == ["plan", "draft", "review"]


def test_session_page_has_the_download_links_and_timeline(folded, users):
    response = client_for(users["viewer"]).get("/acme/chatbot/sessions/s-1/")
    html = response.content.decode()
    assert 'href="/acme/chatbot/sessions/s-1/metadata.json" download>Download metadata</a>' in html
    assert 'href="/acme/chatbot/sessions/s-1/calls.csv"' in html
    timeline = response.context["timeline"]
    assert timeline["total"] == timeline["shown"] == 5
    assert timeline["lanes"] == 2  # the two overlapping plan calls
    throttle = [bar for bar in timeline["bars"] if bar["type"] == "throttle"]
    assert throttle == [{"lane": 0, "start_ms": 3000.0, "end_ms": 4500.0, "type": "throttle", "step": "draft",
                         "model": "gpt-4o-mini", "attempt": 1, "status_code": 429}]  # fmt: skip


def test_metadata_download_is_the_section_7_document(folded, users):
    response = client_for(users["member"]).get("/acme/chatbot/sessions/s-1/metadata.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"].startswith('attachment; filename="session-s-1.json"')
    assert response.json() == session_metadata(project=folded, session_id="s-1")


def test_calls_csv_has_one_row_per_call_and_wait_in_time_order(folded, users):
    response = client_for(users["member"]).get("/acme/chatbot/sessions/s-1/calls.csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["type"] for row in rows] == ["usage", "usage", "throttle", "usage", "usage"]
    assert list(rows[0]) == [
        "type", "timestamp", "end_at", "duration_ms", "time_to_first_token_ms", "step", "provider", "model", "call_id",
        "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "tool_tokens", "thought_tokens",
        "cost_usd", "price_source", "token_source", "status_code", "attempt", "wait_ms", "retry_after_ms", "event_id",
        "session_raw_pruned_through", "session_peaks_approximate",
    ]  # fmt: skip
    assert rows[0]["session_raw_pruned_through"] == "" and rows[0]["session_peaks_approximate"] == "false"
    assert rows[0]["input_tokens"] == "1250" and rows[0]["output_tokens"] == "875"
    assert rows[0]["timestamp"].endswith("Z")
    assert rows[2]["wait_ms"] == "1500.0" and rows[2]["call_id"] == "call-9" and rows[2]["cost_usd"] == ""
    assert rows[4]["cost_usd"] == "" and rows[4]["model"] == "acme-unpriced-llm"  # unpriced: empty, not 0
    assert float(rows[0]["cost_usd"]) > 0


def test_csv_cells_that_look_like_formulas_are_defused(project, users):
    ingest(project, [usage_event(session_id="csv", step="=HYPERLINK(\"http://x\")", model="@evil")])
    body = b"".join(client_for(users["viewer"]).get("/acme/chatbot/sessions/csv/calls.csv").streaming_content).decode()
    row = next(csv.DictReader(io.StringIO(body)))
    assert row["step"].startswith("'=") and row["model"] == "'@evil"


@pytest.mark.parametrize("session_id", ["runs/2026 11/#1", "a?b=c&d%20e", "x/metadata.json", "ümlaut/../dots", "trail/"])
def test_session_ids_with_any_printable_characters_round_trip(project, users, session_id):
    ingest(project, [usage_event(session_id=session_id, timestamp=at(0))])
    client = client_for(users["viewer"])
    dashboard = client.get("/acme/chatbot/").content.decode()
    link = unescape(re.search(r'<a href="(/acme/chatbot/sessions/[^"]+/)">', dashboard).group(1))
    page = client.get(link)
    assert page.status_code == 200, link
    assert page.context["document"]["session_id"] == session_id
    metadata_link = unescape(re.search(r'href="([^"]+metadata\.json)" download', page.content.decode()).group(1))
    assert client.get(metadata_link).json()["session_id"] == session_id
    csv_link = unescape(re.search(r'href="([^"]+calls\.csv)" download', page.content.decode()).group(1))
    assert client.get(csv_link).status_code == 200


def test_project_page_headline_figures_for_people(folded, users):
    response = client_for(users["viewer"]).get("/acme/chatbot/")
    assert response.status_code == 200
    headline = response.context["headline"]
    assert headline["total_tokens"] == 59_005
    assert headline["input_tokens"] == 1250 + 2000 + 52000 + 300
    assert headline["unpriced_tokens"] == 400
    assert headline["throttle_count"] == 1 and headline["throttle_wait_ms"] == 1500
    assert headline["sessions"] == 1
    html = response.content.decode()
    assert '<div class="value" id="fig-total-tokens">59,005</div>' in html
    assert "+ 400 unpriced tokens" in html
    assert "1,500 ms (1.5 s)" in html
    series = json.loads(re.search(r'<script id="series-data" type="application/json">(.*?)</script>', html, re.S).group(1))
    assert sum(series["input_tokens"]) + sum(series["output_tokens"]) == 59_005
    assert sum(series["throttle_count"]) == 1
    assert series["bin_seconds"] == 600


def test_project_page_model_and_step_tables(folded, users):
    context = client_for(users["viewer"]).get("/acme/chatbot/").context
    models = {row["model"]: row for row in context["models"]}
    assert models["acme-unpriced-llm"]["cost_usd"] is None and models["acme-unpriced-llm"]["unpriced_tokens"] == 400
    assert models["gpt-4o"]["calls"] == 2 and models["gpt-4o"]["total_tokens"] == 4625
    steps = {row["step"]: row for row in context["steps"]}
    assert steps["plan"]["calls"] == 2 and steps["plan"]["avg_tokens_per_call"] == round(4625 / 2)
    assert steps["draft"]["throttle_wait_ms"] == 1500  # attributed through call_id
    assert steps["review"]["cost_usd"] is None and steps["review"]["avg_cost_per_call_usd"] is None


def test_unpriced_is_never_shown_as_zero_dollars(project, users):
    ingest(project, [usage_event(session_id="free?", model="acme-unpriced-llm", provider="self-hosted", timestamp=at(0))])
    client = client_for(users["viewer"])
    for url in ("/acme/chatbot/", "/acme/chatbot/sessions/free%3F/", "/"):
        html = client.get(url).content.decode()
        assert "$0.00" not in html and "$0.0000" not in html, url
        assert "unpriced" in html, url


@pytest.mark.parametrize(("query", "key", "days"), [("", "24h", 1), ("?range=7d", "7d", 7), ("?range=30d", "30d", 30)])
def test_time_range_is_kept_in_the_url(folded, users, query, key, days):
    context = client_for(users["viewer"]).get("/acme/chatbot/" + query).context
    assert context["time_range"].key == key
    assert context["time_range"].until - context["time_range"].since == timedelta(days=days)


def test_custom_range_covers_whole_utc_days(folded, users):
    first_day = at(0)[:10]
    response = client_for(users["viewer"]).get(f"/acme/chatbot/?range=custom&from={first_day}&to={first_day}")
    time_range = response.context["time_range"]
    assert time_range.key == "custom" and time_range.since.isoformat().startswith(first_day)
    assert (time_range.until - time_range.since).days == 1
    assert response.context["headline"]["sessions"] == 1


def test_invalid_custom_range_says_so_and_falls_back_to_24h(folded, users):
    response = client_for(users["viewer"]).get("/acme/chatbot/?range=custom&from=2026-02-10&to=2026-01-01")
    assert response.status_code == 200
    assert response.context["time_range"].key == "24h"
    assert "The last day must not be before the first." in response.content.decode()


def test_old_sessions_fall_outside_the_default_range(project, users):
    ingest(project, [usage_event(session_id="old")])  # BASE_TIME of tests/conftest.py: days ago
    context = client_for(users["viewer"]).get("/acme/chatbot/").context
    assert context["headline"]["sessions"] == 0 and context["has_data"]


def test_sessions_table_search_sort_and_pages(project, users):
    events = [
        usage_event(session_id=f"run-{index:03d}", timestamp=at(index), input_tokens=100 + index, output_tokens=10,
                    attributes={"user": "alice" if index % 2 else "bob"})
        for index in range(30)
    ]  # fmt: skip
    ingest(project, events)
    client = client_for(users["viewer"])
    first = client.get("/acme/chatbot/").context["sessions"]
    assert first.paginator.count == 30 and len(first.object_list) == 25
    assert first.object_list[0]["session_id"] == "run-029"  # newest first
    second = client.get("/acme/chatbot/?page=2").context["sessions"]
    assert [row["session_id"] for row in second.object_list] == [f"run-{index:03d}" for index in range(4, -1, -1)]
    by_tokens = client.get("/acme/chatbot/?sort=tokens").context["sessions"]
    assert by_tokens.object_list[0]["session_id"] == "run-000"
    alice = client.get("/acme/chatbot/?q=alice").context["sessions"]
    assert alice.paginator.count == 15
    by_id = client.get("/acme/chatbot/?q=run-01").context["sessions"]
    assert by_id.paginator.count == 10
    html = client.get("/acme/chatbot/?q=alice&sort=-cost").content.decode()
    assert "q=alice" in html and "page=2" not in html  # 15 results: one page; links keep the search


def test_empty_project_shows_how_to_send_events(project, users):
    html = client_for(users["viewer"]).get("/acme/chatbot/").content.decode()
    assert "No events yet" in html
    assert "curl -X POST http://testserver/api/v1/events" in html
    assert "tokensite_client" in html and 'href="/acme/chatbot/settings/"' in html


def test_live_json_has_rolling_rates(folded, users):
    response = client_for(users["viewer"]).get("/acme/chatbot/live.json")
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    live = response.json()
    assert set(live["rates"]) == {"1m", "5m", "1h"}
    assert live["rates"]["1h"] == pytest.approx(59_005 / 3600, rel=0.02)
    assert len(live["per_minute"]["labels"]) == len(live["per_minute"]["tokens_per_second"]) == 61


def test_team_overview_figures(folded, users):
    response = client_for(users["viewer"]).get("/")
    card = response.context["teams"][0].projects[0]
    assert card.tokens["30d"] == card.tokens["7d"] == 59_005
    assert card.unpriced_tokens_30d == 400 and card.throttle_count_7d == 1
    assert len(card.daily_tokens) == 30 and sum(card.daily_tokens) == 59_005
    html = response.content.decode()
    assert "59,005" in html and "400 unpriced tokens in 30 days" in html and "<svg class=\"sparkline\"" in html


def test_times_are_utc_iso_in_time_tags(folded, users):
    html = client_for(users["viewer"]).get("/acme/chatbot/sessions/s-1/").content.decode()
    assert re.search(r'<time class="local-time" datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ">[^<]+ UTC</time>', html)


def test_pages_embed_the_vendored_chart_library_not_a_cdn(folded, users):
    html = client_for(users["viewer"]).get("/acme/chatbot/").content.decode()
    assert '<script src="/static/vendor/chartjs/chart.umd.min.js"></script>' in html
    assert "cdn" not in html.lower()
