"""Model prices read from litellm's bundled price map, exactly as litellm 1.106.2 bills them.

DESIGN.md section 6: a model is priced when it is *found* in `litellm.model_cost`; a model that is
not found is unpriced (`None`), never $0. `litellm.cost_per_token` cannot decide this, because it
returns 0.0 for names its map lacks.

Prices are kept as `Decimal` built from the map's shortest float repr (`3e-06` -> `0.000003`), so
cost arithmetic is exact and only litellm's own float noise separates the two results.

The rules below reproduce litellm's `generic_cost_per_token` and the provider calculators it routes
to (`litellm/litellm_core_utils/llm_cost_calc/utils.py`, `litellm/cost_calculator.py`,
`litellm/llms/{xai,fireworks_ai,dashscope}/`), for the standard service tier, no data-residency or
regional uplift, and no off-peak window (service tiers and one-hour writes below):

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

One-hour cache writes bill at `cache_creation_input_token_cost_above_1hr` (and its
`_above_<N>k_tokens` variants), else at the five-minute write price, as litellm bills them; no
service tier has its own one-hour price in the map, so every tier uses the standard one.

Service tiers (`ModelPrice.for_service_tier`): `flex` / `priority` (and litellm's other suffixes)
read the entry as litellm's `get_service_tier_cost_key` does, each `<key>_<tier>` replacing `<key>`
flat and per threshold; `batch` follows litellm's `batch_cost_calculator` (see `_batch_price`). A
tier the entry has no prices for is the standard price, with a source saying so. Two deliberate
differences from litellm, both toward what the provider bills: Fireworks AI priority calls bill the
map's `*_priority` prices (litellm's Fireworks calculator ignores the tier), and one-hour writes in
a batch bill at the discounted one-hour price (litellm's batch calculator bills them as
five-minute writes).

Price books (`PriceCatalog`): the bundled map is the book `litellm-<version>`; an operator can
import newer files in the same format (`manage.py prices_import`), and each map key is read from
the newest book that lists it, else from the bundled map. The resolution rules above apply to that
merged view, and every `ModelPrice` names the book its entry came from (`price_book`).

Nothing here imports Django; litellm is imported lazily through `apps.pricing.offline`.
"""
from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import TypeVar

from tokensite_client.usage import STANDARD_TIER, canonical_service_tier

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


BATCH_TIER = "batch"
# Tiers litellm prices with `<key>_<suffix>` keys (its ServiceTier), batch with `<key>_batches`.
SUFFIXED_TIERS = ("flex", "priority", "balanced", "ultrafast")
_TOKEN_KEYS = ("input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost",
               "cache_creation_input_token_cost")
_THRESHOLD_SUFFIXED = re.compile(r"^(.+)_above_(\d+k?)_tokens_([a-z]+)$")
# Anthropic's published multipliers, for Claude entries the map borrows from another route
# (ROUTE_ALIASES) that lack them: one-hour cache writes bill at 2x the input price, batches at half
# of every price. Every Anthropic entry of the map that has these prices has exactly these ratios.
ANTHROPIC_ONE_HOUR_WRITE_MULTIPLIER = Decimal(2)
ANTHROPIC_BATCH_MULTIPLIER = Decimal("0.5")


# The bundled map's book version, read from the installed package's metadata (no litellm import).
BUNDLED_PRICE_BOOK = f"litellm-{importlib.metadata.version('litellm')}"
# Top-level keys of litellm's file that are not model entries.
NON_MODEL_KEYS = frozenset({"sample_spec", "fallback_generalizations"})


def _standard_stood_in(source: str, tier: str) -> str:
    return f"{source} [{tier}: standard price]"


@dataclass(frozen=True, slots=True)
class TokenPrices:
    """USD per token for one price tier. A `None` cache price bills at `input`; `None` reasoning at `output`."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None
    # One-hour cache writes (Anthropic); `None` bills them at the five-minute `cache_write` price, as litellm does.
    cache_write_1h: Decimal | None = None


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
            # off_peak_pricing has no one-hour rate: a present one stands, an absent one follows cache_write.
            cache_write_1h=standard.cache_write_1h,
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
    # Service tiers (DESIGN.md section 6) -> their prices: the map's own where it has them, else
    # these same standard prices with a source that says the standard price stood in.
    service_tiers: Mapping[str, ModelPrice] = field(default_factory=dict)
    # The price book the entry came from (`litellm-1.106.2`, `import-2-…`); blank for an override.
    price_book: str = ""

    def for_service_tier(self, service_tier: str | None) -> ModelPrice:
        """The prices a call of `service_tier` bills at; the standard tier (or none) is `self`."""
        tier = canonical_service_tier(service_tier)
        if tier is None or tier == STANDARD_TIER:
            return self
        priced = self.service_tiers.get(tier)
        if priced is not None:
            return priced
        return replace(self, source=_standard_stood_in(self.source, tier), service_tiers={})

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


@dataclass(frozen=True, slots=True)
class MapEntry:
    """The entry of the merged price map that describes a model, and where it was found."""

    key: str
    entry: Mapping[str, object]
    price_book: str
    alias_of: str | None = None  # set when found through ROUTE_ALIASES


class PriceCatalog:
    """litellm's bundled map with imported price books in front of it.

    `imported` maps each map key to (entry, book version) from the newest book that lists the
    key; a key no imported book lists is read from the bundled map (`litellm.model_cost`). A book
    therefore never unprices a model: one its file leaves out keeps the earlier price.
    Resolutions are cached per (model, provider) for the catalog's life.
    """

    def __init__(self, imported: Mapping[str, tuple[Mapping[str, object], str]] | None = None):
        self._imported = dict(imported or {})
        self.resolve = lru_cache(maxsize=4096)(self._resolve)

    def lookup(self, key: str) -> tuple[Mapping[str, object], str] | None:
        """(entry, book version) for one map key, newest book first."""
        found = self._imported.get(key)
        if found is not None:
            return found
        entry = get_litellm().model_cost.get(key)
        return None if entry is None else (entry, BUNDLED_PRICE_BOOK)

    def find_entry(self, model: str, provider: str | None = None) -> MapEntry | None:
        """The token-priced entry for `model` as called through `provider` (lookup order in
        `resolve_model_price`), or None: the one place a model's map entry is looked up."""
        model, provider = model.strip(), (provider or "").strip().lower() or None
        for key in _candidate_keys(model, provider):
            found = self.lookup(key)
            if found is not None and isinstance(found[0], Mapping) and is_token_priced(found[0]):
                return MapEntry(key, found[0], found[1])
        route, _, bare_model = model.partition("/")
        found = self.lookup(bare_model) if bare_model else None
        if found is not None and isinstance(found[0], Mapping) and is_token_priced(found[0]) and str(
            found[0].get("litellm_provider")
        ).startswith(route):
            return MapEntry(bare_model, found[0], found[1])
        alias = ROUTE_ALIASES.get(model.rsplit("/", 1)[-1])
        found = self.lookup(alias) if alias else None
        if found is not None and isinstance(found[0], Mapping) and is_token_priced(found[0]):
            return MapEntry(alias, found[0], found[1], alias_of=model)
        return None

    def _resolve(self, model: str, provider: str | None) -> ModelPrice | None:
        found = self.find_entry(model, provider)
        if found is None:
            return None
        if found.alias_of is not None:
            return _model_price(found.entry, source=f"litellm:{found.key} (alias of {found.alias_of})",
                                price_book=found.price_book, anthropic_rules=True)  # fmt: skip
        return _model_price(found.entry, source=f"litellm:{found.key}", price_book=found.price_book)


@lru_cache(maxsize=1)
def bundled_catalog() -> PriceCatalog:
    """The catalog of the bundled map alone (no imported book)."""
    return PriceCatalog()


def catalog_with_books(books: Iterable[tuple[str, Mapping[str, object]]]) -> PriceCatalog:
    """A catalog of imported books, given oldest first as (version, parsed price file)."""
    imported: dict[str, tuple[Mapping[str, object], str]] = {}
    for version, entries in books:
        for key, entry in entries.items():
            if key not in NON_MODEL_KEYS and isinstance(entry, Mapping):
                imported[key] = (entry, version)
    return PriceCatalog(imported)


def resolve_model_price(model: str, provider: str | None = None, *,
                        catalog: PriceCatalog | None = None) -> ModelPrice | None:  # fmt: skip
    """The price for `model` as called through `provider` in `catalog` (default: the bundled map
    alone), or None when no book prices it.

    Lookup order, the first entry with per-token prices wins (each key read from the newest book
    that lists it):
    1. `<provider>/<model>` where the provider's keys carry a prefix (`gemini/…`, `vertex_ai/…`,
       `bedrock/…`, `xai/…`), as litellm's `cost_per_token` tries it first;
    2. `model` exactly (OpenAI, Anthropic and Bedrock model ids are unprefixed keys);
    3. `model` without a leading `<route>/` segment when that entry is of the same route
       (`openai/gpt-4o` -> `gpt-4o`, `bedrock/anthropic.claude-…` -> the `bedrock_converse` entry,
       but not `github_copilot/gpt-4` -> OpenAI's `gpt-4`);
    4. `ROUTE_ALIASES`, recorded in `source` as `litellm:<entry> (alias of <model>)`.
    Cached per (model, provider) in the catalog, so pricing a batch resolves each model once.
    """
    return (catalog or bundled_catalog()).resolve(model.strip(), (provider or "").strip().lower() or None)


def resolve_max_input_tokens(model: str, provider: str | None = None, *,
                             catalog: PriceCatalog | None = None) -> int | None:  # fmt: skip
    """The model's input window: `max_input_tokens` of the entry that prices it in `catalog`
    (default: the bundled map alone; `PriceCatalog.find_entry`: same keys, order, route aliases
    and newest book first), or None when no entry prices the model or its entry states no window.
    A window of 0 or less is no window: the share it would give means nothing."""
    found = (catalog or bundled_catalog()).find_entry(model, provider)
    window = found.entry.get("max_input_tokens") if found is not None else None
    if isinstance(window, int) and not isinstance(window, bool) and window > 0:
        return window
    return None


def _candidate_keys(model: str, provider: str | None) -> list[str]:
    keys = []
    if provider:
        prefix = _PROVIDER_PREFIXES.get(provider, provider)
        if not model.startswith(f"{prefix}/"):
            keys.append(f"{prefix}/{model}")
    keys.append(model)
    return keys


def is_token_priced(entry: Mapping[str, object]) -> bool:
    """Per-token prices, flat or tiered; entries priced per image, second or character are not."""
    return _rate(entry, "input_cost_per_token") is not None or bool(entry.get("tiered_pricing"))


def _rate(entry: Mapping[str, object], key: str) -> Decimal | None:
    value = entry.get(key)
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return Decimal(repr(value))


def _model_price(entry: Mapping[str, object], *, source: str, price_book: str,
                 anthropic_rules: bool = False) -> ModelPrice:  # fmt: skip
    """The standard prices of an entry, with its service tiers (the map's, else the standard price)."""
    if anthropic_rules:
        entry = _with_anthropic_multipliers(entry)
    standard = replace(_standard_price(entry, source=source), price_book=price_book)
    service_tiers: dict[str, ModelPrice] = {}
    for tier in SUFFIXED_TIERS:
        if _has_suffixed_prices(entry, tier):
            tier_price = _standard_price(_suffixed_view(entry, tier), source=f"{source} [{tier}]")
            service_tiers[tier] = replace(tier_price, price_book=price_book)
    if _rate(entry, "input_cost_per_token_batches") is not None:
        batch_price = _batch_price(entry, standard, source=f"{source} [{BATCH_TIER}]")
        service_tiers[BATCH_TIER] = replace(batch_price, price_book=price_book)
    for tier in (*SUFFIXED_TIERS, BATCH_TIER):
        service_tiers.setdefault(tier, replace(standard, source=_standard_stood_in(source, tier)))
    return replace(standard, service_tiers=service_tiers)


def _standard_price(entry: Mapping[str, object], *, source: str) -> ModelPrice:
    provider = entry.get("litellm_provider")
    base = TokenPrices(
        input=_first(_rate(entry, "input_cost_per_token"), Decimal(0)),
        output=_first(_rate(entry, "output_cost_per_token"), Decimal(0)),
        cache_read=_rate(entry, "cache_read_input_token_cost"),
        cache_write=_rate(entry, "cache_creation_input_token_cost"),
        reasoning=_rate(entry, "output_cost_per_reasoning_token"),
        cache_write_1h=_rate(entry, "cache_creation_input_token_cost_above_1hr"),
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


def _has_suffixed_prices(entry: Mapping[str, object], tier: str) -> bool:
    suffix = f"_{tier}"
    return any(
        key.endswith(suffix) and key.startswith(_TOKEN_KEYS) and value is not None for key, value in entry.items()
    )


def _suffixed_view(entry: Mapping[str, object], tier: str) -> dict[str, object]:
    """The entry as litellm reads it for a `flex` / `priority` call: each `<key>_<tier>` price
    replaces `<key>`, flat and per threshold, and a price the tier lacks stays the standard one.
    The one-hour write price has no tier keys in the map: the standard one applies (as in litellm)."""
    view = dict(entry)
    if entry.get("litellm_provider") == "fireworks_ai" and entry.get("cache_read_input_token_cost") is None:
        standard_input = _rate(entry, "input_cost_per_token")
        if standard_input is not None:
            view["cache_read_input_token_cost"] = standard_input * _FIREWORKS_CACHE_READ_SHARE
    for key in _TOKEN_KEYS:
        if entry.get(f"{key}_{tier}") is not None:
            view[key] = entry[f"{key}_{tier}"]
    if entry.get(f"output_cost_per_reasoning_token_{tier}") is not None:
        view["output_cost_per_reasoning_token"] = entry[f"output_cost_per_reasoning_token_{tier}"]
    elif entry.get(f"output_cost_per_token_{tier}") is not None:
        view.pop("output_cost_per_reasoning_token", None)  # the tier's output price bills reasoning too
    for key, value in entry.items():
        match = _THRESHOLD_SUFFIXED.match(key)
        if match and match.group(3) == tier and value is not None:
            view[f"{match.group(1)}_above_{match.group(2)}_tokens"] = value
    return view


def _batch_price(entry: Mapping[str, object], standard: ModelPrice, *, source: str) -> ModelPrice:
    """Batch prices as litellm's `batch_cost_calculator` bills them: `<key>_batches` prices, each
    switched by its own `<key>_above_<N>_tokens_batches` thresholds (standard thresholds do not
    apply), an output price the map lacks at half the standard one, cache prices the map lacks at
    the batch input price, reasoning at the batch output price, no off-peak window and no range
    table. One-hour writes: the map has no batch price for them and litellm bills them as
    five-minute writes; Anthropic discounts them like every other price, so they bill at the
    standard one-hour price times the model's batch discount on cache writes."""
    half_output = _first(_rate(entry, "output_cost_per_token"), Decimal(0)) / 2
    batch_write, standard_write = _rate(entry, "cache_creation_input_token_cost_batches"), standard.base.cache_write
    write_discount = batch_write / standard_write if batch_write is not None and standard_write else None

    def one_hour_batch(input_tokens: int) -> Decimal | None:
        one_hour = standard.prices_for(input_tokens).cache_write_1h
        return None if one_hour is None or write_discount is None else one_hour * write_discount

    base = TokenPrices(
        input=_rate(entry, "input_cost_per_token_batches") or Decimal(0),
        output=_first(_rate(entry, "output_cost_per_token_batches"), half_output),
        cache_read=_rate(entry, "cache_read_input_token_cost_batches"),
        cache_write=batch_write,
        cache_write_1h=one_hour_batch(0),
    )
    thresholds: dict[int, str] = {}
    for key, value in entry.items():
        match = _THRESHOLD_SUFFIXED.match(key)
        if match and match.group(3) == "batches" and match.group(1) in _TOKEN_KEYS and value is not None:
            label = match.group(2)
            thresholds[int(label.rstrip("k")) * (1000 if label.endswith("k") else 1)] = label
    tiers = []
    prices = base
    for threshold in sorted(thresholds):
        label = thresholds[threshold]

        def at(key: str, current: Decimal | None, label: str = label) -> Decimal | None:
            return _first(_rate(entry, f"{key}_above_{label}_tokens_batches"), current)

        prices = replace(
            prices,
            input=at("input_cost_per_token", prices.input),
            output=at("output_cost_per_token", prices.output),
            cache_read=at("cache_read_input_token_cost", prices.cache_read),
            cache_write=at("cache_creation_input_token_cost", prices.cache_write),
            cache_write_1h=one_hour_batch(threshold + 1),
        )
        tiers.append(PriceTier(above_input_tokens=threshold, prices=prices))
    return ModelPrice(
        source=source, base=base, tiers=tuple(tiers), tier_includes_threshold=entry.get("litellm_provider") == "xai"
    )


def _with_anthropic_multipliers(entry: Mapping[str, object]) -> dict[str, object]:
    """A Claude entry borrowed from another route, completed with the one-hour write and batch
    prices Anthropic publishes for every model (2x input; half of each price) where it lacks them."""
    view = dict(entry)
    input_keys = {key: value for key, value in entry.items()
                  if value is not None and (key == "input_cost_per_token" or _THRESHOLD_KEY.match(key)
                                            and key.startswith("input_cost_per_token_above_"))}  # fmt: skip
    for key in input_keys:
        one_hour_key = key.replace("input_cost_per_token", "cache_creation_input_token_cost_above_1hr", 1)
        if view.get(one_hour_key) is None:
            view[one_hour_key] = _rate(entry, key) * ANTHROPIC_ONE_HOUR_WRITE_MULTIPLIER
    if entry.get("input_cost_per_token_batches") is None:
        for key, value in entry.items():
            if value is None or not key.startswith(_TOKEN_KEYS) or "_above_1hr" in key:
                continue
            if key in _TOKEN_KEYS:
                view[f"{key}_batches"] = _rate(entry, key) * ANTHROPIC_BATCH_MULTIPLIER
            elif _THRESHOLD_KEY.match(key):
                view[f"{key}_batches"] = _rate(entry, key) * ANTHROPIC_BATCH_MULTIPLIER
    return view


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
            cache_write_1h=_first(
                _rate(entry, f"cache_creation_input_token_cost_above_1hr_above_{label}_tokens"), prices.cache_write_1h
            ),
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
                    cache_write_1h=_rate(row, "cache_creation_input_token_cost_above_1hr"),
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
