"""`tokensite-client import {claude-code,codex} [PATH]`: backfill a coding agent's local logs.

Reads the agent's session logs (PATH: a file or a folder; default the agent's own folder), and
posts their calls to TokenSite's events API (TOKENSITE_URL, TOKENSITE_API_KEY: an ingest key) in
batches, with the ids the OTLP receiver derives for the same calls, so nothing is counted twice.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from .agent_logs import CLAUDE_CODE_HOME_GLOB, CODEX_HOME_GLOB, claude_code_events, codex_events, jsonl_files
from .retry_after import parse_retry_after_s

BATCH_EVENTS = 500
ATTEMPTS = 5


def _post(client: httpx.Client, url: str, key: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    for attempt in range(ATTEMPTS):
        response = client.post(f"{url}/api/v1/events", json={"events": events},
                               headers={"Authorization": f"Bearer {key}"})
        if response.status_code in (429, 502, 503, 504) and attempt + 1 < ATTEMPTS:
            time.sleep(parse_retry_after_s(response.headers) or 2.0 ** attempt)
            continue
        if response.status_code not in (202, 207):
            raise SystemExit(f"TokenSite answered {response.status_code}: {response.text[:500]}")
        return response.json()
    raise AssertionError("unreachable")


def import_logs(*, agent: str, path: Path | None, url: str, key: str, developer: str = "",
                client: httpx.Client | None = None) -> dict[str, int]:
    """Post every call found in the agent's logs; the server's counts of accepted, duplicate and rejected."""
    if agent == "claude-code":
        events = list(claude_code_events(jsonl_files(path, CLAUDE_CODE_HOME_GLOB), developer=developer))
    else:
        events = list(codex_events(jsonl_files(path, CODEX_HOME_GLOB), developer=developer))
    totals = {"events": len(events), "accepted": 0, "duplicates": 0, "rejected": 0}
    own_client = client is None
    client = client or httpx.Client(timeout=60)
    try:
        for start in range(0, len(events), BATCH_EVENTS):
            reply = _post(client, url.rstrip("/"), key, events[start:start + BATCH_EVENTS])
            totals["accepted"] += reply.get("accepted", 0)
            totals["duplicates"] += reply.get("duplicates", 0)
            totals["rejected"] += len(reply.get("rejected", []))
    finally:
        if own_client:
            client.close()
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokensite-client")
    commands = parser.add_subparsers(dest="command", required=True)
    importer = commands.add_parser("import", help="backfill a coding agent's local session logs")
    importer.add_argument("agent", choices=("claude-code", "codex"))
    importer.add_argument("path", nargs="?", type=Path,
                          help="a log file or folder (default: ~/.claude/projects or ~/.codex/sessions)")
    importer.add_argument("--developer", default=os.environ.get("TOKENSITE_DEVELOPER", ""),
                          help="who ran these sessions (the logs do not say); default $TOKENSITE_DEVELOPER")
    importer.add_argument("--url", default=os.environ.get("TOKENSITE_URL", "http://127.0.0.1:8000"))
    args = parser.parse_args(argv)
    key = os.environ.get("TOKENSITE_API_KEY", "")
    if not key:
        parser.error("set TOKENSITE_API_KEY to an ingest key")
    totals = import_logs(agent=args.agent, path=args.path, url=args.url, key=key, developer=args.developer)
    print(f"{totals['events']} events read: {totals['accepted']} stored, {totals['duplicates']} already there, "
          f"{totals['rejected']} rejected")
    return 1 if totals["rejected"] else 0


if __name__ == "__main__":
    sys.exit(main())
