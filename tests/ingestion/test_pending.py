"""Every new raw event is queued for the fold exactly once, in the transaction that stores it."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from apps.ingestion.models import PendingEvent, RawEvent
from tests.conftest import post_events, throttle_event, usage_event


def _queue(project) -> list[tuple]:
    return sorted(PendingEvent.objects.filter(project=project).values_list("raw_event_id", "session_id", "received_at"))


def _stored(project) -> list[tuple]:
    return sorted(RawEvent.objects.filter(project=project).values_list("id", "session_id", "received_at"))


@pytest.mark.django_db
def test_each_new_event_gets_one_pending_row(api_client, ingest_key, project):
    events = [usage_event(session_id="a"), throttle_event(session_id="b"), usage_event(session_id="a")]
    assert post_events(api_client, ingest_key, events).status_code == 202
    assert len(_queue(project)) == 3
    assert _queue(project) == _stored(project)


@pytest.mark.django_db
def test_a_resent_event_is_not_queued_again(api_client, ingest_key, project):
    # On PostgreSQL the second batch takes the conflict-aware path (its COPY is rejected).
    first = [usage_event(session_id="a"), usage_event(session_id="b")]
    post_events(api_client, ingest_key, first)
    response = post_events(api_client, ingest_key, [*first, usage_event(session_id="c")])
    assert response.json() == {"accepted": 1, "duplicates": 2, "rejected": []}
    assert len(_queue(project)) == 3
    assert _queue(project) == _stored(project)


@pytest.mark.django_db
def test_a_rejected_event_is_not_queued(api_client, ingest_key, project):
    response = post_events(api_client, ingest_key, [usage_event(), usage_event(input_tokens=-1)])
    assert response.status_code == 207
    assert _queue(project) == _stored(project) and len(_stored(project)) == 1


@pytest.mark.django_db(transaction=True)
def test_the_migration_queues_exactly_the_unfolded_events(project):
    """Migration 0003 replaces `processed_at IS NULL` with pending rows: unfolded events are queued,
    folded ones are not, and going back restores the marks."""
    executor = MigrationExecutor(connection)
    before, after = [("ingestion", "0002_rawevent_session_led_indexes")], [("ingestion", "0003_pending_events")]
    executor.migrate(before)
    try:
        old_raw = executor.loader.project_state(before).apps.get_model("ingestion", "RawEvent")
        now = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
        common = dict(project_id=project.pk, type="usage", timestamp=now, end_at=now, received_at=now)
        unfolded = old_raw.objects.create(event_id=uuid.uuid4(), session_id="s1", **common)
        folded = old_raw.objects.create(event_id=uuid.uuid4(), session_id="s1", processed_at=now, **common)
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        assert list(PendingEvent.objects.values_list("raw_event_id", "session_id")) == [(unfolded.pk, "s1")]
        executor = MigrationExecutor(connection)
        executor.migrate(before)
        old_raw = executor.loader.project_state(before).apps.get_model("ingestion", "RawEvent")
        marks = {pk: processed_at is not None for pk, processed_at in old_raw.objects.values_list("pk", "processed_at")}
        assert marks == {unfolded.pk: False, folded.pk: True}
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db
def test_deleting_a_project_deletes_its_queue(api_client, ingest_key, project, other_team_project):
    post_events(api_client, ingest_key, [usage_event(), throttle_event()])
    from apps.accounts.services import api_key_create

    other_key = api_key_create(project=other_team_project).plaintext
    post_events(api_client, other_key, [usage_event()])
    project_pk = project.pk
    assert PendingEvent.objects.filter(project_id=project_pk).count() == 2
    project.delete()
    assert not PendingEvent.objects.filter(project_id=project_pk).exists()
    assert PendingEvent.objects.filter(project=other_team_project).count() == 1
