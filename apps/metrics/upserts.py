"""Multi-row `INSERT ... ON CONFLICT` for aggregate tables, one SQL text for PostgreSQL and SQLite (>= 3.35).

The batch fold writes thousands of aggregate rows per transaction; a COPY and one statement per
table (PostgreSQL) or one statement per few hundred rows (SQLite) keeps that to a handful of round
trips, and the upsert makes "add to the row, creating it if missing" a single atomic step. Rows are
applied in key order, so two transactions touching the same rows take their locks in the same order.
"""
from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, connection, connections, models

# Parameters per multi-row statement: under SQLite's 32,766 variables.
_MAX_PARAMS_PER_STATEMENT = 30_000
# From this many rows PostgreSQL gets a COPY: formatting parameters into the statement costs more
# per row, but the staging table's statements cost a millisecond or two whatever the row count.
_COPY_FROM_ROWS = 20


def added(column: str) -> str:
    """Update expression: the stored value plus the inserted one."""
    return f"{{table}}.{column} + excluded.{column}"


def replaced(column: str) -> str:
    """Update expression: the inserted value."""
    return f"excluded.{column}"


def earliest(column: str) -> str:
    """Update expression: the earlier of two nullable datetimes (portable LEAST that skips NULL)."""
    return (
        f"CASE WHEN {{table}}.{column} IS NULL OR excluded.{column} < {{table}}.{column} "
        f"THEN excluded.{column} ELSE {{table}}.{column} END"
    )


def latest(column: str) -> str:
    """Update expression: the later of two nullable datetimes (portable GREATEST that skips NULL)."""
    return (
        f"CASE WHEN {{table}}.{column} IS NULL OR excluded.{column} > {{table}}.{column} "
        f"THEN excluded.{column} ELSE {{table}}.{column} END"
    )


def unless_empty(column: str) -> str:
    """Update expression: the inserted text unless it is empty, else the stored one."""
    return f"CASE WHEN excluded.{column} <> '' THEN excluded.{column} ELSE {{table}}.{column} END"


@dataclass(frozen=True)
class Joined:
    """More values of each row, computed by the database: `sql` is a SELECT with a `key` column
    and `columns`, at most one row per key, joined to the rows on their `key` column."""

    sql: str
    key: str
    columns: Sequence[str]


def rows_upsert(
    *,
    model: type[models.Model],
    columns: Sequence[str],
    rows: Iterable[Sequence],
    conflict: Sequence[str],
    updates: Mapping[str, str] | None,
    joined: Joined | None = None,
) -> None:
    """Insert `rows` (values in `columns` order) into `model`'s table; on a `conflict` key, set each
    column of `updates` to its expression (see `added`, `replaced`, ...), or do nothing if None.

    With `joined`, each row also gets the `joined.columns` of its row in `joined.sql`; a row with
    none there is not written.

    Values are Python values: datetimes and JSON are prepared for the database here. Callers give
    rows sorted by the conflict key (Python order: text by code point); a COPY applies them in
    that same order.
    """
    table = model._meta.db_table
    quote = connection.ops.quote_name
    rows = list(rows)
    # PostgreSQL types a VALUES column from its literals (text for a column of NULLs), so a join
    # reads the rows from the staging table, whose columns have the table's types.
    copy = connection.vendor == "postgresql" and (len(rows) >= _COPY_FROM_ROWS or joined is not None)
    prepare = [_preparer(model, column, copy=copy) for column in columns]
    if any(prepare):
        rows = [[value if convert is None else convert(value) for convert, value in zip(prepare, row)] for row in rows]
    if updates:
        assignments = ", ".join(f"{quote(column)} = {expression.format(table=quote(table))}"
                                for column, expression in updates.items())  # fmt: skip
        on_conflict = f"ON CONFLICT ({', '.join(map(quote, conflict))}) DO UPDATE SET {assignments}"
    else:
        on_conflict = f"ON CONFLICT ({', '.join(map(quote, conflict))}) DO NOTHING"
    if copy:
        order = ", ".join(f"s.{quote(column)}" + (' COLLATE "C"' if _is_text(model, column) else "") for column in conflict)
        _upsert_copy(table, columns, rows, order, on_conflict, joined)
    else:
        _upsert_values(table, columns, rows, on_conflict, joined)


def _select(columns: Sequence[str], joined: Joined | None) -> tuple[str, str, str]:
    """For an INSERT ... SELECT from rows `s`: the inserted column list, the SELECT list, and the
    join of `joined` (as `j`)."""
    quote = connection.ops.quote_name
    extra = joined.columns if joined is not None else ()
    selected = [*(f"s.{quote(column)}" for column in columns), *(f"j.{quote(column)}" for column in extra)]
    join = f" JOIN ({joined.sql}) j ON j.{quote(joined.key)} = s.{quote(joined.key)}" if joined is not None else ""
    return ", ".join(map(quote, (*columns, *extra))), ", ".join(selected), join


def _upsert_copy(
    table: str, columns: Sequence[str], rows: list[list], order: str, on_conflict: str, joined: Joined | None
) -> None:
    """PostgreSQL: COPY into a per-connection temporary staging table, then one INSERT ... SELECT.

    Formatting many parameters into one statement costs far more than COPY's row encoding. The
    ORDER BY (byte order for text, as Python sorts the rows the VALUES path writes) makes every
    writer take the rows' locks in the same key order.
    """
    quote = connection.ops.quote_name
    column_list = ", ".join(map(quote, columns))
    staging = f"{table}_upsert_{zlib.crc32(column_list.encode()):08x}"
    # The raw cursor's errors become Django's DatabaseError, as through Django's own cursor: the
    # fold task retries those, and the quarantine tells them from a session's bad data.
    with connection.cursor() as cursor, connection.wrap_database_errors:
        raw_cursor = cursor.cursor
        # ON COMMIT DELETE ROWS empties it when the transaction ends; the table itself lives as long
        # as the (persistent) connection, so it is created once per connection and column set.
        raw_cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "
            f"SELECT {column_list} FROM {quote(table)} WITH NO DATA"
        )
        with raw_cursor.copy(f"COPY {staging} ({column_list}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        inserted, selected, join = _select(columns, joined)
        raw_cursor.execute(
            f"INSERT INTO {quote(table)} ({inserted}) SELECT {selected} FROM {staging} s{join} ORDER BY {order} {on_conflict}"
        )
        # Rows must not linger for the next upsert of this transaction (ON COMMIT only runs at commit).
        raw_cursor.execute(f"TRUNCATE {staging}")


def _upsert_values(
    table: str, columns: Sequence[str], rows: list[list], on_conflict: str, joined: Joined | None
) -> None:
    """Multi-row INSERT ... VALUES, a few hundred rows per statement (SQLite; small PostgreSQL batches)."""
    quote = connection.ops.quote_name
    row_placeholder = "(" + ", ".join(["%s"] * len(columns)) + ")"
    per_statement = max(1, _MAX_PARAMS_PER_STATEMENT // len(columns))

    def statement(count: int) -> str:
        values = "VALUES " + ", ".join([row_placeholder] * count)
        if joined is None:
            return f"INSERT INTO {quote(table)} ({', '.join(map(quote, columns))}) {values} {on_conflict}"
        # SQLite only (PostgreSQL joins in `_upsert_copy`): VALUES columns are column1, column2, ...
        named = [f"v.column{index} AS {quote(column)}" for index, column in enumerate(columns, 1)]
        inserted, selected, join = _select(columns, joined)
        # `WHERE true`: SQLite reads the ON of an upsert after a SELECT ... FROM as a join constraint.
        return (
            f"INSERT INTO {quote(table)} ({inserted}) SELECT {selected} "
            f"FROM (SELECT {', '.join(named)} FROM ({values}) v) s{join} WHERE true {on_conflict}"
        )

    batch: list = []
    count = 0
    with connection.cursor() as cursor:
        for row in rows:
            batch.extend(row)
            count += 1
            if count == per_statement:
                cursor.execute(statement(count), batch)
                batch, count = [], 0
        if count:
            cursor.execute(statement(count), batch)


def _is_text(model: type[models.Model], column: str) -> bool:
    field = next(field for field in model._meta.concrete_fields if field.column == column)
    return isinstance(field, (models.CharField, models.TextField))


def _preparer(model: type[models.Model], column: str, *, copy: bool):
    """How to turn a Python value of `column` into a query parameter (`copy`: a COPY row value);
    None when it passes as is."""
    field = next(field for field in model._meta.concrete_fields if field.column == column)
    if copy and isinstance(field, models.JSONField):
        # COPY's text format reads JSON text into jsonb; psycopg writes aware datetimes itself.
        # (Django's preparation of each value cost more than the rest of the row.)
        return lambda value: None if value is None else json.dumps(value, cls=field.encoder)
    if not copy and isinstance(field, (models.DateTimeField, models.JSONField)):
        # The connection itself, not the `connection` proxy: each attribute read through the proxy
        # looks the connection up again (microseconds), and preparing reads several per value.
        database = connections[DEFAULT_DB_ALIAS]
        return lambda value: None if value is None else field.get_db_prep_value(value, database)
    return None
