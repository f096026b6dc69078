"""Throttled attempts waiting for the attempt that follows them, across OTLP requests.

A span exporter often sends a failed attempt's span in one request and the retry's span in the
next, so the wait (the gap from the end of the failed attempt to the start of the next attempt of
the same call, DESIGN.md section 9) is only known when the retry arrives. Until then the failed
attempt is held in the shared cache, keyed by project, trace and parent span, for PENDING_TTL_S.
An attempt never followed by a retry (the call failed for good) is dropped when the entry
expires; where the cache is unreachable the throttle is stored at once, with no wait.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

from django.core.cache import cache

logger = logging.getLogger(__name__)

PENDING_TTL_S = 15 * 60
_MAX_PENDING_PER_PARENT = 64

# The project of the OTLP request being converted: pending entries never cross projects.
current_project_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("otlp_project_id", default=None)


@contextlib.contextmanager
def project_scope(project_id: int) -> Iterator[None]:
    token = current_project_id.set(project_id)
    try:
        yield
    finally:
        current_project_id.reset(token)


def _key(trace_id: str, parent_span_id: str) -> str | None:
    project_id = current_project_id.get()
    if project_id is None:
        return None
    return f"otlp:throttle:{project_id}:{trace_id}:{parent_span_id}"


def pending_add(*, trace_id: str, parent_span_id: str, attempt: dict) -> bool:
    """Hold a failed attempt until its retry is seen; False when it cannot be held."""
    key = _key(trace_id, parent_span_id)
    if key is None:
        return False
    try:
        held = cache.get(key) or []
        if len(held) >= _MAX_PENDING_PER_PARENT:
            return False
        if all(item["span_id"] != attempt["span_id"] for item in held):
            held.append(attempt)
        cache.set(key, held, timeout=PENDING_TTL_S)
    except Exception:  # noqa: BLE001 - a cache outage must not fail the request; the throttle is stored now
        logger.warning("OTLP pending throttles: cache unavailable", exc_info=True)
        return False
    return True


def pending_take(*, trace_id: str, parent_span_id: str) -> list[dict]:
    """The failed attempts held under this trace and parent (removed from the cache)."""
    key = _key(trace_id, parent_span_id)
    if key is None:
        return []
    try:
        held = cache.get(key)
        if held:
            cache.delete(key)
        return held or []
    except Exception:  # noqa: BLE001
        logger.warning("OTLP pending throttles: cache unavailable", exc_info=True)
        return []
