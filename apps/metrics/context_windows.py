"""Context window pressure per session step and per session model, folded by one grouped statement
per table over the claimed events (the set-based direction of issue 14), not by the sums kernel.

Each usage event carries its share of its model's input window, fixed at ingest
(`RawEvent.context_share`, apps.pricing.context_windows; NULL when the window is unknown). A fold
transaction adds its claimed events to the step and model rows with
`INSERT ... SELECT ... GROUP BY ... ON CONFLICT DO UPDATE`: counts add up, the largest share is
the larger of the stored and the new one. The events are exactly those the claim took off the
queue in the same transaction, so each is counted once, whatever order batches arrive in.
The same SQL runs on PostgreSQL and SQLite (>= 3.35).
"""
from __future__ import annotations

import json

from django.db import connection

from apps.ingestion.models import RawEvent
from apps.metrics.claimed_sums import SUM_COLUMNS
from apps.metrics.models import SessionAggregate, SessionModelAggregate, SessionStepAggregate

# A call is "above 80%" when its input is more than 80% of the window (strictly: exactly 80% is not).
HIGH_SHARE = 0.80
CRITICAL_SHARE = 0.95
PRESSURE_COLUMNS = ("context_known_calls", "context_max_share", "context_calls_over_80", "context_calls_over_95")


def _larger(column: str, table: str) -> str:
    """The larger of the stored and the new value, either of which may be NULL (unknown)."""
    return (
        f"CASE WHEN {table}.{column} IS NULL OR excluded.{column} > {table}.{column} "
        f"THEN excluded.{column} ELSE {table}.{column} END"
    )


def context_pressure_add(*, project_id: int, usage_event_ids: list[int]) -> None:
    """Add the claimed usage events' window shares to their step and model rows.

    Call inside the claim's transaction, with the sessions locked (apps.metrics.folding), and
    before the step and model sums are added: a row this creates holds zero sums until then.
    The raw rows are grouped before the join to the session rows, so the only way to them is
    their primary key (a join first let PostgreSQL scan each session's rows and test every id
    against the whole list: seconds per claim).
    """
    if not usage_event_ids:
        return
    quote = connection.ops.quote_name
    raw, sessions = quote(RawEvent._meta.db_table), quote(SessionAggregate._meta.db_table)
    if connection.vendor == "postgresql":
        claimed, ids_param = "r.id = ANY(%s)", usage_event_ids
    else:
        # One parameter whatever the claim's size (SQLite binds at most 32,766).
        claimed, ids_param = "r.id IN (SELECT value FROM json_each(%s))", json.dumps(usage_event_ids)
    measures = (
        "COUNT(*) AS known, MAX(r.context_share) AS max_share, "
        f"SUM(CASE WHEN r.context_share > {HIGH_SHARE!r} THEN 1 ELSE 0 END) AS over_80, "
        f"SUM(CASE WHEN r.context_share > {CRITICAL_SHARE!r} THEN 1 ELSE 0 END) AS over_95"
    )
    zero_sums = ", ".join(["0"] * len(SUM_COLUMNS))
    for model, keys, rest in (
        (SessionStepAggregate, ("step",), {"first_timestamp": "NULL"}),
        (SessionModelAggregate, ("provider", "model"), {"price_source": "''"}),
    ):
        table = quote(model._meta.db_table)
        key_list = ", ".join(f"r.{quote(key)}" for key in keys)
        columns = ", ".join(map(quote, ("session_id", *keys, *SUM_COLUMNS, *rest, *PRESSURE_COLUMNS)))
        updates = ", ".join(
            f"{quote(column)} = "
            + (_larger(quote(column), table) if column == "context_max_share"
               else f"{table}.{quote(column)} + excluded.{quote(column)}")
            for column in PRESSURE_COLUMNS
        )  # fmt: skip
        # `WHERE true`: SQLite reads an ON right after a join as the join's constraint.
        sql = (
            f"INSERT INTO {table} ({columns}) "
            f"SELECT s.id, {', '.join(f'g.{quote(key)}' for key in keys)}, {zero_sums}, {', '.join(rest.values())}, "
            f"g.known, g.max_share, g.over_80, g.over_95 "
            f"FROM (SELECT r.session_id, {key_list}, {measures} FROM {raw} r "
            f"WHERE {claimed} AND r.context_share IS NOT NULL GROUP BY r.session_id, {key_list}) g "
            f"JOIN {sessions} s ON s.project_id = %s AND s.session_id = g.session_id WHERE true "
            f"ON CONFLICT ({', '.join(map(quote, ('session_id', *keys)))}) DO UPDATE SET {updates}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [ids_param, project_id])
