"""Every reply carries the security headers; pages and the API docs load only the app's own files."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.test import Client

from apps.accounts.services import member_add
from tests.conftest import usage_event
from tests.dashboards.conftest import at, client_for, ingest

pytestmark = pytest.mark.django_db

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
CSP = {
    "default-src": "'self'", "script-src": "'self'", "style-src": "'self'", "img-src": "'self' data:",
    "connect-src": "'self'", "font-src": "'self'", "object-src": "'none'", "base-uri": "'self'",
    "frame-ancestors": "'none'", "form-action": "'self'",
}  # fmt: skip


def assert_security_headers(response, *, frame_options: bool = True) -> None:
    directives = (directive.strip().partition(" ") for directive in response["Content-Security-Policy"].split(";"))
    assert {name: sources for name, _, sources in directives} == CSP
    permissions = response["Permissions-Policy"]
    for feature in ("camera", "microphone", "geolocation", "payment", "usb"):
        assert f"{feature}=()" in permissions
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    if frame_options:  # Django's own header; whitenoise answers static files before its middleware
        assert response["X-Frame-Options"] == "DENY"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


class ResourceCollector(HTMLParser):
    """Scripts, styles and links of a page: what it would load, and anything inline."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self.style_attributes: list[str] = []
        self.style_blocks = 0
        self._in_script: dict | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "style" in attrs:
            self.style_attributes.append(f"<{tag} style={attrs['style']!r}>")
        if any(name.startswith("on") for name in attrs):
            self.inline_scripts.append(f"<{tag}> event handler")
        for name in ("src", "href", "action"):
            if attrs.get(name):
                self.urls.append(attrs[name])
        if tag == "script":
            self._in_script = attrs
        elif tag == "style":
            self.style_blocks += 1

    def handle_data(self, data):
        # A data block (json_script) is not executed, so the policy does not apply to it.
        if self._in_script is not None and data.strip() and self._in_script.get("type") != "application/json":
            self.inline_scripts.append(data.strip()[:80])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None


def collect(response) -> ResourceCollector:
    collector = ResourceCollector()
    collector.feed(response.content.decode())
    return collector


@pytest.fixture
def member_with_a_session(project, team):
    ingest(project, [usage_event(session_id="s-1", timestamp=at(0)), usage_event(session_id="s-1", timestamp=at(2))])
    return member_add(team=team, username="maria", password="pw-maria-123", role="owner").user


@pytest.fixture
def static_served(settings):
    # Whitenoise serves from collectstatic's folder in production; in tests it finds the same files in place.
    settings.WHITENOISE_USE_FINDERS = True
    settings.WHITENOISE_AUTOREFRESH = True


def test_pages_carry_the_security_headers(client, member_with_a_session):
    assert_security_headers(client.get("/login/"))
    member = client_for(member_with_a_session)
    for url in ("/", "/acme/chatbot/", "/acme/chatbot/sessions/s-1/", "/acme/chatbot/settings/", "/no/such/page/"):
        assert_security_headers(member.get(url))


def test_api_replies_carry_the_security_headers(api_client, read_key):
    assert_security_headers(api_client.get("/api/v1/sessions", HTTP_AUTHORIZATION=f"Bearer {read_key}"))
    assert_security_headers(api_client.get("/api/v1/sessions"))
    assert_security_headers(api_client.post("/api/v1/events", b"{", content_type="application/json"))
    assert_security_headers(api_client.get("/api/schema/"))


def test_static_files_carry_the_security_headers(static_served):
    response = Client().get("/static/dashboards/dashboards.js")
    assert response.status_code == 200
    assert_security_headers(response, frame_options=False)


def test_rendered_pages_have_no_inline_script_or_style(member_with_a_session):
    owner = client_for(member_with_a_session)
    for url in ("/", "/acme/chatbot/", "/acme/chatbot/sessions/s-1/", "/acme/chatbot/settings/"):
        page = collect(owner.get(url))
        assert page.inline_scripts == [] and page.style_attributes == [] and page.style_blocks == 0, url
        assert not [u for u in page.urls if re.match(r"(https?:)?//", u)], url
    login = collect(Client().get("/login/"))
    assert login.inline_scripts == [] and login.style_attributes == [] and login.style_blocks == 0


@pytest.mark.parametrize("template", sorted(p.relative_to(TEMPLATES).as_posix() for p in TEMPLATES.rglob("*.html")))
def test_templates_have_no_inline_script_or_style(template):
    source = (TEMPLATES / template).read_text()
    assert " style=" not in source and "<style" not in source
    assert not re.search(r"<script(?![^>]*\b(src|type=\"application/json\")\b)[^>]*>", source)


def test_api_docs_load_only_the_apps_own_files(client, static_served):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert_security_headers(response)
    page = collect(response)
    assert page.inline_scripts == [] and page.style_blocks == 0 and page.style_attributes == []
    assert not re.search(r"https?://|cdn|unpkg|jsdelivr", response.content.decode())
    assert all(url.startswith("/") and not url.startswith("//") for url in page.urls), page.urls
    scripts = [url for url in page.urls if url.endswith(".js") or "script" in url]
    assert any("swagger-ui-bundle" in url for url in scripts)
    for url in page.urls:
        resource = client.get(url)
        assert resource.status_code == 200, url
    init_script = client.get(next(url for url in page.urls if url.startswith("/api/docs/?")))
    assert init_script["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in init_script.content
