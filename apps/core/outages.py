"""Working on while a dependency (Redis as cache or broker, PostgreSQL) is away.

A `DependencyOutage` is what a code path that can do without its dependency keeps: how often
it did without, a warning at most once a minute rather than one per request, and a short pause
after a failure during which the dependency is not tried at all, so a hung Redis costs one
socket timeout every few seconds instead of one per request. Every instance is listed in
`OUTAGES`, which `GET /healthz` reports (apps.core.health).

`database_unavailable_error(exc)` tells a database that cannot answer now (refused, lost, shutting
down, read-only after a failover) from a query that is wrong, so only the former becomes 503.
"""
from __future__ import annotations

import logging
import threading
import time

from django.db import InterfaceError, InternalError, OperationalError

from apps.core.errors import DatabaseUnavailable

logger = logging.getLogger(__name__)

OUTAGES: dict[str, DependencyOutage] = {}


class DependencyOutage:
    """Counters, a rate-limited warning and a retry pause for one fallback path of one process."""

    def __init__(self, name: str, *, dependency: str, consequence: str, pause_s: float = 5.0,
                 log_interval_s: float = 60.0):  # fmt: skip
        self.name = name
        self.dependency = dependency
        self.consequence = consequence
        self.pause_s = pause_s
        self.log_interval_s = log_interval_s
        self._lock = threading.Lock()
        self.reset()
        OUTAGES[name] = self

    def reset(self) -> None:
        """Forget past failures: zero counters, no pause (tests start each case from here)."""
        with self._lock:
            self.failures = 0  # calls to the dependency that failed
            self.fallbacks = 0  # requests served without it: failures plus those inside a pause
            self._paused_until = 0.0
            self._last_logged = float("-inf")
            self._fallbacks_at_last_log = 0

    def paused(self) -> bool:
        """True shortly after a failure: skip the dependency and take the fallback (then call `skipped`)."""
        return time.monotonic() < self._paused_until

    def failed(self, exc: BaseException) -> None:
        """The dependency failed and the caller fell back."""
        with self._lock:
            self.failures += 1
            self.fallbacks += 1
            now = time.monotonic()
            self._paused_until = now + self.pause_s
            if now - self._last_logged < self.log_interval_s:
                return
            since_last = self.fallbacks - self._fallbacks_at_last_log
            self._last_logged, self._fallbacks_at_last_log = now, self.fallbacks
        logger.warning(
            "%s is unavailable (%s: %s): %s; %d time(s) since the last warning, %d in this process.",
            self.dependency, type(exc).__name__, exc, self.consequence, since_last, self.fallbacks,
        )  # fmt: skip

    def skipped(self) -> None:
        """The caller fell back without trying, inside the pause after a failure."""
        with self._lock:
            self.fallbacks += 1

    def as_dict(self) -> dict[str, int]:
        return {"failures": self.failures, "fallbacks": self.fallbacks}


DATABASE_OUTAGE = DependencyOutage("database", dependency="The database", consequence="answering 503 with Retry-After")


def database_unavailable_error(exc: BaseException) -> DatabaseUnavailable | None:
    """The 503 to answer when `exc` means the database cannot answer now; None for any other error."""
    if not database_unavailable(exc):
        return None
    DATABASE_OUTAGE.failed(exc)
    return DatabaseUnavailable()


# PostgreSQL SQLSTATEs that mean "this server cannot serve you now", not "your query is wrong":
# class 08 connection exceptions, admin/crash shutdown and "cannot connect now" (57P01-57P03),
# too many connections (53300), and a read-only transaction: a standby, or a primary demoted
# during a failover (25006).
_UNAVAILABLE_SQLSTATES = {"57P01", "57P02", "57P03", "53300", "25006"}
# SQLite's equivalents: the file is locked by another writer past the busy timeout, or cannot be opened.
_UNAVAILABLE_SQLITE_MESSAGES = ("database is locked", "unable to open database file")


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database cannot answer now and the same request may succeed later."""
    if isinstance(exc, InterfaceError):  # Django's "connection already closed" and the driver's own
        return True
    if not isinstance(exc, (OperationalError, InternalError)):
        return False  # ProgrammingError, IntegrityError, DataError...: a wrong query stays an error
    cause = exc.__cause__
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES
    if type(cause).__module__.startswith("psycopg"):
        # psycopg raises connection failures and a connection lost mid-query without a SQLSTATE.
        return isinstance(exc, OperationalError)
    message = str(exc).lower()
    return any(text in message for text in _UNAVAILABLE_SQLITE_MESSAGES)
