"""The project page's chart bins: each bucket's sums land in the epoch-aligned bin holding its start."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from apps.dashboards.selectors import TimeRange, project_dashboard
from apps.metrics.models import UsageBucket

pytestmark = pytest.mark.django_db

UNTIL = datetime.now(timezone.utc).replace(second=17, microsecond=250_000)  # not on a bin edge


def bucket(project, start: datetime, tokens: int, granularity: str = "minute", model: str = "gpt-4o") -> None:
    UsageBucket.objects.create(project=project, granularity=granularity, bucket_start=start, provider="openai",
                               model=model, input_tokens=tokens, output_tokens=1, calls=1)  # fmt: skip


def floor(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return epoch + (moment - epoch) // step * step


def test_ten_minute_bins_sum_the_minutes_they_hold(project):
    ten = timedelta(minutes=10)
    last_bin = floor(UNTIL, ten)
    bucket(project, last_bin, 100)  # first minute of the last bin
    bucket(project, last_bin, 5, model="o3-mini")  # same bin, another model
    bucket(project, last_bin - timedelta(minutes=1), 20)  # last minute of the bin before
    bucket(project, last_bin - 9 * ten, 3)
    bucket(project, UNTIL - timedelta(hours=25), 1000)  # before the range
    time_range = TimeRange("24h", UNTIL - timedelta(hours=24), UNTIL)
    series = project_dashboard(project=project, time_range=time_range)["series"]
    assert series["bin_seconds"] == 600
    tokens = series["input_tokens"]
    assert tokens[-1] == 105 and tokens[-2] == 20 and tokens[-10] == 3 and sum(tokens) == 128
    assert series["labels"][-1] == last_bin.isoformat().replace("+00:00", "Z")
    assert series["calls"][-1] == 2


def test_hour_bins_add_minute_and_compacted_hour_buckets(project):
    until, hour = UNTIL, timedelta(hours=1)
    since = until - timedelta(days=30)
    bucket(project, until.replace(second=0, microsecond=0), 7)  # the range's last minute
    old_hour = floor(until - timedelta(days=10), hour)
    bucket(project, old_hour, 50, granularity="hour")
    bucket(project, old_hour + timedelta(minutes=30), 4)  # a minute bucket beside it, not yet compacted
    data = project_dashboard(project=project, time_range=TimeRange("30d", since, until))
    series, step = data["series"], timedelta(seconds=data["series"]["bin_seconds"])
    first = floor(since, step)
    tokens = series["input_tokens"]
    assert tokens[(floor(old_hour, step) - first) // step] == 54
    assert tokens[-1] == 7 and sum(tokens) == 61
    assert data["headline"]["input_tokens"] == 61
    assert {row["model"]: row["input_tokens"] for row in data["models"]} == {"gpt-4o": 61}
