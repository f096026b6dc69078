"""benchmarks/ingest.py's load must be what it claims: fresh, valid, priced events; and the naive
baseline it compares against must store the same rows as the product."""
from __future__ import annotations

import json
import uuid

import pytest
from django.utils import timezone

from apps.ingestion.models import RawEvent
from apps.pricing.catalog import resolve_model_price
from apps.pricing.cost import event_cost_nanousd
from benchmarks._ingest_support.events import BodyFactory, EventIdSource
from tests.conftest import post_events

pytestmark = pytest.mark.django_db


def test_event_ids_are_distinct_version_4_uuids():
    ids = EventIdSource().next_ids(5000) + EventIdSource().next_ids(5000)
    parsed = [uuid.UUID(event_id) for event_id in ids]
    assert len(set(parsed)) == len(ids)
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == s for u, s in zip(parsed, ids))


def test_benchmark_batches_are_accepted_whole_and_priced_exactly(api_client, ingest_key, project):
    factory = BodyFactory(batch_size=1000, now=timezone.now(), seed=3)
    reply = post_events(api_client, ingest_key, body=factory.body())
    assert reply.status_code == 202, reply.content
    assert reply.json() == {"accepted": 1000, "duplicates": 0, "rejected": []}
    for event in RawEvent.objects.filter(project=project):
        price = resolve_model_price(event.model, event.provider)
        expected = price and event_cost_nanousd(
            price,
            input_tokens=event.input_tokens,
            output_tokens=event.output_tokens,
            cache_read_tokens=event.cache_read_tokens,
            cache_write_tokens=event.cache_write_tokens,
            thought_tokens=event.thought_tokens,
        )
        assert event.cost_nanousd == expected


def test_naive_baseline_stores_the_same_rows_as_the_product(api_client, ingest_key, project, settings):
    settings.ROOT_URLCONF = "benchmarks._ingest_support.urls"
    body = BodyFactory(batch_size=50, now=timezone.now(), seed=4).body()
    events = json.loads(body)["events"]
    naive_body = json.dumps({"events": [{**event, "event_id": str(uuid.uuid4())} for event in events]})
    assert post_events(api_client, ingest_key, body=body).status_code == 202
    reply = api_client.post(
        "/bench/naive/events", data=naive_body, content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {ingest_key}",
    )  # fmt: skip
    assert reply.status_code == 202, reply.content
    compared = ("session_id", "model", "timestamp", "end_at", "attributes", "input_tokens", "cost_nanousd", "price_source")
    product_rows, naive_rows = (
        sorted(RawEvent.objects.filter(event_id__in=ids).values_list(*compared))
        for ids in ([e["event_id"] for e in events], [e["event_id"] for e in json.loads(naive_body)["events"]])
    )
    assert product_rows == naive_rows
