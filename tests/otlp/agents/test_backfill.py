"""`tokensite-client import {claude-code,codex}` against a live TokenSite server.

The JSONL fixtures are the session logs Claude Code 2.1.332 and Codex CLI 0.171.0 wrote in the
same runs whose OTLP payloads are the *_logs.json / *_traces.json fixtures (long texts cut short).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.cache import cache

from apps.ingestion.models import RawEvent
from tests.otlp.agents.test_agent_sources import FIXTURES, post_fixture
from tokensite_client.cli import import_logs, main

pytestmark = pytest.mark.django_db(transaction=True)

CLAUDE_LOG = FIXTURES / "claude_code_session.jsonl"
CODEX_LOG = FIXTURES / "codex_sessions" / "rollout-2026-12-02T02-52-09-01a234aa-a927-7ce3-b595-51578c73a4f8.jsonl"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()


def stored(project, kind: str) -> list[RawEvent]:
    return list(RawEvent.objects.filter(project=project, type=kind))


def test_claude_code_log_import_counts_each_call_once_with_its_stated_retry_wait(live_server, ingest_key, project):
    first = import_logs(agent="claude-code", path=CLAUDE_LOG, url=live_server.url, key=ingest_key,
                        developer="ada@example.com")
    again = import_logs(agent="claude-code", path=CLAUDE_LOG, url=live_server.url, key=ingest_key,
                        developer="ada@example.com")

    assert first == {"events": 2, "accepted": 2, "duplicates": 0, "rejected": 0}
    assert again == {"events": 2, "accepted": 0, "duplicates": 2, "rejected": 0}
    (usage,) = stored(project, "usage")
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (
        1511, 42, 1200, 300)
    assert (usage.cache_write_1h_tokens, usage.service_tier) == (100, "standard")
    assert usage.attributes["user"] == "ada@example.com"
    (throttle,) = stored(project, "throttle")
    # The log states the delay Claude Code chose for its retry.
    assert (throttle.wait_ms, throttle.status_code, throttle.call_id) == (1152, 429, usage.call_id)


def test_claude_code_import_after_telemetry_adds_nothing(live_server, api_client, ingest_key, project):
    for signal in ("logs", "traces"):
        post_fixture(api_client, ingest_key, "claude_code", signal)

    totals = import_logs(agent="claude-code", path=CLAUDE_LOG, url=live_server.url, key=ingest_key)

    assert totals == {"events": 2, "accepted": 0, "duplicates": 2, "rejected": 0}
    assert len(stored(project, "usage")) == 1 and len(stored(project, "throttle")) == 1


def test_codex_rollout_import_counts_each_call_once_even_after_telemetry(live_server, api_client, ingest_key, project):
    first = import_logs(agent="codex", path=CODEX_LOG.parent, url=live_server.url, key=ingest_key)
    for signal in ("logs", "traces"):
        post_fixture(api_client, ingest_key, "codex", signal)
    again = import_logs(agent="codex", path=CODEX_LOG, url=live_server.url, key=ingest_key)

    assert first["accepted"] == 1 and again == {"events": 1, "accepted": 0, "duplicates": 1, "rejected": 0}
    (usage,) = stored(project, "usage")
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.thought_tokens) == (
        2000, 120, 1536, 64)
    assert usage.model == "gpt-5-codex" and usage.session_id == "01a234aa-a927-7ce3-b595-51578c73a4f8"


def test_folder_default_reads_only_the_agents_own_files(tmp_path, live_server, ingest_key, project):
    (tmp_path / "projects" / "-home-ada").mkdir(parents=True)
    (tmp_path / "projects" / "-home-ada" / "session.jsonl").write_bytes(CLAUDE_LOG.read_bytes())
    (tmp_path / "projects" / "notes.txt").write_text("not a log")

    assert import_logs(agent="claude-code", path=tmp_path / "projects", url=live_server.url,
                       key=ingest_key)["accepted"] == 2


def test_command_line_prints_what_it_stored(live_server, ingest_key, project, capsys, monkeypatch):
    monkeypatch.setenv("TOKENSITE_API_KEY", ingest_key)

    assert main(["import", "claude-code", str(CLAUDE_LOG), "--url", live_server.url]) == 0
    assert capsys.readouterr().out.strip() == "2 events read: 2 stored, 0 already there, 0 rejected"


def test_command_runs_without_django(live_server, ingest_key, project):
    # The SDK imports no Django: run the command in a clean interpreter with only the SDK importable.
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT / "sdk"), "TOKENSITE_API_KEY": ingest_key,
           "TOKENSITE_URL": live_server.url}
    done = subprocess.run([sys.executable, "-c", "import sys, tokensite_client.cli as c; "
                           "assert 'django' not in sys.modules; sys.exit(c.main(sys.argv[1:]))",
                           "import", "codex", str(CODEX_LOG)], env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert "1 events read: 1 stored" in done.stdout
