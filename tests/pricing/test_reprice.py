"""Price overrides and `manage.py reprice`: stored costs change on request and aggregates follow."""
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from apps.ingestion.models import RawEvent
from apps.metrics.models import SessionAggregate, UsageBucket
from apps.metrics.selectors import session_metadata
from apps.pricing.services import price_override_create
from tests.conftest import BASE_TIME, post_events, usage_event

pytestmark = pytest.mark.django_db(transaction=True)


def override(project, model, input_usd, output_usd, effective_from=BASE_TIME - timedelta(days=1)):
    return price_override_create(project=project, model=model, input_per_million_usd=Decimal(input_usd),
                                 output_per_million_usd=Decimal(output_usd), effective_from=effective_from)  # fmt: skip


def test_override_prices_new_events_at_ingest(api_client, ingest_key, project):
    created = override(project, "acme-llm", "1", "2")
    post_events(api_client, ingest_key, [usage_event(model="acme-llm", input_tokens=1_000_000, output_tokens=500_000)])
    row = RawEvent.objects.get()
    assert row.cost_nanousd == 2 * 10**9 and row.price_source == f"override:{created.pk}"


def test_override_applies_from_its_effective_date_only(api_client, ingest_key, project):
    override(project, "gpt-4o", "1", "1", effective_from=BASE_TIME + timedelta(hours=1))
    post_events(api_client, ingest_key, [
        usage_event(model="gpt-4o", input_tokens=1_000_000, output_tokens=0, timestamp=BASE_TIME.isoformat()),
        usage_event(model="gpt-4o", input_tokens=1_000_000, output_tokens=0,
                    timestamp=(BASE_TIME + timedelta(hours=2)).isoformat(), session_id="later"),
    ])  # fmt: skip
    costs = dict(RawEvent.objects.values_list("session_id", "cost_nanousd"))
    assert costs == {"session-1": 2_500_000_000, "later": 1_000_000_000}


def test_reprice_turns_unpriced_into_priced_and_aggregates_follow(api_client, ingest_key, project):
    post_events(api_client, ingest_key, [usage_event(model="acme-llm", input_tokens=2_000_000, output_tokens=1_000_000)])
    before = session_metadata(project=project, session_id="session-1")["cost"]
    assert before["estimated_usd"] is None and before["unpriced_tokens"] == 3_000_000
    override(project, "acme-llm", "0.5", "1.5")

    out = StringIO()
    call_command("reprice", "--project", "acme/chatbot", stdout=out)
    assert "Repriced 1 events" in out.getvalue()

    after = session_metadata(project=project, session_id="session-1")
    assert after["cost"]["estimated_usd"] == pytest.approx(2.5)
    assert after["cost"]["unpriced_tokens"] == 0
    assert after["token_usage"]["breakdown_by_step"][0]["cost_usd"] == pytest.approx(2.5)
    assert sum(UsageBucket.objects.values_list("cost_nanousd", flat=True)) == 2_500_000_000
    assert sum(UsageBucket.objects.values_list("unpriced_tokens", flat=True)) == 0
    # Running it again changes nothing.
    call_command("reprice", "--project", "chatbot", stdout=StringIO())
    assert SessionAggregate.objects.get().cost_nanousd == 2_500_000_000


def test_reprice_since_leaves_older_events_alone(api_client, ingest_key, project):
    post_events(api_client, ingest_key, [
        usage_event(model="gpt-4o", input_tokens=1_000_000, output_tokens=0, timestamp=BASE_TIME.isoformat()),
        usage_event(model="gpt-4o", input_tokens=1_000_000, output_tokens=0, session_id="s2",
                    timestamp=(BASE_TIME + timedelta(days=2)).isoformat()),
    ])  # fmt: skip
    override(project, "gpt-4o", "1", "1")
    since = (BASE_TIME + timedelta(days=1)).date().isoformat()
    call_command("reprice", "--project", "chatbot", "--since", since, stdout=StringIO())
    assert dict(RawEvent.objects.values_list("session_id", "cost_nanousd")) == {
        "session-1": 2_500_000_000, "s2": 1_000_000_000}


def test_reprice_rejects_bad_arguments(project):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="Found 0 projects"):
        call_command("reprice", "--project", "nope")
    with pytest.raises(CommandError, match="not a date"):
        call_command("reprice", "--project", "chatbot", "--since", "last week")


def test_negative_override_is_refused(project):
    from apps.core.errors import BadRequest

    with pytest.raises(BadRequest):
        override(project, "gpt-4o", "-1", "1")


def test_events_are_billed_at_their_own_time_for_off_peak_models(api_client, ingest_key, project):
    from tests.pricing.test_cost import PEAK_HOUR, WEEKEND_HOUR  # both in the past, so ingest accepts them

    events = [
        usage_event(model="deepseek-v4-flash", provider="deepseek", session_id=name, timestamp=moment.isoformat(),
                    input_tokens=1_000_000, output_tokens=100_000)
        for name, moment in (("peak", PEAK_HOUR), ("off-peak", WEEKEND_HOUR))
    ]  # fmt: skip
    post_events(api_client, ingest_key, events)
    costs = dict(RawEvent.objects.values_list("session_id", "cost_nanousd"))
    assert 0 < costs["off-peak"] < costs["peak"]


def test_integer_cost_path_equals_the_decimal_formula():
    from apps.pricing.catalog import TokenPrices, resolve_model_price
    from apps.pricing.cost import _atto_usd_per_token, event_cost_nanousd, model_price_per_million

    price = resolve_model_price("claude-sonnet-4-5", "anthropic")
    assert _atto_usd_per_token(price.prices_for(1000)) is not None, "litellm prices take the integer path"
    p = price.prices_for(300_000)
    expected = (300_000 - 5000 - 7000) * p.input + 5000 * p.cache_read + 7000 * p.cache_write + 9000 * p.output
    cost = event_cost_nanousd(price, input_tokens=300_000, output_tokens=9000, cache_read_tokens=5000,
                              cache_write_tokens=7000, thought_tokens=0)  # fmt: skip
    assert cost == int((expected * 10**9).to_integral_value(rounding="ROUND_HALF_EVEN"))
    # A price that is no whole number of atto-USD per token takes the Decimal formula, still exact.
    thirds = model_price_per_million(source="override:1", input_per_million_usd=Decimal(1) / 3,
                                     output_per_million_usd=Decimal(2) / 3)  # fmt: skip
    assert _atto_usd_per_token(thirds.prices_for(1)) is None
    assert isinstance(thirds.base, TokenPrices)
    assert event_cost_nanousd(thirds, input_tokens=3_000_000, output_tokens=3_000_000, cache_read_tokens=0,
                              cache_write_tokens=0, thought_tokens=0) == 3_000_000_000  # fmt: skip


def test_reprice_keeps_each_events_service_tier_and_one_hour_writes(api_client, ingest_key, project):
    post_events(api_client, ingest_key, [
        usage_event(model="gpt-5", input_tokens=1_000_000, output_tokens=0, service_tier="batch"),
        usage_event(provider="anthropic", model="claude-sonnet-4-5", input_tokens=100_000, output_tokens=0,
                    cache_write_tokens=100_000, cache_write_1h_tokens=100_000, session_id="claude"),
    ])  # fmt: skip
    stored = dict(RawEvent.objects.values_list("model", "cost_nanousd"))
    assert stored == {"gpt-5": 625_000_000, "claude-sonnet-4-5": 600_000_000}

    call_command("reprice", "--project", "acme/chatbot", stdout=StringIO())
    assert dict(RawEvent.objects.values_list("model", "cost_nanousd")) == stored
    override(project, "gpt-5", "1", "1")
    call_command("reprice", "--project", "acme/chatbot", stdout=StringIO())
    batch = RawEvent.objects.get(model="gpt-5")
    assert batch.cost_nanousd == 10**9 and batch.price_source.endswith("[batch: standard price]")
