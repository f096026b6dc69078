"""`cache_write_1h_tokens` and `service_tier` on usage events: validated, stored, and priced at ingest."""
import pytest

from apps.ingestion.models import RawEvent
from tests.conftest import post_events, usage_event

pytestmark = pytest.mark.django_db

# A Messages API usage object for a call that wrote 100,000 tokens to the one-hour cache.
ONE_HOUR_USAGE = {
    "input_tokens": 200, "output_tokens": 100, "cache_read_input_tokens": 0,
    "cache_creation_input_tokens": 100_000,
    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 100_000},
    "service_tier": "standard",
}


def stored(event) -> RawEvent:
    return RawEvent.objects.get(event_id=event["event_id"])


def anthropic_event(**overrides):
    event = usage_event(provider="anthropic", model="claude-sonnet-4-5", **overrides)
    del event["input_tokens"], event["output_tokens"]
    return event


def test_one_hour_writes_from_anthropic_usage_are_stored_and_billed_at_twice_the_input_price(api_client, ingest_key):
    event = anthropic_event(usage_raw=ONE_HOUR_USAGE)
    assert post_events(api_client, ingest_key, [event]).status_code == 202
    row = stored(event)
    assert (row.cache_write_tokens, row.cache_write_1h_tokens, row.service_tier) == (100_000, 100_000, "standard")
    # 200 x $3/M + 100,000 x $6/M (2x input) + 100 x $15/M = $0.6021, not $0.3771 at the 5-minute rate
    assert row.cost_nanousd == 602_100_000
    assert row.price_source == "litellm:claude-sonnet-4-5"


def test_one_hour_writes_sent_as_counts_are_priced_the_same(api_client, ingest_key):
    event = usage_event(provider="anthropic", model="claude-sonnet-4-5", input_tokens=100_200, output_tokens=100,
                        cache_write_tokens=100_000, cache_write_1h_tokens=100_000)
    assert post_events(api_client, ingest_key, [event]).status_code == 202
    assert stored(event).cost_nanousd == 602_100_000


def test_one_hour_writes_above_the_writes_are_rejected_naming_the_fields(api_client, ingest_key):
    event = usage_event(cache_write_tokens=100, cache_write_1h_tokens=101)
    (rejection,) = post_events(api_client, ingest_key, [event]).json()["rejected"]
    assert rejection["errors"] == {"cache_write_1h_tokens": [
        "cache_write_1h_tokens must not exceed cache_write_tokens (the one-hour writes are a part of them)."]}


def test_a_usage_object_with_one_hour_writes_above_its_writes_is_rejected(api_client, ingest_key):
    usage = {**ONE_HOUR_USAGE, "cache_creation_input_tokens": 10}
    (rejection,) = post_events(api_client, ingest_key, [anthropic_event(usage_raw=usage)]).json()["rejected"]
    assert "cache_write_1h_tokens" in rejection["errors"]


@pytest.mark.parametrize(("sent", "stored_tier", "source"), [
    ("flex", "flex", "litellm:gpt-5 [flex]"),
    ("priority", "priority", "litellm:gpt-5 [priority]"),
    ("batch", "batch", "litellm:gpt-5 [batch]"),
    ("default", "standard", "litellm:gpt-5"),
    ("scale", "scale", "litellm:gpt-5 [scale: standard price]"),
])
def test_service_tier_is_stored_and_names_the_price_used(api_client, ingest_key, sent, stored_tier, source):
    event = usage_event(model="gpt-5", input_tokens=1_000_000, output_tokens=0, service_tier=sent)
    assert post_events(api_client, ingest_key, [event]).status_code == 202
    row = stored(event)
    assert (row.service_tier, row.price_source) == (stored_tier, source)
    # gpt-5 input: $1.25/M standard, flex and batch half, priority twice
    expected = {"flex": 625, "batch": 625, "priority": 2_500}.get(stored_tier, 1_250)
    assert row.cost_nanousd == expected * 1_000_000


def test_anthropic_batch_tier_is_read_from_the_usage_object(api_client, ingest_key):
    event = anthropic_event(usage_raw={**ONE_HOUR_USAGE, "service_tier": "batch"})
    assert post_events(api_client, ingest_key, [event]).status_code == 202
    row = stored(event)
    assert (row.service_tier, row.price_source) == ("batch", "litellm:claude-sonnet-4-5 [batch]")
    assert row.cost_nanousd == 602_100_000 // 2


def test_an_explicit_service_tier_wins_over_the_usage_objects(api_client, ingest_key):
    event = anthropic_event(usage_raw=ONE_HOUR_USAGE, service_tier="batch")
    assert post_events(api_client, ingest_key, [event]).status_code == 202
    assert stored(event).service_tier == "batch"


def test_a_service_tier_that_is_not_a_name_is_rejected(api_client, ingest_key):
    (rejection,) = post_events(api_client, ingest_key, [usage_event(service_tier="pri ority")]).json()["rejected"]
    assert list(rejection["errors"]) == ["service_tier"]


def test_an_event_without_a_tier_is_stored_with_none(api_client, ingest_key):
    event = usage_event()
    assert post_events(api_client, ingest_key, [event]).status_code == 202
    assert (stored(event).service_tier, stored(event).cache_write_1h_tokens) == ("", 0)
