"""PostgreSQL away: the API answers 503 with Retry-After and its usual JSON error, clients back off
and resend, and a resent batch counts once. The database goes away for real: a gunicorn server
reaches PostgreSQL through a TCP proxy the test cuts (connections dropped, new ones refused)."""
from __future__ import annotations

import json

import httpx
import pytest
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.utils import ConnectionHandler
from django.test import Client, RequestFactory

import tokensite_client as ts
from apps.accounts.models import Team
from apps.accounts.services import api_key_create
from apps.core.middleware import DatabaseUnavailableMiddleware
from apps.core.outages import database_unavailable
from apps.ingestion.models import RawEvent
from apps.metrics.selectors import session_metadata
from tests.conftest import post_events, usage_event
from tests.core.servers import CuttableProxy, TokenSiteServer, free_port
from tests.otlp.payloads import genai_log, logs_request, otlp_json

DATABASE_UNAVAILABLE = "database_unavailable"


def numbered_events(session_id: str, start: int, count: int) -> list[dict]:
    return [usage_event(session_id=session_id, input_tokens=100 + index, output_tokens=index)
            for index in range(start, start + count)]


def total_tokens(events: list[dict]) -> int:
    return sum(e["input_tokens"] + e["output_tokens"] for e in events)


def assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == DATABASE_UNAVAILABLE
    assert body["error"]["message"]


# What counts as "unavailable": real errors from real failures, no server needed.

def test_a_refused_postgres_connection_counts_as_unavailable(django_db_blocker):
    nobody_listens = {"ENGINE": "django.db.backends.postgresql", "NAME": "tokensite", "USER": "postgres",
                      "HOST": "127.0.0.1", "PORT": free_port()}  # fmt: skip
    handler = ConnectionHandler({"default": nobody_listens})
    with django_db_blocker.unblock(), pytest.raises(OperationalError) as refused:
        handler["default"].ensure_connection()
    assert database_unavailable(refused.value)


@pytest.mark.parametrize("path, content_type", [
    ("/otlp/v1/metrics", "application/json"),
    ("/api/v1/events", "application/json"),
    ("/acme/chatbot/", "text/html"),
])
def test_any_view_failing_for_want_of_the_database_answers_503(django_db_blocker, path, content_type):
    """The middleware's share: views outside DRF's handler, OTLP intake included, whatever it is built on."""
    nobody_listens = {"ENGINE": "django.db.backends.postgresql", "NAME": "tokensite", "USER": "postgres",
                      "HOST": "127.0.0.1", "PORT": free_port()}  # fmt: skip
    with django_db_blocker.unblock(), pytest.raises(OperationalError) as refused:
        ConnectionHandler({"default": nobody_listens})["default"].ensure_connection()
    middleware = DatabaseUnavailableMiddleware(lambda request: None)
    response = middleware.process_exception(RequestFactory().post(path), refused.value)
    assert (response.status_code, response["Content-Type"].split(";")[0]) == (503, content_type)
    assert int(response["Retry-After"]) >= 1
    if content_type == "application/json":
        assert json.loads(response.content)["error"]["code"] == DATABASE_UNAVAILABLE


def test_other_view_errors_are_left_alone():
    middleware = DatabaseUnavailableMiddleware(lambda request: None)
    assert middleware.process_exception(RequestFactory().get("/api/v1/usage"), ValueError("a bug")) is None


@pytest.mark.django_db
def test_a_wrong_query_is_not_unavailability():
    with pytest.raises(Exception) as missing_table, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table")
    assert not database_unavailable(missing_table.value)
    Team.objects.create(slug="taken", name="Taken")
    with pytest.raises(IntegrityError) as duplicate, transaction.atomic():
        Team.objects.create(slug="taken", name="Taken again")
    assert not database_unavailable(duplicate.value)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_read_only_database_after_a_failover_is_a_503_and_the_resend_is_stored(api_client, project, ingest_key):
    events = numbered_events("failover", 0, 3)
    with connection.cursor() as cursor:
        cursor.execute("SET default_transaction_read_only = on")  # what a demoted primary or a standby answers
    try:
        response = post_events(api_client, ingest_key, events)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET default_transaction_read_only = off")
    assert response.status_code == 503 and response.json()["error"]["code"] == DATABASE_UNAVAILABLE
    assert response["Retry-After"]
    assert post_events(api_client, ingest_key, events).json() == {"accepted": 3, "duplicates": 0, "rejected": []}


# A real server and a real outage.

@pytest.fixture(scope="module")
def proxied_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """gunicorn (in-process folding) whose every database connection goes through a cuttable proxy."""
    db = connection.settings_dict
    proxy = CuttableProxy((db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)))
    proxy.restore()
    server = TokenSiteServer(
        log_path=tmp_path_factory.mktemp("server") / "server.log",
        settings_module="tokensite.settings.test",
        database_url=f"postgres://{db['USER']}@127.0.0.1:{proxy.port}/{db['NAME']}",
    )
    server.start()
    yield server, proxy
    server.stop()
    proxy.cut()


@pytest.fixture
def outage(proxied_server):
    server, proxy = proxied_server
    yield server, proxy
    proxy.cut()  # whatever the test left, start the next one from a clean restore
    proxy.restore()


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_apis_answer_503_with_retry_after_while_postgres_is_away_and_a_resend_counts_once(outage, project, owner):
    server, proxy = outage
    ingest = {"Authorization": f"Bearer {api_key_create(project=project).plaintext}",
              "Content-Type": "application/json"}  # fmt: skip
    read = {"Authorization": f"Bearer {api_key_create(project=project, scope='read').plaintext}"}
    browser = Client()
    browser.force_login(owner)
    page_cookie = {"sessionid": browser.cookies["sessionid"].value}

    def post(events: list[dict]) -> httpx.Response:
        return httpx.post(f"{server.url}/api/v1/events", content=json.dumps({"events": events}), headers=ingest,
                          timeout=30)  # fmt: skip

    def post_otlp_logs() -> httpx.Response:
        """Two GenAI log records over OTLP/HTTP JSON, as an instrumented app's exporter sends them."""
        body = otlp_json(logs_request([genai_log(1), genai_log(2)]))
        return httpx.post(f"{server.url}/otlp/v1/logs", content=body, timeout=30,
                          headers={**ingest, "Content-Type": "application/json"})  # fmt: skip

    before = numbered_events("db-outage", 0, 20)
    assert post(before).status_code == 202

    proxy.cut()
    during = numbered_events("db-outage", 20, 20)
    assert_database_unavailable(post(during))
    assert_database_unavailable(httpx.get(f"{server.url}/api/v1/sessions", headers=read, timeout=30))
    metadata_url = f"{server.url}/api/v1/sessions/db-outage/metadata"
    assert_database_unavailable(httpx.get(metadata_url, headers=read, timeout=30))
    assert_database_unavailable(post_otlp_logs())
    page = httpx.get(f"{server.url}/", cookies=page_cookie, timeout=30)
    assert (page.status_code, page.headers["Content-Type"].split(";")[0]) == (503, "text/html")
    assert page.headers["Retry-After"]
    health = httpx.get(f"{server.url}/healthz", timeout=30)
    assert health.status_code == 503 and health.json()["database"] == "unavailable"

    proxy.restore()
    assert post(during).json() == {"accepted": 20, "duplicates": 0, "rejected": []}
    assert post_otlp_logs().headers["X-TokenSite-Events-Stored"] == "2"
    assert post_otlp_logs().headers["X-TokenSite-Events-Stored"] == "0"  # the exporter's resend counts once
    assert post(during).json() == {"accepted": 0, "duplicates": 20, "rejected": []}
    metadata = httpx.get(metadata_url, headers=read, timeout=30)
    assert metadata.status_code == 200
    assert metadata.json()["token_usage"]["total_tokens"] == total_tokens(before + during)

    # A fast restart between two requests: the next request reconnects instead of failing.
    proxy.cut()
    proxy.restore()
    after = numbered_events("db-outage", 40, 5)
    assert post(after).json() == {"accepted": 5, "duplicates": 0, "rejected": []}

    document = session_metadata(project=project, session_id="db-outage")
    assert document["calls"] == 45 and document["token_usage"]["total_tokens"] == total_tokens(before + during + after)
    assert RawEvent.objects.filter(project=project).count() == 45 + 2
    assert "Internal Server Error" not in server.log()


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_sdk_backs_off_on_503_and_delivers_every_event_once_postgres_is_back(outage, project, tmp_path):
    server, proxy = outage
    tracker = ts.Tracker(url=server.url, api_key=api_key_create(project=project).plaintext, session_id="sdk-outage",
                         spool_dir=tmp_path, flush_interval_s=0.2)  # fmt: skip
    try:
        for index in range(10):
            tracker.record_usage(model="gpt-4o", provider="openai", input_tokens=100 + index, output_tokens=index,
                                 duration_ms=50)  # fmt: skip
        assert tracker.flush(timeout=15)

        proxy.cut()
        for index in range(10, 25):
            tracker.record_usage(model="gpt-4o", provider="openai", input_tokens=100 + index, output_tokens=index,
                                 duration_ms=50)  # fmt: skip
        assert tracker.flush(timeout=3) is False
        stats = tracker.stats()
        assert stats.degraded and stats.spooled == 15
        assert f"HTTP 503: {DATABASE_UNAVAILABLE}" in stats.last_error

        proxy.restore()
        assert tracker.flush(timeout=15)
    finally:
        tracker.close(timeout=5)
    assert RawEvent.objects.filter(project=project, session_id="sdk-outage").count() == 25
    document = session_metadata(project=project, session_id="sdk-outage")
    assert document["token_usage"]["total_tokens"] == sum(100 + 2 * index for index in range(25))
