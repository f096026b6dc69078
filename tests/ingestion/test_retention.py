"""Retention of raw events: only folded events past a project's period go, aggregates stay, and a
late event for a pruned session adds exact sums with its bursts and concurrency marked approximate."""
from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from apps.accounts.services import member_add, project_get_or_create, project_retention_set
from apps.core.errors import BadRequest
from apps.ingestion.models import PendingEvent, RawEvent
from apps.ingestion.retention import raw_events_prune
from apps.ingestion.services import events_ingest
from apps.metrics.models import SessionAggregate
from tests.conftest import throttle_event, usage_event
from tests.metrics.test_fold import approx_document, snapshot
from tokensite.celery import app as celery_app
from tokensite.schedule import BEAT_SCHEDULE

pytestmark = pytest.mark.django_db(transaction=True)

OLD = timezone.now().replace(microsecond=0) - timedelta(days=40)


def ingest(project, events):
    return events_ingest(project=project, body=json.dumps({"events": events}).encode())


def calls_at(offsets_s: list[float], **fields) -> list[dict]:
    return [usage_event(timestamp=(OLD + timedelta(seconds=offset)).isoformat(), duration_ms=3000,
                        call_id=f"call-{offset}", **fields) for offset in offsets_s]  # fmt: skip


def assert_sums_exact_and_peaks_approximate(document: dict, exact: dict) -> None:
    """A session's metadata after a late event reached it with part of its history pruned, against
    the same session folded with its whole history: peaks marked approximate, and every sum exact
    (tokens, cost, calls, steps' and models' calls and tokens, throttle count and wait). Only where
    a wait is attributed may differ: with its linked call deleted, a late wait stays on its own
    step (a row with no call)."""
    assert document["peaks_approximate"] is True and exact["peaks_approximate"] is False
    for key in ("cost", "calls", "estimated_calls"):
        assert document[key] == approx_document(exact[key])
    for usage in (document["token_usage"], exact["token_usage"]):
        usage["breakdown_by_step"] = [{key: value for key, value in step.items() if key != "throttle_wait_ms"}
                                      for step in usage["breakdown_by_step"] if step["calls"]]  # fmt: skip
    assert document["token_usage"] == approx_document(exact["token_usage"])
    assert document["tokenMetrics"]["throttleWaitTimeMs"] == exact["tokenMetrics"]["throttleWaitTimeMs"]
    assert document["throttle"]["count"] == exact["throttle"]["count"]
    assert document["throttle"]["wait_ms"] == exact["throttle"]["wait_ms"]


def without_approximate(document: dict) -> dict:
    return {key: value for key, value in document.items() if key != "peaks_approximate"}


def test_prune_deletes_folded_events_past_retention_and_keeps_aggregates(team):
    pruned = project_get_or_create(team=team, slug="pruned")
    kept = project_get_or_create(team=team, slug="kept")
    project_retention_set(project=pruned, days=30)
    for project in (pruned, kept):
        ingest(project, [*calls_at([0, 1, 2]), usage_event(session_id="recent")])
    queued = calls_at([5], session_id="queued")
    ingest(pruned, queued)
    # An event still waiting for its fold (a quarantined session, a fold not run yet) is never deleted.
    queued_event = RawEvent.objects.get(project=pruned, session_id="queued")
    PendingEvent.objects.create(project=pruned, session_id="queued", raw_event=queued_event,
                                received_at=queued_event.received_at)  # fmt: skip
    before = snapshot(pruned, "session-1")

    assert raw_events_prune(batch_size=2) == 3
    assert sorted(RawEvent.objects.filter(project=pruned).values_list("session_id", flat=True)) == ["queued", "recent"]
    assert RawEvent.objects.filter(project=kept).count() == 4
    assert snapshot(pruned, "session-1") == before
    session = SessionAggregate.objects.get(project=pruned, session_id="session-1")
    assert session.raw_pruned_through == OLD + timedelta(seconds=2, milliseconds=3000)
    assert not session.peaks_approximate
    assert raw_events_prune() == 0


@pytest.mark.parametrize("late", [
    [usage_event(timestamp=(OLD + timedelta(seconds=1.5)).isoformat(), duration_ms=3000, input_tokens=7000)],
    [throttle_event(timestamp=(OLD + timedelta(seconds=1)).isoformat(), wait_ms=1500, call_id="call-1", step="other")],
    [usage_event(timestamp=(OLD + timedelta(seconds=1)).isoformat(), call_id="late", step="other"),
     throttle_event(timestamp=OLD.isoformat(), wait_ms=800, call_id="late", step="plan")],
])  # fmt: skip
def test_late_event_of_a_pruned_session_adds_exact_sums_and_marks_peaks_approximate(team, late):
    pruned = project_get_or_create(team=team, slug="pruned")
    reference = project_get_or_create(team=team, slug="reference")
    project_retention_set(project=pruned, days=30)
    history = [*calls_at([0, 1, 2]), throttle_event(timestamp=OLD.isoformat(), wait_ms=400, call_id="call-0")]
    for project in (pruned, reference):
        ingest(project, history)
    assert raw_events_prune() == len(history)

    for project in (pruned, reference):
        ingest(project, late)
    document, exact = snapshot(pruned, "session-1"), snapshot(reference, "session-1")
    assert_sums_exact_and_peaks_approximate(document, exact)
    session = SessionAggregate.objects.get(project=pruned, session_id="session-1")
    assert sum(session.steps.values_list("throttle_wait_us", flat=True)) == session.throttle_wait_us
    assert sum(session.models.values_list("throttle_wait_us", flat=True)) == session.throttle_wait_us
    # Peaks never drop below what was folded before the prune.
    assert document["bursts"]["1s"] <= exact["bursts"]["1s"] and document["peak_concurrency"] <= exact["peak_concurrency"]


def test_late_event_far_from_the_pruned_history_stays_exact(team):
    pruned = project_get_or_create(team=team, slug="pruned")
    reference = project_get_or_create(team=team, slug="reference")
    project_retention_set(project=pruned, days=30)
    for project in (pruned, reference):
        ingest(project, calls_at([0, 1, 2]))
    raw_events_prune()
    for project in (pruned, reference):
        ingest(project, calls_at([600, 601]))
    assert snapshot(pruned, "session-1") == approx_document(snapshot(reference, "session-1"))


def test_approximate_peaks_are_shown_on_the_page_and_in_both_downloads(team, project):
    owner = member_add(team=team, username="olivia", password="pw-olivia-123", role="owner").user
    project_retention_set(project=project, days=30)
    ingest(project, calls_at([0, 1, 2]))
    raw_events_prune()
    client = Client()
    client.force_login(owner)
    base = f"/{team.slug}/{project.slug}/sessions/session-1/"
    assert "Bursts, peak concurrency and throttle share are approximate" not in client.get(base).content.decode()
    ingest(project, calls_at([1.5]))

    assert "Bursts, peak concurrency and throttle share are approximate" in client.get(base).content.decode()
    assert json.loads(client.get(base + "metadata.json").content)["peaks_approximate"] is True
    rows = list(csv.reader(io.StringIO(b"".join(client.get(base + "calls.csv").streaming_content).decode())))
    assert rows[0][-2:] == ["session_raw_pruned_through", "session_peaks_approximate"]
    assert len(rows) == 2 and rows[1][-1] == "true"
    assert rows[1][-2] == (OLD + timedelta(seconds=5)).isoformat().replace("+00:00", "Z")


def test_owners_and_admins_set_retention_on_the_settings_page(team, project):
    owner = member_add(team=team, username="olivia", password="pw-olivia-123", role="owner").user
    member = member_add(team=team, username="mike", password="pw-mike-12345", role="member").user
    url = f"/{team.slug}/{project.slug}/settings/"
    client = Client()
    client.force_login(member)
    assert client.post(url, {"action": "retention", "raw_events_retention_days": "30"}).status_code == 403
    client.force_login(owner)
    assert client.post(url, {"action": "retention", "raw_events_retention_days": "0"}).status_code == 400
    assert client.post(url, {"action": "retention", "raw_events_retention_days": "30"}).status_code == 302
    project.refresh_from_db()
    assert project.raw_events_retention_days == 30
    assert "older than <b>30 days</b>" in client.get(url).content.decode()
    assert client.post(url, {"action": "retention", "raw_events_retention_days": ""}).status_code == 302
    project.refresh_from_db()
    assert project.raw_events_retention_days is None


def test_retention_out_of_range_is_refused(project):
    with pytest.raises(BadRequest):
        project_retention_set(project=project, days=0)


def test_the_command_and_the_daily_job_prune(project):
    project_retention_set(project=project, days=30)
    ingest(project, calls_at([0]))
    out = io.StringIO()
    call_command("raw_events_prune", stdout=out)
    assert "Deleted 1 raw events" in out.getvalue()
    entry = BEAT_SCHEDULE["ingestion-raw-events-prune"]
    celery_app.autodiscover_tasks(force=True)  # what a starting worker and beat do
    assert entry["task"] == "apps.ingestion.tasks.raw_events_prune" and entry["task"] in celery_app.tasks
