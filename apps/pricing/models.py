"""Per-project price overrides: a team's negotiated or self-hosted prices win over litellm's map."""
from django.conf import settings
from django.db import models
from tokensite_client.events import MAX_MODEL_CHARS

from apps.accounts.models import Project


class PriceOverride(models.Model):
    """Prices per million tokens for one model of one project, in force from `effective_from`.

    Rows are never edited in place: a new price is a new row, so history is kept and an event is
    priced by the override in force at its timestamp.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="price_overrides")
    model = models.CharField(max_length=MAX_MODEL_CHARS)
    input_per_million_usd = models.DecimalField(max_digits=14, decimal_places=6)
    output_per_million_usd = models.DecimalField(max_digits=14, decimal_places=6)
    cache_read_per_million_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    cache_write_per_million_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    effective_from = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        indexes = [models.Index(fields=["project", "model", "-effective_from"], name="override_lookup")]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from:%Y-%m-%d}"


class PriceBook(models.Model):
    """A price file in litellm's format that an operator imported (`manage.py prices_import`).

    The installation's prices, beside litellm's bundled map (book `litellm-<version>`): each map
    key is read from the newest book that lists it. Rows are never edited or deleted, because
    stored costs name the book that priced them (`RawEvent.price_book`).
    """

    # `import-<sequence>-<first 12 hex digits of the file's SHA-256>`.
    version = models.CharField(max_length=64, unique=True)
    sha256 = models.CharField(max_length=64)
    file_name = models.CharField(max_length=255, blank=True, default="")
    # The file exactly as imported (after validation): its hash can be checked against any copy.
    prices_json = models.TextField()
    imported_at = models.DateTimeField()
    model_count = models.PositiveIntegerField()  # entries priced per token
    # Map keys compared with the books before this one (the bundled map for the first).
    newly_priced = models.JSONField(default=list)  # priced here, by no earlier book
    price_changed = models.JSONField(default=list)  # priced before, at other prices
    not_listed = models.JSONField(default=list)  # priced by the previous book, absent here: still priced by it

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.version


class ContextWindowOverride(models.Model):
    """A project's input window for one model, in tokens; wins over litellm's `max_input_tokens`
    (a self-hosted model, a model the map lacks, a deployment serving a smaller window).

    One row per model, changed in place: a call's share of the window is fixed when it is
    ingested (apps.pricing.context_windows), so a change applies to calls ingested after it.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="context_window_overrides")
    model = models.CharField(max_length=MAX_MODEL_CHARS)
    max_input_tokens = models.BigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "model"], name="context_window_unique_project_model"),
            models.CheckConstraint(condition=models.Q(max_input_tokens__gt=0), name="context_window_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.model}: {self.max_input_tokens} input tokens"
