"""Reads on budgets: each budget's spend in its current period, from the metrics aggregates.

Spend is summed over time buckets (tokens placed in time, per project and model). Buckets carry
no developer, so a budget narrowed to a `user` sums the per-model aggregates of that developer's
sessions that started in the period instead (a session counts in the period it started in).
Never a scan of raw events.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.core.cache import cache
from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from apps.accounts.models import Project, Team
from apps.budgets.models import AlertDelivery, Budget, BudgetAlert
from apps.budgets.periods import forecast_share, period_bounds
from apps.core.errors import NotFound
from apps.metrics.models import SessionModelAggregate, UsageBucket
from apps.pricing.cost import NANO_USD_PER_USD


@dataclass(frozen=True, slots=True)
class Spend:
    cost_nanousd: int
    tokens: int  # input + output
    unpriced_tokens: int


@dataclass(frozen=True)
class BudgetStatus:
    """A budget and its spend in the period holding `now` (BUDGETS_CONTRACT.md)."""

    budget: Budget
    scope: str  # 'team' | 'project'
    project_slug: str | None
    user: str
    model: str
    period: str
    period_start: datetime
    period_end: datetime
    amount_usd: Decimal | None
    amount_tokens: int | None
    spent_usd: Decimal
    spent_tokens: int
    unpriced_tokens: int
    share: float  # spent / amount
    forecast_share: float  # the share by period_end at the period's run rate so far
    forecast_exceeds: bool
    hard: bool
    exceeded: bool  # share >= 1


def budget_spend(
    *, budget: Budget, since: datetime, until: datetime, team_project_ids: list[int] | None = None
) -> Spend:
    """What the budget's scope spent in [since, until), summed over aggregates. `team_project_ids`:
    the ids of the team's projects if the caller has them (read here otherwise)."""
    sums = {"input": Sum("input_tokens"), "output": Sum("output_tokens"), "cost": Sum("cost_nanousd"),
            "unpriced": Sum("unpriced_tokens")}  # fmt: skip
    if budget.user:
        rows = SessionModelAggregate.objects.filter(
            session__attributes__user=budget.user, session__started_at__gte=since, session__started_at__lt=until
        )
        rows = rows.filter(session__project_id=budget.project_id) if budget.project_id else rows.filter(
            session__project__team_id=budget.team_id
        )
    else:
        rows = UsageBucket.objects.filter(bucket_start__gte=since, bucket_start__lt=until)
        # The team's project ids as a list, not a join: PostgreSQL then scans the bucket index
        # per project instead of the whole table (BENCHMARKS.md, "Budgets").
        if budget.project_id:
            project_ids = [budget.project_id]
        elif team_project_ids is not None:
            project_ids = team_project_ids
        else:
            project_ids = _team_project_ids(budget.team_id)
        rows = rows.filter(project_id__in=project_ids)
    if budget.model:
        rows = rows.filter(model=budget.model)
    totals = rows.aggregate(**sums)
    return Spend(
        cost_nanousd=totals["cost"] or 0,
        tokens=(totals["input"] or 0) + (totals["output"] or 0),
        unpriced_tokens=totals["unpriced"] or 0,
    )


def _team_project_ids(team_id: int) -> list[int]:
    return list(Project.objects.filter(team_id=team_id).values_list("id", flat=True))


def share_of(*, budget: Budget, cost_nanousd: int, tokens: int) -> float:
    """Spend over the budget's amount (USD, or tokens for a token budget)."""
    if budget.amount_usd is not None:
        amount_nanousd = budget.amount_usd * NANO_USD_PER_USD
        return float(Decimal(cost_nanousd) / amount_nanousd) if amount_nanousd > 0 else 0.0
    return tokens / budget.amount_tokens if budget.amount_tokens else 0.0


def reaches(*, budget: Budget, cost_nanousd: int, tokens: int, percent: int) -> bool:
    """Whether spend is at least `percent` % of the amount, in exact arithmetic (a float share of
    0.29 is 28.999... %, and a threshold must not wait for the next call to fire)."""
    if budget.amount_usd is not None:
        return cost_nanousd * 100 >= percent * budget.amount_usd * NANO_USD_PER_USD
    return tokens * 100 >= percent * budget.amount_tokens


def budget_status(
    *, budget: Budget, now: datetime | None = None, team_project_ids: list[int] | None = None
) -> BudgetStatus:
    """The budget's spend, share and forecast in the period holding `now` (default: the present)."""
    now = now or timezone.now()
    start, end = period_bounds(budget.period, now)
    spend = budget_spend(budget=budget, since=start, until=end, team_project_ids=team_project_ids)
    share = share_of(budget=budget, cost_nanousd=spend.cost_nanousd, tokens=spend.tokens)
    forecast = forecast_share(share=share, start=start, end=end, now=now)
    return BudgetStatus(
        budget=budget,
        scope=budget.scope,
        project_slug=budget.project.slug if budget.project_id else None,
        user=budget.user,
        model=budget.model,
        period=budget.period,
        period_start=start,
        period_end=end,
        amount_usd=budget.amount_usd,
        amount_tokens=budget.amount_tokens,
        spent_usd=Decimal(spend.cost_nanousd) / NANO_USD_PER_USD,
        spent_tokens=spend.tokens,
        unpriced_tokens=spend.unpriced_tokens,
        share=share,
        forecast_share=forecast,
        forecast_exceeds=forecast > 1.0,
        hard=budget.hard,
        exceeded=reaches(budget=budget, cost_nanousd=spend.cost_nanousd, tokens=spend.tokens, percent=100),
    )


def budgets_for(*, team: Team, project: Project | None = None):
    """The team's budgets (project given: that project's plus the team-wide ones), team-wide first."""
    budgets = Budget.objects.filter(team=team).select_related("team", "project")
    if project is not None:
        budgets = budgets.filter(Q(project__isnull=True) | Q(project=project))
    return budgets.order_by("id")


def budget_statuses(*, team: Team, project: Project | None = None, now: datetime | None = None) -> list[BudgetStatus]:
    """Status of each of the team's budgets (project given: that project's plus the team-wide ones)."""
    now = now or timezone.now()
    budgets = list(budgets_for(team=team, project=project))
    # Every team-wide budget sums the same projects: their ids are read once, not once per budget.
    team_project_ids = _team_project_ids(team.pk) if any(not b.project_id and not b.user for b in budgets) else None
    statuses = [budget_status(budget=budget, now=now, team_project_ids=team_project_ids) for budget in budgets]
    # Team-wide budgets first on every database (NULL ordering differs between SQLite and PostgreSQL).
    return sorted(statuses, key=lambda s: (s.scope != "team", s.project_slug or "", s.budget.pk))


STATUSES_CACHE_S = 10


def budget_statuses_recent(*, team: Team, project: Project | None = None) -> list[BudgetStatus]:
    """budget_statuses as of at most STATUSES_CACHE_S ago, for readers that poll (the API the SDK's
    background thread reads): summing a month of a busy team's buckets takes a few hundred ms.
    A budget created, changed or deleted is seen at once (the key holds the budgets' versions)."""
    versions = Budget.objects.filter(team=team).aggregate(count=Count("id"), changed=Max("updated_at"))
    changed = versions["changed"].timestamp() if versions["changed"] else 0
    key = f"budgets:statuses:{team.pk}:{project.pk if project else 0}:{versions['count']}:{changed}"
    try:
        statuses = cache.get(key)
    except Exception:  # noqa: BLE001 - the cache (Redis) is down: compute
        statuses = None
    if statuses is None:
        statuses = budget_statuses(team=team, project=project)
        try:
            cache.set(key, statuses, timeout=STATUSES_CACHE_S)
        except Exception:  # noqa: BLE001 - the cache (Redis) is down: the next reader computes again
            pass
    return statuses


def budget_alerts(*, team: Team, project: Project | None = None, limit: int = 200) -> list[BudgetAlert]:
    """The team's alerts, newest first, with their budgets and deliveries (the alerts history)."""
    alerts = BudgetAlert.objects.filter(budget__team=team).select_related("budget__project")
    if project is not None:
        alerts = alerts.filter(Q(budget__project__isnull=True) | Q(budget__project=project))
    return list(alerts.prefetch_related("deliveries").order_by("-created_at", "-id")[:limit])


def deliveries_due(*, now: datetime, limit: int = 100) -> list[int]:
    """Ids of pending deliveries whose next attempt is due."""
    return list(
        AlertDelivery.objects.filter(status=AlertDelivery.Status.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at", "id")
        .values_list("id", flat=True)[:limit]
    )


def budget_get(*, team: Team, budget_id: int) -> Budget:
    """The team's budget with this id; NotFound otherwise, also when another team owns it."""
    budget = Budget.objects.select_related("team", "project", "created_by").filter(team=team, pk=budget_id).first()
    if budget is None:
        raise NotFound("Budget not found.")
    return budget


def budget_alert_history(*, budget: Budget, limit: int = 200) -> list[BudgetAlert]:
    """One budget's alerts, newest first, with their deliveries."""
    alerts = BudgetAlert.objects.filter(budget=budget).prefetch_related("deliveries")
    return list(alerts.order_by("-created_at", "-id")[:limit])
