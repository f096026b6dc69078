"""The fold's lookups of session rows stay key lookups for a project the planner's statistics have
never seen: their cost does not grow with the project's sessions (see RawEvent.Meta for the lesson)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from apps.accounts.services import project_get_or_create
from apps.ingestion.services import events_ingest
from apps.metrics import services
from apps.metrics.folding import sessions_lock
from apps.metrics.models import SessionAggregate
from tests.conftest import usage_event

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def _sessions_folded(project, count: int) -> list[str]:
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    session_ids = [f"s-{number}" for number in range(count)]
    events = [usage_event(session_id=session_id, timestamp=(start + timedelta(seconds=index)).isoformat())
              for index, session_id in enumerate(session_ids)]  # fmt: skip
    assert not events_ingest(project=project, body=json.dumps({"events": events}).encode()).rejected
    services.sessions_fold(project_id=project.pk, session_ids=session_ids)
    return session_ids


def test_locking_sessions_of_a_project_new_to_the_statistics_reads_them_by_key(project, team):
    _sessions_folded(project, 300)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {SessionAggregate._meta.db_table}")
    newcomer = project_get_or_create(team=team, slug="newcomer")
    session_ids = _sessions_folded(newcomer, 300)  # not analysed: the planner thinks the project has no rows
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        assert len(sessions_lock(newcomer.pk, session_ids[:20])) == 20
    plans = []
    with connection.cursor() as cursor:
        for query in queries.captured_queries:
            if query["sql"].startswith("SELECT"):
                cursor.execute("EXPLAIN " + query["sql"])
                plans.append("\n".join(row[0] for row in cursor.fetchall()))
    plan = "\n\n".join(plans)
    assert "Index Scan using sessionagg_unique_project_session" in plan, plan
    assert "(session_id)::text = locking.session_id))" in plan.split("Index Cond:")[1].splitlines()[0], plan
    assert "project_id_" not in plan, plan  # an index of the project foreign key alone


def test_aggregate_pages_leave_room_for_the_next_versions_of_their_rows():
    # A page's free half takes the new versions of its rows, so a fold's updates stay HOT
    # (migration 0007 has the measurements); buckets, updated less often, keep 70%.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, reloptions FROM pg_class WHERE relname IN ('metrics_sessionaggregate', "
            "'metrics_sessionstepaggregate', 'metrics_sessionmodelaggregate', 'metrics_usagebucket')"
        )
        options = dict(cursor.fetchall())
    assert options == {
        "metrics_sessionaggregate": ["fillfactor=50"],
        "metrics_sessionstepaggregate": ["fillfactor=50"],
        "metrics_sessionmodelaggregate": ["fillfactor=50"],
        "metrics_usagebucket": ["fillfactor=70"],
    }
