"""The hostile bodies: whatever bytes reach a POST endpoint, the answer is a JSON 4xx, never a 500."""
from __future__ import annotations

import json

import pytest

from tests.conftest import usage_event

pytestmark = pytest.mark.django_db

POST_ENDPOINTS = ["/api/v1/events", "/api/v1/tokenize"]
JSON = "application/json"


def _valid(path: str, **overrides) -> dict:
    if path == "/api/v1/events":
        return {"events": [usage_event(), usage_event(**overrides)]}
    return {"model": "gpt-4o", "text": "hello", **overrides}


def _with(path: str, marker_bytes: bytes, **fields) -> bytes:
    """A valid body of the endpoint whose "@@" string values are replaced by raw bytes."""
    return json.dumps(_valid(path, **fields)).encode().replace(b'"@@"', marker_bytes)


def _nested(depth: int) -> bytes:
    # Built as bytes: json.dumps would itself recurse.
    return b'{"a": ' * depth + b'"x"' + b"}" * depth


HOSTILE_BODIES = {
    "invalid UTF-8 in a string": (JSON, lambda path: _with(path, b'"caf\xe9"', step="@@", text="@@")),
    "invalid UTF-8 in an unknown field": (JSON, lambda path: _with(path, b'"\xff\xfe"', extra="@@")),
    "invalid UTF-8 in a key": (JSON, lambda path: json.dumps(_valid(path)).encode().replace(b'{"', b'{"\xc3(', 1)),
    "truncated UTF-8 sequence at the end": (JSON, lambda path: json.dumps(_valid(path)).encode() + b"\xe2\x82"),
    "UTF-8 byte order mark": (JSON, lambda path: b"\xef\xbb\xbf" + json.dumps(_valid(path)).encode()),
    "declared latin-1, latin-1 bytes": (
        "application/json; charset=latin-1",
        lambda path: json.dumps(_valid(path, step="café", text="café"), ensure_ascii=False).encode("latin-1"),
    ),
    "declared latin-1, ASCII bytes": (
        "application/json; charset=ISO-8859-1", lambda path: json.dumps(_valid(path)).encode()),
    "declared UTF-16": ("application/json; charset=utf-16", lambda path: json.dumps(_valid(path)).encode("utf-16")),
    "declared unknown charset": ('application/json; charset="no-such"', lambda path: json.dumps(_valid(path)).encode()),
    "RFC 2231 charset": ("application/json; charset*=utf-8''utf-8", lambda path: json.dumps(_valid(path)).encode()),
    "deeply nested document": (JSON, lambda path: b"[" * 100_000 + b"]" * 100_000),
    "deeply nested object": (JSON, lambda path: _nested(100_000)),
    "deeply nested field": (JSON, lambda path: _with(path, _nested(5_000), usage_raw="@@", messages="@@", text=None)),
    "nested just under the parser's limit": (
        JSON, lambda path: _with(path, _nested(900), usage_raw="@@", messages="@@", text=None)),
    "lone surrogate escape": (JSON, lambda path: _with(path, b'"\\ud800"', session_id="@@", text="@@")),
    "NaN": (JSON, lambda path: _with(path, b"NaN", duration_ms="@@", text="@@")),
    "truncated": (JSON, lambda path: json.dumps(_valid(path)).encode()[:-3]),
    "empty": (JSON, lambda path: b""),
    "null": (JSON, lambda path: b"null"),
}


@pytest.mark.parametrize("path", POST_ENDPOINTS)
@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
def test_hostile_bodies_get_a_json_4xx_never_a_500(api_client, ingest_key, path, name):
    content_type, build = HOSTILE_BODIES[name]
    response = api_client.generic("POST", path, build(path), content_type=content_type,
                                  HTTP_AUTHORIZATION=f"Bearer {ingest_key}")  # fmt: skip
    assert response["Content-Type"] == "application/json", response.content
    body = response.json()
    if path == "/api/v1/events" and response.status_code == 207:
        assert body["accepted"] == 1 and len(body["rejected"]) == 1, body
    else:
        assert 400 <= response.status_code < 500, (response.status_code, body)
        assert set(body["error"]) >= {"code", "message"}, body


@pytest.mark.parametrize("path", POST_ENDPOINTS)
def test_invalid_utf8_inside_a_json_string_is_a_400_naming_the_byte(api_client, ingest_key, path):
    response = api_client.generic("POST", path, _with(path, b'"caf\xe9"', session_id="@@", text="@@"),
                                  content_type=JSON, HTTP_AUTHORIZATION=f"Bearer {ingest_key}")  # fmt: skip
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "malformed_json"
    assert "not valid UTF-8 (byte 0xe9" in error["message"]


@pytest.mark.parametrize("path", POST_ENDPOINTS)
@pytest.mark.parametrize("charset", ["latin-1", "ISO-8859-1", "utf-16", "windows-1252"])
def test_a_body_declaring_a_charset_other_than_utf8_is_a_400(api_client, ingest_key, path, charset):
    body = json.dumps(_valid(path, step="café", text="café"), ensure_ascii=False).encode(charset)
    response = api_client.generic("POST", path, body, content_type=f"application/json; charset={charset}",
                                  HTTP_AUTHORIZATION=f"Bearer {ingest_key}")  # fmt: skip
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "unsupported_charset"
    assert charset in error["message"] and "UTF-8" in error["message"]


@pytest.mark.parametrize("path", POST_ENDPOINTS)
@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", '"utf-8"', "utf8"])
def test_a_body_declaring_utf8_is_accepted(api_client, ingest_key, path, charset):
    body = json.dumps(_valid(path, step="café", text="café"), ensure_ascii=False).encode()
    response = api_client.generic("POST", path, body, content_type=f"application/json; charset={charset}",
                                  HTTP_AUTHORIZATION=f"Bearer {ingest_key}")  # fmt: skip
    assert response.status_code in (200, 202), response.content


def test_tokenize_with_deeply_nested_json_is_a_400(api_client, ingest_key):
    body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": ' + b"[" * 50_000 + b"]" * 50_000 + b"}]}"
    response = api_client.generic("POST", "/api/v1/tokenize", body, content_type=JSON,
                                  HTTP_AUTHORIZATION=f"Bearer {ingest_key}")  # fmt: skip
    assert response.status_code == 400, response.content
    assert response.json()["error"] == {"code": "malformed_json",
                                        "message": "JSON parse error - the body is nested too deeply."}


@pytest.mark.parametrize("depth", [100, 900, 5_000])
def test_tokenize_with_deeply_nested_message_content_is_a_count_or_a_400(api_client, ingest_key, depth):
    body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": ' + _nested(depth) + b"}]}"
    response = api_client.generic("POST", "/api/v1/tokenize", body, content_type=JSON,
                                  HTTP_AUTHORIZATION=f"Bearer {ingest_key}")  # fmt: skip
    assert response.status_code in (200, 400), response.content
    assert "tokens" in response.json() or "error" in response.json()
