"""The Limits table of the project page: announced limits next to measured per-minute peaks."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Sum

from apps.accounts.models import Project
from apps.limits.headers import DIMENSIONS, PARTS
from apps.limits.models import ProviderLimit, RateLimitedMinute
from apps.metrics.selectors import MinutePeaks, minute_peaks_by_model

DIMENSION_LABELS = {
    "requests": "Requests",
    "tokens": "Tokens (input + output)",
    "input_tokens": "Input tokens",
    "output_tokens": "Output tokens",
}
_NO_PEAKS = MinutePeaks(requests=0, input_tokens=0, output_tokens=0, tokens=0)


@dataclass(frozen=True)
class DimensionHeadroom:
    """One announced limit (per minute) against the measured peak minute of the same quantity."""

    dimension: str
    label: str
    limit: int | None
    remaining: int | None
    reset: str | None
    peak_per_minute: int

    @property
    def headroom(self) -> float | None:
        """The share of the limit the peak minute left unused (negative: the peak went over)."""
        if not self.limit:
            return None
        return (self.limit - self.peak_per_minute) / self.limit


@dataclass(frozen=True)
class ModelLimits:
    provider: str
    model: str
    observed_at: datetime | None  # None: no rate-limit header was ever seen for this model
    peaks: MinutePeaks
    responses_429: int
    dimensions: list[DimensionHeadroom] = field(default_factory=list)

    @property
    def tightest(self) -> DimensionHeadroom | None:
        """The dimension with the least headroom: the one that throttles first."""
        known = [dimension for dimension in self.dimensions if dimension.headroom is not None]
        return min(known, key=lambda dimension: dimension.headroom) if known else None


def limits_table(*, project: Project, since: datetime, until: datetime) -> list[ModelLimits]:
    """Every model of the project with limits announced (ever, the latest kept) or calls or 429s in
    [since, until): its announced limits, peak minutes and 429 count; the models closest to their
    limits first, then the models whose provider never announced one."""
    announced = {(row.provider, row.model): row for row in ProviderLimit.objects.filter(project=project)}
    peaks = minute_peaks_by_model(project=project, since=since, until=until)
    responses_429 = {
        (row["provider"], row["model"]): row["count"]
        for row in RateLimitedMinute.objects.filter(project=project, minute_start__gte=since, minute_start__lt=until)
        .values("provider", "model")
        .annotate(count=Sum("responses_429"))
        .order_by()
    }
    table = []
    for key in announced.keys() | peaks.keys() | responses_429.keys():
        model_peaks = peaks.get(key, _NO_PEAKS)
        row = announced.get(key)
        dimensions = []
        if row is not None:
            for dimension in DIMENSIONS:
                limit, remaining, reset = (getattr(row, f"{dimension}_{part}") for part in PARTS)
                if limit is not None or remaining is not None:
                    dimensions.append(DimensionHeadroom(
                        dimension=dimension, label=DIMENSION_LABELS[dimension], limit=limit, remaining=remaining,
                        reset=reset, peak_per_minute=getattr(model_peaks, dimension),
                    ))  # fmt: skip
        table.append(ModelLimits(
            provider=key[0], model=key[1], observed_at=row.observed_at if row is not None else None,
            peaks=model_peaks, responses_429=responses_429.get(key, 0), dimensions=dimensions,
        ))  # fmt: skip
    return sorted(table, key=_closest_to_limit_first)


def _closest_to_limit_first(row: ModelLimits) -> tuple:
    tightest = row.tightest
    return (
        row.observed_at is None,
        tightest is None,
        tightest.headroom if tightest is not None else 0.0,
        -row.responses_429,
        -row.peaks.tokens,
        row.provider,
        row.model,
    )
