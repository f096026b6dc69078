"""One definition per number: every aggregate sums the per-event values stored at ingest, so a
session's totals equal the sum over its steps and over its models to the unit, and every figure
equals its recomputation from the raw events (apps.metrics.algorithms)."""
from __future__ import annotations

import json
import random
import uuid
from collections import Counter, defaultdict
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokensite_client.events import MAX_DURATION_MS, MAX_TOKENS

from apps.accounts.services import project_get_or_create
from apps.ingestion.models import RawEvent
from apps.ingestion.services import events_ingest
from apps.metrics import algorithms as algo
from apps.metrics import services
from apps.metrics.folding import SUM_COLUMNS
from apps.metrics.models import SessionAggregate, SessionModelAggregate, SessionStepAggregate, UsageBucket
from tests.conftest import BASE_TIME, events_unfold, property_examples, throttle_event, usage_event
from tests.metrics.test_fold import random_session, snapshot

pytestmark = pytest.mark.django_db(transaction=True)


def ingest_and_fold(project, events: list[dict]) -> None:
    events_ingest(project=project, body=json.dumps({"events": events}).encode())
    services.sessions_fold(project_id=project.pk, session_ids=sorted({event["session_id"] for event in events}))


def assert_sessions_equal_their_steps_and_models(project) -> None:
    for session in SessionAggregate.objects.filter(project=project):
        for column in SUM_COLUMNS:
            over_steps = sum(getattr(row, column) for row in SessionStepAggregate.objects.filter(session=session))
            over_models = sum(getattr(row, column) for row in SessionModelAggregate.objects.filter(session=session))
            assert (getattr(session, column), over_steps, over_models) == (getattr(session, column),) * 3, (
                session.session_id, column
            )


def recomputed_from_raw(project) -> tuple[dict, dict]:
    """Each session's sums and each minute bucket's figures from the raw events, with the
    reference definitions (not the stored derived values)."""
    sessions: dict[str, Counter] = defaultdict(Counter)
    buckets: dict[tuple, Counter] = defaultdict(Counter)
    for event in RawEvent.objects.filter(project=project):
        sums = sessions[event.session_id]
        start_us = algo.epoch_us(event.timestamp)
        key = (algo.bucket_start_us(start_us), event.provider, event.model)
        sums["event_count"] += 1
        if event.type == "throttle":
            sums["throttle_count"] += 1
            sums["throttle_wait_us"] += algo.ms_to_us(event.wait_ms)
            buckets[key]["throttle_count"] += 1
            buckets[key]["throttle_wait_us"] += algo.ms_to_us(event.wait_ms)
            continue
        generation_start_us, end_us = algo.generation_interval_us(start_us, event.duration_ms, event.time_to_first_token_ms)
        sums["calls"] += 1
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "thought_tokens"):
            sums[name] += getattr(event, name)
        if end_us > generation_start_us:
            sums["generation_us"] += end_us - generation_start_us
            sums["timed_output_tokens"] += event.output_tokens
        if event.cost_nanousd is None:
            sums["unpriced_calls"] += 1
            sums["unpriced_tokens"] += event.input_tokens + event.output_tokens
        else:
            sums["cost_nanousd"] += event.cost_nanousd
        buckets[key]["calls"] += 1
        call = algo.PlacedCall(start_us, end_us, generation_start_us, event.input_tokens, event.output_tokens)
        for share in algo.bucket_call_tokens(call):
            share_key = (share.bucket_start_us, event.provider, event.model)
            buckets[share_key]["input_tokens"] += share.input_tokens
            buckets[share_key]["output_tokens"] += share.output_tokens
    return sessions, buckets


def assert_equal_to_recomputation(project) -> None:
    expected_sessions, expected_buckets = recomputed_from_raw(project)
    for session in SessionAggregate.objects.filter(project=project):
        expected = expected_sessions.pop(session.session_id)
        for name in ("event_count", "calls", "input_tokens", "output_tokens", "cache_read_tokens", "thought_tokens",
                     "generation_us", "timed_output_tokens", "throttle_count", "throttle_wait_us", "cost_nanousd",
                     "unpriced_calls", "unpriced_tokens"):  # fmt: skip
            assert getattr(session, name) == expected[name], (session.session_id, name)
    assert not expected_sessions
    folded = {
        (algo.epoch_us(row.bucket_start), row.provider, row.model): Counter({
            name: getattr(row, name)
            for name in ("calls", "input_tokens", "output_tokens", "throttle_count", "throttle_wait_us")
            if getattr(row, name)
        })
        for row in UsageBucket.objects.filter(project=project, granularity=UsageBucket.Granularity.MINUTE)
    }  # fmt: skip
    expected_buckets = {key: +sums for key, sums in expected_buckets.items() if +sums}
    assert {key: sums for key, sums in folded.items() if sums} == expected_buckets


def odd_session(rng: random.Random, session_id: str) -> list[dict]:
    """random_session with fractional durations, first-token times and waits (the roundings to
    whole microseconds), some calls spanning several minutes."""
    events = random_session(rng, session_id, calls=rng.randint(1, 25))
    for event in events:
        if event["type"] == "usage" and rng.random() < 0.5:
            event["duration_ms"] = rng.choice([0.0004, 0.0006, 1.2345, rng.uniform(0, 200_000)])
            event["time_to_first_token_ms"] = rng.choice([None, event["duration_ms"] * rng.random()])
        elif event["type"] == "throttle":
            event["wait_ms"] = rng.choice([0.0006, 0.0005, 1.0005, 2_000.0004])
    return events


@settings(max_examples=property_examples(30), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(seed=st.integers(0, 2**32 - 1))
def test_session_totals_equal_their_steps_and_models_and_the_raw_events(team, seed):
    rng = random.Random(seed)
    project = project_get_or_create(team=team, slug=f"p-{uuid.uuid4().hex[:12]}")
    events = [event for number in range(rng.randint(1, 3)) for event in odd_session(rng, f"s-{number}")]
    rng.shuffle(events)
    cuts = sorted(rng.sample(range(1, len(events)), min(len(events) - 1, rng.randint(0, 5)))) if len(events) > 1 else []
    batches = [events[start:end] for start, end in zip([0, *cuts], [*cuts, len(events)])]
    for batch in batches:
        ingest_and_fold(project, batch)
        if rng.random() < 0.3:
            ingest_and_fold(project, batch)  # resent: stored once, folded once
    assert_sessions_equal_their_steps_and_models(project)
    assert_equal_to_recomputation(project)


def test_tiny_waits_over_two_steps_sum_the_same_on_the_session_and_its_steps(project):
    """998 waits of 0.0006 ms, each stored as 1 µs: 998 µs on the session, over its steps and over
    its models (a float sum rounded once gave 1 ms on the session and 0 over the steps)."""
    waits = [
        throttle_event(step=("plan", "draft")[index % 2], wait_ms=0.0006,
                       timestamp=(BASE_TIME + timedelta(milliseconds=index)).isoformat())
        for index in range(998)
    ]  # fmt: skip
    ingest_and_fold(project, waits)
    session = SessionAggregate.objects.get(project=project)
    steps = SessionStepAggregate.objects.filter(session=session)
    models = SessionModelAggregate.objects.filter(session=session)
    assert session.throttle_wait_us == 998
    assert sum(step.throttle_wait_us for step in steps) == 998
    assert sum(model.throttle_wait_us for model in models) == 998
    assert_equal_to_recomputation(project)


def test_sums_past_32_bits_fold_exactly(project):
    """Calls at ingest's limits (10**9 tokens, 24 h): every sum passes 2**31 within one batch and
    2**53 never, the sums stay integers to the unit on the session, its steps, models and buckets."""
    calls = [
        usage_event(step=("plan", "draft")[index % 2], input_tokens=MAX_TOKENS, output_tokens=MAX_TOKENS - index,
                    cache_read_tokens=MAX_TOKENS // 2, duration_ms=MAX_DURATION_MS - index,
                    timestamp=(BASE_TIME + timedelta(minutes=index)).isoformat())
        for index in range(7)
    ]  # fmt: skip
    ingest_and_fold(project, calls[:4])
    ingest_and_fold(project, calls[4:])
    session = SessionAggregate.objects.get(project=project)
    assert session.input_tokens == 7 * MAX_TOKENS
    assert session.output_tokens == 7 * MAX_TOKENS - sum(range(7))
    assert session.generation_us > 2**31
    assert_sessions_equal_their_steps_and_models(project)
    assert_equal_to_recomputation(project)


def test_rows_stored_without_derived_values_fold_as_rows_with_them(team):
    """A loader that names none of the derived columns (or the previous release) stores rows the
    fold derives before summing: the same aggregates as rows written by ingest, and the same again
    when a later batch re-attributes the session's waits."""
    rng = random.Random(7)
    events = odd_session(rng, "s-1") + odd_session(rng, "s-2")
    written = project_get_or_create(team=team, slug="written")
    loaded = project_get_or_create(team=team, slug="loaded")
    ingest_and_fold(written, [dict(event) for event in events])
    ingest_and_fold(loaded, [{**event, "event_id": str(uuid.uuid4())} for event in events])
    SessionAggregate.objects.filter(project=loaded).delete()
    UsageBucket.objects.filter(project=loaded).delete()
    RawEvent.objects.filter(project=loaded).update(
        duration_us=0, generation_us=0, wait_us=0, bucket_start=None, crosses_bucket=False
    )
    events_unfold(loaded)
    services.sessions_fold(project_id=loaded.pk, session_ids=["s-1", "s-2"])
    # Waits are read again by later folds (re-attribution): theirs are stored.
    assert not RawEvent.objects.filter(project=loaded, type="throttle", bucket_start=None).exists()
    for session_id in ("s-1", "s-2"):
        assert snapshot(loaded, session_id) == snapshot(written, session_id)
    assert_equal_to_recomputation(loaded)
    late = [throttle_event(session_id="s-1", call_id="call-0", wait_ms=0.0006, step="late")]
    ingest_and_fold(written, late)
    ingest_and_fold(loaded, [{**late[0], "event_id": str(uuid.uuid4())}])
    assert snapshot(loaded, "s-1") == snapshot(written, "s-1")
    assert_sessions_equal_their_steps_and_models(loaded)
