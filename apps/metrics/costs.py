"""Moving folded aggregates when stored event costs change (apps.metrics.repricing)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction

from apps.ingestion.models import PendingEvent, RawEvent
from apps.ingestion.selectors import from_us, session_raw_events
from apps.metrics import algorithms as algo
from apps.metrics.buckets import BucketDelta, buckets_add
from apps.metrics.folding import sessions_lock
from apps.metrics.models import SessionAggregate, SessionModelAggregate, SessionStepAggregate, UsageBucket


@dataclass(frozen=True)
class CostChange:
    """A usage event's new price, as computed by apps.metrics.repricing.events_reprice."""

    event_pk: int
    cost_nanousd: int | None
    price_source: str
    price_book: str = ""


@transaction.atomic
def session_costs_change(*, project_id: int, session_id: str, changes: list[CostChange]) -> int:
    """Store new costs of a session's events and move its aggregates by the difference.

    Under the session lock, so no fold interleaves: an event already folded moves its session,
    step, model and minute-bucket cost (and unpriced tokens) by old -> new; an unfolded one only
    changes its row, which its fold reads later. Returns the events whose cost changed.
    """
    sessions_lock(project_id, [session_id])
    session = SessionAggregate.objects.get(project_id=project_id, session_id=session_id)
    by_pk = {change.event_pk: change for change in changes}
    rows = list(
        session_raw_events(project_id=project_id, session_id=session_id, started_at=session.started_at)
        .select_for_update()
        .filter(pk__in=by_pk)
        .values("id", "received_at", "step", "provider", "model", "timestamp", "input_tokens", "output_tokens",
                "cost_nanousd", "price_source", "price_book")
    )  # fmt: skip
    pending = set(
        PendingEvent.objects.filter(project_id=project_id, session_id=session_id, raw_event_id__in=by_pk)
        .values_list("raw_event_id", flat=True)
    )
    steps = {row.step: row for row in session.steps.all()}
    models = {(row.provider, row.model): row for row in session.models.all()}
    bucket_deltas: dict[tuple[datetime, str, str], BucketDelta] = defaultdict(BucketDelta)
    changed = 0
    for row in rows:
        change = by_pk[row["id"]]
        if (change.cost_nanousd, change.price_source, change.price_book) == (
            row["cost_nanousd"], row["price_source"], row["price_book"]
        ):
            continue
        changed += 1
        # With its received_at: PostgreSQL then updates the row in its own month's partition, not by
        # looking the id up in every month's (apps.ingestion.partitions).
        RawEvent.objects.filter(pk=row["id"], received_at=row["received_at"]).update(
            cost_nanousd=change.cost_nanousd, price_source=change.price_source, price_book=change.price_book
        )
        if row["id"] in pending:
            continue
        tokens = row["input_tokens"] + row["output_tokens"]
        cost_delta = (change.cost_nanousd or 0) - (row["cost_nanousd"] or 0)
        unpriced_calls_delta = (change.cost_nanousd is None) - (row["cost_nanousd"] is None)
        for target in (session, steps[row["step"]], models[(row["provider"], row["model"])]):
            target.cost_nanousd += cost_delta
            target.unpriced_calls += unpriced_calls_delta
            target.unpriced_tokens += unpriced_calls_delta * tokens
        models[(row["provider"], row["model"])].price_source = change.price_source
        # Added to the start minute; if that minute was already compacted, the next compaction
        # rolls this delta into its hour, as it does any late event.
        minute = from_us(algo.bucket_start_us(algo.epoch_us(row["timestamp"])))
        delta = bucket_deltas[(minute, row["provider"], row["model"])]
        delta.cost_nanousd += cost_delta
        delta.unpriced_tokens += unpriced_calls_delta * tokens
    if changed:
        session.save(update_fields=["cost_nanousd", "unpriced_calls", "unpriced_tokens", "updated_at"])
        cost_fields = ["cost_nanousd", "unpriced_calls", "unpriced_tokens"]
        SessionStepAggregate.objects.bulk_update(steps.values(), cost_fields)
        SessionModelAggregate.objects.bulk_update(models.values(), [*cost_fields, "price_source"])
        buckets_add(project_id=project_id, granularity=UsageBucket.Granularity.MINUTE, deltas=bucket_deltas)
    return changed


def sessions_with_unpriced_events(*, project_id: int) -> list[str]:
    """Sessions that may hold unpriced usage events: folded ones with unpriced calls, and every
    session with events still waiting for the fold (their cost is not in any total yet)."""
    folded = SessionAggregate.objects.filter(project_id=project_id, unpriced_calls__gt=0).values_list(
        "session_id", flat=True
    )
    waiting = PendingEvent.objects.filter(project_id=project_id).values_list("session_id", flat=True).distinct()
    return sorted(set(folded) | set(waiting))
