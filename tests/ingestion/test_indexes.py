"""The raw-event indexes keep per-session lookups on the session index even when the planner's
statistics have never seen the project (see RawEvent.Meta)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from django.db import connection

from apps.accounts.services import project_get_or_create
from apps.ingestion.models import PendingEvent, RawEvent
from apps.ingestion.services import events_ingest
from tests.conftest import throttle_event, usage_event

pytestmark = pytest.mark.django_db


def test_every_index_led_by_project_has_session_id_next():
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, RawEvent._meta.db_table)
    led_by_project = {name: spec["columns"] for name, spec in constraints.items()
                      if spec["index"] and spec["columns"] and spec["columns"][0] == "project_id"}  # fmt: skip
    assert led_by_project, "the session index must exist"
    for name, columns in led_by_project.items():
        assert columns[:2] == ["project_id", "session_id"], (name, columns)


def _ingest(project, session_count: int, events_per_session: int) -> None:
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    for session in range(session_count):
        events = [usage_event(session_id=f"s-{session}", timestamp=(start + timedelta(seconds=i)).isoformat())
                  for i in range(events_per_session)]  # fmt: skip
        result = events_ingest(project=project, body=json.dumps({"events": events}).encode())
        assert not result.rejected


@pytest.mark.postgres
def test_session_lookup_of_a_project_the_statistics_never_saw_uses_the_session_index(project, team):
    _ingest(project, session_count=20, events_per_session=50)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {RawEvent._meta.db_table}")
    newcomer = project_get_or_create(team=team, slug="newcomer")
    _ingest(newcomer, session_count=5, events_per_session=50)  # not analysed: the planner thinks ~0 rows
    with connection.cursor() as cursor:
        cursor.execute(
            f"EXPLAIN SELECT id FROM {RawEvent._meta.db_table} WHERE project_id = %s AND session_id = %s "
            "AND timestamp <= now() AND end_at >= now() - interval '1 hour' AND type = 'usage'",
            [newcomer.pk, "s-1"],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "rawevent_session_time" in plan, plan
    assert "session_id)::text = " in plan.split("Index Cond:")[1].splitlines()[0], plan


@pytest.mark.postgres
def test_the_fold_claim_reads_only_the_chosen_rows_by_key(project, team):
    """The claim finds pending rows through their key and copies raw rows found through the primary
    key, even for a project the statistics never saw: no sequential scan of either table. On
    PostgreSQL's monthly partitions only the partition the events arrived in is read: the others
    (empty here, so planned as sequential scans) are skipped when the statement starts."""
    from apps.ingestion.selectors import claim, claim_statement_postgres

    _ingest(project, session_count=20, events_per_session=50)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {RawEvent._meta.db_table}")
        cursor.execute(f"ANALYZE {PendingEvent._meta.db_table}")
    newcomer = project_get_or_create(team=team, slug="newcomer")
    _ingest(newcomer, session_count=5, events_per_session=50)
    sessions = [f"s-{session}" for session in range(5)]
    claim(newcomer.pk, sessions, 0)  # creates the connection's table of claimed rows
    with connection.cursor() as cursor:
        statement = claim_statement_postgres(newcomer.pk, sessions, 1000)
        cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + statement[0], statement[1])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    read = [line for line in plan.splitlines() if "(never executed)" not in line]
    assert not [line for line in read if "Seq Scan" in line], plan
    assert "Tid Scan on ingestion_pendingevent" in plan, plan
    scans = [line for line in read if "Index Scan using ingestion_rawevent_pkey" in line]
    assert len(scans) == 1 and "(actual rows=250 " in scans[0], plan


@pytest.mark.postgres
def test_a_sessions_folded_throttles_are_read_without_its_usage_rows(project):
    """Re-attributing a session's waits reads its throttle rows through their partial index, not
    every row of its history through the session index."""
    from django.test.utils import CaptureQueriesContext

    from apps.ingestion.selectors import folded_throttles

    _ingest(project, session_count=5, events_per_session=200)
    start = datetime.now(timezone.utc) - timedelta(minutes=30)
    throttles = [throttle_event(session_id="s-1", timestamp=(start + timedelta(seconds=i)).isoformat()) for i in range(3)]
    assert not events_ingest(project=project, body=json.dumps({"events": throttles}).encode()).rejected
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {RawEvent._meta.db_table}")
    with CaptureQueriesContext(connection) as queries:
        assert len(folded_throttles(project.pk, {"s-1": None})) == 0  # pending: not folded yet
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + queries.captured_queries[-1]["sql"])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "rawevent_throttle_calls" in plan, plan
    assert "rawevent_session_time" not in plan, plan


@pytest.mark.postgres
def test_claimed_calls_find_their_waits_by_call_id_without_reading_the_sessions_other_waits(project):
    """The fold asks which sessions' claimed calls carry the call_id of one of their waits: one probe
    of the throttle index by call_id per claimed call, not a read of every wait of the session."""
    from django.db import transaction
    from django.test.utils import CaptureQueriesContext

    from apps.ingestion.selectors import claim, sessions_whose_claimed_calls_were_throttled

    start = datetime.now(timezone.utc) - timedelta(minutes=30)
    waits = [throttle_event(session_id="s-1", call_id=f"call-{i}", timestamp=(start + timedelta(seconds=i)).isoformat())
             for i in range(40)]  # fmt: skip
    assert not events_ingest(project=project, body=json.dumps({"events": waits}).encode()).rejected
    calls = [usage_event(session_id="s-1", call_id="call-7", timestamp=start.isoformat()),
             usage_event(session_id="s-2", call_id="call-7", timestamp=start.isoformat())]  # fmt: skip
    with transaction.atomic():
        PendingEvent.objects.filter(project=project).delete()  # the waits are folded
        assert not events_ingest(project=project, body=json.dumps({"events": calls}).encode()).rejected
        assert claim(project.pk, ["s-1", "s-2"], 1000) == 2
        with CaptureQueriesContext(connection) as queries:
            found = sessions_whose_claimed_calls_were_throttled(project.pk, {"s-1": start, "s-2": start})
        assert found == {"s-1"}  # s-2's call shares the call_id, not a session with that wait
        with connection.cursor() as cursor:
            query = queries.captured_queries[-1]["sql"]
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + query)
            plan = "\n".join(row[0] for row in cursor.fetchall())
    probes = [line for line in plan.splitlines() if "Index Scan using rawevent_throttle_calls" in line
              and "(never executed)" not in line]  # fmt: skip
    assert probes and all("rows=1 " in line or "rows=0 " in line for line in probes), plan
    assert "call_id" in plan.split("Index Cond:")[1].splitlines()[0], plan
