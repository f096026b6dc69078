"""Budget periods in UTC calendar terms: a day, an ISO week (from Monday) or a month. Pure functions."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone


def period_bounds(period: str, at: datetime) -> tuple[datetime, datetime]:
    """The [start, end) of the `period` ('day', 'week' or 'month') holding the instant `at`, in UTC."""
    if at.tzinfo is None:
        raise ValueError("period_bounds needs an aware datetime")
    at = at.astimezone(timezone.utc)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return start, end
    raise ValueError(f"unknown budget period {period!r}")


# Early in a period a few calls would project to absurd totals: the run rate is taken over at
# least this share of the period, so the forecast settles instead of firing at the first call.
FORECAST_MIN_ELAPSED_FRACTION = 0.05


def forecast_share(*, share: float, start: datetime, end: datetime, now: datetime) -> float:
    """The share spent by `end` if spending goes on at the period's rate so far."""
    length = (end - start).total_seconds()
    elapsed = min(max((now - start).total_seconds(), 0.0), length)
    if elapsed >= length:
        return share
    return share * length / max(elapsed, length * FORECAST_MIN_ELAPSED_FRACTION)
