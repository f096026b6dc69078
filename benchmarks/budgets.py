"""Budget evaluation cost: budget_statuses and a full budgets_evaluate over a month of aggregates.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ts_budgets .venv/bin/python benchmarks/budgets.py
    .venv/bin/python benchmarks/budgets.py --quick      # a scratch SQLite and less data, for CI

The data (team bench-budgets, made once per database and reused): PROJECTS projects x 3 models,
time buckets as the fold and the hourly compaction leave them 30 days into a month (minute buckets
for the last 7 days, hour buckets before), and SESSIONS sessions of 50 developers with 2 model rows
each, bulk-inserted. Budgets: one team-wide, one per project, one per developer for 10 developers,
one team-wide narrowed to a model. Timed: budget_statuses for the team (every budget), for one
project (what GET /api/v1/budgets computes), the same through its 10-second cache, and
budgets_evaluate() with alerts already claimed (the steady state of the minute beat).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

TEAM = "bench-budgets"
MODELS = (("openai", "gpt-4o"), ("openai", "o3-mini"), ("gemini", "gemini-2.0-flash"))
NOW = datetime(2026, 11, 30, 23, 0, tzinfo=timezone.utc)  # 30 days into November


def django_setup(quick: bool) -> None:
    if "DATABASE_URL" not in os.environ:
        os.environ["DATABASE_URL"] = "sqlite:////tmp/tokensite-bench-budgets.sqlite3"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tokensite.settings.local")
    os.environ.setdefault("WEBHOOK_ALLOW_PRIVATE", "true")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def make_data(projects: int, sessions: int) -> None:
    from apps.accounts.models import Project
    from apps.accounts.services import project_get_or_create, team_get_or_create
    from apps.budgets.services import budget_create
    from apps.metrics.models import SessionAggregate, SessionModelAggregate, UsageBucket

    team = team_get_or_create(slug=TEAM)
    if Project.objects.filter(team=team).exists():
        return
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    minutes_from = NOW - timedelta(days=7)
    for number in range(projects):
        project = project_get_or_create(team=team, slug=f"p{number}")
        rows = []
        instant = start
        while instant < NOW:
            minute = instant >= minutes_from
            for provider, model in MODELS:
                rows.append(UsageBucket(
                    project=project, granularity="minute" if minute else "hour", bucket_start=instant,
                    provider=provider, model=model, input_tokens=900, output_tokens=100, calls=1,
                    cost_nanousd=3_000_000, unpriced_tokens=0,
                ))  # fmt: skip
            instant += timedelta(minutes=1) if minute else timedelta(hours=1)
        UsageBucket.objects.bulk_create(rows, batch_size=5000)
        per_project = sessions // projects
        aggregates = SessionAggregate.objects.bulk_create([
            SessionAggregate(project=project, session_id=f"s{i}", attributes={"user": f"dev{i % 50}"},
                             started_at=start + timedelta(minutes=(i * 37) % (29 * 1440)), calls=2)
            for i in range(per_project)
        ], batch_size=5000)  # fmt: skip
        aggregates = list(SessionAggregate.objects.filter(project=project))
        SessionModelAggregate.objects.bulk_create([
            SessionModelAggregate(session=session, provider=provider, model=model, input_tokens=5000,
                                  output_tokens=500, cost_nanousd=20_000_000, calls=1)
            for session in aggregates for provider, model in MODELS[:2]
        ], batch_size=5000)  # fmt: skip
        budget_create(team=team, project=project, period="month", amount_usd="1000000")
    budget_create(team=team, period="month", amount_usd="1000000")
    budget_create(team=team, period="week", model="gpt-4o", amount_usd="1000000")
    for developer in range(10):
        budget_create(team=team, user=f"dev{developer}", period="month", amount_usd="1000000")
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


def timed(function, repeat: int) -> tuple[float, float]:
    function()
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        function()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1 if len(samples) > 1 else 0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    django_setup(args.quick)
    import time_machine

    from apps.accounts.models import Project, Team
    from apps.budgets.alerts import budgets_evaluate
    from apps.budgets.models import Budget
    from apps.budgets.selectors import budget_statuses, budget_statuses_recent
    from apps.metrics.models import UsageBucket
    from django.db import connection

    projects, sessions, repeat = (2, 1000, 5) if args.quick else (10, 20_000, 30)
    began = time.perf_counter()
    make_data(projects, sessions)
    team = Team.objects.get(slug=TEAM)
    project = Project.objects.filter(team=team).order_by("slug").first()
    buckets = UsageBucket.objects.filter(project__team=team).count()
    print(f"database: {connection.vendor}; team {TEAM}: {Project.objects.filter(team=team).count()} projects, "
          f"{buckets:,} buckets, {Budget.objects.filter(team=team).count()} budgets "
          f"(data ready in {time.perf_counter() - began:.1f} s)")  # fmt: skip
    with time_machine.travel(NOW, tick=False):
        budgets_evaluate()  # claims the alerts once; the timed runs are the steady state
        rows = [
            ("budget_statuses(team): every budget", lambda: budget_statuses(team=team)),
            ("budget_statuses(team, project)", lambda: budget_statuses(team=team, project=project)),
            ("GET /api/v1/budgets path, cached (10 s)", lambda: budget_statuses_recent(team=team, project=project)),
            ("budgets_evaluate(): all budgets, alerts claimed", budgets_evaluate),
        ]
        print(f"{'operation':<50} {'p50 ms':>8} {'p95 ms':>8}  ({repeat} runs)")
        for name, function in rows:
            p50, p95 = timed(function, repeat)
            print(f"{name:<50} {p50:>8.1f} {p95:>8.1f}")


if __name__ == "__main__":
    main()
