"""Ingest throughput end to end: TokenSite's `POST /api/v1/events` against a naive DRF path and binary COPY.

    .venv/bin/python benchmarks/ingest.py            # full run: 20 s per configuration (~3 min)
    .venv/bin/python benchmarks/ingest.py --quick    # 3 s per configuration, for CI (~30 s)

Environment: DATABASE_URL (a Postgres server; default postgres://postgres@127.0.0.1:5432/tokensite)
and REDIS_URL (default redis://127.0.0.1:6379/14).

The server runs as in production: gunicorn with sync workers and `tokensite.settings.production`
(through `benchmarks._ingest_support.settings`, which adds throwaway secrets and the naive
route), on Postgres, with REDIS_URL set so each committed batch is handed to the metrics pipeline
through Redis. Separate load-generator processes post batches of 100 and of 1000 fresh usage
events (realistic models, token counts, cache tokens and attributes, timestamps in the past hour,
so pricing runs for each) and the run reports accepted events/s and p50/p99 request latency for:

- ours: the product's endpoint (msgspec validation, COPY-based writer);
- naive: a plain DRF `Serializer(many=True)` plus `bulk_create(ignore_conflicts=True)` into the
  same table behind the same gunicorn, authentication and rate limit
  (`benchmarks/_ingest_support/naive.py`);
- COPY: one Python client streaming the same kind of rows into the same table with a binary
  `COPY` (psycopg `set_types`, `FORMAT BINARY`), 1000 rows per transaction: the physical ceiling.

Everything happens in a scratch database `<DATABASE_URL's name>_ingest_bench`, created and
migrated at the start and dropped at the end; the raw-event table is emptied before each
configuration so each starts from the same state. The script stops the gunicorn it started and
deletes what it wrote to Redis (its own queue and cache key prefix) on every exit path.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tokensite"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
SETTINGS_MODULE = "benchmarks._ingest_support.settings"
OURS_PATH = "/api/v1/events"
NAIVE_PATH = "/bench/naive/events"
BATCH_SIZES = (100, 1000)
COPY_ROWS_PER_TRANSACTION = 1000
# Issue 2's targets, checked against figures of the same run.
TARGET_EVENTS_PER_S = 30_000
TARGET_OVER_NAIVE = 3.0
TARGET_OF_COPY = 0.25


@dataclass
class Figure:
    name: str
    batch_size: int
    events_per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    failures: dict | None = None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per configuration instead of 20 s")
    parser.add_argument("--seconds", type=float, help="measured seconds per configuration")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds of load before each configuration")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers (default 4)")
    parser.add_argument("--clients", type=int, default=4, help="load-generator processes (default 4)")
    parser.add_argument(
        "--batch-sizes", type=lambda text: tuple(int(n) for n in text.split(",")), default=BATCH_SIZES,
        help="events per request, comma-separated (default 100,1000)",
    )  # fmt: skip
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    seconds = args.seconds or (3.0 if args.quick else 20.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0)

    database_url = scratch_database_url(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    os.environ.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url, "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE})
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

    scratch_database_recreate(database_url)
    gunicorn = None
    try:
        run_checked([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"])
        key = benchmark_key_create()
        port = free_port()
        gunicorn = gunicorn_start(port=port, workers=args.workers)
        server_wait_ready(port=port, key=key, process=gunicorn)
        print(
            f"gunicorn: {args.workers} sync workers; {args.clients} load-generator processes; "
            f"{seconds:g} s measured per configuration after {warmup:g} s of warm-up; {os.cpu_count()} CPUs; "
            f"load average before the run {load_before:.2f} (other work on the machine skews every figure)"
        )
        figures: list[Figure] = []
        for batch_size in args.batch_sizes:
            for name, path in (("ours", OURS_PATH), ("naive", NAIVE_PATH)):
                raw_events_truncate(database_url)
                figure = http_load_run(
                    name=name, path=path, port=port, key=key, batch_size=batch_size,
                    clients=args.clients, seconds=seconds, warmup=warmup,
                )  # fmt: skip
                figures.append(figure)
                print_figure(figure)
        gunicorn_stop(gunicorn)
        gunicorn = None
        raw_events_truncate(database_url)
        copy_figure = copy_ceiling_run(database_url, seconds=seconds)
        print_figure(copy_figure)
    finally:
        if gunicorn is not None:
            gunicorn_stop(gunicorn)
        redis_purge(redis_url)
        scratch_database_drop(database_url)
    return report(figures, copy_figure, batch_sizes=args.batch_sizes)


# --- scratch database -------------------------------------------------------------------------


def scratch_database_url(database_url: str) -> str:
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgres", "postgresql", "pgsql"):
        sys.exit("benchmarks/ingest.py measures the production path and needs DATABASE_URL=postgres://...")
    name = parts.path.lstrip("/") or "tokensite"
    return urlunsplit(parts._replace(path=f"/{name}_ingest_bench"))


def _maintenance_connection(database_url: str):
    import psycopg

    parts = urlsplit(database_url)
    return psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True)


def scratch_database_recreate(database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    with _maintenance_connection(database_url) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def scratch_database_drop(database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    with _maintenance_connection(database_url) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def raw_events_truncate(database_url: str) -> None:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as connection:
        # The fold queue and the event keys too: ours writes a pending row and a key per event, and
        # no worker drains the queue here.
        connection.execute("TRUNCATE ingestion_rawevent, ingestion_pendingevent, ingestion_raweventkey")
        for table in ("ingestion_rawevent", "ingestion_pendingevent", "ingestion_raweventkey"):
            connection.execute(f"VACUUM ANALYZE {table}")


def benchmark_key_create() -> str:
    """A project and an ingest key made through the services, with a rate limit the run cannot reach."""
    import django

    django.setup()
    from django.db import connections

    from apps.accounts.services import api_key_create, project_get_or_create, team_get_or_create

    team = team_get_or_create(slug="ingest-benchmark")
    project = project_get_or_create(team=team, slug="ingest-benchmark")
    issued = api_key_create(project=project, name="ingest-benchmark", rate_limit_per_minute=10**9)
    connections.close_all()
    return issued.plaintext


# --- gunicorn ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gunicorn_start(*, port: int, workers: int) -> subprocess.Popen:
    command = [
        str(Path(sys.executable).parent / "gunicorn"), "tokensite.wsgi:application",
        "--config", "python:benchmarks._ingest_support.gunicorn_conf",
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
    ]  # fmt: skip
    # Its own session, so stopping it reaches the workers too and nothing else.
    return subprocess.Popen(command, cwd=REPO_ROOT, env=os.environ.copy(), start_new_session=True)


def gunicorn_stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def server_wait_ready(*, port: int, key: str, process: subprocess.Popen, timeout_s: float = 90) -> None:
    """Until one real ingest request is accepted (the master preloads Django and litellm first)."""
    from benchmarks._ingest_support.events import BodyFactory, utc_now
    from benchmarks._ingest_support.loadgen import post

    body = BodyFactory(batch_size=1, now=utc_now(), seed=0).body()
    head = (
        f"POST {OURS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            sys.exit(f"gunicorn exited with code {process.returncode} before serving")
        try:
            status, reply = post(port, head, body)
        except OSError:
            time.sleep(0.2)
            continue
        if status == 202:
            return
        sys.exit(f"the server answered {status} to a valid batch: {reply[:500]!r}")
    sys.exit(f"gunicorn did not serve within {timeout_s:g} s")


# --- measurements -----------------------------------------------------------------------------


def http_load_run(
    *, name: str, path: str, port: int, key: str, batch_size: int, clients: int, seconds: float, warmup: float
) -> Figure:
    """`clients` load-generator processes post for warmup + seconds; events/s over the measured window."""
    startup_s = 1.5  # the generators import and build their event pools meanwhile
    measure_from = time.time() + startup_s + warmup
    measure_until = measure_from + seconds
    generators = [
        subprocess.Popen(
            [
                sys.executable, "-m", "benchmarks._ingest_support.loadgen", "--port", str(port), "--path", path,
                "--key", key, "--batch-size", str(batch_size), "--measure-from", repr(measure_from),
                "--measure-until", repr(measure_until), "--seed", str(index + 1),
            ],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, env=os.environ.copy(),
        )  # fmt: skip
        for index in range(clients)
    ]
    results, latencies, failures = load_results_collect(generators, timeout_s=startup_s + warmup + seconds + 120)
    accepted = sum(result["accepted"] for result in results)
    return Figure(
        name=name,
        batch_size=batch_size,
        events_per_s=accepted / seconds,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        requests=len(latencies),
        failures=failures,
    )


def load_results_collect(
    generators: list[subprocess.Popen], *, timeout_s: float
) -> tuple[list[dict], list[float], dict[str, int]]:
    """Each load generator's JSON result, all latencies sorted, and the failures summed by kind."""
    results = []
    for generator in generators:
        stdout, _ = generator.communicate(timeout=timeout_s)
        if generator.returncode != 0:
            sys.exit(f"a load generator failed with code {generator.returncode}")
        results.append(json.loads(stdout))
    latencies = sorted(latency for result in results for latency in result["latencies_ms"])
    failures: dict[str, int] = {}
    for result in results:
        for failure, count in result["failures"].items():
            failures[failure] = failures.get(failure, 0) + count
    return results, latencies, failures


def copy_ceiling_run(database_url: str, *, seconds: float) -> Figure:
    """One client, binary COPY straight into ingestion_rawevent, a transaction per 1000 rows.

    The clock runs only while rows are streamed and committed: each transaction's rows (fresh
    UUIDs, JSON already encoded) are built before its clock starts, so the figure is what the
    database and the wire protocol can take, not what Python can build.
    """
    import psycopg

    from apps.accounts.models import Project
    from apps.ingestion.writers import COLUMNS

    templates = copy_row_templates()
    project_id = Project.objects.get(slug="ingest-benchmark").pk
    # The database assigns ids, as a plain COPY would; the product's path also queues each new
    # event for the fold in a second table, which this ceiling leaves out.
    columns = ", ".join(f'"{name}"' for name, _ in COLUMNS if name != "id")
    types = [pg_type for name, pg_type in COLUMNS if name != "id"]
    copied = 0
    elapsed = 0.0
    position = 0
    with psycopg.connect(database_url) as connection:
        while elapsed < seconds:
            rows = [
                (project_id, uuid.uuid4(), *templates[(position + offset) % len(templates)])
                for offset in range(COPY_ROWS_PER_TRANSACTION)
            ]
            position += COPY_ROWS_PER_TRANSACTION
            started = time.perf_counter()
            with connection.cursor() as cursor:
                with cursor.copy(f"COPY ingestion_rawevent ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(types)
                    for row in rows:
                        copy.write_row(row)
            connection.commit()
            elapsed += time.perf_counter() - started
            copied += len(rows)
    return Figure(name="COPY", batch_size=COPY_ROWS_PER_TRANSACTION, events_per_s=copied / elapsed)


def copy_row_templates() -> list[tuple]:
    """The rows the product stores for the benchmark's events, less project_id and event_id."""
    from datetime import datetime, timedelta

    import msgspec
    from psycopg.types.json import Jsonb

    from apps.ingestion.validation import derived_values
    from apps.pricing.catalog import resolve_max_input_tokens, resolve_model_price
    from apps.pricing.context_windows import context_share
    from apps.pricing.cost import event_cost_nanousd
    from benchmarks._ingest_support.events import TEMPLATE_POOL_SIZE, usage_event_templates, utc_now

    now = utc_now()
    rows = []
    for event in usage_event_templates(TEMPLATE_POOL_SIZE, now=now, seed=1, session_prefix="bench-copy"):
        timestamp = datetime.fromisoformat(event["timestamp"])
        price = resolve_model_price(event["model"], event["provider"])
        cost = price and event_cost_nanousd(
            price,
            input_tokens=event["input_tokens"],
            output_tokens=event["output_tokens"],
            cache_read_tokens=event["cache_read_tokens"],
            cache_write_tokens=event["cache_write_tokens"],
            thought_tokens=0,
            billed_at=timestamp,
        )
        rows.append(
            (
                "usage", event["session_id"], event["step"], event["provider"], event["model"], event["call_id"],
                timestamp, timestamp + timedelta(milliseconds=event["duration_ms"]), now,
                Jsonb(msgspec.json.encode(event["attributes"]), dumps=bytes),
                event["duration_ms"], event["time_to_first_token_ms"], event["input_tokens"], event["output_tokens"],
                event["cache_read_tokens"], event["cache_write_tokens"], 0, 0, "client", "", None,
                0.0, None, None, None, cost, price.source if price else "", 0, "", price.price_book if price else "",
                context_share(input_tokens=event["input_tokens"],
                              max_input_tokens=resolve_max_input_tokens(event["model"], event["provider"])),
                *derived_values("usage", timestamp, event["duration_ms"], event["time_to_first_token_ms"], 0.0),
            )
        )  # fmt: skip
    return rows


def percentile(sorted_values: list[float], pct: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


# --- cleanup and report -----------------------------------------------------------------------


def redis_purge(redis_url: str) -> None:
    """Delete the fold tasks and rate-limit counters this run published, and nothing else."""
    import redis

    from benchmarks._ingest_support.settings import BENCHMARK_REDIS_NAMESPACE as namespace

    client = redis.Redis.from_url(redis_url)
    keys = [namespace, f"_kombu.binding.{namespace}", f"_kombu.binding_permanent.{namespace}"]
    keys += list(client.scan_iter(match=f"{namespace}:*", count=1000))
    client.delete(*keys)


def run_checked(command: list[str]) -> None:
    completed = subprocess.run(command, cwd=REPO_ROOT, env=os.environ.copy())
    if completed.returncode != 0:
        sys.exit(f"{' '.join(command)} failed with code {completed.returncode}")


def print_figure(figure: Figure) -> None:
    latency = (
        f"  p50 {figure.p50_ms:7.1f} ms  p99 {figure.p99_ms:7.1f} ms  ({figure.requests} requests)"
        if figure.p50_ms is not None
        else ""
    )
    print(f"{figure.name:6s} batch {figure.batch_size:5d}: {figure.events_per_s:9,.0f} events/s{latency}", flush=True)
    for failure, count in (figure.failures or {}).items():
        print(f"    {count} x {failure}")


def report(figures: list[Figure], copy_figure: Figure, *, batch_sizes: tuple[int, ...]) -> int:
    print(f"\nCOPY ceiling: {copy_figure.events_per_s:,.0f} rows/s")
    failed = False
    for batch_size in batch_sizes:
        ours = next(f for f in figures if f.name == "ours" and f.batch_size == batch_size)
        naive = next(f for f in figures if f.name == "naive" and f.batch_size == batch_size)
        over_naive = ours.events_per_s / naive.events_per_s if naive.events_per_s else float("inf")
        of_copy = ours.events_per_s / copy_figure.events_per_s
        met = (
            ours.events_per_s >= TARGET_EVENTS_PER_S and over_naive >= TARGET_OVER_NAIVE and of_copy >= TARGET_OF_COPY
        )
        print(
            f"batch {batch_size:5d}: ours {ours.events_per_s:,.0f} events/s = {over_naive:.2f} x naive "
            f"({naive.events_per_s:,.0f}), {of_copy:.0%} of COPY; targets "
            f"(>= {TARGET_EVENTS_PER_S:,}/s, >= {TARGET_OVER_NAIVE:g} x naive, >= {TARGET_OF_COPY:.0%} of COPY) "
            f"{'met' if met else 'NOT met'}"
        )
        failed = failed or bool(ours.failures) or bool(naive.failures) or not ours.events_per_s
    # Figures on a shared 2-core machine are noisy, so a missed target is reported, not a failure;
    # a request that was not accepted is a failure.
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
