"""NUL characters in a URL are a 400 before any view or query runs."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("url", [
    "/api/v1/sessions/%00/metadata",
    "/api/v1/sessions?search=%00",
    "/api/v1/usage?%00=day",
])
def test_api_url_with_nul_is_a_json_400(api_client, read_key, url):
    response = api_client.get(url, HTTP_AUTHORIZATION=f"Bearer {read_key}")
    assert response.status_code == 400
    assert response.json() == {"error": {"code": "malformed_url",
                                         "message": "The URL must not contain NUL (%00) characters."}}


def test_page_url_with_nul_is_a_plain_400(client, owner, team, project):
    client.force_login(owner)
    response = client.get(f"/{team.slug}/{project.slug}/sessions/s%00/")
    assert response.status_code == 400
    assert b"NUL" in response.content


def test_clean_urls_pass_through(api_client, read_key):
    response = api_client.get("/api/v1/sessions?search=abc", HTTP_AUTHORIZATION=f"Bearer {read_key}")
    assert response.status_code == 200


def test_too_many_query_fields_is_a_json_400(api_client, read_key, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    query = "&".join(f"f{i}=1" for i in range(10))
    response = api_client.get(f"/api/v1/sessions?{query}", HTTP_AUTHORIZATION=f"Bearer {read_key}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
