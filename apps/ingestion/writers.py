"""Storing prepared events as raw rows, each event exactly once per project, each new one queued
for the fold (a PendingEvent row written in the same transaction).

Exactly-once is the primary key of RawEventKey, (event_id, project): a key is inserted for each
event, and a raw row is written only for the events whose key was new. (The raw table has no
unique index: on PostgreSQL it is partitioned by month of arrival, see apps.ingestion.partitions.)

Two paths with the same contract, `raw_events_insert`. On Postgres a batch is first streamed
with binary COPYs straight into the key, raw and pending tables, under a savepoint: nearly every
batch is all new events, and that is the cheapest way to store them (a third of the database
work of staging them first). COPY returns nothing, so the rows' ids are taken from the table's
sequence beforehand (one statement), which lets the pending rows follow. If any event_id is
already stored (a resent batch, or a racing request that committed first) the key's primary key
rejects the first COPY, the savepoint undoes it, and the batch goes through a per-connection
temporary staging table and one statement that inserts the keys `ON CONFLICT DO NOTHING` and
then the raw and pending rows of exactly the keys it inserted. Other databases (SQLite, the
embedded default) insert the keys with `INSERT ... ON CONFLICT DO NOTHING RETURNING`, then the
returned events' raw and pending rows. Either way the key's primary key decides which copy wins
when two requests race, and the result tells which events of this request were new.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import msgspec
from django.db import connection, transaction

from apps.ingestion.models import PendingEvent, RawEvent, RawEventKey
from apps.ingestion.schema import UsageEvent
from apps.ingestion.validation import PreparedEvent, event_derived_values

# (column, Postgres binary COPY type) in the order rows are built.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "int8"),
    ("project_id", "int8"),
    ("event_id", "uuid"),
    ("type", "text"),
    ("session_id", "text"),
    ("step", "text"),
    ("provider", "text"),
    ("model", "text"),
    ("call_id", "text"),
    ("timestamp", "timestamptz"),
    ("end_at", "timestamptz"),
    ("received_at", "timestamptz"),
    ("attributes", "jsonb"),
    ("duration_ms", "float8"),
    ("time_to_first_token_ms", "float8"),
    ("input_tokens", "int8"),
    ("output_tokens", "int8"),
    ("cache_read_tokens", "int8"),
    ("cache_write_tokens", "int8"),
    ("tool_tokens", "int8"),
    ("thought_tokens", "int8"),
    ("token_source", "text"),
    ("tokenizer", "text"),
    ("usage_raw", "jsonb"),
    ("wait_ms", "float8"),
    ("status_code", "int2"),
    ("attempt", "int4"),
    ("retry_after_ms", "float8"),
    ("cost_nanousd", "int8"),
    ("price_source", "text"),
    ("cache_write_1h_tokens", "int8"),
    ("service_tier", "text"),
    ("price_book", "text"),
    ("context_share", "float8"),
    ("duration_us", "int8"),
    ("generation_us", "int8"),
    ("wait_us", "int8"),
    ("bucket_start", "timestamptz"),
    ("crosses_bucket", "bool"),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)
_ID, _EVENT_ID, _SESSION_ID, _TIMESTAMP, _END_AT, _BUCKET_START = (
    COLUMN_NAMES.index(name) for name in ("id", "event_id", "session_id", "timestamp", "end_at", "bucket_start")
)
_COPY_TYPES = [pg_type for _, pg_type in COLUMNS]
_TABLE = RawEvent._meta.db_table
_PENDING_TABLE = PendingEvent._meta.db_table
_PENDING_COLUMNS = "project_id, session_id, raw_event_id, received_at"
_PENDING_COPY_TYPES = ["int8", "text", "int8", "timestamptz"]
_KEY_TABLE = RawEventKey._meta.db_table
_KEY_COLUMNS = "event_id, project_id, received_at"
_KEY_COPY_TYPES = ["uuid", "int8", "timestamptz"]
_STAGING = "ingestion_rawevent_staging"
_SQLITE_ROWS_PER_STATEMENT = 500  # 38 columns x 500 rows stays under SQLite's 32,766 variables


@dataclass(frozen=True)
class InsertResult:
    inserted_event_ids: set[uuid.UUID]
    session_ids: set[str]


def _row(event_pk: int | None, project_id: int, received_at: datetime, prepared: PreparedEvent, attributes,
         encode_json) -> tuple:  # fmt: skip
    ev = prepared.event
    derived = event_derived_values(ev)
    if isinstance(ev, UsageEvent):
        return (
            event_pk, project_id, ev.event_id, "usage", ev.session_id, ev.step, ev.provider, ev.model, ev.call_id,
            ev.timestamp, ev.timestamp + timedelta(milliseconds=ev.duration_ms), received_at, attributes,
            ev.duration_ms, ev.time_to_first_token_ms,
            ev.input_tokens, ev.output_tokens, ev.cache_read_tokens, ev.cache_write_tokens, ev.tool_tokens,
            ev.thought_tokens, prepared.token_source, prepared.tokenizer,
            encode_json(ev.usage_raw) if ev.usage_raw is not None else None,
            0.0, None, None, None, prepared.cost_nanousd, prepared.price_source,
            ev.cache_write_1h_tokens, ev.service_tier or "", prepared.price_book, prepared.context_share, *derived,
        )  # fmt: skip
    return (
        event_pk, project_id, ev.event_id, "throttle", ev.session_id, ev.step, ev.provider, ev.model, ev.call_id,
        ev.timestamp, ev.timestamp + timedelta(milliseconds=ev.wait_ms), received_at, attributes,
        0.0, None, 0, 0, 0, 0, 0, 0, "client", "", None,
        ev.wait_ms, ev.status_code, ev.attempt, ev.retry_after_ms, None, "", 0, "", "", None, *derived,
    )  # fmt: skip


def raw_events_insert(*, project_id: int, received_at: datetime, events: list[PreparedEvent]) -> InsertResult:
    """Insert the events; returns the ids that were new. Call inside a transaction."""
    if not events:
        return InsertResult(set(), set())
    if connection.vendor == "postgresql":
        returned = _insert_postgres(project_id, received_at, events)
    else:
        returned = _insert_generic(project_id, received_at, events)
    return InsertResult(
        inserted_event_ids={event_id for event_id, _ in returned},
        session_ids={session_id for _, session_id in returned},
    )


def _already_encoded(data: bytes) -> bytes:
    return data


def _insert_postgres(project_id: int, received_at: datetime, events: list[PreparedEvent]) -> list[tuple]:
    from psycopg.errors import UniqueViolation
    from psycopg.types.json import Jsonb

    with connection.cursor() as cursor:
        raw_cursor = cursor.cursor
        # Ids from the table's own sequence (what a plain INSERT would draw); the ones a rejected
        # COPY drew are skipped, as any rolled-back insert's are.
        raw_cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                           [_TABLE, len(events)])  # fmt: skip
        event_pks = [event_pk for (event_pk,) in raw_cursor.fetchall()]
        # msgspec encodes JSON several times faster than the stdlib encoder psycopg uses by
        # default, and attributes were already encoded once by validation (for their size check).
        rows = [
            _row(
                event_pk, project_id, received_at, prepared, Jsonb(prepared.attributes_json, dumps=_already_encoded),
                lambda value: Jsonb(value, dumps=msgspec.json.encode),
            )
            for event_pk, prepared in zip(event_pks, events)
        ]  # fmt: skip
        columns = ", ".join(f'"{name}"' for name in COLUMN_NAMES)
        try:
            with transaction.atomic():
                _copy_rows(raw_cursor, _KEY_TABLE, _KEY_COLUMNS, _KEY_COPY_TYPES,
                           [(row[_EVENT_ID], project_id, received_at) for row in rows])  # fmt: skip
                _copy_rows(raw_cursor, _TABLE, columns, _COPY_TYPES, rows)
                _copy_rows(raw_cursor, _PENDING_TABLE, _PENDING_COLUMNS, _PENDING_COPY_TYPES,
                           [(project_id, row[_SESSION_ID], row[_ID], received_at) for row in rows])  # fmt: skip
        except UniqueViolation:
            pass  # at least one event_id is stored already: the savepoint undid every COPY
        else:
            return [(row[_EVENT_ID], row[_SESSION_ID]) for row in rows]
        # ON COMMIT DELETE ROWS empties the staging table at the end of every transaction, and the
        # table lives as long as the (persistent) connection, so it is created once per connection.
        raw_cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} ON COMMIT DELETE ROWS AS "
            f"SELECT {columns} FROM {_TABLE} WITH NO DATA"
        )
        _copy_rows(raw_cursor, _STAGING, columns, _COPY_TYPES, rows)
        # A key per event id (the first row of the batch with it); the raw and pending rows of the
        # keys this statement inserted, and only those.
        staged = ", ".join(f's."{name}"' for name in COLUMN_NAMES)
        raw_cursor.execute(
            f"WITH new_keys AS (INSERT INTO {_KEY_TABLE} ({_KEY_COLUMNS}) "
            f"SELECT DISTINCT event_id, %s::bigint, %s::timestamptz FROM {_STAGING} "
            f"ON CONFLICT DO NOTHING RETURNING event_id), "
            f"inserted AS (INSERT INTO {_TABLE} ({columns}) SELECT DISTINCT ON (s.event_id) {staged} "
            f"FROM {_STAGING} s JOIN new_keys k ON k.event_id = s.event_id ORDER BY s.event_id, s.id "
            f"RETURNING id, event_id, session_id), "
            f"queued AS (INSERT INTO {_PENDING_TABLE} ({_PENDING_COLUMNS}) "
            f"SELECT %s, session_id, id, %s FROM inserted) "
            f"SELECT event_id, session_id FROM inserted",
            [project_id, received_at, project_id, received_at],
        )
        returned = raw_cursor.fetchall()
        # Rows must not linger for the next batch of this transaction (ON COMMIT only runs at commit).
        raw_cursor.execute(f"TRUNCATE {_STAGING}")
    return returned


def _copy_rows(raw_cursor, table: str, columns: str, types: list[str], rows: list[tuple]) -> None:
    with raw_cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def _insert_generic(project_id: int, received_at: datetime, events: list[PreparedEvent]) -> list[tuple]:
    """SQLite: the keys with `INSERT ... ON CONFLICT DO NOTHING RETURNING`, then one multi-row
    `INSERT ... RETURNING` of the new events' raw rows and an `executemany` of their pending rows,
    on the driver's own cursor with values already in the form Django's SQLite backend stores them
    (converting each through its model field cost more than the insert itself, and the debug
    cursor of `make run` would also format every statement for its query log). The id is left
    to the database: no sequence to draw from on SQLite."""
    names = COLUMN_NAMES[_ID + 1 :]
    received_at_text = _sqlite_datetime(received_at)
    encode_json = _json_text
    columns = ", ".join(f'"{name}"' for name in names)
    statement_head = f"INSERT INTO {_TABLE} ({columns}) VALUES "
    row_placeholder = "(" + ", ".join(["?"] * len(names)) + ")"
    returned: list[tuple] = []
    connection.ensure_connection()
    with connection.wrap_database_errors:
        cursor = connection.connection.cursor()
        try:
            for start in range(0, len(events), _SQLITE_ROWS_PER_STATEMENT):
                chunk = events[start : start + _SQLITE_ROWS_PER_STATEMENT]
                cursor.execute(
                    f"INSERT INTO {_KEY_TABLE} ({_KEY_COLUMNS}) VALUES {', '.join(['(?, ?, ?)'] * len(chunk))} "
                    f"ON CONFLICT DO NOTHING RETURNING event_id",
                    [value for prepared in chunk for value in (prepared.event.event_id.hex, project_id, received_at_text)],
                )
                new_keys = {event_id for (event_id,) in cursor.fetchall()}
                params: list = []
                count = 0
                for prepared in chunk:
                    event_hex = prepared.event.event_id.hex
                    if event_hex not in new_keys:
                        continue
                    new_keys.discard(event_hex)  # a second event of the batch with this id is a duplicate
                    count += 1
                    row = _row(None, project_id, received_at_text, prepared, prepared.attributes_json.decode(), encode_json)
                    params.extend(row[_ID + 1 : _EVENT_ID])
                    params.append(event_hex)
                    params.extend(row[_EVENT_ID + 1 : _TIMESTAMP])
                    params.append(_sqlite_datetime(row[_TIMESTAMP]))
                    params.append(_sqlite_datetime(row[_END_AT]))
                    params.extend(row[_END_AT + 1 : _BUCKET_START])
                    params.append(_sqlite_datetime(row[_BUCKET_START]))
                    params.extend(row[_BUCKET_START + 1 :])
                if not count:
                    continue
                cursor.execute(
                    f"{statement_head}{', '.join([row_placeholder] * count)} RETURNING id, event_id, session_id",
                    params,
                )
                inserted = cursor.fetchall()
                cursor.executemany(
                    f"INSERT INTO {_PENDING_TABLE} ({_PENDING_COLUMNS}) VALUES (?, ?, ?, ?)",
                    [(project_id, session_id, event_pk, received_at_text) for event_pk, _, session_id in inserted],
                )
                returned.extend((uuid.UUID(event_id), session_id) for _, event_id, session_id in inserted)
        finally:
            cursor.close()
    return returned


def _sqlite_datetime(value: datetime) -> str:
    """An aware datetime as Django's SQLite backend stores it (`adapt_datetimefield_value`): naive UTC text."""
    if value.utcoffset():
        value = value.astimezone(dt_timezone.utc)
    return str(value.replace(tzinfo=None))


def _json_text(value) -> str:
    return msgspec.json.encode(value).decode()
