"""Site-wide request guards: NUL in a URL, POSTs to a URL without its slash, OTLP sent to the site root."""
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


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("url", ["/api/v2", "/some-team/no-such-page"])
def test_post_to_a_url_that_only_exists_with_a_slash_is_a_404_not_a_redirect(client, settings, debug, url):
    # Both exist with a slash (a team's project page). Django cannot redirect a POST there with
    # its body: it raised under DEBUG (a 500 in `make run`) and answered 301 otherwise.
    settings.DEBUG = debug
    response = client.post(url, data=b"{}", content_type="application/json")
    assert response.status_code == 404


def test_get_of_a_page_without_its_slash_still_redirects(client):
    response = client.get("/login")
    assert response.status_code == 301
    assert response["Location"] == "/login/"


@pytest.mark.parametrize("signal", ["logs", "traces", "metrics"])
def test_otlp_export_to_the_site_root_says_where_the_endpoint_is(client, signal):
    response = client.post(f"/v1/{signal}", data=b"\x0a\x00", content_type="application/x-protobuf")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert f"/otlp/v1/{signal}" in error["message"] and "OTEL_EXPORTER_OTLP_ENDPOINT" in error["message"]
