"""Reads on aggregates, always scoped to one project: the metadata document, session lists, usage."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Count, F, Max, Q, QuerySet, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import TruncDay, TruncHour
from tokensite_client.events import DEVELOPER_ATTRIBUTE, SOURCE_ATTRIBUTE, SOURCE_VERSION_ATTRIBUTE

from apps.accounts.models import Project
from apps.core.errors import ErrorCode, NotFound
from apps.ingestion.models import PendingEvent
from apps.metrics.algorithms import whole_ms
from apps.metrics.models import (
    QuarantinedSession, SessionAggregate, SessionModelAggregate, SessionStepAggregate, UsageBucket,
)  # fmt: skip
from apps.pricing.cost import NANO_USD_PER_USD

LITELLM_MAP = "litellm 1.106.2 model map"


def usd(nanousd: int | None) -> float | None:
    """Nano-USD to a float for JSON, rounded to the nano-dollar it is stored in."""
    return None if nanousd is None else float(Decimal(nanousd) / NANO_USD_PER_USD)


def priced_usd(nanousd: int, unpriced_tokens: int, total_tokens: int) -> float | None:
    """The cost to show: null when every token is unpriced (unpriced is never shown as $0)."""
    if unpriced_tokens and unpriced_tokens == total_tokens:
        return None
    return usd(nanousd)


def session_get(*, project: Project, session_id: str) -> SessionAggregate:
    """The project's session aggregate, or NotFound."""
    session = SessionAggregate.objects.filter(project=project, session_id=session_id).first()
    if session is None:
        raise NotFound(f"Session {session_id!r} not found in this project.", code=ErrorCode.SESSION_NOT_FOUND)
    return session


def _price_source_summary(sources: list[str]) -> str:
    kinds = sorted({"override" if s.startswith("override") else LITELLM_MAP for s in sources if s})
    return "; ".join(kinds) if kinds else "none (unpriced)"


def session_origin(attributes: dict | None) -> dict:
    """Who and what sent a session (DESIGN.md section 9), from its folded attributes: the developer
    (`user`) and the source (`source`, `source_version`, set by the SDK's shims and by OTLP)."""
    attributes = attributes or {}
    name = attributes.get(SOURCE_ATTRIBUTE)
    version = attributes.get(SOURCE_VERSION_ATTRIBUTE)
    developer = attributes.get(DEVELOPER_ATTRIBUTE)
    return {
        "developer": str(developer) if developer not in (None, "") else None,
        "source": {"name": str(name), "version": str(version) if version not in (None, "") else None}
        if name not in (None, "") else None,
    }


def context_window_pressure(*, calls: int, known_calls: int, max_share: float | None, calls_over_80: int,
                            calls_over_95: int) -> dict:  # fmt: skip
    """A step's or model's context window figures (apps.metrics.context_windows) as the metadata
    document and the pages show them: with no call of a known window, the share and the counts are
    null (unknown), never 0."""
    known = known_calls > 0
    return {
        "max_share": max_share if known else None,
        "calls_over_80": calls_over_80 if known else None,
        "calls_over_95": calls_over_95 if known else None,
        "known_calls": known_calls,
        "unknown_calls": calls - known_calls,
    }


def _row_context_window(row) -> dict:
    return context_window_pressure(
        calls=row.calls, known_calls=row.context_known_calls, max_share=row.context_max_share,
        calls_over_80=row.context_calls_over_80, calls_over_95=row.context_calls_over_95,
    )  # fmt: skip


def session_metadata(*, project: Project, session_id: str) -> dict:
    """The session metadata document of DESIGN.md section 7 (the seeds' token_usage and tokenMetrics)."""
    session = session_get(project=project, session_id=session_id)
    steps = sorted(session.steps.all(), key=lambda s: (s.first_timestamp is None, s.first_timestamp, s.step))
    models = sorted(session.models.all(), key=lambda m: (-m.total_tokens, m.provider, m.model))
    pending = PendingEvent.objects.filter(project=project, session_id=session_id).count()
    return {
        "session_id": session.session_id,
        "project": f"{project.team.slug}/{project.slug}",
        **session_origin(session.attributes),
        "started_at": session.started_at.isoformat() if session.started_at else None,
        "ended_at": session.ended_at.isoformat() if session.ended_at else None,
        "token_usage": {
            "total_input_tokens": session.input_tokens,
            "total_output_tokens": session.output_tokens,
            "total_tokens": session.total_tokens,
            "breakdown_by_step": [
                {
                    "step": step.step,
                    "input": step.input_tokens,
                    "output": step.output_tokens,
                    "calls": step.calls,
                    "cost_usd": priced_usd(step.cost_nanousd, step.unpriced_tokens, step.total_tokens),
                    "unpriced_tokens": step.unpriced_tokens,
                    "tokens_per_second": step.tokens_per_second or 0.0,
                    "throttle_wait_ms": whole_ms(step.throttle_wait_us),
                    "context_window": _row_context_window(step),
                }
                for step in steps
            ],
        },
        "tokenMetrics": {
            "tokensIn": session.input_tokens,
            "tokensOut": session.output_tokens,
            "tokensPerSecond": session.tokens_per_second or 0.0,
            "burstTokensPerSecond": session.burst_1s,
            "throttleWaitTimeMs": whole_ms(session.throttle_wait_us),
            "sessionTokenUsage": {
                "input": session.input_tokens,
                "output": session.output_tokens,
                "cache": session.cache_read_tokens + session.cache_write_tokens,
                "tool": session.tool_tokens,
                "thought": session.thought_tokens,
                "total": session.total_tokens,
            },
        },
        "cost": {
            "estimated_usd": priced_usd(session.cost_nanousd, session.unpriced_tokens, session.total_tokens),
            "unpriced_tokens": session.unpriced_tokens,
            "currency": "USD",
            "by_model": [
                {
                    "provider": model.provider,
                    "model": model.model,
                    "input": model.input_tokens,
                    "output": model.output_tokens,
                    "calls": model.calls,
                    "cost_usd": priced_usd(model.cost_nanousd, model.unpriced_tokens, model.total_tokens),
                    "unpriced_tokens": model.unpriced_tokens,
                    "price_source": model.price_source or None,
                    "context_window": _row_context_window(model),
                }
                for model in models
            ],
            "price_source": _price_source_summary([model.price_source for model in models]),
        },
        "bursts": {"1s": session.burst_1s, "10s": session.burst_10s, "60s": session.burst_60s},
        "peak_concurrency": session.peak_concurrency,
        "peaks_approximate": session.peaks_approximate,
        "throttle": {
            "count": session.throttle_count,
            "wait_ms": whole_ms(session.throttle_wait_us),
            "share_of_wall_time": session.throttle_share_of_wall_time,
        },
        "calls": session.calls,
        "estimated_calls": session.estimated_calls,
        "pending_events": pending,
    }


def sessions_for_project(
    *,
    project: Project,
    started_from: datetime | None = None,
    started_to: datetime | None = None,
    step: str | None = None,
    model: str | None = None,
    search: str | None = None,
) -> QuerySet[SessionAggregate]:
    """The project's sessions, newest first, filtered by start time, step, model or id/attribute text."""
    sessions = _in_range(SessionAggregate.objects.filter(project=project), "started_at", started_from, started_to)
    if step:
        sessions = sessions.filter(steps__step=step)
    if model:
        sessions = sessions.filter(models__model=model)
    if search:
        # Attributes are searched by value, so "user=alice" style tags are findable without a schema.
        sessions = sessions.filter(Q(session_id__icontains=search) | Q(attributes__icontains=search))
    return sessions.distinct().order_by(F("started_at").desc(nulls_last=True), "-id")


# The sums every usage view takes over aggregate rows (steps, models or buckets).
USAGE_SUMS = {
    "input_tokens": Sum("input_tokens"),
    "output_tokens": Sum("output_tokens"),
    "calls": Sum("calls"),
    "cost_nanousd": Sum("cost_nanousd"),
    "unpriced_tokens": Sum("unpriced_tokens"),
    "throttle_count": Sum("throttle_count"),
    "throttle_wait_us": Sum("throttle_wait_us"),
}


@dataclass(frozen=True, slots=True)
class MinutePeaks:
    """A model's busiest minute, per quantity: calls started, input tokens, output tokens, both."""

    requests: int
    input_tokens: int
    output_tokens: int
    tokens: int


def minute_peaks_by_model(*, project: Project, since: datetime, until: datetime) -> dict[tuple[str, str], MinutePeaks]:
    """Per (provider, model), the largest minute bucket starting in [since, until), across every
    session of the project, since a provider's limit is shared by all of them.

    Minute buckets hold tokens placed in time as DESIGN.md section 4 places them (input at the
    call's start, output spread over its generation), separately for input and output, so these
    are burst(60 s) x 60 taken over epoch-aligned minutes: never above the sliding-window peak,
    and at least half of it. Only minute buckets count (kept for 7 days; hour buckets say
    nothing about one minute).
    """
    rows = (
        UsageBucket.objects.filter(
            project=project, granularity=UsageBucket.Granularity.MINUTE,
            bucket_start__gte=since, bucket_start__lt=until,
        )
        .values("provider", "model")
        .annotate(peak_requests=Max("calls"), peak_input=Max("input_tokens"), peak_output=Max("output_tokens"),
                  peak_tokens=Max(F("input_tokens") + F("output_tokens")))
        .order_by()
    )  # fmt: skip
    return {
        (row["provider"], row["model"]): MinutePeaks(
            requests=row["peak_requests"], input_tokens=row["peak_input"], output_tokens=row["peak_output"],
            tokens=row["peak_tokens"],
        )
        for row in rows
    }


def usage_row(key: dict, sums: dict) -> dict:
    """A group's key plus its USAGE_SUMS turned into the figures every reply shows."""
    input_tokens, output_tokens = sums["input_tokens"] or 0, sums["output_tokens"] or 0
    unpriced = sums["unpriced_tokens"] or 0
    return {
        **key,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "calls": sums["calls"] or 0,
        "cost_usd": priced_usd(sums["cost_nanousd"] or 0, unpriced, input_tokens + output_tokens),
        "unpriced_tokens": unpriced,
        "throttle_count": sums["throttle_count"] or 0,
        "throttle_wait_ms": whole_ms(sums["throttle_wait_us"] or 0),
    }


def usage_by_project_and_model(
    *, projects: Iterable[Project] | QuerySet[Project], since: datetime, until: datetime
) -> list[dict]:
    """Raw USAGE_SUMS per project and model from the time buckets starting in [since, until)."""
    rows = (
        UsageBucket.objects.filter(project__in=projects, bucket_start__gte=since, bucket_start__lt=until)
        .values("project_id", "provider", "model")
        .annotate(**USAGE_SUMS)
        .order_by()
    )
    return [{**row, **{name: row[name] or 0 for name in USAGE_SUMS}} for row in rows]


def sessions_started_between(
    *, projects: Iterable[Project] | QuerySet[Project], since: datetime | None, until: datetime | None
) -> QuerySet[SessionAggregate]:
    """The sessions of these projects that started in [since, until) (open ends when None)."""
    return _in_range(SessionAggregate.objects.filter(project__in=projects), "started_at", since, until)


def _in_range(rows: QuerySet, field: str, since: datetime | None, until: datetime | None) -> QuerySet:
    """The rows whose `field` lies in [since, until) (open ends when None)."""
    if since:
        rows = rows.filter(**{f"{field}__gte": since})
    if until:
        rows = rows.filter(**{f"{field}__lt": until})
    return rows


def with_developer(sessions: QuerySet[SessionAggregate]) -> QuerySet[SessionAggregate]:
    """Sessions annotated with `developer`, the text of their developer attribute (null when absent)."""
    return sessions.annotate(developer=KeyTextTransform(DEVELOPER_ATTRIBUTE, "attributes"))


def usage_by_developer(*, sessions: QuerySet[SessionAggregate]) -> list[dict]:
    """Totals per developer over these sessions, as usage rows keyed by `user` (None for sessions
    that name no developer) with their session count, most expensive first.

    Buckets carry no developer, so this reads the session aggregates: a session counts wholly in
    the range its start falls in.
    """
    grouped: dict[str | None, dict[str, int]] = {}
    rows = with_developer(sessions).values("developer").annotate(sessions=Count("id"), **USAGE_SUMS).order_by()
    for row in rows:
        # An empty attribute and a missing one both mean "not named": one row for both.
        target = grouped.setdefault(row["developer"] or None, dict.fromkeys(("sessions", *USAGE_SUMS), 0))
        for name in target:
            target[name] += row[name] or 0
    table = [usage_row({"user": user, "sessions": sums["sessions"]}, sums) for user, sums in grouped.items()]
    return sorted(table, key=lambda row: (-(row["cost_usd"] or 0), -row["total_tokens"], row["user"] or ""))


def usage_for_project(*, project: Project, since: datetime | None, until: datetime | None, group_by: str) -> list[dict]:
    """Project totals grouped by model, step, user, day or hour, from aggregates (never raw events).

    model/day/hour come from time buckets (tokens placed in time); step and user come from the
    step and session aggregates of sessions that started in the range, since buckets carry neither.
    """
    if group_by == "user":
        sessions = sessions_started_between(projects=[project], since=since, until=until)
        return sorted(usage_by_developer(sessions=sessions), key=lambda row: (row["user"] is None, row["user"] or ""))
    if group_by == "step":
        steps = SessionStepAggregate.objects.filter(session__project=project)
        steps = _in_range(steps, "session__started_at", since, until)
        rows = steps.values("step").annotate(**USAGE_SUMS).order_by("step")
        return [usage_row({"step": row["step"]}, row) for row in rows]
    buckets = _in_range(UsageBucket.objects.filter(project=project), "bucket_start", since, until)
    if group_by == "model":
        rows = buckets.values("provider", "model").annotate(**USAGE_SUMS).order_by("provider", "model")
        return [usage_row({"provider": r["provider"], "model": r["model"]}, r) for r in rows]
    trunc = TruncDay if group_by == "day" else TruncHour
    rows = buckets.annotate(period=trunc("bucket_start")).values("period").annotate(**USAGE_SUMS).order_by("period")
    return [usage_row({"period": row["period"].isoformat()}, row) for row in rows]


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    project: str  # team/project
    session_id: str
    pending_events: int  # stored, not folded
    error: str
    quarantined_at: datetime


def quarantined_session_count(*, project: Project) -> int:
    """How many of the project's sessions the fold quarantined."""
    return QuarantinedSession.objects.filter(project=project).count()


def quarantined_sessions(*, project: Project | None = None) -> list[QuarantineEntry]:
    """Sessions the fold quarantined (apps.metrics.quarantine), oldest first, with their unfolded events."""
    entries = QuarantinedSession.objects.select_related("project__team").order_by("quarantined_at", "id")
    if project is not None:
        entries = entries.filter(project=project)
    return [
        QuarantineEntry(
            project=f"{entry.project.team.slug}/{entry.project.slug}",
            session_id=entry.session_id,
            pending_events=PendingEvent.objects.filter(project=entry.project, session_id=entry.session_id).count(),
            error=entry.error,
            quarantined_at=entry.quarantined_at,
        )
        for entry in entries
    ]


def unpriced_calls_by_model(*, project_id: int) -> dict[tuple[str, str], int]:
    """Folded unpriced calls of the project per (provider, model)."""
    rows = (
        SessionModelAggregate.objects.filter(session__project_id=project_id, unpriced_calls__gt=0)
        .values_list("provider", "model")
        .annotate(calls=Sum("unpriced_calls"))
    )
    return {(provider, model): calls for provider, model, calls in rows}
