"""Sending an alert's deliveries (email, webhook), each by one sender at a time, with retries.

A sender claims a pending delivery by moving its next_attempt_at past the send lease in one
conditional UPDATE: a concurrent sender finds nothing due and skips it. Every try is counted in
`attempts` before it starts. Transient failures (timeouts, 5xx, 429, SMTP errors) are tried again
at once with backoff, then left pending with a later next_attempt_at for a later evaluation;
permanent ones (a refused target, a 4xx) and running out of attempts mark it failed. A sender
that dies mid-send leaves the row pending: once the lease passes, a later evaluation sends it,
under the same alert (the receiver sees the same X-TokenSite-Delivery id).
"""
from __future__ import annotations

import json
import logging
import smtplib
import time
from datetime import timedelta

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.db.models import F
from django.utils import timezone

from apps.budgets.messages import alert_email_body, alert_subject, webhook_document
from apps.budgets.models import AlertDelivery
from apps.budgets.selectors import deliveries_due
from apps.budgets.webhooks import (
    DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookHostUnresolved, WebhookTargetRefused,
    webhook_signature, webhook_target_check,
)  # fmt: skip

logger = logging.getLogger(__name__)

# Longer than a whole send (TRIES_PER_SEND tries of at most the connect and read timeouts, and
# the backoff between them), so a live sender is never overtaken; a dead one delays its delivery
# by this much at most.
SEND_LEASE = timedelta(minutes=2)
TRIES_PER_SEND = 3
MAX_ATTEMPTS = 9  # three sends of three tries
LATER_BACKOFF = (timedelta(minutes=1), timedelta(minutes=5))  # before the second and third send
CONNECT_TIMEOUT_S = 3.0
USER_AGENT = "TokenSite-Webhooks/1"


class _Transient(Exception):
    """A failure that another try may cure."""


class _Permanent(Exception):
    """A failure that trying again will not cure."""


def _webhook_post(delivery: AlertDelivery) -> None:
    try:
        url = webhook_target_check(delivery.target)
    except WebhookHostUnresolved as exc:
        raise _Transient(exc.message) from exc
    except WebhookTargetRefused as exc:
        raise _Permanent(exc.message) from exc
    alert = delivery.alert
    body = json.dumps(webhook_document(alert, timestamp=int(time.time())), separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: webhook_signature(secret=alert.budget.webhook_secret, body=body),
        TIMESTAMP_HEADER: str(json.loads(body)["timestamp"]),
        DELIVERY_HEADER: f"alert-{alert.pk}-webhook",
    }
    try:
        # No redirects: a public URL answering 302 to an internal one must not reach it.
        response = requests.post(
            url, data=body, headers=headers, timeout=(CONNECT_TIMEOUT_S, settings.WEBHOOK_TIMEOUT_S),
            allow_redirects=False,
        )  # fmt: skip
    except requests.RequestException as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc
    if 200 <= response.status_code < 300:
        return
    detail = f"HTTP {response.status_code}: {response.text[:200]}"
    if response.status_code in (408, 425, 429) or response.status_code >= 500:
        raise _Transient(detail)
    raise _Permanent(detail)


def _email_send(delivery: AlertDelivery) -> None:
    alert = delivery.alert
    try:
        send_mail(alert_subject(alert), alert_email_body(alert), None, [delivery.target], fail_silently=False)
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
        raise _Permanent(f"{type(exc).__name__}: {exc}") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc


SENDERS = {AlertDelivery.Channel.WEBHOOK: _webhook_post, AlertDelivery.Channel.EMAIL: _email_send}


def _delivery_claim(delivery_id: int) -> AlertDelivery | None:
    now = timezone.now()
    claimed = AlertDelivery.objects.filter(
        pk=delivery_id, status=AlertDelivery.Status.PENDING, next_attempt_at__lte=now
    ).update(next_attempt_at=now + SEND_LEASE)
    if not claimed:
        return None
    return AlertDelivery.objects.select_related("alert__budget__team", "alert__budget__project").get(pk=delivery_id)


def _finish(delivery: AlertDelivery, **fields) -> str:
    AlertDelivery.objects.filter(pk=delivery.pk).update(**fields)
    return fields.get("status", AlertDelivery.Status.PENDING)


def delivery_send(*, delivery_id: int) -> str | None:
    """Send one due delivery, trying up to TRIES_PER_SEND times; its status after, or None when it
    is not due (sent, failed, or being sent by another sender)."""
    delivery = _delivery_claim(delivery_id)
    if delivery is None:
        return None
    send = SENDERS[delivery.channel]
    attempts = delivery.attempts
    error = ""
    for try_number in range(TRIES_PER_SEND):
        if attempts >= MAX_ATTEMPTS:
            break
        if try_number:
            time.sleep(settings.BUDGET_ALERT_RETRY_BACKOFF_S * 2 ** (try_number - 1))
        attempts += 1
        AlertDelivery.objects.filter(pk=delivery.pk).update(attempts=F("attempts") + 1)
        try:
            send(delivery)
        except _Permanent as exc:
            logger.warning("Alert delivery %s (%s) failed for good: %s", delivery.pk, delivery.channel, exc)
            return _finish(delivery, status=AlertDelivery.Status.FAILED, last_error=str(exc)[:2000])
        except _Transient as exc:
            error = str(exc)[:2000]
            logger.warning(
                "Alert delivery %s (%s), attempt %d failed: %s", delivery.pk, delivery.channel, attempts, exc
            )
            continue
        return _finish(delivery, status=AlertDelivery.Status.SENT, sent_at=timezone.now(), last_error="")
    if attempts >= MAX_ATTEMPTS:
        return _finish(delivery, status=AlertDelivery.Status.FAILED, last_error=error or "Out of attempts.")
    sends = attempts // TRIES_PER_SEND
    wait = LATER_BACKOFF[min(sends, len(LATER_BACKOFF)) - 1]
    return _finish(delivery, last_error=error, next_attempt_at=timezone.now() + wait)


def deliveries_send_due(*, limit: int = 100) -> tuple[int, int]:
    """Send every due delivery (new, or left pending by an earlier send); returns (sent, failed)."""
    sent = failed = 0
    for delivery_id in deliveries_due(now=timezone.now(), limit=limit):
        status = delivery_send(delivery_id=delivery_id)
        sent += status == AlertDelivery.Status.SENT
        failed += status == AlertDelivery.Status.FAILED
    return sent, failed
