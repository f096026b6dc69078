"""Time buckets per project, model and minute (or hour): atomic additions and compaction."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models.functions import Collate
from django.utils import timezone as dj_timezone

from apps.metrics.models import UsageBucket
from apps.metrics.upserts import added, rows_upsert

MINUTE_BUCKET_RETENTION = timedelta(days=7)


@dataclass
class BucketDelta:
    """What a set of events adds to one bucket row."""

    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    throttle_count: int = 0
    throttle_wait_us: int = 0
    cost_nanousd: int = 0
    unpriced_tokens: int = 0


BUCKET_COLUMNS = tuple(field.name for field in fields(BucketDelta))
_KEY_COLUMNS = ("project_id", "granularity", "bucket_start", "provider", "model")


def buckets_add(*, project_id: int, granularity: str, deltas: dict[tuple[datetime, str, str], BucketDelta]) -> None:
    """Atomically add deltas to bucket rows: multi-row upserts in key order, so writers never deadlock."""
    rows_upsert(
        model=UsageBucket,
        columns=(*_KEY_COLUMNS, *BUCKET_COLUMNS),
        rows=(
            (project_id, granularity, start, provider, model, *(getattr(delta, name) for name in BUCKET_COLUMNS))
            for (start, provider, model), delta in sorted(deltas.items(), key=lambda item: item[0])
        ),
        conflict=_KEY_COLUMNS,
        updates={name: added(name) for name in BUCKET_COLUMNS},
    )


def _text_in_byte_order(*names: str) -> list:
    # The order folds lock bucket rows in (apps.metrics.upserts): code point order, not the locale's.
    if connection.vendor == "postgresql":
        return [Collate(name, "C") for name in names]
    return list(names)


@transaction.atomic
def buckets_compact(*, older_than: timedelta = MINUTE_BUCKET_RETENTION) -> int:
    """Roll minute buckets older than `older_than` into hour buckets; returns minute rows removed.

    The rows read are locked (in the key order folds add in) and deleted by id, so a fold adding
    to an old minute concurrently either lands before (and is rolled up) or after (and waits for
    the next compaction).
    """
    cutoff = dj_timezone.now() - older_than
    rows = list(
        UsageBucket.objects.select_for_update()
        .filter(granularity=UsageBucket.Granularity.MINUTE, bucket_start__lt=cutoff)
        .order_by("project_id", "bucket_start", *_text_in_byte_order("provider", "model"))
    )
    by_project: dict[int, dict[tuple[datetime, str, str], BucketDelta]] = defaultdict(lambda: defaultdict(BucketDelta))
    for row in rows:
        hour = row.bucket_start.replace(minute=0, second=0, microsecond=0)
        delta = by_project[row.project_id][(hour, row.provider, row.model)]
        for name in BUCKET_COLUMNS:
            setattr(delta, name, getattr(delta, name) + getattr(row, name))
    for project_id, deltas in by_project.items():
        buckets_add(project_id=project_id, granularity=UsageBucket.Granularity.HOUR, deltas=deltas)
    UsageBucket.objects.filter(id__in=[row.id for row in rows]).delete()
    return len(rows)
