"""Attempts of one agent call seen across export requests (Gemini CLI, Qwen Code, Codex CLI).

These agents log a refused attempt (429/503/529) when it ends and the next attempt when it starts,
but say nothing of the wait between them, and their batch exporters often send the two records in
different requests (Gemini CLI backs off for seconds, longer than its export delay). A source
therefore notes each refused attempt and each attempt start in the shared cache (Redis in
production, in-process under `make run`), keyed by the agent, the session and the call; the next
attempt start turns the noted failures into throttle events whose wait is the gap from the failed
attempt's end to that start (DESIGN.md section 9). Event ids stay derived from the records, so
a resent batch changes nothing; a refusal never followed by another attempt yields no wait.
Where the cache cannot be reached, nothing is noted and nothing paired (the request still
succeeds and its usage is stored): those refusals are not counted (README, "Refused attempts
waiting for their retry").
"""
from __future__ import annotations

import hashlib
import logging

from django.core.cache import cache

from apps.otlp.pending_throttles import current_project_id

logger = logging.getLogger(__name__)

PENDING_TTL_SECONDS = 30 * 60


def _key(kind: str, source: str, session_id: str, call_key: str) -> str:
    # Scoped to the request's project: two projects' sessions never pair their attempts.
    scope = str(current_project_id.get())
    digest = hashlib.sha256("\x1f".join((scope, source, session_id, call_key)).encode()).hexdigest()[:32]
    return f"otlp-agent-{kind}:{digest}"


def attempt_failed(*, source: str, session_id: str, call_key: str, failure: dict) -> None:
    """Note a refused attempt; `failure` holds at least `ended_ns` (when the refusal arrived)."""
    key = _key("failed", source, session_id, call_key)
    try:
        pending = [item for item in cache.get(key, []) if item["ended_ns"] != failure["ended_ns"]]
        pending.append(failure)
        cache.set(key, pending, PENDING_TTL_SECONDS)
    except Exception:  # noqa: BLE001 - a cache outage must not fail the export; the refusal goes unpaired
        logger.warning("OTLP agent attempts: cache unavailable, refused attempt not held", exc_info=True)


def attempt_started(*, source: str, session_id: str, call_key: str, started_ns: int) -> list[dict]:
    """Note that an attempt started; return (and forget) the refused attempts that ended before it."""
    key = _key("failed", source, session_id, call_key)
    try:
        cache.set(_key("started", source, session_id, call_key), started_ns, PENDING_TTL_SECONDS)
        pending = cache.get(key, [])
        earlier = [item for item in pending if item["ended_ns"] <= started_ns]
        if earlier:
            later = [item for item in pending if item["ended_ns"] > started_ns]
            cache.set(key, later, PENDING_TTL_SECONDS) if later else cache.delete(key)
    except Exception:  # noqa: BLE001 - see attempt_failed
        logger.warning("OTLP agent attempts: cache unavailable, attempts not paired", exc_info=True)
        return []
    return sorted(earlier, key=lambda item: item["ended_ns"])


def attempt_start_of(*, source: str, session_id: str, call_key: str) -> int | None:
    """When the latest attempt of the call started, if an earlier record said so."""
    try:
        return cache.get(_key("started", source, session_id, call_key))
    except Exception:  # noqa: BLE001 - see attempt_failed; the call's own timing is used instead
        logger.warning("OTLP agent attempts: cache unavailable", exc_info=True)
        return None
