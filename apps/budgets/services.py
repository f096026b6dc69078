"""Budget writes: creating, changing and deleting budgets, with the checks every caller shares
(the settings pages and `manage.py budget_create`). Evaluation and delivery of alerts live in
apps.budgets.alerts and apps.budgets.deliveries."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import transaction

from apps.accounts.models import Project, Team
from apps.budgets.models import Budget
from apps.budgets.webhooks import WebhookHostUnresolved, webhook_target_check
from apps.core.errors import ApplicationError, ErrorCode

MAX_THRESHOLD_PERCENT = 1000
MAX_AMOUNT_USD = Decimal("999999999999.99")


class InvalidBudget(ApplicationError):
    code = ErrorCode.INVALID_BUDGET


def _amounts_check(amount_usd, amount_tokens) -> tuple[Decimal | None, int | None]:
    if (amount_usd is None) == (amount_tokens is None):
        raise InvalidBudget("Give exactly one amount: in USD, or in tokens (for models nobody prices).")
    if amount_usd is not None:
        try:
            amount = Decimal(str(amount_usd))
        except InvalidOperation as exc:
            raise InvalidBudget(f"The USD amount {amount_usd!r} is not a number.") from exc
        if not amount.is_finite() or amount <= 0 or amount > MAX_AMOUNT_USD:
            raise InvalidBudget(f"The USD amount must be above 0 and at most {MAX_AMOUNT_USD}, not {amount_usd}.")
        if amount != amount.quantize(Decimal("0.01")):
            raise InvalidBudget(f"The USD amount has at most two decimals (cents), not {amount_usd}.")
        return amount.quantize(Decimal("0.01")), None
    if isinstance(amount_tokens, bool) or not isinstance(amount_tokens, int) or amount_tokens <= 0:
        raise InvalidBudget(f"The token amount must be a whole number above 0, not {amount_tokens!r}.")
    if amount_tokens >= 2**63:
        raise InvalidBudget("The token amount is too large.")
    return None, amount_tokens


def thresholds_check(thresholds) -> list[int]:
    """Threshold percents, ascending and without repeats; each a whole number in 1..1000."""
    if thresholds is None:
        return list(Budget.DEFAULT_THRESHOLDS)
    if not isinstance(thresholds, (list, tuple)) or not thresholds:
        raise InvalidBudget("Give at least one threshold percent, such as 50,80,100.")
    for value in thresholds:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_THRESHOLD_PERCENT:
            raise InvalidBudget(f"A threshold is a whole percent from 1 to {MAX_THRESHOLD_PERCENT}, not {value!r}.")
    return sorted(set(thresholds))


def _fields_check(
    *, team: Team, project: Project | None, user: str, model: str, period: str, amount_usd, amount_tokens,
    thresholds, webhook_url: str, email: str,
) -> dict:  # fmt: skip
    if project is not None and project.team_id != team.pk:
        raise InvalidBudget(f"Project {project.slug!r} is not a project of team {team.slug!r}.")
    if period not in Budget.Period.values:
        raise InvalidBudget(f"The period is one of {', '.join(Budget.Period.values)}, not {period!r}.")
    user, model = (user or "").strip(), (model or "").strip()
    if len(user) > 200 or len(model) > 200:
        raise InvalidBudget("A user or a model name is at most 200 characters.")
    usd, tokens = _amounts_check(amount_usd, amount_tokens)
    webhook_url = (webhook_url or "").strip()
    if webhook_url:
        if len(webhook_url) > 2000:
            raise InvalidBudget("The webhook URL is at most 2000 characters.", code=ErrorCode.INVALID_WEBHOOK_URL)
        try:
            webhook_target_check(webhook_url)
        except WebhookHostUnresolved:
            pass  # may be this host's DNS only; each send checks the address again
    email = (email or "").strip()
    if email:
        try:
            validate_email(email)
        except DjangoValidationError as exc:
            raise InvalidBudget(f"{email!r} is not an email address.") from exc
    return {
        "team": team, "project": project, "user": user, "model": model, "period": period, "amount_usd": usd,
        "amount_tokens": tokens, "thresholds": thresholds_check(thresholds), "webhook_url": webhook_url,
        "email": email,
    }  # fmt: skip


def budget_create(
    *,
    team: Team,
    period: str,
    project: Project | None = None,
    user: str = "",
    model: str = "",
    amount_usd: Decimal | str | None = None,
    amount_tokens: int | None = None,
    thresholds: list[int] | None = None,
    forecast_warning: bool = True,
    hard: bool = False,
    webhook_url: str = "",
    email: str = "",
    created_by: AbstractBaseUser | None = None,
) -> Budget:
    """A new budget of the team (project given: of that project), checked; InvalidBudget otherwise."""
    fields = _fields_check(
        team=team, project=project, user=user, model=model, period=period, amount_usd=amount_usd,
        amount_tokens=amount_tokens, thresholds=thresholds, webhook_url=webhook_url, email=email,
    )  # fmt: skip
    return Budget.objects.create(**fields, forecast_warning=forecast_warning, hard=hard, created_by=created_by)


def budget_update(*, budget: Budget, **changes) -> Budget:
    """Change a budget's fields (the same names as budget_create), with the same checks."""
    allowed = {"project", "user", "model", "period", "amount_usd", "amount_tokens", "thresholds", "forecast_warning",
               "hard", "webhook_url", "email"}  # fmt: skip
    unknown = set(changes) - allowed
    if unknown:
        raise InvalidBudget(f"Unknown budget fields: {', '.join(sorted(unknown))}.")
    current = {name: getattr(budget, name) for name in allowed}
    if "amount_usd" in changes and changes["amount_usd"] is not None:
        current["amount_tokens"] = None
    if "amount_tokens" in changes and changes["amount_tokens"] is not None:
        current["amount_usd"] = None
    merged = {**current, **changes}
    fields = _fields_check(
        team=budget.team, project=merged["project"], user=merged["user"], model=merged["model"],
        period=merged["period"], amount_usd=merged["amount_usd"], amount_tokens=merged["amount_tokens"],
        thresholds=merged["thresholds"], webhook_url=merged["webhook_url"], email=merged["email"],
    )  # fmt: skip
    fields.pop("team")
    with transaction.atomic():
        for name, value in {**fields, "forecast_warning": merged["forecast_warning"], "hard": merged["hard"]}.items():
            setattr(budget, name, value)
        budget.save()
    return budget


def budget_delete(*, budget: Budget) -> None:
    """Delete a budget with its alerts and their deliveries."""
    budget.delete()
