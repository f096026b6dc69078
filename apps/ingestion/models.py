"""Raw events: the append-only source of truth every aggregate can be rebuilt from."""
from django.db import models

from apps.accounts.models import Project


class RawEvent(models.Model):
    class Type(models.TextChoices):
        USAGE = "usage"
        THROTTLE = "throttle"

    class TokenSource(models.TextChoices):
        CLIENT = "client"  # counts sent by the client
        USAGE_RAW = "usage_raw"  # normalised from the provider's own usage object
        ESTIMATED = "estimated"  # counted by the server from text with the model's tokeniser

    id = models.BigAutoField(primary_key=True)
    # No index of its own: see Meta.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="raw_events", db_index=False)
    event_id = models.UUIDField()
    type = models.CharField(max_length=8, choices=Type.choices)
    session_id = models.CharField(max_length=200)
    step = models.CharField(max_length=100, default="default")
    provider = models.CharField(max_length=100, blank=True, default="")
    model = models.CharField(max_length=200, blank=True, default="")
    call_id = models.CharField(max_length=200, null=True, blank=True)
    timestamp = models.DateTimeField()
    # timestamp + duration (usage) or + wait (throttle): lets range queries find overlapping events.
    end_at = models.DateTimeField()
    received_at = models.DateTimeField()
    attributes = models.JSONField(default=dict, blank=True)

    duration_ms = models.FloatField(default=0)
    time_to_first_token_ms = models.FloatField(null=True, blank=True)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    # The part of cache_write_tokens written for one hour (DESIGN.md section 1).
    # db_default too: writers that name no column for it (code of the previous release during a
    # rolling deploy, COPY loaders) still insert rows.
    cache_write_1h_tokens = models.BigIntegerField(default=0, db_default=0)
    tool_tokens = models.BigIntegerField(default=0)
    thought_tokens = models.BigIntegerField(default=0)
    token_source = models.CharField(max_length=16, choices=TokenSource.choices, default=TokenSource.CLIENT)
    tokenizer = models.CharField(max_length=64, blank=True, default="")
    usage_raw = models.JSONField(null=True, blank=True)
    # DESIGN.md section 6 (`standard`, `flex`, `priority`, `batch`); blank: not stated (standard).
    service_tier = models.CharField(max_length=32, blank=True, default="", db_default="")

    wait_ms = models.FloatField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    attempt = models.PositiveIntegerField(null=True, blank=True)
    retry_after_ms = models.FloatField(null=True, blank=True)

    # Integer nano-USD (1e-9): exact sums, and fine enough to match litellm to 1e-9 USD. Null = unpriced.
    cost_nanousd = models.BigIntegerField(null=True, blank=True)
    price_source = models.CharField(max_length=300, blank=True, default="")
    # The price book whose entry priced the event (`litellm-1.106.2`, `import-2-…`, DESIGN.md
    # section 6); blank when unpriced or priced by a project override. db_default as for the columns above.
    price_book = models.CharField(max_length=64, blank=True, default="", db_default="")
    # input_tokens / the model's input window (litellm's max_input_tokens or the project's
    # override), fixed at ingest like the cost; may exceed 1. Null: the window is unknown (never 0).
    # The column's database default is NULL (nullable, no default), so writers that name no column
    # for it (COPY loaders, the previous release during a rolling deploy) still insert; an explicit
    # db_default=None would only make Django rebuild the whole table on SQLite to add it.
    context_share = models.FloatField(null=True, blank=True)

    # What the fold sums, derived once at ingest (apps.ingestion.validation.derived_values) so every
    # aggregate adds the same integers: a session total equals the sum over its steps and over
    # its models to the microsecond. db_default as for the columns above; a row written without
    # them has no bucket_start, and the fold derives its values before summing
    # (apps.ingestion.selectors.claimed_derive_missing).
    duration_us = models.BigIntegerField(default=0, db_default=0)  # usage: the call's length; end = start + this
    generation_us = models.BigIntegerField(default=0, db_default=0)  # usage: DESIGN.md section 3; 0 for throttles
    wait_us = models.BigIntegerField(default=0, db_default=0)  # throttle: the wait; 0 for usage
    bucket_start = models.DateTimeField(null=True, blank=True)  # the minute the event starts in
    # A call whose end is past its start minute: its tokens are split over minutes
    # (algorithms.bucket_call_tokens) rather than all added to bucket_start.
    crosses_bucket = models.BooleanField(default=False, db_default=False)

    class Meta:
        # Every index that starts with project_id has session_id next. A project new to a big
        # table is missing from the planner's statistics until the next ANALYZE, so the planner
        # takes it for one row and picks the narrowest index that starts with project_id; had
        # one (project_id alone, or project_id + timestamp), each per-session lookup of the fold
        # would scan the whole project and folding would slow down as the project grows
        # (measured: the freshness lag of benchmarks/aggregate.py grew to 20 s).
        #
        # On PostgreSQL the table is partitioned by month of received_at (migration 0009,
        # apps.ingestion.partitions): no unique index here can hold exactly-once, which is
        # RawEventKey's job. A new index on this table cannot be built CONCURRENTLY on the
        # partitioned parent: create it CONCURRENTLY on each partition, then on the parent with
        # ON ONLY, and ALTER INDEX ... ATTACH PARTITION each partition's index (a plain CREATE
        # INDEX on the parent blocks ingest while every partition is indexed).
        indexes = [
            models.Index(fields=["project", "session_id", "timestamp"], name="rawevent_session_time"),
            # A session's throttle waits, which the fold re-attributes to steps (DESIGN.md section 5),
            # without reading its usage rows: throttles are a few in a hundred events, so the index
            # costs ingest next to nothing, where reading them through rawevent_session_time read the
            # session's whole history at every fold of a throttled session. With call_id, a fold
            # finds the waits a claimed usage call links to without reading the session's every wait.
            models.Index(
                fields=["project", "session_id", "call_id"], condition=models.Q(type="throttle"),
                name="rawevent_throttle_calls",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class RawEventKey(models.Model):
    """An event id stored for a project: the key that makes ingestion exactly-once.

    Apart from the raw table because PostgreSQL partitions that by received_at, and a unique
    index of a partitioned table must contain the partition column: `(event_id, project,
    received_at)` would store a resent event twice once it arrives in another month. Written in
    the transaction that stores the raw row (apps.ingestion.writers), first: the row whose key
    insert wins is the one stored, also between racing requests. Deleted with its raw row
    (apps.ingestion.retention). The primary key leads with event_id for the reason RawEvent.Meta
    gives; received_at is the raw row's, so a dropped partition's keys are found by its range.
    """

    pk = models.CompositePrimaryKey("event_id", "project_id")
    event_id = models.UUIDField()
    # No database constraint, as PendingEvent's: written by one function with its raw row.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False,
                                db_constraint=False)  # fmt: skip
    received_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"key {self.event_id} ({self.project_id})"


class PendingEvent(models.Model):
    """A raw event not yet folded into the aggregates: the metrics fold's work queue.

    Written in the transaction that stores its raw event (apps.ingestion.writers) and deleted in
    the transaction that folds it (apps.metrics.folding), so "folded" is exactly "has no pending
    row". A separate narrow table rather than a `processed_at` column on the raw row: marking a
    raw row would be an update that writes a new version of the wide row into every one of its
    indexes (the column sits in the predicate of the index that finds unfolded events), which was
    most of the fold's database time; deleting a narrow row touches no index at all.

    Primary key (project, session, raw event): the fold claims per session, the sweep and the
    session metadata count per project and session, and a raw event has one pending row at most.
    Neither foreign key has a database constraint: the rows are written by one function in the
    same transaction as the raw rows they point at, and a per-row referential check would cost
    every ingested event a lookup. Django's collector still deletes them with their project.
    """

    pk = models.CompositePrimaryKey("project_id", "session_id", "raw_event_id")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False,
                                db_constraint=False)  # fmt: skip
    session_id = models.CharField(max_length=200)
    raw_event = models.ForeignKey(RawEvent, on_delete=models.CASCADE, related_name="+", db_index=False,
                                  db_constraint=False)  # fmt: skip
    # The raw event's received_at, always equal to it: the sweep folds only what no task picked up
    # in time, and the fold's claim finds the raw row by id and received_at (so that PostgreSQL
    # reads only the monthly partitions the claimed events arrived in).
    received_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"pending {self.raw_event_id} ({self.session_id})"
