"""The documented request limits are answered by the application, in JSON under /api/."""
from __future__ import annotations

import io
import json
import sys

import pytest

from tokensite.wsgi import application

pytestmark = pytest.mark.django_db


def _call(path: str, *, query: str = "", headers: dict[str, str] | None = None, content_type: str = "",
          body: bytes = b"", method: str = "GET") -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """A request through the project's real WSGI application, as gunicorn hands it over."""
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "127.0.0.1", "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http", "CONTENT_LENGTH": str(len(body)),
        "RAW_URI": path + ("?" + query if query else ""),
    }  # fmt: skip
    if content_type:
        environ["CONTENT_TYPE"] = content_type
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    replies: list = []
    out = b"".join(application(environ, lambda status, response_headers, exc_info=None: replies.append(
        (status, response_headers))))  # fmt: skip
    status, response_headers = replies[0]
    return int(status.split()[0]), dict(response_headers), out


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/sessions", "/api/v1/no-such-thing"])
def test_an_over_long_api_url_is_a_json_414(path):
    status, headers, body = _call(path, query="q=" + "x" * 5000)
    assert status == 414
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "uri_too_long"


def test_an_over_long_page_url_is_a_plain_414():
    status, headers, body = _call("/acme/chatbot/", query="q=" + "x" * 5000)
    assert (status, headers["Content-Type"]) == (414, "text/plain; charset=utf-8")
    assert b"limit is 4096 bytes" in body


@pytest.mark.parametrize("headers", [
    {"X-Big": "x" * 9000},
    {f"X-Many-{i}": "1" for i in range(120)},
    {f"X-Wide-{i}": "x" * 4000 for i in range(10)},
    {"Authorization": "Bearer " + "x" * 9000},
])
def test_over_large_headers_are_a_json_431(headers):
    status, response_headers, body = _call("/api/v1/events", headers=headers, method="POST",
                                           content_type="application/json", body=b'{"events": []}')  # fmt: skip
    assert status == 431
    assert response_headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "header_fields_too_large"


def test_a_content_type_django_cannot_parse_is_a_json_400_not_a_500():
    status, headers, body = _call("/api/v1/tokenize", method="POST", content_type="application/json; charset*=nope''x",
                                  body=b'{"model": "gpt-4o", "text": "hi"}')  # fmt: skip
    assert status == 400
    assert json.loads(body)["error"]["code"] == "malformed_content_type"


def test_requests_within_the_limits_reach_django():
    status, headers, body = _call("/api/v1/sessions", query="q=" + "x" * 3000, headers={"X-Big": "x" * 8000})
    assert status == 401  # Django's answer: no key
    assert json.loads(body)["error"]["code"] == "unauthorized"
