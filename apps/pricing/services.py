"""Pricing writes: cost stamped on events at ingest, price overrides, imported price books, and
re-pricing stored events."""
from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from apps.accounts.models import Project
from apps.core.errors import BadRequest, ErrorCode
from apps.ingestion.models import RawEvent
from apps.ingestion.schema import UsageEvent
from apps.ingestion.validation import PreparedEvent
from apps.metrics.services import CostChange, session_costs_change, sessions_with_unpriced_events
from apps.pricing.catalog import is_token_priced
from apps.pricing.cost import event_cost_nanousd
from apps.pricing.models import PriceBook, PriceOverride
from apps.pricing.offline import get_litellm
from apps.pricing.price_files import PriceFileError, price_file_parse, priced_models, prices_of
from apps.pricing.selectors import ProjectPriceBook, active_price_catalog, price_book_for_project

REPRICE_CHUNK = 2000
REPRICE_SESSIONS_PER_QUERY = 500


def _cost(book: ProjectPriceBook, *, model: str, provider: str, at: datetime, counts) -> tuple[int | None, str, str]:
    """Cost, price source and price book of one usage event billed at its own time (off-peak windows
    apply), in its service tier and cache lifetimes."""
    price = book.price_at(model=model, provider=provider, at=at)
    if price is None:
        return None, "", ""
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
    return cost, price.source, price.price_book


def events_price(*, project: Project, events: list[PreparedEvent]) -> None:
    """Stamp each usage event with its cost and price source (DESIGN.md section 6); unpriced stays None.

    Cost is fixed at ingest so a later price change never rewrites history silently; `reprice`
    recomputes on request.
    """
    book = price_book_for_project(project=project)
    for prepared in events:
        event = prepared.event
        if isinstance(event, UsageEvent):
            prepared.cost_nanousd, prepared.price_source, prepared.price_book = _cost(
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


def events_reprice(*, project: Project, since: datetime | None = None, unpriced_only: bool = False) -> int:
    """Recompute stored costs of the project's usage events (from `since`; only the unpriced ones
    with `unpriced_only`) with today's books and overrides, and move the aggregates by the
    difference; returns how many events changed."""
    book = price_book_for_project(project=project)
    events = RawEvent.objects.filter(project=project, type=RawEvent.Type.USAGE)
    if since is not None:
        events = events.filter(timestamp__gte=since)
    if unpriced_only:
        # Through the sessions that can hold one, so the session-led index finds them without
        # reading every event of the project.
        sessions = sessions_with_unpriced_events(project_id=project.pk)
        unpriced = events.filter(cost_nanousd__isnull=True)
        querysets = [
            unpriced.filter(session_id__in=sessions[start : start + REPRICE_SESSIONS_PER_QUERY])
            for start in range(0, len(sessions), REPRICE_SESSIONS_PER_QUERY)
        ]
    else:
        querysets = [events]
    changes_by_session: dict[str, list[CostChange]] = defaultdict(list)
    for queryset in querysets:
        for event in queryset.only(
            "id", "session_id", "model", "provider", "timestamp", "input_tokens", "output_tokens", "cache_read_tokens",
            "cache_write_tokens", "cache_write_1h_tokens", "thought_tokens", "service_tier", "cost_nanousd",
            "price_source", "price_book",
        ).iterator(chunk_size=REPRICE_CHUNK):  # fmt: skip
            cost, source, price_book = _cost(book, model=event.model, provider=event.provider, at=event.timestamp,
                                             counts=event)  # fmt: skip
            if (cost, source, price_book) != (event.cost_nanousd, event.price_source, event.price_book):
                changes_by_session[event.session_id].append(CostChange(event.pk, cost, source, price_book))
    return sum(
        session_costs_change(project_id=project.pk, session_id=session_id, changes=changes)
        for session_id, changes in sorted(changes_by_session.items())
    )


@dataclass(frozen=True)
class PriceBookImport:
    book: PriceBook
    created: bool  # False: the file is already the newest book, nothing was added


def price_book_import(*, data: bytes, file_name: str = "") -> PriceBookImport:
    """Keep a price file (litellm's format) as the newest price book, after checking every entry.

    Raises BadRequest (`invalid_price_file`, each problem in `details`) for a file that cannot be
    used. The same file as the newest book adds nothing; an older book's file imported again
    becomes the newest. Events keep the prices they were stored with until re-priced.
    """
    try:
        entries = price_file_parse(data)
    except PriceFileError as error:
        raise BadRequest(f"The price file cannot be used:\n{error}", code=ErrorCode.INVALID_PRICE_FILE,
                         details=error.errors) from None  # fmt: skip
    sha256 = hashlib.sha256(data).hexdigest()
    with transaction.atomic():
        newest = PriceBook.objects.select_for_update().order_by("-id").first()
        if newest is not None and newest.sha256 == sha256:
            return PriceBookImport(book=newest, created=False)
        before = active_price_catalog()
        previous = json.loads(newest.prices_json) if newest is not None else get_litellm().model_cost
        priced_here = priced_models(entries)
        newly_priced, price_changed = [], []
        for key in sorted(priced_here):
            found = before.lookup(key)
            if found is None or not is_token_priced(found[0]):
                newly_priced.append(key)
            elif prices_of(found[0]) != prices_of(entries[key]):
                price_changed.append(key)
        book = PriceBook.objects.create(
            version=f"pending-{uuid.uuid4().hex}",
            sha256=sha256,
            file_name=file_name[:255],
            prices_json=data.decode("utf-8-sig"),
            imported_at=timezone.now(),
            model_count=len(priced_here),
            newly_priced=newly_priced,
            price_changed=price_changed,
            not_listed=sorted(priced_models(previous) - set(entries)),
        )
        # The sequence is the row's id, known only once it is inserted.
        book.version = f"import-{book.pk}-{sha256[:12]}"
        book.save(update_fields=["version"])
    return PriceBookImport(book=book, created=True)


def unpriced_events_reprice(*, projects: list[Project]) -> dict[Project, int]:
    """Price the unpriced usage events of these projects with today's books and overrides (priced
    events keep their prices); returns how many events each project had priced."""
    return {project: events_reprice(project=project, unpriced_only=True) for project in projects}
