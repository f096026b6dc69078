"""API key authentication, scope permissions and per-key rate limiting for the DRF API."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta

import redis.exceptions
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.throttling import BaseThrottle

from apps.accounts.keys import key_parse, secret_matches
from apps.accounts.models import ApiKey, Project
from apps.accounts.selectors import api_key_get_active
from apps.core.errors import ErrorCode, Forbidden, RateLimited, Unauthorized
from apps.core.outages import DependencyOutage

# last_used_at is informational: refreshing it once a minute avoids a write on every request.
_LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class ApiKeyPrincipal:
    """What request.user is for an API request: the key and the one project it may touch."""

    api_key: ApiKey

    is_authenticated = True
    is_anonymous = False

    @property
    def project(self) -> Project:
        return self.api_key.project


class ApiKeyAuthentication(BaseAuthentication):
    """`Authorization: Bearer tsk_<prefix>_<secret>`; missing, unknown or revoked keys are 401."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        # OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20tsk_... is percent-encoded by the OTel
        # spec, and some exporters (Claude Code's) send the value without decoding it.
        if header[:9].lower() == "bearer%20":
            header = "Bearer " + header[9:]
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                "Send the key as 'Authorization: Bearer <key>'.", code=ErrorCode.INVALID_AUTHORIZATION_HEADER
            )
        parsed = key_parse(token.strip())
        if parsed is None:
            raise Unauthorized("Unknown or revoked API key.", code=ErrorCode.INVALID_API_KEY)
        prefix, secret = parsed
        api_key = api_key_get_active(prefix=prefix)
        if api_key is None or not secret_matches(secret, api_key.secret_hash):
            raise Unauthorized("Unknown or revoked API key.", code=ErrorCode.INVALID_API_KEY)
        now = timezone.now()
        if api_key.last_used_at is None or now - api_key.last_used_at > _LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        return ApiKeyPrincipal(api_key=api_key), api_key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


def _scope_permission(scope: str, *allowed: str) -> type[BasePermission]:
    allowed_scopes = allowed or (scope,)

    class ScopePermission(BasePermission):
        def has_permission(self, request, view) -> bool:
            principal = request.user
            if not isinstance(principal, ApiKeyPrincipal):
                return False
            if principal.api_key.scope not in allowed_scopes:
                raise Forbidden(
                    f"This endpoint needs a key with the '{scope}' scope.", code=ErrorCode.INSUFFICIENT_SCOPE
                )
            return True

    ScopePermission.__name__ = f"Has{scope.capitalize()}Scope"
    return ScopePermission


HasIngestScope = _scope_permission(ApiKey.Scope.INGEST)
HasReadScope = _scope_permission(ApiKey.Scope.READ)
HasAnyScope = _scope_permission("ingest or read", ApiKey.Scope.INGEST, ApiKey.Scope.READ)


RATE_LIMIT_CACHE_OUTAGE = DependencyOutage(
    "rate_limit_cache",
    dependency="The rate limit's cache (Redis)",
    consequence="letting API requests through unlimited",
)
# A cache that is down or hung. Any other error (a bad key, a bug) still fails the request.
_CACHE_OUTAGE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class ApiKeyRateThrottle(BaseThrottle):
    """Fixed one-minute windows per key in the shared cache (Redis in production).

    Fails open: while the cache is unreachable requests are allowed, counted and logged
    (RATE_LIMIT_CACHE_OUTAGE, shown by GET /healthz), because refusing every request for want
    of a counter would lose the very events the limit exists to pace.
    """

    def allow_request(self, request, view) -> bool:
        principal = request.user
        if not isinstance(principal, ApiKeyPrincipal):
            return True
        if RATE_LIMIT_CACHE_OUTAGE.paused():
            RATE_LIMIT_CACHE_OUTAGE.skipped()
            return True
        limit = principal.api_key.rate_limit_per_minute or settings.INGEST_DEFAULT_RATE_LIMIT_PER_MINUTE
        now = time.time()
        window = int(now // 60)
        try:
            count = _window_count(f"ratelimit:{principal.api_key.prefix}:{window}")
        except _CACHE_OUTAGE_ERRORS as exc:
            RATE_LIMIT_CACHE_OUTAGE.failed(exc)
            return True
        if count > limit:
            retry_after = max(1, int((window + 1) * 60 - now) + 1)
            raise RateLimited(
                f"Rate limit of {limit} requests per minute exceeded for this key; retry after {retry_after} s.",
                retry_after_s=retry_after,
            )
        return True


def _window_count(cache_key: str) -> int:
    """Count one more request in the window's counter and return the new count."""
    # add() is atomic and only sets when missing, so the first request of a window seeds it.
    if cache.add(cache_key, 1, timeout=90):
        return 1
    try:
        return cache.incr(cache_key)
    except ValueError:  # expired between add() and incr()
        cache.set(cache_key, 1, timeout=90)
        return 1
