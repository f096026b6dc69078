"""GET /api/v1/budgets: the key's project's budgets and its team's team-wide ones, per the contract."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from apps.accounts.models import ApiKey
from apps.accounts.services import api_key_create, api_key_revoke
from apps.budgets.services import budget_create
from tests.budgets.conftest import spend

pytestmark = pytest.mark.django_db

CONTRACT_FIELDS = {
    "id", "scope", "project", "user", "model", "period", "period_start", "period_end", "amount_usd", "amount_tokens",
    "spent_usd", "spent_tokens", "unpriced_tokens", "share", "forecast_share", "forecast_exceeds", "hard", "exceeded",
}  # fmt: skip


def get_budgets(client, key):
    return client.get("/api/v1/budgets", HTTP_AUTHORIZATION=f"Bearer {key}") if key else client.get("/api/v1/budgets")


def test_budgets_of_the_keys_project_and_team_with_spend(api_client, team, project, second_project, read_key):
    now = datetime.now(timezone.utc)
    spend(project, now - timedelta(seconds=30), calls=2)  # $5
    team_budget = budget_create(team=team, period="month", amount_usd="100")
    project_budget = budget_create(team=team, project=project, user="ada", period="day", amount_tokens=5000, hard=True)
    budget_create(team=team, project=second_project, period="day", amount_usd="1")  # another project's

    response = get_budgets(api_client, read_key)
    assert response.status_code == 200
    budgets = response.json()["budgets"]
    assert [b["id"] for b in budgets] == [team_budget.pk, project_budget.pk]
    assert all(set(b) == CONTRACT_FIELDS for b in budgets)
    team_row, project_row = budgets
    assert team_row["scope"] == "team" and team_row["project"] is None and team_row["period"] == "month"
    assert (team_row["amount_usd"], team_row["amount_tokens"]) == ("100.00", None)
    assert (team_row["spent_usd"], team_row["spent_tokens"], team_row["unpriced_tokens"]) == ("5.0000", 2_000_000, 0)
    assert team_row["share"] == 0.05 and team_row["exceeded"] is False and team_row["hard"] is False
    assert team_row["period_start"].endswith("-01T00:00:00Z") and team_row["period_end"].endswith("T00:00:00Z")
    assert isinstance(team_row["forecast_share"], float) and isinstance(team_row["forecast_exceeds"], bool)
    assert (project_row["scope"], project_row["project"], project_row["user"], project_row["model"]) == (
        "project", "chatbot", "ada", "")  # fmt: skip
    assert (project_row["amount_usd"], project_row["amount_tokens"], project_row["hard"]) == (None, 5000, True)
    assert project_row["spent_tokens"] == 0  # ada sent nothing


def test_an_ingest_key_reads_its_own_projects_budgets(api_client, team, project, ingest_key):
    budget = budget_create(team=team, project=project, period="week", amount_usd="3")
    response = get_budgets(api_client, ingest_key)
    assert response.status_code == 200 and [b["id"] for b in response.json()["budgets"]] == [budget.pk]


def test_no_budgets_is_an_empty_list(api_client, read_key):
    assert get_budgets(api_client, read_key).json() == {"budgets": []}


def test_another_teams_budgets_are_never_listed(api_client, team, project, other_team_project):
    budget_create(team=team, period="day", amount_usd="1")
    other_key = api_key_create(project=other_team_project, scope=ApiKey.Scope.READ).plaintext
    assert get_budgets(api_client, other_key).json() == {"budgets": []}


def test_missing_unknown_and_revoked_keys_are_401(api_client, project, read_key):
    missing = get_budgets(api_client, None)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    unknown = get_budgets(api_client, "tsk_nope_nope")
    assert unknown.status_code == 401 and unknown.json()["error"]["code"] == "invalid_api_key"
    api_key_revoke(prefix=read_key.split("_")[1])
    assert get_budgets(api_client, read_key).status_code == 401


def test_writes_are_not_allowed(api_client, read_key):
    response = api_client.post("/api/v1/budgets", {}, HTTP_AUTHORIZATION=f"Bearer {read_key}")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_polled_statuses_are_at_most_ten_seconds_old_and_budget_changes_show_at_once(
    api_client, team, project, read_key, settings
):
    import time_machine

    # A cache whose expiry follows the moved clock (Redis expires keys in its own time).
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    start = datetime.now(timezone.utc)
    with time_machine.travel(start, tick=False):
        budget_create(team=team, period="month", amount_usd="100")
        assert get_budgets(api_client, read_key).json()["budgets"][0]["spent_usd"] == "0.0000"
        spend(project, start - timedelta(seconds=1))
        assert get_budgets(api_client, read_key).json()["budgets"][0]["spent_usd"] == "0.0000"  # cached
    with time_machine.travel(start + timedelta(seconds=1), tick=False):
        budget_create(team=team, project=project, period="day", amount_usd="1")  # a change: seen at once
        assert [b["spent_usd"] for b in get_budgets(api_client, read_key).json()["budgets"]] == ["2.5000"] * 2
        spend(project, start - timedelta(seconds=1))
    with time_machine.travel(start + timedelta(seconds=12), tick=False):
        assert get_budgets(api_client, read_key).json()["budgets"][0]["spent_usd"] == "5.0000"
