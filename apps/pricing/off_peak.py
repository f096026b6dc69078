"""Off-peak price windows (`off_peak_pricing` in litellm's map: DeepSeek V4, some Tencent models).

These providers bill lower rates during daily UTC windows, so a call's cost depends on when it was
made. litellm 1.106.2 reads the windows as follows (`_is_off_peak` in
`litellm/litellm_core_utils/llm_cost_calc/utils.py`), and so does this module: each rule of `windows`
holds `hours_utc` ("HH:MM-HH:MM" or a list of them; start inclusive, end exclusive, wrapping past
midnight, start == end meaning the whole day) and the ISO `weekdays` it applies on, read on the
calendar of `weekday_timezone` (UTC when absent); flat `hours_utc` on the block apply every day.
Malformed windows are ignored, as litellm ignores them. (litellm also accepts weekday names; the
bundled map uses only ISO numbers, so only those are read.)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_EVERY_DAY = frozenset(range(1, 8))


@dataclass(frozen=True, slots=True)
class OffPeakRule:
    """Minute-of-day spans `[start, end)` in UTC, on the listed ISO weekdays."""

    spans_min: tuple[tuple[int, int], ...]
    weekdays: frozenset[int]


@dataclass(frozen=True, slots=True)
class OffPeakSchedule:
    rules: tuple[OffPeakRule, ...]
    weekday_zone: str = "UTC"

    def is_open(self, at: datetime) -> bool:
        """Whether a call made at `at` (timezone-aware) is billed at off-peak rates."""
        at_utc = at.astimezone(timezone.utc)
        minute = at_utc.hour * 60 + at_utc.minute
        weekday = at_utc.astimezone(_zone(self.weekday_zone)).isoweekday()
        return any(
            weekday in rule.weekdays and any(_in_span(minute, start, end) for start, end in rule.spans_min)
            for rule in self.rules
        )


def parse_off_peak_schedule(block: Mapping[str, object]) -> OffPeakSchedule:
    """The windows of one `off_peak_pricing` block."""
    rules = []
    if spans := _spans(block.get("hours_utc")):
        rules.append(OffPeakRule(spans_min=spans, weekdays=_EVERY_DAY))
    windows = block.get("windows")
    if isinstance(windows, Sequence) and not isinstance(windows, str):
        for window in windows:
            if isinstance(window, Mapping) and (spans := _spans(window.get("hours_utc"))):
                rules.append(OffPeakRule(spans_min=spans, weekdays=_weekdays(window.get("weekdays"))))
    zone = block.get("weekday_timezone")
    return OffPeakSchedule(
        rules=tuple(rules), weekday_zone=zone.strip() if isinstance(zone, str) and zone.strip() else "UTC"
    )


def _in_span(minute: int, start: int, end: int) -> bool:
    return start <= minute < end if start < end else minute >= start or minute < end


def _spans(hours: object) -> tuple[tuple[int, int], ...]:
    if isinstance(hours, str):
        texts: tuple[object, ...] = (hours,)
    elif isinstance(hours, Sequence):
        texts = tuple(hours)
    else:
        texts = ()
    spans = []
    for text in texts:
        if not isinstance(text, str):
            continue
        try:
            start, end = (_minute_of_day(part) for part in text.split("-"))
        except ValueError:
            continue
        spans.append((start, end))
    return tuple(spans)


def _minute_of_day(clock: str) -> int:
    moment = datetime.strptime(clock.strip(), "%H:%M")
    return moment.hour * 60 + moment.minute


def _weekdays(days: object) -> frozenset[int]:
    if days is None:
        return _EVERY_DAY
    if isinstance(days, str) or not isinstance(days, Sequence):
        return frozenset()
    return frozenset(day for day in days if isinstance(day, int) and not isinstance(day, bool) and 1 <= day <= 7)


def _zone(name: str) -> timezone | ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError):
        return timezone.utc
