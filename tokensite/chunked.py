"""Request bodies sent with `Transfer-Encoding: chunked` and no Content-Length, under any server.

Django reads a request body only up to CONTENT_LENGTH, so without one it sees an empty body.
Gemini CLI and Qwen Code export OTLP that way. gunicorn has already de-chunked `wsgi.input`
(it sets `wsgi.input_terminated`); Django's runserver (`make run`) has not, and hands the app the
raw socket behind a zero-length stream. This middleware reads the body (de-chunking it where the
server did not), at most `max_bytes + 1` bytes so the view's size limit still answers 413, and
hands Django a sized stream.
"""
from __future__ import annotations

import io
import json


class MalformedChunkedBody(Exception):
    pass


class DechunkedBodyMiddleware:
    def __init__(self, app, *, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, environ, start_response):
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not chunked or environ.get("CONTENT_LENGTH"):
            return self.app(environ, start_response)
        stream = environ["wsgi.input"]
        limit = self.max_bytes + 1
        complete = True
        if environ.get("wsgi.input_terminated"):
            body = stream.read(limit)
            complete = len(body) < limit
        else:
            # runserver wraps the socket file in a LimitedStream of length 0; read the socket itself.
            raw = getattr(stream, "stream", stream)
            try:
                body, complete = dechunk(raw, limit=limit)
            except MalformedChunkedBody as exc:
                return _bad_request(start_response, str(exc))
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        if complete:
            return self.app(environ, start_response)

        def closing_start_response(status, headers, exc_info=None):
            # The rest of the oversized body is still unread on the connection: do not reuse it.
            headers = [(name, value) for name, value in headers if name.lower() != "connection"]
            return start_response(status, [*headers, ("Connection", "close")], exc_info)

        return self.app(environ, closing_start_response)


def dechunk(stream, *, limit: int) -> tuple[bytes, bool]:
    """(body, complete): the chunked body read from stream, stopping once it exceeds limit bytes."""
    parts: list[bytes] = []
    size = 0
    while True:
        line = stream.readline(1024)
        if not line.endswith(b"\n"):
            raise MalformedChunkedBody("The chunked body ends before its last chunk.")
        try:
            chunk_size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise MalformedChunkedBody("A chunk size is not a hex number.") from None
        if chunk_size < 0:
            raise MalformedChunkedBody("A chunk size is negative.")
        if chunk_size == 0:
            # Trailer fields, then the empty line that ends the message.
            while True:
                trailer = stream.readline(8192)
                if trailer in (b"\r\n", b"\n", b""):
                    return b"".join(parts), True
        if size + chunk_size > limit:
            parts.append(stream.read(limit - size))
            return b"".join(parts), False
        chunk = stream.read(chunk_size)
        if len(chunk) != chunk_size or stream.readline(3) not in (b"\r\n", b"\n"):
            raise MalformedChunkedBody("A chunk is shorter than its stated size.")
        parts.append(chunk)
        size += chunk_size


def _bad_request(start_response, message: str):
    payload = json.dumps({"error": {"code": "invalid_chunked_body", "message": message}}).encode()
    start_response("400 Bad Request", [
        ("Content-Type", "application/json"), ("Content-Length", str(len(payload))), ("Connection", "close"),
    ])
    return [payload]
