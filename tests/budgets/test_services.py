"""Budget changes and the alerts history the pages build on."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from apps.budgets.alerts import budgets_evaluate
from apps.budgets.models import AlertDelivery, Budget, BudgetAlert
from apps.budgets.selectors import budget_alerts
from apps.budgets.services import InvalidBudget, budget_create, budget_delete, budget_update
from tests.budgets.conftest import spend

pytestmark = pytest.mark.django_db


def test_update_switches_the_amount_kind_and_keeps_the_checks(team, project):
    budget = budget_create(team=team, period="month", amount_usd="10")
    budget_update(budget=budget, amount_tokens=5000, thresholds=[90, 10], project=project, hard=True)
    budget.refresh_from_db()
    assert (budget.amount_usd, budget.amount_tokens, budget.thresholds) == (None, 5000, [10, 90])
    assert (budget.project, budget.hard) == (project, True)
    budget_update(budget=budget, amount_usd="12.5")
    budget.refresh_from_db()
    assert (budget.amount_usd, budget.amount_tokens) == (12.5, None)
    with pytest.raises(InvalidBudget, match="whole percent"):
        budget_update(budget=budget, thresholds=[0])
    with pytest.raises(InvalidBudget, match="Unknown budget fields: team"):
        budget_update(budget=budget, team=None)
    budget.refresh_from_db()
    assert budget.thresholds == [10, 90]


def test_delete_takes_the_alerts_and_deliveries_along(team, project, receiver):
    budget = budget_create(team=team, period="month", amount_usd="10", webhook_url=receiver.url)
    spend(project, datetime.now(timezone.utc), calls=3)
    budgets_evaluate()
    assert BudgetAlert.objects.exists() and AlertDelivery.objects.exists()
    budget_delete(budget=budget)
    assert not (Budget.objects.exists() or BudgetAlert.objects.exists() or AlertDelivery.objects.exists())


def test_alerts_history_is_newest_first_and_scoped(team, project, second_project, other_team_project):
    team_budget = budget_create(team=team, period="day", amount_usd="5", thresholds=[10], forecast_warning=False)
    other_project_budget = budget_create(team=team, project=second_project, period="day", amount_usd="5",
                                         thresholds=[10], forecast_warning=False)  # fmt: skip
    foreign = budget_create(team=other_team_project.team, period="day", amount_usd="5", thresholds=[10])
    spend(project, datetime.now(timezone.utc))
    spend(second_project, datetime.now(timezone.utc))
    spend(other_team_project, datetime.now(timezone.utc))
    budgets_evaluate()
    alerts = budget_alerts(team=team)
    assert {alert.budget_id for alert in alerts} == {team_budget.pk, other_project_budget.pk}
    assert [a.created_at for a in alerts] == sorted((a.created_at for a in alerts), reverse=True)
    assert [alert.budget_id for alert in budget_alerts(team=team, project=project)] == [team_budget.pk]
    assert foreign.pk not in {alert.budget_id for alert in budget_alerts(team=team)}
