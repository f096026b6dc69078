"""Delivery: batching, gzip and auth, server replies, the spool, exactly-once replay,
bounded buffers, many threads, fork safety and a close() that never hangs."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sdk_fakes import BlackholeServer, FakeIngestServer, free_port

import tokensite_client as ts


def record(tracker: ts.Tracker, count: int, **overrides: Any) -> list[str]:
    arguments = {"model": "gpt-4o", "provider": "openai", "input_tokens": 10, "output_tokens": 5,
                 "duration_ms": 20, **overrides}
    return [tracker.record_usage(**arguments) for _ in range(count)]


def wait_until(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_batches_are_gzip_authenticated_and_at_most_1000_events(make_tracker: Any,
                                                                 ingest: FakeIngestServer) -> None:
    tracker = make_tracker(ingest.url, flush_interval_s=10)
    ids = record(tracker, 2500)
    assert tracker.flush(10)
    assert set(ingest.stored) == set(ids)
    assert all(len(request.events) <= 1000 for request in ingest.requests)
    assert all(request.headers["Content-Encoding"] == "gzip" for request in ingest.requests)
    assert all(request.headers["Authorization"] == "Bearer tsk_test_secret" for request in ingest.requests)


def test_sender_sends_early_once_500_events_wait(make_tracker: Any, ingest: FakeIngestServer) -> None:
    tracker = make_tracker(ingest.url, flush_interval_s=30)
    record(tracker, 600)
    wait_until(lambda: len(ingest.stored) >= 500, timeout_s=3)


def test_per_event_rejections_are_dropped_counted_and_logged_once_per_kind(
        make_tracker: Any, ingest: FakeIngestServer, caplog: pytest.LogCaptureFixture) -> None:
    ingest.reject = lambda event: ({"model": ["unknown model family"]} if event["model"] == "bad" else None)
    tracker = make_tracker(ingest.url)
    good = record(tracker, 3)
    record(tracker, 4, model="bad")
    with caplog.at_level(logging.ERROR, logger="tokensite_client"):
        assert tracker.flush(5)
        record(tracker, 2, model="bad")
        assert tracker.flush(5)
    assert set(ingest.stored) == set(good)
    stats = tracker.stats()
    assert (stats.sent, stats.rejected) == (3, 6)
    assert sum("unknown model family" in r.getMessage() for r in caplog.records) == 1


# 429: the key's rate limit; 503: what TokenSite answers while its database is away.
@pytest.mark.parametrize(("status", "code"), [(429, "rate_limited"), (503, "database_unavailable")])
def test_a_refusal_from_tokensite_waits_its_retry_after(make_tracker: Any, ingest: FakeIngestServer, status: int,
                                                        code: str) -> None:
    replies = [(status, {"error": {"code": code, "message": "resend"}}, {"Retry-After": "0.3"})]
    ingest.responder = lambda events: replies.pop(0) if replies else None
    tracker = make_tracker(ingest.url)
    ids = record(tracker, 5)
    assert tracker.flush(5)
    assert set(ingest.stored) == set(ids)
    first, second = ingest.requests[0], ingest.requests[1]
    assert second.received_at - first.received_at >= 0.3


def test_server_errors_are_retried_with_backoff(make_tracker: Any, ingest: FakeIngestServer) -> None:
    replies = [(503, {"error": {"code": "unavailable", "message": "db"}}, {}),
               (500, {"error": {"code": "internal", "message": "oops"}}, {})]
    ingest.responder = lambda events: replies.pop(0) if replies else None
    tracker = make_tracker(ingest.url)
    ids = record(tracker, 5)
    assert tracker.flush(5)
    assert set(ingest.stored) == set(ids) and len(ingest.requests) == 3
    assert tracker.stats().spooled == 0


def test_events_survive_an_outage_and_arrive_exactly_once(make_tracker: Any, tmp_path: Path) -> None:
    port = free_port()
    spool_dir = tmp_path / "outage"
    first = make_tracker(f"http://127.0.0.1:{port}", spool_dir=spool_dir)
    ids = record(first, 300)
    assert first.flush(1) is False  # server away: the events are on disk, not delivered
    stats = first.stats()
    assert (stats.spooled, stats.dropped, stats.degraded) == (300, 0, True)
    first.close(timeout=2)
    assert any(spool_dir.iterdir())

    server = FakeIngestServer(port=port)
    server.start()
    try:
        second = make_tracker(server.url, spool_dir=spool_dir)
        later = record(second, 20)
        assert second.flush(5)
        assert set(server.stored) == set(ids) | set(later)
        assert sorted(server.posted_ids) == sorted(set(server.posted_ids))  # nothing sent twice
        assert second.stats().replayed >= 300  # its own new events queue behind the replay
        assert not [p for p in spool_dir.iterdir() if p.stat().st_size]
    finally:
        server.stop()


def test_the_same_tracker_resumes_when_the_server_comes_back(make_tracker: Any) -> None:
    port = free_port()
    tracker = make_tracker(f"http://127.0.0.1:{port}")
    before = record(tracker, 50)
    assert tracker.flush(1) is False
    server = FakeIngestServer(port=port)
    server.start()
    try:
        after = record(tracker, 50)
        assert tracker.flush(5)
        assert set(server.stored) == set(before) | set(after)
        assert tracker.stats().degraded is False
    finally:
        server.stop()


def test_replayed_events_already_stored_are_not_counted_twice(make_tracker: Any, tmp_path: Path,
                                                              ingest: FakeIngestServer) -> None:
    """A crash after the server stored a batch but before the spool was trimmed resends it."""
    spool_dir = tmp_path / "crash"
    spool_dir.mkdir()
    event = {"event_id": "6f1c1f9e-4a67-4a0e-9d6c-3e5d1c0b7a11", "type": "usage", "session_id": "s",
             "step": "default", "provider": "openai", "model": "gpt-4o",
             "timestamp": "2026-01-01T00:00:00+00:00", "duration_ms": 1, "input_tokens": 1, "output_tokens": 1}
    ingest.stored[event["event_id"]] = event
    import json
    (spool_dir / "00000000000000000001-1-aaaa.jsonl").write_bytes(
        json.dumps(event).encode() + b"\n" + b'{"event_id": "torn li')
    tracker = make_tracker(ingest.url, spool_dir=spool_dir)
    assert tracker.flush(5)
    stats = tracker.stats()
    assert (stats.duplicates, stats.sent, len(ingest.stored)) == (1, 0, 1)
    assert not list(spool_dir.glob("*.jsonl"))


def test_a_refused_key_keeps_events_on_disk(make_tracker: Any, ingest: FakeIngestServer, tmp_path: Path) -> None:
    tracker = make_tracker(ingest.url, api_key="tsk_wrong_key")
    record(tracker, 10)
    assert tracker.flush(3) is False
    tracker.close(timeout=1)
    assert tracker.stats().spooled == 10 and tracker.stats().rejected == 0


def test_full_queue_drops_are_counted(make_tracker: Any, ingest: FakeIngestServer) -> None:
    tracker = make_tracker(ingest.url, max_queue=100, batch_trigger=10**9, flush_interval_s=60)
    record(tracker, 150)
    stats = tracker.stats()
    assert (stats.recorded, stats.queued, stats.dropped_queue_full, stats.dropped) == (150, 100, 50, 50)
    assert tracker.flush(5)
    assert len(ingest.stored) == 100


def test_full_spool_drops_are_counted(make_tracker: Any) -> None:
    tracker = make_tracker(f"http://127.0.0.1:{free_port()}", spool_max_bytes=20_000)
    record(tracker, 200)
    tracker.flush(1)
    stats = tracker.stats()
    assert stats.spooled + stats.dropped_spool_full == 200
    assert stats.dropped_spool_full > 0 and stats.spool_bytes <= 20_000


def test_many_threads_recording_at_once_lose_nothing(make_tracker: Any, ingest: FakeIngestServer) -> None:
    tracker = make_tracker(ingest.url)
    threads_count, per_thread = 8, 1500
    barrier = threading.Barrier(threads_count)

    def worker(index: int) -> None:
        barrier.wait()
        with tracker.step(f"worker-{index % 2}"):
            for n in range(per_thread):
                tracker.record_usage(model="gpt-4o", provider="openai", input_tokens=n % 7 + 1,
                                     output_tokens=index + 1, duration_ms=1)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tracker.flush(15)
    expected_input = threads_count * sum(n % 7 + 1 for n in range(per_thread))
    expected_output = per_thread * sum(i + 1 for i in range(threads_count))
    assert len(ingest.stored) == threads_count * per_thread
    assert sum(e["input_tokens"] for e in ingest.stored.values()) == expected_input
    totals = tracker.summary()
    assert sum(u.input_tokens for u in totals) == expected_input
    assert sum(u.output_tokens for u in totals) == expected_output
    assert sum(u.calls for u in totals) == threads_count * per_thread


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_its_own_sender_and_queue(make_tracker: Any, ingest: FakeIngestServer) -> None:
    tracker = make_tracker(ingest.url, flush_interval_s=60, batch_trigger=10**9)
    parent_ids = record(tracker, 30, model="parent")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: record, deliver, report, leave without pytest's teardown
        try:
            os.close(read_end)
            record(tracker, 20, model="child")
            delivered = tracker.flush(5)
            os.write(write_end, f"{delivered},{tracker.stats().recorded}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    report = os.read(read_end, 100).decode()
    os.waitpid(pid, 0)
    assert report == "True,20"
    assert tracker.flush(5)
    models = [event["model"] for event in ingest.stored.values()]
    assert models.count("parent") == 30 and models.count("child") == 20
    assert set(parent_ids) <= set(ingest.stored)
    assert sorted(ingest.posted_ids) == sorted(set(ingest.posted_ids))


def test_close_returns_quickly_when_the_server_refuses_connections(make_tracker: Any) -> None:
    tracker = make_tracker(f"http://127.0.0.1:{free_port()}")
    record(tracker, 100)
    started = time.monotonic()
    tracker.close(timeout=2)
    assert time.monotonic() - started < 2.5
    assert tracker.stats().spooled == 100


def test_close_is_bounded_when_the_server_hangs_and_nothing_is_lost(make_tracker: Any, tmp_path: Path) -> None:
    hole = BlackholeServer()
    spool_dir = tmp_path / "hang"
    try:
        tracker = make_tracker(hole.url, spool_dir=spool_dir, timeout_s=30)
        ids = record(tracker, 40)
        started = time.monotonic()
        tracker.close(timeout=1)
        assert time.monotonic() - started < 1.5
    finally:
        hole.stop()
    server = FakeIngestServer()
    server.start()
    try:
        replayer = make_tracker(server.url, spool_dir=spool_dir)
        assert replayer.flush(5)
        assert set(server.stored) == set(ids)
    finally:
        server.stop()


def test_recording_after_close_is_counted_as_dropped(make_tracker: Any, ingest: FakeIngestServer) -> None:
    tracker = make_tracker(ingest.url)
    tracker.close(timeout=1)
    record(tracker, 3)
    assert tracker.stats().dropped_after_close == 3


def test_close_runs_at_interpreter_exit(ingest: FakeIngestServer, tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import tokensite_client as ts\n"
        f"t = ts.Tracker(url={ingest.url!r}, api_key='tsk_test_secret', spool_dir={str(tmp_path)!r}, "
        "flush_interval_s=60)\n"
        "for _ in range(7): t.record_usage(model='m', provider='p', input_tokens=1, output_tokens=1, duration_ms=1)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    assert len(ingest.stored) == 7


def test_flush_keeps_probing_until_the_server_answers_within_its_timeout(make_tracker: Any) -> None:
    port = free_port()
    tracker = make_tracker(f"http://127.0.0.1:{port}")
    ids = record(tracker, 30)
    server = FakeIngestServer(port=port)
    # The server comes up after the first rounds have failed, well inside flush's timeout.
    starter = threading.Timer(1.0, server.start)
    starter.start()
    try:
        started = time.monotonic()
        assert tracker.flush(8)
        assert 1.0 <= time.monotonic() - started < 8
        assert set(server.stored) == set(ids)
    finally:
        starter.join()
        server.stop()


def test_flush_gives_up_only_when_its_timeout_is_spent(make_tracker: Any) -> None:
    tracker = make_tracker(f"http://127.0.0.1:{free_port()}")
    record(tracker, 5)
    started = time.monotonic()
    assert tracker.flush(1.5) is False
    assert 1.4 <= time.monotonic() - started < 3


def test_flush_does_not_retry_before_a_retry_after_past_its_timeout(make_tracker: Any,
                                                                    ingest: FakeIngestServer) -> None:
    ingest.responder = lambda events: (429, {"error": {"code": "rate_limited", "message": "later"}},
                                       {"Retry-After": "30"})  # fmt: skip
    tracker = make_tracker(ingest.url)
    record(tracker, 5)
    started = time.monotonic()
    assert tracker.flush(10) is False
    assert time.monotonic() - started < 3
    assert len(ingest.requests) == 1


def test_last_error_clears_once_delivery_recovers(make_tracker: Any) -> None:
    port = free_port()
    tracker = make_tracker(f"http://127.0.0.1:{port}")
    record(tracker, 5)
    assert tracker.flush(0.5) is False
    assert tracker.stats().last_error is not None
    server = FakeIngestServer(port=port)
    server.start()
    try:
        record(tracker, 5)
        assert tracker.flush(5)
        assert tracker.stats().last_error is None
        assert len(server.stored) == 10
    finally:
        server.stop()
