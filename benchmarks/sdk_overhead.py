"""What the TokenSite SDK costs the application's thread (issue 5 targets).

1. `record_usage` on the caller's thread, in microseconds (p50, p99), next to a baseline
   measured in the same run: building the same event dict by hand (uuid4, RFC 3339
   timestamp, the same fields) and appending it to a list. Target: p50 < 20 us.
2. One OpenAI chat completion through the real openai client against a local fake
   server, instrumented vs uninstrumented, in pairs (which of the two goes first
   alternates) so both see the same machine state. Target: < 100 us added per call, read
   on two statistics that must both meet it: the difference of the two medians and the
   median of the paired differences (with its 95% confidence interval, to show how far
   the run's noise could move it). The events of part 1 are delivered before part 2
   starts, so their sending does not land on part 2's calls.

Events go to a local fake TokenSite ingest server, so the sender thread runs as in
production while the caller is timed. Both fake servers run in child processes, so their
work does not compete with the measured client for the GIL.

    .venv/bin/python benchmarks/sdk_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sdk" / "tests"))

import openai  # noqa: E402
from sdk_fakes import FakeIngestServer, FakeOpenAIServer  # noqa: E402  (the test suite's loopback fakes)

import tokensite_client as ts  # noqa: E402


def _serve(kind: str, ports: Any, stop: Any) -> None:
    server: FakeIngestServer | FakeOpenAIServer = FakeIngestServer() if kind == "ingest" else FakeOpenAIServer()
    server.start()
    ports.put(server.port)
    stop.wait()
    server.stop()


def start_server(kind: str, stop: Any) -> tuple[multiprocessing.Process, str]:
    ports: Any = multiprocessing.Queue()
    process = multiprocessing.Process(target=_serve, args=(kind, ports, stop), daemon=True)
    process.start()
    return process, f"http://127.0.0.1:{ports.get(timeout=30)}"


def percentile(samples_ns: list[int], fraction: float) -> float:
    ordered = sorted(samples_ns)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000


def baseline_event(session_id: str) -> dict[str, Any]:
    """The least any SDK must do per call: the same dict, with an id and a timestamp."""
    return {
        "event_id": str(uuid.uuid4()), "type": "usage", "session_id": session_id, "step": "default",
        "provider": "openai", "model": "gpt-4o",
        "timestamp": datetime.fromtimestamp(time.time() - 0.8, timezone.utc).isoformat(timespec="microseconds"),
        "duration_ms": 800.0, "input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 1024,
        "cache_write_tokens": 0, "tool_tokens": 0, "thought_tokens": 64,
    }


def bench_record_usage(tracker: ts.Tracker, calls: int) -> tuple[list[int], list[int]]:
    sink: list[dict[str, Any]] = []
    baseline: list[int] = []
    measured: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        started = clock()
        sink.append(baseline_event(tracker.session_id))
        baseline.append(clock() - started)
        started = clock()
        tracker.record_usage(model="gpt-4o", provider="openai", input_tokens=1200, output_tokens=300,
                             duration_ms=800.0, cache_read_tokens=1024, thought_tokens=64)
        measured.append(clock() - started)
        if len(sink) >= 10_000:
            sink.clear()
    return baseline, measured


def median_interval(samples_ns: list[int]) -> tuple[float, float]:
    """95% confidence interval of the median (distribution-free: the order statistics a
    binomial(n, 1/2) puts 1.96 standard deviations either side of n/2), in us."""
    ordered = sorted(samples_ns)
    n = len(ordered)
    half_width = 1.96 * (n ** 0.5) / 2
    low = max(0, int(n / 2 - half_width))
    high = min(n - 1, int(n / 2 + half_width + 1))
    return ordered[low] / 1000, ordered[high] / 1000


def bench_openai(url: str, tracker: ts.Tracker, calls: int) -> tuple[list[int], list[int]]:
    plain = openai.OpenAI(base_url=url + "/v1", api_key="sk-bench", max_retries=0)
    instrumented = ts.instrument_openai(openai.OpenAI(base_url=url + "/v1", api_key="sk-bench", max_retries=0),
                                        tracker)
    messages = [{"role": "user", "content": "hello"}]
    for client in (plain, instrumented):  # warm connections, lazy imports and caches
        for _ in range(50):
            client.chat.completions.create(model="gpt-4o", messages=messages)
    tracker.flush(30)  # the warm-up's events (and any earlier backlog) are sent before timing
    gc.collect()
    plain_ns: list[int] = []
    instrumented_ns: list[int] = []
    clock = time.perf_counter_ns
    orders = (((plain, plain_ns), (instrumented, instrumented_ns)),
              ((instrumented, instrumented_ns), (plain, plain_ns)))
    for index in range(calls):
        # Alternate which goes first: whatever the first call of a pair leaves behind (a
        # sender wake-up, a collection) falls on both clients alike.
        for client, samples in orders[index % 2]:
            started = clock()
            client.chat.completions.create(model="gpt-4o", messages=messages)
            samples.append(clock() - started)
    return plain_ns, instrumented_ns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for CI")
    args = parser.parse_args()
    record_calls, openai_calls = (20_000, 1_500) if args.quick else (200_000, 5_000)

    stop = multiprocessing.Event()
    processes = []
    try:
        ingest_process, ingest_url = start_server("ingest", stop)
        openai_process, openai_url = start_server("openai", stop)
        processes = [ingest_process, openai_process]
        with tempfile.TemporaryDirectory() as spool_dir:
            tracker = ts.Tracker(url=ingest_url, api_key=FakeIngestServer().api_key, spool_dir=spool_dir,
                                 max_queue=max(record_calls * 2, 20_000))
            try:
                baseline, measured = bench_record_usage(tracker, record_calls)
                tracker.flush(30)
                plain, instrumented = bench_openai(openai_url, tracker, openai_calls)
                delivered = tracker.flush(30)
                stats = tracker.stats()
            finally:
                tracker.close()
    finally:
        stop.set()
        for process in processes:
            process.join(5)

    base_p50, base_p99 = percentile(baseline, 0.5), percentile(baseline, 0.99)
    rec_p50, rec_p99 = percentile(measured, 0.5), percentile(measured, 0.99)
    print(f"record_usage, {record_calls:,} calls on the caller's thread")
    print(f"  baseline (build the same dict): p50 {base_p50:6.2f} us   p99 {base_p99:6.2f} us")
    print(f"  tracker.record_usage          : p50 {rec_p50:6.2f} us   p99 {rec_p99:6.2f} us")
    print(f"  ratio p50 {rec_p50 / base_p50:.2f}x   target p50 < 20 us: {'met' if rec_p50 < 20 else 'MISSED'}")
    plain_p50, inst_p50 = percentile(plain, 0.5), percentile(instrumented, 0.5)
    added = inst_p50 - plain_p50
    differences = [i - p for i, p in zip(instrumented, plain)]
    paired = statistics.median(differences) / 1000
    paired_low, paired_high = median_interval(differences)
    met = added < 100 and paired < 100
    print(f"OpenAI chat completion against the local fake server, {openai_calls:,} calls each, interleaved")
    print(f"  uninstrumented client: p50 {plain_p50:8.1f} us   p99 {percentile(plain, 0.99):8.1f} us")
    print(f"  instrumented client  : p50 {inst_p50:8.1f} us   p99 {percentile(instrumented, 0.99):8.1f} us")
    print(f"  added per call (p50 difference) {added:6.1f} us, ratio {inst_p50 / plain_p50:.3f}x, "
          f"median paired difference {paired:6.1f} us (95% CI {paired_low:.1f} to {paired_high:.1f})   "
          f"target < 100 us on both: {'met' if met else 'MISSED'}")
    print(f"delivery: {stats.sent:,} events accepted by the fake server, all delivered: {delivered}, "
          f"dropped {stats.dropped}")


if __name__ == "__main__":
    main()
