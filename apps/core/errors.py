"""The one error hierarchy of TokenSite.

Services raise these; `apps.core.exception_handler` turns every one of them (and DRF's own
exceptions) into the same JSON body: {"error": {"code": ..., "message": ..., "details": ...}}.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Every `code` an error reply can carry, under /api/ and /otlp/ alike.

    /api/schema/ lists these as the enum of the error body's `code`, so a client can switch on them
    and Schemathesis fails on any reply whose code is missing here.
    """

    # Generic, one per status (the ApplicationError subclasses' defaults and DRF's exceptions).
    BAD_REQUEST = "bad_request"
    INVALID = "invalid"  # a serializer's validation errors, per field in `details`
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_ACCEPTABLE = "not_acceptable"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    URI_TOO_LONG = "uri_too_long"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    HEADER_FIELDS_TOO_LARGE = "header_fields_too_large"
    SERVER_ERROR = "server_error"
    SERVICE_UNAVAILABLE = "service_unavailable"
    DATABASE_UNAVAILABLE = "database_unavailable"
    ERROR = "error"  # a DRF exception with no code of its own

    # The request line, headers and body.
    MALFORMED_URL = "malformed_url"
    MALFORMED_CONTENT_TYPE = "malformed_content_type"
    UNSUPPORTED_CHARSET = "unsupported_charset"
    INVALID_CONTENT_LENGTH = "invalid_content_length"
    INVALID_CHUNKED_BODY = "invalid_chunked_body"
    INVALID_GZIP = "invalid_gzip"
    MALFORMED_JSON = "malformed_json"

    # API keys.
    INVALID_AUTHORIZATION_HEADER = "invalid_authorization_header"
    INVALID_API_KEY = "invalid_api_key"
    INSUFFICIENT_SCOPE = "insufficient_scope"

    # Ingestion, OTLP, reads and tokens.
    INVALID_BATCH = "invalid_batch"
    INVALID_BATCH_SIZE = "invalid_batch_size"
    INVALID_OTLP = "invalid_otlp"
    SESSION_NOT_FOUND = "session_not_found"
    TOKENIZE_FAILED = "tokenize_failed"

    # Accounts, teams and prices (services the pages and management commands call).
    INVALID_SLUG = "invalid_slug"
    RESERVED_SLUG = "reserved_slug"
    INVALID_SCOPE = "invalid_scope"
    API_KEY_NOT_FOUND = "api_key_not_found"
    INVALID_USERNAME = "invalid_username"
    INVALID_PASSWORD = "invalid_password"
    INVALID_ROLE = "invalid_role"
    INVITATION_NOT_FOUND = "invitation_not_found"
    MEMBER_NOT_FOUND = "member_not_found"
    ALREADY_MEMBER = "already_member"
    OWNER_ONLY = "owner_only"
    LAST_OWNER = "last_owner"
    INVALID_PRICE = "invalid_price"
    INVALID_PRICE_FILE = "invalid_price_file"
    INVALID_MODEL = "invalid_model"
    INVALID_RETENTION = "invalid_retention"
    INVALID_CONTEXT_WINDOW = "invalid_context_window"

    # Digests.
    INVALID_FREQUENCY = "invalid_frequency"
    INVALID_EMAIL = "invalid_email"

    # Budgets (apps.budgets).
    INVALID_BUDGET = "invalid_budget"
    INVALID_WEBHOOK_URL = "invalid_webhook_url"
    TEAM_NOT_FOUND = "team_not_found"
    PROJECT_NOT_FOUND = "project_not_found"


def error_body(code: ErrorCode, message: str, details: Any = None) -> dict:
    """The one JSON error shape: {"error": {"code": ..., "message": ..., "details": ...}}."""
    # The code's plain string, not the enum member: every renderer can write a str (the schema
    # view's YAML renderer cannot represent an enum, and answered its errors with a 500).
    body: dict[str, Any] = {"code": str(code), "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


class ApplicationError(Exception):
    """A failure the client can act on: carries a stable code, a message and an HTTP status."""

    status_code = 400
    code = ErrorCode.BAD_REQUEST

    def __init__(self, message: str, *, code: ErrorCode | None = None, details: Any = None,
                 headers: dict | None = None):  # fmt: skip
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details
        self.headers = headers or {}

    def as_body(self) -> dict:
        return error_body(self.code, self.message, self.details)


class BadRequest(ApplicationError):
    status_code = 400
    code = ErrorCode.BAD_REQUEST


class Unauthorized(ApplicationError):
    status_code = 401
    code = ErrorCode.UNAUTHORIZED


class Forbidden(ApplicationError):
    status_code = 403
    code = ErrorCode.FORBIDDEN


class NotFound(ApplicationError):
    status_code = 404
    code = ErrorCode.NOT_FOUND


class PayloadTooLarge(ApplicationError):
    status_code = 413
    code = ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(ApplicationError):
    status_code = 415
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class RateLimited(ApplicationError):
    status_code = 429
    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, *, retry_after_s: int):
        super().__init__(message, details={"retry_after_s": retry_after_s}, headers={"Retry-After": str(retry_after_s)})


class ServiceUnavailable(ApplicationError):
    """The request was fine but a dependency is away; the same request may succeed after Retry-After."""

    status_code = 503
    code = ErrorCode.SERVICE_UNAVAILABLE

    def __init__(self, message: str, *, retry_after_s: int, code: ErrorCode | None = None):
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after_s)})


class DatabaseUnavailable(ServiceUnavailable):
    code = ErrorCode.DATABASE_UNAVAILABLE
    retry_after_s = 5  # a fast restart or a failover's promotion takes seconds

    def __init__(self, message: str = "The database is unavailable; send the request again after Retry-After "
                                      "seconds (a resent event is never counted twice)."):
        super().__init__(message, retry_after_s=self.retry_after_s)


class UriTooLong(ApplicationError):
    status_code = 414
    code = ErrorCode.URI_TOO_LONG


class HeaderFieldsTooLarge(ApplicationError):
    status_code = 431
    code = ErrorCode.HEADER_FIELDS_TOO_LARGE
