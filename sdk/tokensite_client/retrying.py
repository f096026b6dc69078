"""`retrying`: throttle events for applications that run their own retry loops.

Like the LLxprt retry hook, it records each wait where the wait happens, so the figure is
the time actually slept. Two forms:

    @ts.retrying(tracker, model="gpt-4o", provider="openai")   # retries 429/503/529 itself
    def ask(): ...

    with ts.retrying(tracker, model="gpt-4o", provider="openai") as retry:
        while True:
            try: return call()
            except RateLimited as exc: retry.sleep(error=exc)   # or retry.record(wait_ms=...)

Either way the scope has one `call_id`; usage recorded inside it (by a shim or by
`tracker.call`) carries the same id, linking the waits to the call they delayed.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
import time
from collections.abc import Callable
from contextvars import Token
from types import TracebackType
from typing import Any, TypeVar

from .context import current_call_id
from .events import THROTTLE_STATUSES, new_event_id
from .retry_after import parse_retry_after_s
from .tracker import Tracker

F = TypeVar("F", bound=Callable[..., Any])


def throttle_status(error: BaseException) -> int | None:
    """The HTTP status of a rate-limit or overload error (openai, litellm, httpx, anthropic
    style exceptions), or None for any other error."""
    status = getattr(error, "status_code", None)
    if status is None:
        status = getattr(getattr(error, "response", None), "status_code", None)
    return status if status in THROTTLE_STATUSES else None


def _retry_after_of(error: BaseException | None) -> float | None:
    if error is None:
        return None
    headers = getattr(getattr(error, "response", None), "headers", None)
    return parse_retry_after_s(headers or getattr(error, "litellm_response_headers", None))


class RetryScope:
    """One logical call and its waits; `attempt` is the number of the next attempt."""

    def __init__(self, owner: retrying) -> None:
        self.owner = owner
        self.call_id = current_call_id.get() or new_event_id()
        self.attempt = 1

    def delay_for(self, error: BaseException | None) -> float:
        """The server's Retry-After when it gave one, else exponential backoff with jitter."""
        retry_after = _retry_after_of(error)
        if retry_after is not None:
            return min(retry_after, self.owner.max_delay_s)
        nominal = self.owner.base_delay_s * 2 ** (self.attempt - 1)
        return min(nominal * random.uniform(0.5, 1.0), self.owner.max_delay_s)

    def sleep(self, seconds: float | None = None, *, error: BaseException | None = None,
              status_code: int | None = None) -> float:
        """Sleep before the next attempt (`seconds`, or as `delay_for(error)` says) and
        record the wait as measured; returns the seconds slept."""
        delay = self.delay_for(error) if seconds is None else seconds
        started_wall, started = time.time(), time.perf_counter()
        try:
            time.sleep(delay)
        finally:
            self._record_slept(started_wall, started, error, status_code)
        return time.perf_counter() - started

    async def async_sleep(self, seconds: float | None = None, *, error: BaseException | None = None,
                          status_code: int | None = None) -> float:
        delay = self.delay_for(error) if seconds is None else seconds
        started_wall, started = time.time(), time.perf_counter()
        try:
            await asyncio.sleep(delay)
        finally:
            self._record_slept(started_wall, started, error, status_code)
        return time.perf_counter() - started

    def record(self, wait_ms: float, *, status_code: int = 429, retry_after_ms: float | None = None) -> str:
        """Record a wait the application slept itself (e.g. in a tenacity `before_sleep`)."""
        event_id = self.owner.tracker.record_throttle(
            wait_ms=wait_ms, status_code=status_code, attempt=self.attempt, retry_after_ms=retry_after_ms,
            model=self.owner.model, provider=self.owner.provider, call_id=self.call_id)
        self.attempt += 1
        return event_id

    def _record_slept(self, started_wall: float, started: float, error: BaseException | None,
                      status_code: int | None) -> None:
        retry_after = _retry_after_of(error)
        self.owner.tracker.record_throttle(
            wait_ms=round((time.perf_counter() - started) * 1000, 3),
            status_code=status_code or (throttle_status(error) if error is not None else None) or 429,
            attempt=self.attempt, retry_after_ms=None if retry_after is None else round(retry_after * 1000, 3),
            model=self.owner.model, provider=self.owner.provider, call_id=self.call_id, timestamp=started_wall)
        self.attempt += 1


class retrying:  # noqa: N801  (used as a decorator, named like one)
    """Decorator (sync or async) that retries rate-limit errors, or context manager that
    hands the app a `RetryScope` for its own loop; both record every wait."""

    def __init__(self, tracker: Tracker, *, model: str | None = None, provider: str | None = None,
                 max_attempts: int = 5, base_delay_s: float = 1.0, max_delay_s: float = 60.0,
                 retry_on: Callable[[BaseException], bool] | None = None) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.tracker = tracker
        self.model = model
        self.provider = provider
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.retry_on = retry_on or (lambda error: throttle_status(error) is not None)
        # Keyed by call id, so one object can scope many threads and tasks at once: each
        # context sees its own current call id at exit.
        self._tokens: dict[str, Token[str | None]] = {}

    # Context manager ----------------------------------------------------------

    def __enter__(self) -> RetryScope:
        inherited = current_call_id.get()
        scope = RetryScope(self)
        if inherited is None:
            self._tokens[scope.call_id] = current_call_id.set(scope.call_id)
        return scope

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        token = self._tokens.pop(current_call_id.get() or "", None)
        if token is not None:
            current_call_id.reset(token)

    async def __aenter__(self) -> RetryScope:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)

    # Decorator ------------------------------------------------------------------

    def __call__(self, function: F) -> F:
        if inspect.iscoroutinefunction(function):
            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self as scope:
                    while True:
                        try:
                            return await function(*args, **kwargs)
                        except Exception as error:
                            if scope.attempt >= self.max_attempts or not self.retry_on(error):
                                raise
                            await scope.async_sleep(error=error)
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self as scope:
                while True:
                    try:
                        return function(*args, **kwargs)
                    except Exception as error:
                        if scope.attempt >= self.max_attempts or not self.retry_on(error):
                            raise
                        scope.sleep(error=error)
        return wrapper  # type: ignore[return-value]
