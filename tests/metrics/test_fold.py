"""Folding raw events into aggregates: equal to a from-scratch fold under out-of-order batches,
duplicate task runs and duplicates; the metadata document carries the DESIGN.md numbers."""
from __future__ import annotations

import json
import random
import uuid
from datetime import timedelta

import pytest

from apps.accounts.services import project_get_or_create
from apps.ingestion.models import PendingEvent, RawEvent
from apps.ingestion.services import events_ingest
from apps.metrics import services
from apps.metrics.models import SessionAggregate, SessionModelAggregate, SessionStepAggregate, UsageBucket
from apps.metrics.selectors import session_metadata
from tests.conftest import BASE_TIME, events_unfold, throttle_event, usage_event

# Real commits, so the on_commit hand-off to the metrics pipeline runs as in production.
pytestmark = pytest.mark.django_db(transaction=True)


def ingest(project, events):
    return events_ingest(project=project, body=json.dumps({"events": events}).encode())


def random_session(rng: random.Random, session_id: str, calls: int = 40) -> list[dict]:
    events = []
    for index in range(calls):
        start = BASE_TIME + timedelta(milliseconds=rng.randint(0, 120_000))
        duration = rng.choice([0, 5, 250, 1200, 4000, 15000])
        ttft = rng.choice([None, 0, duration / 3, duration])
        output = rng.randint(0, 2000)
        # Some prompts fill most of gpt-4o's 128k window: the context window figures get calls above 80% and 95%.
        input_tokens = rng.randint(0, 5000) if rng.random() < 0.8 else rng.randint(100_000, 128_000)
        call_id = f"call-{index}"
        events.append(usage_event(
            session_id=session_id, step=rng.choice(["plan", "draft", "review"]),
            model=rng.choice(["gpt-4o", "gpt-4o-mini", "acme-unpriced-1"]), timestamp=start.isoformat(),
            duration_ms=duration, time_to_first_token_ms=ttft, input_tokens=input_tokens, output_tokens=output,
            cache_read_tokens=input_tokens // 4, thought_tokens=output // 5, call_id=call_id,
        ))  # fmt: skip
        if rng.random() < 0.2:
            events.append(throttle_event(
                session_id=session_id, step=rng.choice(["plan", "other"]), timestamp=(start - timedelta(seconds=2)).isoformat(),
                wait_ms=rng.choice([100, 2000]), call_id=call_id if rng.random() < 0.7 else None,
            ))  # fmt: skip
    return events


def snapshot(project, session_id: str) -> dict:
    document = session_metadata(project=project, session_id=session_id)
    document.pop("project")
    return document


def approx_document(document):
    """Floats (rates, peaks) within 1e-9 relative: a peak's float sum depends on which calls were
    loaded with it; every count, token and cost is compared exactly."""
    if isinstance(document, dict):
        return {key: approx_document(value) for key, value in document.items()}
    if isinstance(document, list):
        return [approx_document(value) for value in document]
    if isinstance(document, float):
        return pytest.approx(document, rel=1e-9)
    return document


def bucket_totals(project) -> dict:
    return {
        (b.bucket_start, b.model): (b.input_tokens, b.output_tokens, b.calls, b.cost_nanousd, b.throttle_count)
        for b in UsageBucket.objects.filter(project=project)
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_out_of_order_batches_equal_a_single_batch(team, seed):
    rng = random.Random(seed)
    events = random_session(rng, "s-1")
    in_batches = project_get_or_create(team=team, slug="batches")
    at_once = project_get_or_create(team=team, slug="at-once")

    shuffled = events[:]
    rng.shuffle(shuffled)
    cuts = sorted(rng.sample(range(1, len(shuffled)), 6))
    for start, end in zip([0, *cuts], [*cuts, len(shuffled)]):
        ingest(in_batches, shuffled[start:end])
    ingest(at_once, events)

    assert snapshot(in_batches, "s-1") == approx_document(snapshot(at_once, "s-1"))
    assert bucket_totals(in_batches) == bucket_totals(at_once)


def test_running_a_fold_twice_counts_nothing_twice(project):
    ingest(project, [usage_event(), throttle_event()])
    before = snapshot(project, "session-1")
    assert services.sessions_fold(project_id=project.pk, session_ids=["session-1"]) == 0
    assert snapshot(project, "session-1") == before


def test_resent_events_are_not_counted_twice(project):
    events = [usage_event(), usage_event()]
    ingest(project, events)
    ingest(project, events)
    document = snapshot(project, "session-1")
    assert document["token_usage"]["total_input_tokens"] == 2 * 1250
    assert document["calls"] == 2


def test_deleting_a_project_deletes_its_step_and_model_rows(project):
    # Their link to the session has no database constraint (metrics migration 0010): Django's
    # collector is what deletes them, and no row may outlive its session.
    ingest(project, [usage_event(), throttle_event()])
    assert SessionStepAggregate.objects.filter(session__project=project).exists()
    assert SessionModelAggregate.objects.filter(session__project=project).exists()

    project.delete()

    assert not SessionStepAggregate.objects.exists()
    assert not SessionModelAggregate.objects.exists()


def test_unprocessed_events_are_folded_by_the_sweep(project):
    # Events committed without their task (the broker was down): only the sweep can fold them.
    ingest(project, [usage_event()])
    events_unfold()
    SessionAggregate.objects.all().delete()
    UsageBucket.objects.all().delete()
    # Arrived long ago; a queued event carries its raw row's received_at (the claim reads both).
    RawEvent.objects.update(received_at=BASE_TIME)
    PendingEvent.objects.update(received_at=BASE_TIME)
    assert services.unprocessed_sweep() == 1
    assert snapshot(project, "session-1")["token_usage"]["total_tokens"] == 1250 + 875


def test_seed_example_session_numbers(project):
    # Two calls of the F-063 seed plus one 429 wait of the LLxprt seed's example.
    ingest(project, [
        usage_event(step="persona_generation", input_tokens=42000, output_tokens=7500, duration_ms=30000,
                    time_to_first_token_ms=5000, cache_read_tokens=3500, tool_tokens=1200, thought_tokens=2500,
                    call_id="c1"),
        usage_event(step="summary_generation", input_tokens=3230, output_tokens=1250, duration_ms=5000,
                    time_to_first_token_ms=0, timestamp=(BASE_TIME + timedelta(seconds=40)).isoformat()),
        throttle_event(step="persona_generation", wait_ms=2500, call_id="c1"),
    ])  # fmt: skip
    document = snapshot(project, "session-1")
    usage = document["token_usage"]
    assert (usage["total_input_tokens"], usage["total_output_tokens"], usage["total_tokens"]) == (45230, 8750, 53980)
    assert [(s["step"], s["input"], s["output"], s["calls"]) for s in usage["breakdown_by_step"]] == [
        ("persona_generation", 42000, 7500, 1),
        ("summary_generation", 3230, 1250, 1),
    ]
    metrics = document["tokenMetrics"]
    assert metrics["sessionTokenUsage"] == {
        "input": 45230, "output": 8750, "cache": 3500, "tool": 1200, "thought": 2500, "total": 53980,
    }  # fmt: skip
    # 8750 output tokens over 25 s + 5 s of generation.
    assert metrics["tokensPerSecond"] == pytest.approx(8750 / 30)
    assert metrics["throttleWaitTimeMs"] == 2500
    assert document["throttle"]["count"] == 1
    assert usage["breakdown_by_step"][0]["throttle_wait_ms"] == 2500
    # Input of the first call lands at its start instant: 42,000 tokens within one second.
    assert metrics["burstTokensPerSecond"] == pytest.approx(42000 + 7500 / 25 * 0, abs=7500 / 25 + 1)
    assert document["bursts"]["1s"] == metrics["burstTokensPerSecond"]
    # Wall time: from the wait's start (3 s before the first call) to the end of the second call.
    assert document["throttle"]["share_of_wall_time"] == pytest.approx(2500 / 48000)


def test_a_late_usage_event_moves_its_throttle_wait_to_its_step(project):
    ingest(project, [throttle_event(step="default", wait_ms=1000, call_id="late-call")])
    steps = {s["step"]: s for s in snapshot(project, "session-1")["token_usage"]["breakdown_by_step"]}
    assert steps["default"]["calls"] == 0 and steps["default"]["throttle_wait_ms"] == 1000
    ingest(project, [usage_event(step="draft", call_id="late-call")])
    steps = {s["step"]: s for s in snapshot(project, "session-1")["token_usage"]["breakdown_by_step"]}
    assert steps["draft"]["throttle_wait_ms"] == 1000
    assert "default" not in steps  # left with neither a call nor a wait


def test_a_later_call_moves_only_the_wait_it_links_to(project):
    ingest(project, [throttle_event(step="plan", wait_ms=1000, call_id="call-a", event_id=str(uuid.uuid4())),
                     throttle_event(step="plan", wait_ms=3000, call_id="call-b", event_id=str(uuid.uuid4()))])  # fmt: skip
    ingest(project, [usage_event(step="draft", call_id="unrelated", event_id=str(uuid.uuid4()))])
    steps = {s["step"]: s for s in snapshot(project, "session-1")["token_usage"]["breakdown_by_step"]}
    assert (steps["plan"]["throttle_wait_ms"], steps["draft"]["throttle_wait_ms"]) == (4000, 0)
    ingest(project, [usage_event(step="review", call_id="call-b", event_id=str(uuid.uuid4()))])
    steps = {s["step"]: s for s in snapshot(project, "session-1")["token_usage"]["breakdown_by_step"]}
    assert (steps["plan"]["throttle_wait_ms"], steps["review"]["throttle_wait_ms"]) == (1000, 3000)
    assert steps["draft"]["throttle_wait_ms"] == 0


def test_unpriced_model_is_never_shown_as_zero_dollars(project):
    ingest(project, [usage_event(model="acme-llm-7b-instruct", provider="self-hosted")])
    cost = snapshot(project, "session-1")["cost"]
    assert cost["estimated_usd"] is None
    assert cost["unpriced_tokens"] == 1250 + 875
    assert cost["by_model"][0]["cost_usd"] is None


def test_priced_model_cost_is_in_the_document(project):
    ingest(project, [usage_event(model="gpt-4o", input_tokens=1_000_000, output_tokens=100_000)])
    cost = snapshot(project, "session-1")["cost"]
    # gpt-4o in litellm 1.106.2's map: $2.50 / M input, $10 / M output.
    assert cost["estimated_usd"] == pytest.approx(2.5 + 1.0)
    assert cost["unpriced_tokens"] == 0
    assert cost["by_model"][0]["price_source"].startswith("litellm:")


def test_buckets_place_output_over_the_generation_interval(project):
    start = BASE_TIME.replace(second=30)
    ingest(project, [usage_event(timestamp=start.isoformat(), duration_ms=60_000, input_tokens=100, output_tokens=600)])
    buckets = {b.bucket_start: (b.input_tokens, b.output_tokens, b.calls) for b in UsageBucket.objects.all()}
    minute = start.replace(second=0)
    assert buckets == {minute: (100, 300, 1), minute + timedelta(minutes=1): (0, 300, 0)}


def test_compaction_rolls_old_minutes_into_hours(project):
    ingest(project, [usage_event(timestamp=(BASE_TIME + timedelta(minutes=m)).isoformat(), event_id=str(uuid.uuid4()))
                     for m in range(3)])  # fmt: skip
    assert UsageBucket.objects.filter(granularity="minute").count() == 3
    removed = services.buckets_compact(older_than=timedelta(0))
    assert removed == 3
    (hour,) = UsageBucket.objects.all()
    assert (hour.granularity, hour.calls, hour.input_tokens) == ("hour", 3, 3 * 1250)
