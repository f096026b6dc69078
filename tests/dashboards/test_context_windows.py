"""Issue 15's context windows on the pages: per step and model on the session page (the metadata
document's figures) and across the project in the page's range; unknown windows say "unknown"."""
from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest

from apps.metrics.selectors import session_metadata
from apps.pricing.context_windows import context_window_override_set
from tests.conftest import usage_event
from tests.dashboards.conftest import RECENT, at, client_for, ingest

pytestmark = pytest.mark.django_db


def context_rows(html: bytes, kind: str) -> dict[str, dict[str, tuple[str, str]]]:
    """The rows of a context window table: per row key, each data-metric's (data-value, text)."""
    text = html.decode()
    start = text.index(f'aria-label="Context windows by {kind}"')
    table = text[start : text.index("</table>", start)]
    rows = {}
    for key, body in re.findall(rf'<tr data-context-{kind}="([^"]*)">(.*?)</tr>', table, re.S):
        cells = re.findall(r'data-metric="([^"]+)" data-value="([^"]*)">([^<]*)<', body)
        rows[unescape(key)] = {name: (value, unescape(shown).strip()) for name, value, shown in cells}
    return rows


@pytest.fixture
def pressured(project):
    context_window_override_set(project=project, model="acme-llama-8k", max_input_tokens=8_000)
    ingest(project, [
        usage_event(session_id="s-1", step="plan", model="gpt-4o", input_tokens=64_000, timestamp=at(0)),
        usage_event(session_id="s-1", step="draft", model="gpt-4o", input_tokens=121_600, timestamp=at(1)),
        usage_event(session_id="s-1", step="draft", model="gpt-4o", input_tokens=104_000, timestamp=at(2)),
        usage_event(session_id="s-1", step="draft", model="acme-llama-8k", input_tokens=7_000, timestamp=at(3)),
        usage_event(session_id="s-1", step="review", model="acme-unknown-1", input_tokens=99_000, timestamp=at(4)),
        usage_event(session_id="s-2", step="draft", model="gpt-4o", input_tokens=127_000, timestamp=at(60)),
        # Started before the 24 h range: not on the project page's default view.
        usage_event(session_id="old", step="draft", model="gpt-4o", input_tokens=128_000,
                    timestamp=(RECENT - timedelta(days=3)).isoformat()),
    ])  # fmt: skip
    return project


def test_session_page_shows_the_metadata_documents_context_windows(pressured, users):
    document = session_metadata(project=pressured, session_id="s-1")
    response = client_for(users["viewer"]).get("/acme/chatbot/sessions/s-1/")
    assert response.status_code == 200
    steps = context_rows(response.content, "step")
    for step in document["token_usage"]["breakdown_by_step"]:
        figures = step["context_window"]
        shown = steps[step["step"]]
        if figures["max_share"] is None:
            assert shown["max_share"] == ("null", "unknown")
        else:
            assert float(shown["max_share"][0]) == figures["max_share"]
            assert int(shown["calls_over_80"][0]) == figures["calls_over_80"]
            assert int(shown["calls_over_95"][0]) == figures["calls_over_95"]
    assert steps["draft"]["max_share"] == ("0.95", "95.0%")
    assert steps["draft"]["calls_over_80"][1] == "3" and steps["draft"]["calls_over_95"][1] == "0"
    assert steps["plan"]["max_share"][1] == "50.0%"
    # The unknown window is said so, never shown as 0%.
    assert steps["review"]["max_share"] == ("null", "unknown")
    assert steps["review"]["calls_over_80"] == ("null", "unknown")
    assert steps["review"]["unknown_calls"] == ("1", "1")
    models = context_rows(response.content, "model")
    assert models["openai/acme-llama-8k"]["max_share"][1] == "87.5%"
    assert models["openai/gpt-4o"]["calls_over_80"][1] == "2"
    assert models["openai/acme-unknown-1"]["max_share"][1] == "unknown"


def test_project_page_shows_context_windows_per_step_and_model_over_the_range(pressured, users):
    response = client_for(users["viewer"]).get("/acme/chatbot/")
    assert response.status_code == 200
    steps = context_rows(response.content, "step")
    # s-1 and s-2 started in the range; "old" (a full window) did not.
    assert steps["draft"]["max_share"] == (str(127_000 / 128_000), "99.2%")
    assert steps["draft"]["calls_over_80"][1] == "4" and steps["draft"]["calls_over_95"][1] == "1"
    assert steps["review"]["max_share"][1] == "unknown"
    assert list(steps) == ["draft", "plan", "review"]  # fullest first, unknown last
    models = context_rows(response.content, "model")
    assert models["openai/gpt-4o"]["calls_over_80"][1] == "3"
    assert models["openai/acme-unknown-1"]["unknown_calls"][1] == "1"
    tables = response.context["context_windows"]
    assert {row["step"]: row["calls"] for row in tables["steps"]} == {"draft": 4, "plan": 1, "review": 1}

    last_week = client_for(users["viewer"]).get("/acme/chatbot/", {"range": "7d"})
    assert context_rows(last_week.content, "step")["draft"]["max_share"][1] == "100.0%"


def test_project_page_without_calls_says_so(project, users):
    ingest(project, [usage_event(session_id="old", timestamp=(RECENT - timedelta(days=3)).isoformat())])
    response = client_for(users["viewer"]).get("/acme/chatbot/")
    assert context_rows(response.content, "step") == {}
    assert b"No calls in this range." in response.content
