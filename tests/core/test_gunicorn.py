"""gunicorn with the project's gunicorn.conf.py: a warm first request, and the documented answers at each limit."""
from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """One gunicorn worker on SQLite, tasks in-process, started from the project folder as the README says."""
    # Plain HTTP on loopback with no TLS proxy in front: no redirect to HTTPS (README "Deploying").
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tokensite.settings.production", "SECRET_KEY": "s" * 50,
           "SECURE_SSL_REDIRECT": "False", "ALLOWED_HOSTS": "127.0.0.1", "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "sdk"), str(ROOT)])}  # fmt: skip
    env.pop("REDIS_URL", None)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, cwd=ROOT, check=True, timeout=300)
    created = subprocess.run([*manage, "create_api_key", "--team", "t", "--project", "p"], env=env, cwd=ROOT,
                             check=True, timeout=120, capture_output=True, text=True)  # fmt: skip
    key = created.stdout.strip().splitlines()[-1]
    port = _free_port()
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "tokensite.wsgi", "--workers", "1", "--bind", f"127.0.0.1:{port}",
             "--no-control-socket"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while "Booting worker" not in log_path.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield port, key, log_path
    finally:
        process.terminate()
        process.wait(30)


def _request(port: int, method: str, target: str, body: bytes | None = None, headers: dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, target, body, headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def test_a_fresh_workers_first_request_is_fast_and_limits_answer_as_documented(server):
    port, key, log_path = server
    assert "Application warmed up" in log_path.read_text()
    assert "warm-up objects out of garbage collection" in log_path.read_text()
    event = {"event_id": str(uuid.uuid4()), "type": "usage", "session_id": "s", "provider": "openai",
             "model": "gpt-4o", "timestamp": "2026-11-20T09:00:00Z", "duration_ms": 100, "input_tokens": 10,
             "output_tokens": 5}  # fmt: skip
    started = time.monotonic()
    status, _, body = _request(port, "POST", "/api/v1/events", json.dumps({"events": [event]}).encode(),
                               {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})  # fmt: skip
    first_request_s = time.monotonic() - started
    assert status == 202, body
    # Cold, this request imports litellm and loads the fold's kernels: 2.9 s on a quiet CI host,
    # 4.5-11 s on a loaded one (BENCHMARKS.md). Warm, 0.1-0.4 s, and 1.3 s seen once under load.
    assert first_request_s < 2.0, f"first request took {first_request_s:.2f} s"

    # Past the application's limits, below gunicorn's: the application's JSON.
    status, content_type, body = _request(port, "GET", "/api/v1/sessions?q=" + "x" * 5000)
    assert (status, content_type, json.loads(body)["error"]["code"]) == (414, "application/json", "uri_too_long")
    status, content_type, body = _request(port, "GET", "/api/v1/sessions", headers={"X-Big": "x" * 10_000})
    assert (status, content_type, json.loads(body)["error"]["code"]) == (431, "application/json",
                                                                         "header_fields_too_large")  # fmt: skip
    # Past gunicorn's hard limits: its own HTML page, as the README documents.
    status, content_type, _ = _request(port, "GET", "/api/v1/sessions?q=" + "x" * 9000)
    assert (status, content_type) == (414, "text/html")
    status, content_type, _ = _request(port, "GET", "/api/v1/sessions", headers={"X-Big": "x" * 20_000})
    assert (status, content_type) == (431, "text/html")
