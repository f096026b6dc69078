"""The batch fold: unprocessed raw events of many sessions of one project into every aggregate.

Every number a fold adds was derived once, at ingest, and stored on the raw row (generation and
throttle wait in µs, the start minute, whether a call crosses it: apps.ingestion.validation),
and every aggregate row is a sum of those stored integers computed by the database. So a
session's totals equal the sum over its steps and over its models to the unit, whatever the
batches or their order (tests/metrics/test_fold_sums.py).

Up to SESSIONS_PER_TRANSACTION sessions are folded in one transaction (on PostgreSQL, two
transactions at a time on two connections: `_chunks_fold`), in a fixed number of statements
whatever the number of events:
1. lock: insert the missing session aggregate rows, then lock every row `ORDER BY id`
   (`sessions_lock` says why two workers folding overlapping sessions never deadlock).
2. claim: one statement deletes the sessions' oldest pending rows (at most
   `events_per_transaction()`) and keeps their raw ids for the transaction
   (apps.ingestion.selectors.claim), so what is folded is exactly what leaves the queue, in the
   transaction that updates the aggregates. A task that runs twice claims nothing; a worker that
   dies mid-fold rolls the claim back with everything else.
3. waits: throttle re-attribution by call_id (DESIGN.md section 5, only for sessions that can
   need it) writes the throttle columns of the step and model rows.
4. sums: one `INSERT ... SELECT ... GROUP BY ... ON CONFLICT DO UPDATE` per table adds the claimed
   rows to the step and model rows (with their context window pressure, apps.metrics.context_windows)
   and to the minute buckets; the session rows' sums are grouped by the database too and added by
   the one upsert that also writes their peaks (`_sessions_upsert`). They read the claimed rows'
   copy (a small temporary table without statistics) and reach
   session rows by key, one lookup per group, never by a join a planner could turn into a scan
   (see `_groups_add`). Bucket rows are the only rows two folds of different sessions share:
   their one statement inserts them `ORDER BY` key (byte order for text, as every other bucket
   writer, apps.metrics.upserts), so concurrent folds take their locks in one order. A call whose
   tokens span several minutes (rare) is split in Python by algorithms.bucket_call_tokens from
   its stored values, and its shares join the same statement.
5. peaks: what Python still computes from the claimed calls (read narrow, in event order):
   burst and concurrency peaks (`_peaks`, the compiled apps.metrics.peaks_kernel; a session
   with history updates them from the recent calls kept on its row, apps.metrics.recent_calls,
   and reads folded calls only for a batch reaching behind those) and session attributes (first
   value wins). On PostgreSQL the database runs the step, model and bucket statements of 4
   meanwhile (`_overlapped`); then the session rows are written.
A session whose fold fails with an error a retry cannot cure is quarantined, and the others
fold (`_chunk_fold_all`, apps.metrics.quarantine). PostgreSQL's JIT is off in these
transactions (see `_chunk_fold`).
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime

from django.db import DatabaseError, connection, transaction
from django.utils import timezone as dj_timezone

from apps.core.collector import cyclic_gc_paused
from apps.ingestion import selectors as raw_events
from apps.ingestion.models import RawEvent
from apps.ingestion.selectors import from_us
from apps.metrics import algorithms as algo
from apps.metrics import peaks_kernel, recent_calls
from apps.metrics.buckets import BUCKET_COLUMNS
from apps.metrics.context_windows import PRESSURE_COLUMNS, PRESSURE_MEASURES, pressure_update
from apps.metrics.models import SessionAggregate, SessionModelAggregate, SessionStepAggregate, UsageBucket
from apps.metrics.quarantine import fold_error_is_transient, session_quarantine
from apps.metrics.signals import project_folded
from apps.metrics.upserts import Joined, added, earliest, latest, replaced, rows_upsert, unless_empty

logger = logging.getLogger(__name__)

# Each transaction pays a fixed part (commit, round trips, planning): on live traffic, 5 events a
# session, 1,000 sessions folded 7 to 14 % faster than 500, and 2,000 only 2 to 4 % more than
# 1,000 while holding twice the session locks twice as long.
SESSIONS_PER_TRANSACTION = 1000
EVENTS_PER_TRANSACTION = 100_000  # bounds a transaction's memory; a bigger backlog takes several
# SQLite has one writer: a fold transaction holds off every ingest request for its whole length,
# so there a backlog folds in transactions short enough for a request to wait out.
SQLITE_EVENTS_PER_TRANSACTION = 500
MAX_SESSION_ATTRIBUTES = 50

# TokenSums columns.
SUM_COLUMNS = (
    "calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "tool_tokens",
    "thought_tokens", "timed_output_tokens", "generation_us", "throttle_count", "throttle_wait_us", "cost_nanousd",
    "unpriced_tokens", "unpriced_calls", "estimated_calls",
)  # fmt: skip
_THROTTLE_SUMS = ("throttle_count", "throttle_wait_us")
_THROTTLE_COUNT = SUM_COLUMNS.index("throttle_count")
_THROTTLE_WAIT_US = SUM_COLUMNS.index("throttle_wait_us")
_ZERO_SUMS = (0,) * len(SUM_COLUMNS)
_PEAK_COLUMNS = ("burst_1s", "burst_10s", "burst_60s", "peak_concurrency", "throttled_us", "attributes",
                 "peaks_approximate", "recent_calls")  # fmt: skip
# What a fold reads of a locked session row: the sums it adds are added by the database.
_SESSION_COLUMNS = ("id", "session_id", "event_count", "throttle_count", *_PEAK_COLUMNS, "raw_pruned_through",
                    "started_at")  # fmt: skip
_USAGE = RawEvent.Type.USAGE.value
_WINDOW_1S, _WINDOW_10S, _WINDOW_60S = algo.BURST_WINDOWS_US


def _sum(expression: str) -> str:
    """SUM of integers as a bigint: on PostgreSQL the aggregate of metrics migration 0009 (its
    SUM(bigint) returns numeric, converted back at every write)."""
    return f"bigint_sum({expression})" if connection.vendor == "postgresql" else f"SUM({expression})"


def _sums_sql(usage: str) -> dict[str, str]:
    """Each TokenSums column as an aggregate over raw rows `r`; `usage` is true for usage rows."""

    def of_usage(value: str) -> str:
        return _sum(f"CASE WHEN {usage} THEN {value} ELSE 0 END")

    return {
        "calls": of_usage("1"),
        **{name: of_usage(f"r.{name}") for name in ("input_tokens", "output_tokens", "cache_read_tokens",
                                                    "cache_write_tokens", "tool_tokens", "thought_tokens")},
        # DESIGN.md section 3: the rate sums only calls with a positive generation time.
        "timed_output_tokens": of_usage("CASE WHEN r.generation_us > 0 THEN r.output_tokens ELSE 0 END"),
        "generation_us": _sum("r.generation_us"),  # 0 on throttle rows
        "throttle_count": _sum(f"CASE WHEN {usage} THEN 0 ELSE 1 END"),
        "throttle_wait_us": _sum("r.wait_us"),  # 0 on usage rows
        "cost_nanousd": of_usage("COALESCE(r.cost_nanousd, 0)"),
        "unpriced_tokens": of_usage("CASE WHEN r.cost_nanousd IS NULL THEN r.input_tokens + r.output_tokens ELSE 0 END"),
        "unpriced_calls": of_usage("CASE WHEN r.cost_nanousd IS NULL THEN 1 ELSE 0 END"),
        "estimated_calls": of_usage(f"CASE WHEN r.token_source = '{RawEvent.TokenSource.ESTIMATED.value}' THEN 1 ELSE 0 END"),
    }  # fmt: skip


@dataclass(slots=True)
class _Peaks:
    bursts: dict[int, float]
    concurrency: int
    # The update would have needed calls that retention deleted (apps.ingestion.retention).
    approximate: bool = False
    # The session's recent calls once the new ones are folded (apps.metrics.recent_calls).
    recent: recent_calls.RecentCalls | None = None


def sessions_fold(*, project_id: int, session_ids: list[str]) -> int:
    """Fold the sessions' unprocessed events, many sessions per transaction, one transaction after
    another on this connection; returns events folded."""
    unique = sorted(set(session_ids))
    chunks = [unique[start : start + SESSIONS_PER_TRANSACTION] for start in range(0, len(unique), SESSIONS_PER_TRANSACTION)]
    with cyclic_gc_paused():
        folded = _chunks_fold(project_id, chunks)
    if folded:
        project_folded.send(sender=sessions_fold, project_id=project_id, events=folded)
    return folded


def _chunks_fold(project_id: int, chunks: list[list[str]]) -> int:
    """Fold the chunks of sessions; on PostgreSQL, two transactions at a time, on two connections.

    A fold transaction spends about half its time waiting for the database and half computing in
    Python: with a second connection (a thread: Django gives each its own), one transaction's
    statements run while the other's Python runs. Measured on live traffic: 20 to 35 % more
    events per second than one connection, and no gain from a third on this 2-core machine
    (BENCHMARKS.md, "Two fold connections per worker"). The chunks hold different sessions, so
    the two transactions lock different session rows; the minute buckets they share are locked
    in one key order by one statement each (`_buckets_add`), so one may wait for the other's
    commit but they never deadlock. A caller inside a transaction folds on its own connection
    alone: another connection would not see its uncommitted events. SQLite has one writer. When
    the second connection cannot be opened (the server at max_connections, say), the caller's
    connection folds every chunk, as it would alone.
    """
    def fold(own: list[list[str]]) -> int:
        return sum(_chunk_fold_all(project_id, chunk) for chunk in own)

    if len(chunks) < 2 or connection.vendor != "postgresql" or connection.in_atomic_block:
        return fold(chunks)

    def on_own_connection(own: list[list[str]]) -> int | None:
        try:
            connection.ensure_connection()  # this thread's connection
        except DatabaseError:
            logger.warning("No second connection to fold project %s: folding on one.", project_id, exc_info=True)
            return None
        try:
            return fold(own)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fold") as helper:
        other = helper.submit(on_own_connection, chunks[1::2])
        folded = fold(chunks[0::2])
        helped = other.result()
    return folded + (fold(chunks[1::2]) if helped is None else helped)


def _chunk_fold_all(project_id: int, session_ids: list[str]) -> int:
    """Fold the sessions' every pending event, one transaction after another.

    A transaction failing with an error a retry will not cure (apps.metrics.quarantine) is
    rolled back and its sessions are folded again in halves, down to single sessions: those that
    still fail are quarantined, and every other session folds (one bad session among 1,000 costs
    about 2 x 10 extra transactions). Transient errors reach the task, which retries.
    """
    folded = 0
    while True:
        try:
            claimed = _chunk_fold(project_id, session_ids)
        except Exception as error:  # noqa: BLE001 - sorted below; transient ones are raised again
            if fold_error_is_transient(error):
                raise
            if len(session_ids) == 1:
                session_quarantine(project_id=project_id, session_id=session_ids[0], error=error)
                return folded
            middle = len(session_ids) // 2
            return (
                folded + _chunk_fold_all(project_id, session_ids[:middle]) + _chunk_fold_all(project_id, session_ids[middle:])
            )
        folded += claimed
        if claimed < events_per_transaction():
            return folded


def events_per_transaction() -> int:
    """How many events one fold transaction claims at most on this connection's database."""
    if connection.vendor == "sqlite":
        return min(EVENTS_PER_TRANSACTION, SQLITE_EVENTS_PER_TRANSACTION)
    return EVENTS_PER_TRANSACTION


def sessions_lock(project_id: int, session_ids: list[str]) -> dict[str, dict]:
    """Lock the sessions' aggregate rows until commit, creating the missing ones; returns each
    session's stored aggregate values by session id.

    Rows are locked in id order only: one global order, so two folds of overlapping sessions queue
    instead of deadlocking. Missing rows are inserted first, in session id order, before the fold
    holds any lock (ON CONFLICT DO NOTHING waits for another fold's insert of the same session,
    and every fold inserts in that one order); then every row, its own new ones included, is locked
    in id order. Locking the existing rows before inserting could deadlock: a fold holding a row it
    had found waited for another's uncommitted new row, while that fold, which had found the first
    row missing and so had not locked it, waited to lock it. On live traffic every row exists and
    nothing is inserted. (On SQLite the transaction holds the database write lock from its start:
    transaction_mode IMMEDIATE in settings.)
    """
    found = _session_pks(project_id, session_ids)
    if missing := sorted(set(session_ids) - found.keys()):
        rows_upsert(
            model=SessionAggregate,
            columns=("project_id", "session_id", *SUM_COLUMNS, "event_count", "burst_1s", "burst_10s", "burst_60s",
                     "peak_concurrency", "throttled_us", "attributes", "peaks_approximate", "updated_at"),
            rows=((project_id, session_id, *_ZERO_SUMS, 0, 0.0, 0.0, 0.0, 0, 0, {}, False, dj_timezone.now())
                  for session_id in missing),
            conflict=("project_id", "session_id"),
            updates=None,
        )  # fmt: skip
        found.update(_session_pks(project_id, missing))
    if connection.vendor != "postgresql":
        rows = SessionAggregate.objects.filter(id__in=found.values()).select_for_update().order_by("id")
        return {row["session_id"]: row for row in rows.values(*_SESSION_COLUMNS)}
    # Read by hand rather than through the ORM: the ids go as one array, not 1,000 placeholders,
    # and the rows skip the ORM's per-row conversions (only the attributes need decoding).
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(map(quote, _SESSION_COLUMNS))} FROM {quote(SessionAggregate._meta.db_table)} "
            f"WHERE id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE",
            [list(found.values())],
        )
        rows = [dict(zip(_SESSION_COLUMNS, row)) for row in cursor.fetchall()]
    for row in rows:
        row["attributes"] = json.loads(row["attributes"])  # Django reads jsonb as text
    return {row["session_id"]: row for row in rows}


def _session_pks(project_id: int, session_ids: list[str]) -> dict[str, int]:
    """The ids of the sessions' aggregate rows that exist, by session id."""
    if connection.vendor != "postgresql":
        rows = SessionAggregate.objects.filter(project_id=project_id, session_id__in=session_ids)
        return dict(rows.values_list("session_id", "id"))
    # Found by key, one equality per session: with `session_id IN (...)` and statistics that
    # predate the project's sessions, PostgreSQL read every session of the project through the
    # project index (a lock of 500 of 10,000 sessions read 18,000 index entries).
    table = connection.ops.quote_name(SessionAggregate._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT locking.session_id, session.id FROM unnest(%s::text[]) AS locking(session_id) CROSS JOIN LATERAL ("
            f"SELECT id FROM {table} WHERE project_id = %s AND session_id = locking.session_id OFFSET 0) AS session",
            [list(session_ids), project_id],
        )
        return dict(cursor.fetchall())


@transaction.atomic
def _chunk_fold(project_id: int, session_ids: list[str]) -> int:
    """Fold up to `events_per_transaction()` unprocessed events of these sessions; returns how many."""
    if connection.vendor == "postgresql":
        # The fold's statements have one UNION ALL branch per session, so their estimated cost
        # passes jit_above_cost at about 500 sessions: PostgreSQL then JIT-compiles thousands of
        # functions per statement (2.7 s for a claim of 1,000 sessions that runs in 0.3 s).
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")
    sessions = sessions_lock(project_id, session_ids)
    claimed = _claim(project_id, session_ids)
    if not claimed:
        return 0
    raw_events.claimed_derive_missing()
    call_rows = raw_events.claimed_calls()
    throttles = raw_events.claimed_throttles()
    # An instant no datetime holds (stored before ingest checked the range) raises here, and the
    # quarantine takes its session, rather than the sums writing a start no reader can load.
    from_us(min([row[1] for row in call_rows] + [row[6] for row in throttles]))
    throttled_sessions = {row[0] for row in throttles}
    called_sessions = {row[0] for row in call_rows}
    # Sessions whose claimed events add a wait, or whose calls may link to one of their waits.
    throttle_sessions = sorted(
        throttled_sessions | {sid for sid in called_sessions if sessions[sid]["throttle_count"]}
    )
    # Re-attribution reads every folded wait of the session: after retention deleted some, it
    # would lose them, so those sessions only add their new waits (and are marked approximate).
    pruned = {sid for sid in throttle_sessions if sessions[sid]["raw_pruned_through"] is not None}
    throttled_us = _throttles_reattribute(
        project_id,
        {sid: sessions[sid]["id"] for sid in throttle_sessions if sid not in pruned},
        {sid: sessions[sid]["started_at"] for sid in throttle_sessions},
        throttles,
        # Nothing folded before: the claimed events are all the session's folded events.
        {sid for sid in throttle_sessions if sessions[sid]["event_count"] == 0},
    )
    throttled_us.update(_throttles_add(sessions, pruned, throttles))
    attributes = _attributes_added(sessions, raw_events.claimed_attributes())
    with _overlapped():
        # The step, model and bucket sums need nothing computed here: the database adds them while
        # Python computes the peaks and the session rows.
        _groups_add({session_id: row["id"] for session_id, row in sessions.items()})
        _buckets_add(project_id, call_rows)
        calls = _calls_by_session(call_rows)
        peaks = _peaks(project_id, sessions, calls)
        # Only sessions with claimed events: a transaction of a backlog (on SQLite, 500 events) can
        # claim from a few of the locked sessions.
        claimed_sessions = called_sessions | throttled_sessions
        rows = _session_rows(project_id, {sid: sessions[sid] for sid in claimed_sessions}, attributes, peaks,
                             throttled_us, approximate=pruned)  # fmt: skip
    _sessions_upsert(rows)
    return claimed


@contextmanager
def _overlapped() -> Iterator[None]:
    """PostgreSQL: statements sent in the block run while Python goes on, in pipeline mode; the
    block's end waits for them, as does a read in the block (the folded calls of a late batch).
    No COPY in the block: pipeline mode refuses it.

    Their errors surface at that wait or read, as Django's exceptions like any other statement's,
    so the quarantine sorts them the same way. Measured on live traffic: 12 to 20 % more events
    per second for the step and model statements, 2 to 7 % more for the bucket one (BENCHMARKS.md,
    "Overlapping the grouped sums with the peaks, and recent calls as bytes").
    """
    if connection.vendor != "postgresql":
        yield
        return
    with connection.wrap_database_errors, connection.connection.pipeline():
        yield


def _claim(project_id: int, session_ids: list[str]) -> int:
    """Take the sessions' oldest pending events off the queue for this transaction; returns how many."""
    return raw_events.claim(project_id, session_ids, events_per_transaction())


def _calls_by_session(call_rows: list[tuple]) -> dict[str, list[peaks_kernel.CallRow]]:
    """The claimed calls of each session, in event order."""
    calls: dict[str, list[peaks_kernel.CallRow]] = defaultdict(list)
    for session_id, start_us, duration_us, generation_us, input_tokens, output_tokens, *_ in call_rows:
        end_us = start_us + duration_us
        calls[session_id].append((start_us, end_us - generation_us, end_us, input_tokens, output_tokens))
    return calls


def _execute(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _byte_order(expression: str) -> str:
    # The order every bucket writer locks rows in (apps.metrics.upserts): code points, not the locale's.
    return f'{expression} COLLATE "C"' if connection.vendor == "postgresql" else expression


def _groups_add(session_pks: dict[str, int]) -> None:
    """Add the claimed calls to their step and model rows, creating missing ones: sums, first
    timestamp or price source, and context window pressure, one grouped statement per table.

    Their throttle columns are left alone: waits are attributed by `_throttles_reattribute`.
    The rows belong to sessions this transaction has locked, so no other fold writes them.
    """
    quote = connection.ops.quote_name
    claimed = raw_events.claimed_events_sql()
    sums = {name: sql for name, sql in _sums_sql("1 = 1").items() if name not in _THROTTLE_SUMS}
    measures = ", ".join(f"{sql} AS {name}" for name, sql in {**sums, **PRESSURE_MEASURES}.items())
    # Each group's session row id comes from the ids `sessions_lock` read, sent with the statement,
    # never looked up in the session table: for a project new to the statistics PostgreSQL takes
    # the project for a row or two and reads its sessions through a project-led index, scanning
    # every session of the project once per group (a join did the same; measured: 1.7 s, then
    # 0.7 s per transaction of 2,500 calls, most of a live-traffic fold). PostgreSQL gets two
    # arrays (as a VALUES list, its client parsed 1,000 placeholders per statement: 3 % of a live
    # fold), SQLite a VALUES list.
    ordered = sorted(session_pks.items())
    if connection.vendor == "postgresql":
        sessions_sql = "unnest(%s::text[], %s::bigint[]) AS s(column1, column2)"
        session_params = [[session_id for session_id, _ in ordered], [pk for _, pk in ordered]]
    else:
        sessions_sql = f"(SELECT * FROM (VALUES {', '.join(['(%s, %s)'] * len(ordered))}) AS v) s"
        session_params = [value for item in ordered for value in item]
    session_pk = "CAST(s.column2 AS BIGINT)"
    for model, keys, extra, extra_select, extra_update in (
        (SessionStepAggregate, ("step",), "first_timestamp", f'MIN(r.{quote("timestamp")}) AS extra', earliest),
        # The price source of the model's last priced call.
        (SessionModelAggregate, ("provider", "model"), "price_source",
         "MAX(CASE WHEN r.price_source <> '' THEN r.id END) AS extra", unless_empty),
    ):  # fmt: skip
        table = quote(model._meta.db_table)
        columns = ("session_id", *keys, *SUM_COLUMNS, extra, *PRESSURE_COLUMNS)
        key_list = ", ".join(f"r.{quote(key)}" for key in keys)
        values = [f"g.{name}" if name in sums else "0" for name in SUM_COLUMNS]
        # The price source is read from that call's claimed copy, joined once, not looked up in the
        # raw table per group (by id alone, which PostgreSQL looks up in every monthly partition).
        extra_value, extra_join = "g.extra", ""
        if extra == "price_source":
            extra_value, extra_join = "COALESCE(p.price_source, '')", f"LEFT JOIN {claimed} p ON p.id = g.extra "
        updates = {
            **{name: added(name) for name in sums},
            extra: extra_update(extra),
            **{name: pressure_update(name) for name in PRESSURE_COLUMNS},
        }
        assignments = ", ".join(f"{quote(name)} = {expression.format(table=table)}" for name, expression in updates.items())
        # `WHERE true`: SQLite reads the ON of an upsert after a SELECT ... FROM as a join constraint.
        _execute(
            f"INSERT INTO {table} ({', '.join(map(quote, columns))}) "
            f"SELECT {session_pk}, {', '.join(f'g.{quote(key)}' for key in keys)}, {', '.join(values)}, "
            f"{extra_value}, {', '.join(f'g.{name}' for name in PRESSURE_COLUMNS)} "
            f"FROM (SELECT r.session_id, {key_list}, {measures}, {extra_select} FROM {claimed} r "
            f"WHERE {raw_events.claimed_usage_sql()} GROUP BY r.session_id, {key_list}) g "
            f"JOIN {sessions_sql} ON s.column1 = g.session_id {extra_join}WHERE true "
            f"ON CONFLICT ({', '.join(map(quote, ('session_id', *keys)))}) DO UPDATE SET {assignments}",
            session_params,
        )


def _buckets_add(project_id: int, call_rows: list[tuple]) -> None:
    """Add the claimed events to their minute buckets in one statement, rows in key order.

    Every event adds to the minute it starts in; a call whose end is past that minute adds its
    tokens as algorithms.bucket_call_tokens splits them, computed here from its stored values.
    """
    shares: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for _, start_us, duration_us, generation_us, input_tokens, output_tokens, crosses, provider, model in call_rows:
        if crosses:
            end_us = start_us + duration_us
            call = algo.PlacedCall(start_us, end_us, end_us - generation_us, input_tokens, output_tokens)
            for share in algo.bucket_call_tokens(call):
                sums = shares[(share.bucket_start_us, provider, model)]
                sums[0] += share.input_tokens
                sums[1] += share.output_tokens
    quote = connection.ops.quote_name
    table = quote(UsageBucket._meta.db_table)
    tokens = "CASE WHEN r.type = %s AND NOT r.crosses_bucket THEN r.{} ELSE 0 END"
    sums = _sums_sql("r.type = %s")
    grouped = (
        f"SELECT r.bucket_start, r.provider, r.model, {_sum(tokens.format('input_tokens'))} AS input_tokens, "
        f"{_sum(tokens.format('output_tokens'))} AS output_tokens, {sums['calls']} AS calls, "
        f"{sums['throttle_count']} AS throttle_count, {sums['throttle_wait_us']} AS throttle_wait_us, "
        f"{sums['cost_nanousd']} AS cost_nanousd, {sums['unpriced_tokens']} AS unpriced_tokens "
        f"FROM {raw_events.claimed_events_sql()} r GROUP BY r.bucket_start, r.provider, r.model"
    )
    params: list = [_USAGE] * grouped.count("%s")
    if shares:
        keys = sorted(shares)
        starts = [from_us(start_us) for start_us, _, _ in keys]
        if connection.vendor == "postgresql":
            grouped += (
                " UNION ALL SELECT *, 0, 0, 0, 0, 0 FROM unnest(%s::timestamptz[], %s::text[], %s::text[], "
                "%s::bigint[], %s::bigint[])"
            )
            params += [starts, [key[1] for key in keys], [key[2] for key in keys],
                       [shares[key][0] for key in keys], [shares[key][1] for key in keys]]  # fmt: skip
        else:
            field = UsageBucket._meta.get_field("bucket_start")
            grouped += (
                " UNION ALL SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), "
                "json_extract(value, '$[3]'), json_extract(value, '$[4]'), 0, 0, 0, 0, 0 FROM json_each(%s)"
            )
            params.append(json.dumps([
                [field.get_db_prep_value(start, connection), *key[1:], *shares[key]] for start, key in zip(starts, keys)
            ]))  # fmt: skip
    key_columns = ("project_id", "granularity", "bucket_start", "provider", "model")
    assignments = ", ".join(f"{name} = {added(name).format(table=table)}" for name in BUCKET_COLUMNS)
    _execute(
        f"INSERT INTO {table} ({', '.join(map(quote, (*key_columns, *BUCKET_COLUMNS)))}) "
        f"SELECT %s, %s, b.bucket_start, b.provider, b.model, {', '.join(_sum(f'b.{name}') for name in BUCKET_COLUMNS)} "
        f"FROM ({grouped}) b GROUP BY b.bucket_start, b.provider, b.model "
        f"ORDER BY b.bucket_start, {_byte_order('b.provider')}, {_byte_order('b.model')} "
        f"ON CONFLICT ({', '.join(key_columns)}) DO UPDATE SET {assignments}",
        [project_id, UsageBucket.Granularity.MINUTE.value, *params],
    )


def _peaks(
    project_id: int, sessions: dict[str, dict], calls: dict[str, list[peaks_kernel.CallRow]]
) -> dict[str, _Peaks]:
    """Burst and concurrency peaks the new calls can set, per session (to be maxed with the stored
    ones), with the session's recent calls once they are folded.

    `calls`: each session's newly claimed usage calls, in event order; `sessions`: the rows
    `sessions_lock` read. A session with no folded event before has only the new calls. For the
    others, an update range (algorithms.peak_update_ranges) that the stored recent calls cover is
    computed from them and the new calls, with no query: live traffic, which arrives in time
    order, never re-reads the session's history. The ranges reaching behind them (a late batch),
    and every range of a session with no recent calls stored, load the folded calls they need in
    one query; a session without them loads its last range with no upper bound, which rebuilds
    them (apps.metrics.recent_calls). One call of the compiled kernel computes every range.
    """
    groups: list[peaks_kernel.PeakGroup] = []
    group_sessions: list[str] = []
    loads: dict[str, list[algo.PeakUpdateRange]] = {}  # what the query loads, per session
    reloaded: dict[str, list[algo.PeakUpdateRange]] = {}  # the ranges computed from loaded calls
    recent: dict[str, recent_calls.RecentCalls | None] = {}
    approximate = set()
    for session_id, new_calls in calls.items():
        stored = sessions[session_id]
        if stored["event_count"] == 0:
            # Nothing folded before: the new calls are all the session's calls.
            groups.append(peaks_kernel.PeakGroup(new_calls))
            group_sessions.append(session_id)
            recent[session_id] = recent_calls.of_new_session(new_calls)
            continue
        session_ranges = algo.peak_update_ranges([algo.Interval(call[0], call[2]) for call in new_calls])
        if (pruned_through := stored["raw_pruned_through"]) is not None:
            # A deleted call ending at or after a range's start would have been needed by it.
            pruned_through_us = algo.epoch_us(pruned_through) + 1000
            if any(update.load_from_us <= pruned_through_us for update in session_ranges):
                approximate.add(session_id)
        state = recent_calls.from_bytes(stored["recent_calls"])
        if state is None:
            reloaded[session_id] = session_ranges
            last = session_ranges[-1]
            loads[session_id] = [*session_ranges[:-1], replace(last, load_to_us=recent_calls.OPEN_END_US)]
            continue
        if behind := [update for update in session_ranges if not state.covers(update)]:
            reloaded[session_id] = loads[session_id] = behind
        known = state.calls + new_calls
        for update in session_ranges:
            if state.covers(update):
                groups.append(peaks_kernel.PeakGroup(_needed(known, update), update))
                group_sessions.append(session_id)
        recent[session_id] = state.advanced(new_calls)
    if loads:
        loaded = raw_events.folded_calls(project_id, loads, {sid: sessions[sid]["started_at"] for sid in loads})
        for session_id, session_ranges in reloaded.items():
            for update in session_ranges:
                groups.append(peaks_kernel.PeakGroup(_needed(loaded[session_id], update), update))
                group_sessions.append(session_id)
            if session_id not in recent:
                recent[session_id] = recent_calls.from_folded(
                    loaded[session_id], horizon_us=session_ranges[-1].load_from_us
                )
    peaks: dict[str, _Peaks] = {}
    for session_id, (bursts, concurrency) in zip(group_sessions, peaks_kernel.groups_peaks(groups)):
        found = peaks.get(session_id)
        if found is None:
            peaks[session_id] = _Peaks(bursts, concurrency, recent=recent[session_id])
        else:
            found.bursts = {window: max(found.bursts[window], bursts[window]) for window in bursts}
            found.concurrency = max(found.concurrency, concurrency)
    for session_id in approximate:
        peaks[session_id].approximate = True
    return peaks


def _needed(known: list[peaks_kernel.CallRow], update: algo.PeakUpdateRange) -> list[peaks_kernel.CallRow]:
    """The calls of `known` that `update` needs: those overlapping its load range."""
    return [row for row in known if row[0] <= update.load_to_us and row[2] >= update.load_from_us]


def _throttles_reattribute(
    project_id: int,
    session_pks: dict[str, int],
    started: dict[str, datetime | None],
    claimed_throttles: list[tuple],
    only_claimed: set[str],
) -> dict[str, int]:
    """Re-attribute every folded throttle wait of those of these sessions where one can move to
    steps and models (DESIGN.md section 5): sessions whose claimed events add a wait or carry the
    call_id of one of their waits.

    Recomputed from raw rows rather than folded: a usage event arriving after its waits moves
    them to its own step through call_id. The sessions in `only_claimed` had nothing folded
    before this transaction, so their waits are the claimed ones. Waits are the stored µs of each
    event, so the steps' and models' sums equal the session's. Returns each session's throttled
    time (union of waits).
    """
    # Nothing moves in a session whose claimed events add no wait and carry the call_id of none of
    # its waits: its attribution stands, and neither its waits nor its usage rows (its history)
    # are read.
    moving = {row[0] for row in claimed_throttles}
    moving |= raw_events.sessions_whose_claimed_calls_were_throttled(
        project_id, {sid: started[sid] for sid in session_pks if sid not in moving and sid not in only_claimed}
    )
    session_pks = {sid: pk for sid, pk in session_pks.items() if sid in moving}
    if not session_pks:
        return {}
    throttles = raw_events.folded_throttles(project_id, {sid: started[sid] for sid in session_pks if sid not in only_claimed})
    throttles += [row for row in claimed_throttles if row[0] in only_claimed and row[0] in session_pks]
    call_ids_by_session: dict[str, set[str]] = defaultdict(set)
    for session_id, call_id, *_ in throttles:
        if call_id:
            call_ids_by_session[session_id].add(call_id)
    # The calls the waits link to: claimed ones of the sessions with nothing folded before, folded
    # ones (the claimed among them) of the others. Waits were read of moving sessions only.
    usage_rows = raw_events.claimed_usage_with_call_ids({sid for sid in call_ids_by_session if sid in only_claimed})
    usage_rows += raw_events.folded_usage_of_calls(
        project_id, {sid: ids for sid, ids in call_ids_by_session.items() if sid not in only_claimed}, started
    )
    usage_by_call: dict[tuple[str, str], tuple[str, str, str]] = {}
    for session_id, call_id, step, provider, model in usage_rows:
        if call_id not in call_ids_by_session.get(session_id, ()):
            continue
        known = usage_by_call.get((session_id, call_id))
        # Several usage events sharing a call_id: the smallest step wins (algorithms.throttle_by_step).
        if known is None or (step, provider, model) < known:
            usage_by_call[(session_id, call_id)] = (step, provider, model)

    throttles_by_session: dict[str, list[tuple]] = defaultdict(list)
    for row in throttles:
        throttles_by_session[row[0]].append(row[1:])
    step_rows, model_rows, throttled_us = [], [], {}
    for session_id, session_pk in sorted(session_pks.items(), key=lambda item: item[1]):
        rows = throttles_by_session.get(session_id, [])
        # throttle_by_step only counts and sums the waits it is given: here integer µs, summed exactly.
        by_step = algo.throttle_by_step(
            [(call_id, step, wait_us) for call_id, step, _, _, wait_us, _ in rows],
            [(call_id, usage_by_call[(session_id, call_id)][0]) for call_id, *_ in rows
             if (session_id, call_id) in usage_by_call],
        )  # fmt: skip
        for step, attributed in sorted(by_step.items()):
            step_rows.append((session_pk, step, attributed.count, int(attributed.wait_ms)))
        waits_by_model: dict[tuple[str, str], list[int]] = defaultdict(list)
        for call_id, _, provider, model, wait_us, _ in rows:
            if (session_id, call_id) in usage_by_call and not model:
                _, provider, model = usage_by_call[(session_id, call_id)]
            waits_by_model[(provider, model)].append(wait_us)
        for (provider, model), waits in sorted(waits_by_model.items()):
            model_rows.append((session_pk, provider, model, len(waits), sum(waits)))
        throttled_us[session_id] = algo.union_length_us(
            [algo.Interval(start_us, start_us + wait_us) for *_, wait_us, start_us in rows]
        )

    pks = list(session_pks.values())
    for model in (SessionStepAggregate, SessionModelAggregate):
        # Only rows holding a wait: rewriting every row of the session was as many row writes again
        # as the waits' own (live traffic: a session's steps and models, for one or two waits).
        model.objects.filter(session_id__in=pks).exclude(throttle_count=0, throttle_wait_us=0).update(
            throttle_count=0, throttle_wait_us=0
        )
    _throttle_rows_upsert(step_rows, model_rows, update=replaced)
    for model in (SessionStepAggregate, SessionModelAggregate):
        # A row left with no call and no wait (its wait moved to its call's step) is dropped.
        model.objects.filter(session_id__in=pks, calls=0, throttle_count=0).delete()
    return throttled_us


def _throttle_rows_upsert(step_rows: list[tuple], model_rows: list[tuple], *, update) -> None:
    """Write throttle counts and waits, rows of (session pk, *key, count, wait µs), to the step and
    model aggregates; `update` (replaced or added) says what a conflicting row's figures become.
    Rows created here hold only waits: no first timestamp, no price source yet."""
    updates = {"throttle_count": update("throttle_count"), "throttle_wait_us": update("throttle_wait_us")}
    for model, key_columns, rest, rows in (
        (SessionStepAggregate, ("session_id", "step"), {"first_timestamp": None}, step_rows),
        (SessionModelAggregate, ("session_id", "provider", "model"), {"price_source": ""}, model_rows),
    ):
        rows_upsert(
            model=model,
            columns=(*key_columns, *SUM_COLUMNS, *rest),
            rows=((*row[:-2], *_with_throttle(row[-2], row[-1]), *rest.values()) for row in rows),
            conflict=key_columns,
            updates=updates,
        )


def _throttles_add(sessions: dict[str, dict], session_ids: set[str], claimed_throttles: list[tuple]) -> dict[str, int]:
    """Add the claimed waits of sessions whose raw events retention deleted to their own step and
    model, without re-attributing earlier waits (their rows may be gone); returns each session's
    throttled time, the stored one plus the union of the new waits (overlaps with deleted waits
    unknown)."""
    if not session_ids:
        return {}
    step_sums: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
    model_sums: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0])
    intervals: dict[str, list] = defaultdict(list)
    for session_id, _, step, provider, model, wait_us, start_us in claimed_throttles:
        if session_id not in session_ids:
            continue
        session_pk = sessions[session_id]["id"]
        for sums in (step_sums[(session_pk, step)], model_sums[(session_pk, provider, model)]):
            sums[0] += 1
            sums[1] += wait_us
        intervals[session_id].append(algo.Interval(start_us, start_us + wait_us))
    _throttle_rows_upsert(
        [(*key, *sums) for key, sums in sorted(step_sums.items())],
        [(*key, *sums) for key, sums in sorted(model_sums.items())],
        update=added,
    )
    return {
        session_id: sessions[session_id]["throttled_us"] + algo.union_length_us(intervals.get(session_id, []))
        for session_id in session_ids
    }


def _with_throttle(count: int, wait_us: int) -> list[int]:
    sums = list(_ZERO_SUMS)
    sums[_THROTTLE_COUNT], sums[_THROTTLE_WAIT_US] = count, wait_us
    return sums


def _claimed_session_sums_sql() -> str:
    """Each claimed session's sums, event count, first start and last end, grouped by the database
    (a SELECT of `session_id` and the `_SESSION_SUMMED` columns)."""
    sums = _sums_sql(f"r.type = '{_USAGE}'")
    return (
        f"SELECT r.session_id, {', '.join(f'{sql} AS {name}' for name, sql in sums.items())}, COUNT(*) AS event_count, "
        f"MIN(r.{connection.ops.quote_name('timestamp')}) AS started_at, MAX(r.end_at) AS ended_at "
        f"FROM {raw_events.claimed_events_sql()} r GROUP BY r.session_id"
    )


def _attributes_added(sessions: dict[str, dict], claimed: list[tuple[str, dict]]) -> dict[str, dict]:
    """The claimed sessions' attributes once the claimed ones are added: first value wins, so a
    session's tags (user, app, environment) do not flap between events."""
    attributes = {}
    for session_id, added_attributes in claimed:
        stored = attributes.setdefault(session_id, sessions[session_id]["attributes"])
        for key, value in (added_attributes or {}).items():
            if len(stored) >= MAX_SESSION_ATTRIBUTES:
                break
            if key not in stored:
                stored[key] = value
    return attributes


_SESSION_WRITTEN = ("project_id", "session_id", *_PEAK_COLUMNS, "updated_at")
_SESSION_SUMMED = (*SUM_COLUMNS, "event_count", "started_at", "ended_at")


def _session_rows(
    project_id: int,
    sessions: dict[str, dict],
    attributes: dict[str, dict],
    peaks: dict[str, _Peaks],
    throttled_us: dict[str, int],
    *,
    approximate: set[str],
) -> list[tuple]:
    """Each session's new values, in `_SESSION_WRITTEN` order: peaks, throttled time and
    attributes from the stored values (read under the lock)."""
    now = dj_timezone.now()
    rows = []
    for session_id in sorted(sessions):
        stored = sessions[session_id]
        bursts = (stored["burst_1s"], stored["burst_10s"], stored["burst_60s"])
        concurrency = stored["peak_concurrency"]
        recent = stored["recent_calls"]
        peaks_approximate = stored["peaks_approximate"] or session_id in approximate
        if found := peaks.get(session_id):
            bursts = (max(bursts[0], found.bursts[_WINDOW_1S]), max(bursts[1], found.bursts[_WINDOW_10S]),
                      max(bursts[2], found.bursts[_WINDOW_60S]))  # fmt: skip
            concurrency = max(concurrency, found.concurrency)
            peaks_approximate = peaks_approximate or found.approximate
            recent = recent_calls.to_bytes(found.recent)
        rows.append((project_id, session_id, *bursts, concurrency,
                     throttled_us.get(session_id, stored["throttled_us"]),
                     attributes.get(session_id, stored["attributes"]), peaks_approximate, recent, now))  # fmt: skip
    return rows


def _sessions_upsert(rows: list[tuple]) -> None:
    """Write the folded sessions' rows in one upsert per transaction, so each session row gets one
    new version per fold: the claimed rows' sums and event count, grouped by the database in the
    same statement, added, time span widened, the rest replaced. A locked session none of whose
    events was claimed is left as it is."""
    rows_upsert(
        model=SessionAggregate,
        columns=_SESSION_WRITTEN,
        rows=rows,
        conflict=("project_id", "session_id"),
        joined=Joined(_claimed_session_sums_sql(), "session_id", _SESSION_SUMMED),
        updates={**{name: added(name) for name in (*SUM_COLUMNS, "event_count")}, "started_at": earliest("started_at"),
                 "ended_at": latest("ended_at"), **{name: replaced(name) for name in (*_PEAK_COLUMNS, "updated_at")}},
    )  # fmt: skip
