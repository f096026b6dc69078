"""`instrument_openai`: usage, time to first token and throttle waits of an OpenAI client.

Three hooks, all on the one client object given (copies made later with `with_options`
are not instrumented):
- `chat.completions.create` and `responses.create` run inside a `CallScope`, which records
  the usage event when the call (or its stream) ends;
- the client's own retry sleep (`_sleep_for_retry`, where openai-python waits between
  attempts) is timed, so each 429/503/529 becomes a throttle event with the wait actually
  slept and the server's Retry-After, linked to the call by `call_id`;
- an httpx response hook copies `x-ratelimit-*` headers into the call's attributes.
Streams are wrapped to see each chunk: chat streams ask for `include_usage` (and hide the
extra usage-only chunk from callers that did not ask for it); a stream that ends without
usage is counted from its text and marked `token_count_estimated`.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx

from .calls import CallScope, usage_dict
from .context import current_call
from .counting import count_tokens, tokenizer_name
from .retry_after import retry_after_ms
from .tracker import Tracker

logger = logging.getLogger("tokensite_client")

THROTTLE_STATUSES = frozenset({429, 503, 529})
_RATELIMIT_PREFIX_BYTES = b"x-ratelimit-"
_RATELIMIT_PREFIX_LENGTH = len(_RATELIMIT_PREFIX_BYTES)
ClientT = TypeVar("ClientT")


def instrument_openai(client: ClientT, tracker: Tracker, *, provider: str | None = None) -> ClientT:
    """Instrument an `openai.OpenAI` or `openai.AsyncOpenAI` client in place and return it.
    `provider` defaults to "azure" for Azure clients and "openai" otherwise."""
    if getattr(client, "_tokensite_tracker", None) is not None:
        raise ValueError("this client is already instrumented")
    if not hasattr(client, "_sleep_for_retry"):
        raise TypeError("instrument_openai needs an openai>=2 client (OpenAI or AsyncOpenAI): "
                        "it times the retry sleeps in the client's _sleep_for_retry")
    provider = provider or ("azure" if "Azure" in type(client).__name__ else "openai")
    is_async = inspect.iscoroutinefunction(client._sleep_for_retry)
    shim = _Shim(tracker, provider)
    http_client = client._client
    if is_async:
        client._sleep_for_retry = shim.async_sleep(client._sleep_for_retry)
        http_client.event_hooks["response"].append(shim.async_response_hook)
        client.chat.completions.create = shim.async_create(client.chat.completions.create, "chat")
        client.responses.create = shim.async_create(client.responses.create, "responses")
    else:
        client._sleep_for_retry = shim.sleep(client._sleep_for_retry)
        http_client.event_hooks["response"].append(shim.response_hook)
        client.chat.completions.create = shim.create(client.chat.completions.create, "chat")
        client.responses.create = shim.create(client.responses.create, "responses")
    client._tokensite_tracker = tracker
    return client


class _Shim:
    """The wrappers for one instrumented client."""

    def __init__(self, tracker: Tracker, provider: str) -> None:
        self.tracker = tracker
        self.provider = provider

    # Retry sleeps -----------------------------------------------------------

    def sleep(self, original: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(original)
        def _sleep_for_retry(*, retries_taken: int, max_retries: int, options: Any,
                             response: httpx.Response | None) -> None:
            started_wall, started = time.time(), time.perf_counter()
            try:
                original(retries_taken=retries_taken, max_retries=max_retries, options=options, response=response)
            finally:
                self._after_sleep(response, retries_taken, started_wall, started)
        return _sleep_for_retry

    def async_sleep(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        async def _sleep_for_retry(*, retries_taken: int, max_retries: int, options: Any,
                                   response: httpx.Response | None) -> None:
            started_wall, started = time.time(), time.perf_counter()
            try:
                await original(retries_taken=retries_taken, max_retries=max_retries, options=options,
                               response=response)
            finally:
                self._after_sleep(response, retries_taken, started_wall, started)
        return _sleep_for_retry

    def _after_sleep(self, response: httpx.Response | None, retries_taken: int, started_wall: float,
                     started: float) -> None:
        waited_ms = round((time.perf_counter() - started) * 1000, 3)
        scope = current_call.get()
        if scope is not None:
            scope.note_retry_sleep()
        if response is None or response.status_code not in THROTTLE_STATUSES:
            return  # a network error or 500: a retry, but not throttling
        self.tracker.record_throttle(
            wait_ms=waited_ms, status_code=response.status_code, attempt=retries_taken + 1,
            retry_after_ms=retry_after_ms(response.headers),
            model=scope.model if scope is not None else None, provider=self.provider,
            call_id=scope.call_id if scope is not None else None, timestamp=started_wall,
            attributes=ratelimit_attributes(response.headers) or None,
        )

    # Response headers ----------------------------------------------------------

    def response_hook(self, response: httpx.Response) -> None:
        scope = current_call.get()
        if scope is not None:
            scope.set_attributes(**ratelimit_attributes(response.headers))

    async def async_response_hook(self, response: httpx.Response) -> None:
        self.response_hook(response)

    # create() ---------------------------------------------------------------------

    def create(self, original: Callable[..., Any], kind: str) -> Callable[..., Any]:
        @functools.wraps(original)
        def create(*args: Any, **kwargs: Any) -> Any:
            scope, observer = self._begin(kind, kwargs)
            scope.activate()
            try:
                result = original(*args, **kwargs)
            finally:
                scope.deactivate()
            if observer is not None:
                return _Stream(result, observer)
            _finish_with_response(scope, result)
            return result
        return create

    def async_create(self, original: Callable[..., Any], kind: str) -> Callable[..., Any]:
        @functools.wraps(original)
        async def create(*args: Any, **kwargs: Any) -> Any:
            scope, observer = self._begin(kind, kwargs)
            scope.activate()
            try:
                result = await original(*args, **kwargs)
            finally:
                scope.deactivate()
            if observer is not None:
                return _AsyncStream(result, observer)
            _finish_with_response(scope, result)
            return result
        return create

    def _begin(self, kind: str, kwargs: dict[str, Any]) -> tuple[CallScope, _StreamObserver | None]:
        """Open the call's scope; for a stream, also ask for usage and prepare to watch it."""
        model = kwargs.get("model")
        scope = CallScope(self.tracker, model=model if isinstance(model, str) else "unknown",
                          provider=self.provider)
        if kwargs.get("stream") is not True:
            return scope, None
        injected = False
        if kind == "chat":
            options = kwargs.get("stream_options")
            if not isinstance(options, Mapping) or not options.get("include_usage"):
                kwargs["stream_options"] = {**(options if isinstance(options, Mapping) else {}),
                                            "include_usage": True}
                injected = True
            prompt: Any = kwargs.get("messages")
        else:
            prompt = kwargs.get("input")
        return scope, _StreamObserver(scope, kind, prompt, hide_usage_chunk=injected)


def ratelimit_attributes(headers: httpx.Headers) -> dict[str, str | int | float]:
    """The `x-ratelimit-*` headers, numbers as numbers (reset times like "6m0s" stay text)."""
    attributes: dict[str, str | int | float] = {}
    # The raw byte pairs: decoding every header through `items()` cost 6 us per call.
    for name, value in headers.raw:
        if name[:_RATELIMIT_PREFIX_LENGTH].lower() == _RATELIMIT_PREFIX_BYTES:
            attributes[name.decode("latin-1").lower()] = _number_or_text(value.decode("latin-1"))
    return attributes


def _number_or_text(value: str) -> str | int | float:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def _finish_with_response(scope: CallScope, result: Any) -> None:
    """Record a non-streamed call. `with_raw_response` results are parsed (openai caches
    the parse, so the caller's own `.parse()` costs nothing more)."""
    def record() -> None:
        source = result.parse() if hasattr(result, "parse") and hasattr(result, "http_response") else result
        raw = usage_dict(source)
        if raw is not None:
            scope.set_response_usage(source, raw)
        scope.finish()
    _never_raise(record)


def _never_raise(action: Callable[[], object]) -> None:
    """Run bookkeeping that must not break the application's call (an odd usage object
    from an OpenAI-compatible server is logged, not raised)."""
    try:
        action()
    except ValueError as exc:
        logger.warning("tokensite: could not record an OpenAI call: %s", exc)


class _StreamObserver:
    """Watches the chunks of one stream: first token, usage, and the text to count when
    the stream brings no usage."""

    def __init__(self, scope: CallScope, kind: str, prompt: Any, *, hide_usage_chunk: bool) -> None:
        self.scope = scope
        self.kind = kind
        self.prompt = prompt
        self.hide_usage_chunk = hide_usage_chunk
        self.text_parts: list[str] = []
        self.finished = False

    def observe(self, item: Any) -> bool:
        """Note one chunk; False when the caller must not see it (the usage chunk we added)."""
        if self.kind == "chat":
            return self._observe_chat(item)
        self._observe_response_event(item)
        return True

    def _observe_chat(self, chunk: Any) -> bool:
        choices = getattr(chunk, "choices", None) or []
        for choice in choices:
            delta = getattr(choice, "delta", None)
            if delta is None:
                continue
            content = getattr(delta, "content", None)
            if content:
                self.scope.mark_first_token()
                self.text_parts.append(content)
            for tool_call in getattr(delta, "tool_calls", None) or []:
                function = getattr(tool_call, "function", None)
                arguments = getattr(function, "arguments", None) if function is not None else None
                if arguments:
                    self.scope.mark_first_token()
                    self.text_parts.append(arguments)
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            _never_raise(lambda: self.scope.set_response(chunk))
            return not (self.hide_usage_chunk and not choices)
        return True

    def _observe_response_event(self, event: Any) -> None:
        event_type = getattr(event, "type", "")
        if event_type.endswith(".delta"):
            self.scope.mark_first_token()
            delta = getattr(event, "delta", None)
            if isinstance(delta, str):
                self.text_parts.append(delta)
        elif event_type in ("response.completed", "response.incomplete"):
            response = getattr(event, "response", None)
            if response is not None and usage_dict(response) is not None:
                _never_raise(lambda: self.scope.set_response(response))

    def finish(self) -> None:
        """Record the call once, estimating the counts when the stream carried no usage."""
        if self.finished:
            return
        self.finished = True
        if self.scope.counts is None and (self.text_parts or self.prompt is not None):
            _never_raise(self._estimate)
        _never_raise(self.scope.finish)

    def _estimate(self) -> None:
        model = self.scope.model
        output_text = "".join(self.text_parts)
        try:
            tokenizer = tokenizer_name(model)
            input_tokens = _count_prompt(model, self.prompt)
            output_tokens = count_tokens(model, text=output_text) if output_text else 0
        except ImportError:
            # Without litellm there is no tokeniser: fall back to OpenAI's rule of thumb.
            tokenizer = "chars/4"
            input_tokens = len(json.dumps(self.prompt, default=str)) // 4 if self.prompt is not None else 0
            output_tokens = len(output_text) // 4
        self.scope.set_usage(input_tokens=input_tokens, output_tokens=output_tokens)
        self.scope.set_attributes(token_count_estimated=True, tokenizer=tokenizer)


def _count_prompt(model: str, prompt: Any) -> int:
    if prompt is None:
        return 0
    if isinstance(prompt, str):
        return count_tokens(model, text=prompt)
    if isinstance(prompt, list) and all(isinstance(m, Mapping) and "role" in m for m in prompt):
        return count_tokens(model, messages=[dict(m) for m in prompt])
    return count_tokens(model, text=json.dumps(prompt, default=str))


class _Stream:
    """A sync stream that reports to its observer; everything else goes to the real stream."""

    def __init__(self, stream: Any, observer: _StreamObserver) -> None:
        self._stream = stream
        self._observer = observer

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> Any:
        while True:
            try:
                item = next(self._stream)
            except BaseException:
                self._observer.finish()
                raise
            if self._observer.observe(item):
                return item

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._stream.close()
        self._observer.finish()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __del__(self) -> None:
        # A stream dropped half-read still cost tokens: record what was seen.
        observer = self.__dict__.get("_observer")
        if observer is not None:
            observer.finish()


class _AsyncStream:
    """The asyncio counterpart of `_Stream`."""

    def __init__(self, stream: Any, observer: _StreamObserver) -> None:
        self._stream = stream
        self._observer = observer

    def __aiter__(self) -> _AsyncStream:
        return self

    async def __anext__(self) -> Any:
        while True:
            try:
                item = await self._stream.__anext__()
            except BaseException:
                self._observer.finish()
                raise
            if self._observer.observe(item):
                return item

    async def __aenter__(self) -> _AsyncStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._stream.close()
        self._observer.finish()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __del__(self) -> None:
        observer = self.__dict__.get("_observer")
        if observer is not None:
            observer.finish()
