"""Keeping what providers announce about rate limits, at ingest (apps.ingestion.services)."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timezone

from apps.ingestion.schema import Event, ThrottleEvent
from apps.limits.headers import PART_NAMES, Announcement, announced_limits
from apps.limits.models import ProviderLimit, RateLimitedMinute
from apps.metrics.upserts import added, rows_upsert

_KEY_COLUMNS = ("project_id", "provider", "model")
_MINUTE_KEY_COLUMNS = ("project_id", "minute_start", "provider", "model")


def _newer_part(column: str) -> str:
    # The newer row's part where it has one, else the older row's: the stored row and the batch's
    # can arrive in either order (batches are resent and race), and the result is the same.
    return (
        f"CASE WHEN excluded.observed_at >= {{table}}.observed_at "
        f"THEN COALESCE(excluded.{column}, {{table}}.{column}) "
        f"ELSE COALESCE({{table}}.{column}, excluded.{column}) END"
    )


def _later(column: str) -> str:
    return f"CASE WHEN excluded.{column} > {{table}}.{column} THEN excluded.{column} ELSE {{table}}.{column} END"


def limits_record(*, project_id: int, events: Iterable[Event]) -> None:
    """Keep the rate limits the events' headers announce (one upsert per model of the batch,
    the newest announcement by event time winning part by part) and count their 429s per minute.

    Call inside the transaction that stores the events, with only the events it newly stored,
    so a resent batch counts its 429s once.
    """
    announced: dict[tuple[str, str], list[tuple[datetime, Announcement]]] = defaultdict(list)
    responses_429: dict[tuple[datetime, str, str], int] = defaultdict(int)
    for event in events:
        announcement = announced_limits(event.attributes)
        if announcement:
            announced[(event.provider, event.model)].append((event.timestamp, announcement))
        if isinstance(event, ThrottleEvent) and event.status_code == 429:
            minute = event.timestamp.astimezone(timezone.utc).replace(second=0, microsecond=0)
            responses_429[(minute, event.provider, event.model)] += 1
    if announced:
        _provider_limits_upsert(project_id, announced)
    if responses_429:
        rows_upsert(
            model=RateLimitedMinute,
            columns=(*_MINUTE_KEY_COLUMNS, "responses_429"),
            rows=[(project_id, minute, provider, model, count)
                  for (minute, provider, model), count in sorted(responses_429.items())],
            conflict=_MINUTE_KEY_COLUMNS,
            updates={"responses_429": added("responses_429")},
        )  # fmt: skip


def _provider_limits_upsert(project_id: int, announced: dict[tuple[str, str], list[tuple[datetime, Announcement]]]):
    rows = []
    for (provider, model), seen in sorted(announced.items()):
        seen.sort(key=lambda item: item[0])
        merged: Announcement = {}
        for _, announcement in seen:
            merged.update(announcement)
        rows.append((project_id, provider, model, seen[-1][0], *(merged.get(part) for part in PART_NAMES)))
    rows_upsert(
        model=ProviderLimit,
        columns=(*_KEY_COLUMNS, "observed_at", *PART_NAMES),
        rows=rows,
        conflict=_KEY_COLUMNS,
        updates={**{column: _newer_part(column) for column in PART_NAMES}, "observed_at": _later("observed_at")},
    )
