"""Pricing writes: price overrides and imported price books.

Re-pricing stored events moves aggregates, so it lives with them (apps.metrics.repricing)."""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from apps.accounts.models import Project
from apps.core.errors import BadRequest, ErrorCode
from apps.pricing.catalog import is_token_priced
from apps.pricing.models import PriceBook, PriceOverride
from apps.pricing.offline import get_litellm
from apps.pricing.price_files import PriceFileError, price_file_parse, priced_models, prices_of
from apps.pricing.selectors import active_price_catalog


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

