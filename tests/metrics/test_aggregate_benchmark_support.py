"""benchmarks/aggregate.py's live traffic must be what it claims: every session's next few calls per
round, in time order, the same stream for the same seed, and events the API accepts whole."""
from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime

import pytest
from django.utils import timezone

from benchmarks._aggregate_support.e2e import client_bodies
from benchmarks._aggregate_support.live import traffic
from tests.conftest import post_events, usage_event

pytestmark = pytest.mark.django_db


def test_each_round_brings_every_session_its_next_calls_in_time_order():
    now = timezone.now()
    times: dict[str, list[datetime]] = defaultdict(list)
    for round_events in traffic(7, 30, 3, 5, now):
        per_session: dict[str, int] = defaultdict(int)
        for raw in round_events:
            event = json.loads(raw)
            per_session[event["session_id"]] += 1
            times[event["session_id"]].append(datetime.fromisoformat(event["timestamp"]))
        assert len(per_session) == 30 and set(per_session.values()) == {5}
    assert all(stamps == sorted(stamps) and stamps[-1] < now for stamps in times.values())
    assert list(traffic(7, 30, 3, 5, now)) == list(traffic(7, 30, 3, 5, now))


def test_live_rounds_are_accepted_whole(api_client, ingest_key):
    round_events = next(traffic(8, 200, 1, 5, timezone.now()))
    body = b'{"events":[' + b",".join(round_events) + b"]}"
    reply = post_events(api_client, ingest_key, body=body)
    assert reply.status_code == 202, reply.content
    assert reply.json() == {"accepted": 1000, "duplicates": 0, "rejected": []}


def test_end_to_end_clients_post_full_batches_of_their_own_sessions(api_client, ingest_key):
    bodies = client_bodies(client=1, clients=3, sessions=30, bodies=2, batch_size=100, seed=9, now=timezone.now())
    sessions = {f"live-9-{number:06d}" for number in range(1, 30, 3)}
    for body in bodies:
        events = json.loads(body)["events"]
        assert len(events) == 100 and {event["session_id"] for event in events} == sessions
        reply = post_events(api_client, ingest_key, body=body)
        assert reply.json() == {"accepted": 100, "duplicates": 0, "rejected": []}


def test_bulk_loaded_events_are_stored_keyed_and_queued_so_a_resend_is_a_duplicate(api_client, ingest_key, project):
    """The bulk fold's events are written as ingestion writes them: a resend of one is not stored twice."""
    from apps.ingestion.models import PendingEvent, RawEvent, RawEventKey
    from benchmarks.aggregate import raw_events_load

    loaded = raw_events_load(project.pk, 3, 20, seed=4)
    assert loaded == RawEvent.objects.filter(project=project).count() >= 60
    event_ids = set(RawEvent.objects.filter(project=project).values_list("event_id", flat=True))
    assert set(RawEventKey.objects.filter(project=project).values_list("event_id", flat=True)) == event_ids
    assert PendingEvent.objects.filter(project=project).count() == loaded
    resent = usage_event(event_id=str(min(event_ids)))
    assert post_events(api_client, ingest_key, [resent]).json() == {"accepted": 0, "duplicates": 1, "rejected": []}
    assert RawEvent.objects.filter(project=project).count() == loaded
