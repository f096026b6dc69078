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
import types

from apps.core.errors import ErrorCode, error_body


# What runserver reads past the limit to answer 413 on a still-usable connection.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


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
        if environ.get("wsgi.input_terminated"):
            body = stream.read(limit)
            complete = len(body) < limit
        else:
            raw = _socket_file(stream)
            try:
                body, unread_in_chunk = dechunk(raw, limit=limit)
            except MalformedChunkedBody as exc:
                return _bad_request(start_response, str(exc))
            if unread_in_chunk is not None:
                # runserver may not send hop-by-hop headers such as Connection: close, so the rest
                # of the body is read and dropped to keep the connection in step.
                _drain(raw, unread_in_chunk=unread_in_chunk, limit=DRAIN_LIMIT_BYTES)
            complete = True
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        if complete:
            return self.app(environ, start_response)

        def closing_start_response(status, headers, exc_info=None):
            # The rest of the oversized body is still unread on the connection: do not reuse it.
            headers = [(name, value) for name, value in headers if name.lower() != "connection"]
            return start_response(status, [*headers, ("Connection", "close")], exc_info)

        return self.app(environ, closing_start_response)


def _socket_file(stream):
    """runserver hands the app Django's LimitedStream(socket file, 0): read the socket file behind it."""
    if hasattr(stream, "_read") and hasattr(stream, "_readline"):
        return types.SimpleNamespace(read=stream._read, readline=stream._readline)
    return stream


def dechunk(stream, *, limit: int) -> tuple[bytes, int | None]:
    """(body, None) for a whole chunked body; (first limit bytes, bytes left in the current chunk)
    once it exceeds limit bytes."""
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
                    return b"".join(parts), None
        if size + chunk_size > limit:
            parts.append(stream.read(limit - size))
            return b"".join(parts), chunk_size - (limit - size)
        chunk = stream.read(chunk_size)
        if len(chunk) != chunk_size or stream.readline(3) not in (b"\r\n", b"\n"):
            raise MalformedChunkedBody("A chunk is shorter than its stated size.")
        parts.append(chunk)
        size += chunk_size


def _drain(stream, *, unread_in_chunk: int, limit: int) -> bool:
    """Read and drop the rest of a chunked body; True once its end is reached within limit bytes."""
    dropped = 0
    while unread_in_chunk > 0:
        piece = stream.read(min(unread_in_chunk, 1 << 16))
        if not piece:
            return False
        unread_in_chunk -= len(piece)
    stream.readline(3)
    while dropped <= limit:
        line = stream.readline(1024)
        try:
            chunk_size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            return False
        if chunk_size == 0:
            while stream.readline(8192) not in (b"\r\n", b"\n", b""):
                pass
            return True
        while chunk_size > 0:
            piece = stream.read(min(chunk_size, 1 << 16))
            if not piece:
                return False
            chunk_size -= len(piece)
            dropped += len(piece)
        stream.readline(3)
    return False


def _bad_request(start_response, message: str):
    payload = json.dumps(error_body(ErrorCode.INVALID_CHUNKED_BODY, message)).encode()
    start_response("400 Bad Request", [
        ("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
    ])
    return [payload]
