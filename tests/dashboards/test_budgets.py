"""The budget pages: who may create, edit and delete a budget; what the budget, alerts, team
overview and project pages show; form errors; and no way into another team's budgets."""
from __future__ import annotations

import socket
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from apps.accounts.models import Team
from apps.accounts.services import project_get_or_create
from apps.budgets.alerts import budgets_evaluate
from apps.budgets.models import Budget, BudgetAlert
from apps.budgets.services import budget_create
from tests.budgets.conftest import spend
from tests.dashboards.conftest import client_for

pytestmark = pytest.mark.django_db

MANAGERS, READERS = ("owner", "admin"), ("member", "viewer")
NEW_BUDGET = {"project": "", "user": "", "model": "", "period": "month", "amount_usd": "250.00", "amount_tokens": "",
              "thresholds": "50,80,100", "forecast_warning": "on", "webhook_url": "", "email": "lead@acme.test"}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _recently() -> datetime:
    # Inside the current UTC day (and so week and month) on every run, also just after midnight.
    now = datetime.now(timezone.utc)
    return max(now - timedelta(minutes=5), now.replace(hour=0, minute=0, second=0, microsecond=0))


@pytest.fixture
def team_budget(team, project, users):
    """$10 a day for the whole team, hard, spent 75% ($7.50) plus 400 unpriced tokens."""
    budget = budget_create(team=team, period="day", amount_usd=Decimal("10"), hard=True, email="lead@acme.test",
                           webhook_url=f"http://127.0.0.1:{_closed_port()}/services/T000/B000/top-secret-path",
                           created_by=users["owner"])  # fmt: skip
    spend(project, _recently(), calls=3)
    spend(project, _recently(), model="acme-unpriced-llm", provider="self-hosted", input_tokens=300, output_tokens=100)
    return budget


@pytest.fixture
def search_budget(team):
    """A budget on another project of the team: the chatbot project page must not show it."""
    search = project_get_or_create(team=team, slug="search")
    return budget_create(team=team, project=search, period="week", amount_tokens=5_000_000)


@pytest.fixture
def globex_budget(globex_project):
    return budget_create(team=Team.objects.get(slug="globex"), period="month", amount_usd=Decimal("99"),
                         email="ceo@globex.test")


# Reading -------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", MANAGERS + READERS)
def test_every_member_reads_the_budgets_and_only_managers_get_the_forms(users, team_budget, role):
    client = client_for(users[role])
    listing = client.get("/acme/budgets/")
    page = client.get(f"/acme/budgets/{team_budget.pk}/")
    assert listing.status_code == page.status_code == 200
    assert f"Budget {team_budget.pk}".encode() in listing.content
    manager = role in MANAGERS
    assert (b"Create budget" in listing.content) is manager
    assert (b"Save budget" in page.content) is manager and (b'value="delete"' in page.content) is manager
    assert (team_budget.webhook_secret.encode() in page.content) is manager
    assert b"top-secret-path" not in listing.content and (b"top-secret-path" in page.content) is manager


def test_the_budget_page_shows_spend_forecast_and_the_unpriced_tokens(users, team_budget):
    response = client_for(users["viewer"]).get(f"/acme/budgets/{team_budget.pk}/")
    html = response.content.decode()
    status = response.context["status"]
    assert status.spent_usd == Decimal("7.5") and status.unpriced_tokens == 400
    assert '<div class="value" id="budget-spent">$7.50</div>' in html
    assert '<div class="value" id="budget-share">75.0%</div>' in html
    assert 'id="budget-forecast">' in html and "<meter" in html and 'value="0.75"' in html
    assert '<div class="value unpriced" id="budget-unpriced">400</div>' in html
    assert "not in the USD spent" in html


def test_alerts_history_shows_each_alert_with_its_delivery_status_and_hides_the_webhook_secret(
        users, team_budget, project, globex_budget, globex_project, mailoutbox):  # fmt: skip
    budgets_evaluate(project_id=project.pk)
    spend(globex_project, _recently(), calls=40)
    budgets_evaluate(project_id=globex_project.pk)
    # 75% spent: the 50% alert (and, depending on the hour, the forecast's).
    alert = BudgetAlert.objects.get(budget=team_budget, kind="threshold")
    assert alert.threshold == 50
    assert alert.deliveries.get(channel="email").status == "sent"
    assert alert.deliveries.get(channel="webhook").status in ("pending", "failed")

    for url in (f"/acme/budgets/{team_budget.pk}/", "/acme/budgets/alerts/"):
        html = client_for(users["member"]).get(url).content.decode()
        assert "reached 50%" in html
        assert "email: sent" in html and "lead@acme.test" in html
        assert "webhook: pending" in html or "webhook: failed" in html
        assert "top-secret-path" not in html and "T000" not in html
        assert "globex" not in html and "ceo@globex.test" not in html


def test_team_overview_and_project_page_show_progress_of_the_budgets_that_cover_them(users, team_budget,
                                                                                      search_budget):
    client = client_for(users["member"])
    overview = client.get("/").content.decode()
    assert f'href="/acme/budgets/{team_budget.pk}/"' in overview and f'/acme/budgets/{search_budget.pk}/' in overview
    assert 'class="budget-bar"' in overview and "$7.50 of $10.00" in overview

    project_page = client.get("/acme/chatbot/").content.decode()
    assert f'href="/acme/budgets/{team_budget.pk}/"' in project_page
    assert f"/acme/budgets/{search_budget.pk}/" not in project_page  # it covers another project only
    assert "75.0%" in project_page and "+ 400 unpriced tokens" in project_page


# Writing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", MANAGERS)
def test_owners_and_admins_create_budgets(users, project, role):
    data = {**NEW_BUDGET, "project": "chatbot", "user": "alice", "model": "gpt-4o", "hard": "on",
            "webhook_url": "http://127.0.0.1:9/hook"}
    response = client_for(users[role]).post("/acme/budgets/", data)
    budget = Budget.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/acme/budgets/{budget.pk}/"
    assert (budget.project, budget.user, budget.model, budget.period) == (project, "alice", "gpt-4o", "month")
    assert (budget.amount_usd, budget.amount_tokens, budget.thresholds) == (Decimal("250.00"), None, [50, 80, 100])
    assert budget.hard and budget.forecast_warning and budget.created_by == users[role]


@pytest.mark.parametrize("role", READERS)
def test_members_and_viewers_cannot_create_edit_or_delete(users, team_budget, role):
    client = client_for(users[role])
    assert client.post("/acme/budgets/", NEW_BUDGET).status_code == 403
    assert client.post(f"/acme/budgets/{team_budget.pk}/", {**NEW_BUDGET, "amount_usd": "1"}).status_code == 403
    assert client.post(f"/acme/budgets/{team_budget.pk}/", {"action": "delete"}).status_code == 403
    assert list(Budget.objects.values_list("pk", "amount_usd")) == [(team_budget.pk, Decimal("10.00"))]


@pytest.mark.parametrize("role", MANAGERS)
def test_owners_and_admins_edit_and_delete_budgets(users, team_budget, role):
    client = client_for(users[role])
    edited = {**NEW_BUDGET, "period": "week", "amount_usd": "", "amount_tokens": "2000000", "thresholds": "90, 100",
              "email": "", "webhook_url": ""}  # fmt: skip
    response = client.post(f"/acme/budgets/{team_budget.pk}/", edited)
    assert response.status_code == 302
    team_budget.refresh_from_db()
    assert (team_budget.period, team_budget.amount_usd, team_budget.amount_tokens) == ("week", None, 2_000_000)
    assert (team_budget.thresholds, team_budget.hard, team_budget.email) == ([90, 100], False, "")

    response = client.post(f"/acme/budgets/{team_budget.pk}/", {"action": "delete"})
    assert response.status_code == 302 and response["Location"] == "/acme/budgets/"
    assert not Budget.objects.exists()


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"amount_usd": "", "amount_tokens": ""}, "amount_usd", "Give an amount in USD"),
    ({"amount_tokens": "1000"}, "amount_tokens", "Give one amount"),
    ({"amount_usd": "0"}, None, "The USD amount must be above 0"),
    ({"thresholds": "fifty"}, "thresholds", "Whole percents separated by commas"),
    ({"thresholds": "50,2000"}, None, "A threshold is a whole percent from 1 to 1000"),
    ({"webhook_url": "ftp://hooks.example/x"}, "webhook_url", "must be http:// or https://"),
    ({"email": "not-an-address"}, "email", "Enter a valid email address"),
    ({"period": "year"}, "period", "Select a valid choice"),
    ({"project": "no-such-project"}, "project", "Select a valid choice"),
])  # fmt: skip
def test_a_refused_budget_shows_why_on_the_form_and_saves_nothing(users, team, change, field, message):
    response = client_for(users["owner"]).post("/acme/budgets/", {**NEW_BUDGET, **change})
    assert response.status_code == 400
    form = response.context["form"]
    errors = form.errors.get(field or "__all__", [])
    assert any(message in error for error in errors), form.errors
    assert message in response.content.decode().replace("&#x27;", "'")
    assert not Budget.objects.exists()


def test_a_refused_edit_keeps_the_budget_and_shows_why(users, team_budget):
    response = client_for(users["admin"]).post(f"/acme/budgets/{team_budget.pk}/",
                                               {**NEW_BUDGET, "thresholds": "", "amount_usd": "5"})
    assert response.status_code == 400 and "thresholds" in response.context["form"].errors
    team_budget.refresh_from_db()
    assert team_budget.amount_usd == Decimal("10.00")


# Other teams ---------------------------------------------------------------------------------


def test_another_teams_budget_is_404_through_my_team_for_every_action(users, globex_budget):
    client = client_for(users["owner"])
    url = f"/acme/budgets/{globex_budget.pk}/"
    assert client.get(url).status_code == 404
    assert client.post(url, {**NEW_BUDGET, "amount_usd": "1"}).status_code == 404
    assert client.post(url, {"action": "delete"}).status_code == 404
    assert client.get(f"/globex/budgets/{globex_budget.pk}/").status_code == 404  # not a member of globex
    globex_budget.refresh_from_db()
    assert globex_budget.amount_usd == Decimal("99.00")


@pytest.mark.parametrize("url", ["/acme/budgets/", "/acme/budgets/alerts/", "/acme/budgets/{pk}/"])
def test_non_members_get_404_for_every_budget_page_and_action(outsider, team_budget, url):
    client = client_for(outsider)
    url = url.format(pk=team_budget.pk)
    assert client.get(url).status_code == 404
    assert client.post(url, NEW_BUDGET).status_code == 404
    assert client.post(url, {"action": "delete"}).status_code == 404
    assert Budget.objects.filter(team__slug="acme").count() == 1


def test_anonymous_visitors_are_sent_to_login(client, team_budget):
    for url in ("/acme/budgets/", "/acme/budgets/alerts/", f"/acme/budgets/{team_budget.pk}/"):
        response = client.post(url, {"action": "delete"})
        assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert Budget.objects.count() == 1
