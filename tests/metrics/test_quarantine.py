"""A session whose fold fails for good is quarantined; every other session, project and the sweep
go on folding, and an operator lists and releases quarantined sessions with `fold_quarantine`."""
from __future__ import annotations

import io
import json
import random
from datetime import timedelta

import pytest
from celery.exceptions import Retry
from django.core.management import call_command
from django.db import OperationalError, connection

from apps.accounts.services import project_get_or_create
from apps.ingestion.models import RawEvent
from apps.ingestion.services import events_ingest
from apps.metrics import folding, services
from apps.metrics.models import QuarantinedSession
from apps.metrics.tasks import project_fold
from tests.conftest import BASE_TIME, is_postgres, pending_count, usage_event
from tests.metrics.test_coalescing import store_without_folding
from tests.metrics.test_fold import approx_document, bucket_totals, random_session, snapshot

pytestmark = pytest.mark.django_db(transaction=True)

POISON_TIMESTAMP = "0001-01-01T00:00:00+14:00"  # a date BC in UTC


def ingest(project, events):
    return events_ingest(project=project, body=json.dumps({"events": events}).encode())


def poison_stored(event_id: str) -> None:
    """Give a stored event the timestamp a release without the range check accepted: year 1 at
    +14:00, a date BC in UTC. PostgreSQL stores it and the fold's datetimes cannot hold it; SQLite
    never stored one (its adapter failed at ingest), so there the row gets a year no datetime has."""
    table = connection.ops.quote_name(RawEvent._meta.db_table)
    with connection.cursor() as cursor:
        if is_postgres():
            cursor.execute(
                f"UPDATE {table} SET timestamp = %s::timestamptz, end_at = %s::timestamptz + interval '1 millisecond' "
                "WHERE event_id = %s",
                [POISON_TIMESTAMP, POISON_TIMESTAMP, event_id],
            )
        else:
            cursor.execute(
                f"UPDATE {table} SET timestamp = '0000-12-31 10:00:00', end_at = '0000-12-31 10:00:00.001' "
                "WHERE event_id = %s",
                [event_id.replace("-", "")],
            )
        assert cursor.rowcount == 1


def fold_quarantine(*args: str) -> str:
    out = io.StringIO()
    call_command("fold_quarantine", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("sessions_per_transaction", [500, 2])
def test_a_stored_poison_event_quarantines_its_session_and_everything_else_folds(
    team, monkeypatch, sessions_per_transaction, caplog
):
    # 2 sessions per transaction: several chunks, folded by two threads on PostgreSQL.
    monkeypatch.setattr(folding, "SESSIONS_PER_TRANSACTION", sessions_per_transaction)
    rng = random.Random(7)
    project = project_get_or_create(team=team, slug="poisoned")
    neighbour = project_get_or_create(team=team, slug="neighbour")
    reference = project_get_or_create(team=team, slug="reference")
    sessions = {session_id: random_session(rng, session_id, calls=15) for session_id in ("a", "m", "x", "z")}
    poison = usage_event(session_id="poison", duration_ms=1, input_tokens=1, output_tokens=1)
    poison_neighbour = usage_event(session_id="poison")
    store_without_folding(project, [*sessions["a"], *sessions["m"], poison, poison_neighbour, *sessions["z"]])
    poison_stored(poison["event_id"])
    store_without_folding(neighbour, sessions["x"])

    folded = project_fold.apply(args=[project.pk]).get()

    assert folded == len(sessions["a"]) + len(sessions["m"]) + len(sessions["z"])
    quarantined = QuarantinedSession.objects.get()
    assert (quarantined.project_id, quarantined.session_id) == (project.pk, "poison")
    assert quarantined.error.startswith("OverflowError" if is_postgres() else "ValueError")
    assert any(r.levelname == "ERROR" and "'poison'" in r.getMessage() for r in caplog.records)
    assert pending_count(project=project) == 2 == pending_count(project=project, session_id="poison")
    ingest(reference, [*sessions["a"], *sessions["m"], *sessions["z"]])
    for session_id in ("a", "m", "z"):
        assert snapshot(project, session_id) == approx_document(snapshot(reference, session_id))
    assert bucket_totals(project) == bucket_totals(reference)

    # Later events of the project fold as usual, the quarantined session's stay queued.
    later = [usage_event(session_id="a", timestamp="2026-11-20T10:00:00+00:00"), usage_event(session_id="poison")]
    ingest(project, later)
    ingest(reference, later[:1])
    assert snapshot(project, "a") == approx_document(snapshot(reference, "a"))
    assert pending_count(project=project) == 3 == pending_count(project=project, session_id="poison")

    # The sweep folds the other projects and skips the quarantined session.
    assert services.unprocessed_sweep(min_age=timedelta(0)) == len(sessions["x"])
    assert pending_count(project=neighbour) == 0

    listing = fold_quarantine()
    assert listing.startswith("1 quarantined session, 3 events not folded.")
    assert "acme/poisoned  poison  3 events" in listing and quarantined.error in listing

    # Once the bad row is dealt with, releasing the session folds it.
    RawEvent.objects.filter(event_id=poison["event_id"]).update(timestamp=BASE_TIME, end_at=BASE_TIME)
    assert "Released 1 session" in fold_quarantine("--release", "poison")
    assert pending_count() == 0 and not QuarantinedSession.objects.exists()
    assert session_metadata_calls(project, "poison") == 3
    assert fold_quarantine().startswith("0 quarantined sessions")


def session_metadata_calls(project, session_id: str) -> int:
    from apps.metrics.selectors import session_metadata

    return session_metadata(project=project, session_id=session_id)["calls"]


@pytest.mark.postgres
def test_a_sum_overflowing_its_column_quarantines_the_session_and_the_others_fold(project):
    # The step sums run while Python computes peaks (folding._overlapped): their error surfaces
    # later than the statement, and must still be the session's DataError, not a transient one.
    first = usage_event(session_id="huge", step="s", cache_read_tokens=100)
    store_without_folding(project, [first, usage_event(session_id="fine")])
    assert project_fold.apply(args=[project.pk]).get() == 2
    late = usage_event(session_id="huge", step="s", timestamp="2026-11-20T10:00:00+00:00")
    store_without_folding(project, [late, usage_event(session_id="fine", timestamp="2026-11-20T10:00:00+00:00")])
    # Not a token count the peaks read: only the sums' statements meet it.
    RawEvent.objects.filter(event_id=late["event_id"]).update(cache_read_tokens=2**63 - 1)

    assert project_fold.apply(args=[project.pk]).get() == 1
    quarantined = QuarantinedSession.objects.get()
    assert quarantined.session_id == "huge" and "out of range" in quarantined.error
    assert pending_count(project=project) == 1 == pending_count(project=project, session_id="huge")
    assert session_metadata_calls(project, "fine") == 2


def test_a_session_failing_again_after_release_is_quarantined_again(project):
    poison = usage_event(session_id="poison")
    store_without_folding(project, [poison, usage_event(session_id="fine")])
    poison_stored(poison["event_id"])
    assert project_fold.apply(args=[project.pk]).get() == 1
    assert fold_quarantine("--release-all").startswith("Released 1 session;")
    # The release asked for a fold, which fails the same way: back in quarantine, nothing else stuck.
    assert list(QuarantinedSession.objects.values_list("session_id", flat=True)) == ["poison"]
    assert pending_count() == 1


def test_releasing_an_unknown_session_is_an_error(project):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No quarantined session 'nope'"):
        fold_quarantine("--release", "nope")


def test_a_transient_database_error_reaches_the_task_and_quarantines_nothing(project, monkeypatch):
    store_without_folding(project, [usage_event()])

    def claim_fails(project_id, session_ids):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(folding, "_claim", claim_fails)
    with pytest.raises(Retry, match="OperationalError"):  # run in-process; a worker tries again later
        project_fold.apply(args=[project.pk])
    assert not QuarantinedSession.objects.exists()
    assert pending_count() == 1


def test_a_project_failing_in_the_sweep_does_not_stop_the_others(team, monkeypatch):
    failing = project_get_or_create(team=team, slug="failing")
    healthy = project_get_or_create(team=team, slug="healthy")
    store_without_folding(failing, [usage_event(session_id="f")])
    store_without_folding(healthy, [usage_event(session_id="h")])
    claim = folding._claim

    def claim_fails_for_one_project(project_id, session_ids):
        if project_id == failing.pk:
            raise OperationalError("could not serialize access")
        return claim(project_id, session_ids)

    monkeypatch.setattr(folding, "_claim", claim_fails_for_one_project)
    assert services.unprocessed_sweep(min_age=timedelta(0)) == 1
    assert pending_count(project=healthy) == 0 and pending_count(project=failing) == 1
    assert not QuarantinedSession.objects.exists(), "a transient error is not the session's fault"


def test_the_settings_page_counts_the_projects_quarantined_sessions(project, owner, client):
    poison = usage_event(session_id="poison")
    store_without_folding(project, [poison])
    poison_stored(poison["event_id"])
    client.force_login(owner)
    assert "quarantined" not in client.get("/acme/chatbot/settings/").content.decode()
    project_fold.apply(args=[project.pk])
    assert "1 session quarantined:" in client.get("/acme/chatbot/settings/").content.decode()


def test_a_drivers_own_connection_error_is_transient_and_its_data_error_is_not():
    import psycopg

    from apps.metrics.quarantine import fold_error_is_transient

    assert fold_error_is_transient(psycopg.OperationalError("terminating connection"))
    assert fold_error_is_transient(OperationalError("database is locked"))
    assert not fold_error_is_transient(psycopg.errors.NumericValueOutOfRange("bigint out of range"))
    assert not fold_error_is_transient(OverflowError("date value out of range"))
