"""Announced limits kept at ingest and the project page's Limits table, on SQLite and PostgreSQL."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from apps.ingestion.services import events_ingest
from apps.limits.models import ProviderLimit, RateLimitedMinute
from apps.limits.selectors import limits_table
from tests.conftest import throttle_event, usage_event
from tests.dashboards.conftest import client_for, ingest, users  # noqa: F401 (fixture)
from tests.limits.provider_calls import ANTHROPIC_MODEL, OPENAI_MODEL, captured_events

pytestmark = pytest.mark.django_db
NOW = datetime.now(timezone.utc).replace(second=0, microsecond=0)


@pytest.fixture(scope="module")
def provider_events(tmp_path_factory) -> list[dict]:
    # The peak minute holds all the calls.
    return captured_events(tmp_path_factory.mktemp("capture"), in_one_minute=True)


def _table(project):
    # The range is taken when the table is read, not when the module was imported: the captured
    # events carry the time of their capture, minutes after collection in a full run.
    now = datetime.now(timezone.utc)
    return limits_table(project=project, since=now - timedelta(days=1), until=now + timedelta(minutes=2))


def _by_dimension(row) -> dict[str, tuple]:
    return {d.dimension: (d.limit, d.remaining, d.peak_per_minute, round(d.headroom, 4)) for d in row.dimensions}


def test_real_header_sets_give_each_model_its_limits_peaks_headroom_and_429s(project, provider_events):
    ingest(project, provider_events)
    anthropic_row, openai_row = _table(project)
    # Anthropic: two messages of 5,000 input (4,000 + 1,000 cached) and 900 output tokens in one minute.
    assert (anthropic_row.provider, anthropic_row.model) == ("anthropic", ANTHROPIC_MODEL)
    assert _by_dimension(anthropic_row) == {
        "requests": (50, 49, 2, 0.96),
        "tokens": (38000, 35600, 11800, round(1 - 11800 / 38000, 4)),
        "input_tokens": (30000, 28000, 10000, round(1 - 10000 / 30000, 4)),
        "output_tokens": (8000, 7600, 1800, 0.775),
    }
    assert anthropic_row.tightest.dimension == "input_tokens"
    assert anthropic_row.responses_429 == 1  # the 529 (overloaded) is not a rate limit
    # OpenAI: two chat calls of 2,006 prompt and 300 completion tokens.
    assert (openai_row.provider, openai_row.model) == ("openai", OPENAI_MODEL)
    assert _by_dimension(openai_row) == {
        "requests": (500, 499, 2, 0.996),
        "tokens": (30000, 27694, 4612, round(1 - 4612 / 30000, 4)),
    }
    assert openai_row.tightest.dimension == "tokens"
    assert openai_row.responses_429 == 1
    usage_times = [e["timestamp"] for e in provider_events if e["type"] == "usage" and e["model"] == OPENAI_MODEL]
    assert openai_row.observed_at == max(datetime.fromisoformat(t) for t in usage_times)


def test_a_model_whose_provider_never_announced_a_limit_says_so(project, users, provider_events):
    ingest(project, [
        *provider_events,
        usage_event(session_id="s-mistral", provider="mistral", model="mistral-large-latest",
                    timestamp=(NOW - timedelta(minutes=5)).isoformat(), input_tokens=700, output_tokens=70),
    ])  # fmt: skip
    rows = _table(project)
    assert [row.model for row in rows] == [ANTHROPIC_MODEL, OPENAI_MODEL, "mistral-large-latest"]
    mistral = rows[-1]
    assert (mistral.observed_at, mistral.dimensions, mistral.tightest) == (None, [], None)
    assert (mistral.peaks.requests, mistral.peaks.input_tokens, mistral.peaks.output_tokens) == (1, 700, 70)

    page = client_for(users["viewer"]).get("/acme/chatbot/").content.decode()
    limits_section = page[page.index('id="limits"'):page.index("By step, across sessions")]
    assert limits_section.count("No rate-limit headers seen for this model.") == 1
    assert limits_section.index(ANTHROPIC_MODEL) < limits_section.index(OPENAI_MODEL) < limits_section.index(
        "mistral-large-latest")
    assert "66.7%" in limits_section and "throttles first" in limits_section


def test_a_project_without_calls_or_headers_has_an_empty_limits_table(project):
    assert _table(project) == []


def _announcing(timestamp: datetime, limit: int, remaining: int, **overrides) -> dict:
    return usage_event(session_id="s-order", timestamp=timestamp.isoformat(), attributes={
        "x-ratelimit-limit-requests": limit, "x-ratelimit-remaining-requests": remaining}, **overrides)


def _stored_requests(project) -> tuple:
    row = ProviderLimit.objects.get(project=project, provider="openai", model="gpt-4o")
    return row.observed_at, row.requests_limit, row.requests_remaining


def _post(project, events: list[dict]) -> None:
    result = events_ingest(project=project, body=json.dumps({"events": events}).encode())
    assert not result.rejected


@pytest.mark.parametrize("newest_first", [True, False])
def test_the_newest_announcement_by_event_time_is_kept_whatever_the_arrival_order(project, newest_first):
    older = [_announcing(NOW - timedelta(minutes=3), 500, 400), _announcing(NOW - timedelta(minutes=2), 500, 300)]
    newer = [_announcing(NOW - timedelta(minutes=1, seconds=30), 900, 800),
             _announcing(NOW - timedelta(minutes=1), 900, 700)]  # fmt: skip
    for batch in (newer, older) if newest_first else (older, newer):
        _post(project, batch)
    assert _stored_requests(project) == (NOW - timedelta(minutes=1), 900, 700)
    assert ProviderLimit.objects.filter(project=project).count() == 1


@pytest.mark.parametrize("one_batch", [True, False])
def test_a_later_answer_that_names_only_what_remains_keeps_the_announced_limit(project, one_batch):
    later = throttle_event(session_id="s-order", timestamp=(NOW - timedelta(minutes=1)).isoformat(),
                           attributes={"x-ratelimit-remaining-requests": 0, "retry-after": 1})
    batches = [[later, _announcing(NOW - timedelta(minutes=2), 500, 499)]] if one_batch else [
        [_announcing(NOW - timedelta(minutes=2), 500, 499)], [later]]
    for batch in batches:
        _post(project, batch)
    assert _stored_requests(project) == (NOW - timedelta(minutes=1), 500, 0)


def test_a_resent_batch_counts_its_429s_once_and_overloads_not_at_all(project):
    minute = NOW - timedelta(minutes=4)
    batch = [
        throttle_event(session_id="s-429", timestamp=(minute + timedelta(seconds=5)).isoformat(), status_code=429),
        throttle_event(session_id="s-429", timestamp=(minute + timedelta(seconds=9)).isoformat(), status_code=429),
        throttle_event(session_id="s-429", timestamp=(minute + timedelta(seconds=20)).isoformat(), status_code=503),
        throttle_event(session_id="s-429", provider="anthropic", model="claude-sonnet-4-5",
                       timestamp=(minute + timedelta(seconds=30)).isoformat(), status_code=529),
    ]  # fmt: skip
    _post(project, batch)
    _post(project, batch)
    assert list(RateLimitedMinute.objects.filter(project=project).values_list(
        "minute_start", "provider", "model", "responses_429")) == [(minute, "openai", "gpt-4o", 2)]
    _post(project, [throttle_event(session_id="s-429", timestamp=(minute + timedelta(seconds=50)).isoformat())])
    assert RateLimitedMinute.objects.get(project=project).responses_429 == 3


def test_a_peak_minute_over_the_announced_limit_shows_negative_headroom(project):
    ingest(project, [
        _announcing(NOW - timedelta(minutes=10), 2, 1, input_tokens=100, output_tokens=10),
        *[usage_event(session_id=f"s-{n}", timestamp=(NOW - timedelta(minutes=10, seconds=-n)).isoformat(),
                      input_tokens=100, output_tokens=10) for n in range(1, 3)],
    ])  # fmt: skip
    (row,) = _table(project)
    (requests,) = row.dimensions
    assert (requests.limit, requests.peak_per_minute, requests.headroom) == (2, 3, -0.5)
