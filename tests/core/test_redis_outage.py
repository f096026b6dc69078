"""Redis down (as cache and as broker): the API keeps answering, stores every event, and the
sweep folds them exactly once Redis is back. Redis here is always a server the test owns."""
from __future__ import annotations

import json
import logging
import shutil
import time
from datetime import timedelta

import httpx
import pytest
import redis
from django.db import connection

from apps.accounts.services import api_key_create
from apps.core.outages import OUTAGES
from apps.ingestion.models import RawEvent
from apps.metrics import services
from apps.metrics.selectors import session_metadata
from tests.conftest import pending_count, post_events, usage_event
from tests.core.servers import OwnRedis, TokenSiteServer

requires_redis_server = pytest.mark.skipif(not shutil.which("redis-server"), reason="needs the redis-server binary")
pytestmark = requires_redis_server


@pytest.fixture
def own_redis(tmp_path):
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def redis_cache(url: str) -> dict:
    return {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url,
                        "OPTIONS": {"socket_connect_timeout": 0.3, "socket_timeout": 0.5}}}  # fmt: skip


def numbered_events(session_id: str, start: int, count: int) -> list[dict]:
    return [usage_event(session_id=session_id, input_tokens=100 + index, output_tokens=index)
            for index in range(start, start + count)]


def total_tokens(events: list[dict]) -> int:
    return sum(e["input_tokens"] + e["output_tokens"] for e in events)


@pytest.mark.django_db(transaction=True)
def test_api_answers_and_stores_events_while_the_rate_limit_cache_is_down(
    api_client, project, ingest_key, read_key, own_redis, settings, caplog
):
    settings.CACHES = redis_cache(own_redis.url)
    sent = numbered_events("cache-outage", 0, 3)
    assert post_events(api_client, ingest_key, sent).status_code == 202

    own_redis.stop()
    caplog.set_level(logging.WARNING, logger="apps.core.outages")
    for batch in range(5):
        events = numbered_events("cache-outage", 3 + 3 * batch, 3)
        response = post_events(api_client, ingest_key, events)
        assert response.status_code == 202, response.content
        assert response.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
        sent += events
    listing = api_client.get("/api/v1/sessions", HTTP_AUTHORIZATION=f"Bearer {read_key}")
    assert listing.status_code == 200

    assert RawEvent.objects.filter(project=project).count() == len(sent) == 18
    limiter = OUTAGES["rate_limit_cache"]
    assert limiter.fallbacks == 6  # five posts and one read, each let through and counted
    warnings = [r for r in caplog.records if "rate limit's cache" in r.getMessage()]
    assert len(warnings) == 1, "one warning per outage, not one per request"

    own_redis.start()
    services.unprocessed_sweep(min_age=timedelta(0))
    assert pending_count(project=project) == 0
    document = session_metadata(project=project, session_id="cache-outage")
    assert document["calls"] == 18 and document["token_usage"]["total_tokens"] == total_tokens(sent)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_server_keeps_ingesting_through_a_redis_outage_and_folds_exactly_after(project, own_redis, tmp_path):
    """A real gunicorn with REDIS_URL at the test's Redis: Redis hung, then killed, then back."""
    db = connection.settings_dict
    server = TokenSiteServer(
        log_path=tmp_path / "server.log",
        settings_module="tokensite.settings.worker_test",  # publishes fold tasks to the broker
        database_url=f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        redis_url=own_redis.url,
    )
    ingest_key = api_key_create(project=project).plaintext
    read_key = api_key_create(project=project, scope="read").plaintext
    broker = redis.Redis.from_url(own_redis.url)
    sent: list[dict] = []
    latencies_s: dict[str, list[float]] = {"up": [], "hung": [], "down": [], "back": []}

    def post(phase: str, count: int = 5) -> httpx.Response:
        events = numbered_events("redis-outage", len(sent), count)
        started = time.monotonic()
        response = httpx.post(f"{server.url}/api/v1/events", content=json.dumps({"events": events}), timeout=30,
                              headers={"Authorization": f"Bearer {ingest_key}", "Content-Type": "application/json"})
        latencies_s[phase].append(time.monotonic() - started)
        assert response.status_code == 202, (phase, response.status_code, response.text)
        assert response.json()["accepted"] == count
        sent.extend(events)
        return response

    server.start()
    try:
        for _ in range(3):
            post("up")
        assert broker.llen("celery") >= 1  # fold tasks published while Redis is up

        own_redis.hang()  # accepts connections, never answers: the worst case for timeouts
        for _ in range(5):
            post("hung")
        own_redis.stop()  # refuses connections
        for _ in range(5):
            post("down")
        reads = httpx.get(f"{server.url}/api/v1/sessions", headers={"Authorization": f"Bearer {read_key}"}, timeout=30)
        assert reads.status_code == 200
        health = httpx.get(f"{server.url}/healthz", timeout=30)
        assert health.status_code == 200
        report = health.json()
        assert (report["status"], report["database"], report["cache"], report["broker"]) == (
            "degraded", "ok", "unavailable", "unavailable")
        assert report["fallbacks"]["rate_limit_cache"]["fallbacks"] == 11  # 10 posts and 1 read
        assert report["fallbacks"]["fold_publish"]["failures"] >= 1

        own_redis.start()  # empty: the tasks queued before the outage are gone with it
        broker = redis.Redis.from_url(own_redis.url)
        # Within a few seconds of Redis answering again (the fallback pause), requests publish again.
        deadline = time.monotonic() + 15
        while not broker.llen("celery"):
            assert time.monotonic() < deadline, "no fold task was published after Redis came back"
            post("back", count=1)
            time.sleep(0.5)
        assert any(b"ratelimit" in key for key in broker.keys("*")), "the limit counts again"
    finally:
        server.stop()
        own_redis.stop()
    log = server.log()
    assert "Internal Server Error" not in log and "Traceback" not in log, log
    assert log.count("rate limit's cache (Redis) is unavailable") == 1, log

    assert RawEvent.objects.filter(project=project).count() == len(sent)
    services.unprocessed_sweep(min_age=timedelta(0))  # the beat sweep's work
    assert pending_count(project=project) == 0
    document = session_metadata(project=project, session_id="redis-outage")
    assert document["calls"] == len(sent) and document["token_usage"]["total_tokens"] == total_tokens(sent)
    print("request latency (s) by Redis state:",
          {phase: [round(s, 3) for s in values] for phase, values in latencies_s.items()})  # fmt: skip
    assert max(latencies_s["down"]) < 1.0 and max(latencies_s["hung"]) < 4.0
