"""Alerts: thresholds and forecasts claimed once per period, sent by email to a real SMTP server
and by webhook to a real HTTP receiver (signed, retried), with time moved by time-machine."""
from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta, timezone
from email import message_from_bytes

import pytest
import time_machine

from apps.budgets.alerts import budgets_evaluate
from apps.budgets.models import AlertDelivery, BudgetAlert
from apps.budgets.services import budget_create
from tests.budgets.conftest import spend
from tests.budgets.receivers import WebhookReceiver

pytestmark = pytest.mark.django_db

UTC = timezone.utc


def receiver_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def evaluate_at(instant: datetime):
    with time_machine.travel(instant, tick=False):
        return budgets_evaluate()


def threshold_budget(**fields):
    """A budget without the forecast warning: early in a period any spend projects far."""
    return budget_create(forecast_warning=False, **fields)


def alert_keys(budget) -> list[tuple]:
    return sorted(BudgetAlert.objects.filter(budget=budget).values_list("period_start", "kind", "threshold"))


def test_crossing_thresholds_posts_one_signed_webhook_each_and_only_once(team, project, receiver):
    budget = threshold_budget(team=team, period="month", amount_usd="10", webhook_url=receiver.url)
    spend(project, utc(2026, 11, 20, 9), calls=3)  # $7.50: 75 %
    evaluation = evaluate_at(utc(2026, 11, 20, 9, 1))
    assert (evaluation.alerts, evaluation.sent) == (1, 1)
    spend(project, utc(2026, 11, 20, 10))  # $10: 100 %, 80 % crossed on the way
    evaluate_at(utc(2026, 11, 20, 10, 1))
    evaluate_at(utc(2026, 11, 20, 10, 2))  # nothing new: each alert goes out once

    assert [r.document["alert"]["threshold"] for r in receiver.requests] == [50, 80, 100]
    assert alert_keys(budget) == [(utc(2026, 11, 1), "threshold", t) for t in (50, 80, 100)]
    first = receiver.requests[0]
    # What a receiver checks: the HMAC-SHA256 of the raw body under the budget's secret.
    assert first.headers["X-TokenSite-Signature"] == receiver_signature(budget.webhook_secret, first.body)
    assert first.headers["X-TokenSite-Signature"] != receiver_signature("another-secret", first.body)
    assert first.headers["Content-Type"] == "application/json"
    document = first.document
    assert str(document["timestamp"]) == first.headers["X-TokenSite-Timestamp"]
    # Slack and Teams incoming webhooks read `text`; the rest is for other receivers.
    assert document["text"] == (
        "TokenSite: team acme reached 50% of its monthly budget (2026-11-01 to 2026-12-01 UTC): $7.50 of $10.00 spent."
    )
    assert document["event"] == "budget.threshold"
    assert document["budget"] == {
        "id": budget.pk, "team": "acme", "scope": "team", "project": None, "user": "", "model": "",
        "period": "month", "amount_usd": "10.00", "amount_tokens": None, "hard": False,
    }  # fmt: skip
    assert document["alert"]["spent_usd"] == "7.5000" and document["alert"]["share"] == 0.75
    assert document["alert"]["period_start"] == "2026-11-01T00:00:00Z"
    statuses = set(AlertDelivery.objects.values_list("status", "attempts"))
    assert statuses == {("sent", 1)}


def test_alert_mail_reaches_a_real_smtp_server(team, project, smtp_server):
    threshold_budget(team=team, project=project, period="week", amount_usd="4", email="lead@example.com")
    spend(project, utc(2026, 11, 17, 9), calls=1)  # $2.50 of $4: 62.5 %
    evaluation = evaluate_at(utc(2026, 11, 17, 10))
    assert evaluation.sent == 1
    [envelope] = smtp_server.messages
    assert envelope.rcpt_tos == ["lead@example.com"]
    message = message_from_bytes(envelope.content)
    assert message["Subject"] == "[TokenSite] acme/chatbot: 50% of the weekly budget spent"
    body = message.get_payload(decode=True).decode()
    assert "acme/chatbot reached 50% of its weekly budget (2026-11-16 to 2026-11-23 UTC): $2.50 of $4.00" in body
    assert AlertDelivery.objects.get().status == AlertDelivery.Status.SENT


def test_a_receiver_failing_twice_gets_the_alert_on_the_third_try(team, project):
    receiver = WebhookReceiver(statuses=[500, 503]).start()
    try:
        threshold_budget(team=team, period="day", amount_usd="5", thresholds=[50], webhook_url=receiver.url)
        spend(project, utc(2026, 11, 20, 9))
        evaluation = evaluate_at(utc(2026, 11, 20, 9, 1))
    finally:
        receiver.stop()
    assert evaluation.sent == 1 and len(receiver.requests) == 3
    # The same alert each time: one delivery id, three signed bodies.
    delivery_ids = {r.headers["X-TokenSite-Delivery"] for r in receiver.requests}
    assert delivery_ids == {f"alert-{BudgetAlert.objects.get().pk}-webhook"}
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 3, "")
    assert delivery.sent_at == utc(2026, 11, 20, 9, 1)


def test_a_receiver_that_stays_down_is_retried_by_later_evaluations_then_given_up(team, project):
    receiver = WebhookReceiver(statuses=[502] * 9).start()
    try:
        threshold_budget(team=team, period="day", amount_usd="5", thresholds=[50], webhook_url=receiver.url)
        spend(project, utc(2026, 11, 20, 9))
        evaluate_at(utc(2026, 11, 20, 9, 1))
        delivery = AlertDelivery.objects.get()
        assert (delivery.status, delivery.attempts) == ("pending", 3)
        assert delivery.last_error.startswith("HTTP 502")
        assert delivery.next_attempt_at == utc(2026, 11, 20, 9, 2)  # one minute of backoff
        evaluate_at(utc(2026, 11, 20, 9, 1, 30))  # not due yet
        assert len(receiver.requests) == 3
        evaluate_at(utc(2026, 11, 20, 9, 2))
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("pending", 6, utc(2026, 11, 20, 9, 7))
        evaluate_at(utc(2026, 11, 20, 9, 7))
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts) == ("failed", 9)
        evaluate_at(utc(2026, 11, 20, 10))
    finally:
        receiver.stop()
    assert len(receiver.requests) == 9 and BudgetAlert.objects.count() == 1


def test_a_receiver_refusing_the_body_is_not_retried(team, project):
    receiver = WebhookReceiver(statuses=[404]).start()
    try:
        threshold_budget(team=team, period="day", amount_usd="5", thresholds=[50], webhook_url=receiver.url)
        spend(project, utc(2026, 11, 20, 9))
        evaluate_at(utc(2026, 11, 20, 9, 1))
        evaluate_at(utc(2026, 11, 20, 12))
    finally:
        receiver.stop()
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts, len(receiver.requests)) == ("failed", 1, 1)
    assert delivery.last_error.startswith("HTTP 404")


def test_a_crossing_in_the_last_seconds_of_a_day_alerts_for_that_day_after_midnight(team, project, receiver):
    budget = threshold_budget(team=team, period="day", amount_usd="5", thresholds=[50, 100], webhook_url=receiver.url)
    spend(project, utc(2026, 11, 20, 23, 59, 50), calls=2)  # $5 in the day's last seconds
    evaluate_at(utc(2026, 11, 21, 0, 0, 40))  # the next evaluation is already in the new day
    assert alert_keys(budget) == [(utc(2026, 11, 20), "threshold", 50), (utc(2026, 11, 20), "threshold", 100)]
    assert [r.document["alert"]["period_start"] for r in receiver.requests] == ["2026-11-20T00:00:00Z"] * 2
    # Past the grace window the ended day is left alone, and the new day has spent nothing.
    evaluate_at(utc(2026, 11, 21, 1))
    assert len(receiver.requests) == 2


def test_a_new_period_starts_with_no_alerts_raised(team, project, receiver):
    budget = threshold_budget(team=team, period="day", amount_usd="5", thresholds=[80], webhook_url=receiver.url)
    spend(project, utc(2026, 11, 20, 9), calls=2)
    evaluate_at(utc(2026, 11, 20, 9, 1))
    evaluate_at(utc(2026, 11, 21, 9, 1))  # a new day: nothing spent yet, nothing to say
    spend(project, utc(2026, 11, 21, 10), calls=2)
    evaluate_at(utc(2026, 11, 21, 10, 1))
    assert alert_keys(budget) == [(utc(2026, 11, 20), "threshold", 80), (utc(2026, 11, 21), "threshold", 80)]
    assert len(receiver.requests) == 2


def test_forecast_alert_when_the_run_rate_projects_past_the_amount(team, project, receiver):
    budget = budget_create(team=team, period="month", amount_usd="100", webhook_url=receiver.url)
    spend(project, utc(2026, 11, 2, 12), calls=4)  # $10 early in the month
    evaluate_at(utc(2026, 11, 11))  # 10 days in: 10 % spent, 30 % forecast
    assert alert_keys(budget) == []
    spend(project, utc(2026, 11, 11, 6), calls=8)  # $30 by the 11th: 30 % spent, 90 % forecast
    evaluate_at(utc(2026, 11, 11, 7))
    assert alert_keys(budget) == []
    spend(project, utc(2026, 11, 11, 8), calls=4)  # $40: 40 % spent, 40 % x 30 / 10.33 days = 116 %
    evaluate_at(utc(2026, 11, 11, 8, 1))
    assert alert_keys(budget) == [(utc(2026, 11, 1), "forecast", 100)]
    [request] = receiver.requests
    assert request.document["event"] == "budget.forecast"
    assert request.document["text"].startswith("TokenSite: team acme is on track to exceed its monthly budget")
    assert request.document["alert"]["forecast_share"] == pytest.approx(0.4 * 30 / (10 + 8 / 24 + 1 / 1440), abs=1e-4)
    evaluate_at(utc(2026, 11, 12))  # still projecting past: no second forecast alert
    assert len(receiver.requests) == 1


def test_forecast_warning_can_be_turned_off(team, project, receiver):
    budget = budget_create(team=team, period="month", amount_usd="100", webhook_url=receiver.url,
                           forecast_warning=False)  # fmt: skip
    spend(project, utc(2026, 11, 2, 12), calls=16)  # 40 % by the 3rd: forecast 400 %
    evaluate_at(utc(2026, 11, 3))
    assert alert_keys(budget) == []
    assert receiver.requests == []


def test_alerts_of_a_budget_without_channels_are_recorded(team, project):
    budget = threshold_budget(team=team, period="day", amount_tokens=1_500_000)
    spend(project, utc(2026, 11, 20, 9))
    evaluation = evaluate_at(utc(2026, 11, 20, 9, 1))
    assert (evaluation.alerts, evaluation.sent) == (1, 0)
    alert = BudgetAlert.objects.get(budget=budget)
    assert (alert.threshold, alert.spent_tokens, alert.share) == (50, 1_000_000, pytest.approx(2 / 3))
    assert not AlertDelivery.objects.exists()


def test_a_webhook_target_turned_private_is_refused_at_send_time(team, project, receiver, settings):
    threshold_budget(team=team, period="day", amount_usd="5", thresholds=[50], webhook_url=receiver.url)
    settings.WEBHOOK_ALLOW_PRIVATE = False
    spend(project, utc(2026, 11, 20, 9))
    evaluate_at(utc(2026, 11, 20, 9, 1))
    delivery = AlertDelivery.objects.get()
    assert delivery.status == "failed" and "loopback, private or link-local" in delivery.last_error
    assert receiver.requests == []


def test_a_webhook_host_that_does_not_resolve_is_retried_later(team, project, settings):
    budget_create(team=team, period="day", amount_usd="5", thresholds=[50], forecast_warning=False,
                  webhook_url="https://no-such-host.invalid/hook")  # fmt: skip
    settings.WEBHOOK_ALLOW_PRIVATE = False
    spend(project, utc(2026, 11, 20, 9))
    evaluate_at(utc(2026, 11, 20, 9, 1))
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("pending", 3) and "does not resolve" in delivery.last_error
