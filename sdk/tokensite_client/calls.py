"""`tracker.call(...)`: one LLM call timed and recorded, for clients the SDK does not shim.

The OpenAI shim uses the same scope internally, so a hand-instrumented call and a shimmed
one produce identical events. While a scope is active its `call_id` is the current call id
(context variable): throttle events recorded inside it, by a shim or by `retrying`, carry
that id, which is how the server attributes a call's waits to its step.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .context import current_call, current_call_id
from .events import DEVELOPER_ATTRIBUTE, new_event_id
from .usage import InvalidUsageError, UsageCounts, canonical_service_tier, normalize_usage

if TYPE_CHECKING:
    from .tracker import Tracker


class CallScope:
    """Times one call and records its usage event when it ends.

    The clock restarts after each throttle wait (`note_retry_sleep`), so `duration_ms`
    and time to first token describe the attempt that succeeded, while the waits are
    recorded as throttle events of their own: rates are not diluted by sleeping.
    """

    def __init__(self, tracker: Tracker, *, model: str, provider: str,
                 attributes: Mapping[str, Any] | None = None) -> None:
        self.tracker = tracker
        self.model = model
        self.provider = provider
        self.step = tracker.current_step()
        self.call_id = current_call_id.get() or new_event_id()
        self.attributes: dict[str, Any] = dict(attributes or {})
        # The budget guard stops the call here, before any request leaves.
        user = self.attributes.get(DEVELOPER_ATTRIBUTE)
        tracker.guard_call(model, user if isinstance(user, str) and user else None)
        self.counts: UsageCounts | None = None
        self.usage_raw: dict[str, Any] | None = None
        self.retries = 0
        self._start_wall = time.time()
        self._start = time.perf_counter()
        self._first_token: float | None = None
        self._finished = False
        self._tokens: tuple[Token[str | None], Token[CallScope | None]] | None = None

    # Context management ----------------------------------------------------

    def __enter__(self) -> CallScope:
        self.activate()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.deactivate()
        self.finish()

    def activate(self) -> None:
        """Make this the current call of the running thread or task."""
        self._tokens = (current_call_id.set(self.call_id), current_call.set(self))

    def deactivate(self) -> None:
        if self._tokens is not None:
            call_id_token, call_token = self._tokens
            current_call.reset(call_token)
            current_call_id.reset(call_id_token)
            self._tokens = None

    # What the caller tells us ----------------------------------------------

    def set_usage(self, input_tokens: int = 0, output_tokens: int = 0, cache_read_tokens: int = 0,
                  cache_write_tokens: int = 0, tool_tokens: int = 0, thought_tokens: int = 0,
                  usage_raw: Mapping[str, Any] | None = None, cache_write_1h_tokens: int = 0,
                  service_tier: str | None = None) -> None:
        """Counts in TokenSite's convention, or a provider's raw usage object to convert."""
        if usage_raw is not None:
            self.usage_raw = dict(usage_raw)
            self.counts = normalize_usage(self.provider, self.usage_raw)
            if service_tier is not None and self.counts.service_tier is None:
                self.counts = replace(self.counts, service_tier=canonical_service_tier(service_tier))
        else:
            self.counts = UsageCounts(input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
                                      tool_tokens, thought_tokens, cache_write_1h_tokens,
                                      canonical_service_tier(service_tier))

    def set_response(self, response: Any) -> None:
        """Take usage (and the exact model name) from a provider response: OpenAI chat or
        Responses objects, Anthropic messages, Gemini responses, litellm responses, or dicts."""
        self.set_response_usage(response, usage_dict(response))

    def set_response_usage(self, response: Any, raw: dict[str, Any] | None) -> None:
        """`set_response` for a caller that already extracted the usage dict."""
        if raw is None:
            raise InvalidUsageError("response carries no usage object", {"usage": ["missing"]})
        is_mapping = isinstance(response, Mapping)
        model = response.get("model") if is_mapping else getattr(response, "model", None)
        if isinstance(model, str) and model:
            self.model = model
        # OpenAI states the tier that served the call on the response, Anthropic inside usage.
        tier = response.get("service_tier") if is_mapping else getattr(response, "service_tier", None)
        self.set_usage(usage_raw=raw, service_tier=tier if isinstance(tier, str) else None)

    def set_attributes(self, **attributes: Any) -> None:
        self.attributes.update(attributes)

    def mark_first_token(self) -> None:
        """Note the first streamed token (only the first call counts)."""
        if self._first_token is None:
            self._first_token = time.perf_counter()

    def note_retry_sleep(self) -> None:
        """A retry sleep just ended: the next attempt starts now."""
        self.retries += 1
        self._start_wall = time.time()
        self._start = time.perf_counter()
        self._first_token = None

    def finish(self) -> str | None:
        """Record the usage event (once); returns its event_id, or None without usage."""
        if self._finished:
            return None
        self._finished = True
        if self.counts is None:
            return None
        end = time.perf_counter()
        ttft_ms = None if self._first_token is None else (self._first_token - self._start) * 1000
        counts = self.counts
        return self.tracker.record_usage(
            model=self.model, provider=self.provider, input_tokens=counts.input_tokens,
            output_tokens=counts.output_tokens, duration_ms=round((end - self._start) * 1000, 3),
            step=self.step, cache_read_tokens=counts.cache_read_tokens,
            cache_write_tokens=counts.cache_write_tokens, tool_tokens=counts.tool_tokens,
            thought_tokens=counts.thought_tokens,
            time_to_first_token_ms=None if ttft_ms is None else round(ttft_ms, 3),
            timestamp=self._start_wall, usage_raw=self.usage_raw, attributes=self.attributes or None,
            call_id=self.call_id, cache_write_1h_tokens=counts.cache_write_1h_tokens,
            service_tier=counts.service_tier,
        )


def usage_dict(response: Any) -> dict[str, Any] | None:
    """The usage object of a provider response as a plain dict, or None if it has none."""
    if isinstance(response, Mapping):
        usage = response.get("usage") or response.get("usageMetadata") or response.get("usage_metadata")
    else:
        usage = getattr(response, "usage", None) or getattr(response, "usage_metadata", None)
    if usage is None:
        return None
    if isinstance(usage, Mapping):
        return dict(usage)
    if hasattr(usage, "model_dump"):
        return usage.model_dump(exclude_none=True)  # a new dict already
    if hasattr(usage, "to_dict"):
        return dict(usage.to_dict())
    return dict(vars(usage))
