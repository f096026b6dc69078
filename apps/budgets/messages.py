"""What an alert says: one sentence for chat (Slack, Teams), a subject and body for email, and the
structured webhook document around them."""
from __future__ import annotations

from decimal import Decimal

from apps.budgets.models import BudgetAlert
from apps.budgets.periods import period_bounds

PERIOD_ADJECTIVE = {"day": "daily", "week": "weekly", "month": "monthly"}


def _scope(alert: BudgetAlert) -> str:
    budget = alert.budget
    scope = f"{budget.team.slug}/{budget.project.slug}" if budget.project_id else f"team {budget.team.slug}"
    narrowed = [f"user {budget.user}" if budget.user else "", f"model {budget.model}" if budget.model else ""]
    narrowed = [part for part in narrowed if part]
    return scope + (f" ({', '.join(narrowed)})" if narrowed else "")


def _spent_of_amount(alert: BudgetAlert) -> str:
    budget = alert.budget
    if budget.amount_usd is not None:
        return f"${alert.spent_usd.quantize(Decimal('0.01'))} of ${budget.amount_usd}"
    return f"{alert.spent_tokens:,} of {budget.amount_tokens:,} tokens"


def alert_text(alert: BudgetAlert) -> str:
    """The alert in one sentence (the `text` Slack and Teams show)."""
    budget = alert.budget
    start, end = period_bounds(budget.period, alert.period_start)
    period = f"{PERIOD_ADJECTIVE[budget.period]} budget ({start:%Y-%m-%d} to {end:%Y-%m-%d} UTC)"
    if alert.kind == BudgetAlert.Kind.FORECAST:
        return (
            f"TokenSite: {_scope(alert)} is on track to exceed its {period}: {_spent_of_amount(alert)} spent, "
            f"{alert.forecast_share:.0%} forecast by the period's end."
        )
    return f"TokenSite: {_scope(alert)} reached {alert.threshold}% of its {period}: {_spent_of_amount(alert)} spent."


def alert_subject(alert: BudgetAlert) -> str:
    adjective = PERIOD_ADJECTIVE[alert.budget.period]
    if alert.kind == BudgetAlert.Kind.FORECAST:
        return f"[TokenSite] {_scope(alert)}: {adjective} budget forecast to be exceeded"
    return f"[TokenSite] {_scope(alert)}: {alert.threshold}% of the {adjective} budget spent"


def alert_email_body(alert: BudgetAlert) -> str:
    budget = alert.budget
    lines = [alert_text(alert), "", f"Budget {budget.pk}: {_spent_of_amount(alert)} ({alert.share:.1%})."]
    if budget.hard:
        lines.append("This budget is hard: SDK clients with budget_guard=True stop calling once it is spent.")
    lines += ["", "You receive this because the budget names this address for its alerts."]
    return "\n".join(lines)


def webhook_document(alert: BudgetAlert, *, timestamp: int) -> dict:
    """The webhook body: `text` for Slack and Teams, and the alert's fields for other receivers."""
    budget = alert.budget
    start, end = period_bounds(budget.period, alert.period_start)
    return {
        "text": alert_text(alert),
        "event": "budget.forecast" if alert.kind == BudgetAlert.Kind.FORECAST else "budget.threshold",
        "timestamp": timestamp,
        "alert": {
            "id": alert.pk,
            "kind": alert.kind,
            "threshold": alert.threshold,
            "period_start": start.isoformat().replace("+00:00", "Z"),
            "period_end": end.isoformat().replace("+00:00", "Z"),
            "spent_usd": str(alert.spent_usd.quantize(Decimal("0.0001"))),
            "spent_tokens": alert.spent_tokens,
            "share": round(alert.share, 4),
            "forecast_share": round(alert.forecast_share, 4),
            "created_at": alert.created_at.isoformat().replace("+00:00", "Z"),
        },
        "budget": {
            "id": budget.pk,
            "team": budget.team.slug,
            "scope": budget.scope,
            "project": budget.project.slug if budget.project_id else None,
            "user": budget.user,
            "model": budget.model,
            "period": budget.period,
            "amount_usd": str(budget.amount_usd) if budget.amount_usd is not None else None,
            "amount_tokens": budget.amount_tokens,
            "hard": budget.hard,
        },
    }
