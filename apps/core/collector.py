"""Pausing Python's cyclic garbage collector around allocation-heavy work."""
from __future__ import annotations

import gc
import threading
from contextlib import contextmanager

_lock = threading.Lock()
_pausers = 0
_was_enabled = False


@contextmanager
def cyclic_gc_paused():
    """Pause the cyclic collector while the block runs; it resumes when the process's last pauser ends.

    Folds and OTLP conversions allocate many short-lived, acyclic objects (rows, call tuples,
    decoded records) that reference counting frees. Each collection those allocations trigger
    walks every object of the process (Django, litellm's price map) for nothing, which showed as
    whole seconds of fold CPU and as stalls of hundreds of milliseconds in OTLP requests
    (BENCHMARKS.md). Nested and concurrent pausers (threads of one fold, a fold run in-process
    inside an OTLP request) share one count, so the collector is re-enabled exactly once.
    """
    global _pausers, _was_enabled
    with _lock:
        if _pausers == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pausers += 1
    try:
        yield
    finally:
        with _lock:
            _pausers -= 1
            if _pausers == 0 and _was_enabled:
                gc.enable()
