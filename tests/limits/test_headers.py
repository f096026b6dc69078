"""Reading the announced limits out of the attributes the SDK captured from real responses."""
from __future__ import annotations

import pytest

from apps.limits.headers import Announcement, announcement_fill
from tests.limits.provider_calls import ANTHROPIC_MODEL, OPENAI_MODEL, captured_events

OPENAI_ANNOUNCED = {
    "requests_limit": 500, "requests_remaining": 499,
    "tokens_limit": 30000, "tokens_remaining": 27694, "tokens_reset": "4.612s",
}
ANTHROPIC_ANNOUNCED = {
    "requests_limit": 50, "requests_remaining": 49, "requests_reset": "2026-12-02T03:40:01Z",
    "tokens_limit": 38000, "tokens_remaining": 35600, "tokens_reset": "2026-12-02T03:40:02Z",
    "input_tokens_limit": 30000, "input_tokens_remaining": 28000, "input_tokens_reset": "2026-12-02T03:40:03Z",
    "output_tokens_limit": 8000, "output_tokens_remaining": 7600, "output_tokens_reset": "2026-12-02T03:40:02Z",
}


@pytest.fixture(scope="module")
def events(tmp_path_factory) -> list[dict]:
    return captured_events(tmp_path_factory.mktemp("capture"))


def announced_limits(attributes) -> Announcement:
    """The parts the rate-limit headers among `attributes` announce, as ingest fills them."""
    announced: Announcement = {}
    announcement_fill(announced, attributes)
    return announced


def _of(events: list[dict], event_type: str, model: str) -> list[dict]:
    return [event for event in events if event["type"] == event_type and event["model"] == model]


def test_openai_usage_events_announce_requests_and_tokens(events):
    usages = _of(events, "usage", OPENAI_MODEL)
    assert len(usages) == 2
    assert [announced_limits(event["attributes"]) for event in usages] == [OPENAI_ANNOUNCED] * 2


def test_anthropic_usage_events_announce_all_four_dimensions(events):
    usages = _of(events, "usage", ANTHROPIC_MODEL)
    assert len(usages) == 2
    assert [announced_limits(event["attributes"]) for event in usages] == [ANTHROPIC_ANNOUNCED] * 2


def test_a_rate_limited_answer_announces_only_what_its_headers_say(events):
    (throttle_429,) = [event for event in _of(events, "throttle", ANTHROPIC_MODEL) if event["status_code"] == 429]
    assert announced_limits(throttle_429["attributes"]) == {"input_tokens_remaining": 0}


def test_an_openai_429_without_ratelimit_headers_announces_nothing(events):
    (throttle,) = _of(events, "throttle", OPENAI_MODEL)
    assert throttle["status_code"] == 429
    assert announced_limits(throttle.get("attributes")) == {}


def test_headers_sent_as_text_by_plain_http_clients_are_read_alike():
    sent = {"X-RateLimit-Limit-Requests": "500", "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-limit-tokens": "30000", "x-ratelimit-remaining-tokens": " 27694 ",
            "x-ratelimit-reset-tokens": "4.612s", "user": "alice"}  # fmt: skip
    assert announced_limits(sent) == OPENAI_ANNOUNCED


@pytest.mark.parametrize("value", [-1, 1.5, "12k", "", True, None, [5]])
def test_a_count_that_is_not_a_whole_number_is_left_out(value):
    attributes = {"anthropic-ratelimit-requests-limit": value, "anthropic-ratelimit-requests-remaining": 7}
    assert announced_limits(attributes) == {"requests_remaining": 7}


def test_attributes_without_ratelimit_headers_announce_nothing():
    assert announced_limits(None) == {}
    assert announced_limits({"user": "alice", "retry-after": 2, "x-request-id": "abc", "anthropic-version": "1"}) == {}
