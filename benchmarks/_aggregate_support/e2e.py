"""Client processes of the end-to-end run: each posts its share of live sessions' events to
`POST /api/v1/events` in batches, one request at a time, as fast as the server answers.

A client builds all its bodies before the clock starts (the load generator shares the server's
two cores and must not spend them on JSON while it is measured), reports ready, waits for the
common start, posts, and reports when its first request left and its last reply came back
(`time.monotonic()`, one clock for every process on the host).
"""
from __future__ import annotations

import json
import math
import time
from datetime import datetime, timedelta

from benchmarks._aggregate_support.live import Session


def client_bodies(*, client: int, clients: int, sessions: int, bodies: int, batch_size: int, seed: int,
                  now: datetime) -> list[bytes]:  # fmt: skip
    """The client's bodies: its sessions (every `clients`-th of `sessions`) take turns, each
    adding its next few calls in time order, until a body holds `batch_size` events."""
    runs = [Session(seed, number, now - timedelta(hours=3) + timedelta(hours=2) * (number / sessions))
            for number in range(client, sessions, clients)]  # fmt: skip
    per_session = math.ceil(batch_size / len(runs))
    out: list[bytes] = []
    turn = 0
    for _ in range(bodies):
        events: list[dict] = []
        while len(events) < batch_size:
            events.extend(runs[turn % len(runs)].next_events(min(per_session, batch_size - len(events))))
            turn += 1
        out.append(json.dumps({"events": events}, separators=(",", ":")).encode())
    return out


def client_main(url: str, key: str, spec: dict, ready, start, results) -> None:
    """Run in a spawned process: build, wait for `start`, post, put a report on `results`."""
    import httpx

    bodies = client_bodies(**spec)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    accepted = failures = 0
    with httpx.Client(timeout=120) as client:
        ready.put(spec["client"])
        start.wait()
        first = time.monotonic()
        for body in bodies:
            response = client.post(f"{url}/api/v1/events", content=body, headers=headers)
            if response.status_code == 202:
                accepted += response.json()["accepted"]
            else:
                failures += 1
        last = time.monotonic()
    results.put({"client": spec["client"], "first": first, "last": last, "accepted": accepted, "failures": failures})
