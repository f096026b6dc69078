"""OTLP intake throughput: `POST /otlp/v1/logs` (protobuf and JSON) next to `POST /api/v1/events`.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ts_otlp REDIS_URL=redis://127.0.0.1:6379/6 \\
        .venv/bin/python benchmarks/otlp.py            # 20 s per configuration
    ... benchmarks/otlp.py --quick                     # 3 s per configuration, for CI
    ... benchmarks/otlp.py --in-process                # CPU per record of the services, no server
    ... benchmarks/otlp.py --stages                    # CPU per record of otlp_export's stages, no database

The same calls go three ways in one run: as native usage events (JSON batches of 512), and as
OpenTelemetry GenAI log events (`gen_ai.client.inference.operation.details` records with
`gen_ai.usage.*` attributes, 512 records a request as the JS exporters batch them), encoded as
OTLP protobuf and as OTLP JSON. Every request carries fresh calls (new event ids, new response
ids), so each event is a real insert. The figure is stored events per second; the ratio of each
OTLP encoding to the native path is printed (target: at least 0.5).

The server and the database are set up as `benchmarks/ingest.py` sets them up (gunicorn with
sync workers, production settings, a scratch Postgres database `<name>_ingest_bench` created and
dropped by the run, fold tasks published to Redis under the benchmark's own namespace and deleted
at the end); its helpers are reused here.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "sdk"))

from benchmarks import ingest  # noqa: E402

BATCH_RECORDS = 512
TARGET_OF_NATIVE = 0.5
# Fresh calls for every request of a run at up to this rate: the native path reached 39,000
# events/s on a quiet host, and a reused body would be a duplicate that stores nothing.
POOL_EVENTS_PER_S = 80_000
MODES = {
    "native": ("/api/v1/events", "application/json"),
    "otlp-protobuf": ("/otlp/v1/logs", "application/x-protobuf"),
    "otlp-json": ("/otlp/v1/logs", "application/json"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per configuration instead of 20 s")
    parser.add_argument("--seconds", type=float, help="measured seconds per configuration")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers (default 2)")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the three paths, order alternating")
    parser.add_argument("--in-process", action="store_true",
                        help="CPU per record of the three paths called in this process, no server (steady on a busy host)")
    parser.add_argument("--stages", action="store_true",
                        help="CPU per record of each stage of otlp_export before storage (no server, no database)")
    parser.add_argument("--loadgen", nargs=5, metavar=("MODE", "PORT", "KEY", "POOL", "SEED"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        return loadgen(*args.loadgen)
    if args.in_process:
        return in_process(rounds=max(args.rounds, 4))
    if args.stages:
        return stages(rounds=max(args.rounds, 5))
    seconds = args.seconds or (3.0 if args.quick else 20.0)
    warmup = 1.0 if args.quick else 3.0

    database_url = ingest.scratch_database_url(os.environ.get("DATABASE_URL") or ingest.DEFAULT_DATABASE_URL)
    redis_url = os.environ.get("REDIS_URL") or ingest.DEFAULT_REDIS_URL
    os.environ.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url,
                       "DJANGO_SETTINGS_MODULE": ingest.SETTINGS_MODULE})
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    load_before = os.getloadavg()[0]

    ingest.scratch_database_recreate(database_url)
    gunicorn = None
    figures: dict[str, ingest.Figure] = {}
    try:
        ingest.run_checked([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"])
        key = ingest.benchmark_key_create()
        port = ingest.free_port()
        gunicorn = ingest.gunicorn_start(port=port, workers=args.workers)
        ingest.server_wait_ready(port=port, key=key, process=gunicorn)
        print(
            f"gunicorn: {args.workers} sync workers; {args.clients} load-generator processes; {BATCH_RECORDS} "
            f"calls a request; {seconds:g} s measured per configuration after {warmup:g} s of warm-up; "
            f"{os.cpu_count()} CPUs; load average before the run {load_before:.2f}"
        )
        # Rounds in alternating order, so a change in the shared machine's load hits every path alike.
        runs: dict[str, list[ingest.Figure]] = {mode: [] for mode in MODES}
        for round_index in range(args.rounds):
            order = list(MODES) if round_index % 2 == 0 else list(reversed(MODES))
            for mode in order:
                ingest.raw_events_truncate(database_url)
                figure = load_run(mode=mode, port=port, key=key, clients=args.clients, seconds=seconds,
                                  warmup=warmup, server_pid=gunicorn.pid)
                runs[mode].append(figure)
                ingest.print_figure(figure)
        figures = {mode: _combined(mode, found) for mode, found in runs.items()}
    finally:
        if gunicorn is not None:
            ingest.gunicorn_stop(gunicorn)
        ingest.redis_purge(redis_url)
        ingest.scratch_database_drop(database_url)
    print()
    for figure in figures.values():
        ingest.print_figure(figure)
        print(f"    gunicorn workers' CPU: {figure.cpu_ms_per_1000:.0f} ms per 1000 events stored")
    native = figures["native"].events_per_s
    native_cpu = figures["native"].cpu_ms_per_1000
    failed = any(figure.failures for figure in figures.values()) or not native
    for mode in ("otlp-protobuf", "otlp-json"):
        ratio = figures[mode].events_per_s / native if native else 0.0
        cpu_ratio = native_cpu / figures[mode].cpu_ms_per_1000 if figures[mode].cpu_ms_per_1000 else 0.0
        print(f"{mode}: {figures[mode].events_per_s:,.0f} events/s = {ratio:.2f} x native ({native:,.0f}); "
              f"target >= {TARGET_OF_NATIVE:g} x {'met' if ratio >= TARGET_OF_NATIVE else 'NOT met'}; "
              f"per server CPU second {cpu_ratio:.2f} x native")
    return 1 if failed else 0


def _combined(mode: str, runs: list[ingest.Figure]) -> ingest.Figure:
    """The rounds of one path together: mean events/s, worst failures."""
    failures: dict[str, int] = {}
    for run in runs:
        for failure, count in (run.failures or {}).items():
            failures[failure] = failures.get(failure, 0) + count
    figure = ingest.Figure(
        name=f"{mode} (mean of {len(runs)})", batch_size=BATCH_RECORDS,
        events_per_s=sum(run.events_per_s for run in runs) / len(runs),
        requests=sum(run.requests for run in runs), failures=failures,
    )
    figure.cpu_ms_per_1000 = sum(run.cpu_ms_per_1000 for run in runs) / len(runs)
    return figure


def load_run(
    *, mode: str, port: int, key: str, clients: int, seconds: float, warmup: float, server_pid: int
) -> ingest.Figure:
    # Each generator builds its request bodies first, says so, and is then told when to measure.
    # Distinct requests for the whole run at well above any rate 2 cores reach: a request sent twice
    # would be all duplicates, cheaper than inserts.
    pool_size = max(8, min(2500, math.ceil((seconds + warmup) * POOL_EVENTS_PER_S / BATCH_RECORDS / clients)))
    generators = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--loadgen", mode, str(port), key, str(pool_size),
             str(index + 1)],
            cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=os.environ.copy(), text=True,
        )
        for index in range(clients)
    ]
    for generator in generators:
        if generator.stdout.readline().strip() != "ready":
            sys.exit("a load generator failed while building its requests")
    measure_from = time.time() + warmup
    measure_until = measure_from + seconds
    for generator in generators:
        generator.stdin.write(f"{measure_from!r} {measure_until!r}\n")
        generator.stdin.flush()
    time.sleep(max(0.0, measure_from - time.time()))
    cpu_before = _server_cpu_s(server_pid)
    time.sleep(max(0.0, measure_until - time.time()))
    cpu_s = _server_cpu_s(server_pid) - cpu_before
    results, latencies, failures = ingest.load_results_collect(generators, timeout_s=warmup + seconds + 120)
    figure = ingest.Figure(
        name=mode, batch_size=BATCH_RECORDS, events_per_s=sum(r["stored"] for r in results) / seconds,
        p50_ms=ingest.percentile(latencies, 50), p99_ms=ingest.percentile(latencies, 99),
        requests=len(latencies), failures=failures,
    )
    figure.cpu_ms_per_1000 = cpu_s * 1000 / (figure.events_per_s * seconds / 1000) if figure.events_per_s else 0.0
    return figure


def _server_cpu_s(master_pid: int) -> float:
    """CPU seconds used so far by gunicorn's workers: unlike events/s, not skewed by other work on
    the machine, so the paths' costs can be compared on a busy host."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    try:
        children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    except OSError:
        return 0.0
    for pid in children:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


# --- in-process CPU --------------------------------------------------------------------------


def in_process(*, rounds: int, requests: int = 6) -> int:
    """CPU seconds per record of events_ingest and otlp_export (protobuf, JSON), the services the
    views call, on the scratch database: no HTTP, no load generators, so a host shared with other
    work changes the figures far less than it changes events/s. The minimum over rounds is kept."""
    import gc

    database_url = ingest.scratch_database_url(os.environ.get("DATABASE_URL") or ingest.DEFAULT_DATABASE_URL)
    os.environ.update({"DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": ingest.SETTINGS_MODULE,
                       "REDIS_URL": os.environ.get("REDIS_URL") or ingest.DEFAULT_REDIS_URL})
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    ingest.scratch_database_recreate(database_url)
    try:
        ingest.run_checked([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"])
        ingest.benchmark_key_create()
        from django.db import connection

        from apps.accounts.models import Project
        from apps.ingestion.services import events_ingest
        from apps.otlp.services import otlp_export

        project = Project.objects.get(slug="ingest-benchmark")
        events_ingest(project=project, body=_body("native", 0, 0))  # litellm's import and prices, once
        gc.collect()
        gc.freeze()  # the warm heap out of the collector's way, as in every path alike
        best: dict[str, float] = {}
        seed = 1
        for _ in range(rounds):
            for mode in MODES:
                bodies = [_body(mode, seed, index) for index in range(requests)]
                seed += 1
                started = time.process_time()
                for body in bodies:
                    if mode == "native":
                        events_ingest(project=project, body=body)
                    else:
                        otlp_export(project=project, signal="logs", media_type=MODES[mode][1], body=body)
                per_record_us = (time.process_time() - started) / (requests * BATCH_RECORDS) * 1e6
                best[mode] = min(best.get(mode, per_record_us), per_record_us)
        connection.close()
    finally:
        ingest.scratch_database_drop(database_url)
    print(f"in-process CPU per record, min of {rounds} rounds of {requests} requests of {BATCH_RECORDS}:")
    for mode, per_record_us in best.items():
        print(f"  {mode:14s} {per_record_us:6.1f} µs   native / this = {best['native'] / per_record_us:.2f}")
    return 0


def stages(*, rounds: int, requests: int = 20) -> int:
    """CPU µs per record of otlp_export's stages up to storage: decode, flatten into records, choose
    a source, convert, and freeing the request's objects. Nothing is stored, so a difference of 1-2 µs a record shows, which the whole
    path (events_store and the database, 17-20 µs a record) hides on a shared host. Min of rounds."""
    import gc

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", ingest.SETTINGS_MODULE)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import django

    django.setup()
    from apps.otlp.decoding import otlp_request_parse, records_from_request
    from apps.otlp.pending_throttles import project_scope
    from apps.otlp.sources import registered_sources, source_for

    sources = registered_sources()
    clock = time.process_time
    best: dict[str, dict[str, float]] = {}
    for mode in ("otlp-protobuf", "otlp-json"):
        media_type = MODES[mode][1]
        bodies = [_body(mode, 1, index) for index in range(requests)]
        gc.collect()
        gc.disable()  # as otlp_export pauses it
        try:
            for round_number in range(rounds + 1):  # the first round warms up
                spent = dict.fromkeys(("decode", "flatten", "source", "convert", "free"), 0.0)
                for body in bodies:
                    t0 = clock()
                    message = otlp_request_parse(signal="logs", media_type=media_type, body=body)
                    t1 = clock()
                    records = records_from_request(signal="logs", message=message, max_records=10_000)
                    t2 = clock()
                    chosen = [source_for(record, sources) for record in records]
                    t3 = clock()
                    with project_scope(0):
                        output = chosen[0].convert(records)
                    t4 = clock()
                    del message, records, chosen, output
                    t5 = clock()
                    spent["decode"] += t1 - t0
                    spent["flatten"] += t2 - t1
                    spent["source"] += t3 - t2
                    spent["convert"] += t4 - t3
                    spent["free"] += t5 - t4
                if round_number:
                    figures = {stage: seconds / (requests * BATCH_RECORDS) * 1e6 for stage, seconds in spent.items()}
                    kept = best.setdefault(mode, figures)
                    for stage, value in figures.items():
                        kept[stage] = min(kept[stage], value)
        finally:
            gc.enable()
    print(f"CPU µs per record, min of {rounds} rounds of {requests} requests of {BATCH_RECORDS} (nothing stored):")
    for mode, figures in best.items():
        shown = "  ".join(f"{stage} {value:5.2f}" for stage, value in figures.items())
        print(f"  {mode:14s} {shown}   sum {sum(figures.values()):5.1f}")
    return 0


# --- load generator ---------------------------------------------------------------------------


def loadgen(mode: str, port: str, key: str, pool_size: str, seed: str) -> int:
    from benchmarks._ingest_support.loadgen import post

    path, media_type = MODES[mode]
    bodies = [_body(mode, int(seed), index) for index in range(int(pool_size))]
    print("ready", flush=True)
    start, until = (float(text) for text in sys.stdin.readline().split())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: {media_type}\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
    ).encode()
    latencies_ms: list[float] = []
    stored = 0
    failures: dict[str, int] = {}
    index = 0
    while (started := time.time()) < until:
        body = bodies[index % len(bodies)]
        index += 1
        try:
            status, reply, headers = _post(post, port, head % len(body), body)
        except OSError as exc:
            status, reply, headers = 0, str(exc).encode(), {}
        finished = time.time()
        if started < start:
            continue
        if status in (200, 202):
            stored += json.loads(reply)["accepted"] if mode == "native" else int(headers["x-tokensite-events-stored"])
            latencies_ms.append((finished - started) * 1000)
        else:
            failure = f"{status} {reply[:200].decode(errors='replace')}"
            failures[failure] = failures.get(failure, 0) + 1
    if index > len(bodies):
        failures["request pool exhausted: later requests were duplicates"] = index - len(bodies)
    json.dump({"stored": stored, "latencies_ms": latencies_ms, "failures": failures}, sys.stdout)
    return 0


def _post(post, port: int, head: bytes, body: bytes) -> tuple[int, bytes, dict[str, str]]:
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(head + body)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks)
    status = int(reply[9:12]) if reply.startswith(b"HTTP/1.") else 0
    header_block, _, payload = reply.partition(b"\r\n\r\n")
    headers = {}
    for line in header_block.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, payload, headers


def _calls(seed: int, index: int) -> list[dict]:
    from benchmarks._ingest_support.events import usage_event_templates, utc_now

    prefix = f"s{seed}-{index}-{uuid.uuid4().hex[:8]}"
    calls = usage_event_templates(BATCH_RECORDS, now=utc_now(), seed=seed * 100_003 + index, session_prefix=prefix)
    for number, call in enumerate(calls):
        call["response_id"] = f"resp-{prefix}-{number}"
    return calls


def _body(mode: str, seed: int, index: int) -> bytes:
    calls = _calls(seed, index)
    if mode == "native":
        events = [{k: v for k, v in call.items() if k != "response_id"} | {"event_id": str(uuid.uuid4())}
                  for call in calls]
        return json.dumps({"events": events}).encode()
    request = _logs_request(calls)
    if mode == "otlp-protobuf":
        return request.SerializeToString()
    from google.protobuf import json_format

    return json_format.MessageToJson(request, indent=None).encode()


def _logs_request(calls: list[dict]):
    from datetime import datetime

    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def value(item) -> AnyValue:
        return AnyValue(int_value=item) if isinstance(item, int) else AnyValue(string_value=str(item))

    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend([
        KeyValue(key="service.name", value=value("bench-app")), KeyValue(key="service.version", value=value("1.0")),
        KeyValue(key="team", value=value("platform")),
    ])
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = "opentelemetry.instrumentation.genai"
    for call in calls:
        log = scope_logs.log_records.add()
        log.time_unix_nano = int(datetime.fromisoformat(call["timestamp"]).timestamp() * 1e9)
        log.event_name = "gen_ai.client.inference.operation.details"
        attributes = {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": call["provider"],
            "gen_ai.request.model": call["model"], "gen_ai.response.model": call["model"],
            "gen_ai.response.id": call["response_id"], "gen_ai.conversation.id": call["session_id"],
            "gen_ai.usage.input_tokens": call["input_tokens"], "gen_ai.usage.output_tokens": call["output_tokens"],
            "gen_ai.usage.cache_read.input_tokens": call["cache_read_tokens"],
            "gen_ai.usage.cache_creation.input_tokens": call["cache_write_tokens"],
            "tokensite.step": call["step"], "user.id": call["attributes"]["user"],
        }
        log.attributes.extend(KeyValue(key=name, value=value(item)) for name, item in attributes.items())
    return request


if __name__ == "__main__":
    sys.exit(main())
