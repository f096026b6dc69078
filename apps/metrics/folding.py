"""The batch fold: unprocessed raw events of many sessions of one project into every aggregate.

Up to SESSIONS_PER_TRANSACTION sessions are folded in one transaction, in a fixed number of
statements whatever the number of events:
1. lock: insert the missing session aggregate rows, then lock all of them `ORDER BY id`. One
   global order, so two workers folding overlapping sessions queue on the row locks instead of
   deadlocking; on SQLite the insert takes the database write lock before anything is read.
2. claim: one statement deletes the sessions' oldest pending rows (apps.ingestion.models.PendingEvent,
   at most EVENTS_PER_TRANSACTION) and reads their raw events, so what is folded is exactly what
   leaves the queue, in the transaction that updates the aggregates. A task that runs twice
   claims nothing; a worker that dies mid-fold rolls the claim back with everything else. On
   PostgreSQL the events come back as one row of binary column arrays, not a row per event
   (apps.metrics.claimed_events).
3. compute: sums per (step, provider, model), the calls placed in time, their minute bucket
   shares, session attributes (apps.metrics.claimed_sums, column-wise and compiled).
4. peaks: a session with no folded event before this transaction has only the new calls, so its
   peaks come from them; for the others one query loads the folded calls overlapping the ranges
   the new calls can change (algorithms.peak_update_ranges). One call of the compiled
   apps.metrics.peaks_kernel computes every session's peaks, without holding the GIL.
5. throttle waits are re-attributed from raw rows only for sessions that can need it: new waits,
   or new call_ids in a session that has waits.
6. write: context window pressure of step and model rows with one grouped statement per table
   over the claimed events (apps.metrics.context_windows), step and model sums with additive
   upserts, session rows with their new values (read under the lock), minute buckets with
   additive upserts in key order (apps.metrics.upserts: COPY + INSERT ... SELECT on PostgreSQL).
A session whose fold fails with an error a retry cannot cure is quarantined, and the others
fold (`_chunk_fold_all`, apps.metrics.quarantine). A call with more sessions than one
transaction takes runs its chunks in two threads on PostgreSQL, so one chunk computes while the
database works on the other's claim. PostgreSQL's JIT is off in these transactions (see
`_chunk_fold`).
"""
from __future__ import annotations

import json
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg
from django.db import connection, transaction
from django.utils import timezone as dj_timezone

from apps.core.collector import cyclic_gc_paused
from apps.ingestion.models import PendingEvent, RawEvent
from apps.metrics import algorithms as algo
from apps.metrics import peaks_kernel, recent_calls
from apps.metrics.buckets import BucketDelta, buckets_add
from apps.metrics.claimed_events import CLAIM_COLUMNS, ClaimedEvents, from_postgres_arrays, postgres_select_list
from apps.metrics.claimed_sums import SUM_COLUMNS, SessionBatch, claimed_sums
from apps.metrics.context_windows import context_pressure_add
from apps.metrics.models import SessionAggregate, SessionModelAggregate, SessionStepAggregate, UsageBucket
from apps.metrics.quarantine import fold_error_is_transient, session_quarantine
from apps.metrics.signals import project_folded
from apps.metrics.upserts import added, earliest, replaced, rows_upsert, unless_empty

SESSIONS_PER_TRANSACTION = 500
FOLD_THREADS = 2
EVENTS_PER_TRANSACTION = 100_000  # bounds a transaction's memory; a bigger backlog takes several
# SQLite has one writer: a fold transaction holds off every ingest request for its whole length,
# so there a backlog folds in transactions short enough for a request to wait out.
SQLITE_EVENTS_PER_TRANSACTION = 500
MAX_SESSION_ATTRIBUTES = 50
_BRANCHES_PER_QUERY = 200  # SQLite allows 500 SELECTs in one compound statement
_PARAMS_PER_QUERY = 10_000  # well under SQLite's 32,766 bound variables
_CALL_IDS_PER_BRANCH = 2_000

_THROTTLE_COUNT = SUM_COLUMNS.index("throttle_count")
_THROTTLE_WAIT_US = SUM_COLUMNS.index("throttle_wait_us")
_ZERO_SUMS = (0,) * len(SUM_COLUMNS)
_SESSION_COLUMNS = (
    *SUM_COLUMNS, "started_at", "ended_at", "event_count", "burst_1s", "burst_10s", "burst_60s", "peak_concurrency",
    "throttled_us", "attributes", "peaks_approximate", "recent_calls",
)  # fmt: skip
_THROTTLE = RawEvent.Type.THROTTLE.value
_WINDOW_1S, _WINDOW_10S, _WINDOW_60S = algo.BURST_WINDOWS_US
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def from_us(instant_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=instant_us)


def _epoch_us(value: int | datetime | str) -> int:
    """A column read through `_as_epoch_us`: already an integer on PostgreSQL; raw SQLite rows
    hold naive UTC datetimes (or their text)."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return algo.epoch_us(value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc))


def _sum_vectors(vectors) -> list[int]:
    return [sum(column) for column in zip(*vectors)]


@dataclass(slots=True)
class _Peaks:
    bursts: dict[int, float]
    concurrency: int
    # The update would have needed calls that retention deleted (apps.ingestion.retention).
    approximate: bool = False
    # The session's recent calls once the new ones are folded (apps.metrics.recent_calls).
    recent: recent_calls.RecentCalls | None = None


def sessions_fold(*, project_id: int, session_ids: list[str]) -> int:
    """Fold the sessions' unprocessed events, many sessions per transaction; returns events folded.

    On PostgreSQL, outside a caller's transaction, two threads fold alternate chunks on their own
    connections: one computes while the database applies the other's claim, the costliest
    statement. Chunks hold disjoint sessions, so they only meet on bucket rows, locked in key order.
    """
    unique = sorted(set(session_ids))
    chunks = [unique[start : start + SESSIONS_PER_TRANSACTION] for start in range(0, len(unique), SESSIONS_PER_TRANSACTION)]
    with cyclic_gc_paused():
        if len(chunks) > 1 and connection.vendor == "postgresql" and not connection.in_atomic_block:
            with ThreadPoolExecutor(max_workers=FOLD_THREADS) as pool:
                folded = sum(pool.map(lambda chunk: _chunk_fold_on_own_connection(project_id, chunk), chunks))
        else:
            folded = sum(_chunk_fold_all(project_id, chunk) for chunk in chunks)
    if folded:
        project_folded.send(sender=sessions_fold, project_id=project_id, events=folded)
    return folded


def _chunk_fold_all(project_id: int, session_ids: list[str]) -> int:
    """Fold the sessions' every pending event, one transaction after another.

    A transaction failing with an error a retry will not cure (apps.metrics.quarantine) is
    rolled back and its sessions are folded again in halves, down to single sessions: those that
    still fail are quarantined, and every other session folds (one bad session among 500 costs
    about 2 x 9 extra transactions). Transient errors reach the task, which retries.
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


def _chunk_fold_on_own_connection(project_id: int, session_ids: list[str]) -> int:
    try:
        return _chunk_fold_all(project_id, session_ids)
    finally:
        connection.close()  # this thread's connection; a pool thread must not leave it open


def events_per_transaction() -> int:
    """How many events one fold transaction claims at most on this connection's database."""
    if connection.vendor == "sqlite":
        return min(EVENTS_PER_TRANSACTION, SQLITE_EVENTS_PER_TRANSACTION)
    return EVENTS_PER_TRANSACTION


def session_fold(*, project_id: int, session_id: str) -> int:
    """Fold one session's unprocessed events into every aggregate; returns how many were folded."""
    return sessions_fold(project_id=project_id, session_ids=[session_id])


def sessions_lock(project_id: int, session_ids: list[str]) -> dict[str, dict]:
    """Create the sessions' aggregate rows if missing and lock them until commit, in id order.

    Returns each session's stored aggregate values by session id. The insert comes first on
    purpose: on SQLite it takes the database write lock before anything is read, which
    serialises concurrent folds there as the row locks do on PostgreSQL.
    """
    now = dj_timezone.now()
    rows_upsert(
        model=SessionAggregate,
        columns=("project_id", "session_id", *SUM_COLUMNS, "event_count", "burst_1s", "burst_10s", "burst_60s",
                 "peak_concurrency", "throttled_us", "attributes", "peaks_approximate", "updated_at"),
        rows=((project_id, session_id, *_ZERO_SUMS, 0, 0.0, 0.0, 0.0, 0, 0, {}, False, now)
              for session_id in sorted(session_ids)),
        conflict=("project_id", "session_id"),
        updates=None,
    )  # fmt: skip
    locked = (
        SessionAggregate.objects.select_for_update()
        .filter(project_id=project_id, session_id__in=session_ids)
        .order_by("id")
        .values("id", "session_id", *_SESSION_COLUMNS, "raw_pruned_through")
    )
    return {row["session_id"]: row for row in locked}


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
    events = _claim(project_id, session_ids)
    if not len(events):
        return 0
    batches, bucket_deltas = claimed_sums(events)
    peaks = _peaks(project_id, sessions, {sid: batch.calls for sid, batch in batches.items()})
    throttle_sessions = [
        session_id for session_id, batch in batches.items()
        if batch.throttle_count or (batch.has_call_id and sessions[session_id]["throttle_count"])
    ]  # fmt: skip
    # Re-attribution reads every folded wait of the session: after retention deleted some, it
    # would lose them, so those sessions only add their new waits (and are marked approximate).
    pruned = {sid for sid in throttle_sessions if sessions[sid]["raw_pruned_through"] is not None}
    throttled_us = _throttles_reattribute(
        project_id,
        {sid: sessions[sid]["id"] for sid in throttle_sessions if sid not in pruned},
        events,
        # Nothing folded before: the claimed events are all the session's folded events.
        {sid for sid in throttle_sessions if sessions[sid]["event_count"] == 0},
    )
    throttled_us.update(_throttles_add(sessions, pruned, events))
    context_pressure_add(project_id=project_id, usage_event_ids=events.ids[events.usage].tolist())
    _groups_write(sessions, batches)
    _sessions_write(project_id, sessions, batches, peaks, throttled_us, approximate=pruned)
    buckets_add(
        project_id=project_id,
        granularity=UsageBucket.Granularity.MINUTE,
        deltas={(from_us(start_us), provider, model): BucketDelta(*delta)
                for (start_us, provider, model), delta in bucket_deltas.items()},
    )  # fmt: skip
    return len(events)


def _claim(project_id: int, session_ids: list[str]) -> ClaimedEvents:
    """Take the sessions' oldest pending events off the queue and return them, in id order."""
    if connection.vendor == "postgresql":
        # A plain (server-binding) psycopg cursor on the fold's connection: Django's client-side
        # cursors cannot ask for binary results, and the claim's row is binary arrays. Its errors
        # still become Django's DatabaseError (the fold task retries on those); Django's query log
        # and execute wrappers do not see this one statement.
        with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(*claim_statement_postgres(project_id, session_ids), prepare=False, binary=True)
            buffers = cursor.fetchone()
        return from_postgres_arrays(buffers)
    raw, pending = _raw_and_pending_tables()
    with connection.cursor() as cursor:
        # SQLite: no data-modifying CTE, but DELETE ... RETURNING; its planner keeps an IN list on
        # the primary key.
        cursor.execute(
            f"DELETE FROM {pending} WHERE rowid IN (SELECT rowid FROM {pending} WHERE project_id = %s AND session_id IN "
            f"({', '.join(['%s'] * len(session_ids))}) ORDER BY raw_event_id LIMIT %s) RETURNING raw_event_id",
            [project_id, *session_ids, events_per_transaction()],
        )
        event_pks = [event_pk for (event_pk,) in cursor.fetchall()]
        rows = []
        quote = connection.ops.quote_name
        columns = ", ".join(map(quote, CLAIM_COLUMNS))
        for start in range(0, len(event_pks), _PARAMS_PER_QUERY):
            chunk = event_pks[start : start + _PARAMS_PER_QUERY]
            cursor.execute(f"SELECT {columns} FROM {raw} WHERE id IN ({', '.join(['%s'] * len(chunk))})", chunk)
            rows.extend(cursor.fetchall())
    return ClaimedEvents.from_rows(
        [(*row[:7], _epoch_us(row[7]), _epoch_us(row[8]), *row[9:]) for row in rows]
    )


def claim_statement_postgres(project_id: int, session_ids: list[str]) -> tuple[str, list]:
    """`_claim`'s statement on PostgreSQL and its parameters.

    One equality per session, for the reason `_union_all_select` gives; the oldest first, so a
    backlog larger than one transaction folds in arrival order. `ctid = ANY(ARRAY(...))` is a TID
    scan of exactly the chosen rows, and `id = ANY(ARRAY(...))` keeps the raw lookup on the
    primary key whatever the planner guesses the claim returns. Its one row holds each column as
    a binary array (apps.metrics.claimed_events).
    """
    raw, pending = _raw_and_pending_tables()
    branches = " UNION ALL ".join(
        [f"SELECT ctid, raw_event_id FROM {pending} WHERE project_id = %s AND session_id = %s"] * len(session_ids)
    )
    return (
        f"WITH claimed AS (DELETE FROM {pending} WHERE ctid = ANY(ARRAY("
        f"SELECT ctid FROM ({branches}) AS queued ORDER BY raw_event_id LIMIT %s)) RETURNING raw_event_id) "
        f"SELECT {postgres_select_list(connection.ops.quote_name)} FROM {raw} "
        f"WHERE id = ANY(ARRAY(SELECT raw_event_id FROM claimed))",
        [*(value for session_id in session_ids for value in (project_id, session_id)), events_per_transaction()],
    )


def _raw_and_pending_tables() -> tuple[str, str]:
    quote = connection.ops.quote_name
    return quote(RawEvent._meta.db_table), quote(PendingEvent._meta.db_table)


def _peaks(
    project_id: int, sessions: dict[str, dict], calls: dict[str, peaks_kernel.CallColumns]
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
        if not len(new_calls):
            continue
        stored = sessions[session_id]
        if stored["event_count"] == 0:
            # Nothing folded before: the new calls are all the session's calls.
            groups.append(peaks_kernel.PeakGroup(new_calls))
            group_sessions.append(session_id)
            recent[session_id] = recent_calls.of_new_session(new_calls)
            continue
        session_ranges = algo.peak_update_ranges(
            list(map(algo.Interval, new_calls.starts_us.tolist(), new_calls.ends_us.tolist()))
        )
        if (pruned_through := stored["raw_pruned_through"]) is not None:
            # A deleted call ending at or after a range's start would have been needed by it.
            pruned_through_us = algo.epoch_us(pruned_through) + 1000
            if any(update.load_from_us <= pruned_through_us for update in session_ranges):
                approximate.add(session_id)
        state = recent_calls.from_json(stored["recent_calls"])
        if state is None:
            reloaded[session_id] = session_ranges
            last = session_ranges[-1]
            loads[session_id] = [*session_ranges[:-1], replace(last, load_to_us=recent_calls.OPEN_END_US)]
            continue
        new_rows = new_calls.rows()
        if behind := [update for update in session_ranges if not state.covers(update)]:
            reloaded[session_id] = loads[session_id] = behind
        known = state.calls + new_rows
        for update in session_ranges:
            if state.covers(update):
                groups.append(peaks_kernel.PeakGroup(_needed(known, update), update))
                group_sessions.append(session_id)
        recent[session_id] = state.advanced(new_rows)
    if loads:
        loaded = _folded_calls(project_id, loads)
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


def _folded_calls(
    project_id: int, ranges: dict[str, list[algo.PeakUpdateRange]]
) -> dict[str, list[peaks_kernel.CallRow]]:
    """Folded usage calls (the claimed ones included) overlapping the load ranges, per session.

    One SELECT per range joined by UNION ALL: each is a plain scan of the (project, session,
    timestamp) index, which a planner could not be trusted to pick for one big OR.
    """
    time_field = RawEvent._meta.get_field("timestamp")
    branch = (
        f"SELECT id, session_id, {_as_epoch_us('timestamp')}, duration_ms, time_to_first_token_ms, input_tokens, "
        f"output_tokens {_folded_of_session_sql()} AND {connection.ops.quote_name('timestamp')} <= %s AND end_at >= %s"
    )
    # One millisecond of slack on each side covers rounding between end_at and end_us; the
    # callers keep exactly the calls a range needs.
    slack = timedelta(milliseconds=1)
    params = [
        [project_id, session_id, RawEvent.Type.USAGE.value,
         time_field.get_db_prep_value(from_us(update.load_to_us) + slack, connection),
         time_field.get_db_prep_value(from_us(update.load_from_us) - slack, connection)]
        for session_id, session_ranges in ranges.items()
        for update in session_ranges
    ]  # fmt: skip
    calls: dict[str, list[peaks_kernel.CallRow]] = defaultdict(list)
    seen: set[int] = set()  # a call in the load windows of two ranges is placed once
    rows = _union_all_select([(branch, values) for values in params])
    for event_pk, session_id, start_us, duration_ms, ttft, input_tokens, output_tokens in rows:
        if event_pk not in seen:
            seen.add(event_pk)
            start_us = _epoch_us(start_us)
            calls[session_id].append(
                (start_us, *algo.generation_interval_us(start_us, duration_ms, ttft), input_tokens, output_tokens)
            )
    return calls


def _union_all_select(branches: list[tuple[str, list]]) -> list[tuple]:
    """Rows of many small SELECTs, sent as few `UNION ALL` statements.

    Raw-event lookups of several sessions are written one branch per session with
    `session_id = %s`, never `session_id IN (...)`: for a project the planner's statistics do not
    know yet (see RawEvent.Meta) PostgreSQL treats an IN list as a filter over the whole
    project, whereas an equality always becomes an index condition.
    """
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


def _folded_of_session_sql() -> str:
    """`FROM ... WHERE` of one session's folded events of one type (those with no pending row);
    parameters: project id, session id, type. An equality on session_id, for the reason
    `_union_all_select` gives."""
    raw, pending = _raw_and_pending_tables()
    return (
        f"FROM {raw} WHERE project_id = %s AND session_id = %s AND type = %s AND NOT EXISTS ("
        f"SELECT 1 FROM {pending} WHERE {pending}.project_id = {raw}.project_id "
        f"AND {pending}.session_id = {raw}.session_id AND {pending}.raw_event_id = {raw}.id)"
    )


def _as_epoch_us(column: str) -> str:
    """SQL reading a datetime column as integer epoch microseconds on PostgreSQL (exact, and much
    cheaper to load than a datetime); elsewhere the column itself, converted by `_epoch_us`."""
    quoted = connection.ops.quote_name(column)
    if connection.vendor == "postgresql":
        return f"(EXTRACT(EPOCH FROM {quoted}) * 1000000)::bigint"
    return quoted


def _throttles_reattribute(
    project_id: int, session_pks: dict[str, int], claimed: ClaimedEvents, only_claimed: set[str]
) -> dict[str, int]:
    """Re-attribute every folded throttle wait of these sessions to steps and models (DESIGN.md section 5).

    Recomputed from raw rows rather than folded: a usage event arriving after its waits moves
    them to its own step through call_id. The sessions in `only_claimed` had nothing folded
    before this transaction, so their rows are read from the `claimed` events, not the database.
    Returns each session's throttled time (union of waits).
    """
    if not session_pks:
        return {}
    folded = _folded_of_session_sql()
    throttles = [
        (session_id, call_id, step, provider, model, wait_ms, _epoch_us(start))
        for session_id, call_id, step, provider, model, wait_ms, start in _union_all_select([
            (f"SELECT session_id, call_id, step, provider, model, wait_ms, {_as_epoch_us('timestamp')} {folded}",
             [project_id, session_id, _THROTTLE])
            for session_id in sorted(session_pks) if session_id not in only_claimed
        ])
    ]  # fmt: skip
    # Events of the sessions in `only_claimed`, read from the claimed columns.
    in_only_claimed = np.isin(claimed.sessions.codes, claimed.sessions.codes_of(only_claimed))
    for event in np.flatnonzero(in_only_claimed & ~claimed.usage).tolist():
        throttles.append((claimed.sessions[event], claimed.call_ids[event], claimed.steps[event],
                          claimed.providers[event], claimed.models[event], float(claimed.waits_ms[event]),
                          int(claimed.starts_us[event])))  # fmt: skip
    call_ids_by_session: dict[str, set[str]] = defaultdict(set)
    for session_id, call_id, *_ in throttles:
        if call_id:
            call_ids_by_session[session_id].add(call_id)
    usage_by_call: dict[tuple[str, str], tuple[str, str, str]] = {}

    def usage_found(session_id: str, call_id: str, step: str, provider: str, model: str) -> None:
        known = usage_by_call.get((session_id, call_id))
        # Several usage events sharing a call_id: the smallest step wins (algorithms.throttle_by_step).
        if known is None or (step, provider, model) < known:
            usage_by_call[(session_id, call_id)] = (step, provider, model)

    for event in np.flatnonzero(in_only_claimed & claimed.usage & claimed.call_ids.nonempty).tolist():
        session_id, call_id = claimed.sessions[event], claimed.call_ids[event]
        if call_id in call_ids_by_session.get(session_id, ()):
            usage_found(session_id, call_id, claimed.steps[event], claimed.providers[event], claimed.models[event])
    usage_branches = []
    for session_id, call_ids in sorted(call_ids_by_session.items()):
        if session_id in only_claimed:
            continue
        ordered = sorted(call_ids)
        for start in range(0, len(ordered), _CALL_IDS_PER_BRANCH):
            chunk = ordered[start : start + _CALL_IDS_PER_BRANCH]
            usage_branches.append((
                f"SELECT session_id, call_id, step, provider, model {folded} AND call_id IN ({', '.join(['%s'] * len(chunk))})",
                [project_id, session_id, RawEvent.Type.USAGE.value, *chunk],
            ))  # fmt: skip
    for row in _union_all_select(usage_branches):
        usage_found(*row)

    throttles_by_session: dict[str, list[tuple]] = defaultdict(list)
    for row in throttles:
        throttles_by_session[row[0]].append(row[1:])
    step_rows, model_rows, throttled_us = [], [], {}
    for session_id, session_pk in sorted(session_pks.items(), key=lambda item: item[1]):
        rows = throttles_by_session.get(session_id, [])
        by_step = algo.throttle_by_step(
            [(call_id, step, wait_ms) for call_id, step, _, _, wait_ms, _ in rows],
            [(call_id, usage_by_call[(session_id, call_id)][0]) for call_id, *_ in rows
             if (session_id, call_id) in usage_by_call],
        )  # fmt: skip
        for step, attributed in sorted(by_step.items()):
            step_rows.append((session_pk, step, attributed.count, algo.ms_to_us(attributed.wait_ms)))
        waits_by_model: dict[tuple[str, str], list[float]] = defaultdict(list)
        for call_id, _, provider, model, wait_ms, _ in rows:
            if (session_id, call_id) in usage_by_call and not model:
                _, provider, model = usage_by_call[(session_id, call_id)]
            waits_by_model[(provider, model)].append(wait_ms)
        for (provider, model), waits in sorted(waits_by_model.items()):
            model_rows.append((session_pk, provider, model, len(waits), sum(algo.ms_to_us(wait) for wait in waits)))
        throttled_us[session_id] = algo.union_length_us(
            [algo.throttle_interval(start_us, wait_ms) for *_, wait_ms, start_us in rows]
        )

    pks = list(session_pks.values())
    for model in (SessionStepAggregate, SessionModelAggregate):
        model.objects.filter(session_id__in=pks).update(throttle_count=0, throttle_wait_us=0)
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


def _throttles_add(sessions: dict[str, dict], session_ids: set[str], claimed: ClaimedEvents) -> dict[str, int]:
    """Add the claimed waits of sessions whose raw events retention deleted to their own step and
    model, without re-attributing earlier waits (their rows may be gone); returns each session's
    throttled time, the stored one plus the union of the new waits (overlaps with deleted waits
    unknown)."""
    if not session_ids:
        return {}
    in_sessions = np.isin(claimed.sessions.codes, claimed.sessions.codes_of(session_ids))
    step_sums: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])
    model_sums: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0])
    intervals: dict[str, list] = defaultdict(list)
    for event in np.flatnonzero(in_sessions & ~claimed.usage).tolist():
        session_id, wait_ms = claimed.sessions[event], float(claimed.waits_ms[event])
        session_pk = sessions[session_id]["id"]
        for sums in (step_sums[(session_pk, claimed.steps[event])],
                     model_sums[(session_pk, claimed.providers[event], claimed.models[event])]):
            sums[0] += 1
            sums[1] += algo.ms_to_us(wait_ms)
        intervals[session_id].append(algo.throttle_interval(int(claimed.starts_us[event]), wait_ms))
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


def _groups_write(sessions: dict[str, dict], batches: dict[str, SessionBatch]) -> None:
    """Add the batches' sums to the step and model rows (created when missing)."""
    step_rows, model_rows = [], []
    for session_id, batch in batches.items():
        session_pk = sessions[session_id]["id"]
        by_step: dict[str, list[list[int]]] = defaultdict(list)
        by_model: dict[tuple[str, str], list[list[int]]] = defaultdict(list)
        for (step, provider, model), sums in batch.sums_by_group.items():
            by_step[step].append(sums)
            by_model[(provider, model)].append(sums)
        for step, group_sums in by_step.items():
            step_rows.append((session_pk, step, *_sum_vectors(group_sums), from_us(batch.first_us_by_step[step])))
        for (provider, model), group_sums in by_model.items():
            price_source = batch.price_source_by_model.get((provider, model), "")
            model_rows.append((session_pk, provider, model, *_sum_vectors(group_sums), price_source))
    sums_added = {name: added(name) for name in SUM_COLUMNS}
    rows_upsert(
        model=SessionStepAggregate,
        columns=("session_id", "step", *SUM_COLUMNS, "first_timestamp"),
        rows=sorted(step_rows, key=lambda row: row[:2]),
        conflict=("session_id", "step"),
        updates={**sums_added, "first_timestamp": earliest("first_timestamp")},
    )
    rows_upsert(
        model=SessionModelAggregate,
        columns=("session_id", "provider", "model", *SUM_COLUMNS, "price_source"),
        rows=sorted(model_rows, key=lambda row: row[:3]),
        conflict=("session_id", "provider", "model"),
        updates={**sums_added, "price_source": unless_empty("price_source")},
    )


def _sessions_write(
    project_id: int,
    sessions: dict[str, dict],
    batches: dict[str, SessionBatch],
    peaks: dict[str, _Peaks],
    throttled_us: dict[str, int],
    *,
    approximate: set[str],
) -> None:
    """Write each folded session's new values: stored values (read under the lock) plus the batch."""
    now = dj_timezone.now()
    decoded: dict[str, dict] = {}
    rows = []
    for session_id, batch in batches.items():
        stored = sessions[session_id]
        sums = [stored[name] for name in SUM_COLUMNS]
        for group_sums in batch.sums_by_group.values():
            for index, value in enumerate(group_sums):
                sums[index] += value
        sums[_THROTTLE_COUNT] += batch.throttle_count
        sums[_THROTTLE_WAIT_US] += batch.throttle_wait_us
        started_at, ended_at = from_us(batch.started_us), from_us(batch.ended_us)
        if stored["started_at"] is not None:
            started_at, ended_at = min(stored["started_at"], started_at), max(stored["ended_at"], ended_at)
        bursts = (stored["burst_1s"], stored["burst_10s"], stored["burst_60s"])
        concurrency = stored["peak_concurrency"]
        recent = stored["recent_calls"]
        peaks_approximate = stored["peaks_approximate"] or session_id in approximate
        if found := peaks.get(session_id):
            bursts = (max(bursts[0], found.bursts[_WINDOW_1S]), max(bursts[1], found.bursts[_WINDOW_10S]),
                      max(bursts[2], found.bursts[_WINDOW_60S]))  # fmt: skip
            concurrency = max(concurrency, found.concurrency)
            peaks_approximate = peaks_approximate or found.approximate
            recent = recent_calls.to_json(found.recent)
        attributes = stored["attributes"]
        for text in batch.attribute_texts:
            if len(attributes) >= MAX_SESSION_ATTRIBUTES:
                break
            if text not in decoded:
                decoded[text] = json.loads(text) or {}
            # First value wins, so a session's tags (user, app, environment) do not flap between events.
            for key, value in decoded[text].items():
                if key not in attributes and len(attributes) < MAX_SESSION_ATTRIBUTES:
                    attributes[key] = value
        rows.append((
            project_id, session_id, *sums, started_at, ended_at, stored["event_count"] + batch.event_count,
            *bursts, concurrency, throttled_us.get(session_id, stored["throttled_us"]), attributes, peaks_approximate,
            recent, now,
        ))  # fmt: skip
    rows.sort(key=lambda row: row[1])
    columns = ("project_id", "session_id", *_SESSION_COLUMNS, "updated_at")
    rows_upsert(
        model=SessionAggregate,
        columns=columns,
        rows=rows,
        conflict=("project_id", "session_id"),
        updates={name: replaced(name) for name in columns[2:]},
    )
