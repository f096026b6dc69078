"""What pricing reads of one model call, and what it answers.

Pricing's own input type, so pricing depends on no app that records calls: apps.ingestion builds
a `CallUsage` from each usage event it prices at ingest, apps.metrics.repricing from each stored
event it re-prices.
"""
from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import msgspec


class CallUsage(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The tokens of one call, resolved (DESIGN.md section 1: cache and thought tokens are parts
    of input and output), with what picks its price."""

    provider: str  # "" when unknown: the model name alone finds the price
    model: str
    billed_at: datetime  # the call's own time: overrides in force and off-peak windows then apply
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0  # the part of cache_write_tokens kept for an hour
    thought_tokens: int = 0
    service_tier: str | None = None  # None or "" is the standard tier

    @classmethod
    def of(cls, usage) -> CallUsage:
        """The call of any record with these fields under these names, `timestamp` as the billing
        time: a usage event being ingested or a stored raw event being re-priced."""
        return cls(
            provider=usage.provider, model=usage.model, billed_at=usage.timestamp,
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens, cache_write_tokens=usage.cache_write_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens, thought_tokens=usage.thought_tokens,
            service_tier=usage.service_tier,
        )  # fmt: skip


class CallPrice(NamedTuple):
    """A call's cost and where its price came from; an unpriced call has cost None and no source."""

    cost_nanousd: int | None
    price_source: str
    price_book: str


UNPRICED = CallPrice(None, "", "")
