"""The fold's grouped statements over a big claim hash their groups instead of sorting the calls
(apps.ingestion.selectors.claimed_usage_sql says why the condition reads "not a throttle")."""
from __future__ import annotations

import json
import random

import pytest

from apps.ingestion.models import RawEvent
from apps.ingestion.services import events_ingest
from apps.metrics import services
from apps.metrics.models import SessionAggregate
from tests.conftest import events_unfold
from tests.ingestion.test_partitions import plans_of_raw_lookups
from tests.metrics.test_fold import random_session


def test_usage_and_throttle_are_the_only_event_types():
    # The claimed-usage condition is "not a throttle": a third type would be summed as usage.
    assert set(RawEvent.Type.values) == {RawEvent.Type.USAGE, RawEvent.Type.THROTTLE}


@pytest.mark.django_db
@pytest.mark.postgres
def test_grouped_statements_of_a_big_claim_hash_their_groups(project):
    rng = random.Random(5)
    sessions = [f"big-{number}" for number in range(40)]
    events = [event for session_id in sessions for event in random_session(rng, session_id, calls=100)]
    for start in range(0, len(events), 1000):
        events_ingest(project=project, body=json.dumps({"events": events[start : start + 1000]}).encode())
    events_unfold(project)
    SessionAggregate.objects.filter(project=project).delete()

    plans = plans_of_raw_lookups(
        lambda: services.sessions_fold(project_id=project.pk, session_ids=sessions),
        ('INSERT INTO "metrics_sessionstepaggregate"', 'INSERT INTO "metrics_sessionmodelaggregate"',
         "SELECT r.session_id, r.attributes"),
    )  # fmt: skip
    assert len(plans) == 3
    for plan in plans:
        assert "HashAggregate" in plan, plan
