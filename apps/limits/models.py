"""The rate limits providers announce per project and model, and how often they answered 429."""
from django.db import models
from tokensite_client.events import MAX_MODEL_CHARS, MAX_PROVIDER_CHARS

from apps.accounts.models import Project


class ProviderLimit(models.Model):
    """The latest limits a provider announced for one model of a project (apps.limits.headers):
    per dimension the limit per minute, what remained and when it resets. Each part is the newest
    one seen by event time; a part never announced stays null."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="provider_limits")
    provider = models.CharField(max_length=MAX_PROVIDER_CHARS, blank=True, default="")
    model = models.CharField(max_length=MAX_MODEL_CHARS, blank=True, default="")
    observed_at = models.DateTimeField()  # timestamp of the newest event that announced any part
    requests_limit = models.BigIntegerField(null=True)
    requests_remaining = models.BigIntegerField(null=True)
    requests_reset = models.CharField(max_length=64, null=True)
    tokens_limit = models.BigIntegerField(null=True)
    tokens_remaining = models.BigIntegerField(null=True)
    tokens_reset = models.CharField(max_length=64, null=True)
    input_tokens_limit = models.BigIntegerField(null=True)
    input_tokens_remaining = models.BigIntegerField(null=True)
    input_tokens_reset = models.CharField(max_length=64, null=True)
    output_tokens_limit = models.BigIntegerField(null=True)
    output_tokens_remaining = models.BigIntegerField(null=True)
    output_tokens_reset = models.CharField(max_length=64, null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "provider", "model"], name="providerlimit_unique_model"),
        ]
        indexes = [models.Index(fields=["project", "-observed_at"], name="providerlimit_project_latest")]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} limits at {self.observed_at}"


class RateLimitedMinute(models.Model):
    """How many 429 answers a project's calls to one model met in one minute (throttle events
    with status 429; overload answers, 503 and 529, are not rate limits and are not counted)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rate_limited_minutes")
    provider = models.CharField(max_length=MAX_PROVIDER_CHARS, blank=True, default="")
    model = models.CharField(max_length=MAX_MODEL_CHARS, blank=True, default="")
    minute_start = models.DateTimeField()
    responses_429 = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "minute_start", "provider", "model"],
                                    name="ratelimitedminute_unique_key"),
        ]

    def __str__(self) -> str:
        return f"{self.responses_429} x 429 for {self.provider}/{self.model} at {self.minute_start}"
