"""Price lookup in litellm's map (DESIGN.md section 6): found means priced, not found means unpriced."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from apps.pricing.catalog import BUNDLED_PRICE_BOOK, ROUTE_ALIASES, resolve_model_price
from apps.pricing.off_peak import parse_off_peak_schedule
from apps.pricing.offline import get_litellm


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("no-such-model-2031", None),
        ("no-such-model-2031", "openai"),
        ("gpt-4o-but-not-really", "openai"),
        ("github_copilot/gpt-4", None),  # a route litellm lists without token prices is not OpenAI's gpt-4
        ("bedrock/*/1-month-commitment/cohere.command-text-v14", "bedrock"),  # priced per second, not per token
    ],
)
def test_models_without_a_token_price_in_the_map_are_unpriced_not_free(model, provider):
    assert resolve_model_price(model, provider) is None


def test_a_model_the_map_lists_as_free_is_priced_at_zero():
    price = resolve_model_price("codestral-latest", "codestral")
    assert price is not None and price.source == "litellm:codestral/codestral-latest"
    assert (price.base.input, price.base.output) == (Decimal(0), Decimal(0))


@pytest.mark.parametrize(
    ("model", "provider", "source"),
    [
        ("gpt-4o", "openai", "litellm:gpt-4o"),
        ("openai/gpt-4o", None, "litellm:gpt-4o"),
        ("gpt-4o", None, "litellm:gpt-4o"),
        ("claude-sonnet-4-5", "anthropic", "litellm:claude-sonnet-4-5"),
        ("gemini-2.5-pro", "gemini", "litellm:gemini/gemini-2.5-pro"),
        ("gemini-2.5-pro", "google", "litellm:gemini/gemini-2.5-pro"),
        ("gemini/gemini-2.5-pro", "gemini", "litellm:gemini/gemini-2.5-pro"),
        ("gemini-2.5-pro", "vertex_ai", "litellm:gemini-2.5-pro"),  # Vertex's entry is the unprefixed key
        ("vertex_ai/gemini-2.5-pro", None, "litellm:gemini-2.5-pro"),
        ("bedrock/anthropic.claude-sonnet-4-20250514-v1:0", None, "litellm:anthropic.claude-sonnet-4-20250514-v1:0"),
        ("claude-sonnet-4-5", "vertex_ai", "litellm:vertex_ai/claude-sonnet-4-5"),
        ("anthropic.claude-sonnet-4-20250514-v1:0", "bedrock", "litellm:anthropic.claude-sonnet-4-20250514-v1:0"),
        ("grok-4.3", "xai", "litellm:xai/grok-4.3"),
        ("mistral-large-latest", "Mistral", "litellm:mistral/mistral-large-latest"),
        ("deepseek-chat", "deepseek", "litellm:deepseek/deepseek-chat"),
    ],
)
def test_models_resolve_with_the_provider_prefix_litellm_needs(model, provider, source):
    assert resolve_model_price(model, provider).source == source


def test_claude_sonnet_4_dated_name_resolves_through_the_bedrock_alias_and_records_it():
    litellm = get_litellm()
    assert "claude-sonnet-4-20250514" not in litellm.model_cost
    # The trap the lookup avoids: litellm prices the missing name at $0 instead of refusing it.
    assert litellm.cost_per_token(model="claude-sonnet-4-20250514", prompt_tokens=1_000, completion_tokens=1_000) == (
        0.0,
        0.0,
    )
    for model, provider in [("claude-sonnet-4-20250514", "anthropic"), ("anthropic/claude-sonnet-4-20250514", None)]:
        price = resolve_model_price(model, provider)
        assert price.source == f"litellm:anthropic.claude-sonnet-4-20250514-v1:0 (alias of {model})"


# Anthropic's published list prices per million tokens: input, output, 5-minute cache write, cache read.
ANTHROPIC_LIST_PRICES = {
    "claude-sonnet-4-20250514": ("3", "15", "3.75", "0.30"),
    "claude-opus-4-1-20250805": ("15", "75", "18.75", "1.50"),
}


@pytest.mark.parametrize("model", sorted(ROUTE_ALIASES))
def test_every_alias_is_missing_from_the_map_and_lands_on_the_same_list_price(model):
    assert model not in get_litellm().model_cost
    assert sorted(ROUTE_ALIASES) == sorted(ANTHROPIC_LIST_PRICES)
    base = resolve_model_price(model, "anthropic").base
    per_million = tuple(p * 1_000_000 for p in (base.input, base.output, base.cache_write, base.cache_read))
    assert per_million == tuple(Decimal(p) for p in ANTHROPIC_LIST_PRICES[model])


def test_gemini_long_context_prices_become_a_tier_above_200k_input_tokens():
    price = resolve_model_price("gemini-2.5-pro", "gemini")
    assert [tier.above_input_tokens for tier in price.tiers] == [200_000]
    long_context = price.tiers[0].prices
    assert (long_context.input, long_context.output, long_context.cache_read) == (
        Decimal("0.0000025"),
        Decimal("0.000015"),
        Decimal("2.5E-7"),
    )


def test_reasoning_price_is_kept_where_the_map_has_one():
    assert resolve_model_price("gemini-2.5-flash", "gemini").base.reasoning is not None
    assert resolve_model_price("o3", "openai").base.reasoning is None  # billed at the output price


def test_resolution_is_cached_per_model_and_provider():
    first = resolve_model_price("gpt-4o-mini", "openai")
    assert resolve_model_price("gpt-4o-mini", "openai") is first
    assert resolve_model_price(" gpt-4o-mini ", "OpenAI") is first


def test_bundled_prices_name_the_bundled_book_of_the_pinned_litellm():
    assert BUNDLED_PRICE_BOOK == "litellm-1.106.2"
    price = resolve_model_price("gpt-5", "openai")
    assert price.price_book == BUNDLED_PRICE_BOOK
    assert {price.for_service_tier(tier).price_book for tier in ("flex", "priority", "batch", "turbo")} == {
        BUNDLED_PRICE_BOOK}
    assert resolve_model_price("claude-sonnet-4-20250514", "anthropic").price_book == BUNDLED_PRICE_BOOK


def test_off_peak_windows_wrap_past_midnight_and_respect_weekdays():
    schedule = parse_off_peak_schedule(
        {
            "windows": [
                {"hours_utc": ["22:00-02:00"], "weekdays": [1, 2, 3, 4, 5]},
                {"hours_utc": "00:00-00:00", "weekdays": [6, 7]},
            ]
        }
    )
    monday = datetime(2026, 11, 23, tzinfo=timezone.utc)
    assert schedule.is_open(monday.replace(hour=23))
    assert schedule.is_open(monday.replace(hour=1, minute=59))
    assert not schedule.is_open(monday.replace(hour=2))
    assert not schedule.is_open(monday.replace(hour=12))
    assert schedule.is_open(datetime(2026, 11, 22, 12, tzinfo=timezone.utc))  # Sunday, all day


def test_off_peak_weekdays_are_read_on_the_providers_calendar():
    schedule = parse_off_peak_schedule(
        {"weekday_timezone": "Asia/Shanghai", "windows": [{"hours_utc": "00:00-00:00", "weekdays": [6, 7]}]}
    )
    friday_evening_utc = datetime(2026, 11, 27, 17, tzinfo=timezone.utc)  # already Saturday in Shanghai
    assert schedule.is_open(friday_evening_utc)
    assert not parse_off_peak_schedule({"windows": [{"hours_utc": "00:00-00:00", "weekdays": [6, 7]}]}).is_open(
        friday_evening_utc
    )
