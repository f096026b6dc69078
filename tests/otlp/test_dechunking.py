"""tokensite.chunked at the WSGI level, as runserver hands it a request (fast lane; the real servers
are in test_chunked_servers.py)."""
from __future__ import annotations

import io
import json

from django.core.handlers.wsgi import LimitedStream

from tokensite.chunked import DechunkedBodyMiddleware


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


def call(raw: bytes, *, max_bytes: int = 100, terminated: bool = False):
    seen = {}

    def app(environ, start_response):
        seen["body"] = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    socket_file = io.BytesIO(raw + b"GET /next HTTP/1.1\r\n")
    environ = {
        "HTTP_TRANSFER_ENCODING": "chunked",
        # runserver: a zero-length LimitedStream over the socket; gunicorn: the de-chunked body.
        "wsgi.input": io.BytesIO(raw) if terminated else LimitedStream(socket_file, 0),
    }
    if terminated:
        environ["wsgi.input_terminated"] = True
    replies = {}

    def start_response(status, headers, exc_info=None):
        replies.update(status=status, headers=dict(headers))

    payload = b"".join(DechunkedBodyMiddleware(app, max_bytes=max_bytes)(environ, start_response))
    return replies, payload, seen.get("body"), socket_file


def test_chunked_body_reaches_the_app_whole_and_the_connection_stays_in_step():
    replies, _, body, socket_file = call(chunked(b"hello ", b"otlp", b"!"))
    assert replies["status"] == "200 OK" and body == b"hello otlp!"
    assert socket_file.read() == b"GET /next HTTP/1.1\r\n"


def test_oversized_chunked_body_gives_the_app_one_byte_past_the_limit_and_is_drained():
    replies, _, body, socket_file = call(chunked(b"x" * 80, b"y" * 80, b"z" * 80), max_bytes=100)
    assert len(body) == 101 and replies["status"] == "200 OK"
    assert socket_file.read() == b"GET /next HTTP/1.1\r\n"


def test_malformed_chunk_size_is_a_json_400():
    replies, payload, body, _ = call(b"zz\r\nab\r\n0\r\n\r\n")
    assert replies["status"].startswith("400") and body is None
    assert json.loads(payload)["error"]["code"] == "invalid_chunked_body"


def test_truncated_chunk_is_a_json_400():
    replies, payload, _, _ = call(b"10\r\nshort")
    assert replies["status"].startswith("400")


def test_server_that_already_dechunked_is_read_as_is_and_oversize_closes():
    replies, _, body, _ = call(b"already plain", terminated=True)
    assert body == b"already plain"
    replies, _, body, _ = call(b"p" * 500, max_bytes=100, terminated=True)
    assert len(body) == 101 and replies["headers"]["Connection"] == "close"
