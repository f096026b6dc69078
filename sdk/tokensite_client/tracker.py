"""The Tracker: the one object an application holds (issue 5's API contract).

`record_*` builds an event and appends it to a bounded deque, nothing more: no I/O, no
lock held across I/O, no litellm. Delivery is the sender thread's job (sender.py). The
tracker also keeps this process's totals for `summary()`, survives `fork()` (the child
gets an empty queue and its own sender) and closes itself at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import sys
import threading
import uuid
import weakref
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from . import events
from .budgets import DEFAULT_BUDGET_REFRESH_S, BudgetExceeded, BudgetPoller, BudgetStatus
from .calls import CallScope
from .context import current_call, current_call_id, current_step
from .counting import count_tokens as _count_tokens
from .sender import Counters, Sender, encode_event
from .spool import Spool
from .summary import TokenUsage, UsageTotals, print_box

logger = logging.getLogger("tokensite_client")

DEFAULT_MAX_QUEUE = 20_000
DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class DeliveryStats:
    """What happened to the events this tracker recorded in this process."""

    recorded: int
    queued: int
    sent: int
    duplicates: int
    rejected: int
    spooled: int
    replayed: int
    dropped_queue_full: int
    dropped_spool_full: int
    dropped_after_close: int
    spool_bytes: int
    degraded: bool
    delivery_enabled: bool
    last_error: str | None

    @property
    def dropped(self) -> int:
        return self.dropped_queue_full + self.dropped_spool_full + self.dropped_after_close


def default_spool_dir(url: str, api_key: str) -> Path:
    """A per-user cache folder, one per server and key, so a replay never posts events to
    another project than the one they were recorded for."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(f"{url}\0{api_key}".encode()).hexdigest()[:16]
    return base / "tokensite" / "spool" / digest


class Tracker:
    """Records LLM usage and throttling for one session and ships it to TokenSite.

    Without a URL (argument or TOKENSITE_URL) nothing is sent: totals are still kept for
    `summary()` and `print_summary()`.

    `user` names the developer behind every call (the events' `user` attribute, unless a call
    gives its own). With `budget_guard=True`, instrumented calls raise `BudgetExceeded` before
    reaching the provider once a hard budget that applies to them is spent (see budgets.py).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        session_id: str | None = None,
        step: str = "default",
        spool_dir: str | os.PathLike[str] | None = None,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        flush_interval_s: float = 1.0,
        batch_trigger: int = 500,
        timeout_s: float = 10.0,
        user: str | None = None,
        budget_guard: bool = False,
        budget_refresh_s: float = DEFAULT_BUDGET_REFRESH_S,
    ) -> None:
        self.url = url or os.environ.get("TOKENSITE_URL") or None
        self.api_key = api_key or os.environ.get("TOKENSITE_API_KEY") or None
        if self.url and not self.api_key:
            raise ValueError("an api_key (or TOKENSITE_API_KEY) is required when a TokenSite url is set")
        self.session_id = events.check_session_id(session_id or str(uuid.uuid4()))
        self.default_step = events.check_step(step)
        self.user = user or None
        self.budget_guard = budget_guard
        self.max_queue = max_queue
        self.batch_trigger = batch_trigger
        self._flush_interval_s = flush_interval_s
        self._timeout_s = timeout_s
        self._totals = UsageTotals()
        self._queue: deque[dict[str, Any]] = deque()
        self._counters = Counters()
        self._drop_lock = threading.Lock()
        self._dropped_queue_full = 0
        self._dropped_after_close = 0
        self._closed = False
        self._sender: Sender | None = None
        self._sender_lock = threading.Lock()
        self._spool: Spool | None = None
        self._budgets: BudgetPoller | None = None
        if self.url:
            assert self.api_key is not None
            self._budgets = BudgetPoller(url=self.url, api_key=self.api_key, refresh_s=budget_refresh_s,
                                         timeout_s=timeout_s)
            self._budgets.wanted = budget_guard
            directory = Path(spool_dir) if spool_dir is not None else default_spool_dir(self.url, self.api_key)
            self._spool = Spool(directory, max_bytes=spool_max_bytes)
            self._start_sender()
        _live_trackers.add(self)

    # Steps and calls ---------------------------------------------------------

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[str]:
        """Attribute every call recorded inside to step `name`. Nested steps replace the
        outer one until they end; each thread and asyncio task sees its own step."""
        token = current_step.set(events.check_step(name))
        try:
            yield name
        finally:
            current_step.reset(token)

    def current_step(self) -> str:
        return current_step.get() or self.default_step

    def call(self, model: str, provider: str, *, attributes: Mapping[str, Any] | None = None) -> CallScope:
        """Time one call; give it usage with `set_usage(...)` or `set_response(resp)`."""
        return CallScope(self, model=model, provider=provider, attributes=attributes)

    # Recording (the hot path) -------------------------------------------------

    def record_usage(
        self,
        model: str,
        provider: str,
        input_tokens: int,
        output_tokens: int,
        duration_ms: float,
        step: str | None = None,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        tool_tokens: int = 0,
        thought_tokens: int = 0,
        time_to_first_token_ms: float | None = None,
        timestamp: events.Timestamp = None,
        usage_raw: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
        call_id: str | None = None,
        cache_write_1h_tokens: int = 0,
        service_tier: str | None = None,
    ) -> str:
        """Record one completed call; returns its event_id. Raises ValueError for counts
        the server would reject (negative, or subsets larger than their parent).
        `cache_write_1h_tokens` is the part of `cache_write_tokens` written for one hour;
        `service_tier` the tier that served the call (`standard`, `flex`, `priority`, `batch`)."""
        epoch = events.call_start_epoch(timestamp, duration_ms)
        event = events.usage_event(
            session_id=self.session_id, step=step or current_step.get() or self.default_step,
            provider=provider, model=model, start_epoch=epoch, duration_ms=duration_ms,
            input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens, tool_tokens=tool_tokens, thought_tokens=thought_tokens,
            time_to_first_token_ms=time_to_first_token_ms, usage_raw=usage_raw,
            attributes=self._with_user(attributes), call_id=call_id if call_id is not None else current_call_id.get(),
            cache_write_1h_tokens=cache_write_1h_tokens, service_tier=service_tier,
        )
        self._totals.add_usage(
            step=event["step"], provider=provider, model=model, epoch=epoch,
            duration_ms=duration_ms, input_tokens=input_tokens, output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens, cache_write_tokens=cache_write_tokens,
            tool_tokens=tool_tokens, thought_tokens=thought_tokens)
        self._enqueue(event)
        return event["event_id"]

    def record_throttle(
        self,
        wait_ms: float,
        status_code: int = 429,
        attempt: int = 1,
        retry_after_ms: float | None = None,
        model: str | None = None,
        provider: str | None = None,
        call_id: str | None = None,
        *,
        step: str | None = None,
        timestamp: events.Timestamp = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> str:
        """Record one wait before a retry (wait_ms actually slept); returns its event_id.
        Model, provider and call id default to those of the enclosing `call()` scope."""
        scope = current_call.get()
        model = model or (scope.model if scope is not None else "unknown")
        provider = provider or (scope.provider if scope is not None else "unknown")
        epoch = events.call_start_epoch(timestamp, wait_ms)
        event = events.throttle_event(
            session_id=self.session_id, step=step or current_step.get() or self.default_step,
            provider=provider, model=model, start_epoch=epoch, wait_ms=wait_ms, status_code=status_code,
            attempt=attempt, retry_after_ms=retry_after_ms, attributes=self._with_user(attributes),
            call_id=call_id if call_id is not None else current_call_id.get(),
        )
        self._totals.add_throttle(step=event["step"], provider=provider, model=model,
                                  epoch=epoch, wait_ms=wait_ms)
        self._enqueue(event)
        return event["event_id"]

    def _with_user(self, attributes: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        if self.user is None or (attributes is not None and events.DEVELOPER_ATTRIBUTE in attributes):
            return attributes
        return {**(attributes or {}), events.DEVELOPER_ATTRIBUTE: self.user}

    def _enqueue(self, event: dict[str, Any]) -> None:
        if self._spool is None:
            return
        if self._closed:
            with self._drop_lock:
                self._dropped_after_close += 1
            return
        sender = self._sender if self._sender is not None else self._start_sender()
        queue = self._queue
        if len(queue) >= self.max_queue:
            with self._drop_lock:
                self._dropped_queue_full += 1
            return
        queue.append(event)
        if len(queue) >= self.batch_trigger:
            sender.wake.set()

    # Counting and totals ------------------------------------------------------

    def count_tokens(self, model: str, text: str | None = None,
                     messages: Sequence[dict[str, Any]] | None = None) -> int:
        """Tokens of a text or message list with the model's tokeniser, offline (litellm)."""
        return _count_tokens(model, text=text, messages=messages)

    def summary(self) -> list[TokenUsage]:
        """This process's totals: one TokenUsage per step and model, earliest first."""
        return self._totals.snapshot()

    def print_summary(self, file: TextIO | None = None) -> None:
        """Print the "Token Usage Summary" box, with the cost from litellm's local prices."""
        print_box(self.summary(), self._totals.estimate_cost(), file if file is not None else sys.stdout)

    # Budgets ------------------------------------------------------------------

    def budget_status(self) -> list[BudgetStatus]:
        """The budgets of this key's project (and its team's team-wide ones) as last fetched by
        the background thread; empty before the first fetch or without a server. Never does I/O:
        the first call starts the polling (with the guard off) and returns what is there yet."""
        if self._budgets is None:
            return []
        if not self._budgets.wanted:
            self._budgets.wanted = True
            self._ensure_sender()
            if self._sender is not None:
                self._sender.wake.set()
        return list(self._budgets.statuses)

    def check_budget(self, model: str, user: str | None = None) -> None:
        """Raise `BudgetExceeded` when a spent hard budget applies to a call of `model` by `user`
        (default: the tracker's user). The instrumented clients call it when `budget_guard` is on;
        call it before a call the SDK does not instrument (a sync `litellm.completion`)."""
        self._ensure_sender()
        if self._budgets is None:
            return
        user = user if user is not None else self.user
        blocking = self._budgets.blocking(model=model, user=user)
        if blocking is not None:
            raise BudgetExceeded(blocking, model=model, user=user)

    def guard_call(self, model: str, user: str | None = None) -> None:
        """`check_budget` when the guard is on; the hook every instrumented call passes through."""
        if self.budget_guard:
            self.check_budget(model, user)

    def _ensure_sender(self) -> None:
        # A forked child starts its sender lazily; the budget list must keep refreshing there too.
        if self._sender is None and self._spool is not None and not self._closed:
            self._start_sender()

    # Delivery control -----------------------------------------------------------

    def flush(self, timeout: float = 10) -> bool:
        """Send everything recorded so far, retrying on a short backoff while `timeout` lasts;
        True when all of it reached the server (False: some is still queued, or is safe in the
        spool while the server is away)."""
        if self._sender is None:
            return not self._queue
        return self._sender.request_flush(timeout)

    def close(self, timeout: float = DEFAULT_CLOSE_TIMEOUT_S) -> None:
        """Flush within `timeout` seconds, then stop. What could not be sent in time is
        written to the spool for the next tracker, so exit never waits on a dead server."""
        if self._closed:
            return
        self._closed = True
        _live_trackers.discard(self)
        sender = self._sender
        if sender is None or self._spool is None:
            return
        deadline_s = max(timeout, 0.0)
        # One round only: what the server does not take now waits in the spool, exit does not.
        sender.request_flush(deadline_s * 0.8, retry=False)
        if not sender.stop(deadline_s * 0.2):
            # Stuck mid-request: keep the batch and the queue on disk. If the request does
            # succeed after all, the replay is a duplicate the server ignores.
            leftovers = list(sender.inflight)
            while self._queue:
                leftovers.append(encode_event(self._queue.popleft()))
            self._counters.spooled += self._spool.append(leftovers)
        else:
            sender.close_client()
        self._spool.close()

    def stats(self) -> DeliveryStats:
        counters = self._counters
        return DeliveryStats(
            recorded=self._totals.usage_events + self._totals.throttle_events,
            queued=len(self._queue),
            sent=counters.sent,
            duplicates=counters.duplicates,
            rejected=counters.rejected,
            spooled=counters.spooled,
            replayed=counters.replayed,
            dropped_queue_full=self._dropped_queue_full,
            dropped_spool_full=counters.dropped_spool_full,
            dropped_after_close=self._dropped_after_close,
            spool_bytes=self._spool.total_bytes() if self._spool is not None else 0,
            degraded=self._sender.degraded if self._sender is not None else False,
            delivery_enabled=self._spool is not None,
            last_error=counters.last_error,
        )

    # Internals ------------------------------------------------------------------

    def _start_sender(self) -> Sender:
        with self._sender_lock:
            if self._sender is None:
                assert self.url is not None and self.api_key is not None and self._spool is not None
                sender = Sender(
                    url=self.url, api_key=self.api_key, queue=self._queue, spool=self._spool,
                    counters=self._counters, batch_trigger=self.batch_trigger,
                    flush_interval_s=self._flush_interval_s, timeout_s=self._timeout_s,
                    spool_high_water=self.max_queue // 2,
                    periodic=self._budgets.refresh_if_due if self._budgets is not None else None,
                )
                sender.start()
                self._sender = sender
            return self._sender

    def _reset_after_fork(self) -> None:
        """In a forked child: the parent still owns (and will send) what it had queued,
        its sender thread does not exist here, and its locks may have been held."""
        self._queue = deque()
        self._counters = Counters()
        self._totals.reset()
        self._drop_lock = threading.Lock()
        self._sender_lock = threading.Lock()
        self._dropped_queue_full = self._dropped_after_close = 0
        self._sender = None
        if self._spool is not None:
            self._spool.abandon_after_fork()


_live_trackers: weakref.WeakSet[Tracker] = weakref.WeakSet()


def _close_all_at_exit() -> None:
    for tracker in list(_live_trackers):
        tracker.close()


def _reset_all_after_fork() -> None:
    for tracker in list(_live_trackers):
        tracker._reset_after_fork()


atexit.register(_close_all_at_exit)
os.register_at_fork(after_in_child=_reset_all_after_fork)
