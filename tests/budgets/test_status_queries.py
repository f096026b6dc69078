"""budget_statuses reads the team's project ids once, however many team-wide budgets there are."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.budgets.selectors import budget_spend, budget_statuses
from apps.budgets.services import budget_create
from tests.budgets.conftest import spend

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 12, tzinfo=timezone.utc)


def test_team_wide_budgets_share_one_read_of_the_teams_projects(team, project, second_project):
    spend(project, datetime(2026, 11, 20, 9, tzinfo=timezone.utc))
    spend(second_project, datetime(2026, 11, 20, 10, tzinfo=timezone.utc))
    budgets = [budget_create(team=team, period=period, amount_usd="10") for period in ("day", "week", "month")]
    budgets.append(budget_create(team=team, period="day", model="gpt-4o", amount_usd="10"))

    with CaptureQueriesContext(connection) as queries:
        statuses = budget_statuses(team=team, now=NOW)
    project_reads = [q["sql"] for q in queries if 'FROM "accounts_project"' in q["sql"]]
    assert len(project_reads) == 1, project_reads
    # The same spend as each budget read on its own (which reads the projects itself).
    for status in statuses:
        alone = budget_spend(budget=status.budget, since=status.period_start, until=status.period_end)
        assert status.spent_tokens == alone.tokens > 0
