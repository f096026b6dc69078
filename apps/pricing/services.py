"""Pricing writes: cost stamped on events at ingest, price overrides, and re-pricing stored events."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser

from apps.accounts.models import Project
from apps.core.errors import BadRequest, ErrorCode
from apps.ingestion.models import RawEvent
from apps.ingestion.schema import UsageEvent
from apps.ingestion.validation import PreparedEvent
from apps.metrics.services import CostChange, session_costs_change
from apps.pricing.cost import event_cost_nanousd
from apps.pricing.models import PriceOverride
from apps.pricing.selectors import ProjectPriceBook, price_book_for_project

REPRICE_CHUNK = 2000


def _cost(book: ProjectPriceBook, *, model: str, provider: str, at: datetime, counts) -> tuple[int | None, str]:
    """Cost and price source of one usage event billed at its own time (off-peak windows apply), in
    its service tier and cache lifetimes."""
    price = book.price_at(model=model, provider=provider, at=at)
    if price is None:
        return None, ""
    price = price.for_service_tier(counts.service_tier)
    cost = event_cost_nanousd(
        price,
        input_tokens=counts.input_tokens,
        output_tokens=counts.output_tokens,
        cache_read_tokens=counts.cache_read_tokens,
        cache_write_tokens=counts.cache_write_tokens,
        thought_tokens=counts.thought_tokens,
        cache_write_1h_tokens=counts.cache_write_1h_tokens,
        billed_at=at,
    )
    return cost, price.source


def events_price(*, project: Project, events: list[PreparedEvent]) -> None:
    """Stamp each usage event with its cost and price source (DESIGN.md section 6); unpriced stays None.

    Cost is fixed at ingest so a later price change never rewrites history silently; `reprice`
    recomputes on request.
    """
    book = price_book_for_project(project=project)
    for prepared in events:
        event = prepared.event
        if isinstance(event, UsageEvent):
            prepared.cost_nanousd, prepared.price_source = _cost(
                book, model=event.model, provider=event.provider, at=event.timestamp, counts=event
            )


def price_override_create(
    *,
    project: Project,
    model: str,
    input_per_million_usd: Decimal,
    output_per_million_usd: Decimal,
    cache_read_per_million_usd: Decimal | None = None,
    cache_write_per_million_usd: Decimal | None = None,
    effective_from: datetime,
    created_by: AbstractBaseUser | None = None,
) -> PriceOverride:
    """Add a price for a model of the project from `effective_from` on (history is kept, never edited)."""
    prices = [input_per_million_usd, output_per_million_usd, cache_read_per_million_usd, cache_write_per_million_usd]
    if any(price is not None and price < 0 for price in prices):
        raise BadRequest("Prices must not be negative.", code=ErrorCode.INVALID_PRICE)
    if not model.strip():
        raise BadRequest("Name the model the price is for.", code=ErrorCode.INVALID_MODEL)
    return PriceOverride.objects.create(
        project=project,
        model=model.strip(),
        input_per_million_usd=input_per_million_usd,
        output_per_million_usd=output_per_million_usd,
        cache_read_per_million_usd=cache_read_per_million_usd,
        cache_write_per_million_usd=cache_write_per_million_usd,
        effective_from=effective_from,
        created_by=created_by if created_by is not None and created_by.is_authenticated else None,
    )


def events_reprice(*, project: Project, since: datetime | None = None) -> int:
    """Recompute stored costs of the project's usage events (from `since`) with today's prices and
    overrides, and move the aggregates by the difference; returns how many events changed."""
    book = price_book_for_project(project=project)
    events = RawEvent.objects.filter(project=project, type=RawEvent.Type.USAGE)
    if since is not None:
        events = events.filter(timestamp__gte=since)
    changes_by_session: dict[str, list[CostChange]] = defaultdict(list)
    for event in events.only(
        "id", "session_id", "model", "provider", "timestamp", "input_tokens", "output_tokens", "cache_read_tokens",
        "cache_write_tokens", "cache_write_1h_tokens", "thought_tokens", "service_tier", "cost_nanousd", "price_source",
    ).iterator(chunk_size=REPRICE_CHUNK):  # fmt: skip
        cost, source = _cost(book, model=event.model, provider=event.provider, at=event.timestamp, counts=event)
        if (cost, source) != (event.cost_nanousd, event.price_source):
            changes_by_session[event.session_id].append(CostChange(event.pk, cost, source))
    return sum(
        session_costs_change(project_id=project.pk, session_id=session_id, changes=changes)
        for session_id, changes in sorted(changes_by_session.items())
    )
