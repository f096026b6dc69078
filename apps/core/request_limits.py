"""Limits on the request line and headers, answered by the application before Django reads them.

The server in front (gunicorn, see gunicorn.conf.py) has hard limits of its own and answers
past them with its own HTML page. Its limits are set above these, so a client that sends an
over-long URL or header normally meets these ones, and under /api/ gets the same JSON error
body as every other API error. This is a WSGI middleware rather than a Django one because
Django can fail while it builds the request from the headers (an RFC 2231 charset it cannot
look up in Content-Type raises ValueError), and that failure must be a 400 too.
"""
from __future__ import annotations

import json
from http import HTTPStatus

from django.utils.http import parse_header_parameters

from apps.core.errors import ApplicationError, BadRequest, ErrorCode, HeaderFieldsTooLarge, UriTooLong

MAX_URL_BYTES = 4096
MAX_HEADER_FIELDS = 100
MAX_HEADER_FIELD_BYTES = 8192
MAX_HEADER_BYTES = 32 * 1024

# WSGI names the body headers without the HTTP_ prefix.
_UNPREFIXED_HEADERS = {"CONTENT_TYPE": "CONTENT-TYPE", "CONTENT_LENGTH": "CONTENT-LENGTH"}


class RequestLimitsMiddleware:
    """WSGI middleware: 414 for a URL over MAX_URL_BYTES, 431 for headers over their limits,
    400 for a Content-Type Django cannot parse; JSON under /api/, plain text elsewhere."""

    def __init__(self, application):
        self.application = application

    def __call__(self, environ, start_response):
        error = request_limits_check(environ)
        if error is None:
            return self.application(environ, start_response)
        if environ.get("PATH_INFO", "").startswith("/api/"):
            body, content_type = json.dumps(error.as_body()).encode(), "application/json"
        else:
            body, content_type = error.message.encode(), "text/plain; charset=utf-8"
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        start_response(f"{error.status_code} {HTTPStatus(error.status_code).phrase}", headers)
        return [body]


def request_limits_check(environ: dict) -> ApplicationError | None:
    """The error a request's line or headers earn, or None when they are within the limits."""
    # gunicorn passes the request target as sent; other servers only the decoded path and query.
    query = environ.get("QUERY_STRING", "")
    url = environ.get("RAW_URI") or environ.get("PATH_INFO", "") + ("?" + query if query else "")
    if len(url) > MAX_URL_BYTES:
        return UriTooLong(f"The URL is {len(url)} bytes; the limit is {MAX_URL_BYTES} bytes.")
    fields = 0
    total = 0
    for key, value in environ.items():
        name = key[5:].replace("_", "-") if key.startswith("HTTP_") else _UNPREFIXED_HEADERS.get(key)
        if name is None or not isinstance(value, str):
            continue
        size = len(name) + 2 + len(value)
        if size > MAX_HEADER_FIELD_BYTES:
            return HeaderFieldsTooLarge(
                f"The {name.title()} header is {size} bytes; the limit is {MAX_HEADER_FIELD_BYTES} bytes per header."
            )
        fields += 1
        total += size
    if fields > MAX_HEADER_FIELDS:
        return HeaderFieldsTooLarge(f"The request has {fields} headers; the limit is {MAX_HEADER_FIELDS}.")
    if total > MAX_HEADER_BYTES:
        return HeaderFieldsTooLarge(f"The headers are {total} bytes; the limit is {MAX_HEADER_BYTES} bytes in all.")
    try:
        parse_header_parameters(environ.get("CONTENT_TYPE", ""))
    except ValueError as exc:
        return BadRequest(f"The Content-Type header cannot be parsed: {exc}", code=ErrorCode.MALFORMED_CONTENT_TYPE)
    return None
