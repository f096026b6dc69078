"""The embedded default end to end: `make run`'s own server (runserver, SQLite, no Redis) taking events.

    .venv/bin/python benchmarks/embedded.py                    # 400 single events, 150 batches of 100 (~2 min)
    .venv/bin/python benchmarks/embedded.py --quick            # 100 and 40, for CI (~1 min)
    .venv/bin/python benchmarks/embedded.py --against main     # also the code of a git ref (A/B in one run)

Each configuration starts `manage.py runserver 127.0.0.1:<free port>` exactly as `make run` does
(`tokensite.settings.local`, the autoreloader on), on a scratch SQLite database made by
`migrate` and `create_api_key`, with DATABASE_URL and REDIS_URL removed from its environment
(whatever the caller's are), so events are stored in SQLite and folded in the server process.
One client posts back to back over fresh connections, as curl does:

1. warm-up: 5 single events and 5 batches (litellm's import, the fold's kernels), then the
   queue is left to drain;
2. single events: `--singles` requests of one usage event each, p50 and p90 of the reply time;
3. batches: `--batches` requests of 100 usage events (realistic models, token counts, cache
   tokens, attributes: benchmarks/_ingest_support/events.py), events/s accepted and p50;
4. then it waits until the fold queue (`ingestion_pendingevent`) is empty and reports how long
   after the last reply that was, the events/s folded from the first batch to the last fold, and
   checks that the session aggregates count every accepted event once.

Configurations, one server each, one after the other in the same run:
- background, FULL: the default, folding on a thread of the server process, every commit
  flushed to disk (SQLITE_SYNCHRONOUS=FULL);
- inline, FULL: `METRICS_FOLD_THREAD=False`, the fold running after the commit inside the
  request, as before the background folder existed (the baseline of the ratios);
- background, NORMAL: the SQLite log flushed at checkpoints only (SQLITE_SYNCHRONOUS=NORMAL);
- `--against REF`: the server of another commit (`git archive REF`; before this change:
  inline fold, FULL), for a before/after.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks._ingest_support.events import BodyFactory, utc_now  # noqa: E402

BATCH_SIZE = 100
# Issue 14's targets for the embedded default.
TARGET_BATCH_EVENTS_PER_S = 2000
TARGET_SINGLE_P50_MS = 20.0


@dataclass
class Figures:
    label: str
    single_p50_ms: float
    single_p90_ms: float
    batch_p50_ms: float
    batch_events_per_s: float
    fold_lag_s: float
    folded_events_per_s: float
    events: int


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, for CI")
    parser.add_argument("--singles", type=int, help="single-event requests (default 400, quick 100)")
    parser.add_argument("--batches", type=int, help="requests of 100 events (default 150, quick 40)")
    parser.add_argument("--against", metavar="REF", help="also run the server of this git ref")
    args = parser.parse_args()
    singles = args.singles or (100 if args.quick else 400)
    batches = args.batches or (40 if args.quick else 150)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    results: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="tokensite-embedded-") as folder:
        configurations = [
            ("background, FULL", REPO_ROOT, {"SQLITE_SYNCHRONOUS": "FULL"}),
            ("inline, FULL", REPO_ROOT, {"SQLITE_SYNCHRONOUS": "FULL", "METRICS_FOLD_THREAD": "False"}),
            ("background, NORMAL", REPO_ROOT, {"SQLITE_SYNCHRONOUS": "NORMAL"}),
        ]
        if args.against:
            configurations.append((f"{args.against} (inline)", _exported(args.against, Path(folder) / "against"), {}))
        for index, (label, root, extra_env) in enumerate(configurations):
            work = Path(folder) / f"run-{index}"
            work.mkdir()
            results.append(_run(label, root, work, extra_env, singles=singles, batches=batches))
    print()
    print(f"{'configuration':26} {'single p50':>10} {'p90':>8} {'batch p50':>10} {'events/s':>9} "
          f"{'fold lag':>9} {'folded/s':>9}")  # fmt: skip
    for figures in results:
        print(f"{figures.label:26} {figures.single_p50_ms:8.1f}ms {figures.single_p90_ms:6.1f}ms "
              f"{figures.batch_p50_ms:8.1f}ms {figures.batch_events_per_s:9,.0f} {figures.fold_lag_s:8.2f}s "
              f"{figures.folded_events_per_s:9,.0f}")  # fmt: skip
    ours, baseline = results[0], results[1]
    print(f"\n{ours.label} / {baseline.label}: batches {ours.batch_events_per_s / baseline.batch_events_per_s:.2f}x events/s, "
          f"single p50 {baseline.single_p50_ms / ours.single_p50_ms:.2f}x faster")  # fmt: skip
    met = ours.batch_events_per_s >= TARGET_BATCH_EVENTS_PER_S and ours.single_p50_ms < TARGET_SINGLE_P50_MS
    print(f"targets (>= {TARGET_BATCH_EVENTS_PER_S:,} events/s in batches of {BATCH_SIZE}, single p50 < "
          f"{TARGET_SINGLE_P50_MS:.0f} ms): {'met' if met else 'NOT met'}")  # fmt: skip
    return 0


def _exported(ref: str, target: Path) -> Path:
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def _run(label: str, root: Path, work: Path, extra_env: dict[str, str], *, singles: int, batches: int) -> Figures:
    database = work / "db.sqlite3"
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL")}
    env.update({
        "DJANGO_SETTINGS_MODULE": "tokensite.settings.local", "DATABASE_URL": f"sqlite:///{database}",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": os.pathsep.join([str(root / "sdk"), str(root)]),
        "LOG_LEVEL": "WARNING", **extra_env,
    })  # fmt: skip
    manage = [sys.executable, str(root / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, cwd=root, check=True)
    created = subprocess.run([*manage, "create_api_key", "--team", "bench", "--project", "embedded"], env=env,
                             cwd=root, check=True, capture_output=True, text=True)  # fmt: skip
    key = created.stdout.strip().splitlines()[-1]
    port = _free_port()
    log_path = work / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([*manage, "runserver", f"127.0.0.1:{port}"], env=env, cwd=root, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        _wait_until_serving(port, server, log_path)
        client = _Client(port, key)
        factory = BodyFactory(batch_size=BATCH_SIZE, now=utc_now(), seed=14)
        for _ in range(5):
            client.post(_single_body())
            client.post(factory.body())
        _wait_until_folded(database)
        single_ms = sorted(client.post(_single_body()) for _ in range(singles))
        _wait_until_folded(database)
        batch_ms = []
        started = time.perf_counter()
        for _ in range(batches):
            batch_ms.append(client.post(factory.body()))
        replied = time.perf_counter()
        _wait_until_folded(database)
        folded = time.perf_counter()
        events = _events_counted_once(database, expected=client.accepted)
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
    batch_ms.sort()
    return Figures(
        label=label,
        single_p50_ms=statistics.median(single_ms),
        single_p90_ms=single_ms[int(len(single_ms) * 0.9)],
        batch_p50_ms=statistics.median(batch_ms),
        batch_events_per_s=batches * BATCH_SIZE / (replied - started),
        fold_lag_s=folded - replied,
        folded_events_per_s=batches * BATCH_SIZE / (folded - started),
        events=events,
    )


def _single_body() -> bytes:
    event = {"event_id": str(uuid.uuid4()), "type": "usage", "session_id": "single", "provider": "openai",
             "model": "gpt-4o", "timestamp": utc_now().isoformat(), "duration_ms": 900,
             "time_to_first_token_ms": 120, "input_tokens": 1200, "output_tokens": 300}  # fmt: skip
    return json.dumps({"events": [event]}).encode()


class _Client:
    """Posts bodies over a fresh connection each, as curl does; returns each reply's milliseconds."""

    def __init__(self, port: int, key: str) -> None:
        self.port, self.key, self.accepted = port, key, 0

    def post(self, body: bytes) -> float:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        started = time.perf_counter()
        connection.request("POST", "/api/v1/events", body,
                           {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})  # fmt: skip
        response = connection.getresponse()
        reply = response.read()
        elapsed_ms = (time.perf_counter() - started) * 1000
        connection.close()
        if response.status != 202:
            raise SystemExit(f"POST /api/v1/events answered {response.status}: {reply[:300]!r}")
        self.accepted += json.loads(reply)["accepted"]
        return elapsed_ms


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_serving(port: int, server: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"runserver exited:\n{log_path.read_text()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"runserver did not answer /healthz:\n{log_path.read_text()}")


def _wait_until_folded(database: Path, timeout_s: float = 300) -> None:
    """Poll the fold queue from outside the server (WAL readers do not block its writers)."""
    deadline = time.monotonic() + timeout_s
    with sqlite3.connect(database, timeout=30) as db:
        while db.execute("SELECT COUNT(*) FROM ingestion_pendingevent").fetchone()[0]:
            if time.monotonic() > deadline:
                raise SystemExit("the fold queue did not drain")
            time.sleep(0.02)


def _events_counted_once(database: Path, *, expected: int) -> int:
    with sqlite3.connect(database, timeout=30) as db:
        (calls,) = db.execute("SELECT COALESCE(SUM(calls), 0) FROM metrics_sessionaggregate").fetchone()
        (raw,) = db.execute("SELECT COUNT(*) FROM ingestion_rawevent").fetchone()
    if not calls == raw == expected:
        raise SystemExit(f"folded {calls} calls of {raw} stored events; {expected} were accepted")
    return calls


if __name__ == "__main__":
    sys.exit(main())
