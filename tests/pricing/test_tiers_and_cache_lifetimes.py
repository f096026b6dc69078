"""One-hour cache writes and service tiers (DESIGN.md section 6), priced three ways.

1. Against hand computations from the prices the providers publish: Anthropic bills a five-minute
   cache write at 1.25x the input price, a one-hour write at 2x, and a batch at half of every
   price; OpenAI's flex tier is half the standard price, its priority tier for gpt-5 is 2x.
2. Against litellm 1.106.2 on the same usage: `cost_per_token(service_tier=...)` for flex and
   priority (one-hour writes given as `cache_creation_token_details`), `batch_cost_calculator`
   for batches.
3. A sweep over every chat model of the map that has tier or one-hour prices.

Two places where TokenSite deliberately differs from litellm, each tested by hand below:
- A one-hour write in a batch: litellm's batch calculator bills it as a five-minute write;
  Anthropic discounts it like every other price (2x input x 0.5).
- Fireworks AI's priority tier: litellm's Fireworks calculator ignores `service_tier`; the map's
  `*_priority` prices are what Fireworks bills and what TokenSite uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest

from apps.pricing.catalog import ROUTE_ALIASES, resolve_model_price
from apps.pricing.cost import event_cost_nanousd, model_price_per_million
from apps.pricing.offline import get_litellm

PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Usage:
    input: int
    output: int
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    thought: int = 0


USAGES = {
    "one_hour_writes": Usage(input=120_000, output=900, cache_read=10_000, cache_write=100_000, cache_write_1h=100_000),
    "mixed_lifetimes": Usage(input=52_000, output=2_100, cache_read=30_000, cache_write=8_000, cache_write_1h=3_000),
    "reasoning": Usage(input=9_000, output=6_000, cache_read=2_000, thought=4_500),
    "long_context": Usage(input=300_000, output=1_000, cache_read=50_000, cache_write=20_000, cache_write_1h=5_000),
}


def cost_usd(price, usage: Usage, tier: str | None = None) -> Decimal:
    nano = event_cost_nanousd(
        price.for_service_tier(tier),
        input_tokens=usage.input,
        output_tokens=usage.output,
        cache_read_tokens=usage.cache_read,
        cache_write_tokens=usage.cache_write,
        cache_write_1h_tokens=usage.cache_write_1h,
        thought_tokens=usage.thought,
    )
    return Decimal(nano) / 10**9


def hand_usd(usage: Usage, *, input_pm, output_pm, cache_read_pm, cache_write_pm, cache_write_1h_pm,
             reasoning_pm=None) -> Decimal:  # fmt: skip
    """The bill from prices per million tokens, written out term by term."""
    plain = usage.input - usage.cache_read - usage.cache_write
    visible = usage.output - usage.thought
    return (
        plain * Decimal(input_pm)
        + usage.cache_read * Decimal(cache_read_pm)
        + (usage.cache_write - usage.cache_write_1h) * Decimal(cache_write_pm)
        + usage.cache_write_1h * Decimal(cache_write_1h_pm)
        + visible * Decimal(output_pm)
        + usage.thought * Decimal(reasoning_pm if reasoning_pm is not None else output_pm)
    ) / PER_MILLION


# Hand computations from the providers' published multipliers -----------------------------------

# Claude Sonnet 4.5: $3 / $15 per million, cache read 0.1x input.
SONNET_INPUT, SONNET_OUTPUT = Decimal(3), Decimal(15)


def test_one_hour_cache_writes_bill_at_twice_the_input_price_not_the_five_minute_rate():
    price = resolve_model_price("claude-sonnet-4-5", "anthropic")
    only_writes = Usage(input=100_000, output=0, cache_write=100_000, cache_write_1h=100_000)
    assert cost_usd(price, only_writes) == Decimal("0.6")  # 100,000 x $3/M x 2
    five_minute = Usage(input=100_000, output=0, cache_write=100_000)
    assert cost_usd(price, five_minute) == Decimal("0.375")  # 100,000 x $3/M x 1.25


@pytest.mark.parametrize("usage_name", sorted(USAGES))
def test_anthropic_standard_tier_matches_the_published_multipliers(usage_name):
    usage = USAGES[usage_name]
    expected = hand_usd(
        usage, input_pm=SONNET_INPUT, output_pm=SONNET_OUTPUT, cache_read_pm=SONNET_INPUT * Decimal("0.1"),
        cache_write_pm=SONNET_INPUT * Decimal("1.25"), cache_write_1h_pm=SONNET_INPUT * 2,
    )
    price = resolve_model_price("claude-sonnet-4-5", "anthropic")
    assert cost_usd(price, usage) == expected
    assert cost_usd(price, usage, "standard") == expected


@pytest.mark.parametrize("usage_name", sorted(USAGES))
def test_anthropic_batch_is_half_of_every_price_one_hour_writes_included(usage_name):
    usage = USAGES[usage_name]
    half = Decimal("0.5")
    expected = hand_usd(
        usage, input_pm=SONNET_INPUT * half, output_pm=SONNET_OUTPUT * half,
        cache_read_pm=SONNET_INPUT * Decimal("0.1") * half, cache_write_pm=SONNET_INPUT * Decimal("1.25") * half,
        cache_write_1h_pm=SONNET_INPUT * 2 * half,
    )
    assert cost_usd(resolve_model_price("claude-sonnet-4-5", "anthropic"), usage, "batch") == expected


def test_anthropic_priority_is_not_in_the_map_so_the_standard_price_stands_in_and_says_so():
    price = resolve_model_price("claude-sonnet-4-5", "anthropic")
    usage = USAGES["mixed_lifetimes"]
    assert cost_usd(price, usage, "priority") == cost_usd(price, usage)
    assert price.for_service_tier("priority").source == "litellm:claude-sonnet-4-5 [priority: standard price]"
    assert price.for_service_tier("batch").source == "litellm:claude-sonnet-4-5 [batch]"
    assert price.for_service_tier("standard").source == "litellm:claude-sonnet-4-5"
    assert price.for_service_tier("default").source == "litellm:claude-sonnet-4-5"


# gpt-5: $1.25 / $10 per million, cache read $0.125; flex and batch half of each, priority twice.
@pytest.mark.parametrize(("tier", "multiplier"), [(None, "1"), ("default", "1"), ("flex", "0.5"),
                                                  ("batch", "0.5"), ("priority", "2")])
def test_openai_tiers_match_the_published_prices(tier, multiplier):
    usage = USAGES["reasoning"]
    m = Decimal(multiplier)
    expected = hand_usd(usage, input_pm=Decimal("1.25") * m, output_pm=Decimal(10) * m,
                        cache_read_pm=Decimal("0.125") * m, cache_write_pm=0, cache_write_1h_pm=0)
    price = resolve_model_price("gpt-5", "openai")
    assert cost_usd(price, usage, tier) == expected
    if tier not in (None, "default"):
        assert price.for_service_tier(tier).source == f"litellm:gpt-5 [{tier}]"


def test_a_tier_the_map_does_not_price_bills_the_standard_price_recorded_as_such():
    price = resolve_model_price("gpt-4o", "openai")  # gpt-4o has batch and priority prices, no flex
    usage = USAGES["reasoning"]
    assert cost_usd(price, usage, "flex") == cost_usd(price, usage)
    assert price.for_service_tier("flex").source == "litellm:gpt-4o [flex: standard price]"
    assert price.for_service_tier("scale").source == "litellm:gpt-4o [scale: standard price]"


def test_anthropic_models_priced_through_a_route_alias_get_anthropics_one_hour_and_batch_prices():
    model = "claude-sonnet-4-20250514"
    assert model in ROUTE_ALIASES
    price = resolve_model_price(model, "anthropic")
    short = Usage(input=20_000, output=500, cache_read=5_000, cache_write=10_000, cache_write_1h=4_000)
    assert cost_usd(price, short) == hand_usd(short, input_pm=3, output_pm=15, cache_read_pm=Decimal("0.3"),
                                              cache_write_pm=Decimal("3.75"), cache_write_1h_pm=6)
    assert cost_usd(price, short, "batch") == hand_usd(short, input_pm=Decimal("1.5"), output_pm=Decimal("7.5"),
                                                       cache_read_pm=Decimal("0.15"), cache_write_pm=Decimal("1.875"),
                                                       cache_write_1h_pm=3)  # fmt: skip
    # Past 200k input tokens every price doubles (Sonnet 4's long-context rate), the one-hour write too.
    long = Usage(input=250_000, output=500, cache_write=10_000, cache_write_1h=4_000)
    assert cost_usd(price, long) == hand_usd(long, input_pm=6, output_pm=Decimal("22.5"), cache_read_pm=0,
                                             cache_write_pm=Decimal("7.5"), cache_write_1h_pm=12)
    assert cost_usd(price, long, "batch") == hand_usd(long, input_pm=3, output_pm=Decimal("11.25"), cache_read_pm=0,
                                                      cache_write_pm=Decimal("3.75"), cache_write_1h_pm=6)


def test_an_override_bills_one_hour_writes_at_anthropics_ratio_of_its_write_price():
    price = model_price_per_million(source="override:7", input_per_million_usd=Decimal(2),
                                    output_per_million_usd=Decimal(10), cache_write_per_million_usd=Decimal("2.5"))
    usage = Usage(input=10_000, output=0, cache_write=10_000, cache_write_1h=6_000)
    assert cost_usd(price, usage) == hand_usd(usage, input_pm=2, output_pm=10, cache_read_pm=2,
                                              cache_write_pm=Decimal("2.5"), cache_write_1h_pm=4)  # 2.5 x 2 / 1.25
    assert price.for_service_tier("batch").source == "override:7 [batch: standard price]"
    without_write_price = model_price_per_million(source="override:8", input_per_million_usd=Decimal(2),
                                                  output_per_million_usd=Decimal(10))
    assert cost_usd(without_write_price, usage) == Decimal("0.02")  # every write at the input price


def test_fireworks_priority_bills_the_maps_priority_prices():
    litellm = get_litellm()
    key = next(k for k, e in litellm.model_cost.items()
               if isinstance(e, dict) and e.get("litellm_provider") == "fireworks_ai"
               and e.get("input_cost_per_token_priority") and e.get("mode") == "chat")  # fmt: skip
    entry = litellm.model_cost[key]
    usage = Usage(input=9_000, output=600)
    expected = (usage.input * Decimal(repr(entry["input_cost_per_token_priority"]))
                + usage.output * Decimal(repr(entry["output_cost_per_token_priority"])))  # fmt: skip
    assert cost_usd(resolve_model_price(key, "fireworks_ai"), usage, "priority") == expected


def test_one_hour_writes_beyond_the_writes_are_refused_naming_the_fields():
    price = resolve_model_price("claude-sonnet-4-5", "anthropic")
    with pytest.raises(ValueError, match="cache_write_1h_tokens .* exceed cache_write_tokens"):
        cost_usd(price, Usage(input=100, output=0, cache_write=10, cache_write_1h=11))


# Against litellm -------------------------------------------------------------------------------


def litellm_usd(key: str, provider: str, usage: Usage, tier: str | None) -> float:
    litellm = get_litellm()
    from litellm.cost_calculator import batch_cost_calculator
    from litellm.types.utils import (
        CacheCreationTokenDetails,
        CompletionTokensDetailsWrapper,
        PromptTokensDetailsWrapper,
    )

    lifetimes = (
        CacheCreationTokenDetails(ephemeral_5m_input_tokens=usage.cache_write - usage.cache_write_1h,
                                  ephemeral_1h_input_tokens=usage.cache_write_1h)
        if usage.cache_write_1h else None
    )  # fmt: skip
    litellm_usage = litellm.Usage(
        prompt_tokens=usage.input,
        completion_tokens=usage.output,
        total_tokens=usage.input + usage.output,
        prompt_tokens_details=PromptTokensDetailsWrapper(
            cached_tokens=usage.cache_read, cache_creation_tokens=usage.cache_write,
            cache_creation_token_details=lifetimes,
        ),
        completion_tokens_details=CompletionTokensDetailsWrapper(reasoning_tokens=usage.thought),
        cache_read_input_tokens=usage.cache_read,
        cache_creation_input_tokens=usage.cache_write,
    )
    if tier == "batch":
        prompt_usd, completion_usd = batch_cost_calculator(litellm_usage, key, provider)
    else:
        prompt_usd, completion_usd = litellm.cost_per_token(model=key, usage_object=litellm_usage, service_tier=tier)
    return prompt_usd + completion_usd


def comparable(usage: Usage, tier: str | None) -> Usage:
    """litellm's batch calculator has no one-hour price (see the module docstring): batches are
    compared on five-minute writes only."""
    if tier == "batch":
        return Usage(usage.input, usage.output, usage.cache_read, usage.cache_write, 0, usage.thought)
    return usage


LITELLM_CASES = [
    ("claude-sonnet-4-5", "anthropic", None),
    ("claude-opus-4-5", "anthropic", None),
    ("claude-haiku-4-5", "anthropic", "batch"),
    ("claude-sonnet-4-5", "anthropic", "batch"),
    ("gpt-5", "openai", "flex"),
    ("gpt-5", "openai", "priority"),
    ("gpt-5", "openai", "batch"),
    ("gpt-4o", "openai", "priority"),
    ("gpt-4o", "openai", "batch"),
    ("gemini-2.5-pro", "gemini", "batch"),
    ("gemini-2.5-flash", "gemini", "flex"),
    ("gemini-2.5-pro", "gemini", "priority"),
    ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock", None),
    ("azure/gpt-5", "azure", "priority"),
]


@pytest.mark.parametrize("usage_name", sorted(USAGES))
@pytest.mark.parametrize(("model", "provider", "tier"), LITELLM_CASES,
                         ids=[f"{p}:{m}:{t}" for m, p, t in LITELLM_CASES])
def test_tier_and_one_hour_costs_equal_litellm(model, provider, tier, usage_name):
    price = resolve_model_price(model, provider)
    key = price.source.removeprefix("litellm:")
    usage = comparable(USAGES[usage_name], tier)
    ours = float(cost_usd(price, usage, tier))
    assert ours == pytest.approx(litellm_usd(key, provider, usage, tier), abs=1e-9, rel=0)


def test_the_curated_cases_cover_one_hour_prices_and_every_tier():
    prices = {(m, p): resolve_model_price(m, p) for m, p, _ in LITELLM_CASES}
    assert sum(price.base.cache_write_1h is not None for price in prices.values()) >= 4
    for tier in ("flex", "priority", "batch"):
        assert any(prices[m, p].for_service_tier(tier).source.endswith(f"[{tier}]")
                   for m, p, t in LITELLM_CASES if t == tier)  # fmt: skip


def models_with_tier_or_one_hour_prices():
    """(map key, provider, tier) for every chat entry litellm prices by its own key that has a
    one-hour write price (tier None) or the tier's prices."""
    litellm = get_litellm()
    cases = []
    for key, entry in litellm.model_cost.items():
        if not isinstance(entry, dict) or entry.get("mode") != "chat":
            continue
        provider = entry["litellm_provider"]
        if provider == "github_copilot":  # litellm's provider lookup starts a device login
            continue
        price = resolve_model_price(key, provider)
        if price is None or price.source != f"litellm:{key}":
            continue
        if price.base.cache_write_1h is not None:
            cases.append((key, provider, None))
        for tier in ("flex", "priority", "batch"):
            if price.for_service_tier(tier).source.endswith(f"[{tier}]") and not (
                provider == "fireworks_ai" and tier != "batch"
            ):
                cases.append((key, provider, tier))
    return cases


def litellm_reads_the_same_prices(key: str, provider: str) -> bool:
    """Whether litellm, asked for `key`, reads that entry's prices: for a few Bedrock models it
    prefers a `bedrock/<model>` entry with fewer tier prices, so the two would price different entries."""
    litellm = get_litellm()
    try:
        routed_provider = litellm.get_llm_provider(model=key)[1] if provider.startswith("bedrock") else provider
        info = litellm.get_model_info(model=key, custom_llm_provider=routed_provider)
    except Exception:  # noqa: BLE001 - litellm raises a bare Exception for names it cannot route
        return False
    entry = litellm.model_cost[key]
    return all(info.get(name) == value for name, value in entry.items()
               if "cost_per_token" in name or "token_cost" in name)


@pytest.mark.slow
def test_every_model_with_tier_or_one_hour_prices_costs_what_litellm_says():
    litellm = get_litellm()
    cases = models_with_tier_or_one_hour_prices()
    mismatches, compared = [], 0
    for key, provider, tier in cases:
        if not litellm_reads_the_same_prices(key, provider):
            continue
        price = resolve_model_price(key, provider)
        for name, usage in USAGES.items():
            usage = comparable(usage, tier)
            try:
                theirs = litellm_usd(key, provider, usage, tier)
            except (litellm.BadRequestError, litellm.exceptions.ModelNotMappedError):
                continue
            compared += 1
            ours = float(cost_usd(price, usage, tier))
            if abs(ours - theirs) > 1e-9:
                mismatches.append((key, tier, name, ours, theirs))
    assert {tier for _, _, tier in cases} == {None, "flex", "priority", "batch"}
    assert compared > 3_000
    assert mismatches == []
