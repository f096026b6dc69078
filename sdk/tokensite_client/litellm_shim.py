"""`LiteLLMCallback`: a litellm CustomLogger that records usage and rate-limit failures.

litellm calls its loggers with keyword arguments, so every method keeps litellm's own
parameter names `(self, kwargs, response_obj, start_time, end_time)`; a different
spelling fails silently. Timing comes from litellm's `standard_logging_object` (epoch
floats, where `start_time`/`end_time` are naive local datetimes). litellm runs sync
callbacks on a thread of its own but copies the caller's context, so the step and the
enclosing `retrying` scope are still visible here. Some paths report one call to both
the sync and the async method: each litellm call id is recorded once.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

from .calls import usage_dict
from .context import current_call_id
from .events import THROTTLE_STATUSES
from .litellm_loader import import_litellm
from .retry_after import retry_after_ms
from .tracker import Tracker
from .usage import InvalidUsageError, canonical_service_tier, normalize_usage

_litellm = import_litellm()
from litellm.integrations.custom_logger import CustomLogger  # noqa: E402  (after the offline switches)

logger = logging.getLogger("tokensite_client")

_REMEMBERED_CALL_IDS = 4096


class LiteLLMCallback(CustomLogger):  # type: ignore[misc]
    """Records a usage event per successful litellm call and a throttle event per
    rate-limit or overload failure, and applies the tracker's budget guard to async calls.
    Use: `litellm.callbacks = [LiteLLMCallback(tracker)]`."""

    def __init__(self, tracker: Tracker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tracker = tracker
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._seen_lock = threading.Lock()

    def log_success_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self._record_success(kwargs, response_obj)

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self._record_success(kwargs, response_obj)

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self._record_failure(kwargs)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self._record_failure(kwargs)

    async def async_pre_call_deployment_hook(self, kwargs, call_type):  # type: ignore[no-untyped-def]
        """litellm's one hook that runs before an async call and lets an exception through: the
        budget guard's place. (Before a sync call litellm swallows whatever a logger raises, so
        sync callers use `tracker.check_budget(model)` first.)"""
        model = kwargs.get("model")
        if isinstance(model, str):
            self.tracker.guard_call(model)
        return None

    def _first_report(self, kind: str, kwargs: dict[str, Any]) -> bool:
        call_id = kwargs.get("litellm_call_id")
        if not call_id:
            return True
        with self._seen_lock:
            if (kind, call_id) in self._seen:
                return False
            self._seen[(kind, call_id)] = None
            if len(self._seen) > _REMEMBERED_CALL_IDS:
                self._seen.popitem(last=False)
        return True

    def _record_success(self, kwargs: dict[str, Any], response_obj: Any) -> None:
        raw = usage_dict(response_obj)
        if raw is None or not self._first_report("success", kwargs):
            return
        logged = kwargs.get("standard_logging_object") or {}
        model = str(logged.get("model") or kwargs.get("model") or "unknown")
        provider = _provider(kwargs, logged)
        try:
            counts = normalize_usage(provider, raw)
        except InvalidUsageError as exc:
            logger.warning("tokensite: litellm usage for %s not recorded: %s", model, exc)
            return
        start, end = logged.get("startTime"), logged.get("endTime")
        duration_ms = round(max(end - start, 0.0) * 1000, 3) if start and end else 0.0
        ttft_ms = None
        first = logged.get("completionStartTime")
        if kwargs.get("stream") and start and first and start <= first <= (end or first):
            ttft_ms = round((first - start) * 1000, 3)
        self.tracker.record_usage(
            model=model, provider=provider, input_tokens=counts.input_tokens,
            output_tokens=counts.output_tokens, duration_ms=duration_ms,
            cache_read_tokens=counts.cache_read_tokens, cache_write_tokens=counts.cache_write_tokens,
            tool_tokens=counts.tool_tokens, thought_tokens=counts.thought_tokens,
            time_to_first_token_ms=ttft_ms, timestamp=start or None,
            call_id=None if _in_call_scope() else kwargs.get("litellm_call_id"),
            cache_write_1h_tokens=counts.cache_write_1h_tokens,
            service_tier=counts.service_tier or _response_service_tier(response_obj),
        )

    def _record_failure(self, kwargs: dict[str, Any]) -> None:
        exception = kwargs.get("exception")
        status = getattr(exception, "status_code", None)
        if status not in THROTTLE_STATUSES or not self._first_report("failure", kwargs):
            return
        logged = kwargs.get("standard_logging_object") or {}
        response = getattr(exception, "response", None)
        headers = getattr(response, "headers", None) or getattr(exception, "litellm_response_headers", None)
        # litellm reports the failure, not the wait that may follow it: that wait is
        # measured only when the app retries through `retrying` (or the OpenAI shim).
        self.tracker.record_throttle(
            wait_ms=0, status_code=int(status), retry_after_ms=retry_after_ms(headers),
            model=str(logged.get("model") or kwargs.get("model") or "unknown"),
            provider=_provider(kwargs, logged),
            call_id=None if _in_call_scope() else kwargs.get("litellm_call_id"),
            attributes={"wait_measured": False},
        )


def _provider(kwargs: dict[str, Any], logged: dict[str, Any]) -> str:
    params = kwargs.get("litellm_params") or {}
    return str(logged.get("custom_llm_provider") or params.get("custom_llm_provider") or "unknown")


def _in_call_scope() -> bool:
    """Inside `retrying` or `tracker.call`, whose call id links the waits to this usage."""
    return current_call_id.get() is not None


def _response_service_tier(response: Any) -> str | None:
    tier = response.get("service_tier") if isinstance(response, dict) else getattr(response, "service_tier", None)
    return canonical_service_tier(tier)
