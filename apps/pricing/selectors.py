"""Reads on prices: what a call of a project costs, and the price books in force."""
from __future__ import annotations

import json
import threading
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache

from apps.accounts.models import Project
from apps.pricing.calls import UNPRICED, CallPrice, CallUsage
from apps.pricing.catalog import (
    BUNDLED_PRICE_BOOK,
    ModelPrice,
    PriceCatalog,
    bundled_catalog,
    catalog_with_books,
    resolve_model_price,
)
from apps.pricing.cost import event_cost_nanousd, model_price_from_override
from apps.pricing.models import PriceBook, PriceOverride
from apps.pricing.offline import get_litellm
from apps.pricing.price_files import priced_models


@dataclass
class ProjectPriceBook:
    """The project's overrides, loaded once, in front of the price books: one lookup per event, no query."""

    # model -> (ascending effective_from list, matching prices)
    overrides: dict[str, tuple[list[datetime], list[ModelPrice]]] = field(default_factory=dict)
    catalog: PriceCatalog | None = None  # None: the bundled map alone

    def price_at(self, *, model: str, provider: str, at: datetime) -> ModelPrice | None:
        """The override in force at `at`, else the newest book's price, else None (unpriced)."""
        if entry := self.overrides.get(model):
            starts, prices = entry
            position = bisect_right(starts, at)
            if position:
                return prices[position - 1]
        return resolve_model_price(model, provider or None, catalog=self.catalog)

    def call_price(self, call: CallUsage) -> CallPrice:
        """The call's cost billed at its own time (off-peak windows apply), in its service tier and
        cache lifetimes; UNPRICED when no override or book prices its model."""
        price = self.price_at(model=call.model, provider=call.provider, at=call.billed_at)
        if price is None:
            return UNPRICED
        price = price.for_service_tier(call.service_tier)
        cost = event_cost_nanousd(
            price,
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            cache_read_tokens=call.cache_read_tokens,
            cache_write_tokens=call.cache_write_tokens,
            thought_tokens=call.thought_tokens,
            cache_write_1h_tokens=call.cache_write_1h_tokens,
            billed_at=call.billed_at,
        )
        return CallPrice(cost, price.source, price.price_book)


def price_book_for_project(*, project: Project) -> ProjectPriceBook:
    """Load every override of the project, in front of the price books in force."""
    grouped: dict[str, list[PriceOverride]] = defaultdict(list)
    for override in PriceOverride.objects.filter(project=project).order_by("model", "effective_from", "id"):
        grouped[override.model].append(override)
    return ProjectPriceBook(
        overrides={
            model: ([o.effective_from for o in rows], [model_price_from_override(o) for o in rows])
            for model, rows in grouped.items()
        },
        catalog=active_price_catalog(),
    )


def calls_price(*, project: Project, calls: Sequence[CallUsage]) -> list[CallPrice]:
    """Each call's cost and price source under the project's overrides and books (DESIGN.md
    section 6), in the calls' order; an unpriced call gets UNPRICED.

    Ingest stores the cost with the event, so a later price change never rewrites history
    silently; re-pricing (apps.metrics.repricing) recomputes on request.
    """
    book = price_book_for_project(project=project)
    return [book.call_price(call) for call in calls]


def price_overrides_for_project(*, project: Project):
    return PriceOverride.objects.filter(project=project).order_by("model", "-effective_from")


_active_lock = threading.Lock()
_active: tuple[tuple[str, ...], PriceCatalog] | None = None


def active_price_catalog() -> PriceCatalog:
    """The catalog of every imported book over the bundled map, as the database holds them now.

    One small query per call (the books' versions); the books themselves are read and merged once
    per process per new book, so a book imported by any process prices the next batch everywhere.
    """
    global _active
    versions = tuple(PriceBook.objects.order_by("id").values_list("version", flat=True))
    if not versions:
        return bundled_catalog()
    cached = _active
    if cached is not None and cached[0] == versions:
        return cached[1]
    with _active_lock:
        if _active is None or _active[0] != versions:
            books = PriceBook.objects.filter(version__in=versions).order_by("id").values_list("version", "prices_json")
            _active = (versions, catalog_with_books((version, json.loads(text)) for version, text in books))
        return _active[1]


@dataclass(frozen=True)
class PriceBookRow:
    """One book as the settings page lists it."""

    version: str
    imported_at: datetime | None  # None: the bundled map
    file_name: str
    model_count: int
    newly_priced: list[str]
    price_changed: list[str]
    not_listed: list[str]


def price_books() -> list[PriceBookRow]:
    """The imported books, newest first, then the bundled map."""
    rows = [
        PriceBookRow(book.version, book.imported_at, book.file_name, book.model_count, book.newly_priced,
                     book.price_changed, book.not_listed)
        for book in PriceBook.objects.defer("prices_json").order_by("-id")
    ]  # fmt: skip
    rows.append(PriceBookRow(BUNDLED_PRICE_BOOK, None, "bundled with litellm", bundled_model_count(), [], [], []))
    return rows


@lru_cache(maxsize=1)
def bundled_model_count() -> int:
    return len(priced_models(get_litellm().model_cost))


@dataclass(frozen=True)
class UnpricedModel:
    provider: str
    model: str
    calls: int


def unpriced_models_now_priced(*, project: Project, unpriced_calls: dict[tuple[str, str], int]) -> list[UnpricedModel]:
    """Of the project's unpriced calls per (provider, model) (apps.metrics.selectors.unpriced_calls_by_model),
    the models today's books or overrides price: what re-pricing the unpriced events would price,
    most calls first."""
    book = price_book_for_project(project=project)
    far_future = datetime.max.replace(tzinfo=timezone.utc)
    return sorted(
        (
            UnpricedModel(provider, model, calls)
            for (provider, model), calls in unpriced_calls.items()
            if book.price_at(model=model, provider=provider, at=far_future) is not None
        ),
        key=lambda row: (-row.calls, row.model, row.provider),
    )
