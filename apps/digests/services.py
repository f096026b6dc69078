"""Digest writes: a user's choice, and sending each due digest once (claim, render, mail, record)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import F
from django.template.loader import render_to_string
from django.urls import reverse

from apps.core.errors import BadRequest, ErrorCode
from apps.digests.models import DigestDelivery, DigestSubscription, Frequency
from apps.digests.selectors import DigestPeriod, DigestRecipient, digest_period_last_complete, digest_recipients, team_digest

logger = logging.getLogger(__name__)

# A claim older than this whose sender never recorded an outcome (it died mid-send) is taken again.
STALE_CLAIM = timedelta(minutes=15)
# A digest whose mail failed this many times is left alone: the next period's will try again.
MAX_ATTEMPTS = 5


def digest_subscription_set(*, user, frequency: str, email: str = "") -> DigestSubscription:
    """Set the user's digest frequency (off, daily, weekly) and address (blank: the account's email)."""
    if frequency not in Frequency.values:
        raise BadRequest(f"Frequency must be one of {', '.join(Frequency.values)}.", code=ErrorCode.INVALID_FREQUENCY)
    email = email.strip()
    if email:
        try:
            validate_email(email)
        except ValidationError as error:
            raise BadRequest(f"{email!r} is not an email address.", code=ErrorCode.INVALID_EMAIL) from error
    if frequency != Frequency.OFF and not (email or user.email):
        raise BadRequest("Give an email address to send the digest to.", code=ErrorCode.INVALID_EMAIL)
    subscription, _ = DigestSubscription.objects.update_or_create(
        user=user, defaults={"frequency": frequency, "email": email}
    )
    return subscription


def digest_page_url(*, team_slug: str, period: DigestPeriod) -> str:
    """The digest's page, absolute (SITE_URL), for the mail's link."""
    path = reverse("team-digest", args=[team_slug])
    return f"{settings.SITE_URL}{path}?period={period.frequency}&start={period.start:%Y-%m-%d}"


def digest_message(*, recipient: DigestRecipient, digest: dict) -> EmailMultiAlternatives:
    """The digest as a mail: plain text, with the same sections as HTML beside it."""
    period: DigestPeriod = digest["period"]
    context = {**digest, "page_url": digest_page_url(team_slug=recipient.team.slug, period=period),
               "settings_url": f"{settings.SITE_URL}{reverse('user-settings')}", "recipient": recipient}  # fmt: skip
    subject = f"TokenSite {period.frequency} digest for {recipient.team.name}: {period.label}"
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("digests/email.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[recipient.email],
    )
    message.attach_alternative(render_to_string("digests/email.html", context), "text/html")
    return message


def _claim(*, recipient: DigestRecipient, period: DigestPeriod, now: datetime, force: bool) -> DigestDelivery | None:
    """Take the (user, team, period) delivery row for this sender, or None when it is sent, being
    sent by someone else, or has failed too often. The unique row makes two racing runs send once."""
    key = dict(user_id=recipient.user_id, team=recipient.team, frequency=period.frequency, period_start=period.start)
    try:
        with transaction.atomic():
            return DigestDelivery.objects.create(**key, email=recipient.email, attempts=1, claimed_at=now)
    except IntegrityError:
        pass
    delivery = DigestDelivery.objects.get(**key)
    retake = (
        force
        or (delivery.status == DigestDelivery.Status.FAILED and delivery.attempts < MAX_ATTEMPTS)
        or (delivery.status == DigestDelivery.Status.SENDING and delivery.claimed_at < now - STALE_CLAIM)
    )
    if not retake:
        return None
    # Only one sender wins the retake: the update matches the row as this sender read it.
    taken = DigestDelivery.objects.filter(pk=delivery.pk, status=delivery.status, attempts=delivery.attempts).update(
        status=DigestDelivery.Status.SENDING, attempts=F("attempts") + 1, claimed_at=now, email=recipient.email
    )
    if not taken:
        return None
    delivery.refresh_from_db()
    return delivery


@dataclass
class DigestRun:
    sent: list[str] = field(default_factory=list)  # "user team period" of each mail sent
    empty: int = 0  # teams with no usage in either period: nothing worth a mail
    already: int = 0  # sent (or being sent) before
    failed: list[str] = field(default_factory=list)


def digests_send(
    *, now: datetime, frequency: str | None = None, username: str | None = None, team_slug: str | None = None,
    force: bool = False,
) -> DigestRun:
    """Send every due digest once: for each member who chose daily (or weekly) and each of their
    teams, the last complete day (ISO week) whose send hour has come. Safe to run any number of times."""
    run = DigestRun()
    frequencies = [frequency] if frequency else [Frequency.DAILY, Frequency.WEEKLY]
    for chosen in frequencies:
        period = digest_period_last_complete(frequency=chosen, now=now, send_hour_utc=settings.DIGEST_SEND_HOUR_UTC)
        digests: dict[int, dict] = {}
        for recipient in digest_recipients(frequency=chosen, username=username, team_slug=team_slug):
            if recipient.team.pk not in digests:
                digests[recipient.team.pk] = team_digest(team=recipient.team, period=period, now=now)
            digest = digests[recipient.team.pk]
            if not digest["has_usage"] and not digest["budgets"]:
                run.empty += 1
                continue
            delivery = _claim(recipient=recipient, period=period, now=now, force=force)
            if delivery is None:
                run.already += 1
                continue
            label = f"{recipient.username} {recipient.team.slug} {chosen} {period.start:%Y-%m-%d}"
            try:
                digest_message(recipient=recipient, digest=digest).send()
            except Exception as error:  # noqa: BLE001 - any mail failure is recorded and retried next run
                logger.warning("Digest %s not sent: %s", label, error)
                DigestDelivery.objects.filter(pk=delivery.pk).update(
                    status=DigestDelivery.Status.FAILED, last_error=f"{type(error).__name__}: {error}"[:2000]
                )
                run.failed.append(label)
                continue
            DigestDelivery.objects.filter(pk=delivery.pk).update(
                status=DigestDelivery.Status.SENT, sent_at=now, last_error=""
            )
            run.sent.append(label)
    return run
