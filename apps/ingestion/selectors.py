"""Reading raw events: for the metrics fold, claiming pending events and the claimed and folded
rows; for the session's pages and repricing, one session's rows (`session_raw_events`).

Ingestion owns its tables, so every statement that reads them is here; the fold
(apps.metrics.folding) composes its grouped aggregate statements over `claimed_events_sql()`.

The claim copies the claimed raw rows into a per-connection temporary table, `CLAIMED_TABLE`, in
the statement that deletes their pending rows (reading them by primary key): every later
statement of the fold's transaction reads exactly those rows, from that small table.

Lookups of several sessions are written with one equality per session, never `session_id IN
(...)`: for a project the planner's statistics do not know yet (see RawEvent.Meta) PostgreSQL
treats an IN list as a filter over the whole project, whereas an equality always becomes an index
condition of the session-led index. The claim, which runs in every fold transaction, and the
lookups of waits (which claimed calls link to one, the folded waits of a session), which live
traffic needs in most, do it with a LATERAL subquery over an array of session ids (cheap to plan);
the other lookups of folded rows, which only some folds need, with one UNION ALL branch per
session (`union_all_select`), which SQLite runs too.
"""
from __future__ import annotations

import json
import zlib
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone as dj_timezone
from tokensite_client.events import EARLIEST_EVENT_TIME

from apps.ingestion.models import PendingEvent, RawEvent
from apps.ingestion.validation import derived_values_us
from apps.metrics import algorithms as algo

if TYPE_CHECKING:
    from apps.metrics import peaks_kernel

_BRANCHES_PER_QUERY = 200  # SQLite allows 500 SELECTs in one compound statement
_PARAMS_PER_QUERY = 10_000  # well under SQLite's 32,766 bound variables
_CALL_IDS_PER_BRANCH = 2_000
_USAGE = RawEvent.Type.USAGE.value
_THROTTLE = RawEvent.Type.THROTTLE.value
ARRIVAL_MARGIN = timedelta(days=1)  # see _arrival_bounds


def _tables() -> tuple[str, str]:
    quote = connection.ops.quote_name
    return quote(RawEvent._meta.db_table), quote(PendingEvent._meta.db_table)


def from_us(instant_us: int) -> datetime:
    return datetime.fromtimestamp(0, timezone.utc) + timedelta(microseconds=instant_us)


def epoch_us_of(value: int | datetime | str) -> int:
    """A column read through `epoch_us_sql`: already an integer on PostgreSQL; SQLite rows hold
    naive UTC datetimes (or their text)."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return algo.epoch_us(value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc))


def epoch_us_sql(column: str) -> str:
    """SQL reading a datetime column as integer epoch microseconds on PostgreSQL (exact, and much
    cheaper to load than a datetime); elsewhere the column itself, converted by `epoch_us_of`."""
    if connection.vendor == "postgresql":
        return f"(EXTRACT(EPOCH FROM {column}) * 1000000)::bigint"
    return column


# --- the claim --------------------------------------------------------------------------------


# The raw columns the fold reads, copied once per claim into the per-connection temporary table.
CLAIMED_COLUMNS = (
    "id", "session_id", "type", "step", "provider", "model", "call_id", "timestamp", "end_at", "attributes",
    "duration_ms", "time_to_first_token_ms", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "tool_tokens", "thought_tokens", "token_source", "wait_ms", "cost_nanousd",
    "price_source", "context_share", "duration_us", "generation_us", "wait_us", "bucket_start", "crosses_bucket",
)  # fmt: skip
# Named after its columns: a connection's table of an older column set is never reused.
CLAIMED_TABLE = f"fold_claimed_{zlib.crc32(' '.join(CLAIMED_COLUMNS).encode()):08x}"


def claim(project_id: int, session_ids: list[str], limit: int) -> int:
    """Take the sessions' oldest pending events (at most `limit`) off the queue, copying their raw
    rows into `CLAIMED_TABLE`; returns how many events were claimed.

    Call inside the fold's transaction: the claim, and everything read through
    `claimed_events_sql()`, roll back together. The fold reads the claimed rows six times (each
    grouped statement and the narrow reads): from a small local table that is a sequential scan,
    where each read of the raw table would look every row up by key again.
    """
    raw, pending = _tables()
    columns = ", ".join(map(connection.ops.quote_name, CLAIMED_COLUMNS))
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # ON COMMIT DELETE ROWS empties it at commit; the DELETE covers a fold nested in a caller's
            # transaction (a savepoint per chunk).
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {CLAIMED_TABLE} ON COMMIT DELETE ROWS AS "
                f"SELECT {columns} FROM {raw} WITH NO DATA"
            )
            cursor.execute(f"DELETE FROM {CLAIMED_TABLE}")
            cursor.execute(*claim_statement_postgres(project_id, session_ids, limit))
            return cursor.rowcount
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {CLAIMED_TABLE} AS SELECT {columns} FROM {raw} WHERE 0")
        cursor.execute(f"DELETE FROM temp.{CLAIMED_TABLE}")
        # SQLite: no data-modifying CTE, but DELETE ... RETURNING; its planner keeps an IN list on
        # the primary key.
        cursor.execute(
            f"DELETE FROM {pending} WHERE rowid IN (SELECT rowid FROM {pending} WHERE project_id = %s AND session_id IN "
            f"({', '.join(['%s'] * len(session_ids))}) ORDER BY raw_event_id LIMIT %s) RETURNING raw_event_id",
            [project_id, *session_ids, limit],
        )
        event_pks = [event_pk for (event_pk,) in cursor.fetchall()]
        if event_pks:
            _claimed_copy(cursor, f"id IN (SELECT value FROM json_each(%s))", [json.dumps(event_pks)])
        return len(event_pks)


def _claimed_copy(cursor, where: str, params: list) -> None:
    raw, _ = _tables()
    columns = ", ".join(map(connection.ops.quote_name, CLAIMED_COLUMNS))
    table = CLAIMED_TABLE if connection.vendor == "postgresql" else f"temp.{CLAIMED_TABLE}"
    cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {raw} WHERE {where}", params)


def claim_statement_postgres(project_id: int, session_ids: list[str], limit: int) -> tuple[str, list]:
    """`claim`'s statement on PostgreSQL and its parameters.

    One equality per session (see the module docstring), written as a LATERAL subquery over the
    session ids: a nested loop whose inner side looks each session up in the queue's key. (One
    UNION ALL branch per session does the same, but planning 500 branches took 16 to 32 ms per
    claim, as long as running it.) OFFSET 0 keeps the planner from flattening the subquery into a
    join it could then plan as a scan. The oldest first, so a backlog larger than one transaction
    folds in arrival order. `ctid = ANY(ARRAY(...))` is a TID scan of exactly the chosen rows, and
    `id = ANY(ARRAY(...))` keeps the raw lookup on the primary key whatever the planner guesses
    the claim returns. The range of the pending rows' received_at (their raw rows') lets
    PostgreSQL skip, when the statement starts, every monthly partition the claimed events did not
    arrive in (apps.ingestion.partitions), where a row's id alone would be looked up in every
    partition. A range, not `received_at = ANY(...)`: PostgreSQL prunes partitions at run time by
    a comparison with a subquery's value, not by membership in a subquery's array.
    """
    raw, pending = _tables()
    columns = ", ".join(map(connection.ops.quote_name, CLAIMED_COLUMNS))
    return (
        f"WITH claimed AS (DELETE FROM {pending} WHERE ctid = ANY(ARRAY("
        f"SELECT queued.ctid FROM unnest(%s::text[]) AS claiming(session_id) CROSS JOIN LATERAL ("
        f"SELECT ctid, raw_event_id FROM {pending} WHERE project_id = %s AND session_id = claiming.session_id "
        f"OFFSET 0) AS queued ORDER BY queued.raw_event_id LIMIT %s)) RETURNING raw_event_id, received_at) "
        f"INSERT INTO {CLAIMED_TABLE} ({columns}) SELECT {columns} FROM {raw} "
        f"WHERE id = ANY(ARRAY(SELECT raw_event_id FROM claimed)) "
        f"AND received_at BETWEEN (SELECT min(received_at) FROM claimed) AND (SELECT max(received_at) FROM claimed)",
        [list(session_ids), project_id, limit],
    )


def claimed_events_sql() -> str:
    """The claimed raw rows (the CLAIMED_COLUMNS), to read as `FROM {claimed_events_sql()} r` in the
    claim's transaction."""
    return CLAIMED_TABLE if connection.vendor == "postgresql" else f"temp.{CLAIMED_TABLE}"


def claimed_usage_sql(alias: str = "r") -> str:
    """SQL condition: the claimed row `alias` is a usage call.

    Written as "not a throttle wait", the only other type (tests/metrics/test_fold_grouping.py checks
    there are two): the claimed copy has no statistics, and PostgreSQL estimates an equality on a
    column it knows nothing of at 0.5 % of the rows, so the fold's grouped statements over 50,000
    claimed calls sorted them as if they were 250; an inequality is estimated at 99.5 %, and they
    hash (the bulk fold 12 % faster, BENCHMARKS.md "Grouping the claimed calls")."""
    return f"{alias}.type <> '{_THROTTLE}'"


def claimed_derive_missing() -> int:
    """Derive the values (validation.derived_values) of claimed rows written without them (a loader
    naming no such column, or the previous release during a rolling deploy); returns how many rows
    that was. Every row the current writers store has them already.

    They are written to the claimed copies, which the fold sums, and stored on the raw rows of
    throttle waits only, whose waits later folds read again (re-attribution, DESIGN.md section 5).
    Rewriting every such raw row cost more than the rest of the fold (a wide row and its indexes
    per event); a usage row's derived values are only ever read from its claimed copy.
    """
    claimed = claimed_events_sql()
    with connection.cursor() as cursor:
        start = epoch_us_sql("r." + connection.ops.quote_name("timestamp"))
        cursor.execute(
            f"SELECT r.id, r.type, {start}, r.duration_ms, r.time_to_first_token_ms, r.wait_ms "
            f"FROM {claimed} r WHERE r.bucket_start IS NULL"
        )
        rows = cursor.fetchall()
        if not rows:
            return 0
        updates, throttles = [], []
        for event_pk, kind, start_us, duration_ms, ttft, wait_ms in rows:
            update = (event_pk, *derived_values_us(kind, epoch_us_of(start_us), duration_ms, ttft, wait_ms))
            updates.append(update)
            if kind != _USAGE:
                throttles.append(update)
        raw, _ = _tables()
        for table, table_updates in ((claimed, updates), (raw, throttles)):
            if not table_updates:
                continue
            if connection.vendor == "postgresql":
                cursor.execute(
                    f"UPDATE {table} SET duration_us = d.duration_us, generation_us = d.generation_us, "
                    f"wait_us = d.wait_us, bucket_start = timestamptz 'epoch' + d.bucket_us * interval '1 microsecond', "
                    f"crosses_bucket = d.crosses_bucket FROM unnest("
                    f"%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bool[]) "
                    f"AS d(id, duration_us, generation_us, wait_us, bucket_us, crosses_bucket) WHERE {table}.id = d.id",
                    [list(column) for column in zip(*table_updates)],
                )
            else:
                field = RawEvent._meta.get_field("bucket_start")
                cursor.executemany(
                    f"UPDATE {table} SET duration_us = %s, generation_us = %s, wait_us = %s, bucket_start = %s, "
                    f"crosses_bucket = %s WHERE id = %s",
                    [(*values[1:4], field.get_db_prep_value(from_us(values[4]), connection), values[5], values[0])
                     for values in table_updates],
                )  # fmt: skip
    return len(rows)


def claimed_calls() -> list[tuple]:
    """The claimed usage calls in event order: (session id, start µs, duration µs, generation µs,
    input tokens, output tokens, crosses its minute, provider and model (None unless it crosses))."""
    crossing_text = "CASE WHEN r.crosses_bucket THEN r.{} END"
    sql = (
        f"SELECT r.session_id, {epoch_us_sql('r.' + connection.ops.quote_name('timestamp'))}, r.duration_us, "
        f"r.generation_us, r.input_tokens, r.output_tokens, r.crosses_bucket, {crossing_text.format('provider')}, "
        f"{crossing_text.format('model')} FROM {claimed_events_sql()} r WHERE {claimed_usage_sql()} ORDER BY r.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        rows = cursor.fetchall()
    if connection.vendor != "postgresql":
        rows = [(row[0], epoch_us_of(row[1]), *row[2:]) for row in rows]
    return rows


def claimed_throttles() -> list[tuple]:
    """The claimed throttle waits in event order: (session id, call_id, step, provider, model, wait µs, start µs)."""
    sql = (
        f"SELECT r.session_id, r.call_id, r.step, r.provider, r.model, r.wait_us, "
        f"{epoch_us_sql('r.' + connection.ops.quote_name('timestamp'))} "
        f"FROM {claimed_events_sql()} r WHERE r.type = %s ORDER BY r.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_THROTTLE])
        return [(*row[:6], epoch_us_of(row[6])) for row in cursor.fetchall()]


def _of_sessions_sql(session_ids: list[str]) -> tuple[str, list]:
    """SQL condition: the claimed row `r` is of one of these sessions, with its parameters."""
    if connection.vendor == "postgresql":
        return "r.session_id = ANY(%s::text[])", [session_ids]
    return "r.session_id IN (SELECT value FROM json_each(%s))", [json.dumps(session_ids)]


def claimed_usage_with_call_ids(session_ids: set[str]) -> list[tuple]:
    """(session id, call_id, step, provider, model) of the claimed usage calls of these sessions that carry a call_id."""
    if not session_ids:
        return []
    of_sessions, params = _of_sessions_sql(sorted(session_ids))
    sql = (
        f"SELECT r.session_id, r.call_id, r.step, r.provider, r.model FROM {claimed_events_sql()} r "
        f"WHERE {claimed_usage_sql()} AND r.call_id IS NOT NULL AND r.call_id <> '' AND {of_sessions}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def sessions_whose_claimed_calls_were_throttled(project_id: int, started: dict[str, datetime | None]) -> set[str]:
    """The sessions among `started` (with each one's earliest event timestamp) of which a claimed
    usage call carries the call_id of one of the session's throttle waits.

    One probe of the (project, session, call_id) index of throttle rows per claimed call, however
    many waits the session has had. A wait still pending counts too: its session is then
    re-attributed once more than needed, never once less."""
    if not started:
        return set()
    raw, _ = _tables()
    sessions = sorted(started.items())
    calls = f"{claimed_events_sql()} r"
    wait = f"w.project_id = %s AND w.session_id = r.session_id AND w.type = '{_THROTTLE}' AND w.call_id = r.call_id"
    if connection.vendor == "postgresql":
        # A LATERAL probe per claimed call: as a semi-join, PostgreSQL may hash every wait of the project.
        sessions_sql, session_params = _sessions_arrived_postgres(sessions)
        sql = (
            f"SELECT DISTINCT r.session_id FROM {calls} JOIN {sessions_sql} ON s.session_id = r.session_id "
            f"CROSS JOIN LATERAL (SELECT 1 FROM {raw} w WHERE {wait} "
            f"AND w.received_at BETWEEN s.arrived_from AND s.arrived_to LIMIT 1) AS found "
            f"WHERE {claimed_usage_sql()} AND r.call_id <> ''"
        )
        params = [*session_params, project_id]
    else:
        of_sessions, params = _of_sessions_sql([session_id for session_id, _ in sessions])
        sql = (
            f"SELECT DISTINCT r.session_id FROM {calls} WHERE {claimed_usage_sql()} AND r.call_id <> '' "
            f"AND {of_sessions} AND EXISTS (SELECT 1 FROM {raw} w WHERE {wait})"
        )
        params.append(project_id)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {session_id for (session_id,) in cursor.fetchall()}


def claimed_attributes() -> list[tuple[str, dict]]:
    """Distinct non-empty (session id, attributes) of the claimed usage calls, in event order."""
    empty = "'{}'::jsonb" if connection.vendor == "postgresql" else "'{}'"
    sql = (
        f"SELECT r.session_id, r.attributes, MIN(r.id) AS first_id FROM {claimed_events_sql()} r "
        f"WHERE {claimed_usage_sql()} AND r.attributes <> {empty} GROUP BY r.session_id, r.attributes ORDER BY first_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        rows = cursor.fetchall()
    return [(session_id, json.loads(value) if isinstance(value, str) else value) for session_id, value, _ in rows]


# --- folded events ----------------------------------------------------------------------------


def union_all_select(branches: list[tuple[str, list]]) -> list[tuple]:
    """Rows of many small SELECTs, sent as few `UNION ALL` statements (see the module docstring)."""
    rows: list[tuple] = []
    with connection.cursor() as cursor:

        def run(sqls: list[str], params: list) -> None:
            cursor.execute(" UNION ALL ".join(sqls), params)
            rows.extend(cursor.fetchall())

        sqls: list[str] = []
        params: list = []
        for sql, values in branches:
            if sqls and (len(sqls) == _BRANCHES_PER_QUERY or len(params) + len(values) > _PARAMS_PER_QUERY):
                run(sqls, params)
                sqls, params = [], []
            sqls.append(sql)
            params.extend(values)
        if sqls:
            run(sqls, params)
    return rows


def _folded_of_session_sql(event_type: str, *, session_id: str = "%s", arrived: tuple[str, str] = ("%s", "%s")) -> str:
    """`FROM ... WHERE` of one session's folded events of `event_type` (those with no pending row,
    the ones claimed in this transaction included); parameters: project id, then `session_id` and
    the two instants the session's rows all arrived between (`_arrival_bounds`), unless those are
    given as SQL expressions.

    The type is a literal of the statement, not a parameter: the planner can then use the partial
    index on throttle rows (RawEvent.Meta) whatever the parameter binding."""
    raw, pending = _tables()
    if event_type not in RawEvent.Type.values:
        raise ValueError(f"unknown event type {event_type!r}")
    return (
        f"FROM {raw} WHERE project_id = %s AND session_id = {session_id} "
        f"AND received_at BETWEEN {arrived[0]} AND {arrived[1]} AND type = '{event_type}' "
        f"AND NOT EXISTS (SELECT 1 FROM {pending} WHERE {pending}.project_id = {raw}.project_id "
        f"AND {pending}.session_id = {raw}.session_id AND {pending}.raw_event_id = {raw}.id)"
    )


def _arrival_window(started_at: datetime, now: datetime) -> tuple[datetime, datetime]:
    """The instants every raw row of a session whose earliest event timestamp is `started_at`
    arrived between (received_at), read at `now`.

    Ingest refuses a timestamp more than MAX_FUTURE past its arrival, so every row of a session
    arrived at or after the session's earliest timestamp minus that, and none after now. Saying so
    lets PostgreSQL read only the monthly partitions the session's rows can be in
    (apps.ingestion.partitions), not every month's index and the ones made ahead, for each session
    looked up. A day of margin on both sides rather than MAX_FUTURE alone costs nothing (partitions
    are months) and leaves room for rows stamped by hand and for clocks that differ a little."""
    return started_at - ARRIVAL_MARGIN, now + ARRIVAL_MARGIN


def _arrival_bounds():
    """A function of a session's earliest event timestamp (None: not known) to the bounds on
    received_at of its raw rows (`_arrival_window`), as two parameters; the clock and the field are
    read once per lookup, not per session."""
    field = RawEvent._meta.get_field("received_at")
    now = dj_timezone.now()

    def arrived_between(started_at: datetime | None) -> list:
        window = _arrival_window(started_at or EARLIEST_EVENT_TIME, now)
        return [field.get_db_prep_value(instant, connection) for instant in window]

    return arrived_between


def session_raw_events(*, project_id: int, session_id: str, started_at: datetime | None) -> QuerySet[RawEvent]:
    """One session's raw rows; `started_at`: its earliest event timestamp, as its aggregate stores it.

    Bounded by the window the rows arrived in (`_arrival_window`), so on PostgreSQL the lookup
    reads only the months since the session began; a session with no aggregate yet (None) is read
    from every month."""
    events = RawEvent.objects.filter(project_id=project_id, session_id=session_id)
    if started_at is None:
        return events
    return events.filter(received_at__range=_arrival_window(started_at, dj_timezone.now()))


def folded_calls(
    project_id: int, ranges: dict[str, list[algo.PeakUpdateRange]], started: dict[str, datetime | None]
) -> dict[str, list[peaks_kernel.CallRow]]:
    """Folded usage calls (the claimed ones included) overlapping the load ranges, per session;
    `started`: each session's earliest event timestamp as stored on its aggregate.

    One SELECT per range joined by UNION ALL: each is a plain scan of the (project, session,
    timestamp) index, which a planner could not be trusted to pick for one big OR.
    """
    time_field = RawEvent._meta.get_field("timestamp")
    branch = (
        f"SELECT id, session_id, {epoch_us_sql(connection.ops.quote_name('timestamp'))}, duration_ms, "
        f"time_to_first_token_ms, input_tokens, output_tokens {_folded_of_session_sql(_USAGE)} "
        f"AND {connection.ops.quote_name('timestamp')} <= %s AND end_at >= %s"
    )
    # One millisecond of slack on each side covers rounding between end_at and end_us; the
    # callers keep exactly the calls a range needs.
    slack = timedelta(milliseconds=1)
    arrived_between = _arrival_bounds()
    params = [
        [project_id, session_id, *arrived_between(started.get(session_id)),
         time_field.get_db_prep_value(from_us(update.load_to_us) + slack, connection),
         time_field.get_db_prep_value(from_us(update.load_from_us) - slack, connection)]
        for session_id, session_ranges in ranges.items()
        for update in session_ranges
    ]  # fmt: skip
    calls: dict[str, list[peaks_kernel.CallRow]] = defaultdict(list)
    seen: set[int] = set()  # a call in the load windows of two ranges is placed once
    rows = union_all_select([(branch, values) for values in params])
    for event_pk, session_id, start_us, duration_ms, ttft, input_tokens, output_tokens in rows:
        if event_pk not in seen:
            seen.add(event_pk)
            start_us = epoch_us_of(start_us)
            calls[session_id].append(
                (start_us, *algo.generation_interval_us(start_us, duration_ms, ttft), input_tokens, output_tokens)
            )
    return calls


def _sessions_arrived_postgres(started: list[tuple[str, datetime | None]]) -> tuple[str, list]:
    """A FROM item `s(session_id, arrived_from, arrived_to)` of the sessions `started` names (with
    each one's earliest event timestamp) and the bounds their raw rows arrived between
    (`_arrival_bounds`), with its parameters; `started` is not empty."""
    arrived_between = _arrival_bounds()
    froms, tos = zip(*(arrived_between(started_at) for _, started_at in started))
    sql = "unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) AS s(session_id, arrived_from, arrived_to)"
    return sql, [[session_id for session_id, _ in started], list(froms), list(tos)]


def _folded_of_sessions_postgres(
    project_id: int, event_type: str, columns: str, started: list[tuple[str, datetime | None]], condition: str = "",
    params: tuple = (),
) -> list[tuple]:
    """(session id, *columns) of the folded events of `event_type` of the sessions `started`
    names (with each one's earliest event timestamp), `condition` (SQL with `params`) ANDed to
    each session's rows.

    One LATERAL subquery over the sessions, as the claim does: live traffic asks this of every
    session with waits in every fold, and planning one UNION ALL branch per session cost 80 µs a
    session, more than running it."""
    folded = _folded_of_session_sql(event_type, session_id="s.session_id", arrived=("s.arrived_from", "s.arrived_to"))
    sessions_sql, session_params = _sessions_arrived_postgres(started)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT s.session_id, r.* FROM {sessions_sql} "
            f"CROSS JOIN LATERAL (SELECT {columns} {folded}{condition} OFFSET 0) AS r",
            [*session_params, project_id, *params],
        )
        return cursor.fetchall()


def folded_throttles(project_id: int, started: dict[str, datetime | None]) -> list[tuple]:
    """Every folded throttle wait of the sessions `started` names (with each one's earliest event
    timestamp): (session id, call_id, step, provider, model, wait µs, start µs)."""
    columns = f"call_id, step, provider, model, wait_us, {epoch_us_sql(connection.ops.quote_name('timestamp'))}"
    sessions = sorted(started.items())
    if not sessions:
        return []
    if connection.vendor == "postgresql":
        rows = _folded_of_sessions_postgres(project_id, _THROTTLE, columns, sessions)
    else:
        folded = _folded_of_session_sql(_THROTTLE)
        arrived_between = _arrival_bounds()
        rows = union_all_select([
            (f"SELECT session_id, {columns} {folded}", [project_id, session_id, *arrived_between(started_at)])
            for session_id, started_at in sessions
        ])  # fmt: skip
    return [(*row[:6], epoch_us_of(row[6])) for row in rows]


def folded_usage_of_calls(
    project_id: int, call_ids_by_session: dict[str, set[str]], started: dict[str, datetime | None]
) -> list[tuple]:
    """(session id, call_id, step, provider, model) of the folded usage calls carrying these
    call_ids; `started`: each session's earliest event timestamp."""
    sessions = sorted((session_id, sorted(call_ids)) for session_id, call_ids in call_ids_by_session.items() if call_ids)
    if not sessions:
        return []
    columns = "call_id, step, provider, model"
    if connection.vendor == "postgresql":
        # Every session's rows are matched against all the call_ids asked for, and the pairs asked
        # for are kept below: call_ids are unique to their session in practice.
        rows = _folded_of_sessions_postgres(
            project_id, _USAGE, columns, [(session_id, started.get(session_id)) for session_id, _ in sessions],
            " AND call_id = ANY(%s::text[])", (sorted({call_id for _, call_ids in sessions for call_id in call_ids}),),
        )  # fmt: skip
        return [row for row in rows if row[1] in call_ids_by_session[row[0]]]
    folded = _folded_of_session_sql(_USAGE)
    arrived_between = _arrival_bounds()
    branches = []
    for session_id, call_ids in sessions:
        for start in range(0, len(call_ids), _CALL_IDS_PER_BRANCH):
            chunk = call_ids[start : start + _CALL_IDS_PER_BRANCH]
            branches.append((
                f"SELECT session_id, {columns} {folded} AND call_id IN ({', '.join(['%s'] * len(chunk))})",
                [project_id, session_id, *arrived_between(started.get(session_id)), *chunk],
            ))  # fmt: skip
    return union_all_select(branches)
