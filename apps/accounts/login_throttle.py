"""Sign-in throttling: failed sign-ins counted per username and per client address in the shared cache.

A counter's window opens at its first failure and lasts LOGIN_THROTTLE_WINDOW_MINUTES; once
either counter reaches its limit, every sign-in for that username, or from that address, is
refused until the window closes, right password or not. Refused attempts are not counted, so a
guesser gets at most the limit per window. Unknown usernames are counted like real ones, so a
block says nothing about which names exist.

The cache is Redis in production. When Redis cannot be reached, throttling fails open (sign-in
works unthrottled and a warning is logged) rather than locking every user out.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# What a cache outage raises: redis-py's own errors, or the socket's.
_CACHE_DOWN = (RedisError, OSError)


@dataclass(frozen=True)
class _Counter:
    key: str
    limit: int


def client_address(request: HttpRequest) -> str:
    """REMOTE_ADDR, or with NUM_PROXIES > 0 the X-Forwarded-For entry the outermost trusted proxy appended."""
    if settings.NUM_PROXIES > 0:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if forwarded:
            return forwarded[-min(settings.NUM_PROXIES, len(forwarded))]
    return request.META.get("REMOTE_ADDR", "")


def _digest(value: str) -> str:
    # Usernames may hold characters a cache key may not, and must not appear in Redis in clear.
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _username_key(username: str) -> str:
    return f"login-failures:user:{_digest(username)}"


def _counters(*, username: str, address: str) -> list[_Counter]:
    return [
        _Counter(_username_key(username), settings.LOGIN_FAILURES_PER_USERNAME),
        _Counter(f"login-failures:addr:{_digest(address)}", settings.LOGIN_FAILURES_PER_ADDRESS),
    ]


def _window_s() -> int:
    return settings.LOGIN_THROTTLE_WINDOW_MINUTES * 60


def login_block_seconds(*, username: str, address: str) -> int:
    """Seconds until this username may sign in from this address again; 0 when it may now."""
    counters = _counters(username=username, address=address)
    keys = [key for counter in counters for key in (counter.key, counter.key + ":since")]
    try:
        values = cache.get_many(keys)
    except _CACHE_DOWN:
        logger.warning("Sign-in throttling is off: the cache cannot be reached.", exc_info=True)
        return 0
    now = time.time()
    wait_s = 0
    for counter in counters:
        if values.get(counter.key, 0) >= counter.limit:
            since = values.get(counter.key + ":since", now)
            wait_s = max(wait_s, math.ceil(since + _window_s() - now), 1)
    return wait_s


def login_failure_record(*, username: str, address: str) -> None:
    """Count one failed sign-in against the username and against the address."""
    window_s = _window_s()
    try:
        for counter in _counters(username=username, address=address):
            # add() only sets a missing key, so the first failure opens the window; incr() keeps its expiry.
            if cache.add(counter.key, 1, timeout=window_s):
                cache.set(counter.key + ":since", time.time(), timeout=window_s)
                continue
            try:
                cache.incr(counter.key)
            except ValueError:  # the window closed between add() and incr()
                cache.set(counter.key, 1, timeout=window_s)
                cache.set(counter.key + ":since", time.time(), timeout=window_s)
    except _CACHE_DOWN:
        logger.warning("Sign-in failure not counted: the cache cannot be reached.", exc_info=True)


def login_success_record(*, username: str) -> None:
    """A correct password clears the username's count (typos before it are forgiven), never the address's."""
    try:
        key = _username_key(username)
        cache.delete_many([key, key + ":since"])
    except _CACHE_DOWN:
        logger.warning("Sign-in count not cleared: the cache cannot be reached.", exc_info=True)


def block_message(wait_s: int) -> str:
    minutes = max(1, math.ceil(wait_s / 60))
    return f"Too many failed sign-in attempts; try again in {minutes} minute{'s' if minutes != 1 else ''}."
