"""What the SDK's budget guard costs the application's thread per call (issue 16).

    .venv/bin/python benchmarks/budget_guard.py            # 200,000 checks per case
    .venv/bin/python benchmarks/budget_guard.py --quick    # CI: 20,000

A tracker with `budget_guard=True` fetches its budget list from a local fake TokenSite server
(`GET /api/v1/budgets`, on the sender thread); the caller's `check_budget(model)`, which every
instrumented call runs before its request, and `budget_status()` are then timed with 1, 20 and
100 budgets none of which blocks (the worst case: every budget is looked at).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "sdk"))
sys.path.insert(0, str(REPO_ROOT / "sdk" / "tests"))

import tokensite_client as ts  # noqa: E402
from sdk_fakes import FakeIngestServer  # noqa: E402

PERIOD = {"period": "month", "period_start": "2026-12-01T00:00:00Z", "period_end": "2099-01-01T00:00:00Z"}


def budget(index: int) -> dict:
    # Narrowed to other developers and models, or spent but soft: looked at, never blocking.
    return {"id": index, "scope": "project", "project": "bench", "user": f"dev-{index}" if index % 2 else "",
            "model": "" if index % 2 else f"model-{index}", **PERIOD, "amount_usd": "100.00", "amount_tokens": None,
            "spent_usd": "120.0000", "spent_tokens": 1, "unpriced_tokens": 0, "share": 1.2, "forecast_share": 1.3,
            "forecast_exceeds": True, "hard": bool(index % 2), "exceeded": True}  # fmt: skip


def timed_ns(action, calls: int) -> list[int]:
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        started = clock()
        action()
        samples.append(clock() - started)
    return samples


def describe(samples: list[int]) -> str:
    ordered = sorted(samples)
    p99 = ordered[int(len(ordered) * 0.99)]
    return f"p50 {statistics.median(ordered) / 1000:6.2f} us   p99 {p99 / 1000:6.2f} us"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for CI")
    calls = 20_000 if parser.parse_args().quick else 200_000
    server = FakeIngestServer()
    server.start()
    try:
        for count in (1, 20, 100):
            server.budgets = [budget(index) for index in range(1, count + 1)]
            tracker = ts.Tracker(url=server.url, api_key=server.api_key, budget_guard=True, user="alice",
                                 budget_refresh_s=60, spool_dir=f"/tmp/tokensite-bench-guard-{count}")
            deadline = time.monotonic() + 10
            while len(tracker.budget_status()) != count:
                assert time.monotonic() < deadline, "the budget list never arrived"
                time.sleep(0.01)
            check = timed_ns(lambda: tracker.check_budget("gpt-4o"), calls)
            status = timed_ns(tracker.budget_status, calls)
            print(f"{count:>3} budgets, {calls:,} calls each")
            print(f"  check_budget (before every guarded call): {describe(check)}")
            print(f"  budget_status()                         : {describe(status)}")
            tracker.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
