"""A fresh gunicorn worker's first request, with and without the project's gunicorn.conf.py.

    .venv/bin/python benchmarks/first_request.py            # three starts each (~3 min)
    .venv/bin/python benchmarks/first_request.py --quick    # one start each, for CI (~1 min)

Each start is one sync worker on a scratch SQLite database with tasks in-process (no REDIS_URL),
`tokensite.settings.production`, from the project folder. "without" passes an empty config file,
as gunicorn ran before gunicorn.conf.py existed. The script waits until the worker has booted
and the machine has had `--settle` seconds to finish loading it, then times the first
`POST /api/v1/events` of one valid event (the fold it triggers runs inside the request), then a
second one.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one start per configuration, for CI")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds between worker boot and the request")
    args = parser.parse_args()
    starts = 1 if args.quick else 3
    with tempfile.TemporaryDirectory(prefix="tokensite-first-request-") as folder:
        env = _environment(Path(folder))
        key = _database_with_key(env)
        empty_config = Path(folder) / "empty.conf.py"
        empty_config.write_text("")
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        configurations = [("without gunicorn.conf.py", ["--config", str(empty_config)]), ("with gunicorn.conf.py", [])]
        for label, config in configurations:
            for _ in range(starts):
                first_s, second_s = _one_start(env, key, config, settle_s=args.settle, log_path=Path(folder) / "log")
                print(f"{label:26} first request {first_s:6.3f} s   second {second_s:6.3f} s")


def _environment(folder: Path) -> dict[str, str]:
    # Plain HTTP on loopback with no TLS proxy in front: no redirect to HTTPS (README "Deploying").
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tokensite.settings.production", "SECRET_KEY": "b" * 50,
           "SECURE_SSL_REDIRECT": "False", "ALLOWED_HOSTS": "127.0.0.1", "DATABASE_URL": f"sqlite:///{folder}/db.sqlite3", "LOG_LEVEL": "WARNING",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "sdk"), str(REPO_ROOT)])}  # fmt: skip
    env.pop("REDIS_URL", None)
    return env


def _database_with_key(env: dict[str, str]) -> str:
    manage = [sys.executable, str(REPO_ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, cwd=REPO_ROOT, check=True)
    created = subprocess.run([*manage, "create_api_key", "--team", "bench", "--project", "first"], env=env,
                             cwd=REPO_ROOT, check=True, capture_output=True, text=True)  # fmt: skip
    return created.stdout.strip().splitlines()[-1]


def _one_start(env: dict[str, str], key: str, config: list[str], *, settle_s: float, log_path: Path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "tokensite.wsgi", *config, "--workers", "1", "--bind",
             f"127.0.0.1:{port}", "--no-control-socket"],
            env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while "Booting worker" not in log_path.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gunicorn did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        time.sleep(settle_s)
        return _post(port, key), _post(port, key)
    finally:
        process.terminate()
        process.wait(30)


def _post(port: int, key: str) -> float:
    event = {"event_id": str(uuid.uuid4()), "type": "usage", "session_id": "s", "provider": "openai",
             "model": "gpt-4o", "timestamp": "2026-11-20T09:00:00Z", "duration_ms": 100, "input_tokens": 10,
             "output_tokens": 5}  # fmt: skip
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.monotonic()
    connection.request("POST", "/api/v1/events", json.dumps({"events": [event]}),
                       {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})  # fmt: skip
    response = connection.getresponse()
    response.read()
    elapsed = time.monotonic() - started
    connection.close()
    if response.status != 202:
        raise SystemExit(f"POST /api/v1/events answered {response.status}")
    return elapsed


if __name__ == "__main__":
    main()
