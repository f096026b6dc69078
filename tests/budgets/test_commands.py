"""`manage.py budget_create`, and the checks every way of creating a budget shares."""
from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.budgets.models import Budget
from apps.budgets.services import InvalidBudget, budget_create
from apps.budgets.webhooks import WebhookHostUnresolved, WebhookTargetRefused, webhook_target_check

pytestmark = pytest.mark.django_db


def create(*args) -> tuple[Budget, list[str]]:
    out = StringIO()
    call_command("budget_create", *args, stdout=out)
    lines = out.getvalue().splitlines()
    return Budget.objects.get(pk=int(lines[-1])), lines


def test_team_budget_with_defaults_prints_its_id_last(team):
    budget, lines = create("--team", "acme", "--period", "month", "--amount-usd", "100")
    assert (budget.team, budget.project, budget.period, budget.amount_usd) == (team, None, "month", 100)
    assert budget.thresholds == [50, 80, 100] and budget.forecast_warning and not budget.hard
    assert lines[0] == "Budget of team acme: $100.00 per month, alerts at [50, 80, 100] %."


def test_project_budget_narrowed_with_channels(team, project, receiver):
    budget, lines = create(
        "--team", "acme", "--project", "chatbot", "--user", "ada@example.com", "--model", "gpt-4o", "--period", "week",
        "--amount-tokens", "2000000", "--thresholds", "90,25", "--webhook", receiver.url, "--email", "a@example.com",
        "--hard",
    )  # fmt: skip
    assert (budget.project, budget.user, budget.model, budget.period) == (project, "ada@example.com", "gpt-4o", "week")
    assert (budget.amount_usd, budget.amount_tokens, budget.thresholds) == (None, 2_000_000, [25, 90])
    assert (budget.webhook_url, budget.email, budget.hard) == (receiver.url, "a@example.com", True)
    assert f"Webhook secret (verify X-TokenSite-Signature with it): {budget.webhook_secret}" in lines


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--team", "nope", "--period", "day", "--amount-usd", "1"], "No team 'nope'."),
        (["--team", "acme", "--project", "nope", "--period", "day", "--amount-usd", "1"],
         "No project 'nope' in team 'acme'."),
        (["--team", "acme", "--period", "year", "--amount-usd", "1"], "invalid choice: 'year'"),
        (["--team", "acme", "--period", "day"], "one of the arguments --amount-usd --amount-tokens is required"),
        (["--team", "acme", "--period", "day", "--amount-usd", "1", "--amount-tokens", "5"], "not allowed with"),
        (["--team", "acme", "--period", "day", "--amount-usd", "-5"], "above 0"),
        (["--team", "acme", "--period", "day", "--amount-usd", "ten"], "is not a number"),
        (["--team", "acme", "--period", "day", "--amount-usd", "1.005"], "at most two decimals"),
        (["--team", "acme", "--period", "day", "--amount-tokens", "0"], "whole number above 0"),
        (["--team", "acme", "--period", "day", "--amount-tokens", "many"], "invalid int value"),
        (["--team", "acme", "--period", "day", "--amount-usd", "1", "--thresholds", "50,x"], "whole percents"),
        (["--team", "acme", "--period", "day", "--amount-usd", "1", "--thresholds", "0,50"], "from 1 to 1000"),
        (["--team", "acme", "--period", "day", "--amount-usd", "1", "--email", "not-an-address"],
         "is not an email address"),
        (["--team", "acme", "--period", "day", "--amount-usd", "1", "--webhook", "ftp://example.com/x"],
         "must be http:// or https://"),
    ],
)
def test_bad_input_is_refused_clearly(project, args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace("[", r"\[")):
        call_command("budget_create", *args, stdout=StringIO(), stderr=StringIO())
    assert not Budget.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/hook", "http://localhost/hook", "http://10.1.2.3/hook", "https://192.168.0.10/hook",
        "http://172.16.5.5/hook", "http://169.254.169.254/latest/meta-data", "http://[::1]/hook",
        "http://[fe80::1]/hook", "http://0.0.0.0/hook", "http://100.64.0.1/hook", "http://[::ffff:127.0.0.1]/hook",
    ],
)  # fmt: skip
def test_internal_webhook_targets_are_refused_unless_allowed(team, settings, url):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(WebhookTargetRefused, match="loopback, private or link-local"):
        budget_create(team=team, period="day", amount_usd="1", webhook_url=url)
    with pytest.raises(CommandError, match="WEBHOOK_ALLOW_PRIVATE=true"):
        call_command("budget_create", "--team", "acme", "--period", "day", "--amount-usd", "1", "--webhook", url,
                     stdout=StringIO())  # fmt: skip
    settings.WEBHOOK_ALLOW_PRIVATE = True
    assert budget_create(team=team, period="day", amount_usd="1", webhook_url=url).webhook_url == url


def test_a_public_address_is_accepted_and_credentials_in_the_url_are_not(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    assert webhook_target_check("https://93.184.215.14/services/T0/B0/x") == "https://93.184.215.14/services/T0/B0/x"
    with pytest.raises(WebhookTargetRefused, match="must not carry credentials"):
        webhook_target_check("https://user:secret@93.184.215.14/hook")
    with pytest.raises(WebhookHostUnresolved, match="does not resolve"):
        webhook_target_check("https://no-such-host.invalid/hook")


def test_a_host_that_does_not_resolve_yet_is_accepted_and_checked_at_each_send(team, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    budget = budget_create(team=team, period="day", amount_usd="1", webhook_url="https://no-such-host.invalid/hook")
    assert budget.webhook_url == "https://no-such-host.invalid/hook"


def test_a_project_of_another_team_is_refused(team, other_team_project):
    with pytest.raises(InvalidBudget, match="is not a project of team 'acme'"):
        budget_create(team=team, project=other_team_project, period="day", amount_usd="1")
