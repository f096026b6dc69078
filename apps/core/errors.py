"""The one error hierarchy of TokenSite.

Services raise these; `apps.core.exception_handler` turns every one of them (and DRF's own
exceptions) into the same JSON body: {"error": {"code": ..., "message": ..., "details": ...}}.
"""
from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """A failure the client can act on: carries a stable code, a message and an HTTP status."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details
        self.headers = headers or {}

    def as_body(self) -> dict:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}


class BadRequest(ApplicationError):
    status_code = 400
    code = "bad_request"


class Unauthorized(ApplicationError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ApplicationError):
    status_code = 403
    code = "forbidden"


class NotFound(ApplicationError):
    status_code = 404
    code = "not_found"


class PayloadTooLarge(ApplicationError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(ApplicationError):
    status_code = 415
    code = "unsupported_media_type"


class RateLimited(ApplicationError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int):
        super().__init__(message, details={"retry_after_s": retry_after_s}, headers={"Retry-After": str(retry_after_s)})


class ServiceUnavailable(ApplicationError):
    """The request was fine but a dependency is away; the same request may succeed after Retry-After."""

    status_code = 503
    code = "service_unavailable"

    def __init__(self, message: str, *, retry_after_s: int, code: str | None = None):
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after_s)})


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    retry_after_s = 5  # a fast restart or a failover's promotion takes seconds

    def __init__(self, message: str = "The database is unavailable; send the request again after Retry-After "
                                      "seconds (a resent event is never counted twice)."):
        super().__init__(message, retry_after_s=self.retry_after_s)


class UriTooLong(ApplicationError):
    status_code = 414
    code = "uri_too_long"


class HeaderFieldsTooLarge(ApplicationError):
    status_code = 431
    code = "header_fields_too_large"
