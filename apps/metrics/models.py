"""Aggregates folded from raw events: per session, per session and step, per session and model,
and time buckets per project and model. Every number here can be rebuilt from ingestion.RawEvent."""
from datetime import timedelta

from django.db import models

from apps.accounts.models import Project
from apps.metrics import algorithms as algo


class TokenSums(models.Model):
    """Token kinds of DESIGN.md section 1 plus the sums rates and cost are derived from."""

    calls = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    tool_tokens = models.BigIntegerField(default=0)
    thought_tokens = models.BigIntegerField(default=0)
    # Output tokens of calls with a positive generation time, and that time (DESIGN.md section 3).
    # Times are integer microseconds so sums are exact whatever order batches arrive in.
    timed_output_tokens = models.BigIntegerField(default=0)
    generation_us = models.BigIntegerField(default=0)
    throttle_count = models.BigIntegerField(default=0)
    throttle_wait_us = models.BigIntegerField(default=0)
    cost_nanousd = models.BigIntegerField(default=0)  # sum over priced calls only
    unpriced_tokens = models.BigIntegerField(default=0)
    unpriced_calls = models.BigIntegerField(default=0)
    estimated_calls = models.BigIntegerField(default=0)  # counts estimated by a tokeniser

    class Meta:
        abstract = True

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def tokens_per_second(self) -> float | None:
        return algo.tokens_per_second(self.timed_output_tokens, self.generation_us)

    @property
    def throttle_wait_ms(self) -> float:
        return self.throttle_wait_us / 1000


class ContextWindowPressure(models.Model):
    """How full the calls' input windows were, over the calls of a session's step or model
    (apps.metrics.context_windows; each call's share is fixed at ingest, apps.pricing.context_windows).

    Calls of a model whose window is unknown count in no column here: a row with no known call
    has a NULL largest share, shown as "unknown", never 0%.
    """

    context_known_calls = models.BigIntegerField(default=0, db_default=0)  # calls with a known window
    context_max_share = models.FloatField(null=True, blank=True)  # largest input / window; may exceed 1
    context_calls_over_80 = models.BigIntegerField(default=0, db_default=0)  # share > 0.80
    context_calls_over_95 = models.BigIntegerField(default=0, db_default=0)  # share > 0.95

    class Meta:
        abstract = True


class SessionAggregate(TokenSums):
    # No index of the project alone: with statistics that predate a project's sessions, the
    # planner took it over the (project, session) key for a per-session lookup and read every
    # session of the project (as RawEvent.Meta tells). The key's index serves project lookups.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="sessions", db_index=False)
    session_id = models.CharField(max_length=200)
    started_at = models.DateTimeField(null=True)  # earliest event timestamp
    ended_at = models.DateTimeField(null=True)  # latest end of a call or a throttle wait
    event_count = models.BigIntegerField(default=0)
    burst_1s = models.FloatField(default=0)  # tokens/s, DESIGN.md section 4
    burst_10s = models.FloatField(default=0)
    burst_60s = models.FloatField(default=0)
    peak_concurrency = models.IntegerField(default=0)
    throttled_us = models.BigIntegerField(default=0)  # union of wait intervals, for the share of wall time
    attributes = models.JSONField(default=dict, blank=True)  # first value seen of each attribute
    # Retention (apps.ingestion.retention) deleted raw events of this session ending at or before
    # this instant; null: none. Sums stay exact, but a fold whose bursts, concurrency or throttle
    # attribution would need those events computes them from what is left and sets
    # peaks_approximate, shown on every surface, rather than pretending they are exact.
    raw_pruned_through = models.DateTimeField(null=True, blank=True)
    peaks_approximate = models.BooleanField(default=False, db_default=False)
    # The folded calls a later in-order batch can need to update the peaks, so live traffic does
    # not re-read the session's history (apps.metrics.recent_calls); null: none kept, the fold
    # reloads them from the raw events.
    recent_calls = models.BinaryField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "session_id"], name="sessionagg_unique_project_session"),
        ]
        # No index on a column every fold changes (cost, tokens, ...): PostgreSQL can then update a
        # row in place on its page (a HOT update, pages filled to 50%: migration 0007) instead of
        # writing a new entry into every index, which is most of the fold's work on live traffic.
        # The sessions table filters on the start range and sorts what it finds.
        indexes = [
            models.Index(fields=["project", "-started_at"], name="sessionagg_project_started"),
        ]

    @property
    def wall_us(self) -> int:
        if self.started_at is None or self.ended_at is None:
            return 0
        return (self.ended_at - self.started_at) // timedelta(microseconds=1)

    @property
    def throttle_share_of_wall_time(self) -> float:
        wall_us = self.wall_us
        return min(1.0, self.throttled_us / wall_us) if wall_us > 0 else 0.0


# The step and model rows' link to their session has no database constraint and no index of its
# own: only the fold writes these rows, under the lock of their session row (which it has just
# read or created), so a per-row referential check proved nothing and cost the live fold about
# 10 ms per 1,000 sessions in deferred checks at commit; their unique key leads with the session
# and serves every lookup by session. Django's collector still deletes them with their session.
class SessionStepAggregate(TokenSums, ContextWindowPressure):
    session = models.ForeignKey(SessionAggregate, on_delete=models.CASCADE, related_name="steps", db_index=False,
                                db_constraint=False)  # fmt: skip
    step = models.CharField(max_length=100)
    first_timestamp = models.DateTimeField(null=True)  # orders breakdown_by_step (DESIGN.md section 7)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["session", "step"], name="stepagg_unique_session_step")]


class SessionModelAggregate(TokenSums, ContextWindowPressure):
    session = models.ForeignKey(SessionAggregate, on_delete=models.CASCADE, related_name="models", db_index=False,
                                db_constraint=False)  # fmt: skip
    provider = models.CharField(max_length=100, blank=True, default="")
    model = models.CharField(max_length=200, blank=True, default="")
    price_source = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["session", "provider", "model"], name="modelagg_unique_session_model"),
        ]


class UsageBucket(models.Model):
    """Tokens placed in time (DESIGN.md section 4) per project, model and minute (or hour, once compacted)."""

    class Granularity(models.TextChoices):
        MINUTE = "minute"
        HOUR = "hour"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="usage_buckets")
    granularity = models.CharField(max_length=8, choices=Granularity.choices, default=Granularity.MINUTE)
    bucket_start = models.DateTimeField()
    provider = models.CharField(max_length=100, blank=True, default="")
    model = models.CharField(max_length=200, blank=True, default="")
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    calls = models.BigIntegerField(default=0)
    throttle_count = models.BigIntegerField(default=0)
    throttle_wait_us = models.BigIntegerField(default=0)
    cost_nanousd = models.BigIntegerField(default=0)
    unpriced_tokens = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "granularity", "bucket_start", "provider", "model"], name="bucket_unique_key"
            ),
        ]
        indexes = [models.Index(fields=["project", "granularity", "bucket_start"], name="bucket_project_time")]


class QuarantinedSession(models.Model):
    """A session the fold gave up on: folding it raised an error that retrying will not cure
    (apps.metrics.quarantine). Its events stay queued (ingestion.PendingEvent) but no fold or
    sweep takes them until an operator releases it (`manage.py fold_quarantine --release`)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="quarantined_sessions")
    session_id = models.CharField(max_length=200)
    error = models.TextField()  # the exception that quarantined it, as "Type: message"
    quarantined_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "session_id"], name="quarantine_unique_project_session"),
        ]

    def __str__(self) -> str:
        return f"quarantined {self.session_id}"
