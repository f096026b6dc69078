"""Reads on prices: which price an event of a project is charged at."""
from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from apps.accounts.models import Project
from apps.pricing.catalog import ModelPrice, resolve_model_price
from apps.pricing.cost import model_price_from_override
from apps.pricing.models import PriceOverride


@dataclass
class ProjectPriceBook:
    """The project's overrides, loaded once, in front of litellm's map: one lookup per event, no query."""

    # model -> (ascending effective_from list, matching prices)
    overrides: dict[str, tuple[list[datetime], list[ModelPrice]]] = field(default_factory=dict)

    def price_at(self, *, model: str, provider: str, at: datetime) -> ModelPrice | None:
        """The override in force at `at`, else litellm's price, else None (unpriced)."""
        if entry := self.overrides.get(model):
            starts, prices = entry
            position = bisect_right(starts, at)
            if position:
                return prices[position - 1]
        return resolve_model_price(model, provider or None)


def price_book_for_project(*, project: Project) -> ProjectPriceBook:
    """Load every override of the project into a ProjectPriceBook."""
    grouped: dict[str, list[PriceOverride]] = defaultdict(list)
    for override in PriceOverride.objects.filter(project=project).order_by("model", "effective_from", "id"):
        grouped[override.model].append(override)
    return ProjectPriceBook(
        overrides={
            model: ([o.effective_from for o in rows], [model_price_from_override(o) for o in rows])
            for model, rows in grouped.items()
        }
    )


def price_overrides_for_project(*, project: Project):
    return PriceOverride.objects.filter(project=project).order_by("model", "-effective_from")
