"""Context windows (issue 15): each call's share of its model's input window, fixed at ingest, and
per step and model the largest share and the calls above 80% and 95%, folded exactly once."""
from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import timedelta

import pytest

from apps.accounts.services import project_get_or_create
from apps.core.errors import BadRequest, ErrorCode
from apps.ingestion.models import RawEvent
from apps.ingestion.services import events_ingest
from apps.metrics import folding, services
from apps.metrics.models import SessionModelAggregate, SessionStepAggregate
from apps.metrics.selectors import session_metadata
from apps.pricing.context_windows import context_window_override_delete, context_window_override_set
from apps.pricing.offline import get_litellm
from apps.pricing.services import price_book_import
from tests.conftest import BASE_TIME, events_unfold, pending_count, throttle_event, usage_event

pytestmark = pytest.mark.django_db(transaction=True)


def ingest(project, events):
    result = events_ingest(project=project, body=json.dumps({"events": events}).encode())
    assert not result.rejected, result.as_dict()
    return result


def litellm_window(model: str) -> int:
    return get_litellm().model_cost[model]["max_input_tokens"]


def stored_share(project, event) -> float | None:
    return RawEvent.objects.get(project=project, event_id=event["event_id"]).context_share


def test_share_of_a_known_model_is_its_input_over_litellms_window(project):
    event = usage_event(model="gpt-4o", input_tokens=100_000, cache_read_tokens=60_000, output_tokens=10)
    ingest(project, [event])
    assert litellm_window("gpt-4o") == 128_000
    assert stored_share(project, event) == 100_000 / 128_000


def test_share_counts_cache_reads_and_writes_as_input(project):
    # Anthropic's usage object leaves cached tokens out of input_tokens; DESIGN.md section 1 puts
    # them in, and so does the share: 10 + 150,000 + 20,000 of Claude Sonnet 4.5's 200,000.
    usage = {"input_tokens": 10, "cache_read_input_tokens": 150_000, "cache_creation_input_tokens": 20_000,
             "output_tokens": 5}  # fmt: skip
    event = usage_event(provider="anthropic", model="claude-sonnet-4-5", usage_raw=usage)
    for name in ("input_tokens", "output_tokens"):
        event.pop(name)
    ingest(project, [event])
    assert stored_share(project, event) == 170_010 / litellm_window("claude-sonnet-4-5")


def test_share_of_a_model_priced_through_another_route_uses_that_entrys_window(project):
    # The F-063 seed's model is missing from the map; its Bedrock entry (ROUTE_ALIASES) prices it.
    event = usage_event(provider="anthropic", model="claude-sonnet-4-20250514", input_tokens=50_000)
    ingest(project, [event])
    assert stored_share(project, event) == 50_000 / litellm_window("anthropic.claude-sonnet-4-20250514-v1:0")


def test_project_override_wins_over_litellm_and_knows_models_litellm_does_not(project):
    context_window_override_set(project=project, model="gpt-4o", max_input_tokens=32_000)
    context_window_override_set(project=project, model="acme-llama-8k", max_input_tokens=8_192)
    gpt, llama = usage_event(model="gpt-4o", input_tokens=16_000), usage_event(model="acme-llama-8k", input_tokens=7_000)
    ingest(project, [gpt, llama])
    assert stored_share(project, gpt) == 0.5
    assert stored_share(project, llama) == 7_000 / 8_192
    # Removed: later calls use litellm's window again; stored shares stay as they were measured.
    assert context_window_override_delete(project=project, model="gpt-4o") is True
    later = usage_event(model="gpt-4o", input_tokens=16_000)
    ingest(project, [later])
    assert stored_share(project, later) == 16_000 / 128_000
    assert stored_share(project, gpt) == 0.5


def test_a_model_priced_by_an_imported_price_book_takes_that_books_window(project):
    entry = {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-06,
             "output_cost_per_token": 2e-06, "max_input_tokens": 400_000}  # fmt: skip
    price_book_import(data=json.dumps({"gpt-9-preview": entry}).encode(), file_name="newer.json")
    event = usage_event(model="gpt-9-preview", input_tokens=360_000)
    ingest(project, [event])
    assert stored_share(project, event) == 0.9


def test_an_override_is_a_positive_window_for_a_named_model(project):
    for model, tokens, code in [("gpt-4o", 0, ErrorCode.INVALID_CONTEXT_WINDOW),
                                ("gpt-4o", 10**10, ErrorCode.INVALID_CONTEXT_WINDOW),
                                ("  ", 1000, ErrorCode.INVALID_MODEL)]:  # fmt: skip
        with pytest.raises(BadRequest) as raised:
            context_window_override_set(project=project, model=model, max_input_tokens=tokens)
        assert raised.value.code is code
    override = context_window_override_set(project=project, model=" gpt-4o ", max_input_tokens=1000)
    assert context_window_override_set(project=project, model="gpt-4o", max_input_tokens=2000).pk == override.pk


def test_unknown_model_has_no_share_and_is_unknown_never_zero(project):
    event = usage_event(model="acme-unknown-1", input_tokens=90_000)
    ingest(project, [event, throttle_event(model="acme-unknown-1")])
    assert stored_share(project, event) is None
    assert RawEvent.objects.get(project=project, type="throttle").context_share is None
    document = session_metadata(project=project, session_id="session-1")
    unknown = {"max_share": None, "calls_over_80": None, "calls_over_95": None, "known_calls": 0, "unknown_calls": 1}
    assert document["token_usage"]["breakdown_by_step"][0]["context_window"] == unknown
    assert document["cost"]["by_model"][0]["context_window"] == unknown


def test_calls_above_80_and_95_percent_are_counted_per_step_and_model(project):
    window = 128_000
    shares = {  # input tokens -> above 80%, above 95%
        int(window * 0.5): (False, False),
        int(window * 0.8): (False, False),  # exactly 80% is not above it
        int(window * 0.8) + 1: (True, False),
        int(window * 0.95): (True, False),
        int(window * 0.95) + 1: (True, True),
        window + 5_000: (True, True),  # longer than the window litellm knows: kept, above 100%
    }
    events = [
        usage_event(step="draft", model="gpt-4o", input_tokens=tokens, timestamp=(BASE_TIME + timedelta(seconds=i)).isoformat())
        for i, tokens in enumerate(shares)
    ]  # fmt: skip
    events.append(usage_event(step="draft", model="acme-unknown-1", input_tokens=127_000))
    events.append(usage_event(step="plan", model="gpt-4o-mini", input_tokens=1_280))
    ingest(project, events)
    document = session_metadata(project=project, session_id="session-1")
    steps = {step["step"]: step["context_window"] for step in document["token_usage"]["breakdown_by_step"]}
    assert steps["draft"] == {
        "max_share": (window + 5_000) / window, "calls_over_80": 4, "calls_over_95": 2, "known_calls": 6,
        "unknown_calls": 1,
    }  # fmt: skip
    assert steps["plan"] == {"max_share": 0.01, "calls_over_80": 0, "calls_over_95": 0, "known_calls": 1,
                             "unknown_calls": 0}  # fmt: skip
    models = {model["model"]: model["context_window"] for model in document["cost"]["by_model"]}
    assert models["gpt-4o"] == {**steps["draft"], "unknown_calls": 0}
    assert models["acme-unknown-1"]["max_share"] is None and models["acme-unknown-1"]["unknown_calls"] == 1


def test_a_fold_run_twice_or_a_resent_batch_counts_no_call_twice(project):
    events = [usage_event(model="gpt-4o", input_tokens=125_000), usage_event(model="gpt-4o", input_tokens=110_000)]
    ingest(project, events)
    ingest(project, events)
    assert services.sessions_fold(project_id=project.pk, session_ids=["session-1"]) == 0
    step = SessionStepAggregate.objects.get(session__project=project)
    assert (step.context_known_calls, step.context_calls_over_80, step.context_calls_over_95) == (2, 2, 1)


# --- Against recomputation from raw events -----------------------------------------------------

SESSIONS = [f"ctx-{number}" for number in range(5)]
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "acme-unknown-1", "acme-llama-8k"]


def random_calls(rng: random.Random) -> list[dict]:
    events = []
    for session_id in SESSIONS:
        for index in range(30):
            input_tokens = rng.choice([rng.randint(0, 8_000), rng.randint(100_000, 210_000)])
            model = rng.choice(MODELS)
            events.append(usage_event(
                session_id=session_id, step=rng.choice(["plan", "draft", "review"]), model=model,
                provider="anthropic" if "claude" in model else "openai", input_tokens=input_tokens,
                cache_read_tokens=input_tokens // 3, output_tokens=rng.randint(0, 500), call_id=f"call-{index}",
                timestamp=(BASE_TIME + timedelta(milliseconds=rng.randint(0, 60_000))).isoformat(),
            ))  # fmt: skip
            if rng.random() < 0.15:
                events.append(throttle_event(session_id=session_id, step="plan", call_id=f"call-{index}"))
    return events


def recomputed_from_raw(project) -> dict:
    """Per (session, step) and (session, provider, model): the pressure figures computed from raw rows."""
    figures: dict[tuple, list] = defaultdict(lambda: [0, None, 0, 0])
    for event in RawEvent.objects.filter(project=project, type="usage"):
        for key in (("step", event.session_id, event.step), ("model", event.session_id, event.provider, event.model)):
            figure = figures[key]
            if event.context_share is not None:
                figure[0] += 1
                figure[1] = event.context_share if figure[1] is None else max(figure[1], event.context_share)
                figure[2] += event.context_share > 0.8
                figure[3] += event.context_share > 0.95
    return {key: tuple(value) for key, value in figures.items()}


def folded_figures(project) -> dict:
    columns = ("context_known_calls", "context_max_share", "context_calls_over_80", "context_calls_over_95")
    figures = {}
    for row in SessionStepAggregate.objects.filter(session__project=project, calls__gt=0).values(
        "session__session_id", "step", *columns
    ):
        figures[("step", row["session__session_id"], row["step"])] = tuple(row[column] for column in columns)
    for row in SessionModelAggregate.objects.filter(session__project=project, calls__gt=0).values(
        "session__session_id", "provider", "model", *columns
    ):
        figures[("model", row["session__session_id"], row["provider"], row["model"])] = tuple(row[c] for c in columns)
    return figures


@pytest.mark.parametrize("seed", [1, 2])
def test_folded_pressure_equals_recomputation_from_raw_events(team, monkeypatch, seed):
    # Small transactions: sessions split across claims and chunks, batches out of order.
    monkeypatch.setattr(folding, "SESSIONS_PER_TRANSACTION", 2)
    monkeypatch.setattr(folding, "EVENTS_PER_TRANSACTION", 17)
    project = project_get_or_create(team=team, slug=f"ctx-{seed}")
    context_window_override_set(project=project, model="acme-llama-8k", max_input_tokens=250_000)
    rng = random.Random(seed)
    events = random_calls(rng)
    shuffled = events[:]
    rng.shuffle(shuffled)
    for start in range(0, len(shuffled), 23):
        ingest(project, shuffled[start : start + 23])
        if rng.random() < 0.5:
            ingest(project, shuffled[start : start + 23])  # a resent batch
    expected = recomputed_from_raw(project)
    assert any(figure[3] for figure in expected.values()) and any(figure[0] == 0 for figure in expected.values())
    assert folded_figures(project) == expected

    # Folded again from scratch (everything back on the queue, aggregates gone): the same figures.
    SessionStepAggregate.objects.filter(session__project=project).delete()
    SessionModelAggregate.objects.filter(session__project=project).delete()
    from apps.metrics.models import SessionAggregate

    SessionAggregate.objects.filter(project=project).delete()
    events_unfold(project)
    services.sessions_fold(project_id=project.pk, session_ids=SESSIONS)
    assert pending_count(project=project) == 0
    assert folded_figures(project) == expected


def test_metadata_api_returns_the_figures_and_the_schema_documents_them(api_client, project, read_key):
    ingest(project, [usage_event(model="gpt-4o", input_tokens=124_000), usage_event(model="acme-unknown-1")])
    body = api_client.get("/api/v1/sessions/session-1/metadata", HTTP_AUTHORIZATION=f"Bearer {read_key}").json()
    (step,) = body["token_usage"]["breakdown_by_step"]
    assert step["context_window"] == {"max_share": 124_000 / 128_000, "calls_over_80": 1, "calls_over_95": 1,
                                      "known_calls": 1, "unknown_calls": 1}  # fmt: skip
    by_model = {model["model"]: model["context_window"] for model in body["cost"]["by_model"]}
    assert by_model["acme-unknown-1"]["max_share"] is None
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()["components"]["schemas"]
    figures = schema["SessionMetadataContextWindow"]
    assert set(figures["required"]) == set(figures["properties"]) == set(step["context_window"])
    assert figures["properties"]["max_share"]["type"] == ["number", "null"]
    for parent in ("SessionMetadataStep", "SessionMetadataModelCost"):
        assert schema[parent]["properties"]["context_window"] == {"$ref": "#/components/schemas/SessionMetadataContextWindow"}
