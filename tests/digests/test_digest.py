"""Issue 16 "Digest": opt-in daily or weekly mails per member and team, sent once each through a real
SMTP server, the same content as a page, the settings page, the command and its beat entry."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command

from apps.accounts.services import member_add, team_get_or_create
from apps.digests.models import DigestDelivery, DigestSubscription
from apps.digests.selectors import digest_period_last_complete, digest_period_starting, team_digest
from tests.dashboards.conftest import PASSWORD, client_for
from tests.digests.conftest import TUESDAY, WEDNESDAY_MORNING, SmtpServer

pytestmark = pytest.mark.django_db

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UTC = timezone.utc


def send(*args: str) -> str:
    out = StringIO()
    call_command("send_digest", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


# --- Periods -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "frequency", "start", "end"),
    [
        # Before the send hour the day before yesterday is still the last one due.
        (datetime(2026, 11, 25, 6, 59, tzinfo=UTC), "daily", date(2026, 11, 23), date(2026, 11, 24)),
        (datetime(2026, 11, 25, 7, 0, tzinfo=UTC), "daily", date(2026, 11, 24), date(2026, 11, 25)),
        (datetime(2026, 11, 25, 23, 59, tzinfo=UTC), "daily", date(2026, 11, 24), date(2026, 11, 25)),
        # ISO weeks start on Monday: on Monday morning before 07:00 the week before last is due.
        (datetime(2026, 11, 30, 6, 59, tzinfo=UTC), "weekly", date(2026, 11, 16), date(2026, 11, 23)),
        (datetime(2026, 11, 30, 7, 0, tzinfo=UTC), "weekly", date(2026, 11, 23), date(2026, 11, 30)),
        (datetime(2026, 12, 6, 23, 0, tzinfo=UTC), "weekly", date(2026, 11, 23), date(2026, 11, 30)),
        # Across a month and a year end.
        (datetime(2027, 1, 1, 8, 0, tzinfo=UTC), "daily", date(2026, 12, 31), date(2027, 1, 1)),
    ],
)  # fmt: skip
def test_the_period_due_is_the_last_complete_one_after_the_send_hour(now, frequency, start, end):
    period = digest_period_last_complete(frequency=frequency, now=now, send_hour_utc=7)
    assert (period.start.date(), period.end.date()) == (start, end)
    assert period.previous_start == period.start - (period.end - period.start)
    assert digest_period_starting(frequency=frequency, day=start + timedelta(days=2 if frequency == "weekly" else 0)) == period


# --- Content -------------------------------------------------------------------------------------


def test_the_digest_compares_each_project_developer_and_model_with_the_day_before(two_days, team):
    period = digest_period_starting(frequency="daily", day=TUESDAY.date())
    digest = team_digest(team=team, period=period)
    projects = {row["project"].slug: row for row in digest["projects"]}
    assert projects["chatbot"]["total_tokens"] == 220_000 and projects["chatbot"]["previous_total_tokens"] == 110_000
    assert projects["chatbot"]["cost_change"] == pytest.approx(1.0)  # twice Monday's tokens of one model
    assert projects["agents"]["cost_usd"] is None and projects["agents"]["cost_change"] is None  # unpriced, new
    developers = {row["user"]: row for row in digest["developers"]}
    assert developers["ada@example.com"]["cost_change"] == pytest.approx(1.0)
    assert developers["bob@example.com"]["previous_cost_usd"] is None
    models = {row["model"]: row for row in digest["models"]}
    assert models["gpt-4o"]["previous_cost_usd"] == pytest.approx(models["gpt-4o"]["cost_usd"] / 2)
    assert [(row["model"], row["throttle_wait_ms"]) for row in digest["throttled_models"]] == [
        ("gpt-4o", 4000), ("gpt-4o-mini", 1000)]
    assert digest["unpriced_tokens"] == 7700
    assert [(row["model"], row["unpriced_tokens"]) for row in digest["unpriced_models"]] == [("acme-unpriced-llm", 7700)]
    assert digest["totals"]["total_tokens"] == 227_700 and digest["has_usage"]
    quiet = team_digest(team=team, period=digest_period_starting(frequency="daily", day=date(2026, 11, 20)))
    assert not quiet["has_usage"] and quiet["projects"] == []


# --- Sending -------------------------------------------------------------------------------------


def test_send_digest_mails_each_opted_in_member_once_through_smtp(smtp_server, two_days, subscribers):
    with time_machine.travel(WEDNESDAY_MORNING, tick=False):
        output = send()
    assert "sent daily-dora acme daily 2026-11-24" in output and "1 sent" in output
    assert [recipients for recipients, _ in smtp_server.inbox.received] == [["daily-dora@example.com"]]
    subject, text = next(iter(smtp_server.inbox.texts().items()))
    assert subject == "TokenSite daily digest for acme: Tuesday 24 November 2026"
    for expected in ("- chatbot: $0.70, $0.35, +100.0%, 220,000 tokens", "- Agents: unpriced, —, new, 7,700 tokens", "ada@example.com", "bob@example.com", "+100.0%", "gpt-4o",
                     "acme-unpriced-llm", "7,700 tokens had no known price", "4,000 ms",
                     "https://tokensite.example.com/acme/digest/?period=daily&start=2026-11-24",
                     "https://tokensite.example.com/settings/"):  # fmt: skip
        assert expected in text, expected
    html = smtp_server.inbox.htmls()[subject]
    assert 'id="digest-projects"' in html and "ada@example.com" in html
    # Again the same morning, or later that day: nothing more.
    with time_machine.travel(WEDNESDAY_MORNING + timedelta(hours=3), tick=False):
        assert "0 sent, 1 already sent" in send()
    assert len(smtp_server.inbox.received) == 1
    delivery = DigestDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.sent_at) == ("sent", 1, WEDNESDAY_MORNING)


def test_weekly_digests_go_out_on_monday_for_the_iso_week_before(smtp_server, two_days, subscribers):
    with time_machine.travel(WEDNESDAY_MORNING, tick=False):
        send("--frequency", "weekly")
    assert smtp_server.inbox.received == []  # the week of the 16th had no usage: no mail
    with time_machine.travel(datetime(2026, 11, 30, 7, 5, tzinfo=UTC), tick=False):
        output = send()
    assert "sent weekly-wes acme weekly 2026-11-23" in output
    weekly = [subject for subject in smtp_server.inbox.texts() if "weekly" in subject]
    assert weekly == ["TokenSite weekly digest for acme: week of Mon 23 Nov to Sun 29 Nov 2026"]
    assert "off-otto@example.com" not in {r for recipients, _ in smtp_server.inbox.received for r in recipients}


def test_a_member_of_two_teams_gets_one_digest_per_team(smtp_server, two_days, subscribers):
    globex = team_get_or_create(slug="globex")
    member_add(team=globex, username="daily-dora", role="viewer")
    with time_machine.travel(WEDNESDAY_MORNING, tick=False):
        output = send("--frequency", "daily")
    # globex had no usage: no mail for it, and it is counted as such.
    assert "1 sent" in output and "1 without usage" in output
    from apps.accounts.services import project_get_or_create
    from tests.conftest import usage_event
    from tests.dashboards.conftest import ingest

    ingest(project_get_or_create(team=globex, slug="lab"), [usage_event(session_id="g", timestamp=TUESDAY.isoformat())])
    with time_machine.travel(WEDNESDAY_MORNING + timedelta(minutes=5), tick=False):
        assert "sent daily-dora globex daily 2026-11-24" in send()
    assert sorted(smtp_server.inbox.texts()) == [
        "TokenSite daily digest for acme: Tuesday 24 November 2026",
        "TokenSite daily digest for globex: Tuesday 24 November 2026",
    ]


def test_a_failed_mail_is_recorded_and_sent_by_the_next_run(settings, two_days, subscribers):
    server = SmtpServer(__import__("tests.core.servers", fromlist=["free_port"]).free_port())
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", server.port, 5
    settings.DIGEST_SEND_HOUR_UTC = 7
    with time_machine.travel(WEDNESDAY_MORNING, tick=False), pytest.raises(CommandError, match="1 digests"):
        send()
    delivery = DigestDelivery.objects.get()
    assert delivery.status == "failed" and delivery.attempts == 1 and "Connection" in delivery.last_error
    server.start()
    try:
        with time_machine.travel(WEDNESDAY_MORNING + timedelta(hours=1), tick=False):
            assert "1 sent" in send()
    finally:
        server.stop()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 2, "")
    assert len(server.inbox.received) == 1


def test_a_claim_left_by_a_dead_sender_is_taken_again_once_stale(smtp_server, two_days, subscribers):
    DigestDelivery.objects.create(
        user=subscribers["daily-dora"], team=two_days["chatbot"].team, frequency="daily",
        period_start=datetime(2026, 11, 24, tzinfo=UTC), email="daily-dora@example.com", attempts=1,
        claimed_at=WEDNESDAY_MORNING,
    )  # fmt: skip
    with time_machine.travel(WEDNESDAY_MORNING + timedelta(minutes=5), tick=False):
        assert "0 sent, 1 already sent" in send()  # another sender may still be on it
    with time_machine.travel(WEDNESDAY_MORNING + timedelta(minutes=20), tick=False):
        assert "1 sent" in send()
    assert len(smtp_server.inbox.received) == 1


def test_force_sends_again_and_filters_narrow_the_run(smtp_server, two_days, subscribers):
    with time_machine.travel(WEDNESDAY_MORNING, tick=False):
        assert "0 sent" in send("--user", "weekly-wes")
        assert "1 sent" in send("--user", "daily-dora", "--team", "acme")
        assert "1 sent" in send("--user", "daily-dora", "--force")
    assert len(smtp_server.inbox.received) == 2


def test_the_beat_runs_the_digest_task_hourly(smtp_server, two_days, subscribers):
    from tokensite.celery import app
    from tokensite.schedule import BEAT_SCHEDULE

    app.loader.import_default_modules()  # what a worker does at start: autodiscovers the apps' tasks
    entry = BEAT_SCHEDULE["digests-send"]
    assert entry["schedule"].minute == {5} and entry["schedule"].hour == set(range(24))
    with time_machine.travel(WEDNESDAY_MORNING, tick=False):
        assert app.tasks[entry["task"]].apply().get() == 1
    assert len(smtp_server.inbox.received) == 1


def test_email_url_configures_django_mail_and_unset_means_the_console(tmp_path):
    probe = "import django; django.setup(); from django.conf import settings as s; " \
            "print(s.EMAIL_BACKEND, s.EMAIL_HOST, s.EMAIL_PORT, s.EMAIL_HOST_USER, s.EMAIL_USE_TLS)"

    def settings_with(**env) -> str:
        environment = {key: value for key, value in os.environ.items() if key != "EMAIL_URL"}
        environment.update(DJANGO_SETTINGS_MODULE="tokensite.settings.local", **env)
        done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=environment, capture_output=True, text=True,
                              timeout=60, check=True)  # fmt: skip
        return done.stdout.strip()

    assert settings_with() == "django.core.mail.backends.console.EmailBackend localhost 25  False"
    assert settings_with(EMAIL_URL="smtp+tls://mailer:secret@smtp.example.com:587") == (
        "django.core.mail.backends.smtp.EmailBackend smtp.example.com 587 mailer True")


# --- Pages ---------------------------------------------------------------------------------------


def test_the_digest_page_shows_the_mails_content_to_members_only(smtp_server, two_days, subscribers, outsider):
    with time_machine.travel(WEDNESDAY_MORNING, tick=False):
        send()
        page = client_for(subscribers["daily-dora"]).get("/acme/digest/")
        weekly = client_for(subscribers["daily-dora"]).get("/acme/digest/", {"period": "weekly", "start": "2026-11-25"})
        foreign = client_for(outsider).get("/acme/digest/")
    assert page.status_code == 200 and page.context["period"].start == datetime(2026, 11, 24, tzinfo=UTC)
    html = page.content.decode()
    mail_html = next(iter(smtp_server.inbox.htmls().values()))
    for section in ("digest-projects", "digest-developers", "digest-models", "digest-throttled", "digest-unpriced"):
        assert _section(html, section) == _section(mail_html, section), section
    assert weekly.context["period"].start == datetime(2026, 11, 23, tzinfo=UTC)
    assert weekly.context["totals"]["total_tokens"] == 227_700 + 110_000
    assert foreign.status_code == 404


def _section(html: str, element_id: str) -> str:
    start = html.index(f'id="{element_id}"')
    return html[start:html.index("</table>", start)]


def test_the_settings_page_sets_the_users_own_digest(users):
    client = client_for(users["viewer"])
    page = client.get("/settings/")
    assert page.status_code == 200 and 'value="weekly"' in page.content.decode()
    refused = client.post("/settings/", {"frequency": "daily", "email": ""})
    assert refused.status_code == 400 and "Give an email address" in refused.content.decode()
    assert client.post("/settings/", {"frequency": "hourly"}).status_code == 400
    assert client.post("/settings/", {"frequency": "daily", "email": "not-an-address"}).status_code == 400
    saved = client.post("/settings/", {"frequency": "daily", "email": "viewer@example.com"}, follow=True)
    assert "Your daily digest goes to viewer@example.com." in saved.content.decode()
    subscription = DigestSubscription.objects.get(user=users["viewer"])
    assert (subscription.frequency, subscription.email) == ("daily", "viewer@example.com")
    client.post("/settings/", {"frequency": "off", "email": ""})
    assert DigestSubscription.objects.get(user=users["viewer"]).frequency == "off"
    assert DigestSubscription.objects.count() == 1  # only the signed-in user's own


def test_the_settings_page_needs_a_sign_in(client):
    response = client.get("/settings/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert client.post("/settings/", {"frequency": "daily", "email": "x@example.com"}).status_code == 302
    assert not DigestSubscription.objects.exists()


def test_a_member_without_a_subscription_sees_the_daily_digest_page(two_days, users):
    with time_machine.travel(WEDNESDAY_MORNING, tick=False):
        response = client_for(users["member"]).get("/acme/digest/", {"period": "nonsense"})
    assert response.status_code == 200 and response.context["period"].frequency == "daily"
    assert "Showing the last complete period instead." in response.content.decode()


def test_a_user_without_account_email_can_give_one(team):
    user = member_add(team=team, username="noemail", password=PASSWORD, role="member").user
    response = client_for(user).post("/settings/", {"frequency": "weekly", "email": "own@example.com"})
    assert response.status_code == 302
    assert DigestSubscription.objects.get(user=user).email == "own@example.com"


# --- Budgets (apps.budgets, BUDGETS_CONTRACT.md) ---------------------------------------------------


def test_budgets_near_their_limits_are_in_the_digest(smtp_server, two_days, subscribers, team):
    from apps.budgets.services import budget_create

    # November so far: $0.35 on Monday and $0.70 on Tuesday of gpt-4o, and 7,700 unpriced tokens.
    budget_create(team=team, period="month", amount_usd="1.00")  # 105 %: exceeded
    budget_create(team=team, period="month", amount_usd="100.00")  # about 1 %: left out
    budget_create(team=team, project=two_days["agents"], period="week", model="acme-unpriced-llm",
                  amount_tokens=8000)  # 96 % of its tokens  # fmt: skip
    budget_create(team=team, period="day", user="ada@example.com", amount_usd="5.00")  # Wednesday: nothing yet
    with time_machine.travel(WEDNESDAY_MORNING, tick=False):
        send("--frequency", "daily")
        page = client_for(subscribers["daily-dora"]).get("/acme/digest/")
    text = next(iter(smtp_server.inbox.texts().values()))
    section = text[text.index("BUDGETS NEAR THEIR LIMITS"):text.index("BY PROJECT")]
    lines = [line for line in section.splitlines()[1:] if line]
    assert len(lines) == 2, section
    assert lines[0].startswith("- whole team (month): $1.05 of $1.00 (+ 7,700 unpriced tokens), 105.0% EXCEEDED")
    assert lines[1].startswith("- project agents, model acme-unpriced-llm (week): 7,700 of 8,000 tokens, 96.")
    assert [row["name"] for row in page.context["budgets"]] == [
        "whole team", "project agents, model acme-unpriced-llm"]
    assert 'id="digest-budgets"' in page.content.decode()


def test_a_budget_forecast_past_its_amount_is_near_its_limit(smtp_server, team, project, subscribers):
    from apps.budgets.services import budget_create
    from tests.conftest import usage_event
    from tests.dashboards.conftest import ingest

    # $0.35 by the morning of the 3rd day of a 30-day month: 35 % spent, a run rate of about $4.
    ingest(project, [usage_event(session_id="early", timestamp=datetime(2026, 11, 2, 10, tzinfo=UTC).isoformat(),
                                 model="gpt-4o", input_tokens=100_000, output_tokens=10_000)])  # fmt: skip
    budget_create(team=team, period="month", amount_usd="1.00")
    with time_machine.travel(datetime(2026, 11, 3, 7, 30, tzinfo=UTC), tick=False):
        send("--frequency", "daily")
    text = next(iter(smtp_server.inbox.texts().values()))
    assert "- whole team (month): $0.35 of $1.00, 35.0%; forecast" in text and "(over)" in text


def test_a_team_without_usage_in_the_period_still_hears_of_a_budget_near_its_limit(smtp_server, team, project,
                                                                                    subscribers):  # fmt: skip
    from apps.budgets.services import budget_create
    from tests.conftest import usage_event
    from tests.dashboards.conftest import ingest

    # Spend on the 2nd, nothing on the 23rd or the 24th: the daily digest of the 24th has no usage.
    ingest(project, [usage_event(session_id="early", timestamp=datetime(2026, 11, 2, 10, tzinfo=UTC).isoformat(),
                                 model="gpt-4o", input_tokens=400_000, output_tokens=0)])  # fmt: skip
    with time_machine.travel(WEDNESDAY_MORNING, tick=False):
        assert "0 sent" in send("--frequency", "daily")
        budget_create(team=team, period="month", amount_usd="1.00")  # $1.00 of $1.00
        assert "1 sent" in send("--frequency", "daily")
    text = next(iter(smtp_server.inbox.texts().values()))
    assert "- whole team (month): $1.00 of $1.00, 100.0% EXCEEDED" in text and "No usage." in text
