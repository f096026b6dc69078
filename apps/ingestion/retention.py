"""Retention: deleting a project's raw events older than its retention period, once folded.

Raw events are the source of truth while they are young (the fold reads them, the calls CSV lists
them); the aggregates hold everything the pages and APIs show, and are kept whatever the
retention. `raw_events_prune` runs daily (apps.metrics.schedule) and as
`manage.py raw_events_prune`.

Each batch of at most PRUNE_BATCH events is its own short transaction, so the prune never holds
locks long: it takes the batch's folded events (never a pending one: its fold still needs it),
records on their sessions' aggregates how far their history is gone (under the same session row
locks a fold takes, in the same order), and deletes them. A later fold of such a session still
adds its sums exactly and marks the bursts and concurrency it could not compute from the deleted
calls as approximate (apps.metrics.folding).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.db import connection, transaction
from django.utils import timezone

from apps.accounts.models import Project
from apps.ingestion.models import PendingEvent, RawEvent

logger = logging.getLogger(__name__)

PRUNE_BATCH = 1_000


def raw_events_prune(*, now: datetime | None = None, batch_size: int = PRUNE_BATCH) -> int:
    """Delete the folded raw events past every project's retention, in short batches; returns how many."""
    now = now or timezone.now()
    deleted = 0
    projects = Project.objects.filter(raw_events_retention_days__isnull=False).order_by("id")
    for project_id, days in projects.values_list("id", "raw_events_retention_days"):
        project_deleted = 0
        cutoff = now - timedelta(days=days)
        while batch := _prune_batch(project_id, cutoff, batch_size):
            project_deleted += batch
        if project_deleted:
            logger.info("Retention: deleted %d raw events of project %s older than %s.", project_deleted, project_id,
                        cutoff.isoformat())  # fmt: skip
        deleted += project_deleted
    return deleted


@transaction.atomic
def _prune_batch(project_id: int, cutoff: datetime, batch_size: int) -> int:
    from apps.metrics.services import sessions_history_pruned

    quote = connection.ops.quote_name
    raw, pending = quote(RawEvent._meta.db_table), quote(PendingEvent._meta.db_table)
    folded = (
        f"NOT EXISTS (SELECT 1 FROM {pending} WHERE {pending}.project_id = {raw}.project_id "
        f"AND {pending}.session_id = {raw}.session_id AND {pending}.raw_event_id = {raw}.id)"
    )
    cutoff_value = RawEvent._meta.get_field("timestamp").get_db_prep_value(cutoff, connection)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, session_id, end_at FROM {raw} WHERE project_id = %s AND {quote('timestamp')} < %s "
            f"AND {folded} ORDER BY id LIMIT %s",
            [project_id, cutoff_value, batch_size],
        )
        rows = cursor.fetchall()
        if not rows:
            return 0
        end_field = RawEvent._meta.get_field("end_at")
        pruned_through: dict[str, datetime] = defaultdict(lambda: datetime.min.replace(tzinfo=dt_timezone.utc))
        for _, session_id, end_at in rows:
            end_at = _aware(end_field.to_python(end_at))
            pruned_through[session_id] = max(pruned_through[session_id], end_at)
        # First, under the sessions' row locks: a fold of these sessions waits for this batch, or
        # finished before it (and then had every event it needed).
        sessions_history_pruned(project_id=project_id, pruned_through=dict(pruned_through))
        event_pks = [event_pk for event_pk, _, _ in rows]
        cursor.execute(
            f"DELETE FROM {raw} WHERE id IN ({', '.join(['%s'] * len(event_pks))}) AND {folded}", event_pks
        )
        return cursor.rowcount


def _aware(value: datetime) -> datetime:
    # SQLite returns naive UTC text for a raw column read.
    return value if value.tzinfo is not None else value.replace(tzinfo=dt_timezone.utc)
