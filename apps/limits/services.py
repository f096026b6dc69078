"""Keeping what providers announce about rate limits, at ingest (apps.ingestion.services)."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timezone

from apps.ingestion.schema import Event, ThrottleEvent
from apps.limits.headers import PART_NAMES, Announcement, announcement_fill
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
    with_attributes: dict[tuple[str, str], list[tuple[datetime, dict]]] = defaultdict(list)
    responses_429: dict[tuple[datetime, str, str], int] = defaultdict(int)
    for event in events:
        if event.attributes:
            with_attributes[(event.provider, event.model)].append((event.timestamp, event.attributes))
        if isinstance(event, ThrottleEvent) and event.status_code == 429:
            minute = event.timestamp.astimezone(timezone.utc).replace(second=0, microsecond=0)
            responses_429[(minute, event.provider, event.model)] += 1
    rows = []
    for (provider, model), seen in sorted(with_attributes.items()):
        seen.sort(key=lambda item: item[0])
        announced: Announcement = {}
        observed_at = None
        for timestamp, attributes in reversed(seen):  # newest first; of equal times, the last sent
            if announcement_fill(announced, attributes) and observed_at is None:
                observed_at = timestamp
        if observed_at is not None:
            rows.append((project_id, provider, model, observed_at, *(announced.get(part) for part in PART_NAMES)))
    if rows:
        rows_upsert(
            model=ProviderLimit,
            columns=(*_KEY_COLUMNS, "observed_at", *PART_NAMES),
            rows=rows,
            conflict=_KEY_COLUMNS,
            updates={**{column: _newer_part(column) for column in PART_NAMES}, "observed_at": _later("observed_at")},
        )
    if responses_429:
        rows_upsert(
            model=RateLimitedMinute,
            columns=(*_MINUTE_KEY_COLUMNS, "responses_429"),
            rows=[(project_id, minute, provider, model, count)
                  for (minute, provider, model), count in sorted(responses_429.items())],
            conflict=_MINUTE_KEY_COLUMNS,
            updates={"responses_429": added("responses_429")},
        )  # fmt: skip
