"""What a digest says: a team's spend over a day or an ISO week against the period before, by
project, developer and model, the most throttled models and the unpriced tokens. Read from the
aggregates only (time buckets for projects and models, session aggregates for developers)."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from django.db.models import QuerySet
from django.utils.timezone import now as current_time

from apps.accounts.models import Membership, Project, Team
from apps.budgets.selectors import budget_statuses
from apps.digests.models import DigestSubscription, Frequency
from apps.metrics.selectors import (
    USAGE_SUMS, sessions_started_between, usage_by_developer, usage_by_project_and_model, usage_row,
)  # fmt: skip

DAY = timedelta(days=1)
WEEK = timedelta(days=7)
# How many rows a section lists; the page and the mail say how many more there were.
TOP_ROWS = 10
TOP_THROTTLED_MODELS = 5
# A budget is near its limit from 80 % of its amount, or once its run rate projects past the amount.
NEAR_LIMIT_SHARE = 0.8


@dataclass(frozen=True)
class DigestPeriod:
    """A UTC calendar day, or an ISO week (Monday to Monday), and the period of the same length before it."""

    frequency: str  # daily or weekly
    start: datetime
    end: datetime

    @property
    def previous_start(self) -> datetime:
        return self.start - (self.end - self.start)

    @property
    def label(self) -> str:
        if self.frequency == Frequency.WEEKLY:
            last_day = (self.end - DAY).date()
            return f"week of {self.start:%a %-d %b} to {last_day:%a %-d %b %Y}"
        return f"{self.start:%A %-d %B %Y}"

    @property
    def previous_label(self) -> str:
        return "the week before" if self.frequency == Frequency.WEEKLY else "the day before"


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.utc)


def digest_period_starting(*, frequency: str, day: date) -> DigestPeriod:
    """The day, or the ISO week holding `day` (snapped back to its Monday)."""
    if frequency == Frequency.WEEKLY:
        start = _midnight(day - timedelta(days=day.weekday()))
        return DigestPeriod(frequency=frequency, start=start, end=start + WEEK)
    start = _midnight(day)
    return DigestPeriod(frequency=frequency, start=start, end=start + DAY)


def digest_period_last_complete(*, frequency: str, now: datetime, send_hour_utc: int = 0) -> DigestPeriod:
    """The latest day or ISO week that ended at least `send_hour_utc` hours before `now`: the one a
    digest run at `now` sends (with send hour 7, Tuesday's from Wednesday 07:00 UTC on)."""
    shifted = (now - timedelta(hours=send_hour_utc)).astimezone(timezone.utc)
    if frequency == Frequency.WEEKLY:
        this_week = digest_period_starting(frequency=frequency, day=shifted.date())
        return DigestPeriod(frequency=frequency, start=this_week.start - WEEK, end=this_week.start)
    return digest_period_starting(frequency=frequency, day=shifted.date() - DAY)


def _change(current: float | None, previous: float | None) -> float | None:
    """The relative change from the previous period (0.25 = +25 %); None when there was nothing before."""
    if current is None or not previous:
        return None
    return (current - previous) / previous


def _compared(key: dict, current: dict, previous: dict | None) -> dict:
    now_row = usage_row(key, current)
    before = usage_row(key, previous) if previous else None
    return {
        **now_row,
        "previous_cost_usd": before["cost_usd"] if before else None,
        "previous_total_tokens": before["total_tokens"] if before else 0,
        "cost_change": _change(now_row["cost_usd"], before["cost_usd"] if before else None),
        "tokens_change": _change(now_row["total_tokens"], before["total_tokens"] if before else None),
    }


def _empty_sums() -> dict[str, int]:
    return dict.fromkeys(USAGE_SUMS, 0)


def _add(target: dict[str, int], row: dict) -> None:
    for name in USAGE_SUMS:
        target[name] += row[name] or 0


def _spend_order(row: dict) -> tuple:
    return (-(row["cost_usd"] or 0), -row["total_tokens"])


def budgets_near_limits(*, team: Team, now: datetime) -> list[dict]:
    """The team's budgets at NEAR_LIMIT_SHARE of their amount or more in their current period (as of
    `now`), or forecast past it, fullest first, each named by its scope."""
    rows = []
    for status in budget_statuses(team=team, now=now):
        if status.share < NEAR_LIMIT_SHARE and not status.forecast_exceeds:
            continue
        scope = [f"project {status.project_slug}" if status.project_slug else "whole team"]
        scope += [f"developer {status.user}"] if status.user else []
        scope += [f"model {status.model}"] if status.model else []
        rows.append({
            "name": ", ".join(scope), "period": status.period, "period_start": status.period_start,
            "amount_usd": status.amount_usd, "amount_tokens": status.amount_tokens, "spent_usd": status.spent_usd,
            "spent_tokens": status.spent_tokens, "unpriced_tokens": status.unpriced_tokens, "share": status.share,
            "forecast_share": status.forecast_share, "forecast_exceeds": status.forecast_exceeds,
            "exceeded": status.exceeded,
        })  # fmt: skip
    return sorted(rows, key=lambda row: (-row["share"], -row["forecast_share"], row["name"]))


def team_digest(*, team: Team, period: DigestPeriod, now: datetime | None = None) -> dict:
    """Every section of the team's digest for the period (the page and the mail show this dict).
    Budgets are as they stand at `now` (default: the present), in each budget's own current period."""
    projects = {project.pk: project for project in Project.objects.filter(team=team).order_by("slug")}
    periods = {"current": (period.start, period.end), "previous": (period.previous_start, period.start)}
    by_project: dict[str, dict[int, dict]] = {name: defaultdict(_empty_sums) for name in periods}
    by_model: dict[str, dict[tuple[str, str], dict]] = {name: defaultdict(_empty_sums) for name in periods}
    totals = {name: _empty_sums() for name in periods}
    for name, (since, until) in periods.items():
        for row in usage_by_project_and_model(projects=list(projects.values()), since=since, until=until):
            _add(by_project[name][row["project_id"]], row)
            _add(by_model[name][(row["provider"], row["model"])], row)
            _add(totals[name], row)
    project_rows = sorted(
        (_compared({"project": projects[pk]}, sums, by_project["previous"].get(pk))
         for pk, sums in by_project["current"].items()),
        key=lambda row: (*_spend_order(row), row["project"].slug),
    )  # fmt: skip
    model_rows = sorted(
        (_compared({"provider": provider, "model": model}, sums, by_model["previous"].get((provider, model)))
         for (provider, model), sums in by_model["current"].items()),
        key=lambda row: (*_spend_order(row), row["provider"], row["model"]),
    )  # fmt: skip
    developers = {
        name: {
            row["user"]: row
            for row in usage_by_developer(
                sessions=sessions_started_between(projects=list(projects.values()), since=since, until=until)
            )
        }
        for name, (since, until) in periods.items()
    }
    developer_rows = []
    for user, row in developers["current"].items():
        before = developers["previous"].get(user)
        developer_rows.append({
            **row, "previous_cost_usd": before["cost_usd"] if before else None,
            "previous_total_tokens": before["total_tokens"] if before else 0,
            "cost_change": _change(row["cost_usd"], before["cost_usd"] if before else None),
        })  # fmt: skip
    developer_rows.sort(key=lambda row: (*_spend_order(row), row["user"] is None, row["user"] or ""))
    throttled = sorted(
        (row for row in model_rows if row["throttle_count"]),
        key=lambda row: (-row["throttle_wait_ms"], -row["throttle_count"], row["model"]),
    )
    unpriced_models = sorted(
        (row for row in model_rows if row["unpriced_tokens"]), key=lambda row: (-row["unpriced_tokens"], row["model"])
    )
    total = _compared({}, totals["current"], totals["previous"] if any(totals["previous"].values()) else None)
    return {
        "team": team,
        "period": period,
        "totals": total,
        "projects": project_rows[:TOP_ROWS],
        "projects_more": max(0, len(project_rows) - TOP_ROWS),
        "developers": developer_rows[:TOP_ROWS],
        "developers_more": max(0, len(developer_rows) - TOP_ROWS),
        "models": model_rows[:TOP_ROWS],
        "models_more": max(0, len(model_rows) - TOP_ROWS),
        "throttled_models": throttled[:TOP_THROTTLED_MODELS],
        "unpriced_tokens": totals["current"]["unpriced_tokens"],
        "unpriced_models": unpriced_models[:TOP_ROWS],
        "has_usage": any(totals["current"].values()) or any(totals["previous"].values()),
        "budgets": budgets_near_limits(team=team, now=now or current_time()),
    }


@dataclass(frozen=True)
class DigestRecipient:
    user_id: int
    username: str
    email: str
    team: Team


def digest_recipients(*, frequency: str, username: str | None = None, team_slug: str | None = None) -> list[DigestRecipient]:
    """Every (member, team) pair whose member chose this frequency and has an address to send to."""
    subscriptions: QuerySet[DigestSubscription] = DigestSubscription.objects.filter(frequency=frequency).select_related(
        "user"
    )
    if username:
        subscriptions = subscriptions.filter(user__username=username)
    recipients = []
    for subscription in subscriptions.order_by("user__username"):
        email = subscription.email or subscription.user.email
        if not email or not subscription.user.is_active:
            continue
        memberships = Membership.objects.filter(user=subscription.user).select_related("team").order_by("team__slug")
        if team_slug:
            memberships = memberships.filter(team__slug=team_slug)
        recipients += [
            DigestRecipient(user_id=subscription.user_id, username=subscription.user.get_username(), email=email,
                            team=membership.team)
            for membership in memberships
        ]  # fmt: skip
    return recipients


def digest_subscription_for(*, user) -> DigestSubscription:
    """The user's subscription, or an unsaved one saying "off" with the account's email."""
    return DigestSubscription.objects.filter(user=user).first() or DigestSubscription(user=user, email="")
