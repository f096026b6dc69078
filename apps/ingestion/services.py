"""events_ingest: authenticate-validate-price-store-enqueue, and nothing else on the request path."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.accounts.models import Project
from apps.core.errors import BadRequest, ErrorCode
from apps.core.parsers import utf8_error_message
from apps.ingestion.schema import UsageEvent, batch_decoder
from apps.ingestion.validation import PreparedEvent, Rejection, events_validate
from apps.ingestion.writers import raw_events_insert
from apps.metrics.background import ingest_writing
from apps.limits.services import limits_record
from apps.metrics.dispatch import project_fold_enqueue
from apps.pricing.calls import CallUsage
from apps.pricing.context_windows import calls_context_share
from apps.pricing.selectors import calls_price

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: list[Rejection]

    def as_dict(self) -> dict:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [rejection.as_dict() for rejection in self.rejected],
        }


def batch_decode(body: bytes) -> list[msgspec.Raw]:
    """The batch's events, still undecoded; a malformed envelope is a 400 and nothing is stored.

    Bytes that are not UTF-8 make the whole body malformed JSON (RFC 8259 allows no other
    encoding), wherever they sit, like a syntax error inside one event.
    """
    # msgspec checks UTF-8 only in the strings it decodes: the Raw events and skipped fields
    # would reach the event decoder unchecked.
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(utf8_error_message(body, exc), code=ErrorCode.MALFORMED_JSON) from None
    try:
        batch = batch_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BadRequest(f'The body must be {{"events": [...]}}: {exc}.', code=ErrorCode.INVALID_BATCH) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}.", code=ErrorCode.MALFORMED_JSON) from None
    except RecursionError:
        raise BadRequest("The body is nested too deeply to be an event batch.", code=ErrorCode.MALFORMED_JSON) from None
    count = len(batch.events)
    if not 1 <= count <= settings.INGEST_MAX_EVENTS:
        raise BadRequest(
            f"A batch holds 1 to {settings.INGEST_MAX_EVENTS} events; this one has {count}.",
            code=ErrorCode.INVALID_BATCH_SIZE,
        )
    return batch.events


def _first_of_each_event_id(events: list[PreparedEvent]) -> tuple[list[PreparedEvent], int]:
    seen: set = set()
    unique: list[PreparedEvent] = []
    for prepared in events:
        if prepared.event.event_id not in seen:
            seen.add(prepared.event.event_id)
            unique.append(prepared)
    return unique, len(events) - len(unique)


def _usage_events_price(*, project: Project, events: list[PreparedEvent]) -> None:
    """Stamp each usage event with its cost and its share of its model's input window (apps.pricing)."""
    usage = [prepared for prepared in events if isinstance(prepared.event, UsageEvent)]
    calls = [CallUsage.of(prepared.event) for prepared in usage]
    prices = calls_price(project=project, calls=calls)
    shares = calls_context_share(project=project, calls=calls)
    for prepared, price, share in zip(usage, prices, shares, strict=True):
        prepared.cost_nanousd, prepared.price_source, prepared.price_book = price
        prepared.context_share = share


def events_ingest(*, project: Project, body: bytes) -> IngestResult:
    """`POST /api/v1/events`: decode the batch envelope, then store it like any other source."""
    return events_store(project=project, raw_events=batch_decode(body), body=body)


def events_store(
    *, project: Project, raw_events: list[msgspec.Raw] | list[dict], body: bytes | None = None
) -> IngestResult:
    """Validate, price and store every valid event exactly once; folding runs after commit.

    The one path into storage: the events API (JSON events) and the OTLP receiver (apps.otlp, the
    same events as dicts) both end here.
    An event counts as accepted only once its row is committed. Duplicates (resent ids, or the
    same id twice in one batch) are reported and never stored twice, also when requests race.
    `body`, the JSON the raw events were cut from, lets validation skip its NUL walk.
    """
    now = timezone.now()
    valid, rejected = events_validate(raw_events, now=now, body=body)
    unique, in_batch_duplicates = _first_of_each_event_id(valid)
    _usage_events_price(project=project, events=unique)
    with ingest_writing(), transaction.atomic():
        result = raw_events_insert(project_id=project.pk, received_at=now, events=unique)
        limits_record(project_id=project.pk, events=(prepared.event for prepared in unique
                                                     if prepared.event.event_id in result.inserted_event_ids))
        if result.session_ids:
            project_fold_enqueue(project_id=project.pk)
    accepted = len(result.inserted_event_ids)
    return IngestResult(
        accepted=accepted,
        duplicates=in_batch_duplicates + (len(unique) - accepted),
        rejected=rejected,
    )
