"""Who wants a digest, how often, and which digests went out (one row per user, team and period)."""
from django.conf import settings
from django.db import models

from apps.accounts.models import Team


class Frequency(models.TextChoices):
    OFF = "off"
    DAILY = "daily"
    WEEKLY = "weekly"


class DigestSubscription(models.Model):
    """A user's own choice: no digest (the default), a daily one, or a weekly one, for every team
    they belong to, sent to `email` (or the account's email when blank)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="digest_subscription")
    frequency = models.CharField(max_length=8, choices=Frequency.choices, default=Frequency.OFF)
    email = models.EmailField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.user} {self.frequency}"


class DigestDelivery(models.Model):
    """One digest of one team for one user and period. The unique row is the claim that makes a
    digest go out once however often `send_digest` runs, and keeps its delivery status."""

    class Status(models.TextChoices):
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    frequency = models.CharField(max_length=8, choices=Frequency.choices)
    period_start = models.DateTimeField()  # UTC: a day, or an ISO week starting on Monday
    email = models.EmailField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.SENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    claimed_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "team", "frequency", "period_start"], name="digestdelivery_unique_user_team_period"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.frequency} digest of {self.team} for {self.user} ({self.status})"
