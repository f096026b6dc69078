"""Exactly-once through the event keys, and on PostgreSQL the raw table's monthly partitions: created
ahead, filled from the default partition when rows landed there, converted from a populated table,
and dropped whole by the retention prune when every project's period allows it."""
from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest
from django.db import connection, connections, transaction
from django.db.migrations.executor import MigrationExecutor

from apps.accounts.services import project_get_or_create, project_retention_set
from apps.ingestion.models import PendingEvent, RawEvent, RawEventKey
from apps.ingestion.partitions import month_next, month_start, partition_name, raw_partitions, raw_partitions_ensure
from apps.ingestion.retention import raw_events_prune
from apps.ingestion.services import events_ingest
from apps.ingestion.validation import events_validate
from apps.ingestion.writers import raw_events_insert
from apps.metrics.models import SessionAggregate
from tests.conftest import throttle_event, usage_event
from tests.ingestion.test_retention import assert_sums_exact_and_peaks_approximate
from tests.metrics.test_fold import snapshot

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def months_back(count: int) -> datetime:
    start = month_start(NOW)
    for _ in range(count):
        start = month_start(start - timedelta(days=1))
    return start


def ingest_at(project, events: list[dict], received_at: datetime):
    """Ingest as if the events arrived at `received_at` (the server's clock then)."""
    with mock.patch("django.utils.timezone.now", return_value=received_at):
        return events_ingest(project=project, body=json.dumps({"events": events}).encode())


def calls_before(arrival: datetime, count: int, session_id: str = "session-1") -> list[dict]:
    start = arrival - timedelta(hours=1)
    return [usage_event(session_id=session_id, timestamp=(start + timedelta(seconds=i)).isoformat(), duration_ms=3000,
                        call_id=f"call-{i}") for i in range(count)]  # fmt: skip


def table_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [name])
        return cursor.fetchone()[0] is not None


def rows_in(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        return cursor.fetchone()[0]


@pytest.fixture
def partitions_restored():
    """Partitions a test creates outlive its flushed rows: drop them after it."""
    before = set(raw_partitions())
    yield
    with connection.cursor() as cursor:
        for name in set(raw_partitions()) - before:
            cursor.execute(f"DROP TABLE {name}")


# --- exactly once, on both databases ------------------------------------------------------------


def test_a_resent_event_arriving_in_a_later_month_is_stored_once(project):
    event = usage_event(timestamp=(months_back(2) + timedelta(days=3)).isoformat())
    first_arrival = months_back(2) + timedelta(days=3, hours=1)
    assert ingest_at(project, [event], first_arrival).accepted == 1
    resent = ingest_at(project, [event], NOW)
    assert (resent.accepted, resent.duplicates) == (0, 1)
    assert list(RawEvent.objects.values_list("event_id", "received_at")) == [(uuid.UUID(event["event_id"]), first_arrival)]
    assert list(RawEventKey.objects.values_list("event_id", "received_at")) == [
        (uuid.UUID(event["event_id"]), first_arrival)
    ]


def test_the_same_event_twice_in_one_insert_is_stored_once(project):
    events = [usage_event(), usage_event()]
    valid, rejected = events_validate(events, now=NOW)
    assert not rejected
    with transaction.atomic():
        result = raw_events_insert(project_id=project.pk, received_at=NOW, events=[valid[0], valid[1], valid[0]])
    assert result.inserted_event_ids == {uuid.UUID(event["event_id"]) for event in events}
    assert RawEvent.objects.count() == RawEventKey.objects.count() == PendingEvent.objects.count() == 2


def test_deleting_a_project_deletes_its_event_keys(project, other_team_project):
    for owner in (project, other_team_project):
        assert ingest_at(owner, [usage_event(), throttle_event()], NOW).accepted == 2
    project.delete()
    assert set(RawEventKey.objects.values_list("project_id", flat=True)) == {other_team_project.pk}
    assert RawEventKey.objects.count() == RawEvent.objects.count() == 2


@pytest.mark.postgres
def test_racing_requests_with_the_same_events_store_each_once(project):
    shared = [usage_event(session_id=f"s-{i % 5}") for i in range(200)]
    barrier = threading.Barrier(3)
    accepted: list[int] = []

    def send(own: list[dict]) -> None:
        try:
            barrier.wait()
            accepted.append(events_ingest(project=project, body=json.dumps({"events": shared + own}).encode()).accepted)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=([usage_event(session_id="own")],)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(accepted)[-1] >= 1 and sum(accepted) == len(shared) + 3
    assert RawEvent.objects.count() == RawEventKey.objects.count() == len(shared) + 3
    assert RawEvent.objects.values("event_id").distinct().count() == len(shared) + 3


# --- partitions (PostgreSQL) ---------------------------------------------------------------------


@pytest.mark.postgres
def test_partitions_for_the_coming_months_are_created_once(partitions_restored):
    later = month_start(NOW + timedelta(days=400))
    expected = [partition_name(later), partition_name(month_next(later)), partition_name(month_next(month_next(later)))]
    assert raw_partitions_ensure(now=later + timedelta(days=3)) == expected
    assert raw_partitions_ensure(now=later + timedelta(days=3)) == []
    assert all(table_exists(name) for name in expected)


@pytest.mark.postgres
def test_rows_that_landed_in_the_default_partition_move_into_their_months_new_partition(project, partitions_restored):
    arrival = months_back(7) + timedelta(days=4)
    events = calls_before(arrival, 3)
    assert ingest_at(project, events, arrival).accepted == 3
    assert rows_in("ingestion_rawevent_default") == 3
    ids = sorted(RawEvent.objects.values_list("id", flat=True))

    assert partition_name(months_back(7)) in raw_partitions_ensure(now=arrival)
    assert rows_in("ingestion_rawevent_default") == 0
    assert rows_in(partition_name(months_back(7))) == 3
    assert sorted(RawEvent.objects.values_list("id", flat=True)) == ids
    # The moved partition carries the parent's indexes, named for its month.
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", [partition_name(months_back(7))])
        names = {name for (name,) in cursor.fetchall()}
    suffix = f"p{months_back(7):%Y%m}"
    assert names == {f"ingestion_rawevent_pkey_{suffix}", f"rawevent_session_time_{suffix}",
                     f"rawevent_throttle_calls_{suffix}"}  # fmt: skip


@pytest.mark.postgres
def test_the_migration_partitions_a_populated_table(project):
    executor = MigrationExecutor(connection)
    before, after = [("ingestion", "0008_rawevent_session_throttles")], [("ingestion", "0009_raw_event_keys_and_partitions")]
    executor.migrate(before)
    try:
        old_raw = executor.loader.project_state(before).apps.get_model("ingestion", "RawEvent")
        old_month = datetime(2025, 3, 15, 9, 0, tzinfo=timezone.utc)
        stored = []
        for received_at in (old_month, old_month + timedelta(days=1), NOW):
            stored.append(old_raw.objects.create(
                project_id=project.pk, event_id=uuid.uuid4(), session_id="s1", type="usage",
                timestamp=received_at, end_at=received_at, received_at=received_at,
            ))  # fmt: skip
        executor = MigrationExecutor(connection)
        executor.migrate(after)

        with connection.cursor() as cursor:
            cursor.execute("SELECT relkind FROM pg_class WHERE relname = 'ingestion_rawevent'")
            assert cursor.fetchone()[0] == "p"
        assert rows_in("ingestion_rawevent_p202503") == 2
        assert {partition_name(month_start(NOW)), "ingestion_rawevent_default"} <= set(raw_partitions())
        assert sorted(RawEvent.objects.values_list("id", "event_id", "received_at")) == [
            (row.id, row.event_id, row.received_at) for row in stored
        ]
        assert sorted(RawEventKey.objects.values_list("event_id", "project_id", "received_at")) == sorted(
            (row.event_id, project.pk, row.received_at) for row in stored
        )
        assert ingest_at(project, [usage_event()], NOW).accepted == 1
        assert RawEvent.objects.order_by("-id").first().id > max(row.id for row in stored)
        resent = old_raw.objects.filter(pk=stored[0].pk).values_list("event_id", flat=True)[0]
        assert ingest_at(project, [usage_event(event_id=str(resent))], NOW).duplicates == 1
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS ingestion_rawevent_p202503")


# --- retention drops partitions (PostgreSQL) -----------------------------------------------------


@pytest.mark.postgres
def test_prune_drops_a_partition_past_every_projects_retention_and_deletes_the_rest_row_by_row(
    team, partitions_restored
):
    pruned = project_get_or_create(team=team, slug="pruned")
    kept = project_get_or_create(team=team, slug="kept")
    project_retention_set(project=pruned, days=30)
    droppable, shared, queued = (months_back(count) + timedelta(days=10) for count in (5, 4, 3))
    raw_partitions_ensure(now=droppable)  # that month and the two after it
    ingest_at(pruned, [*calls_before(droppable, 3, "s-a"), *calls_before(droppable, 1, "s-b")], droppable)
    # A month another project keeps: only the pruned project's rows go, row by row.
    ingest_at(pruned, calls_before(shared, 2, "s-shared"), shared)
    ingest_at(kept, calls_before(shared, 2, "s-shared"), shared)
    # A month with an event waiting for its fold: never dropped, the waiting event kept.
    ingest_at(pruned, calls_before(queued, 2, "s-queued"), queued)
    waiting = RawEvent.objects.filter(project=pruned, session_id="s-queued").order_by("id").first()
    PendingEvent.objects.create(project=pruned, session_id="s-queued", raw_event=waiting, received_at=waiting.received_at)
    before = snapshot(pruned, "s-a")
    history_end = max(RawEvent.objects.filter(project=pruned, session_id="s-a").values_list("end_at", flat=True))

    assert raw_events_prune(batch_size=2) == 4 + 2 + 1
    assert not table_exists(partition_name(months_back(5)))
    assert table_exists(partition_name(months_back(4))) and table_exists(partition_name(months_back(3)))
    assert list(RawEvent.objects.filter(project=pruned).values_list("id", flat=True)) == [waiting.id]
    assert RawEvent.objects.filter(project=kept).count() == 2
    assert list(RawEventKey.objects.filter(project=pruned).values_list("event_id", flat=True)) == [waiting.event_id]
    assert RawEventKey.objects.filter(project=kept).count() == 2
    session = SessionAggregate.objects.get(project=pruned, session_id="s-a")
    assert session.raw_pruned_through == history_end and not session.peaks_approximate
    assert SessionAggregate.objects.get(project=pruned, session_id="s-b").raw_pruned_through is not None
    assert snapshot(pruned, "s-a") == before
    assert raw_events_prune() == 0


@pytest.mark.postgres
@pytest.mark.parametrize("late", [
    lambda start: [usage_event(timestamp=(start + timedelta(seconds=1.5)).isoformat(), duration_ms=3000,
                               input_tokens=7000)],
    lambda start: [throttle_event(timestamp=(start + timedelta(seconds=1)).isoformat(), wait_ms=1500,
                                  call_id="call-1", step="other")],
])  # fmt: skip
def test_late_event_of_a_session_whose_partition_was_dropped_adds_exact_sums(team, partitions_restored, late):
    pruned = project_get_or_create(team=team, slug="pruned")
    reference = project_get_or_create(team=team, slug="reference")
    project_retention_set(project=pruned, days=30)
    arrival = months_back(4) + timedelta(days=2)
    raw_partitions_ensure(now=arrival)
    history = calls_before(arrival, 3)
    ingest_at(pruned, history, arrival)
    ingest_at(reference, history, NOW)  # the same history, kept, in this month's partition
    assert raw_events_prune() == len(history)
    assert not table_exists(partition_name(months_back(4)))

    events = late(arrival - timedelta(hours=1))
    for project in (pruned, reference):
        ingest_at(project, events, NOW)
    assert_sums_exact_and_peaks_approximate(snapshot(pruned, "session-1"), snapshot(reference, "session-1"))


@pytest.mark.postgres
def test_a_partition_the_raw_table_is_too_busy_to_detach_is_dropped_by_the_next_run(team, partitions_restored):
    """DETACH waits for the raw table's lock only briefly; meanwhile its events still go row by row."""
    pruned = project_get_or_create(team=team, slug="pruned")
    project_retention_set(project=pruned, days=30)
    arrival = months_back(5) + timedelta(days=2)
    raw_partitions_ensure(now=arrival)
    ingest_at(pruned, calls_before(arrival, 3), arrival)
    reading, done = threading.Event(), threading.Event()

    def long_reader() -> None:
        try:
            with transaction.atomic():
                RawEvent.objects.filter(project=pruned).exists()  # holds the table's lock until commit
                reading.set()
                done.wait(10)
        finally:
            connections.close_all()

    reader = threading.Thread(target=long_reader)
    reader.start()
    try:
        reading.wait(10)
        with mock.patch.multiple("apps.ingestion.retention", DETACH_LOCK_TIMEOUT="50ms", DETACH_RETRY_PAUSE_S=0):
            assert raw_events_prune() == 3
        assert table_exists(partition_name(months_back(5)))
    finally:
        done.set()
        reader.join()
    assert RawEvent.objects.count() == RawEventKey.objects.count() == 0
    raw_events_prune()
    assert not table_exists(partition_name(months_back(5)))


@pytest.mark.postgres
def test_a_sessions_folded_rows_are_read_only_from_the_months_since_it_began(project, partitions_restored):
    """The fold's lookups of a session's folded rows skip every monthly partition before its
    earliest event and after now (less and plus a margin), rather than probing each month's index
    per session."""
    from django.test.utils import CaptureQueriesContext

    from apps.ingestion.selectors import folded_throttles

    raw_partitions_ensure(now=months_back(3))
    raw_partitions_ensure(now=NOW)
    old_months = [partition_name(months_back(count)) for count in (3, 2)]
    ahead = partition_name(month_next(month_next(month_start(NOW))))
    assert all(table_exists(name) for name in (*old_months, ahead))
    started = NOW - timedelta(hours=1)
    event = throttle_event(session_id="s-1", timestamp=started.isoformat())
    assert ingest_at(project, [event], NOW).accepted == 1

    def plan_of(started_at) -> str:
        """The plan's nodes that ran: the session's bounds are a LATERAL subquery's parameters, so
        its partitions are skipped when it runs, not when it is planned."""
        with CaptureQueriesContext(connection) as queries:
            folded_throttles(project.pk, {"s-1": started_at})
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + queries.captured_queries[-1]["sql"])
            return "\n".join(row[0] for row in cursor.fetchall() if "(never executed)" not in row[0])

    unknown_start = plan_of(None)
    assert all(name in unknown_start for name in old_months), unknown_start
    assert ahead not in unknown_start, unknown_start
    bounded = plan_of(started)
    assert not any(name in bounded for name in (*old_months, ahead)), bounded
    assert partition_name(month_start(NOW)) in bounded, bounded


def plans_of_raw_lookups(run, statement_start: str | tuple[str, ...]) -> list[str]:
    """The PostgreSQL plans of the statements `run` sends that start with `statement_start` (or one
    of them), also through a server-side cursor (`DECLARE ... FOR`). An EXPLAIN only plans: a
    DELETE explained after it ran deletes nothing."""
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        run()
    plans = []
    with connection.cursor() as cursor:
        for query in queries.captured_queries:
            statement = re.sub(r"^DECLARE .+? CURSOR( WITH HOLD)? FOR ", "", query["sql"])
            if statement.startswith(statement_start):
                cursor.execute("EXPLAIN " + statement)
                plans.append("\n".join(row[0] for row in cursor.fetchall()))
    assert plans, f"no statement starting {statement_start!r}"
    return plans


@pytest.mark.postgres
def test_the_row_wise_prune_deletes_each_batch_only_from_the_months_its_rows_arrived_in(team, partitions_restored):
    pruned = project_get_or_create(team=team, slug="pruned")
    kept = project_get_or_create(team=team, slug="kept")
    project_retention_set(project=pruned, days=30)
    arrival = months_back(2) + timedelta(days=10)
    raw_partitions_ensure(now=months_back(3))
    raw_partitions_ensure(now=NOW)
    ingest_at(pruned, calls_before(arrival, 3, "s-pruned"), arrival)
    # Another project keeps the month, so its partition is not dropped: the prune deletes row by row.
    ingest_at(kept, calls_before(arrival, 2, "s-kept"), arrival)
    other_months = [partition_name(months_back(3)), partition_name(month_start(NOW)),
                    partition_name(month_next(month_next(month_start(NOW)))), "ingestion_rawevent_default"]  # fmt: skip
    assert all(table_exists(name) for name in other_months)

    deleted: list[int] = []
    plans = plans_of_raw_lookups(lambda: deleted.append(raw_events_prune(batch_size=2)),
                                 'DELETE FROM "ingestion_rawevent" WHERE id IN')  # fmt: skip
    assert deleted == [3] and len(plans) == 2
    for plan in plans:
        assert partition_name(months_back(2)) in plan, plan
        assert not any(name in plan for name in other_months), plan
    assert RawEvent.objects.filter(project=pruned).count() == RawEventKey.objects.filter(project=pruned).count() == 0
    assert RawEvent.objects.filter(project=kept).count() == RawEventKey.objects.filter(project=kept).count() == 2
    assert SessionAggregate.objects.get(project=pruned, session_id="s-pruned").raw_pruned_through is not None


@pytest.mark.postgres
def test_the_session_pages_read_its_raw_rows_only_from_the_months_since_it_began(project, partitions_restored):
    """The calls CSV and the timeline bound their lookup by the session's earliest event (its
    aggregate's started_at) less a margin; a session with no aggregate yet is read from every month."""
    from apps.dashboards.selectors import session_csv_rows, session_timeline

    raw_partitions_ensure(now=months_back(3))
    raw_partitions_ensure(now=NOW)
    old_months = [partition_name(months_back(count)) for count in (3, 2)]
    assert all(table_exists(name) for name in old_months)
    assert ingest_at(project, calls_before(NOW, 2, "s-1"), NOW).accepted == 2
    raw_select = 'SELECT "ingestion_rawevent".'

    csv_rows: list[list] = []
    for plan in [*plans_of_raw_lookups(lambda: csv_rows.extend(session_csv_rows(project=project, session_id="s-1")),
                                       raw_select),  # fmt: skip
                 *plans_of_raw_lookups(lambda: session_timeline(project=project, session_id="s-1"), raw_select)]:
        assert not any(name in plan for name in old_months), plan
        assert partition_name(month_start(NOW)) in plan, plan
    assert len(csv_rows) == 1 + 2

    valid, _ = events_validate(calls_before(NOW, 1, "s-unfolded"), now=NOW)
    with transaction.atomic():
        raw_events_insert(project_id=project.pk, received_at=NOW, events=valid)
    assert not SessionAggregate.objects.filter(project=project, session_id="s-unfolded").exists()
    unbounded = plans_of_raw_lookups(lambda: csv_rows.extend(session_csv_rows(project=project, session_id="s-unfolded")),
                                     raw_select)  # fmt: skip
    assert all(name in unbounded[0] for name in old_months), unbounded[0]
    assert len(csv_rows) == 3 + 2


@pytest.mark.postgres
def test_repricing_a_sessions_events_reads_and_updates_only_the_months_since_it_began(project, partitions_restored):
    from apps.metrics.costs import CostChange, session_costs_change

    raw_partitions_ensure(now=months_back(3))
    raw_partitions_ensure(now=NOW)
    old_months = [partition_name(months_back(count)) for count in (3, 2)]
    assert ingest_at(project, calls_before(NOW, 2, "s-1"), NOW).accepted == 2
    first = RawEvent.objects.filter(project=project, session_id="s-1").order_by("id").first()

    def reprice() -> None:
        change = CostChange(first.pk, (first.cost_nanousd or 0) + 1000, "override:bench", "")
        assert session_costs_change(project_id=project.pk, session_id="s-1", changes=[change]) == 1

    plans = plans_of_raw_lookups(reprice, ('SELECT "ingestion_rawevent".', 'UPDATE "ingestion_rawevent"'))
    assert len(plans) == 2
    for plan in plans:
        assert not any(name in plan for name in old_months), plan
        assert partition_name(month_start(NOW)) in plan, plan
    first.refresh_from_db()
    assert first.price_source == "override:bench"
