"""Folding on a thread of the server process: the embedded default (no broker), off the request.

Without REDIS_URL there is no worker to hand a fold to. Folding inside the request after the
commit would make every reply wait for aggregation, so the request only names its project to
this process's *background folder*, a thread started at the first hand-off (one per process;
a forked child starts its own), which folds the project's pending events through the same
service a Celery task calls (`services.project_fold_pending`). Nothing about exactness changes:
events are committed, and queued (ingestion.PendingEvent), before the reply; the thread only
folds, claiming each event exactly once as any fold does (apps.metrics.folding). A process that
dies with events handed over but not folded leaves them queued: the next fold of their project,
or `fold_pending_now`, which `seed_demo` (run by every `make run`) calls, folds them.

Ingest goes first. On SQLite, the embedded default's database, one transaction writes at a time,
so a fold transaction holds off every request that arrives meanwhile. The folder therefore starts
a fold transaction only once no ingest transaction has started for INGEST_QUIET_S, or, under
traffic that never pauses that long, once every FOLD_AT_LEAST_EVERY_S; and SQLite's fold
transactions are short (apps.metrics.folding.SQLITE_EVENTS_PER_TRANSACTION). A burst is stored at
full speed and folded in the pauses, a steady stream is folded a bounded transaction a second
(more once it pauses).

`background_fold_drain` waits, without polling, until everything handed over before the call is
folded. It runs at interpreter exit, so a command that ingested (a quarantine release, a seed)
does not leave its events unfolded; `fold_pending_now` folds on the caller's thread instead.
"""
from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

logger = logging.getLogger(__name__)

# Backoff of a project whose fold failed (the database locked or away): doubling up to the cap.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
LEASE_BUSY_RETRY_S = 0.1
EXIT_DRAIN_S = 60.0
INGEST_QUIET_S = 0.05
FOLD_AT_LEAST_EVERY_S = 1.0


class FoldNotDrained(TimeoutError):
    """The background folder did not finish the projects handed to it in time."""


class _IngestGate:
    """When the folder may begin a fold transaction: ingest transactions of this process go first."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._writing = 0
        self._last_write_started = -math.inf
        self._last_fold_started = -math.inf

    @contextmanager
    def writing(self) -> Iterator[None]:
        # No notification: the folder looks again when its wait times out, so an ingest request
        # never wakes a thread that would compete with it for the GIL.
        with self._condition:
            self._writing += 1
            self._last_write_started = time.monotonic()
        try:
            yield
        finally:
            with self._condition:
                self._writing -= 1

    def fold_turn(self, *, begin: bool) -> None:
        """Wait until ingest has paused for INGEST_QUIET_S with nothing writing, or the last fold
        transaction began FOLD_AT_LEAST_EVERY_S ago; `begin`: a fold transaction begins now."""
        with self._condition:
            while True:
                now = time.monotonic()
                forced_at = self._last_fold_started + FOLD_AT_LEAST_EVERY_S
                quiet_at = now + INGEST_QUIET_S if self._writing else self._last_write_started + INGEST_QUIET_S
                ready_at = min(forced_at, quiet_at)
                if now >= ready_at:
                    if begin:
                        self._last_fold_started = now
                    return
                self._condition.wait(ready_at - now)


def _after_ingest(execute, sql, params, many, context):
    """Django execute wrapper of the folder's connection: each transaction it begins waits for its turn."""
    if sql.startswith("BEGIN"):
        _gate.fold_turn(begin=True)
    return execute(sql, params, many, context)


class _Folder:
    """A thread folding the projects it is handed, a pass over the due ones at a time.

    Hand-offs are numbered; a project waits with the number of its first hand-off not folded yet.
    A drain waits until every hand-off up to its own number is covered: its project was folded,
    in a pass that began after the hand-off, with nothing left over.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        # project id -> [monotonic time it may be folded from, its first hand-off not folded yet]
        self._waiting: dict[int, list] = {}
        self._handed = 0
        self._covered = 0
        self._failures: dict[int, int] = {}
        self._thread: threading.Thread | None = None

    def hand(self, project_id: int) -> None:
        with self._condition:
            self._handed += 1
            self._waiting.setdefault(project_id, [0.0, self._handed])
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="background-fold", daemon=True)
                self._thread.start()
            self._condition.notify_all()

    def drain(self, timeout_s: float) -> None:
        with self._condition:
            ticket = self._handed
            if not self._condition.wait_for(lambda: self._covered >= ticket, timeout=timeout_s):
                raise FoldNotDrained(
                    f"The background folder did not fold its projects within {timeout_s:.0f} s "
                    f"(waiting: {sorted(self._waiting)})."
                )

    def _run(self) -> None:
        try:
            while True:
                with self._condition:
                    self._due_projects(take=False)
                if connection.vendor == "sqlite":
                    # Hand-offs gather while ingest goes on; then one pass folds them all.
                    _gate.fold_turn(begin=False)
                with self._condition:
                    taken = self._due_projects(take=True)
                    covers = self._handed
                left = {project_id: first for project_id, first in taken.items() if not self._fold(project_id)}
                with self._condition:
                    for project_id, first in left.items():
                        entry = self._waiting.setdefault(project_id, [0.0, first])
                        entry[0] = time.monotonic() + self._retry_in_s(project_id)
                        entry[1] = min(entry[1], first)
                    firsts = [first for _, first in self._waiting.values()]
                    self._covered = max(self._covered, min([covers, *(first - 1 for first in firsts)]))
                    self._condition.notify_all()
        finally:
            connection.close()

    def _due_projects(self, *, take: bool) -> dict[int, int]:
        """Wait (holding the condition) until some project is due; the due ones with their first
        hand-off numbers, taken off the waiting list if `take`."""
        while True:
            now = time.monotonic()
            due = {project_id: first for project_id, (at, first) in self._waiting.items() if at <= now}
            if due:
                if take:
                    for project_id in due:
                        del self._waiting[project_id]
                return due
            self._condition.wait(min((at for at, _ in self._waiting.values()), default=now + 3600) - now)

    def _fold(self, project_id: int) -> bool:
        """Fold the project's pending events; False when some are left for another pass."""
        from apps.metrics import services

        try:
            # Only SQLite's transactions begin with a statement the wrapper sees; PostgreSQL's
            # row locks let folds and ingest write side by side.
            with connection.execute_wrapper(_after_ingest):
                fold = services.project_fold_pending(project_id=project_id)
        except Exception:  # noqa: BLE001 - the events stay queued; this thread must live on
            failures = self._failures[project_id] = self._failures.get(project_id, 0) + 1
            logger.exception("Background fold of project %s failed (%d in a row); trying again.", project_id, failures)
            connection.close()  # a broken connection must not serve the next fold
            return False
        self._failures.pop(project_id, None)
        if fold.lease_busy_for_s is not None:
            # Another thread of this process (`fold_pending_now`), or another process sharing the
            # cache, is folding the project: look again shortly, and fold whatever it leaves.
            self._failures[project_id] = 0
            return False
        return not fold.more

    def _retry_in_s(self, project_id: int) -> float:
        failures = self._failures.get(project_id)
        if failures is None:
            return 0.0  # the fold budget ran out: go on at once
        if failures == 0:
            return LEASE_BUSY_RETRY_S
        return min(RETRY_FIRST_S * 2 ** (failures - 1), RETRY_MAX_S)


_folder = _Folder()
_gate = _IngestGate()


def _after_fork_in_child() -> None:
    # A forked child has no folder thread, whatever its parent had: it starts its own.
    global _folder, _gate
    _folder, _gate = _Folder(), _IngestGate()


os.register_at_fork(after_in_child=_after_fork_in_child)


def background_fold_request(*, project_id: int) -> None:
    """Hand the project to this process's background folder (started on first use). Call after
    the events to fold are committed."""
    _folder.hand(project_id)


@contextmanager
def ingest_writing() -> Iterator[None]:
    """Around an ingest request's write transaction: the background folder lets it go first."""
    with _gate.writing():
        yield


def background_fold_drain(*, timeout_s: float = 60.0) -> None:
    """Wait until every project handed over before this call is folded (no-op if none was).

    Raises FoldNotDrained after `timeout_s`, e.g. while the database keeps refusing the fold.
    """
    _folder.drain(timeout_s)


@atexit.register
def _drain_at_exit() -> None:
    try:
        background_fold_drain(timeout_s=EXIT_DRAIN_S)
    except FoldNotDrained:
        logger.warning("Exiting with events not folded yet: the next fold of their projects folds them.")
