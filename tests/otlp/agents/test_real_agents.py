"""The real coding agents (agents/package-lock.json, installed by `make agents`), each run in its own
network namespace against the fake providers, exporting OTLP to a real TokenSite server: the
session's metadata must show exactly the tokens the fake returned, one usage event per call, the
waits the fake imposed (within 10%) and the developer. See harness.py for what runs inside.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.otlp.agents.harness import AGENT_BIN, DEVELOPER, ROOT, migrate_template

pytestmark = pytest.mark.slow

PAGE_COUNTS = ("calls", "token_usage.total_input_tokens", "token_usage.total_output_tokens",
               "tokenMetrics.sessionTokenUsage.cache", "tokenMetrics.sessionTokenUsage.thought", "throttle.count")
AGENT_COMMANDS = {"claude-code": "claude", "gemini": "gemini", "codex": "codex", "qwen": "qwen"}


def _why_not_runnable(agent: str) -> str | None:
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        return "the agents export to their own SQLite server: run once, in the SQLite pass"
    if shutil.which("node") is None:
        return "node is not installed (.ci/run installs it with the agents: make agents)"
    if not (AGENT_BIN / AGENT_COMMANDS[agent]).exists():
        return f"{AGENT_COMMANDS[agent]} is not installed: run `make agents`"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip is missing: the agents must run in a network namespace with loopback only"
    probe = subprocess.run(["unshare", "-n", "--", "sh", "-c", "ip link set lo up"], capture_output=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace (unshare -n needs root): {probe.stderr.decode()[:200]}"
    return None


@pytest.fixture(scope="module")
def template_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("agents-db") / "template.sqlite3"
    migrate_template(path)
    return path


def run_agent(agent: str, template: Path, workdir: Path, protocol: str = "http/json") -> dict:
    reason = _why_not_runnable(agent)
    if reason:
        pytest.skip(reason)
    env = {key: value for key, value in os.environ.items() if key in ("PATH", "LANG", "LC_ALL", "TZ")}
    env["PYTHONPATH"] = f"{ROOT / 'sdk'}:{ROOT}"
    harness = [sys.executable, "-m", "tests.otlp.agents.harness", agent, "--protocol", protocol,
               "--template", str(template), "--workdir", str(workdir)]
    done = subprocess.run(["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *harness],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["run"]["returncode"] == 0, result["run"]
    return result


def assert_counted_as_returned(result: dict, developer: str) -> dict:
    fake, events = result["fake"], result["events"]
    assert fake["successes"] >= 1 and fake["throttled"] >= 1, fake
    usage = [event for event in events if event["type"] == "usage"]
    throttles = [event for event in events if event["type"] == "throttle"]
    assert len(usage) == fake["successes"], "one usage event per call the fake answered"
    (session_id,) = result["metadata"]
    metadata = result["metadata"][session_id]
    totals = fake["totals"]
    metrics = metadata["tokenMetrics"]
    assert (metrics["tokensIn"], metrics["tokensOut"]) == (totals["input"], totals["output"])
    assert metrics["sessionTokenUsage"] == {
        "input": totals["input"], "output": totals["output"], "cache": totals["cache_read"] + totals["cache_write"],
        "tool": totals["tool"], "thought": totals["thought"], "total": totals["input"] + totals["output"]}
    assert sum(event["cache_read_tokens"] for event in usage) == totals["cache_read"]
    assert sum(event["cache_write_tokens"] for event in usage) == totals["cache_write"]
    # Every refusal the fake made was waited out and is one throttle event, linked to its call.
    assert len(throttles) == fake["throttled"] == len(fake["observed_waits_ms"])
    for throttle, imposed_ms in zip(sorted(throttles, key=lambda e: e["timestamp"]), fake["observed_waits_ms"]):
        assert throttle["wait_ms"] == pytest.approx(imposed_ms, rel=0.10)
        assert throttle["call_id"] in {event["call_id"] for event in usage}
    assert metadata["throttle"]["count"] == fake["throttled"]
    assert metrics["throttleWaitTimeMs"] == pytest.approx(sum(fake["observed_waits_ms"]), rel=0.10)
    assert {event["attributes"].get("user") for event in events} == {developer}
    assert {event["attributes"].get("team") for event in events} == {"platform"}
    # The session page a team member opens shows the same numbers, the source and the developer.
    page = result["pages"][session_id]
    assert {name: int(float(page["values"][name])) for name in PAGE_COUNTS} == {
        "calls": len(usage), "token_usage.total_input_tokens": totals["input"],
        "token_usage.total_output_tokens": totals["output"],
        "tokenMetrics.sessionTokenUsage.cache": totals["cache_read"] + totals["cache_write"],
        "tokenMetrics.sessionTokenUsage.thought": totals["thought"], "throttle.count": fake["throttled"]}
    assert float(page["values"]["tokenMetrics.throttleWaitTimeMs"]) == pytest.approx(
        sum(fake["observed_waits_ms"]), rel=0.10)
    assert page["origin"].endswith(f"Developer: {developer}")
    return page


@pytest.mark.parametrize("protocol", ["http/json", "http/protobuf"])
def test_claude_code_usage_and_throttling_arrive_as_the_provider_returned_them(protocol, template_db, tmp_path):
    result = run_agent("claude-code", template_db, tmp_path, protocol)

    page = assert_counted_as_returned(result, DEVELOPER)
    assert page["origin"].startswith("Source: claude-code 2.1.332")
    (usage,) = [event for event in result["events"] if event["type"] == "usage"]
    assert usage["attributes"]["source"] == "claude-code"
    assert usage["attributes"]["source_version"] == "2.1.332"
    assert usage["attributes"]["agent_cost_usd"] > 0


def test_gemini_cli_usage_and_throttling_arrive_as_the_provider_returned_them(template_db, tmp_path):
    result = run_agent("gemini", template_db, tmp_path)

    installation_ids = {event["attributes"].get("user") for event in result["events"]}
    assert len(installation_ids) == 1, "Gemini CLI with an API key names the developer by its installation id"
    assert_counted_as_returned(result, installation_ids.pop())
    assert {event["attributes"]["source"] for event in result["events"]} == {"gemini-cli"}


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])  # [otel] protocol = "binary" / "json"
def test_codex_cli_usage_and_throttling_arrive_as_the_provider_returned_them(protocol, template_db, tmp_path):
    result = run_agent("codex", template_db, tmp_path, protocol)

    assert_counted_as_returned(result, DEVELOPER)
    assert {event["attributes"]["source_version"] for event in result["events"]} == {"0.171.0"}


def test_qwen_code_usage_and_throttling_arrive_as_it_reports_them(template_db, tmp_path):
    result = run_agent("qwen", template_db, tmp_path)

    fake, events = result["fake"], result["events"]
    usage = [event for event in events if event["type"] == "usage"]
    throttles = sorted((event for event in events if event["type"] == "throttle"), key=lambda e: e["timestamp"])
    assert len(usage) == fake["successes"] >= 1
    (metadata,) = result["metadata"].values()
    totals = fake["totals"]
    # Qwen Code's telemetry leaves out the cache writes the provider reported (input = input + cache reads).
    assert metadata["tokenMetrics"]["tokensIn"] == totals["input"] - totals["cache_write"]
    assert metadata["tokenMetrics"]["tokensOut"] == totals["output"]
    assert sum(event["cache_read_tokens"] for event in usage) == totals["cache_read"]
    assert len(throttles) == fake["throttled"] == len(fake["observed_waits_ms"])
    for throttle, imposed_ms in zip(throttles, fake["observed_waits_ms"]):
        assert throttle["wait_ms"] == pytest.approx(imposed_ms, rel=0.10)
    assert {event["attributes"]["source"] for event in events} == {"qwen-code"}
