"""One load-generator process: posts batches back to back over fresh connections, prints JSON.

    python -m benchmarks._ingest_support.loadgen --port P --path /api/v1/events --key K \\
        --batch-size 1000 --measure-from T0 --measure-until T1 --seed 3

Plain sockets rather than an HTTP library: the generator shares two cores with gunicorn and
Postgres, so every microsecond it spends is taken from the server it measures. Gunicorn's sync
workers close the connection after each response (no keep-alive), so one request is one
connection, as a fleet of SDK clients sends them. Requests sent before `--measure-from` warm the
server up and are not reported; no request starts after `--measure-until`.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from benchmarks._ingest_support.events import BodyFactory, utc_now


def post(port: int, head: bytes, body: bytes) -> tuple[int, bytes]:
    """Send one request and read the reply until the server closes; returns (status, reply body)."""
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(head + body)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks)
    status = int(reply[9:12]) if reply.startswith(b"HTTP/1.") else 0
    return status, reply.partition(b"\r\n\r\n")[2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--measure-from", type=float, required=True, help="epoch seconds")
    parser.add_argument("--measure-until", type=float, required=True, help="epoch seconds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    bodies = BodyFactory(batch_size=args.batch_size, now=utc_now(), seed=args.seed)
    head_template = (
        f"POST {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {args.key}\r\n"
        "Content-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
    ).encode()
    latencies_ms: list[float] = []
    accepted = duplicates = 0
    failures: dict[str, int] = {}
    while (started := time.time()) < args.measure_until:
        body = bodies.body()
        try:
            status, reply = post(args.port, head_template % len(body), body)
        except OSError as exc:
            status, reply = 0, str(exc).encode()
        finished = time.time()
        if started < args.measure_from:
            continue
        if status == 202:
            result = json.loads(reply)
            accepted += result["accepted"]
            duplicates += result["duplicates"]
            latencies_ms.append((finished - started) * 1000)
        else:
            failure = f"{status} {reply[:200].decode(errors='replace')}"
            failures[failure] = failures.get(failure, 0) + 1
    json.dump(
        {"accepted": accepted, "duplicates": duplicates, "latencies_ms": latencies_ms, "failures": failures},
        sys.stdout,
    )


if __name__ == "__main__":
    main()
