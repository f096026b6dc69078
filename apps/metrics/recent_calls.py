"""A session's recent calls: what the fold keeps so that live traffic updates burst and
concurrency peaks without re-reading the session's history.

A batch of new calls can change a session's peaks only through the windows and instants of its
update ranges (algorithms.peak_update_ranges), and recomputing a range needs every folded call
ending at or after the range's `load_from_us` (one widest window before its first new call).
Loading those from the raw table costs a query whose size grows with the session's history, for
every batch. Live traffic arrives in time order, so the calls it needs are the session's last
minutes: the fold keeps them on the session row (SessionAggregate.recent_calls), read and
written under the row lock the fold holds.

Invariant: `calls` holds every folded call of the session ending at or after `horizon_us`. So a
range loading from at or after the horizon (`covers`) finds all it needs in `calls` and the new
calls, exactly, with no query; a range reaching behind it (a late batch) is loaded from the raw
table as before. The horizon trails the latest folded call start by HORIZON_LAG_US, two widest
windows: one for the reach of a range behind its first call, one for a batch whose calls started
before the latest folded one (clients send a call's event when it ends, so a long call started
earlier arrives after shorter ones started later). It only moves forward, and calls ending before
it are dropped, so the state holds about two minutes of calls, plus any call still running then.

No state (None, stored as NULL): a row folded before the state existed, or a session with more
than MAX_CALLS calls in that span (the state would cost more to read and write than the reload).
The fold then reloads as before, its last range with no upper bound (for a batch in time order
that adds no row), and rebuilds the state from what it loaded (`from_folded`).

Retention (apps.ingestion.retention) may delete raw events the state still holds; the fold marks
peaks approximate exactly as before, whenever a range reaches back to the deleted instants,
whichever source served it. No Django import: pure functions over `peaks_kernel` calls.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import chain

from apps.metrics import algorithms as algo
from apps.metrics.peaks_kernel import CallRow

HORIZON_LAG_US = 2 * max(algo.BURST_WINDOWS_US)
# A session above this many calls in the last two minutes keeps no state and reloads: the state is
# read and rewritten by every fold of the session.
MAX_CALLS = 1000
# `load_to_us` of a load range with no upper bound: its calls are all the folded calls ending at
# or after its `load_from_us`, whenever they started (a datetime every database holds).
OPEN_END_US = algo.epoch_us(datetime(9999, 1, 1, tzinfo=timezone.utc))


@dataclass(frozen=True, slots=True)
class RecentCalls:
    """Every folded call of a session ending at or after `horizon_us` (and maybe a few more)."""

    horizon_us: int
    calls: list[CallRow]

    def covers(self, update: algo.PeakUpdateRange) -> bool:
        """Whether the folded calls `update` needs are all in `calls`."""
        return update.load_from_us >= self.horizon_us

    def advanced(self, new_calls: list[CallRow]) -> RecentCalls | None:
        """The state once `new_calls` are folded: the horizon moved up to HORIZON_LAG_US before the
        latest call start (never back), the calls ending before it dropped; None beyond MAX_CALLS."""
        calls = self.calls + new_calls
        horizon_us = self.horizon_us
        if calls:
            horizon_us = max(horizon_us, max(call[0] for call in calls) - HORIZON_LAG_US)
        kept = [call for call in calls if call[2] >= horizon_us]
        return None if len(kept) > MAX_CALLS else RecentCalls(horizon_us, kept)


def of_new_session(new_calls: list[CallRow]) -> RecentCalls | None:
    """The state of a session whose only folded calls are `new_calls`. Any horizon holds them all,
    so it is the lowest `advanced` allows (a next batch reaching one window behind the earliest
    call then needs no reload)."""
    if not new_calls:
        return None
    return RecentCalls(max(call[0] for call in new_calls) - HORIZON_LAG_US, []).advanced(new_calls)


def from_folded(folded_calls: list[CallRow], *, horizon_us: int) -> RecentCalls | None:
    """The state rebuilt from a reload: `folded_calls` must hold every folded call (the new ones
    included) ending at or after `horizon_us`, e.g. a load range with `load_to_us = OPEN_END_US`."""
    return RecentCalls(horizon_us, []).advanced([call for call in folded_calls if call[2] >= horizon_us])


def to_bytes(state: RecentCalls | None) -> bytes | None:
    """Stored form: little-endian int64s, the horizon then each call's five values. Binary, not
    JSON: a session row is rewritten by every fold of the session, and as JSON the state was three
    quarters of the row (BENCHMARKS.md,
    "Overlapping the grouped sums with the peaks, and recent calls as bytes")."""
    if state is None:
        return None
    values = [state.horizon_us, *chain.from_iterable(state.calls)]
    return struct.pack(f"<{len(values)}q", *values)


def from_bytes(stored: bytes | memoryview | None) -> RecentCalls | None:
    """The state `to_bytes` stored, or None for NULL."""
    if stored is None:
        return None
    horizon_us, *values = struct.unpack(f"<{len(stored) // 8}q", stored)
    return RecentCalls(horizon_us, list(zip(*[iter(values)] * 5)))
