"""Retention: deleting a project's raw events older than its retention period, once folded.

Raw events are the source of truth while they are young (the fold reads them, the calls CSV lists
them); the aggregates hold everything the pages and APIs show, and are kept whatever the
retention. `raw_events_prune` runs daily (tokensite.schedule) and as
`manage.py raw_events_prune`.

On PostgreSQL a month's partition of the raw table (apps.ingestion.partitions) is dropped whole
when every project with rows in it keeps its raw events for less than the time since the month
ended (plus the 5 minutes a timestamp may lead the server's clock), and none of its events is
waiting for the fold: dropping a table frees its space at once,
where deleted rows leave dead tuples for vacuum. Everything else, SQLite included, is deleted row
by row: events of a month some other project keeps, and late events (an old timestamp that
arrived in a recent month).

Each batch of at most PRUNE_BATCH events is its own short transaction, so the prune never holds
locks long: it takes the batch's folded events (never a pending one: its fold still needs it),
records on their sessions' aggregates how far their history is gone (under the same session row
locks a fold takes, in the same order), and deletes them with their keys. A later fold of such a
session still adds its sums exactly and marks the bursts and concurrency it could not compute
from the deleted calls as approximate (apps.metrics.folding).
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.db import OperationalError, connection, transaction
from django.utils import timezone

from apps.accounts.models import Project
from apps.ingestion.models import PendingEvent, RawEvent, RawEventKey
from apps.ingestion.partitions import RAW_TABLE, month_next, partition_month, raw_partitions, raw_partitions_ensure
from apps.ingestion.validation import MAX_FUTURE

logger = logging.getLogger(__name__)

PRUNE_BATCH = 1_000
KEYS_DELETE_BATCH = 10_000
# DETACH PARTITION takes an ACCESS EXCLUSIVE lock on the raw table, briefly, but it has to wait for
# every transaction that reads or writes the table, and ingest would queue behind the waiting lock.
# So it waits at most this long, a few times, and the partition is left for the next day's run.
# (DETACH ... CONCURRENTLY would take a weaker lock, but PostgreSQL refuses it while the table
# has a default partition.)
DETACH_LOCK_TIMEOUT = "2s"
DETACH_ATTEMPTS = 3
DETACH_RETRY_PAUSE_S = 1.0


def raw_events_prune(*, now: datetime | None = None, batch_size: int = PRUNE_BATCH) -> int:
    """Delete the folded raw events past every project's retention, dropping whole monthly
    partitions where possible and in short batches elsewhere; returns how many. Also creates the
    coming months' partitions (apps.ingestion.partitions)."""
    now = now or timezone.now()
    raw_partitions_ensure(now=now)
    retention_days = dict(
        Project.objects.filter(raw_events_retention_days__isnull=False).values_list("id", "raw_events_retention_days")
    )
    deleted = 0
    if connection.vendor == "postgresql":
        deleted += _partitions_drop(now, retention_days, batch_size)
    for project_id, days in sorted(retention_days.items()):
        project_deleted = 0
        cutoff = now - timedelta(days=days)
        while batch := _prune_batch(project_id, cutoff, batch_size):
            project_deleted += batch
        if project_deleted:
            logger.info("Retention: deleted %d raw events of project %s older than %s.", project_deleted, project_id,
                        cutoff.isoformat())  # fmt: skip
        deleted += project_deleted
    return deleted


def _partitions_drop(now: datetime, retention_days: dict[int, int], batch_size: int) -> int:
    """Drop every monthly partition past all its projects' retention; returns how many events they held.

    Its sessions are marked first (a fold after the drop must know their history is gone), then
    it is detached (the one step that locks the raw table), then its keys are deleted and it is
    dropped: while its keys exist a resend of one of its events is still a duplicate. A partition
    detached by a run that stopped before dropping it is finished by the next run.
    """
    for name in raw_partitions():
        start = partition_month(name)
        if start is not None and _partition_droppable(name, start, now, retention_days):
            _partition_sessions_mark(name, batch_size)
            _partition_detach(name, start)
    dropped = 0
    for name in _partitions_detached():
        events = _partition_keys_delete_and_drop(name)
        logger.info("Retention: dropped partition %s (%d raw events).", name, events)
        dropped += events
    return dropped


def _partition_droppable(name: str, start: datetime, now: datetime, retention_days: dict[int, int]) -> bool:
    end = month_next(start)
    if end > now:
        return False
    # The partition's distinct projects, read through its session index one project at a time.
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH RECURSIVE projects AS ((SELECT project_id FROM {name} ORDER BY project_id LIMIT 1) UNION ALL "
            f"SELECT (SELECT project_id FROM {name} WHERE project_id > projects.project_id ORDER BY project_id LIMIT 1) "
            f"FROM projects WHERE projects.project_id IS NOT NULL) "
            f"SELECT project_id FROM projects WHERE project_id IS NOT NULL"
        )
        project_ids = [project_id for (project_id,) in cursor.fetchall()]
    # Every event of the partition arrived before `end`, so its timestamp is before end + MAX_FUTURE
    # (validation refuses later ones): past the cutoff once the cutoff is past that.
    if any(project_id not in retention_days or now - timedelta(days=retention_days[project_id]) < end + MAX_FUTURE
           for project_id in project_ids):  # fmt: skip
        return False
    return not _partition_has_pending(start)


def _partition_has_pending(start: datetime) -> bool:
    pending = PendingEvent._meta.db_table
    (exists,) = _fetchone(
        f"SELECT EXISTS (SELECT 1 FROM {pending} WHERE received_at >= %s AND received_at < %s)",
        [start, month_next(start)],
    )
    return exists


def _partition_sessions_mark(name: str, batch_size: int) -> None:
    """Record, on every session with events in the partition, that its history through their
    latest end is going: in batches of sessions, each its own transaction, as the row-wise prune."""
    from apps.metrics.services import sessions_history_pruned

    after: tuple[int, str] = (0, "")
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT project_id, session_id, max(end_at) FROM {name} WHERE (project_id, session_id) > (%s, %s) "
                f"GROUP BY project_id, session_id ORDER BY project_id, session_id LIMIT %s",
                [*after, batch_size],
            )
            rows = cursor.fetchall()
            if not rows:
                return
            by_project: dict[int, dict[str, datetime]] = defaultdict(dict)
            for project_id, session_id, end_at in rows:
                by_project[project_id][session_id] = end_at
            for project_id, pruned_through in sorted(by_project.items()):
                sessions_history_pruned(project_id=project_id, pruned_through=pruned_through)
        after = rows[-1][:2]


def _partition_detach(name: str, start: datetime) -> bool:
    from psycopg.errors import LockNotAvailable

    for attempt in range(DETACH_ATTEMPTS):
        if attempt:
            time.sleep(DETACH_RETRY_PAUSE_S)
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{DETACH_LOCK_TIMEOUT}'")
                cursor.execute(f"ALTER TABLE {RAW_TABLE} DETACH PARTITION {name}")
                # Under the lock nothing is queued into it any more; one queued since the check keeps it.
                if _partition_has_pending(start):
                    transaction.set_rollback(True)
                    return False
                return True
        except OperationalError as error:
            if not isinstance(error.__cause__, LockNotAvailable):
                raise
            logger.warning("Retention: partition %s is busy (attempt %d of %d).", name, attempt + 1, DETACH_ATTEMPTS)
    logger.warning("Retention: partition %s left for the next run (the raw table stayed busy).", name)
    return False


def _partitions_detached() -> list[str]:
    """Monthly partitions detached from the raw table and not dropped yet."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND NOT relispartition AND relname ~ %s "
            "AND pg_table_is_visible(oid) ORDER BY relname",
            [f"^{RAW_TABLE}_p[0-9]{{6}}$"],
        )
        return [name for (name,) in cursor.fetchall()]


def _partition_keys_delete_and_drop(name: str) -> int:
    """Delete the keys of a detached partition's events (in batches along its primary key, each
    key by the key table's own), then drop it; returns how many events it held."""
    keys = RawEventKey._meta.db_table
    (events,) = _fetchone(f"SELECT count(*) FROM {name}")
    after_id = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, event_id, project_id FROM {name} WHERE id > %s ORDER BY id LIMIT %s",
                [after_id, KEYS_DELETE_BATCH],
            )
            rows = cursor.fetchall()
            if not rows:
                break
            cursor.execute(
                f"DELETE FROM {keys} k USING unnest(%s::uuid[], %s::bigint[]) AS e(event_id, project_id) "
                f"WHERE k.event_id = e.event_id AND k.project_id = e.project_id",
                [[row[1] for row in rows], [row[2] for row in rows]],
            )
        after_id = rows[-1][0]
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {name}")
    return events


def _fetchone(sql: str, params: list | None = None) -> tuple:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchone()


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
            f"SELECT id, session_id, end_at, received_at FROM {raw} WHERE project_id = %s "
            f"AND {quote('timestamp')} < %s AND {folded} ORDER BY id LIMIT %s",
            [project_id, cutoff_value, batch_size],
        )
        rows = cursor.fetchall()
        if not rows:
            return 0
        end_field, arrival_field = RawEvent._meta.get_field("end_at"), RawEvent._meta.get_field("received_at")
        pruned_through: dict[str, datetime] = defaultdict(lambda: datetime.min.replace(tzinfo=dt_timezone.utc))
        arrived: list[datetime] = []
        for _, session_id, end_at, received_at in rows:
            end_at = _aware(end_field.to_python(end_at))
            pruned_through[session_id] = max(pruned_through[session_id], end_at)
            arrived.append(_aware(arrival_field.to_python(received_at)))
        # First, under the sessions' row locks: a fold of these sessions waits for this batch, or
        # finished before it (and then had every event it needed).
        sessions_history_pruned(project_id=project_id, pruned_through=dict(pruned_through))
        event_pks = [row[0] for row in rows]
        # Bounded by the batch's range of arrival: PostgreSQL then looks each id up only in the
        # monthly partitions the batch's rows are in (apps.ingestion.partitions), where the ids
        # alone would be looked up in every month's index.
        arrived_between = [
            arrival_field.get_db_prep_value(instant, connection) for instant in (min(arrived), max(arrived))
        ]
        cursor.execute(
            f"DELETE FROM {raw} WHERE id IN ({', '.join(['%s'] * len(event_pks))}) "
            f"AND received_at BETWEEN %s AND %s AND {folded} RETURNING event_id",
            [*event_pks, *arrived_between],
        )
        event_ids = [event_id for (event_id,) in cursor.fetchall()]
        if event_ids:
            RawEventKey.objects.filter(project_id=project_id, event_id__in=event_ids).delete()
        return len(event_ids)


def _aware(value: datetime) -> datetime:
    # SQLite returns naive UTC text for a raw column read.
    return value if value.tzinfo is not None else value.replace(tzinfo=dt_timezone.utc)
