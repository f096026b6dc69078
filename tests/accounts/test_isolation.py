"""A key of one team can never see or write another team's data."""
import pytest

from apps.accounts.services import api_key_create
from apps.ingestion.models import RawEvent
from tests.conftest import post_events, usage_event

pytestmark = pytest.mark.django_db


def test_events_land_in_the_keys_own_project_only(api_client, ingest_key, project, other_team_project):
    other_key = api_key_create(project=other_team_project).plaintext
    post_events(api_client, ingest_key, [usage_event(session_id="mine")])
    post_events(api_client, other_key, [usage_event(session_id="theirs")])
    assert list(RawEvent.objects.filter(project=project).values_list("session_id", flat=True)) == ["mine"]
    assert list(RawEvent.objects.filter(project=other_team_project).values_list("session_id", flat=True)) == ["theirs"]


def test_a_key_cannot_read_another_teams_session(api_client, ingest_key, project, other_team_project):
    post_events(api_client, ingest_key, [usage_event(session_id="secret-session")])
    other_read_key = api_key_create(project=other_team_project, scope="read").plaintext
    response = api_client.get(
        "/api/v1/sessions/secret-session/metadata", HTTP_AUTHORIZATION=f"Bearer {other_read_key}"
    )
    assert response.status_code == 404
    response = api_client.get("/api/v1/sessions", HTTP_AUTHORIZATION=f"Bearer {other_read_key}")
    assert response.status_code == 200 and response.json()["results"] == []
