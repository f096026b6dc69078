"""Maps ApplicationError and DRF's exceptions to one JSON error shape, in one place."""
from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

from apps.core.errors import ApplicationError, ErrorCode, error_body
from apps.core.outages import database_unavailable_error

logger = logging.getLogger(__name__)

# DRF exception class -> our stable error code.
_DRF_CODES: list[tuple[type[Exception], ErrorCode]] = [
    (drf_exceptions.ParseError, ErrorCode.MALFORMED_JSON),
    (drf_exceptions.NotAuthenticated, ErrorCode.UNAUTHORIZED),
    (drf_exceptions.AuthenticationFailed, ErrorCode.UNAUTHORIZED),
    (drf_exceptions.PermissionDenied, ErrorCode.FORBIDDEN),
    (drf_exceptions.NotFound, ErrorCode.NOT_FOUND),
    (drf_exceptions.MethodNotAllowed, ErrorCode.METHOD_NOT_ALLOWED),
    (drf_exceptions.NotAcceptable, ErrorCode.NOT_ACCEPTABLE),
    (drf_exceptions.UnsupportedMediaType, ErrorCode.UNSUPPORTED_MEDIA_TYPE),
    (drf_exceptions.Throttled, ErrorCode.RATE_LIMITED),
    (drf_exceptions.ValidationError, ErrorCode.INVALID),
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
        code = next((c for cls, c in _DRF_CODES if isinstance(exc, cls)), ErrorCode.ERROR)
        if isinstance(exc, drf_exceptions.ValidationError):
            body = error_body(code, "The request is invalid.", exc.detail)
        else:
            body = error_body(code, str(exc.detail))
        headers = {}
        if isinstance(exc, (drf_exceptions.NotAuthenticated, drf_exceptions.AuthenticationFailed)):
            headers["WWW-Authenticate"] = 'Bearer realm="api"'
            exc.status_code = 401
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        return Response(body, status=exc.status_code, headers=headers)
    return None

