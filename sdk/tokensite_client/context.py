"""Context variables that carry the current step and call across threads and asyncio tasks.

They are module-level rather than per tracker because a step or a call is a region of
the application's code: a shim, a `retrying` scope and the app's own `record_usage` inside
that region must all see the same values. contextvars gives each thread and each asyncio
task its own value, which is what makes `with tracker.step(...)` safe under concurrency.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .calls import CallScope

current_step: ContextVar[str | None] = ContextVar("tokensite_step", default=None)
current_call_id: ContextVar[str | None] = ContextVar("tokensite_call_id", default=None)
current_call: ContextVar["CallScope | None"] = ContextVar("tokensite_call", default=None)
