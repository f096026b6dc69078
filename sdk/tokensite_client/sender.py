"""The background sender: moves events from the in-memory queue to TokenSite, or to the spool.

One daemon thread per tracker and process. It wakes every `flush_interval_s`, or sooner
when `batch_trigger` events wait, and posts gzip batches of up to `max_batch` events.
While the server answers, the queue goes straight to it; when a batch keeps failing the
sender turns *degraded*: the batch and everything queued after it go to the spool, and
the server is probed by replaying the spool (oldest first) on an exponential backoff with
jitter. When a replay empties the spool, live sending resumes. This keeps ordering simple
(spooled events always go first) and memory bounded whatever the outage lasts.
"""

from __future__ import annotations

import enum
import gzip
import json
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from .events import MAX_BATCH_EVENTS
from .retry_after import parse_retry_after_s
from .spool import Spool

logger = logging.getLogger("tokensite_client")

MAX_BATCH_BYTES = 4 * 1024 * 1024  # uncompressed; the server accepts 8 MiB decompressed
IMMEDIATE_ATTEMPTS = 3
IMMEDIATE_BACKOFF_S = 0.2
DEGRADED_BACKOFF_S = 1.0
DEGRADED_BACKOFF_MAX_S = 30.0
LONGEST_IMMEDIATE_RETRY_AFTER_S = 2.0
FLUSH_BACKOFF_MAX_S = 2.0


class Outcome(enum.Enum):
    DELIVERED = "delivered"  # stored, duplicate, or rejected for good: never send again
    RETRY = "retry"  # network error, 5xx, 429: the same batch may succeed later
    KEEP = "keep"  # 401/403: only a tracker with a valid key can deliver it; keep it on disk
    TOO_LARGE = "too_large"  # 413: split and resend


@dataclass
class PostResult:
    outcome: Outcome
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    retry_after_s: float | None = None
    error: str | None = None


@dataclass
class Counters:
    """Delivery counters, written by the sender thread and read by `Tracker.stats()`."""

    sent: int = 0
    duplicates: int = 0
    rejected: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped_spool_full: int = 0
    spool_corrupt_lines: int = 0
    post_failures: int = 0
    last_error: str | None = None
    rejection_kinds: set[tuple[str, str]] = field(default_factory=set)


def encode_event(event: dict[str, Any]) -> bytes:
    """One spool/batch line: compact JSON ending in a newline."""
    return json.dumps(event, separators=(",", ":"), default=str).encode() + b"\n"


def split_batches(lines: list[bytes]) -> list[list[bytes]]:
    """Cut lines into batches within the server's event and size limits."""
    batches: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and (len(current) >= MAX_BATCH_EVENTS or size + len(line) > MAX_BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        batches.append(current)
    return batches


class Sender:
    """Owns the HTTP client and the delivery loop for one tracker in one process."""

    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        queue: deque[dict[str, Any]],
        spool: Spool,
        counters: Counters,
        batch_trigger: int,
        flush_interval_s: float,
        timeout_s: float,
        spool_high_water: int,
        periodic: Callable[[httpx.Client], None] | None = None,
    ) -> None:
        self.endpoint = url.rstrip("/") + "/api/v1/events"
        self.api_key = api_key
        self.queue = queue
        self.spool = spool
        self.counters = counters
        self.batch_trigger = batch_trigger
        self.flush_interval_s = flush_interval_s
        self.timeout_s = timeout_s
        self.spool_high_water = spool_high_water
        # Other reads the tracker keeps fresh (budget status), run on this thread between sends.
        self.periodic = periodic
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Condition()
        self._flush_requested = 0
        self._flush_done = 0
        self._degraded = False
        self._replay_pending = False  # healthy, but the queue's overflow went to the spool
        self._next_probe_at = 0.0
        # Set by a Retry-After or a refused key: no flush retries before this moment.
        self._hold_off_until = 0.0
        self._backoff_s = DEGRADED_BACKOFF_S
        self.inflight: list[bytes] = []
        self._client: httpx.Client | None = None
        self._thread = threading.Thread(target=self._run, name="tokensite-sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def degraded(self) -> bool:
        return self._degraded

    def request_flush(self, timeout_s: float, *, retry: bool = True) -> bool:
        """Ask the thread to send (or spool) everything queued now and wait for it; True
        when nothing is left undelivered (queue empty, spool replayed).

        With `retry`, a round that leaves events undelivered is tried again on a short,
        growing backoff until the timeout is spent, never before a Retry-After the server
        gave; False at once when that lies beyond the timeout or the key was refused.
        """
        deadline = time.monotonic() + timeout_s
        backoff_s = IMMEDIATE_BACKOFF_S
        while True:
            if not self._flush_round(deadline):
                return False
            if self._all_delivered():
                return True
            if not retry or self._stop.is_set() or self._hold_off_until >= deadline:
                return False
            retry_at = min(max(time.monotonic() + _jittered(backoff_s), self._hold_off_until), deadline)
            if self._stop.wait(max(0.0, retry_at - time.monotonic())) or time.monotonic() >= deadline:
                return self._all_delivered()
            backoff_s = min(backoff_s * 2, FLUSH_BACKOFF_MAX_S)

    def _flush_round(self, deadline: float) -> bool:
        """One pass of the thread over the queue and the spool; False when the deadline came first."""
        with self._flush_lock:
            self._flush_requested += 1
            wanted = self._flush_requested
        self.wake.set()
        with self._flush_lock:
            while self._flush_done < wanted and self._thread.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._flush_lock.wait(remaining)
        return True

    def _all_delivered(self) -> bool:
        return not self.queue and not self._degraded and not self._replay_pending and not self.inflight

    def stop(self, timeout_s: float) -> bool:
        """Stop the thread; True when it ended within the timeout."""
        self._stop.set()
        self.wake.set()
        self._thread.join(max(timeout_s, 0.0))
        return not self._thread.is_alive()

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # The loop ---------------------------------------------------------------

    def _run(self) -> None:
        self._degraded = bool(self.spool.pending())
        next_tick = time.monotonic() + self.flush_interval_s
        while True:
            stopping = self._stop.is_set()
            with self._flush_lock:
                flush_wanted = self._flush_requested
            flushing = flush_wanted > self._flush_done
            now = time.monotonic()
            try:
                if self._degraded:
                    self._spool_queue()
                    if flushing or now >= self._next_probe_at:
                        self._probe()
                elif flushing or stopping or now >= next_tick or len(self.queue) >= self.batch_trigger:
                    next_tick = now + self.flush_interval_s
                    self._send_queue(flushing or stopping)
                    if self._replay_pending and not self._degraded:
                        self._replay_pending = False
                        if not self._replay():
                            self._enter_degraded([])
                if self.periodic is not None and not stopping:
                    self.periodic(self._http())
            except Exception as exc:  # the sender must outlive any surprise; say why loudly
                self.counters.last_error = repr(exc)
                logger.exception("tokensite sender error; events stay queued or spooled")
            if flushing:
                with self._flush_lock:
                    self._flush_done = flush_wanted
                    self._flush_lock.notify_all()
            if stopping:
                return
            deadline = self._next_probe_at if self._degraded else next_tick
            self.wake.wait(max(0.0, min(deadline - time.monotonic(), self.flush_interval_s)))
            self.wake.clear()

    def _take(self, limit: int = MAX_BATCH_EVENTS) -> list[bytes]:
        events: list[bytes] = []
        while len(events) < limit:
            try:
                events.append(encode_event(self.queue.popleft()))
            except IndexError:
                break
        return events

    def _send_queue(self, drain: bool) -> None:
        """Send what is queued; with `drain`, keep going until the queue is empty."""
        while self.queue:
            if len(self.queue) > self.spool_high_water:
                self._spool_overflow()
            lines = self._take()
            for batch in split_batches(lines):
                self.inflight = batch
                if not self._deliver(batch):
                    self._enter_degraded(batch)
                    self.inflight = []
                    return
                self.inflight = []
            if not drain and len(self.queue) < self.batch_trigger:
                return

    def _deliver(self, batch: list[bytes]) -> bool:
        """Post one batch with a few quick retries; False when it should be spooled."""
        for attempt in range(1, IMMEDIATE_ATTEMPTS + 1):
            result = self._post(batch)
            if result.outcome is Outcome.DELIVERED:
                return True
            if result.outcome is Outcome.TOO_LARGE:
                return self._deliver_halves(batch)
            if result.outcome is Outcome.KEEP:
                self._hold_off(DEGRADED_BACKOFF_MAX_S)
                return False
            wait_s = result.retry_after_s if result.retry_after_s is not None else _jittered(
                IMMEDIATE_BACKOFF_S * 2 ** (attempt - 1))
            if attempt == IMMEDIATE_ATTEMPTS or wait_s > LONGEST_IMMEDIATE_RETRY_AFTER_S or self._stop.is_set():
                if result.retry_after_s is not None:
                    self._hold_off(result.retry_after_s)
                return False
            self._stop.wait(wait_s)
        return False

    def _deliver_halves(self, batch: list[bytes]) -> bool:
        if len(batch) == 1:
            self.counters.rejected += 1
            self._log_rejection_once("body", "a single event is larger than the server accepts")
            return True
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            if not self._deliver(half):
                self._spool_lines(half)
        return True

    def _enter_degraded(self, batch: list[bytes]) -> None:
        self._spool_lines(batch)
        self._spool_queue()
        if not self._degraded:
            self._degraded = True
            self._backoff_s = DEGRADED_BACKOFF_S
            logger.warning("TokenSite unreachable (%s); spooling events to %s",
                           self.counters.last_error, self.spool.directory)
        self._next_probe_at = max(self._next_probe_at, time.monotonic() + _jittered(self._backoff_s))

    def _probe(self) -> None:
        """Replay the spool; on success resume live sending, else back off further."""
        if self._replay():
            self._degraded = False
            self._backoff_s = DEGRADED_BACKOFF_S
            logger.info("TokenSite reachable again; spool replayed")
            return
        self._backoff_s = min(self._backoff_s * 2, DEGRADED_BACKOFF_MAX_S)
        self._next_probe_at = max(self._next_probe_at, time.monotonic() + _jittered(self._backoff_s))

    def _replay(self) -> bool:
        """Send spooled segments oldest first; True when none is left to send."""
        self.spool.seal()
        for path in self.spool.pending():
            segment = self.spool.claim(path)
            if segment is None:
                continue  # another live tracker writes or replays it
            self.counters.spool_corrupt_lines += segment.corrupt_lines
            delivered_all = True
            for batch in split_batches(segment.lines):
                result = self._post(batch)
                if result.outcome is Outcome.TOO_LARGE:
                    delivered_all = self._deliver_halves(batch)
                elif result.outcome is not Outcome.DELIVERED:
                    if result.outcome is Outcome.KEEP:
                        self._hold_off(DEGRADED_BACKOFF_MAX_S)
                    elif result.retry_after_s is not None:
                        self._hold_off(result.retry_after_s)
                    delivered_all = False
                    break
                self.counters.replayed += len(batch)
            segment.release(delete=delivered_all)
            if not delivered_all:
                return False
        return True

    def _hold_off(self, seconds: float) -> None:
        self._next_probe_at = self._hold_off_until = time.monotonic() + seconds

    def _spool_queue(self) -> None:
        while self.queue:
            self._spool_lines(self._take())

    def _spool_overflow(self) -> None:
        """Move the queue's excess to disk before a send that may take a while, so a
        slow server fills the spool rather than dropping new events. The next round
        replays them."""
        excess = len(self.queue) - self.spool_high_water
        while excess > 0:
            lines = self._take(min(excess, MAX_BATCH_EVENTS))
            if not lines:
                break
            self._spool_lines(lines)
            excess -= len(lines)
        self._replay_pending = True

    def _spool_lines(self, lines: list[bytes]) -> None:
        written = self.spool.append(lines)
        self.counters.spooled += written
        if written < len(lines):
            self.counters.dropped_spool_full += len(lines) - written
            logger.error("TokenSite spool %s is full; dropped %d events", self.spool.directory, len(lines) - written)

    # HTTP -------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 3.0)))
        return self._client

    def _post(self, batch: list[bytes]) -> PostResult:
        body = gzip.compress(b'{"events":[' + b",".join(line.rstrip(b"\n") for line in batch) + b"]}", 6)
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        }
        try:
            response = self._http().post(self.endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            self.counters.post_failures += 1
            self.counters.last_error = f"{type(exc).__name__}: {exc}"
            return PostResult(Outcome.RETRY, error=self.counters.last_error)
        return self._interpret(response, batch)

    def _interpret(self, response: httpx.Response, batch: list[bytes]) -> PostResult:
        status = response.status_code
        if status in (200, 201, 202, 207):
            payload = _json_or_empty(response)
            rejected = payload.get("rejected") or []
            for rejection in rejected:
                self._note_rejection(rejection)
            accepted = int(payload.get("accepted", len(batch) - len(rejected)))
            duplicates = int(payload.get("duplicates", 0))
            self.counters.sent += accepted
            self.counters.duplicates += duplicates
            self.counters.rejected += len(rejected)
            # The server answers again: the last error is history, and so is any hold-off.
            self.counters.last_error = None
            self._hold_off_until = 0.0
            return PostResult(Outcome.DELIVERED, accepted, duplicates, len(rejected))
        error = _error_text(response)
        self.counters.last_error = f"HTTP {status}: {error}"
        if status == 429 or status >= 500:
            self.counters.post_failures += 1
            retry_after = parse_retry_after_s(response.headers) if status in (429, 503) else None
            return PostResult(Outcome.RETRY, retry_after_s=retry_after, error=error)
        if status in (401, 403):
            self._log_rejection_once(f"http_{status}", f"TokenSite refused the API key ({error}); events kept in the spool")
            return PostResult(Outcome.KEEP, error=error)
        if status == 413:
            return PostResult(Outcome.TOO_LARGE, error=error)
        # 400, 415 and other 4xx: the batch itself is wrong and will never be accepted.
        self.counters.rejected += len(batch)
        self._log_rejection_once(f"http_{status}", f"TokenSite rejected a batch of {len(batch)} events: {error}")
        return PostResult(Outcome.DELIVERED, rejected=len(batch), error=error)

    def _note_rejection(self, rejection: dict[str, Any]) -> None:
        errors = rejection.get("errors") or {}
        for field_name, messages in errors.items():
            for message in messages if isinstance(messages, list) else [messages]:
                self._log_rejection_once(field_name, str(message))

    def _log_rejection_once(self, field_name: str, message: str) -> None:
        kind = (field_name, message)
        if kind in self.counters.rejection_kinds:
            return
        self.counters.rejection_kinds.add(kind)
        logger.error("TokenSite rejected events: %s: %s (logged once per kind)", field_name, message)


def _jittered(seconds: float) -> float:
    """Full-range jitter around the nominal delay, so trackers restarted together spread out."""
    return seconds * random.uniform(0.5, 1.5)


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _error_text(response: httpx.Response) -> str:
    error = _json_or_empty(response).get("error")
    if isinstance(error, dict):
        return f"{error.get('code', '?')}: {error.get('message', '')}"
    return response.text[:200]

