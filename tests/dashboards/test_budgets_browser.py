"""An owner sets a budget in headless Chromium and reads its progress: the form, the meter and
the pages work under the site's Content-Security-Policy (a violation is a console error)."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from apps.budgets.models import Budget
from tests.dashboards.conftest import PASSWORD, RECENT, ingest
from tests.dashboards.test_browser import ARTIFACTS, CHROMIUM, chromium_page
from tests.conftest import usage_event

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]


def test_an_owner_sets_a_monthly_budget_and_sees_its_progress_in_chromium(live_server, project, users):
    # $2.50 of gpt-4o: a quarter of the $10 budget the owner is about to set.
    ingest(project, [usage_event(session_id="b-1", timestamp=RECENT.isoformat(), input_tokens=1_000_000,
                                 output_tokens=0)])  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page() as (page, errors):
        page.goto(f"{live_server.url}/login/?next=/acme/budgets/")
        page.fill("#id_username", "owner-user")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server.url}/acme/budgets/")

        page.select_option("#id_project", "chatbot")
        page.fill("#id_amount_usd", "10")
        page.fill("#id_email", "lead@acme.test")
        page.click("text=Create budget")
        page.wait_for_url(f"{live_server.url}/acme/budgets/*/")
        assert page.inner_text("#budget-spent") == "$2.50"
        assert page.inner_text("#budget-share") == "25.0%"
        assert page.get_attribute("meter.budget-bar", "value") == "0.25"
        page.screenshot(path=str(ARTIFACTS / "dashboards-budget.png"), full_page=True)

        page.goto(f"{live_server.url}/acme/chatbot/")
        assert page.locator("meter.budget-bar").count() == 1
        page.goto(f"{live_server.url}/")
        assert page.locator("meter.budget-bar").count() == 1
        page.screenshot(path=str(ARTIFACTS / "dashboards-overview-budgets.png"), full_page=True)
    assert errors == []
    budget = Budget.objects.get()
    assert (budget.project, budget.amount_usd, budget.period, budget.email) == (project, Decimal("10.00"), "month",
                                                                               "lead@acme.test")
