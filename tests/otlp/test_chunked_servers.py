"""Chunked OTLP bodies without Content-Length (Gemini CLI, Qwen Code) under `make run`'s runserver
and under gunicorn: the whole body arrives, an oversized one is a 413, a malformed one a 400."""
from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.otlp.payloads import genai_span, traces_request

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_listening(port: int, process: subprocess.Popen, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stdout.read() if process.stdout else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


@pytest.fixture(scope="module")
def server_env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chunked")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tokensite.settings.local",
        "DATABASE_URL": f"sqlite:///{folder / 'db.sqlite3'}",
        "REDIS_URL": "",
        "DEBUG": "false",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'sdk'}",
    }
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput"], env=env, cwd=ROOT, check=True, capture_output=True)
    created = subprocess.run([*manage, "create_api_key", "--team", "acme", "--project", "agents"], env=env,
                             cwd=ROOT, check=True, capture_output=True, text=True)
    return env, created.stdout.strip().splitlines()[-1]


def _start(command: list[str], env: dict, port: int):
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_listening(port, process)
    return process


@pytest.fixture(scope="module", params=["runserver", "gunicorn"])
def server(request, server_env):
    env, key = server_env
    port = _free_port()
    if request.param == "runserver":
        command = [sys.executable, str(ROOT / "manage.py"), "runserver", "--noreload", f"127.0.0.1:{port}"]
    else:
        command = [sys.executable, "-m", "gunicorn", "tokensite.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1"]
    process = _start(command, env, port)
    yield port, key
    process.terminate()
    process.wait(timeout=10)


def _post_chunked(port: int, key: str, parts: list[bytes]) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    connection.request("POST", "/otlp/v1/traces", body=iter(parts), encode_chunked=True, headers={
        "Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}",
        "Transfer-Encoding": "chunked"})
    response = connection.getresponse()
    response.body = response.read()
    connection.close()
    return response


def test_chunked_body_without_content_length_is_read_whole(server):
    port, key = server
    spans = [genai_span(f"{index:016x}", trace_id=f"{port:08x}{'0' * 23}1") for index in range(1, 41)]
    body = traces_request(spans).SerializeToString()
    parts = [body[offset:offset + 1000] for offset in range(0, len(body), 1000)]
    response = _post_chunked(port, key, parts)
    assert response.status == 200, response.body
    assert response.getheader("X-TokenSite-Records-Used") == "40"


def test_oversized_chunked_body_is_413(server):
    port, key = server
    response = _post_chunked(port, key, [b"\x0a" * (1024 * 1024)] * 5)
    assert response.status == 413


def test_malformed_chunked_body_is_400_not_500(server):
    port, key = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(
            b"POST /otlp/v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n"
        )
        reply = raw.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400") or reply.startswith(b"HTTP/1.0 400"), reply[:200]
