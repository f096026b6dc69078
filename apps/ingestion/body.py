"""Reading an ingest request body within its limits: size, media type and gzip."""
from __future__ import annotations

import zlib

from django.conf import settings
from django.http import HttpRequest

from apps.core.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from apps.core.parsers import json_charset_check


def request_body_read(request: HttpRequest) -> bytes:
    """The decoded JSON body bytes; 413 over the raw or decompressed limit, 415 for a non-JSON body,
    400 for a charset other than UTF-8."""
    content_type = request.META.get("CONTENT_TYPE", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(
            f"Send the batch as application/json (got {media_type or 'no Content-Type'}).",
        )
    json_charset_check(content_type)
    encoding = request.META.get("HTTP_CONTENT_ENCODING", "identity").strip().lower()
    if encoding not in ("identity", "gzip", ""):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; use gzip or none.")

    max_bytes = settings.INGEST_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BadRequest("Content-Length is not a number.", code="invalid_content_length") from None
    if declared > max_bytes:
        raise PayloadTooLarge(f"The body is {declared} bytes; the limit is {max_bytes} bytes.")
    # Read one byte past the limit so a body without an honest Content-Length is still caught.
    body = request.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"The body is over the limit of {max_bytes} bytes.")
    if encoding == "gzip":
        body = _gunzip(body, limit=settings.INGEST_MAX_DECOMPRESSED_BYTES)
    return body


def _gunzip(data: bytes, *, limit: int) -> bytes:
    # max_length bounds memory: a 1 MiB gzip bomb never expands past limit + 1 bytes.
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"The gzip body is corrupt: {exc}.", code="invalid_gzip") from None
    if len(out) > limit or decompressor.unconsumed_tail:
        raise PayloadTooLarge(f"The decompressed body is over the limit of {limit} bytes.")
    if not decompressor.eof:
        raise BadRequest("The gzip body is truncated.", code="invalid_gzip")
    return out
