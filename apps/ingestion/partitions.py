"""The monthly partitions of the raw-event table on PostgreSQL (migration 0009 partitions it).

The table is partitioned by RANGE of `received_at`, one partition per calendar month (UTC) named
`ingestion_rawevent_pYYYYMM`, plus `ingestion_rawevent_default`, which takes a row no monthly
partition covers so that an insert never fails. received_at rather than the event's timestamp:
it is stamped by the server at arrival, so a month that has ended never receives another row and
its partition can be dropped whole (apps.ingestion.retention) without racing late events.

Each partition's index is named after its parent index and the month
(`rawevent_session_time_p202612`), so a plan names the index it reads whatever the partition.
SQLite has no partitions: every function here does nothing there.
"""
from __future__ import annotations

import logging
from datetime import date, datetime
from datetime import timezone as dt_timezone

from django.db import connection, transaction

logger = logging.getLogger(__name__)

RAW_TABLE = "ingestion_rawevent"
DEFAULT_PARTITION = f"{RAW_TABLE}_default"
MONTHS_AHEAD = 2  # partitions exist for the current month and this many after it


def month_start(value: date | datetime) -> datetime:
    return datetime(value.year, value.month, 1, tzinfo=dt_timezone.utc)


def month_next(start: datetime) -> datetime:
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def partition_name(start: datetime) -> str:
    return f"{RAW_TABLE}_p{start:%Y%m}"


def partition_month(name: str) -> datetime | None:
    """The month a partition named by `partition_name` covers; None for any other table."""
    suffix = name.removeprefix(f"{RAW_TABLE}_p")
    if len(suffix) != 6 or not suffix.isdigit() or suffix == name:
        return None
    return datetime(int(suffix[:4]), int(suffix[4:]), 1, tzinfo=dt_timezone.utc)


def raw_partitions_ensure(*, now: datetime) -> list[str]:
    """Create the partitions of the current month and the next MONTHS_AHEAD if missing; returns
    the names created. Cheap when they exist (one catalog read); called daily by the prune."""
    if connection.vendor != "postgresql":
        return []
    months = [month_start(now)]
    for _ in range(MONTHS_AHEAD):
        months.append(month_next(months[-1]))
    existing = set(raw_partitions())
    created = []
    for start in months:
        if partition_name(start) not in existing:
            with connection.cursor() as cursor:
                raw_partition_create(cursor, start)
            created.append(partition_name(start))
    return created


def raw_partitions() -> list[str]:
    """Names of the raw table's partitions (the default one included), on PostgreSQL."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass ORDER BY c.relname",
            [RAW_TABLE],
        )
        return [name for (name,) in cursor.fetchall()]


def raw_partition_create(cursor, start: datetime) -> None:
    """Create the partition of the month beginning at `start` (an instant of UTC midnight, day 1).

    Rows of that month in the default partition (written while no partition covered it) would
    make a plain `CREATE TABLE ... PARTITION OF` fail; they are moved into the new partition
    before it is attached, in the same transaction, so no reader sees them missing or twice.
    """
    name, end = partition_name(start), month_next(start)
    bounds = f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    with transaction.atomic():
        cursor.execute(
            f"SELECT EXISTS (SELECT 1 FROM {DEFAULT_PARTITION} WHERE received_at >= %s AND received_at < %s)",
            [start, end],
        )
        (stranded,) = cursor.fetchone()
        if not stranded:
            cursor.execute(f"CREATE TABLE {name} PARTITION OF {RAW_TABLE} {bounds}")
        else:
            cursor.execute(f"CREATE TABLE {name} (LIKE {RAW_TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
            cursor.execute(
                f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE received_at >= %s AND received_at < %s "
                f"RETURNING *) INSERT INTO {name} SELECT * FROM moved",
                [start, end],
            )
            logger.warning("Partitions: moved %d raw events from %s into the new %s.", cursor.rowcount,
                           DEFAULT_PARTITION, name)  # fmt: skip
            cursor.execute(f"ALTER TABLE {RAW_TABLE} ATTACH PARTITION {name} {bounds}")
        partition_indexes_name(cursor, name, f"p{start:%Y%m}")


def partition_indexes_name(cursor, partition: str, suffix: str) -> None:
    """Rename the partition's indexes to `<parent index>_<suffix>` (PostgreSQL names them after
    their columns)."""
    cursor.execute(
        "SELECT child.relname, parent.relname FROM pg_index x JOIN pg_class child ON child.oid = x.indexrelid "
        "JOIN pg_inherits i ON i.inhrelid = child.oid JOIN pg_class parent ON parent.oid = i.inhparent "
        "WHERE x.indrelid = %s::regclass",
        [partition],
    )
    for child, parent in cursor.fetchall():
        if child != f"{parent}_{suffix}":
            cursor.execute(f'ALTER INDEX "{child}" RENAME TO "{parent}_{suffix}"')
