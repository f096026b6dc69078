"""Cost per DESIGN.md section 6, checked against litellm 1.106.2's own `cost_per_token`.

Usage objects are built the way litellm's Anthropic transformation builds them
(`litellm/llms/anthropic/chat/transformation.py::calculate_usage`): `prompt_tokens` counts every
input token, cache reads and writes included, with the cache tokens also given as
`cache_read_input_tokens` / `cache_creation_input_tokens` (which `Usage` copies into
`prompt_tokens_details.cached_tokens` / `cache_write_tokens`), and reasoning tokens inside
`completion_tokens` with `completion_tokens_details.reasoning_tokens`. That is exactly DESIGN.md
section 1's convention, so the same five counts feed both sides.

Models with `off_peak_pricing` (DeepSeek V4) bill by the time of the call: litellm reads its wall
clock, TokenSite the event's `billed_at`. Every comparison pins litellm's billing clock
(`litellm._internal_context.pinned_billing_time`) to the same moment it passes as `billed_at`, at a
peak and at an off-peak hour.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from apps.pricing.catalog import ModelPrice, TokenPrices, resolve_model_price
from apps.pricing.cost import event_cost_nanousd, model_price_from_override, model_price_per_million
from apps.pricing.offline import get_litellm

PEAK_HOUR = datetime(2026, 11, 23, 7, 0, tzinfo=timezone.utc)  # a Monday, outside every off-peak window
OFF_PEAK_HOUR = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)  # the same Monday, inside DeepSeek's window
WEEKEND_HOUR = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)  # a Sunday: off-peak all day
BILLING_MOMENTS = {"peak": PEAK_HOUR, "off_peak": OFF_PEAK_HOUR, "weekend": WEEKEND_HOUR}


@dataclass(frozen=True)
class Tokens:
    input: int
    output: int
    cache_read: int = 0
    cache_write: int = 0
    thought: int = 0


USAGES = {
    "small": Tokens(input=1_200, output=350),
    "cache_read_and_write": Tokens(input=52_000, output=2_100, cache_read=30_000, cache_write=8_000),
    "reasoning": Tokens(input=9_000, output=6_000, cache_read=2_000, thought=4_500),
    "above_200k": Tokens(input=250_000, output=12_000, cache_read=100_000, cache_write=20_000, thought=5_000),
    "above_272k": Tokens(input=300_000, output=1_000, cache_read=50_000),
    "at_200k_threshold": Tokens(input=200_000, output=10),
}

# (model as callers send it, provider) — a deliberate sweep: OpenAI incl. o-series and the 272k tier,
# Anthropic cache write/read, Gemini and Vertex 200k tiers and reasoning prices, Bedrock incl.
# cross-region ids, Azure, Mistral, DeepSeek incl. off-peak, xAI (inclusive threshold), Fireworks
# (default cache-read share), Dashscope/Volcengine range tables, and more.
PARITY_MODELS = [
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
    ("gpt-4.1", "openai"),
    ("gpt-4.1-mini", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o3-mini", "openai"),
    ("o4-mini", "openai"),
    ("gpt-5", "openai"),
    ("gpt-5-mini", "openai"),
    ("gpt-5-nano", "openai"),
    ("gpt-5.4", "openai"),
    ("gpt-3.5-turbo", "openai"),
    ("gpt-4-turbo", "openai"),
    ("claude-sonnet-4-5", "anthropic"),
    ("claude-sonnet-4-5-20250929", "anthropic"),
    ("claude-opus-4-5", "anthropic"),
    ("claude-haiku-4-5", "anthropic"),
    ("claude-opus-4-6", "anthropic"),
    ("claude-sonnet-4-6", "anthropic"),
    ("gemini-2.5-pro", "gemini"),
    ("gemini-2.5-flash", "gemini"),
    ("gemini-2.5-flash-lite", "gemini"),
    ("gemini-3.1-pro-preview", "gemini"),
    ("gemini-exp-1206", "gemini"),
    ("gemini-2.5-pro", "vertex_ai"),
    ("gemini-2.5-flash", "vertex_ai"),
    ("gemini-3-pro-preview", "vertex_ai"),
    ("claude-sonnet-4-5", "vertex_ai"),
    ("mistral-large-2411", "vertex_ai"),
    ("meta/llama-4-maverick-17b-128e-instruct-maas", "vertex_ai"),
    ("anthropic.claude-sonnet-4-20250514-v1:0", "bedrock"),
    ("us.anthropic.claude-sonnet-4-20250514-v1:0", "bedrock"),
    ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "bedrock"),
    ("anthropic.claude-3-5-haiku-20241022-v1:0", "bedrock"),
    ("amazon.nova-pro-v1:0", "bedrock"),
    ("us.amazon.nova-lite-v1:0", "bedrock"),
    ("meta.llama3-70b-instruct-v1:0", "bedrock"),
    ("us.deepseek.r1-v1:0", "bedrock"),
    ("azure/gpt-4o", "azure"),
    ("azure/o3-mini", "azure"),
    ("azure/gpt-5", "azure"),
    ("mistral-large-latest", "mistral"),
    ("mistral-small-latest", "mistral"),
    ("codestral-latest", "mistral"),
    ("magistral-medium-latest", "mistral"),
    ("deepseek-chat", "deepseek"),
    ("deepseek-reasoner", "deepseek"),
    ("deepseek-v4-pro", "deepseek"),
    ("deepseek-v4-flash", "deepseek"),
    ("grok-4.3", "xai"),
    ("grok-4.20-reasoning", "xai"),
    ("grok-code-fast-1", "xai"),
    ("accounts/fireworks/models/deepseek-v3", "fireworks_ai"),
    ("accounts/fireworks/models/llama-v3p1-8b-instruct", "fireworks_ai"),
    ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "together_ai"),
    ("qwen-plus-latest", "dashscope"),
    ("qwen3-max", "dashscope"),
    ("qwen-turbo", "dashscope"),
    ("doubao-seed-2-0-pro-260215", "volcengine"),
    ("sonar", "perplexity"),
    ("sonar-deep-research", "perplexity"),
    ("openai/gpt-oss-120b", "groq"),
    ("moonshot-v1-32k", "moonshot"),
    ("llama3.1-8b", "cerebras"),
    ("command-r-plus-08-2024", "cohere_chat"),
]


def litellm_usage(tokens: Tokens):
    """A `litellm.Usage` holding DESIGN.md section 1 counts, shaped as litellm's Anthropic transformation shapes it."""
    litellm = get_litellm()
    from litellm.types.utils import CompletionTokensDetailsWrapper, PromptTokensDetailsWrapper

    return litellm.Usage(
        prompt_tokens=tokens.input,
        completion_tokens=tokens.output,
        total_tokens=tokens.input + tokens.output,
        prompt_tokens_details=PromptTokensDetailsWrapper(
            cached_tokens=tokens.cache_read, cache_creation_tokens=tokens.cache_write
        ),
        completion_tokens_details=CompletionTokensDetailsWrapper(reasoning_tokens=tokens.thought),
        cache_read_input_tokens=tokens.cache_read,
        cache_creation_input_tokens=tokens.cache_write,
    )


def litellm_cost_usd(model_key: str, tokens: Tokens, *, at: datetime) -> float:
    """`litellm.cost_per_token` on the map entry `model_key`, prompt plus completion, billed at `at`."""
    litellm = get_litellm()
    from litellm._internal_context import pinned_billing_time

    with pinned_billing_time(at):
        prompt_usd, completion_usd = litellm.cost_per_token(model=model_key, usage_object=litellm_usage(tokens))
    return prompt_usd + completion_usd


def our_cost_usd(price: ModelPrice, tokens: Tokens, *, at: datetime | None) -> float:
    return (
        event_cost_nanousd(
            price,
            input_tokens=tokens.input,
            output_tokens=tokens.output,
            cache_read_tokens=tokens.cache_read,
            cache_write_tokens=tokens.cache_write,
            thought_tokens=tokens.thought,
            billed_at=at,
        )
        / 1e9
    )


def map_key(price: ModelPrice) -> str:
    return price.source.removeprefix("litellm:")


def test_parity_sweep_spans_at_least_fifty_models_and_every_price_feature():
    prices = [resolve_model_price(model, provider) for model, provider in PARITY_MODELS]
    assert None not in prices, [pm for pm, p in zip(PARITY_MODELS, prices) if p is None]
    assert len({p.source for p in prices}) >= 50
    assert any(p.tiers and p.tiers[0].above_input_tokens == 200_000 for p in prices)
    assert any(p.tiers and p.tiers[-1].above_input_tokens == 272_000 for p in prices)
    assert any(p.base.reasoning is not None for p in prices)
    assert any(p.base.cache_write is not None and p.base.cache_write != p.base.input for p in prices)
    assert any(p.tier_includes_threshold for p in prices)
    assert any(p.off_peak is not None for p in prices)


@pytest.mark.parametrize("moment", ["peak", "off_peak"])
@pytest.mark.parametrize("usage_name", sorted(USAGES))
@pytest.mark.parametrize(("model", "provider"), PARITY_MODELS, ids=[f"{p}:{m}" for m, p in PARITY_MODELS])
def test_cost_equals_litellm_cost_per_token(model, provider, usage_name, moment):
    price = resolve_model_price(model, provider)
    assert price is not None
    tokens, at = USAGES[usage_name], BILLING_MOMENTS[moment]
    ours = our_cost_usd(price, tokens, at=at)
    assert ours == pytest.approx(litellm_cost_usd(map_key(price), tokens, at=at), abs=1e-9, rel=0)


@pytest.mark.slow
def test_cost_equals_litellm_for_every_token_priced_chat_model_in_the_map():
    """The whole bundled map, not just the curated sweep: any provider rule we miss shows up here.

    Skipped entries: ones litellm itself cannot price by their own key (it raises "LLM Provider
    NOT provided" or routes `azure/mistral-…` to OpenAI and finds no entry), and GitHub Copilot,
    whose provider lookup in litellm starts a device login over the network.
    """
    litellm = get_litellm()
    mismatches, compared = [], 0
    for key, entry in litellm.model_cost.items():
        if not isinstance(entry, dict) or entry.get("mode") != "chat":
            continue
        if entry["litellm_provider"] == "github_copilot":
            continue
        price = resolve_model_price(key, entry["litellm_provider"])
        if price is None or map_key(price) != key:
            continue
        cases = [(name, moment) for name in USAGES for moment in BILLING_MOMENTS]
        try:
            theirs = {case: litellm_cost_usd(key, USAGES[case[0]], at=BILLING_MOMENTS[case[1]]) for case in cases}
        except (litellm.BadRequestError, litellm.exceptions.ModelNotMappedError):
            continue
        compared += 1
        for name, moment in cases:
            ours = our_cost_usd(price, USAGES[name], at=BILLING_MOMENTS[moment])
            if abs(ours - theirs[name, moment]) > 1e-9:
                mismatches.append((key, name, moment, ours, theirs[name, moment]))
    assert compared > 2_500
    assert mismatches == []


def test_off_peak_models_bill_the_rate_in_force_when_the_call_was_made():
    price = resolve_model_price("deepseek-v4-pro", "deepseek")
    tokens = USAGES["cache_read_and_write"]
    peak, off_peak = our_cost_usd(price, tokens, at=PEAK_HOUR), our_cost_usd(price, tokens, at=OFF_PEAK_HOUR)
    assert off_peak < peak
    assert our_cost_usd(price, tokens, at=None) == peak  # without a time, standard rates


def test_threshold_is_exclusive_except_for_xai():
    at_threshold = USAGES["at_200k_threshold"]
    gemini = resolve_model_price("gemini-2.5-pro", "gemini")
    assert gemini.prices_for(at_threshold.input) == gemini.base
    assert gemini.prices_for(at_threshold.input + 1) == gemini.tiers[0].prices
    xai = resolve_model_price("grok-4.3", "xai")
    assert xai.tier_includes_threshold and xai.tiers
    assert xai.prices_for(xai.tiers[0].above_input_tokens) == xai.tiers[0].prices


def test_cache_tokens_are_not_counted_twice_and_reasoning_is_not_left_out():
    price = ModelPrice(
        source="test",
        base=TokenPrices(
            input=Decimal("0.000003"),
            output=Decimal("0.000015"),
            cache_read=Decimal("0.0000003"),
            cache_write=Decimal("0.00000375"),
            reasoning=Decimal("0.00002"),
        ),
    )
    cost = event_cost_nanousd(
        price, input_tokens=1_000, output_tokens=500, cache_read_tokens=600, cache_write_tokens=100, thought_tokens=200
    )
    # 300 plain x 3e-6 + 600 x 3e-7 + 100 x 3.75e-6 + 300 visible x 1.5e-5 + 200 thought x 2e-5, in nano-USD
    assert cost == 900_000 + 180_000 + 375_000 + 4_500_000 + 4_000_000


def test_missing_cache_and_reasoning_prices_fall_back_to_input_and_output():
    price = ModelPrice(source="test", base=TokenPrices(input=Decimal("0.000001"), output=Decimal("0.000002")))
    cost = event_cost_nanousd(
        price, input_tokens=1_000, output_tokens=100, cache_read_tokens=400, cache_write_tokens=100, thought_tokens=50
    )
    assert cost == 1_000 * 1_000 + 100 * 2_000


def test_cost_is_rounded_half_even_to_whole_nano_usd():
    price = ModelPrice(source="test", base=TokenPrices(input=Decimal("0.0000000005"), output=Decimal(0)))
    cost = lambda n: event_cost_nanousd(  # noqa: E731
        price, input_tokens=n, output_tokens=0, cache_read_tokens=0, cache_write_tokens=0, thought_tokens=0
    )
    assert (cost(1), cost(3), cost(5)) == (0, 2, 2)


@pytest.mark.parametrize(
    ("tokens", "named"),
    [
        (Tokens(input=10, output=0, cache_read=8, cache_write=3), "cache_write_tokens"),
        (Tokens(input=10, output=5, thought=6), "thought_tokens"),
        (Tokens(input=-1, output=5), "input_tokens"),
    ],
)
def test_counts_that_break_the_subset_rules_are_refused_naming_the_fields(tokens, named):
    price = model_price_per_million(source="test", input_per_million_usd=Decimal(1), output_per_million_usd=Decimal(1))
    with pytest.raises(ValueError, match=named):
        our_cost_usd(price, tokens, at=None)


@dataclass
class Override:
    """The fields of `apps.pricing.models.PriceOverride` that pricing reads."""

    id: int
    input_per_million_usd: Decimal
    output_per_million_usd: Decimal
    cache_read_per_million_usd: Decimal | None
    cache_write_per_million_usd: Decimal | None


def test_override_prices_per_million_tokens_with_its_id_as_source():
    override = Override(
        id=12,
        input_per_million_usd=Decimal("2.50"),
        output_per_million_usd=Decimal("10"),
        cache_read_per_million_usd=Decimal("1.25"),
        cache_write_per_million_usd=None,
    )
    price = model_price_from_override(override)
    assert price.source == "override:12"
    cost = event_cost_nanousd(
        price,
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_read_tokens=400_000,
        cache_write_tokens=100_000,
        thought_tokens=300_000,
    )
    # 500k plain at $2.50/M + 400k read at $1.25/M + 100k write at input + 1M out at $10/M
    assert cost == 1_250_000_000 + 500_000_000 + 250_000_000 + 10_000_000_000
