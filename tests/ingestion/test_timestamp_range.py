"""Accepted timestamps: 2000-01-01T00:00:00Z to 5 minutes past the server's clock, compared in UTC
after applying the event's offset; anything else is rejected per event, naming `timestamp`."""
from __future__ import annotations

from datetime import timedelta, timezone

import pytest
from django.utils import timezone as dj_timezone

from apps.ingestion.models import PendingEvent, RawEvent
from apps.metrics.models import SessionAggregate
from apps.metrics.services import unprocessed_sweep
from tests.conftest import post_events, throttle_event, usage_event

TOO_EARLY = {"timestamp": ["timestamp must not be before 2000-01-01T00:00:00Z."]}


@pytest.mark.django_db(transaction=True)
def test_the_poison_event_of_issue_12_is_rejected_and_its_batch_folds(api_client, ingest_key):
    poison = {"event_id": "0b7e7c3e-54a4-4b8e-9c55-2f1f0f3f7a09", "type": "usage", "session_id": "poison",
              "model": "gpt-4o", "timestamp": "0001-01-01T00:00:00+14:00", "duration_ms": 1, "input_tokens": 1,
              "output_tokens": 1}  # fmt: skip
    response = post_events(api_client, ingest_key, [usage_event(session_id="a"), poison, throttle_event(session_id="z")])

    assert response.status_code == 207
    assert response.json()["rejected"] == [{"index": 1, "event_id": poison["event_id"], "errors": TOO_EARLY}]
    assert not RawEvent.objects.filter(session_id="poison").exists()
    assert PendingEvent.objects.count() == 0, "the valid events folded"
    assert sorted(SessionAggregate.objects.values_list("session_id", "event_count")) == [("a", 1), ("z", 1)]
    assert unprocessed_sweep(min_age=timedelta(0)) == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("timestamp", "accepted"),
    [
        ("2000-01-01T00:00:00Z", True),
        ("1999-12-31T19:00:00-05:00", True),  # 2000-01-01T00:00:00Z
        ("1999-12-31T23:59:59.999999Z", False),
        ("2000-01-01T00:59:59+01:00", False),  # 1999-12-31T23:59:59Z
        ("1970-01-01T00:00:00Z", False),
        ("0001-01-01T00:00:00+14:00", False),
    ],
)
def test_timestamps_before_2000_in_utc_are_rejected(api_client, ingest_key, timestamp, accepted):
    response = post_events(api_client, ingest_key, [usage_event(timestamp=timestamp)])
    if accepted:
        assert response.status_code == 202, response.json()
    else:
        assert response.json()["rejected"][0]["errors"] == TOO_EARLY


@pytest.mark.django_db
def test_the_future_bound_applies_after_the_offset(api_client, ingest_key):
    now = dj_timezone.now()
    minus_14 = timezone(timedelta(hours=-14))
    far_offset_but_now = (now + timedelta(minutes=4)).astimezone(minus_14).isoformat()
    year_9999 = "9999-12-31T23:59:59-14:00"
    response = post_events(api_client, ingest_key, [usage_event(timestamp=far_offset_but_now),
                                                    usage_event(timestamp=year_9999)])  # fmt: skip
    assert response.json()["accepted"] == 1
    assert response.json()["rejected"][0]["errors"] == {"timestamp": ["timestamp is more than 5 minutes in the future."]}

