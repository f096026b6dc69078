"""`instrument_anthropic`: usage, time to first token and throttle waits of an Anthropic client.

Hooks on the one client object given (copies made later with `with_options` are not
instrumented): `messages.create` and `messages.stream` (and their `beta.messages`
counterparts) run inside a `CallScope`, which records the usage event when the call or
its stream ends; the retry sleeps and the `anthropic-ratelimit-*` and `retry-after`
headers are captured as `client_hooks` describes.

A streamed message reports its usage in two parts: `message_start` carries the input and
cache counts (with the one-hour split and the service tier), `message_delta` the
cumulative output (and, on newer API versions, cumulative input and cache counts, which
then replace the earlier ones). Time to first token is taken at the first content delta.
A stream closed before its `message_delta` has only message_start's placeholder output
count: the output is then counted from the streamed text and marked `token_count_estimated`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .calls import CallScope, usage_dict
from .client_hooks import (
    AsyncObservedStream,
    ObservedStream,
    StreamObserver,
    install_client_hooks,
    never_raise,
    wrap_create,
)
from .counting import estimate_tokens
from .tracker import Tracker
from .usage import normalize_usage

_RATELIMIT_PREFIXES = (b"anthropic-ratelimit-", b"retry-after")
_LABEL = "Anthropic"
ClientT = TypeVar("ClientT")


def instrument_anthropic(client: ClientT, tracker: Tracker, *, provider: str | None = None) -> ClientT:
    """Instrument an `anthropic.Anthropic` or `anthropic.AsyncAnthropic` client in place and
    return it. `provider` defaults to "bedrock" or "vertex_ai" for those clients and
    "anthropic" otherwise."""
    provider = provider or _default_provider(type(client).__name__)
    is_async = install_client_hooks(client, tracker, provider=provider, header_prefixes=_RATELIMIT_PREFIXES,
                                    instrument_name="instrument_anthropic")
    shim = _Shim(tracker, provider, is_async)
    resources = [client.messages]  # type: ignore[attr-defined]
    beta = getattr(client, "beta", None)
    if beta is not None and hasattr(beta, "messages"):
        resources.append(beta.messages)
    for messages in resources:
        messages.create = wrap_create(messages.create, shim.begin, is_async=is_async, provider_label=_LABEL)
        messages.stream = shim.stream(messages.stream)
    return client


def _default_provider(class_name: str) -> str:
    if "Bedrock" in class_name:
        return "bedrock"
    if "Vertex" in class_name:
        return "vertex_ai"
    return "anthropic"


class _Shim:
    """The call scopes of one instrumented client."""

    def __init__(self, tracker: Tracker, provider: str, is_async: bool) -> None:
        self.tracker = tracker
        self.provider = provider
        self.is_async = is_async

    def scope(self, kwargs: dict[str, Any]) -> CallScope:
        model = kwargs.get("model")
        return CallScope(self.tracker, model=model if isinstance(model, str) else "unknown", provider=self.provider)

    def begin(self, kwargs: dict[str, Any]) -> tuple[CallScope, _MessageStreamObserver | None]:
        scope = self.scope(kwargs)
        return scope, (_MessageStreamObserver(scope) if kwargs.get("stream") is True else None)

    def stream(self, original: Any) -> Any:
        manager_class = _AsyncStreamManager if self.is_async else _StreamManager

        @functools.wraps(original)
        def stream(*args: Any, **kwargs: Any) -> Any:
            return manager_class(original(*args, **kwargs), lambda: self.scope(kwargs))
        return stream


class _MessageStreamObserver:
    """Watches the raw events of one streamed message: first content delta and usage."""

    def __init__(self, scope: CallScope) -> None:
        self.scope = scope
        self.usage: dict[str, Any] | None = None
        self.output_final = False
        self.text_parts: list[str] = []
        self.finished = False

    def observe(self, event: Any) -> bool:
        event_type = getattr(event, "type", None)
        if event_type == "content_block_delta":
            self.scope.mark_first_token()
            delta = getattr(event, "delta", None)
            for field in ("text", "partial_json", "thinking"):
                part = getattr(delta, field, None)
                if isinstance(part, str):
                    self.text_parts.append(part)
        elif event_type == "message_start":
            message = getattr(event, "message", None)
            model = getattr(message, "model", None)
            if isinstance(model, str) and model:
                self.scope.model = model
            self.usage = usage_dict(message) if message is not None else None
        elif event_type == "message_delta":
            delta_usage = usage_dict(event)
            if delta_usage:
                # Cumulative totals: they replace what message_start said.
                self.usage = {**(self.usage or {}), **delta_usage}
                self.output_final = True
        return True

    def finish(self) -> None:
        """Record the call once, with whatever usage the stream delivered."""
        if self.finished:
            return
        self.finished = True
        usage = self.usage
        if usage is not None and not self.output_final and self.text_parts:
            never_raise(lambda: self._estimate_output(usage), _LABEL)
        elif usage is not None:
            never_raise(lambda: self.scope.set_usage(usage_raw=usage), _LABEL)
        never_raise(self.scope.finish, _LABEL)

    def _estimate_output(self, usage: dict[str, Any]) -> None:
        # The counts are sent without usage_raw: the server would recompute them from it.
        counts = normalize_usage(self.scope.provider, usage)
        output_tokens, tokenizer = estimate_tokens(self.scope.model, "".join(self.text_parts))
        self.scope.set_usage(
            input_tokens=counts.input_tokens, output_tokens=max(output_tokens, counts.output_tokens),
            cache_read_tokens=counts.cache_read_tokens, cache_write_tokens=counts.cache_write_tokens,
            cache_write_1h_tokens=counts.cache_write_1h_tokens, service_tier=counts.service_tier)
        self.scope.set_attributes(token_count_estimated=True, tokenizer=tokenizer)


def _observe_raw_stream(message_stream: Any, observer: StreamObserver, wrapper: type) -> None:
    """Put the observer between a MessageStream and its raw event stream. MessageStream
    reads `_raw_stream` lazily and closes it on exit, so every way of consuming it
    (iteration, `text_stream`, `get_final_message`, `until_done`) passes through."""
    message_stream._raw_stream = wrapper(message_stream._raw_stream, observer)


class _StreamManagerBase:
    """`messages.stream(...)` returns a manager; the request (and its retries) happens when
    it is entered, so that is when the call's scope opens."""

    def __init__(self, manager: Any, make_scope: Callable[[], CallScope]) -> None:
        self._manager = manager
        self._make_scope = make_scope
        self._observer: _MessageStreamObserver | None = None

    def _finish(self) -> None:
        if self._observer is not None:
            self._observer.finish()


class _StreamManager(_StreamManagerBase):
    def __enter__(self) -> Any:
        scope = self._make_scope()
        scope.activate()
        try:
            message_stream = self._manager.__enter__()
        finally:
            scope.deactivate()
        self._observer = _MessageStreamObserver(scope)
        _observe_raw_stream(message_stream, self._observer, ObservedStream)
        return message_stream

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._manager.__exit__(*exc_info)
        finally:
            self._finish()


class _AsyncStreamManager(_StreamManagerBase):
    async def __aenter__(self) -> Any:
        scope = self._make_scope()
        scope.activate()
        try:
            message_stream = await self._manager.__aenter__()
        finally:
            scope.deactivate()
        self._observer = _MessageStreamObserver(scope)
        _observe_raw_stream(message_stream, self._observer, AsyncObservedStream)
        return message_stream

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await self._manager.__aexit__(*exc_info)
        finally:
            self._finish()
