"""Model prices read from litellm's bundled price map, exactly as litellm 1.106.2 bills them.

DESIGN.md section 6: a model is priced when it is *found* in `litellm.model_cost`; a model that is
not found is unpriced (`None`), never $0. `litellm.cost_per_token` cannot decide this, because it
returns 0.0 for names its map lacks.

Prices are kept as `Decimal` built from the map's shortest float repr (`3e-06` -> `0.000003`), so
cost arithmetic is exact and only litellm's own float noise separates the two results.

The rules below reproduce litellm's `generic_cost_per_token` and the provider calculators it routes
to (`litellm/litellm_core_utils/llm_cost_calc/utils.py`, `litellm/cost_calculator.py`,
`litellm/llms/{xai,fireworks_ai,dashscope}/`), for the standard service tier, no data-residency or
regional uplift, and no off-peak window:

- `*_above_<N>k_tokens` keys: every threshold the prompt exceeds applies in ascending order, each
  replacing the input / output / cache-read / cache-write price it names and keeping the others, so
  the highest tier wins for the prices it lists. A cache price still missing after that is the tier's
  input price. The reasoning price (`output_cost_per_reasoning_token`) is not tiered.
- `tiered_pricing` tables (Dashscope, Volcengine): one tier per request, picked by input tokens
  (`range_start < input <= range_end`); every price comes from that tier, missing cache prices being the
  tier's input price and a missing reasoning price the tier's output price.
- xAI: a threshold applies from the threshold itself (`>=`), and reasoning tokens bill at the output
  price (litellm's xAI calculator drops the reasoning breakdown).
- Fireworks AI: a missing cache-read price is half the input price.
- `off_peak_pricing` (DeepSeek V4, some Tencent models): inside an off-peak window each rate the
  block sets replaces the rate that would otherwise apply (tiered or not); unset rates stay standard,
  a missing cache price becomes the off-peak input price. litellm decides by its wall clock when it is
  called; TokenSite decides by the time the call was billed (`billed_at`, the event's timestamp).

Nothing here imports Django; litellm is imported lazily through `apps.pricing.offline`.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import TypeVar

from apps.pricing.off_peak import OffPeakSchedule, parse_off_peak_schedule
from apps.pricing.offline import get_litellm

# Exactly litellm's threshold keys of the standard service tier: tier- and batch-suffixed keys end
# in `_priority`, `_batches`, ... and so never match.
_THRESHOLD_KEY = re.compile(
    r"^(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost|cache_creation_input_token_cost)"
    r"(?:_above_1hr)?_above_(\d+)(k?)_tokens$"
)
_Fallback = TypeVar("_Fallback", Decimal, Decimal | None)
_FIREWORKS_CACHE_READ_SHARE = Decimal("0.5")  # litellm.constants.FIREWORKS_AI_DEFAULT_CACHE_READ_RATE_RATIO

# Provider labels callers send that differ from litellm's route prefix (Google AI Studio is litellm's
# `gemini`). Other labels are used as the prefix unchanged (`vertex_ai`, `bedrock`, `xai`, `mistral`).
_PROVIDER_PREFIXES = {
    "google": "gemini",
    "google_ai_studio": "gemini",
    "vertex": "vertex_ai",
    "google_vertex": "vertex_ai",
    "aws": "bedrock",
    "aws_bedrock": "bedrock",
}

# Dated models missing from litellm's map under their own route, mapped to the entry of the same
# model under another route at the same list price (DESIGN.md section 6). Each is covered by a test
# that checks the two list prices agree with the provider's published price.
ROUTE_ALIASES = {
    "claude-sonnet-4-20250514": "anthropic.claude-sonnet-4-20250514-v1:0",
    "claude-opus-4-1-20250805": "anthropic.claude-opus-4-1-20250805-v1:0",
}


@dataclass(frozen=True, slots=True)
class TokenPrices:
    """USD per token for one price tier. A `None` cache price bills at `input`; `None` reasoning at `output`."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PriceTier:
    """Prices for every token of a call whose input tokens exceed `above_input_tokens`."""

    above_input_tokens: int
    prices: TokenPrices


@dataclass(frozen=True, slots=True)
class OffPeakPrices:
    """Rates that replace the standard ones while `schedule` is open; `None` keeps the standard rate."""

    schedule: OffPeakSchedule
    input: Decimal | None = None
    output: Decimal | None = None
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None

    def applied_to(self, standard: TokenPrices) -> TokenPrices:
        input_price = _first(self.input, standard.input)
        return TokenPrices(
            input=input_price,
            output=_first(self.output, standard.output),
            cache_read=_first(self.cache_read, _first(standard.cache_read, input_price)),
            cache_write=_first(self.cache_write, _first(standard.cache_write, input_price)),
            reasoning=_first(self.reasoning, standard.reasoning),
        )


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Everything needed to price a call of one model, and where those prices came from.

    `source` is stored with each cost (`litellm:gpt-4o`,
    `litellm:anthropic.claude-sonnet-4-20250514-v1:0 (alias of claude-sonnet-4-20250514)`, `override:12`),
    so a stored cost can always be traced to the price that made it.
    """

    source: str
    base: TokenPrices
    tiers: tuple[PriceTier, ...] = ()  # ascending by threshold
    tier_includes_threshold: bool = False  # xAI bills the higher tier from the threshold itself
    off_peak: OffPeakPrices | None = None

    def prices_for(self, input_tokens: int, billed_at: datetime | None = None) -> TokenPrices:
        """Prices for every token of a call with this many input tokens, billed at `billed_at`.

        Without `billed_at` (timezone-aware) off-peak windows are ignored: standard rates.
        """
        chosen = self.base
        for tier in self.tiers:
            if input_tokens > tier.above_input_tokens or (
                self.tier_includes_threshold and input_tokens == tier.above_input_tokens
            ):
                chosen = tier.prices
        if billed_at is not None and self.off_peak is not None and self.off_peak.schedule.is_open(billed_at):
            return self.off_peak.applied_to(chosen)
        return chosen


def resolve_model_price(model: str, provider: str | None = None) -> ModelPrice | None:
    """litellm's price for `model` as called through `provider`, or None when the map has none.

    Lookup order, the first entry with per-token prices wins:
    1. `<provider>/<model>` where the provider's keys carry a prefix (`gemini/…`, `vertex_ai/…`,
       `bedrock/…`, `xai/…`), as litellm's `cost_per_token` tries it first;
    2. `model` exactly (OpenAI, Anthropic and Bedrock model ids are unprefixed keys);
    3. `model` without a leading `<route>/` segment when that entry is of the same route
       (`openai/gpt-4o` -> `gpt-4o`, `bedrock/anthropic.claude-…` -> the `bedrock_converse` entry,
       but not `github_copilot/gpt-4` -> OpenAI's `gpt-4`);
    4. `ROUTE_ALIASES`, recorded in `source` as `litellm:<entry> (alias of <model>)`.
    Cached per (model, provider), so pricing a batch resolves each model once.
    """
    return _resolve(model.strip(), (provider or "").strip().lower() or None)


@lru_cache(maxsize=4096)
def _resolve(model: str, provider: str | None) -> ModelPrice | None:
    model_cost: Mapping[str, Mapping[str, object]] = get_litellm().model_cost
    for key in _candidate_keys(model, provider):
        entry = model_cost.get(key)
        if isinstance(entry, Mapping) and _is_token_priced(entry):
            return _model_price(entry, source=f"litellm:{key}")
    route, _, bare_model = model.partition("/")
    entry = model_cost.get(bare_model) if bare_model else None
    if isinstance(entry, Mapping) and str(entry.get("litellm_provider")).startswith(route) and _is_token_priced(entry):
        return _model_price(entry, source=f"litellm:{bare_model}")
    alias = ROUTE_ALIASES.get(model.rsplit("/", 1)[-1])
    entry = model_cost.get(alias) if alias else None
    if isinstance(entry, Mapping) and _is_token_priced(entry):
        return _model_price(entry, source=f"litellm:{alias} (alias of {model})")
    return None


def _candidate_keys(model: str, provider: str | None) -> list[str]:
    keys = []
    if provider:
        prefix = _PROVIDER_PREFIXES.get(provider, provider)
        if not model.startswith(f"{prefix}/"):
            keys.append(f"{prefix}/{model}")
    keys.append(model)
    return keys


def _is_token_priced(entry: Mapping[str, object]) -> bool:
    """Per-token prices, flat or tiered; entries priced per image, second or character are not."""
    return _rate(entry, "input_cost_per_token") is not None or bool(entry.get("tiered_pricing"))


def _rate(entry: Mapping[str, object], key: str) -> Decimal | None:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return Decimal(repr(value))


def _model_price(entry: Mapping[str, object], *, source: str) -> ModelPrice:
    provider = entry.get("litellm_provider")
    base = TokenPrices(
        input=_first(_rate(entry, "input_cost_per_token"), Decimal(0)),
        output=_first(_rate(entry, "output_cost_per_token"), Decimal(0)),
        cache_read=_rate(entry, "cache_read_input_token_cost"),
        cache_write=_rate(entry, "cache_creation_input_token_cost"),
        reasoning=_rate(entry, "output_cost_per_reasoning_token"),
    )
    if provider == "fireworks_ai" and base.cache_read is None:
        base = replace(base, cache_read=base.input * _FIREWORKS_CACHE_READ_SHARE)
    table = entry.get("tiered_pricing")
    tiers = _table_tiers(table, base) if isinstance(table, list) and table else _threshold_tiers(entry, base)
    if provider == "xai":
        base = replace(base, reasoning=None)
        tiers = tuple(PriceTier(t.above_input_tokens, replace(t.prices, reasoning=None)) for t in tiers)
    return ModelPrice(
        source=source,
        base=base,
        tiers=tiers,
        tier_includes_threshold=provider == "xai",
        off_peak=_off_peak_prices(entry.get("off_peak_pricing")),
    )


def _off_peak_prices(block: object) -> OffPeakPrices | None:
    if not isinstance(block, Mapping):
        return None
    return OffPeakPrices(
        schedule=parse_off_peak_schedule(block),
        input=_rate(block, "input_cost_per_token"),
        output=_rate(block, "output_cost_per_token"),
        cache_read=_rate(block, "cache_read_input_token_cost"),
        cache_write=_rate(block, "cache_creation_input_token_cost"),
        reasoning=_rate(block, "output_cost_per_reasoning_token"),
    )


def _threshold_tiers(entry: Mapping[str, object], base: TokenPrices) -> tuple[PriceTier, ...]:
    """`*_above_<N>k_tokens` keys as cumulative tiers (see module docstring)."""
    thresholds: dict[int, str] = {}
    for key, value in entry.items():
        match = _THRESHOLD_KEY.match(key)
        if match and value is not None:
            digits, kilo = match.group(2), match.group(3)
            thresholds[int(digits) * (1000 if kilo else 1)] = f"{digits}{kilo}"
    tiers = []
    prices = base
    for threshold in sorted(thresholds):
        label = thresholds[threshold]
        prices = TokenPrices(
            input=_first(_rate(entry, f"input_cost_per_token_above_{label}_tokens"), prices.input),
            output=_first(_rate(entry, f"output_cost_per_token_above_{label}_tokens"), prices.output),
            cache_read=_first(_rate(entry, f"cache_read_input_token_cost_above_{label}_tokens"), prices.cache_read),
            cache_write=_first(
                _rate(entry, f"cache_creation_input_token_cost_above_{label}_tokens"), prices.cache_write
            ),
            reasoning=base.reasoning,
        )
        tiers.append(PriceTier(above_input_tokens=threshold, prices=prices))
    return tuple(tiers)


def _table_tiers(table: list[object], base: TokenPrices) -> tuple[PriceTier, ...]:
    """A `tiered_pricing` range table as tiers (its ranges are contiguous from 0 in the bundled map)."""
    tiers = []
    for row in table:
        if not isinstance(row, Mapping) or len(row.get("range") or ()) != 2:
            continue
        tier_input = _rate(row, "input_cost_per_token")
        if tier_input is None:
            continue
        tier_output = _rate(row, "output_cost_per_token")
        tiers.append(
            PriceTier(
                above_input_tokens=int(row["range"][0]),
                prices=TokenPrices(
                    input=tier_input,
                    output=_first(tier_output, base.output),
                    cache_read=_rate(row, "cache_read_input_token_cost"),
                    cache_write=_rate(row, "cache_creation_input_token_cost"),
                    reasoning=_first(
                        _rate(row, "output_cost_per_reasoning_token"),
                        None if tier_output is not None else base.reasoning,
                    ),
                ),
            )
        )
    return tuple(sorted(tiers, key=lambda tier: tier.above_input_tokens))


def _first(price: Decimal | None, fallback: _Fallback) -> Decimal | _Fallback:
    """`price` unless the map leaves it out; an explicit 0 is a real (free) price, as in litellm."""
    return fallback if price is None else price
