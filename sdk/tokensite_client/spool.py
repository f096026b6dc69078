"""The on-disk spool: where events wait while TokenSite cannot be reached.

Layout: one folder of segment files, each a JSON line per event. A tracker appends to its
own active segment (`*.open`, held under an exclusive `flock`), seals it (`*.jsonl`) to
replay it, and deletes a segment only after the server has acknowledged every event in it.
Names start with the creation time in nanoseconds, so sorting names replays oldest first.
A crash may leave events both delivered and still spooled; the server deduplicates by
`event_id`, which turns this at-least-once replay into exactly-once storage.

Locks are `flock` locks: the kernel drops them when their holder dies, so a segment left
`*.open` by a crashed process becomes replayable by the next tracker, while a live
writer's or another replayer's segment is skipped. POSIX only (Linux, macOS).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

OPEN_SUFFIX = ".open"
SEALED_SUFFIX = ".jsonl"
_CREATING_SUFFIX = ".creating"


@dataclass
class ClaimedSegment:
    """A segment locked by this process for replay: its valid lines, oldest first."""

    path: Path
    lines: list[bytes]
    corrupt_lines: int
    _handle: BinaryIO

    def release(self, *, delete: bool) -> None:
        """Give the segment back, deleting it first when all its events were delivered."""
        if delete:
            self.path.unlink(missing_ok=True)
        self._handle.close()


class Spool:
    """Append-only, size-capped event storage in one folder, shared safely by processes.

    Thread-safe; its lock is held across file I/O, which is fine because only the sender
    thread and `close()` use it, never `record_*`.
    """

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int = 4 * 1024 * 1024) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._active: BinaryIO | None = None
        self._active_path: Path | None = None
        self._active_bytes = 0
        directory.mkdir(parents=True, exist_ok=True)

    def total_bytes(self) -> int:
        """Bytes held by every segment in the folder, any process's."""
        total = 0
        for path in self._segment_paths():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                continue
        return total

    def append(self, lines: list[bytes]) -> int:
        """Write `lines` (each ending in a newline) and fsync once; returns how many were
        written. Lines that would take the folder past `max_bytes` are refused."""
        if not lines:
            return 0
        with self._lock:
            room = self.max_bytes - self.total_bytes()
            accepted: list[bytes] = []
            for line in lines:
                room -= len(line)
                if room < 0:
                    break
                accepted.append(line)
            if not accepted:
                return 0
            if self._active is None or self._active_bytes >= self.segment_bytes:
                self._seal_locked()
                self._open_segment_locked()
            assert self._active is not None
            data = b"".join(accepted)
            self._active.write(data)
            self._active.flush()
            os.fsync(self._active.fileno())
            self._active_bytes += len(data)
            return len(accepted)

    def seal(self) -> None:
        """Close the active segment so it can be replayed (by this or any tracker)."""
        with self._lock:
            self._seal_locked()

    def pending(self) -> list[Path]:
        """Segments that may hold events to replay, oldest first."""
        return sorted(self._segment_paths(), key=lambda path: path.name)

    def claim(self, path: Path) -> ClaimedSegment | None:
        """Lock a segment for replay, or None when another live process holds it (its
        writer or another replayer) or it is already gone."""
        if path == self._active_path:
            return None
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        if os.fstat(handle.fileno()).st_nlink == 0:
            handle.close()  # deleted by a replayer that finished while we waited to open
            return None
        lines, corrupt = _valid_lines(handle)
        return ClaimedSegment(path=path, lines=lines, corrupt_lines=corrupt, _handle=handle)

    def close(self) -> None:
        self.seal()

    def abandon_after_fork(self) -> None:
        """Forget the parent's active segment without touching it: the parent still writes it."""
        self._lock = threading.Lock()
        self._active = None
        self._active_path = None
        self._active_bytes = 0

    def _segment_paths(self) -> Iterator[Path]:
        for entry in os.scandir(self.directory):
            if entry.name.endswith((OPEN_SUFFIX, SEALED_SUFFIX)):
                yield Path(entry.path)

    def _open_segment_locked(self) -> None:
        stem = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"
        creating = self.directory / (stem + _CREATING_SUFFIX)
        handle = open(creating, "ab")
        # Lock before the name becomes visible to replayers, so none can claim it empty.
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        path = self.directory / (stem + OPEN_SUFFIX)
        os.rename(creating, path)
        _fsync_directory(self.directory)
        self._active, self._active_path, self._active_bytes = handle, path, 0

    def _seal_locked(self) -> None:
        if self._active is None or self._active_path is None:
            return
        sealed = self._active_path.with_suffix(SEALED_SUFFIX)
        if self._active_bytes:
            os.rename(self._active_path, sealed)
        else:
            self._active_path.unlink(missing_ok=True)
        _fsync_directory(self.directory)
        self._active.close()
        self._active, self._active_path, self._active_bytes = None, None, 0


def _valid_lines(handle: BinaryIO) -> tuple[list[bytes], int]:
    """The lines that parse as JSON objects; a crash mid-write can leave a torn last line."""
    lines: list[bytes] = []
    corrupt = 0
    for line in handle:
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except ValueError:
            corrupt += 1
            continue
        if isinstance(parsed, dict):
            lines.append(line if line.endswith(b"\n") else line + b"\n")
        else:
            corrupt += 1
    return lines, corrupt


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
