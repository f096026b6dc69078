"""Timestamps the server would reject as too early are refused when recorded, not after sending."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest


def test_timestamps_before_2000_are_refused_when_recorded(make_tracker: Any) -> None:
    tracker = make_tracker(None)
    with pytest.raises(ValueError, match="timestamp must not be before 2000-01-01T00:00:00Z"):
        tracker.record_usage("gpt-4o", "openai", 1, 1, 1, timestamp=datetime(1999, 12, 31, 23, 59, tzinfo=timezone.utc))
    year_one_at_plus_14 = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    with pytest.raises(ValueError, match="timestamp must not be before"):
        tracker.record_throttle(100, timestamp=year_one_at_plus_14)
    with pytest.raises(ValueError, match="timestamp must not be before"):
        tracker.record_throttle(100, timestamp=0.0)
    for epoch in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timestamp must be a finite number"):
            tracker.record_throttle(100, timestamp=epoch)
    tracker.record_usage("gpt-4o", "openai", 1, 1, 1, timestamp=datetime(2000, 1, 1, tzinfo=timezone.utc))
    (usage,) = tracker.summary()
    assert usage.calls == 1
