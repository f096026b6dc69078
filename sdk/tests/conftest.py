"""Fixtures of the SDK tests: loopback-only network, fake servers, trackers that close.

These tests never import Django; the repository's pytest.ini names a settings module
for the server's suite, which these tests ignore.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).parent))

from sdk_fakes import FakeAnthropicServer, FakeIngestServer, FakeOpenAIServer  # noqa: E402

import tokensite_client as ts  # noqa: E402


def _is_loopback(address: Any) -> bool:
    if isinstance(address, tuple):
        host = address[0]
    else:
        return True  # unix sockets
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every connection and name lookup that leaves the machine, so a test that
    passes proves the SDK (and litellm under it) works with the network absent."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        if not _is_loopback(address):
            raise OSError(f"test network guard: connection to {address!r} refused")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not _is_loopback(address):
            raise OSError(f"test network guard: connection to {address!r} refused")
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (None, "localhost") and not _is_loopback((host,)):
            raise socket.gaierror(f"test network guard: lookup of {host!r} refused")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def ingest() -> Iterator[FakeIngestServer]:
    server = FakeIngestServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    server = FakeOpenAIServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def anthropic_server() -> Iterator[FakeAnthropicServer]:
    server = FakeAnthropicServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_tracker(tmp_path: Path) -> Iterator[Any]:
    """Trackers pointed at a test server with a private spool, closed after the test."""
    made: list[ts.Tracker] = []

    def make(url: str | None, api_key: str = "tsk_test_secret", **options: Any) -> ts.Tracker:
        options.setdefault("spool_dir", tmp_path / "spool")
        options.setdefault("flush_interval_s", 0.05)
        tracker = ts.Tracker(url=url, api_key=api_key, **options)
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close(timeout=2)
