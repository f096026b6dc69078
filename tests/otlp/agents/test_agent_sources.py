"""The agent sources on what the real agents sent (fixtures captured from Claude Code 2.1.332,
Gemini CLI 0.61.0 and Codex CLI 0.171.0 against tests/otlp/agents/fake_providers.py), posted to
the real /otlp/v1 endpoints. The fake returned: Claude Code one call (input 11 + cache read 1200 +
cache write 300 of which 100 for 1 h, output 42) after one 429; Gemini CLI one call (prompt 3000
of which 2048 cached, candidates 30, thoughts 50) after one 429; Codex one call (input 2000 of
which 1536 cached, output 120 of which 64 reasoning) after one 429.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.cache import cache

from apps.ingestion.models import RawEvent

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


def post_fixture(client, key: str, agent: str, signal: str):
    body = (FIXTURES / f"{agent}_{signal}.json").read_bytes()
    response = client.post(f"/otlp/v1/{signal}", data=body, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200, response.content
    return response


def events(project, kind: str) -> list[RawEvent]:
    return list(RawEvent.objects.filter(project=project, type=kind).order_by("timestamp"))


def test_claude_code_call_is_one_usage_event_with_cache_inside_input(api_client, ingest_key, project):
    for signal in ("traces", "logs", "metrics"):
        post_fixture(api_client, ingest_key, "claude_code", signal)

    (usage,) = events(project, "usage")
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (
        11 + 1200 + 300, 42, 1200, 300)
    # cache_creation_1h_tokens: the one-hour part of the writes, billed at 2x input (Sonnet 4.5: $3/M)
    assert usage.cache_write_1h_tokens == 100 and "cache_write_1h_tokens" not in usage.attributes
    assert usage.cost_nanousd == 11 * 3_000 + 1200 * 300 + 200 * 3_750 + 100 * 6_000 + 42 * 15_000
    assert (usage.session_id, usage.model, usage.provider, usage.step) == (
        "b6572eb9-aa6c-46a6-939a-cf4e60a77bb2", "claude-sonnet-4-5-20250929", "anthropic", "main")
    assert (usage.duration_ms, usage.time_to_first_token_ms, usage.call_id) == (68, 9, "req_fake0000fcbb7ad6e95a")
    assert usage.attributes["user"] == "e6031d82e26407c128128703dca92754bc67a3e376ad5e5023ae9a7d4b27c8cd"
    assert usage.attributes["source"] == "claude-code" and usage.attributes["source_version"] == "2.1.332"
    assert usage.attributes["agent_cost_usd"] == 0.002373
    assert (usage.attributes["team"], usage.attributes["department"], usage.attributes["cost_center"]) == (
        "platform", "eng", "cc-42")


def test_claude_code_retry_seen_only_in_its_trace_is_a_throttle_linked_to_the_call(api_client, ingest_key, project):
    post_fixture(api_client, ingest_key, "claude_code", "traces")

    (throttle,) = events(project, "throttle")
    # Attempt 1 started at ...839.714717509, attempt 2 at ...840.884473948 (its span events).
    assert throttle.wait_ms == pytest.approx(1169.756439)
    assert (throttle.attempt, throttle.call_id) == (1, "req_fake0000fcbb7ad6e95a")
    assert not events(project, "usage"), "the span repeats the log event's usage: it must not count twice"


def test_resent_agent_batches_are_counted_once(api_client, ingest_key, project):
    for _ in range(2):
        for agent in ("claude_code", "gemini_cli", "codex"):
            for signal in ("logs", "traces"):
                post_fixture(api_client, ingest_key, agent, signal)

    assert RawEvent.objects.filter(project=project, type="usage").count() == 3
    assert RawEvent.objects.filter(project=project, type="throttle").count() == 3


def test_gemini_cli_call_counts_cache_in_input_and_thoughts_in_output(api_client, ingest_key, project):
    post_fixture(api_client, ingest_key, "gemini_cli", "logs")
    post_fixture(api_client, ingest_key, "gemini_cli", "traces")

    (usage,) = events(project, "usage")
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.thought_tokens,
            usage.tool_tokens) == (3000, 80, 2048, 50, 0)
    assert (usage.model, usage.provider, usage.step, usage.duration_ms) == ("gemini-2.5-flash", "gemini", "main", 58)
    assert usage.attributes["user"] == "5538390f-135b-4cb1-b4df-a1513147c70c"
    assert usage.attributes["source"] == "gemini-cli"
    assert "source_version" not in usage.attributes, "service.version is Node's version, not the CLI's"


def test_gemini_cli_429_waits_until_the_next_attempt_even_across_requests(api_client, ingest_key, project):
    body = json.loads((FIXTURES / "gemini_cli_logs.json").read_text())
    # The 429 and the retry came in two export requests: send them so.
    first, second = dict(body, resourceLogs=body["resourceLogs"][:1]), dict(body, resourceLogs=body["resourceLogs"][1:])
    for part in (first, second):
        response = api_client.post("/otlp/v1/logs", data=json.dumps(part), content_type="application/json",
                                   HTTP_AUTHORIZATION=f"Bearer {ingest_key}")
        assert response.status_code == 200

    (throttle,) = events(project, "throttle")
    (usage,) = events(project, "usage")
    # api_error logged at ...892.302 (end of the refused attempt), next api_request at ...898.403.
    assert throttle.wait_ms == pytest.approx(6101)
    assert throttle.status_code == 429
    assert throttle.call_id == usage.call_id


def test_codex_call_keeps_cached_and_reasoning_inside_its_counts(api_client, ingest_key, project):
    for signal in ("logs", "traces", "metrics"):
        post_fixture(api_client, ingest_key, "codex", signal)

    (usage,) = events(project, "usage")
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.thought_tokens,
            usage.tool_tokens) == (2000, 120, 1536, 64, 0)
    assert (usage.session_id, usage.model, usage.provider) == (
        "01a234aa-a927-7ce3-b595-51578c73a4f8", "gpt-5-codex", "openai")
    assert usage.time_to_first_token_ms == 48
    # From the successful attempt's start (...10.490) to response.completed (...10.553).
    assert usage.duration_ms == pytest.approx(63, abs=1)
    assert usage.attributes["source"] == "codex_exec" and usage.attributes["source_version"] == "0.171.0"
    (throttle,) = events(project, "throttle")
    assert throttle.wait_ms == pytest.approx(1005, abs=1)
    assert (throttle.status_code, throttle.attempt) == (429, 1)
    assert throttle.call_id == usage.call_id


def test_percent_encoded_bearer_sent_as_is_by_claude_code_authenticates(api_client, ingest_key, project):
    # OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20tsk_...: Claude Code sends the value undecoded.
    body = (FIXTURES / "claude_code_logs.json").read_bytes()
    response = api_client.post("/otlp/v1/logs", data=body, content_type="application/json",
                               HTTP_AUTHORIZATION=f"Bearer%20{ingest_key}")

    assert response.status_code == 200
    assert RawEvent.objects.filter(project=project, type="usage").count() == 1


def test_refused_attempt_never_pairs_with_another_projects_retry(api_client, ingest_key, project, other_team_project):
    from apps.accounts.models import ApiKey
    from apps.accounts.services import api_key_create

    other_key = api_key_create(project=other_team_project, scope=ApiKey.Scope.INGEST).plaintext
    body = json.loads((FIXTURES / "gemini_cli_logs.json").read_text())
    for key, part in ((ingest_key, body["resourceLogs"][:1]), (other_key, body["resourceLogs"][1:])):
        response = api_client.post("/otlp/v1/logs", data=json.dumps(dict(body, resourceLogs=part)),
                                   content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
        assert response.status_code == 200

    assert not RawEvent.objects.filter(type="throttle").exists()


def test_qwen_code_calls_and_the_refusals_only_its_http_spans_show(api_client, ingest_key, project):
    # Qwen Code 0.15.10 in its Anthropic mode; the fake returned per call input 11 + n, cache read
    # 1200 + 10n, cache write 300 + n, output 42 + n, each after one 429.
    for signal in ("logs", "traces", "metrics"):
        post_fixture(api_client, ingest_key, "qwen_code", signal)

    usage = events(project, "usage")
    assert [(u.step, u.input_tokens, u.cache_read_tokens, u.cache_write_tokens, u.output_tokens) for u in usage] == [
        ("main", 11 + 1200, 1200, 0, 42),  # Qwen Code reports no cache writes: 300 are missing
        ("managed-auto-memory-extractor", 12 + 1210, 1210, 0, 43),
    ]
    assert {u.attributes["source"] for u in usage} == {"qwen-code"}
    assert {u.attributes["source_version"] for u in usage} == {"0.15.10"}
    throttles = events(project, "throttle")
    # 429 spans ended at ...645.054114597 and ...646.197078981; the retries began at ...646.069 and ...647.200.
    assert [t.wait_ms for t in throttles] == [pytest.approx(1014.885403), pytest.approx(1002.921019)]
    assert {t.status_code for t in throttles} == {429}


def _claude_code_log(event_name: str, **attributes) -> dict:
    """The fixture's api_request log record renamed, with some attributes replaced."""
    body = json.loads((FIXTURES / "claude_code_logs.json").read_text())
    for resource in body["resourceLogs"]:
        for scope in resource["scopeLogs"]:
            for record in scope["logRecords"]:
                if record["body"].get("stringValue") == "claude_code.api_request":
                    record["body"] = {"stringValue": f"claude_code.{event_name}"}
                    kept = [a for a in record["attributes"] if a["key"] not in attributes and a["key"] != "event.name"]
                    record["attributes"] = kept + [{"key": "event.name", "value": {"stringValue": event_name}}] + [
                        {"key": key, "value": {"intValue": value}} for key, value in attributes.items()]
                    scope["logRecords"] = [record]
                    return {"resourceLogs": [dict(resource, scopeLogs=[scope])]}
    raise AssertionError("no api_request in the fixture")


@pytest.mark.parametrize(("status", "throttles"), [(529, 1), (429, 1), (400, 0), (500, 0)])
def test_claude_code_call_that_failed_for_good_is_a_throttle_only_when_overloaded(
        api_client, ingest_key, project, status, throttles):
    body = _claude_code_log("api_error", status_code=status, attempt=11)
    response = api_client.post("/otlp/v1/logs", data=json.dumps(body), content_type="application/json",
                               HTTP_AUTHORIZATION=f"Bearer {ingest_key}")

    assert response.status_code == 200
    stored = events(project, "throttle")
    assert [(t.status_code, t.attempt, t.wait_ms) for t in stored] == [(status, 11, 0)] * throttles
    assert not events(project, "usage")


def _claude_code_api_request(**attributes: str) -> dict:
    """The fixture's api_request log record with some string attributes replaced or added."""
    body = json.loads((FIXTURES / "claude_code_logs.json").read_text())
    for resource in body["resourceLogs"]:
        for scope in resource["scopeLogs"]:
            for record in scope["logRecords"]:
                if record["body"].get("stringValue") == "claude_code.api_request":
                    kept = [a for a in record["attributes"] if a["key"] not in attributes]
                    record["attributes"] = kept + [
                        {"key": key, "value": {"stringValue": value}} for key, value in attributes.items()]
                    scope["logRecords"] = [record]
                    return {"resourceLogs": [dict(resource, scopeLogs=[scope])]}
    raise AssertionError("no api_request in the fixture")


@pytest.mark.parametrize(("attributes", "step"), [
    # What Claude Code 2.1 sends for a call of its built-in Explore sub-agent, of a user's own agent
    # (whose name it withholds), and of the main thread with an output style.
    ({"query_source": "agent:builtin:Explore", "agent.name": "Explore"}, "Explore"),
    ({"query_source": "agent:builtin:general-purpose"}, "general-purpose"),
    ({"query_source": "agent:custom", "agent.name": "custom"}, "custom"),
    ({"query_source": "repl_main_thread:outputStyle:Learning"}, "main"),
    ({"query_source": "repl_main_thread"}, "main"),
    ({"query_source": "compact"}, "compact"),
])
def test_claude_code_sub_agent_is_the_step_of_its_calls(api_client, ingest_key, project, attributes, step):
    response = api_client.post("/otlp/v1/logs", data=json.dumps(_claude_code_api_request(**attributes)),
                               content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {ingest_key}")

    assert response.status_code == 200
    (usage,) = events(project, "usage")
    assert usage.step == step
    assert (usage.input_tokens, usage.output_tokens) == (11 + 1200 + 300, 42)


def test_claude_code_sub_agent_calls_are_a_step_of_the_session_metadata(
        api_client, ingest_key, read_key, project, django_capture_on_commit_callbacks):
    main = _claude_code_api_request(query_source="repl_main_thread")
    explore = _claude_code_api_request(query_source="agent:builtin:Explore", request_id="req_explore_1")
    with django_capture_on_commit_callbacks(execute=True):
        for body in (main, explore):
            response = api_client.post("/otlp/v1/logs", data=json.dumps(body), content_type="application/json",
                                       HTTP_AUTHORIZATION=f"Bearer {ingest_key}")
            assert response.status_code == 200

    session_id = events(project, "usage")[0].session_id
    metadata = api_client.get(f"/api/v1/sessions/{session_id}/metadata", HTTP_AUTHORIZATION=f"Bearer {read_key}")
    assert metadata.status_code == 200, metadata.content
    steps = {row["step"]: row for row in metadata.json()["token_usage"]["breakdown_by_step"]}
    assert set(steps) == {"main", "Explore"}
    assert steps["Explore"]["calls"] == steps["main"]["calls"] == 1


def _as_llxprt_code(text: str) -> str:
    """Gemini CLI's captured logs as LLxprt Code names them (service `llxprt-code`, events `llxprt_code.*`)."""
    return text.replace('"gemini-cli"', '"llxprt-code"').replace('"gemini_cli.', '"llxprt_code.')


def test_llxprt_code_is_read_as_the_gemini_cli_family(api_client, ingest_key, project):
    body = json.loads(_as_llxprt_code((FIXTURES / "gemini_cli_logs.json").read_text()))
    # Its 429 and the retry in two export requests, as Gemini CLI sends them.
    for part in (body["resourceLogs"][:1], body["resourceLogs"][1:]):
        response = api_client.post("/otlp/v1/logs", data=json.dumps(dict(body, resourceLogs=part)),
                                   content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {ingest_key}")
        assert response.status_code == 200

    (usage,) = events(project, "usage")
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.thought_tokens) == (
        3000, 80, 2048, 50)
    assert (usage.model, usage.provider, usage.attributes["source"]) == ("gemini-2.5-flash", "gemini", "llxprt-code")
    (throttle,) = events(project, "throttle")
    assert throttle.wait_ms == pytest.approx(6101) and throttle.call_id == usage.call_id


def test_llxprt_code_call_is_priced_under_the_provider_it_names(api_client, ingest_key, project):
    body = json.loads(_as_llxprt_code((FIXTURES / "gemini_cli_logs.json").read_text()))
    for resource in body["resourceLogs"]:
        for scope in resource["scopeLogs"]:
            for record in scope["logRecords"]:
                record["attributes"].append({"key": "provider", "value": {"stringValue": "openai-responses"}})
                for attribute in record["attributes"]:
                    if attribute["key"] == "model":
                        attribute["value"] = {"stringValue": "gpt-4o"}
    response = api_client.post("/otlp/v1/logs", data=json.dumps(body), content_type="application/json",
                               HTTP_AUTHORIZATION=f"Bearer {ingest_key}")

    assert response.status_code == 200
    (usage,) = events(project, "usage")
    assert (usage.model, usage.provider) == ("gpt-4o", "openai")
    assert usage.cost_nanousd is not None


def test_agent_calls_are_stored_when_the_cache_is_unreachable(api_client, ingest_key, project, settings):
    # A real Redis client pointed at a port nothing listens on: the cache that pairs refused attempts
    # with their retries is away. The export still succeeds and every call's usage is stored.
    settings.CACHES = {"default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{_closed_port()}/0",
        "OPTIONS": {"socket_connect_timeout": 0.3, "socket_timeout": 0.3},
    }}
    for agent in ("gemini_cli", "codex"):
        for signal in ("logs", "traces"):
            post_fixture(api_client, ingest_key, agent, signal)

    usage = events(project, "usage")
    assert sorted(u.attributes["source"] for u in usage) == ["codex_exec", "gemini-cli"]
    assert not events(project, "throttle"), "no refusal can be paired with its retry without the cache"


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
