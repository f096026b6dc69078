"""Maps ApplicationError and DRF's exceptions to one JSON error shape, in one place."""
from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

from apps.core.errors import ApplicationError
from apps.core.outages import database_unavailable_error

logger = logging.getLogger(__name__)

# DRF exception class -> our stable error code.
_DRF_CODES: list[tuple[type[Exception], str]] = [
    (drf_exceptions.ParseError, "malformed_json"),
    (drf_exceptions.NotAuthenticated, "unauthorized"),
    (drf_exceptions.AuthenticationFailed, "unauthorized"),
    (drf_exceptions.PermissionDenied, "forbidden"),
    (drf_exceptions.NotFound, "not_found"),
    (drf_exceptions.MethodNotAllowed, "method_not_allowed"),
    (drf_exceptions.NotAcceptable, "not_acceptable"),
    (drf_exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (drf_exceptions.Throttled, "rate_limited"),
    (drf_exceptions.ValidationError, "invalid"),
]


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF EXCEPTION_HANDLER: every API error leaves as {"error": {...}} with the right status."""
    exc = database_unavailable_error(exc) or exc
    if isinstance(exc, ApplicationError):
        return Response(exc.as_body(), status=exc.status_code, headers=exc.headers)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    if isinstance(exc, drf_exceptions.APIException):
        code = next((c for cls, c in _DRF_CODES if isinstance(exc, cls)), "error")
        if isinstance(exc, drf_exceptions.ValidationError):
            body = {"code": code, "message": "The request is invalid.", "details": exc.detail}
        else:
            body = {"code": code, "message": str(exc.detail)}
        headers = {}
        if isinstance(exc, (drf_exceptions.NotAuthenticated, drf_exceptions.AuthenticationFailed)):
            headers["WWW-Authenticate"] = 'Bearer realm="api"'
            exc.status_code = 401
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        return Response({"error": body}, status=exc.status_code, headers=headers)
    return None

