"""Reading an ingest request body within its limits: size, media type and gzip.

Shared by `POST /api/v1/events` (JSON only, 1 MiB) and the OTLP receiver (protobuf or JSON,
limits sized for OTLP batches); each caller passes its own media types and limits.
"""
from __future__ import annotations

import zlib

from django.conf import settings
from django.http import HttpRequest

from apps.core.errors import BadRequest, ErrorCode, PayloadTooLarge, UnsupportedMediaType
from apps.core.parsers import json_charset_check


def request_body_read(request: HttpRequest) -> bytes:
    """The decoded JSON body bytes of an events batch; 413 over the limits, 415 for a non-JSON body,
    400 for a charset other than UTF-8."""
    _, body = request_body_read_limited(
        request,
        media_types=("application/json",),
        max_bytes=settings.INGEST_MAX_BODY_BYTES,
        max_decompressed_bytes=settings.INGEST_MAX_DECOMPRESSED_BYTES,
        what="the batch",
    )
    return body


def request_media_type(request: HttpRequest) -> str:
    """The Content-Type without parameters, lower case ("" when absent)."""
    return request.META.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()


def request_body_read_limited(
    request: HttpRequest,
    *,
    media_types: tuple[str, ...],
    max_bytes: int,
    max_decompressed_bytes: int,
    what: str = "the body",
) -> tuple[str, bytes]:
    """(media type, decoded body bytes): 415 for another media type or encoding, 413 over a limit,
    400 for JSON declared in a charset other than UTF-8.

    The raw limit also holds for bodies without Content-Length (chunked), the decompressed one
    for gzip bombs.
    """
    media_type = request_media_type(request)
    if media_type not in media_types:
        accepted = " or ".join(media_types)
        raise UnsupportedMediaType(f"Send {what} as {accepted} (got {media_type or 'no Content-Type'}).")
    if media_type == "application/json":
        json_charset_check(request.META.get("CONTENT_TYPE", ""))
    encoding = request.META.get("HTTP_CONTENT_ENCODING", "identity").strip().lower()
    if encoding not in ("identity", "gzip", ""):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; use gzip or none.")

    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BadRequest("Content-Length is not a number.", code=ErrorCode.INVALID_CONTENT_LENGTH) from None
    if declared > max_bytes:
        raise PayloadTooLarge(f"The body is {declared} bytes; the limit is {max_bytes} bytes.")
    # Read one byte past the limit so a body without an honest Content-Length is still caught.
    body = request.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"The body is over the limit of {max_bytes} bytes.")
    if encoding == "gzip":
        body = _gunzip(body, limit=max_decompressed_bytes)
    return media_type, body


def _gunzip(data: bytes, *, limit: int) -> bytes:
    # max_length bounds memory: a gzip bomb never expands past limit + 1 bytes.
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = decompressor.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"The gzip body is corrupt: {exc}.", code=ErrorCode.INVALID_GZIP) from None
    if len(out) > limit or decompressor.unconsumed_tail:
        raise PayloadTooLarge(f"The decompressed body is over the limit of {limit} bytes.")
    if not decompressor.eof:
        raise BadRequest("The gzip body is truncated.", code=ErrorCode.INVALID_GZIP)
    return out
