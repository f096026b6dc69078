"""Budgets on a team's or a project's spend, the alerts they raised and the deliveries of those alerts.

Spend is never stored here: it is read from the metrics aggregates (apps.budgets.selectors).
"""
from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from tokensite_client.events import MAX_MODEL_CHARS

from apps.accounts.models import Project, Team


def webhook_secret_new() -> str:
    return secrets.token_hex(32)


class Budget(models.Model):
    """An amount (USD, or tokens for models nobody prices) a scope may spend per UTC calendar period."""

    class Period(models.TextChoices):
        DAY = "day"
        WEEK = "week"  # ISO week, starting Monday 00:00 UTC
        MONTH = "month"

    DEFAULT_THRESHOLDS = (50, 80, 100)

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="budgets")
    # Null: the whole team, every project.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets")
    user = models.CharField(max_length=200, blank=True, default="")  # the events' `user`; blank: everyone
    model = models.CharField(max_length=MAX_MODEL_CHARS, blank=True, default="")  # blank: every model
    period = models.CharField(max_length=8, choices=Period.choices)
    amount_usd = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    amount_tokens = models.BigIntegerField(null=True, blank=True)
    thresholds = models.JSONField(default=list)  # percents, ascending; see services.budget_create
    forecast_warning = models.BooleanField(default=True)
    hard = models.BooleanField(default=False)  # the SDK's budget_guard refuses calls once it is spent
    webhook_url = models.URLField(max_length=2000, blank=True, default="")
    # Signs each webhook body (X-TokenSite-Signature), so the receiver can verify it came from here.
    webhook_secret = models.CharField(max_length=64, default=webhook_secret_new)
    email = models.EmailField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(amount_usd__isnull=False, amount_tokens__isnull=True))
                | (models.Q(amount_usd__isnull=True, amount_tokens__isnull=False)),
                name="budget_one_amount",
            ),
        ]
        indexes = [models.Index(fields=["team", "project"], name="budget_team_project")]

    def __str__(self) -> str:
        scope = self.project.slug if self.project_id else f"team {self.team.slug}"
        return f"budget {self.pk} ({scope}, {self.period})"

    @property
    def scope(self) -> str:
        return "project" if self.project_id else "team"


class BudgetAlert(models.Model):
    """One alert of a budget in one period. Its unique key is the exactly-once claim: whoever
    inserts the row sends it (through its deliveries); everyone else finds it there."""

    class Kind(models.TextChoices):
        THRESHOLD = "threshold"
        FORECAST = "forecast"  # threshold is 100: the run rate projects past the amount

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    period_start = models.DateTimeField()  # UTC
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.THRESHOLD)
    threshold = models.PositiveIntegerField()  # percent
    spent_usd = models.DecimalField(max_digits=20, decimal_places=9)
    spent_tokens = models.BigIntegerField()
    share = models.FloatField()  # spent / amount when the alert was raised
    forecast_share = models.FloatField()
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "period_start", "kind", "threshold"], name="budgetalert_once_per_period"
            ),
        ]
        indexes = [models.Index(fields=["budget", "-created_at"], name="budgetalert_budget_created")]

    def __str__(self) -> str:
        return f"{self.kind} {self.threshold}% of budget {self.budget_id} ({self.period_start:%Y-%m-%d})"


class AlertDelivery(models.Model):
    """One channel's delivery of an alert. Pending until sent or out of attempts; a sender claims a
    pending row by moving its next_attempt_at forward, so a sender that dies leaves it for a later one."""

    class Channel(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    alert = models.ForeignKey(BudgetAlert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    target = models.CharField(max_length=2000)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["alert", "channel"], name="alertdelivery_one_per_channel"),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="alertdelivery_due")]

    def __str__(self) -> str:
        return f"{self.channel} to {self.target}: {self.status}"
