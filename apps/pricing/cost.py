"""Cost of one usage event in integer nano-USD, from a `ModelPrice` (DESIGN.md section 6).

Pure and exact: prices are `Decimal`, the result is rounded once, half-even, to whole nano-USD
(1e-9 USD), and stored costs are summed as integers, so no float drift reaches a total.

Per DESIGN.md section 1, cache reads, cache writes and thought tokens are subsets of input and
output. That is also how litellm's `Usage` counts them (`prompt_tokens` includes
`cached_tokens` and `cache_creation_input_tokens`), so for a model in litellm's map this cost
equals `litellm.cost_per_token` on the same usage; tests/pricing/test_cost.py sweeps the map.
"""
from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from typing import Protocol

from apps.pricing.catalog import ModelPrice, TokenPrices

NANO_USD_PER_USD = 10**9
_ONE_MILLION = Decimal(1_000_000)


class PerMillionPrices(Protocol):
    """A project's price override as an admin enters it (`apps.pricing.models.PriceOverride`)."""

    id: int | None
    input_per_million_usd: Decimal
    output_per_million_usd: Decimal
    cache_read_per_million_usd: Decimal | None
    cache_write_per_million_usd: Decimal | None


# An override names one cache-write price; a one-hour write bills at Anthropic's ratio of the two
# write prices (2x input / 1.25x input), so a negotiated discount carries over to it.
OVERRIDE_ONE_HOUR_WRITE_RATIO = Decimal(2) / Decimal("1.25")


def event_cost_nanousd(
    price: ModelPrice,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int,
    cache_write_tokens: int,
    thought_tokens: int,
    cache_write_1h_tokens: int = 0,
    billed_at: datetime | None = None,
) -> int:
    """Cost of one call in nano-USD, rounded half-even.

    `(input - cache_read - cache_write) x input + cache_read x cache_read_price
    + (cache_write - cache_write_1h) x cache_write_price + cache_write_1h x one_hour_write_price
    + (output - thought) x output + thought x reasoning_price`, at the prices of the tier the
    call's input tokens select. A missing cache price is the input price; a missing one-hour
    write price is the (five-minute) cache write price; a missing reasoning price is the output
    price. Pass `price.for_service_tier(tier)` for a call of a non-standard service tier. Pass the event's timestamp as
    `billed_at` so models with off-peak windows (DeepSeek V4) bill the rate in force then;
    without it they bill standard rates.
    Precondition (DESIGN.md section 1): counts are >= 0, `cache_read + cache_write <= input`,
    `cache_write_1h <= cache_write` and `thought <= output`; a ValueError names the fields otherwise.
    """
    _check_subsets(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, thought_tokens,
                   cache_write_1h_tokens)  # fmt: skip
    prices = price.prices_for(input_tokens, billed_at)
    if (factors := _atto_usd_per_token(prices)) is not None:
        input_atto, cache_read_atto, cache_write_atto, cache_write_1h_atto, output_atto, reasoning_atto = factors
        cost_atto = (
            (input_tokens - cache_read_tokens - cache_write_tokens) * input_atto
            + cache_read_tokens * cache_read_atto
            + (cache_write_tokens - cache_write_1h_tokens) * cache_write_atto
            + cache_write_1h_tokens * cache_write_1h_atto
            + (output_tokens - thought_tokens) * output_atto
            + thought_tokens * reasoning_atto
        )
        nano, remainder = divmod(cost_atto, _ATTO_PER_NANO)
        if remainder > _HALF_NANO_IN_ATTO or (remainder == _HALF_NANO_IN_ATTO and nano % 2):
            nano += 1
        return nano
    cache_write_price = _or(prices.cache_write, prices.input)
    cost_usd = (
        (input_tokens - cache_read_tokens - cache_write_tokens) * prices.input
        + cache_read_tokens * _or(prices.cache_read, prices.input)
        + (cache_write_tokens - cache_write_1h_tokens) * cache_write_price
        + cache_write_1h_tokens * _or(prices.cache_write_1h, cache_write_price)
        + (output_tokens - thought_tokens) * prices.output
        + thought_tokens * _or(prices.reasoning, prices.output)
    )
    return int((cost_usd * NANO_USD_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


# Pricing runs for every ingested event, and Decimal arithmetic was most of its cost. Every real
# price (litellm's map, overrides with 6 decimals per million tokens) is a whole number of
# atto-USD (1e-18) per token, so the same formula in Python integers at that scale, rounded
# half-even to nano-USD, gives exactly the Decimal result several times faster; a price that is
# not a whole number of atto-USD takes the Decimal formula.
_ATTO_PER_USD = 18
_ATTO_PER_NANO = 10**9
_HALF_NANO_IN_ATTO = _ATTO_PER_NANO // 2


@lru_cache(maxsize=4096)
def _atto_usd_per_token(prices: TokenPrices) -> tuple[int, int, int, int, int, int] | None:
    """(input, cache_read, cache_write, cache_write_1h, output, reasoning) in atto-USD, with missing
    prices filled in as the formula fills them; None when one is not a whole number of atto-USD."""
    factors = []
    cache_write_price = _or(prices.cache_write, prices.input)
    for token_price in (
        prices.input,
        _or(prices.cache_read, prices.input),
        cache_write_price,
        _or(prices.cache_write_1h, cache_write_price),
        prices.output,
        _or(prices.reasoning, prices.output),
    ):
        scaled = token_price.scaleb(_ATTO_PER_USD)
        if not scaled.is_finite() or scaled != scaled.to_integral_value():
            return None
        factors.append(int(scaled))
    return tuple(factors)  # type: ignore[return-value]


def model_price_from_override(override: PerMillionPrices) -> ModelPrice:
    """A project's override as a `ModelPrice` with source `override:<id>`.

    Overrides have one tier and no reasoning price: thought tokens bill at the output price, as
    providers that publish no separate reasoning price bill them. One-hour cache writes bill at
    `OVERRIDE_ONE_HOUR_WRITE_RATIO` (1.6) times the override's cache-write price, or at the input
    price when it sets none. Every service tier bills at the override's prices (its source says so).
    """
    return model_price_per_million(
        source=f"override:{override.id}",
        input_per_million_usd=override.input_per_million_usd,
        output_per_million_usd=override.output_per_million_usd,
        cache_read_per_million_usd=override.cache_read_per_million_usd,
        cache_write_per_million_usd=override.cache_write_per_million_usd,
    )


def model_price_per_million(
    *,
    source: str,
    input_per_million_usd: Decimal,
    output_per_million_usd: Decimal,
    cache_read_per_million_usd: Decimal | None = None,
    cache_write_per_million_usd: Decimal | None = None,
) -> ModelPrice:
    """A `ModelPrice` from prices per million tokens, the unit providers publish and admins type."""
    cache_write = _per_token(cache_write_per_million_usd)
    return ModelPrice(
        source=source,
        base=TokenPrices(
            input=Decimal(input_per_million_usd) / _ONE_MILLION,
            output=Decimal(output_per_million_usd) / _ONE_MILLION,
            cache_read=_per_token(cache_read_per_million_usd),
            cache_write=cache_write,
            cache_write_1h=None if cache_write is None else cache_write * OVERRIDE_ONE_HOUR_WRITE_RATIO,
        ),
    )


def _per_token(per_million_usd: Decimal | None) -> Decimal | None:
    return None if per_million_usd is None else Decimal(per_million_usd) / _ONE_MILLION


def _or(price: Decimal | None, fallback: Decimal) -> Decimal:
    return fallback if price is None else price


def _check_subsets(
    input_tokens: int, output_tokens: int, cache_read_tokens: int, cache_write_tokens: int, thought_tokens: int,
    cache_write_1h_tokens: int,
) -> None:  # fmt: skip
    counts = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": cache_read_tokens,
        "cache_write_tokens": cache_write_tokens,
        "thought_tokens": thought_tokens,
        "cache_write_1h_tokens": cache_write_1h_tokens,
    }
    if negative := [name for name, count in counts.items() if count < 0]:
        raise ValueError(f"token counts must be >= 0: {', '.join(negative)}")
    if cache_read_tokens + cache_write_tokens > input_tokens:
        raise ValueError(
            f"cache_read_tokens + cache_write_tokens ({cache_read_tokens} + {cache_write_tokens}) "
            f"exceed input_tokens ({input_tokens})"
        )
    if cache_write_1h_tokens > cache_write_tokens:
        raise ValueError(
            f"cache_write_1h_tokens ({cache_write_1h_tokens}) exceed cache_write_tokens ({cache_write_tokens})"
        )
    if thought_tokens > output_tokens:
        raise ValueError(f"thought_tokens ({thought_tokens}) exceed output_tokens ({output_tokens})")
