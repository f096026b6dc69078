"""budget_statuses: spend, share, forecast and periods read from the aggregates."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from apps.budgets.periods import forecast_share, period_bounds
from apps.budgets.selectors import budget_statuses
from apps.budgets.services import budget_create
from tests.budgets.conftest import spend

pytestmark = pytest.mark.django_db

UTC = timezone.utc


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "at", "start", "end"),
    [
        ("day", utc(2026, 11, 20, 0, 0, 0), utc(2026, 11, 20), utc(2026, 11, 21)),
        ("day", utc(2026, 11, 20, 23, 59, 59, 999999), utc(2026, 11, 20), utc(2026, 11, 21)),
        # Wednesday; the ISO week starts on Monday.
        ("week", utc(2026, 12, 2, 6, 0), utc(2026, 11, 30), utc(2026, 12, 7)),
        ("week", utc(2026, 11, 30, 0, 0), utc(2026, 11, 30), utc(2026, 12, 7)),
        ("week", utc(2026, 11, 29, 23, 59, 59), utc(2026, 11, 23), utc(2026, 11, 30)),
        ("week", utc(2027, 1, 1, 12), utc(2026, 12, 28), utc(2027, 1, 4)),  # across the new year
        ("month", utc(2026, 12, 31, 23, 59), utc(2026, 12, 1), utc(2027, 1, 1)),
        ("month", utc(2028, 2, 29, 12), utc(2028, 2, 1), utc(2028, 3, 1)),  # leap February
        ("month", utc(2026, 1, 1), utc(2026, 1, 1), utc(2026, 2, 1)),
    ],
)
def test_periods_are_utc_calendar_days_iso_weeks_and_months(period, at, start, end):
    assert period_bounds(period, at) == (start, end)


def test_a_period_of_an_instant_in_another_zone_is_taken_in_utc():
    tokyo = timezone(timedelta(hours=9))
    # 2026-12-01 08:00 in Tokyo is still November 30th in UTC.
    assert period_bounds("month", datetime(2026, 12, 1, 8, 0, tzinfo=tokyo)) == (utc(2026, 11, 1), utc(2026, 12, 1))
    assert period_bounds("day", datetime(2026, 12, 1, 8, 0, tzinfo=tokyo))[0] == utc(2026, 11, 30)


def test_forecast_projects_the_run_rate_to_the_period_end():
    start, end = utc(2026, 11, 1), utc(2026, 12, 1)  # 30 days
    assert forecast_share(share=0.5, start=start, end=end, now=utc(2026, 11, 16)) == pytest.approx(1.0)
    assert forecast_share(share=0.4, start=start, end=end, now=utc(2026, 11, 11)) == pytest.approx(1.2)
    # Period over: the share is final.
    assert forecast_share(share=0.7, start=start, end=end, now=utc(2026, 12, 1)) == pytest.approx(0.7)


def test_forecast_early_in_a_period_takes_the_rate_over_a_minimum_span():
    start, end = utc(2026, 11, 20), utc(2026, 11, 21)
    # Ten minutes in, 1 % spent: the raw run rate says 144 %, the damped one 1 % x 20 = 20 %.
    assert forecast_share(share=0.01, start=start, end=end, now=start + timedelta(minutes=10)) == pytest.approx(0.2)
    assert forecast_share(share=0.0, start=start, end=end, now=start) == 0.0


def test_team_budget_sums_every_project_and_project_budget_only_its_own(team, project, second_project):
    now = utc(2026, 11, 20, 12)
    spend(project, utc(2026, 11, 20, 9), calls=2)  # $5.00
    spend(second_project, utc(2026, 11, 20, 10), calls=1)  # $2.50
    team_budget = budget_create(team=team, period="day", amount_usd="10")
    project_budget = budget_create(team=team, project=project, period="day", amount_usd="20")
    other_budget = budget_create(team=team, project=second_project, period="day", amount_usd="5")

    statuses = {s.budget.pk: s for s in budget_statuses(team=team, now=now)}
    assert [s.budget.pk for s in budget_statuses(team=team, now=now)][0] == team_budget.pk  # team-wide first
    assert statuses[team_budget.pk].spent_usd == Decimal("7.5")
    assert statuses[team_budget.pk].share == pytest.approx(0.75)
    assert statuses[team_budget.pk].scope == "team" and statuses[team_budget.pk].project_slug is None
    assert statuses[project_budget.pk].spent_usd == Decimal("5")
    assert statuses[project_budget.pk].share == pytest.approx(0.25)
    assert statuses[project_budget.pk].project_slug == "chatbot"
    assert statuses[other_budget.pk].exceeded is False and statuses[other_budget.pk].share == pytest.approx(0.5)

    for_project = budget_statuses(team=team, project=project, now=now)
    assert [s.budget.pk for s in for_project] == [team_budget.pk, project_budget.pk]


def test_spend_at_period_edges_counts_in_the_period_it_happened(team, project):
    spend(project, utc(2026, 11, 19, 23, 59, 58))  # yesterday, $2.50
    spend(project, utc(2026, 11, 20, 0, 0, 0))  # today's first instant
    spend(project, utc(2026, 11, 20, 23, 59, 58))  # today's last seconds
    spend(project, utc(2026, 11, 21, 0, 0, 0))  # tomorrow
    budget = budget_create(team=team, project=project, period="day", amount_usd="10")

    [today] = budget_statuses(team=team, now=utc(2026, 11, 20, 12))
    assert (today.period_start, today.period_end) == (utc(2026, 11, 20), utc(2026, 11, 21))
    assert today.spent_usd == Decimal("5") and today.spent_tokens == 2_000_000
    [yesterday] = budget_statuses(team=team, now=utc(2026, 11, 19, 12))
    assert yesterday.spent_usd == Decimal("2.5")
    budget.period = "week"
    budget.save()
    [week] = budget_statuses(team=team, now=utc(2026, 11, 20, 12))
    assert week.spent_usd == Decimal("10")  # Monday the 16th to Sunday the 22nd holds all four


def test_tokens_budget_and_unpriced_tokens_are_reported(team, project):
    now = utc(2026, 11, 20, 12)
    spend(project, utc(2026, 11, 20, 1), provider="acme-labs", model="in-house-7b", input_tokens=600, output_tokens=150)
    spend(project, utc(2026, 11, 20, 2))  # priced: $2.50, 1,000,000 tokens
    by_tokens = budget_create(team=team, period="day", model="in-house-7b", amount_tokens=1000)
    by_usd = budget_create(team=team, period="day", amount_usd="100")

    statuses = {s.budget.pk: s for s in budget_statuses(team=team, now=now)}
    tokens = statuses[by_tokens.pk]
    assert (tokens.spent_tokens, tokens.unpriced_tokens, tokens.spent_usd) == (750, 750, Decimal(0))
    assert tokens.share == pytest.approx(0.75) and tokens.amount_usd is None and tokens.amount_tokens == 1000
    usd = statuses[by_usd.pk]
    # The unpriced tokens do not hide inside the USD budget: they are counted apart.
    assert (usd.spent_usd, usd.unpriced_tokens, usd.spent_tokens) == (Decimal("2.5"), 750, 1_000_750)


def test_model_and_user_narrowing(team, project, second_project):
    now = utc(2026, 11, 20, 12)
    spend(project, utc(2026, 11, 20, 1), attributes={"user": "ada"})
    spend(second_project, utc(2026, 11, 20, 2), calls=2, attributes={"user": "ada"})
    spend(project, utc(2026, 11, 20, 3), attributes={"user": "bob"})
    spend(project, utc(2026, 11, 20, 4), model="gpt-4o-mini", input_tokens=1_000_000, attributes={"user": "ada"})
    ada_team = budget_create(team=team, user="ada", period="day", amount_usd="100")
    ada_project = budget_create(team=team, project=project, user="ada", period="day", amount_usd="100")
    ada_4o = budget_create(team=team, user="ada", model="gpt-4o", period="day", amount_usd="100")
    mini = budget_create(team=team, model="gpt-4o-mini", period="day", amount_usd="100")

    statuses = {s.budget.pk: s for s in budget_statuses(team=team, now=now)}
    mini_usd = statuses[mini.pk].spent_usd
    assert Decimal("0.1") <= mini_usd <= Decimal("0.2")  # $0.15 per million input tokens
    assert statuses[ada_team.pk].spent_usd == Decimal("7.5") + mini_usd
    assert statuses[ada_project.pk].spent_usd == Decimal("2.5") + mini_usd
    assert statuses[ada_4o.pk].spent_usd == Decimal("7.5")
    assert statuses[ada_4o.pk].user == "ada" and statuses[ada_4o.pk].model == "gpt-4o"


def test_exceeded_and_forecast_flags(team, project):
    spend(project, utc(2026, 11, 1, 1), calls=2)  # $5 on the first of the month
    budget = budget_create(team=team, period="month", amount_usd="10", hard=True)

    [on_the_2nd] = budget_statuses(team=team, now=utc(2026, 11, 2, 1))
    assert on_the_2nd.share == pytest.approx(0.5) and not on_the_2nd.exceeded
    assert on_the_2nd.forecast_exceeds and on_the_2nd.forecast_share == pytest.approx(10.0)  # 5 % of 30 days
    assert on_the_2nd.hard is True
    [on_the_20th] = budget_statuses(team=team, now=utc(2026, 11, 20))  # 19 days in
    assert not on_the_20th.forecast_exceeds and on_the_20th.forecast_share == pytest.approx(0.5 * 30 / 19)
    spend(project, utc(2026, 11, 20, 2), calls=2)
    [spent] = budget_statuses(team=team, now=utc(2026, 11, 20, 3))
    assert spent.exceeded and spent.share == pytest.approx(1.0) and spent.budget.pk == budget.pk
    [next_month] = budget_statuses(team=team, now=utc(2026, 12, 1, 0, 0, 1))
    assert next_month.share == 0 and next_month.spent_usd == 0 and not next_month.exceeded


def test_other_teams_budgets_are_not_listed(team, project, other_team_project):
    budget_create(team=other_team_project.team, period="day", amount_usd="1")
    assert budget_statuses(team=team) == []
