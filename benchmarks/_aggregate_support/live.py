"""The live-traffic fold, run against one checkout of the code: `python live.py --code DIR ...`.

benchmarks/aggregate.py runs this file twice, as a subprocess of the same Python, once with the
code under test and once with a worktree of the baseline commit, so both folds get the same event
stream (same seed) in the same run. It imports the checkout named by --code (first on sys.path)
and only its stable entry points: `apps.ingestion.services.events_store` to store events as the
events API does (validated, priced, with whatever derived columns ingest computes, queued for the
fold) and `apps.metrics.services.sessions_fold` to fold them. Nothing here may import
`benchmarks.*`: that package would be the other checkout's.

Traffic: SESSIONS agent runs whose calls reach the server in ROUNDS rounds; in each round every
session sends its next BATCH events, in time order (how the SDK flushes every second and coding
agents export every few seconds), the sessions interleaved. Each round is stored untimed, then
folded timed by one worker the way the fold task takes pending work: `sessions_fold` of the
project for the sessions that got events, SESSIONS_PER_FOLD at a time. The result is one JSON
line on stdout.

The database is a scratch one beside DATABASE_URL's, created, migrated with the checkout's own
migrations and dropped here.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit, urlunsplit

# The fold task's `pending_sessions` limit: the sessions one `sessions_fold` call gets.
SESSIONS_PER_FOLD = 5000
INGEST_EVENTS_PER_CALL = 1000  # one events_store call per 200 sessions' batches, as one big request
# (provider, model, share, cached prompts); the last two are unpriced (retired or self-hosted).
MODELS = (
    ("openai", "gpt-4o", 35, True),
    ("anthropic", "claude-sonnet-4-5", 25, True),
    ("openai", "gpt-4o-mini", 20, True),
    ("anthropic", "claude-haiku-4-5", 10, False),
    ("anthropic", "claude-3-5-sonnet-20241022", 5, True),
    ("self-hosted", "acme-llm-7b", 5, False),
)
STEPS = ("plan", "retrieve", "draft", "review", "summarise")
THROTTLED_SESSION_SHARE = 0.2  # sessions that hit a rate limit: a few 429 waits, linked to the call by call_id


class Session:
    """One agent run: calls one after another, overlapping about half the time, with the odd 429."""

    def __init__(self, seed: int, number: int, start: datetime) -> None:
        self.rng = random.Random(f"{seed}-{number}")
        self.session_id = f"live-{seed}-{number:06d}"
        self.clock = start
        self.calls = 0
        self.throttled = self.rng.random() < THROTTLED_SESSION_SHARE
        self.attributes = {"app": "bench", "user": f"u{self.rng.randint(1, 500)}", "environment": "prod"}

    def next_events(self, count: int) -> list[dict]:
        rng = self.rng
        events: list[dict] = []
        while len(events) < count:
            call_id = f"{self.session_id}-c{self.calls}"
            event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            if self.throttled and rng.random() < 0.05 and len(events) < count - 1:
                wait_ms = rng.choice((500.0, 1000.0, 2500.0))
                events.append({
                    "event_id": event_id, "type": "throttle", "session_id": self.session_id,
                    "step": STEPS[self.calls % 5], "provider": "openai", "model": "gpt-4o", "call_id": call_id,
                    "timestamp": self.clock.isoformat(), "wait_ms": wait_ms, "status_code": 429,
                })  # fmt: skip
                self.clock += timedelta(milliseconds=wait_ms)
                event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            provider, model, _, caches = rng.choices(MODELS, [share for _, _, share, _ in MODELS])[0]
            input_tokens = int(rng.lognormvariate(7.5, 1.1)) + 1
            duration_ms = round(rng.uniform(300, 20_000), 1)
            events.append({
                "event_id": event_id, "type": "usage", "session_id": self.session_id,
                "step": STEPS[self.calls % 5], "provider": provider, "model": model, "call_id": call_id,
                "timestamp": self.clock.isoformat(), "duration_ms": duration_ms,
                "time_to_first_token_ms": round(duration_ms * rng.uniform(0.05, 0.3), 1),
                "input_tokens": input_tokens, "output_tokens": int(rng.lognormvariate(5.5, 0.9)) + 1,
                "cache_read_tokens": rng.randint(0, input_tokens // 2) if caches and rng.random() < 0.5 else 0,
                "attributes": self.attributes,
            })  # fmt: skip
            self.calls += 1
            # Calls overlap: the next one starts before this one ends about half the time.
            self.clock += timedelta(milliseconds=rng.uniform(0.2, 1.2) * duration_ms)
        return events[:count]


def traffic(seed: int, sessions: int, rounds: int, batch: int, now: datetime):
    """Per round, the events of every session's next batch, sessions in a shuffled order, as JSON."""
    # A round of real traffic spans seconds: the sessions' clocks start over the last two hours,
    # early enough that every call of the run is in the past (validation refuses the future).
    span = timedelta(hours=2)
    runs = [Session(seed, number, now - span - timedelta(hours=1) + span * random.Random(number).random())
            for number in range(sessions)]  # fmt: skip
    order = random.Random(seed)
    for _ in range(rounds):
        order.shuffle(runs)
        yield [json.dumps(event, separators=(",", ":")).encode() for run in runs for event in run.next_events(batch)]


def store(project, raw_events: list[bytes]) -> int:
    """Store events as the events API does, without asking a worker to fold them.

    `events_store` is ingest itself (validation, pricing, derived columns, the writer), with its
    fold request switched off in main(). A checkout whose ingest module no longer requests the
    fold by that name gets the writer directly (`raw_events_insert` of validated events).
    """
    import msgspec
    from django.db import transaction
    from django.utils import timezone as dj_timezone

    from apps.ingestion import services as ingestion
    from apps.ingestion.validation import events_validate
    from apps.ingestion.writers import raw_events_insert

    stored = 0
    for start in range(0, len(raw_events), INGEST_EVENTS_PER_CALL):
        chunk = [msgspec.Raw(event) for event in raw_events[start : start + INGEST_EVENTS_PER_CALL]]
        if hasattr(ingestion, "project_fold_enqueue"):
            result = ingestion.events_store(project=project, raw_events=chunk)
            rejected, accepted = result.rejected, result.accepted
        else:
            now = dj_timezone.now()
            valid, rejected = events_validate(chunk, now=now)
            with transaction.atomic():
                accepted = len(raw_events_insert(project_id=project.pk, received_at=now, events=valid).inserted_event_ids)
        if rejected:
            raise SystemExit(f"ingest rejected benchmark events: {rejected[:3]}")
        stored += accepted
    return stored


def fold(project_id: int, session_ids: list[str]) -> int:
    from apps.metrics.services import sessions_fold

    folded = 0
    for start in range(0, len(session_ids), SESSIONS_PER_FOLD):
        folded += sessions_fold(project_id=project_id, session_ids=session_ids[start : start + SESSIONS_PER_FOLD])
    return folded


def live_run(project, *, seed: int, sessions: int, rounds: int, batch: int) -> dict:
    from django.db import connection

    from apps.ingestion.models import PendingEvent

    fold_seconds = fold_cpu = store_seconds = 0.0
    events = 0
    round_rates: list[float] = []
    session_ids: list[str] = []
    for round_events in traffic(seed, sessions, rounds, batch, datetime.now(timezone.utc)):
        started = time.perf_counter()
        stored = store(project, round_events)
        store_seconds += time.perf_counter() - started
        pending = PendingEvent.objects.filter(project_id=project.pk).count()
        if pending != stored:
            raise SystemExit(f"{stored} events stored but {pending} pending: something folded them during ingest")
        if not session_ids:
            session_ids = sorted(set(PendingEvent.objects.filter(project_id=project.pk).values_list("session_id", flat=True)))
            # Statistics as a live table has them after its first minutes (autovacuum's analyze).
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")
        started, cpu_started = time.perf_counter(), time.process_time()
        folded = fold(project.pk, session_ids)
        round_rates.append(folded / (time.perf_counter() - started))
        fold_seconds += time.perf_counter() - started
        fold_cpu += time.process_time() - cpu_started
        if folded != stored or PendingEvent.objects.filter(project_id=project.pk).exists():
            raise SystemExit(f"the fold left events: {stored} stored, {folded} folded")
        events += stored
    return {"events": events, "seconds": fold_seconds, "cpu_seconds": fold_cpu, "store_seconds": store_seconds,
            "round_rates": round_rates}  # fmt: skip


def sums_check(project_id: int) -> dict:
    """Session sums against the raw rows: both runs must have folded the same stream to the same totals."""
    from django.db.models import Sum

    from apps.ingestion.models import RawEvent
    from apps.metrics.models import SessionAggregate

    raw = RawEvent.objects.filter(project_id=project_id).aggregate(input=Sum("input_tokens"), output=Sum("output_tokens"))
    folded = SessionAggregate.objects.filter(project_id=project_id).aggregate(input=Sum("input_tokens"), output=Sum("output_tokens"))
    if raw != folded:
        raise SystemExit(f"folded sums differ from the raw events: {folded} vs {raw}")
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", required=True, help="the checkout to import (its apps, its migrations)")
    parser.add_argument("--label", default="run", help="part of the scratch database's name")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    code = os.path.abspath(args.code)
    sys.path[:0] = [code, os.path.join(code, "sdk")]
    server = urlsplit(os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres")
    name = f"tokensite_aggbench_{os.getpid()}_{args.label}"
    admin_url = urlunsplit(server._replace(path="/postgres"))
    os.environ["DATABASE_URL"] = urlunsplit(server._replace(path=f"/{name}"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "tokensite.settings.test"
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        from apps.accounts.services import project_get_or_create, team_get_or_create
        from apps.ingestion import services as ingestion

        # Folding is what is timed: ingest must only queue (no inline fold, no broker).
        if hasattr(ingestion, "project_fold_enqueue"):
            ingestion.project_fold_enqueue = lambda **kwargs: None
        started = time.perf_counter()
        call_command("migrate", verbosity=0)
        migrate_seconds = time.perf_counter() - started
        team = team_get_or_create(slug="bench")
        # Imports, JIT compilation and first plans happen here, outside the clock.
        warm = project_get_or_create(team=team, slug="warm-up")
        started = time.perf_counter()
        live_run(warm, seed=args.seed + 1, sessions=50, rounds=2, batch=args.batch)
        warm_seconds = time.perf_counter() - started
        project = project_get_or_create(team=team, slug="live")
        result = live_run(project, seed=args.seed, sessions=args.sessions, rounds=args.rounds, batch=args.batch)
        result["sums"] = sums_check(project.pk)
        result["migrate_seconds"] = migrate_seconds
        result["warm_up_seconds"] = warm_seconds
        connections.close_all()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
