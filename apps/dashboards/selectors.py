"""Page data for the dashboards, always for one project (or the caller's teams), from aggregates only.

Time series and model totals come from UsageBucket (tokens placed in time, DESIGN.md section 4);
rates, bursts, steps and sessions come from the session, step and model aggregates of sessions
that started in the range. Raw events are read for one session only (its timeline and CSV).
"""
from __future__ import annotations

import heapq
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Iterator

from django.contrib.auth.models import AbstractBaseUser
from django.core.paginator import Page, Paginator
from django.db.models import BigIntegerField, Count, F, Func, Max, Q, QuerySet, Sum
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import TruncDay, TruncHour
from tokensite_client.events import DEVELOPER_ATTRIBUTE, SOURCE_ATTRIBUTE

from apps.accounts.models import ApiKey, Membership, Project, Team
from apps.accounts.selectors import api_keys_for_project, teams_for_user
from apps.core.errors import ErrorCode, NotFound
from apps.ingestion.models import RawEvent
from apps.ingestion.selectors import session_raw_events
from apps.metrics.algorithms import EPOCH, epoch_us, rolling_tokens_per_second, tokens_per_second, whole_ms
from apps.metrics.buckets import MINUTE_BUCKET_RETENTION
from apps.metrics.models import SessionAggregate, SessionModelAggregate, SessionStepAggregate, UsageBucket
from apps.metrics.selectors import (
    USAGE_SUMS, context_window_pressure, priced_usd, quarantined_session_count, session_metadata, session_origin,
    sessions_started_between, unpriced_calls_by_model, usage_by_developer, usd, with_developer,
)
from apps.pricing.catalog import resolve_max_input_tokens
from apps.pricing.context_windows import context_window_overrides_for_project
from apps.pricing.selectors import price_books, price_overrides_for_project, unpriced_models_now_priced

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SESSIONS_PER_PAGE = 25
TIMELINE_MAX_EVENTS = 2000
CSV_MAX_EVENTS = 200_000
LIVE_WINDOWS = {"1m": MINUTE, "5m": 5 * MINUTE, "1h": HOUR}


def _floor(moment: datetime, step: timedelta) -> datetime:
    return EPOCH + ((moment - EPOCH) // step) * step


def _rate(timed_output_tokens: int | None, generation_us: int | None) -> float | None:
    """Session-weighted tokens per second of summed rows (the sums are None over no rows)."""
    return tokens_per_second(timed_output_tokens or 0, generation_us or 0)


# --- Time range --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeRange:
    """The `[since, until)` a project page shows, and the width of one chart bin."""

    key: str  # 24h, 7d, 30d or custom
    since: datetime
    until: datetime

    @property
    def bin(self) -> timedelta:
        span = self.until - self.since
        fine = self.since >= self.until - MINUTE_BUCKET_RETENTION  # minute buckets still exist
        if span <= timedelta(hours=36):
            return 10 * MINUTE if fine else HOUR
        if span <= timedelta(days=8):
            return HOUR
        if span <= timedelta(days=45):
            return 6 * HOUR
        return DAY


# --- Team overview -----------------------------------------------------------------------------


@dataclass
class ProjectCard:
    project: Project
    tokens: dict[str, int] = field(default_factory=lambda: {"today": 0, "7d": 0, "30d": 0})
    cost_usd: dict[str, float | None] = field(default_factory=dict)
    unpriced_tokens_30d: int = 0
    throttle_wait_ms_7d: int = 0
    throttle_count_7d: int = 0
    daily_tokens: list[int] = field(default_factory=list)  # 30 days, oldest first, for the sparkline


@dataclass
class TeamCard:
    team: Team
    role: str
    projects: list[ProjectCard]


def team_overview(*, user: AbstractBaseUser, now: datetime) -> list[TeamCard]:
    """The user's teams and projects with tokens and cost today / 7 d / 30 d (UTC days) from day totals."""
    roles = dict(Membership.objects.filter(user=user).values_list("team_id", "role"))
    teams = list(teams_for_user(user=user))
    projects = list(Project.objects.filter(team__in=teams).order_by("name", "slug"))
    today = _floor(now, DAY)
    first_day = today - 29 * DAY
    periods = {"today": today, "7d": today - 6 * DAY, "30d": first_day}
    sums: dict[int, dict[str, dict[str, int]]] = defaultdict(lambda: {p: defaultdict(int) for p in periods})
    daily: dict[int, dict[datetime, int]] = defaultdict(dict)
    rows = (
        UsageBucket.objects.filter(project__in=projects, bucket_start__gte=first_day, bucket_start__lt=now)
        .annotate(day=TruncDay("bucket_start"))
        .values("project_id", "day")
        .annotate(
            input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens"), cost_nanousd=Sum("cost_nanousd"),
            unpriced_tokens=Sum("unpriced_tokens"), throttle_wait_us=Sum("throttle_wait_us"),
            throttle_count=Sum("throttle_count"),
        )
    )  # fmt: skip
    for row in rows:
        tokens = row["input_tokens"] + row["output_tokens"]
        daily[row["project_id"]][row["day"]] = tokens
        for period, start in periods.items():
            if row["day"] >= start:
                bucket = sums[row["project_id"]][period]
                bucket["tokens"] += tokens
                for name in ("cost_nanousd", "unpriced_tokens", "throttle_wait_us", "throttle_count"):
                    bucket[name] += row[name]
    cards_by_team: dict[int, list[ProjectCard]] = defaultdict(list)
    for project in projects:
        project_sums = sums[project.pk]
        card = ProjectCard(project=project)
        for period in periods:
            totals = project_sums[period]
            card.tokens[period] = totals["tokens"]
            card.cost_usd[period] = priced_usd(totals["cost_nanousd"], totals["unpriced_tokens"], totals["tokens"])
        card.unpriced_tokens_30d = project_sums["30d"]["unpriced_tokens"]
        card.throttle_wait_ms_7d = whole_ms(project_sums["7d"]["throttle_wait_us"])
        card.throttle_count_7d = project_sums["7d"]["throttle_count"]
        card.daily_tokens = [daily[project.pk].get(first_day + day * DAY, 0) for day in range(30)]
        cards_by_team[project.team_id].append(card)
    return [TeamCard(team=team, role=roles.get(team.pk, ""), projects=cards_by_team[team.pk]) for team in teams]


# --- Project dashboard -------------------------------------------------------------------------

_SUM_NAMES = tuple(USAGE_SUMS)


class _EpochBin(Func):
    """The index of the epoch-aligned bin of `seconds` width that holds a datetime (an integer,
    `(moment - 1970-01-01) // seconds`), so the database sums a chart's bins. Grouping by the
    bucket's minute instead sent ~4,300 rows (one per minute and model) for a 24 h page and parsed
    each one's datetime in Python: half of that page's Python time (BENCHMARKS.md, "Dashboards")."""

    output_field = BigIntegerField()

    def __init__(self, expression, *, seconds: int):
        super().__init__(expression)
        self.seconds = int(seconds)

    def as_postgresql(self, compiler, connection, **extra_context):
        # date_part's double precision, not EXTRACT's numeric: twice as fast over a week of minute
        # buckets, and exact for them (whole seconds since the epoch, far below 2**53).
        sql, params = compiler.compile(self.source_expressions[0])
        return f"FLOOR(date_part('epoch', {sql}) / {self.seconds})::bigint", params

    def as_sqlite(self, compiler, connection, **extra_context):
        # Datetimes are stored as UTC text; strftime's format is a parameter (a literal % would
        # collide with the placeholders).
        sql, params = compiler.compile(self.source_expressions[0])
        return f"(CAST(strftime(%s, {sql}) AS INTEGER) / {self.seconds})", ("%s", *params)


def _bucket_rows(*, project: Project, time_range: TimeRange) -> list[dict]:
    """Bucket sums per (chart bin, provider, model) in the range: one query feeds charts, model
    table and totals. `bin` is the bin's index since the epoch (`_EpochBin`)."""
    return list(
        UsageBucket.objects.filter(
            # Every granularity (minute buckets for the last 7 days, hour buckets before), named so
            # that PostgreSQL can use the (project, granularity, bucket_start) index for a short range.
            project=project, granularity__in=UsageBucket.Granularity.values,
            bucket_start__gte=time_range.since, bucket_start__lt=time_range.until,
        )  # fmt: skip
        .annotate(bin=_EpochBin("bucket_start", seconds=int(time_range.bin.total_seconds())))
        .values("bin", "provider", "model")
        .annotate(**USAGE_SUMS)
        .order_by()
    )


def _time_series(rows: list[dict], time_range: TimeRange) -> dict:
    step = time_range.bin
    first = _floor(time_range.since, step)
    first_bin = (first - EPOCH) // step
    count = max(1, -(-(time_range.until - first) // step))
    series = {name: [0] * count for name in _SUM_NAMES}
    for row in rows:
        index = row["bin"] - first_bin
        if 0 <= index < count:
            for name in _SUM_NAMES:
                series[name][index] += row[name] or 0
    return {
        "bin_seconds": int(step.total_seconds()),
        "labels": [(first + index * step).isoformat().replace("+00:00", "Z") for index in range(count)],
        "input_tokens": series["input_tokens"],
        "output_tokens": series["output_tokens"],
        "calls": series["calls"],
        "cost_usd": [usd(value) for value in series["cost_nanousd"]],
        "unpriced_tokens": series["unpriced_tokens"],
        "throttle_wait_s": [value / 1_000_000 for value in series["throttle_wait_us"]],
        "throttle_count": series["throttle_count"],
    }


def _sessions_in_range(*, project: Project, time_range: TimeRange) -> QuerySet[SessionAggregate]:
    return SessionAggregate.objects.filter(
        project=project, started_at__gte=time_range.since, started_at__lt=time_range.until
    )


def _model_table(*, rows: list[dict], model_rows: list[dict]) -> list[dict]:
    totals: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(_SUM_NAMES, 0))
    for row in rows:
        target = totals[(row["provider"], row["model"])]
        for name in _SUM_NAMES:
            target[name] += row[name] or 0
    rates = {(row["provider"], row["model"]): _rate(row["timed"], row["generation"]) for row in model_rows}
    table = []
    for (provider, model), sums in totals.items():
        total_tokens = sums["input_tokens"] + sums["output_tokens"]
        table.append({
            "provider": provider, "model": model, "calls": sums["calls"],
            "input_tokens": sums["input_tokens"], "output_tokens": sums["output_tokens"], "total_tokens": total_tokens,
            "cost_usd": priced_usd(sums["cost_nanousd"], sums["unpriced_tokens"], total_tokens),
            "unpriced_tokens": sums["unpriced_tokens"], "tokens_per_second": rates.get((provider, model)),
            "throttle_count": sums["throttle_count"], "throttle_wait_ms": whole_ms(sums["throttle_wait_us"]),
        })  # fmt: skip
    return sorted(table, key=lambda row: (-row["total_tokens"], row["provider"], row["model"]))


_PRESSURE_SUMS = {
    "calls": Sum("calls"), "known_calls": Sum("context_known_calls"), "max_share": Max("context_max_share"),
    "calls_over_80": Sum("context_calls_over_80"), "calls_over_95": Sum("context_calls_over_95"),
}  # fmt: skip


def _in_range(*, project: Project, time_range: TimeRange) -> dict:
    """Filter of step and model aggregates: those of the sessions that started in the range."""
    return {"session__project": project, "session__started_at__gte": time_range.since,
            "session__started_at__lt": time_range.until}  # fmt: skip


def _step_rows(*, project: Project, time_range: TimeRange) -> list[dict]:
    """Per step: the step table's sums and the context-window sums, in one grouped query (the two
    tables once ran the same join and grouping twice, BENCHMARKS.md "Dashboards")."""
    return list(
        SessionStepAggregate.objects.filter(**_in_range(project=project, time_range=time_range))
        .values("step")
        .annotate(
            sessions=Count("session_id"), input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens"),
            cost_nanousd=Sum("cost_nanousd"), unpriced_tokens=Sum("unpriced_tokens"),
            unpriced_calls=Sum("unpriced_calls"), timed=Sum("timed_output_tokens"), generation=Sum("generation_us"),
            throttle_count=Sum("throttle_count"), throttle_wait_us=Sum("throttle_wait_us"), **_PRESSURE_SUMS,
        )
        .order_by()
    )  # fmt: skip


def _model_rows(*, project: Project, time_range: TimeRange) -> list[dict]:
    """Per (provider, model): generation sums for the model table's rate and the context-window sums."""
    return list(
        SessionModelAggregate.objects.filter(**_in_range(project=project, time_range=time_range))
        .values("provider", "model")
        .annotate(timed=Sum("timed_output_tokens"), generation=Sum("generation_us"), **_PRESSURE_SUMS)
        .order_by()
    )


def _step_table(rows: list[dict]) -> list[dict]:
    table = []
    for row in rows:
        total_tokens = row["input_tokens"] + row["output_tokens"]
        priced_calls = row["calls"] - row["unpriced_calls"]
        table.append({
            "step": row["step"], "sessions": row["sessions"], "calls": row["calls"],
            "input_tokens": row["input_tokens"], "output_tokens": row["output_tokens"], "total_tokens": total_tokens,
            "avg_tokens_per_call": round(total_tokens / row["calls"]) if row["calls"] else None,
            "cost_usd": priced_usd(row["cost_nanousd"], row["unpriced_tokens"], total_tokens),
            # Averaged over priced calls only, so unpriced calls do not dilute it towards $0.
            "avg_cost_per_call_usd": usd(row["cost_nanousd"] // priced_calls) if priced_calls > 0 else None,
            "unpriced_tokens": row["unpriced_tokens"], "tokens_per_second": _rate(row["timed"], row["generation"]),
            "throttle_count": row["throttle_count"], "throttle_wait_ms": whole_ms(row["throttle_wait_us"]),
        })  # fmt: skip
    return sorted(table, key=lambda row: (-(row["cost_usd"] or 0), -row["total_tokens"], row["step"]))


def _pressure_rows(rows, keys: tuple[str, ...]) -> list[dict]:
    table = [
        {**{key: row[key] for key in keys}, "calls": row["calls"], "context_window": context_window_pressure(
            calls=row["calls"], known_calls=row["known_calls"], max_share=row["max_share"],
            calls_over_80=row["calls_over_80"], calls_over_95=row["calls_over_95"],
        )}
        for row in rows if row["calls"]
    ]  # fmt: skip
    # Fullest windows first; unknown ones last.
    return sorted(table, key=lambda row: (-(row["context_window"]["max_share"] or -1), *(row[key] for key in keys)))


def context_window_tables(*, step_rows: list[dict], model_rows: list[dict]) -> dict:
    """Per step and per model, over the sessions that started in the range: the largest share of
    a call's input window, calls above 80% and 95%, and how many calls had no known window."""
    return {"steps": _pressure_rows(step_rows, ("step",)), "models": _pressure_rows(model_rows, ("provider", "model"))}


SESSION_SORTS = {
    "started": F("started_at"),
    "tokens": F("tokens_total"),
    "cost": F("cost_nanousd"),
    "calls": F("calls"),
    "burst": F("burst_1s"),
    "throttle": F("throttle_wait_us"),
}


def _sorted_sessions(sessions: QuerySet[SessionAggregate], sort: str) -> QuerySet[SessionAggregate]:
    """Sessions sorted by a SESSION_SORTS key (`-` prefix for descending; unknown keys: newest first)."""
    sessions = sessions.annotate(tokens_total=F("input_tokens") + F("output_tokens"))
    key = sort.lstrip("-")
    expression = SESSION_SORTS.get(key, SESSION_SORTS["started"])
    descending = sort.startswith("-") or key not in SESSION_SORTS
    ordering = expression.desc(nulls_last=True) if descending else expression.asc(nulls_first=True)
    return sessions.order_by(ordering, "-id" if descending else "id")


def sessions_page(
    *, project: Project, time_range: TimeRange, search: str = "", sort: str = "-started", page: int | str = 1,
    developer: str = "", source: str = "",
) -> Page:
    """One page of the project's sessions that started in the range, searchable by id and attribute
    text, filtered by developer and source, sorted by a SESSION_SORTS key (`-` prefix for descending)."""
    sessions = _sessions_in_range(project=project, time_range=time_range)
    if search:
        sessions = sessions.filter(Q(session_id__icontains=search) | Q(attributes__icontains=search))
    if developer:
        sessions = sessions.filter(**{f"attributes__{DEVELOPER_ATTRIBUTE}": developer})
    if source:
        sessions = sessions.filter(**{f"attributes__{SOURCE_ATTRIBUTE}": source})
    result = Paginator(_sorted_sessions(sessions, sort), SESSIONS_PER_PAGE).get_page(page)
    result.object_list = [session_row(session) for session in result.object_list]
    return result


def session_row(session: SessionAggregate) -> dict:
    return {
        "session_id": session.session_id,
        "started_at": session.started_at,
        "ended_at": session.ended_at,
        "calls": session.calls,
        "total_tokens": session.total_tokens,
        "cost_usd": priced_usd(session.cost_nanousd, session.unpriced_tokens, session.total_tokens),
        "unpriced_tokens": session.unpriced_tokens,
        "tokens_per_second": session.tokens_per_second,
        "burst_1s": session.burst_1s,
        "throttle_wait_ms": whole_ms(session.throttle_wait_us),
        "attributes": session.attributes or {},
        **session_origin(session.attributes),
    }


def _person_row(row: dict) -> dict:
    """A usage_by_developer row under the pages' name for its key: `developer` ("" when not named)."""
    person = {key: value for key, value in row.items() if key != "user"}
    person["developer"] = row["user"] or ""
    return person


def people_table(*, project: Project, time_range: TimeRange) -> list[dict]:
    """Per developer (the session's `user`), over the sessions that started in the range: sessions,
    calls, tokens, cost and throttle wait. Sessions without a developer form one row of their own."""
    sessions = _sessions_in_range(project=project, time_range=time_range)
    return [_person_row(row) for row in usage_by_developer(sessions=sessions)]


# --- People page (the team's developers across its projects) -------------------------------------

# Sort keys of the People page, each with how to read it from a row (costs: unpriced sorts lowest).
PEOPLE_SORTS = {
    "developer": lambda row: row["developer"].casefold(),
    "sessions": lambda row: row["sessions"],
    "calls": lambda row: row["calls"],
    "tokens": lambda row: row["total_tokens"],
    "cost": lambda row: -1.0 if row["cost_usd"] is None else row["cost_usd"],
    "unpriced": lambda row: row["unpriced_tokens"],
    "throttle": lambda row: row["throttle_wait_ms"],
}
# A sparkline shows hours for a range up to two days, else days.
SPARKLINE_HOURLY_UP_TO = timedelta(days=2)


def team_people(*, team: Team, time_range: TimeRange, sort: str = "-cost") -> list[dict]:
    """The People page: per developer across the team's projects, over the sessions that started in
    the range: sessions, calls, tokens, cost, unpriced tokens, throttle wait, the agents (sources)
    and models used, and tokens per hour or day for a sparkline. Read from session aggregates only."""
    sessions = sessions_started_between(projects=Project.objects.filter(team=team), since=time_range.since,
                                        until=time_range.until)  # fmt: skip
    rows = {row["developer"]: row for row in (_person_row(row) for row in usage_by_developer(sessions=sessions))}
    for row in rows.values():
        row.update(sources=set(), models={})
    named = with_developer(sessions)
    for developer, source in (
        named.annotate(source=KeyTextTransform(SOURCE_ATTRIBUTE, "attributes"))
        .exclude(source__isnull=True)
        .values_list("developer", "source").distinct().order_by()
    ):  # fmt: skip
        if source:
            rows[developer or ""]["sources"].add(source)
    models = (
        SessionModelAggregate.objects.filter(session__in=sessions)
        .annotate(developer=KeyTextTransform(DEVELOPER_ATTRIBUTE, "session__attributes"))
        .values("developer", "model")
        .annotate(tokens=Sum(F("input_tokens") + F("output_tokens")))
        .order_by()
    )
    for model in models:
        used = rows[model["developer"] or ""]["models"]
        used[model["model"]] = used.get(model["model"], 0) + (model["tokens"] or 0)
    step = HOUR if time_range.until - time_range.since <= SPARKLINE_HOURLY_UP_TO else DAY
    first = _floor(time_range.since, step)
    count = max(1, -(-(time_range.until - first) // step))
    for row in rows.values():
        row["spark"] = [0] * count
    trunc = TruncHour if step == HOUR else TruncDay
    for developer, period, tokens in (
        named.annotate(period=trunc("started_at"))
        .values("developer", "period").annotate(tokens=Sum(F("input_tokens") + F("output_tokens")))
        .values_list("developer", "period", "tokens").order_by()
    ):  # fmt: skip
        index = (period - first) // step
        if 0 <= index < count:
            rows[developer or ""]["spark"][index] += tokens or 0
    for row in rows.values():
        row["sources"] = sorted(row["sources"])
        # Most tokens first: the model a developer leans on leads the list.
        row["models"] = [name or "(no model)" for name, _ in sorted(row["models"].items(), key=lambda m: (-m[1], m[0]))]
        row["spark_step"] = "hour" if step == HOUR else "day"
    key = sort.lstrip("-")
    read = PEOPLE_SORTS.get(key, PEOPLE_SORTS["cost"])
    descending = sort.startswith("-") or key not in PEOPLE_SORTS
    # Ties go by name, so the order is stable whichever way the column sorts.
    table = sorted(rows.values(), key=lambda row: row["developer"].casefold())
    return sorted(table, key=read, reverse=descending)


def developer_sessions_page(
    *, team: Team, developer: str, time_range: TimeRange, sort: str = "-started", page: int | str = 1
) -> Page:
    """One page of one developer's sessions across the team's projects, started in the range."""
    sessions = sessions_started_between(projects=Project.objects.filter(team=team), since=time_range.since,
                                        until=time_range.until)  # fmt: skip
    sessions = sessions.filter(**{f"attributes__{DEVELOPER_ATTRIBUTE}": developer})
    sessions = sessions.select_related("project", "project__team")
    result = Paginator(_sorted_sessions(sessions, sort), SESSIONS_PER_PAGE).get_page(page)
    result.object_list = [{**session_row(session), "project": session.project} for session in result.object_list]
    return result


def session_sources(*, project: Project, time_range: TimeRange) -> list[str]:
    """The sources (agent or service names) of the sessions that started in the range, for the filter."""
    names = (
        _sessions_in_range(project=project, time_range=time_range)
        .annotate(source=KeyTextTransform(SOURCE_ATTRIBUTE, "attributes"))
        .exclude(source__isnull=True)
        .values_list("source", flat=True)
        .distinct()
        .order_by()
    )
    return sorted(name for name in names if name)


def project_dashboard(*, project: Project, time_range: TimeRange) -> dict:
    """Headline figures, chart series, model and step tables of the project over the range."""
    rows = _bucket_rows(project=project, time_range=time_range)
    totals = dict.fromkeys(_SUM_NAMES, 0)
    for row in rows:
        for name in _SUM_NAMES:
            totals[name] += row[name] or 0
    total_tokens = totals["input_tokens"] + totals["output_tokens"]
    session_stats = _sessions_in_range(project=project, time_range=time_range).aggregate(
        sessions=Count("id"), timed=Sum("timed_output_tokens"), generation=Sum("generation_us"),
        burst_1s=Max("burst_1s"), burst_60s=Max("burst_60s"), peak_concurrency=Max("peak_concurrency"),
    )  # fmt: skip
    step_rows = _step_rows(project=project, time_range=time_range)
    model_rows = _model_rows(project=project, time_range=time_range)
    headline = {
        "input_tokens": totals["input_tokens"],
        "output_tokens": totals["output_tokens"],
        "total_tokens": total_tokens,
        "calls": totals["calls"],
        "cost_usd": priced_usd(totals["cost_nanousd"], totals["unpriced_tokens"], total_tokens),
        "unpriced_tokens": totals["unpriced_tokens"],
        "tokens_per_second": _rate(session_stats["timed"], session_stats["generation"]),
        "burst_1s": session_stats["burst_1s"] or 0.0,
        "peak_tokens_per_minute": round((session_stats["burst_60s"] or 0.0) * 60),
        "peak_concurrency": session_stats["peak_concurrency"] or 0,
        "throttle_count": totals["throttle_count"],
        "throttle_wait_ms": whole_ms(totals["throttle_wait_us"]),
        "sessions": session_stats["sessions"],
    }
    return {
        "headline": headline,
        "series": _time_series(rows, time_range),
        "models": _model_table(rows=rows, model_rows=model_rows),
        "steps": _step_table(step_rows),
        "people": people_table(project=project, time_range=time_range),
        "context_windows": context_window_tables(step_rows=step_rows, model_rows=model_rows),
        "sources": session_sources(project=project, time_range=time_range),
        "has_data": bool(rows) or session_stats["sessions"] > 0 or project_has_events(project=project),
    }


def project_has_events(*, project: Project) -> bool:
    return SessionAggregate.objects.filter(project=project).exists()


def live_rates(*, project: Project, now: datetime) -> dict:
    """Rolling tokens/s over the last 1 min, 5 min and 1 h, and per-minute rates of the last hour."""
    first_minute = _floor(now - HOUR, MINUTE)
    per_minute = dict(
        UsageBucket.objects.filter(
            project=project,
            granularity=UsageBucket.Granularity.MINUTE,
            bucket_start__gte=first_minute,
            bucket_start__lte=now,
        )
        .values("bucket_start")
        .annotate(tokens=Sum(F("input_tokens") + F("output_tokens")))
        .values_list("bucket_start", "tokens")
        .order_by()
    )
    now_us = epoch_us(now)
    buckets = [(epoch_us(start), tokens) for start, tokens in per_minute.items()]
    minutes = [first_minute + index * MINUTE for index in range(61)]
    return {
        "now": now.isoformat().replace("+00:00", "Z"),
        "rates": {
            name: rolling_tokens_per_second(buckets, now_us=now_us, window_us=window // timedelta(microseconds=1))
            for name, window in LIVE_WINDOWS.items()
        },
        "per_minute": {
            "labels": [minute.isoformat().replace("+00:00", "Z") for minute in minutes],
            "tokens_per_second": [
                per_minute.get(minute, 0) / max(1.0, min(60.0, (now - minute).total_seconds())) for minute in minutes
            ],
        },
    }


# --- Session page ------------------------------------------------------------------------------


def session_page(*, project: Project, session_id: str) -> dict:
    """The session page: the metadata document (so the page shows its numbers) and the call timeline."""
    document = session_metadata(project=project, session_id=session_id)
    return {"document": document, "timeline": session_timeline(project=project, session_id=session_id)}


def _session_events(*, project: Project, session_id: str, started_at: datetime | None) -> QuerySet[RawEvent]:
    """The session's raw rows in time order; `started_at` (its aggregate's) bounds the months read."""
    return session_raw_events(project_id=project.pk, session_id=session_id, started_at=started_at).order_by(
        "timestamp", "id"
    )


def _session_started_at(*, project: Project, session_id: str) -> datetime | None:
    return SessionAggregate.objects.filter(project=project, session_id=session_id).values_list(
        "started_at", flat=True
    ).first()


def session_timeline(*, project: Project, session_id: str, limit: int = TIMELINE_MAX_EVENTS) -> dict:
    """The session's first `limit` calls and throttle waits as bars `[start_ms, end_ms)` from the first
    event, packed into lanes so calls in flight at once sit on separate lanes (concurrency shows)."""
    session_events = _session_events(
        project=project, session_id=session_id, started_at=_session_started_at(project=project, session_id=session_id)
    )
    events = list(
        session_events.values_list(
            "type", "timestamp", "duration_ms", "wait_ms", "step", "model", "input_tokens", "output_tokens",
            "attempt", "status_code",
        )[: limit + 1]
    )  # fmt: skip
    truncated = len(events) > limit
    events = events[:limit]
    total = session_events.count() if truncated else len(events)
    origin = events[0][1] if events else None
    busy: list[tuple[float, int]] = []  # min-heap of (end_ms, lane) of the lanes in use
    free: list[int] = []  # min-heap of lanes free again: a new bar takes the lowest one
    lanes = 0
    bars = []
    for kind, timestamp, duration_ms, wait_ms, step, model, input_tokens, output_tokens, attempt, status in events:
        start_ms = (timestamp - origin) / timedelta(milliseconds=1)
        end_ms = start_ms + (wait_ms if kind == RawEvent.Type.THROTTLE else duration_ms)
        while busy and busy[0][0] <= start_ms:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            lane = heapq.heappop(free)
        else:
            lane, lanes = lanes, lanes + 1
        heapq.heappush(busy, (max(end_ms, start_ms), lane))
        bar = {"lane": lane, "start_ms": round(start_ms, 3), "end_ms": round(end_ms, 3), "type": kind, "step": step,
               "model": model}  # fmt: skip
        if kind == RawEvent.Type.THROTTLE:
            bar.update(attempt=attempt, status_code=status)
        else:
            bar.update(input_tokens=input_tokens, output_tokens=output_tokens)
        bars.append(bar)
    return {
        "origin": origin.isoformat().replace("+00:00", "Z") if origin else None,
        "lanes": lanes,
        "bars": bars,
        "shown": len(bars),
        "total": total,
        "truncated": truncated,
    }


CSV_COLUMNS = (
    "type", "timestamp", "end_at", "duration_ms", "time_to_first_token_ms", "step", "provider", "model", "call_id",
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "tool_tokens", "thought_tokens",
    "cost_usd", "price_source", "token_source", "status_code", "attempt", "wait_ms", "retry_after_ms", "event_id",
)  # fmt: skip
_CSV_TEXT_COLUMNS = {"step", "provider", "model", "call_id", "price_source"}
# OWASP's CSV-injection guidance: a spreadsheet runs a cell as a formula (or DDE command) when it
# starts with one of these, and some read the full-width forms as their ASCII twins.
_CSV_FORMULA_STARTS = frozenset("=+-@|＝＋－＠｜")
# Before it looks for one, a spreadsheet may skip leading spaces, control characters and quotes,
# and a separator of the reader's locale (";", tab, "|") starts a new cell inside the text.
_CSV_QUOTES = frozenset("'\"‘’“”＇＂")
_CSV_SEPARATORS = re.compile(r"[,;\t\r\n|｜]")


def csv_text_defuse(text: str) -> str:
    """A client-sent text made inert in a spreadsheet: prefixed with a single quote when it starts
    with a control character, or any cell a spreadsheet could make of it starts a formula."""
    if not text:
        return text
    cells = [text, *_CSV_SEPARATORS.split(text)]
    if not text[0].isprintable() or any(_starts_a_formula(cell) for cell in cells):
        return "'" + text
    return text


def _starts_a_formula(text: str) -> bool:
    for char in text:
        if char.isspace() or not char.isprintable() or char in _CSV_QUOTES:
            continue
        return char in _CSV_FORMULA_STARTS
    return False


def _csv_cell(name: str, value) -> object:
    if value is None:
        return ""
    if name in ("timestamp", "end_at"):
        return value.isoformat().replace("+00:00", "Z")
    if name == "cost_usd":
        return f"{usd(value):.9f}"
    if name in _CSV_TEXT_COLUMNS:
        return csv_text_defuse(str(value))
    return value


# Per session, repeated on each row: whether retention deleted raw events of the session (the
# rows before that instant are gone) and whether its peaks were computed without them.
CSV_SESSION_COLUMNS = ("session_raw_pruned_through", "session_peaks_approximate")


def session_csv_rows(*, project: Project, session_id: str, limit: int = CSV_MAX_EVENTS) -> Iterator[list]:
    """The header, then one row per call (usage) and per throttle wait of the session, in time order."""
    yield [*CSV_COLUMNS, *CSV_SESSION_COLUMNS]
    started_at, pruned_through, approximate = (
        SessionAggregate.objects.filter(project=project, session_id=session_id)
        .values_list("started_at", "raw_pruned_through", "peaks_approximate")
        .first()
    ) or (None, None, False)
    session_cells = [_csv_cell("timestamp", pruned_through), "true" if approximate else "false"]
    fields = [name if name != "cost_usd" else "cost_nanousd" for name in CSV_COLUMNS]
    events = _session_events(project=project, session_id=session_id, started_at=started_at)
    events = events.values_list(*fields)[:limit]
    for values in events.iterator(chunk_size=2000):
        yield [*(_csv_cell(name, value) for name, value in zip(CSV_COLUMNS, values)), *session_cells]


def session_exists(*, project: Project, session_id: str) -> bool:
    return SessionAggregate.objects.filter(project=project, session_id=session_id).exists()


# --- Settings page -----------------------------------------------------------------------------


def project_settings(*, project: Project) -> dict:
    """API keys, price overrides (with history), the price books, the unpriced models they now
    price, the team's members and the count of quarantined sessions for the settings page."""
    overrides = list(price_overrides_for_project(project=project).select_related("created_by"))
    known_models = sorted(
        set(
            UsageBucket.objects.filter(project=project).exclude(model="").values_list("model", flat=True).distinct()
        )
    )
    return {
        "api_keys": list(api_keys_for_project(project=project)),
        "price_overrides": overrides,
        "known_models": known_models,
        "members": list(
            Membership.objects.filter(team_id=project.team_id).select_related("user").order_by("user__username")
        ),
        "scopes": ApiKey.Scope.choices,
        "roles": Membership.Role.choices,
        "quarantined_sessions": quarantined_session_count(project=project),
        "price_books": price_books(),
        "unpriced_now_priced": unpriced_models_now_priced(
            project=project, unpriced_calls=unpriced_calls_by_model(project_id=project.pk)
        ),
    }


def context_window_overrides(*, project: Project) -> list[dict]:
    """The project's context window overrides, each beside the window litellm's map gives the model."""
    return [
        {"model": override.model, "max_input_tokens": override.max_input_tokens,
         "litellm_max_input_tokens": resolve_max_input_tokens(override.model), "updated_at": override.updated_at,
         "updated_by": override.updated_by.username if override.updated_by else None}
        for override in context_window_overrides_for_project(project=project).select_related("updated_by")
    ]  # fmt: skip


def team_membership_get(*, team: Team, membership_id: int | str) -> Membership:
    """A membership of this team (never another team's), or NotFound."""
    membership = Membership.objects.filter(team=team, pk=membership_id).select_related("user").first()
    if membership is None:
        raise NotFound("No such member of this team.", code=ErrorCode.MEMBER_NOT_FOUND)
    return membership
