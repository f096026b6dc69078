"""Evaluating budgets and claiming their alerts, each exactly once per (budget, period, kind, threshold).

The claim is the insert of the BudgetAlert row, unique on that key, in one transaction with the
alert's deliveries: of two evaluations racing, the second's insert waits for the first's commit
and fails, so it neither records nor sends anything. Sending happens after the commit
(apps.budgets.deliveries); a sender that dies leaves its delivery pending, and a later evaluation
sends it, under the same alert.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from apps.budgets.deliveries import deliveries_send_due
from apps.budgets.models import AlertDelivery, Budget, BudgetAlert
from apps.budgets.periods import period_bounds
from apps.budgets.selectors import BudgetStatus, budget_status, reaches
from apps.pricing.cost import NANO_USD_PER_USD

logger = logging.getLogger(__name__)

# Spend folded in a period's last seconds may be evaluated only after the period ended: the
# ended period is looked at again for this long, so a crossing at 23:59:50 is not lost at midnight.
PERIOD_EDGE_GRACE = timedelta(minutes=10)
FORECAST_THRESHOLD = 100


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What one evaluation did: budgets looked at, alerts it claimed, deliveries sent and failed."""

    budgets: int
    alerts: int
    sent: int
    failed: int


def alerts_due(*, status: BudgetStatus, period_over: bool = False) -> list[tuple[str, int]]:
    """The (kind, threshold) alerts the status calls for: every threshold spend has reached, and
    a forecast alert while the run rate projects past the amount before the period ends."""
    budget = status.budget
    cost_nanousd = int(status.spent_usd * NANO_USD_PER_USD)
    due = [
        (BudgetAlert.Kind.THRESHOLD, threshold)
        for threshold in budget.thresholds
        if reaches(budget=budget, cost_nanousd=cost_nanousd, tokens=status.spent_tokens, percent=threshold)
    ]
    if budget.forecast_warning and status.forecast_exceeds and not status.exceeded and not period_over:
        due.append((BudgetAlert.Kind.FORECAST, FORECAST_THRESHOLD))
    return due


def _deliveries_for(budget: Budget) -> list[tuple[str, str]]:
    channels = []
    if budget.email:
        channels.append((AlertDelivery.Channel.EMAIL, budget.email))
    if budget.webhook_url:
        channels.append((AlertDelivery.Channel.WEBHOOK, budget.webhook_url))
    return channels


def alert_claim(*, status: BudgetStatus, kind: str, threshold: int, now: datetime) -> BudgetAlert | None:
    """Record the alert with a pending delivery per channel; None when it exists already (claimed
    by this or another evaluation, now or earlier)."""
    budget = status.budget
    try:
        with transaction.atomic():
            alert = BudgetAlert.objects.create(
                budget=budget, period_start=status.period_start, kind=kind, threshold=threshold,
                spent_usd=status.spent_usd, spent_tokens=status.spent_tokens, share=status.share,
                forecast_share=status.forecast_share, created_at=now,
            )  # fmt: skip
            AlertDelivery.objects.bulk_create(
                [AlertDelivery(alert=alert, channel=channel, target=target, next_attempt_at=now)
                 for channel, target in _deliveries_for(budget)]
            )  # fmt: skip
    except IntegrityError:
        return None
    logger.info("Budget %s: %s alert at %s%% for the period from %s.", budget.pk, kind, threshold, status.period_start)
    return alert


def budget_evaluate(*, budget: Budget, now: datetime) -> list[BudgetAlert]:
    """Claim the alerts the budget's spend calls for, in the current period and, just after a
    period ended, in the ended one too."""
    instants = [(now, False)]
    start, _ = period_bounds(budget.period, now)
    if now - start < PERIOD_EDGE_GRACE:
        instants.insert(0, (start - timedelta(microseconds=1), True))
    claimed = []
    for instant, period_over in instants:
        status = budget_status(budget=budget, now=instant)
        due = alerts_due(status=status, period_over=period_over)
        if not due:
            continue
        # Most evaluations find their alerts claimed already: skip those without a failed insert.
        existing = set(
            BudgetAlert.objects.filter(budget=budget, period_start=status.period_start).values_list("kind", "threshold")
        )
        for kind, threshold in due:
            if (kind, threshold) not in existing:
                alert = alert_claim(status=status, kind=kind, threshold=threshold, now=now)
                if alert is not None:
                    claimed.append(alert)
    return claimed


def budgets_evaluate(*, project_id: int | None = None, now: datetime | None = None) -> Evaluation:
    """Evaluate every budget (project given: those that cover it, its own and its team's), then
    send every delivery that is due, new or left pending by an earlier send."""
    now = now or timezone.now()
    budgets = Budget.objects.select_related("team", "project").order_by("id")
    if project_id is not None:
        budgets = budgets.filter(Q(project_id=project_id) | Q(project__isnull=True, team__projects__id=project_id))
    count = alerts = 0
    for budget in budgets:
        count += 1
        try:
            alerts += len(budget_evaluate(budget=budget, now=now))
        except Exception:  # noqa: BLE001 - one budget's failure must not keep the others from alerting
            logger.exception("Evaluating budget %s failed.", budget.pk)
    sent, failed = deliveries_send_due()
    return Evaluation(budgets=count, alerts=alerts, sent=sent, failed=failed)
