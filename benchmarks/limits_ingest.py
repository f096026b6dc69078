"""What keeping announced rate limits costs ingest: `limits_record` against the whole `events_store`.

    .venv/bin/python benchmarks/limits_ingest.py            # 30 batches of 1000 per header set
    .venv/bin/python benchmarks/limits_ingest.py --quick    # 5 batches, for CI

Runs in-process on a scratch SQLite database (a temporary file, migrated at the start): batches
of 1000 fresh usage events of one model through the real `events_ingest` (the fold that follows
the commit is left out of the time), whose `limits_record` call is timed on its way (the same
function, wrapped by a stopwatch). Three header sets: none,
OpenAI's six `x-ratelimit-*` headers and Anthropic's twelve `anthropic-ratelimit-*` headers, with
`remaining` counting down from event to event as a busy client sees it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "sdk"))
BATCH = 1000


def header_sets() -> dict[str, callable]:
    def none(index: int) -> dict:
        return {}

    def openai(index: int) -> dict:
        return {"x-ratelimit-limit-requests": 10_000, "x-ratelimit-remaining-requests": 9_999 - index % 9_000,
                "x-ratelimit-reset-requests": "6ms", "x-ratelimit-limit-tokens": 2_000_000,
                "x-ratelimit-remaining-tokens": 1_990_000 - index % 900_000, "x-ratelimit-reset-tokens": "4.612s"}

    def anthropic(index: int) -> dict:
        headers = {}
        for dimension, limit in (("requests", 4_000), ("tokens", 2_400_000), ("input-tokens", 2_000_000),
                                 ("output-tokens", 400_000)):
            headers[f"anthropic-ratelimit-{dimension}-limit"] = limit
            headers[f"anthropic-ratelimit-{dimension}-remaining"] = limit - 1 - index % (limit // 2)
            headers[f"anthropic-ratelimit-{dimension}-reset"] = "2026-12-02T03:40:01Z"
        return headers

    return {"no headers": none, "OpenAI, 6 headers": openai, "Anthropic, 12 headers": anthropic}


def batch_body(headers_of, start: datetime, first_index: int) -> bytes:
    events = [{
        "event_id": str(uuid.uuid4()), "type": "usage", "session_id": f"bench-{(first_index + index) // 50}",
        "provider": "openai", "model": "gpt-4o", "duration_ms": 1200.0,
        "timestamp": (start + timedelta(milliseconds=first_index + index)).isoformat(),
        "input_tokens": 1800, "output_tokens": 240, "cache_read_tokens": 512,
        "attributes": {"user": "alice", "tokensite.sdk": "python", **headers_of(first_index + index)},
    } for index in range(BATCH)]  # fmt: skip
    return json.dumps({"events": events}).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 batches per header set instead of 30")
    batches = 5 if parser.parse_args().quick else 30
    scratch = tempfile.TemporaryDirectory(prefix="limits-bench-")
    os.environ["DATABASE_URL"] = f"sqlite:///{scratch.name}/bench.sqlite3"
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ["DJANGO_SETTINGS_MODULE"] = "tokensite.settings.test"
    import logging

    import django

    django.setup()
    logging.getLogger("celery").setLevel(logging.WARNING)
    from django.core.management import call_command
    from django.db import transaction

    from apps.accounts.services import project_get_or_create, team_get_or_create
    from apps.ingestion import services as ingestion_services
    from apps.ingestion.services import events_ingest

    call_command("migrate", verbosity=0)
    project = project_get_or_create(team=team_get_or_create(slug="bench"), slug="limits")
    recorded = ingestion_services.limits_record
    spent: list[float] = []

    def timed_limits_record(**kwargs) -> None:
        started = time.perf_counter()
        recorded(**kwargs)
        spent.append(time.perf_counter() - started)

    ingestion_services.limits_record = timed_limits_record
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    print(f"batches of {BATCH} events, {batches} per header set, SQLite, in-process; medians per batch")
    try:
        for name, headers_of in header_sets().items():
            spent.clear()
            totals = []
            for number in range(batches):
                body = batch_body(headers_of, start, number * BATCH)
                # The fold runs when the outermost transaction commits: after the stopwatch stops.
                with transaction.atomic():
                    started = time.perf_counter()
                    result = events_ingest(project=project, body=body)
                    totals.append(time.perf_counter() - started)
                assert result.accepted == BATCH, result.as_dict()
            store_ms, limits_ms = statistics.median(totals) * 1000, statistics.median(spent) * 1000
            print(f"{name:<22} events_ingest {store_ms:6.1f} ms, of which limits_record {limits_ms:5.2f} ms "
                  f"({limits_ms / store_ms:5.1%}; {limits_ms * 1000 / BATCH:.2f} us per event; "
                  f"fastest batch {min(spent) * 1000:.2f} ms)")
    finally:
        ingestion_services.limits_record = recorded
        scratch.cleanup()


if __name__ == "__main__":
    main()
