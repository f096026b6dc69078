"""`instrument_openai`: usage, time to first token and throttle waits of an OpenAI client.

Hooks on the one client object given (copies made later with `with_options` are not
instrumented): `chat.completions.create` and `responses.create` run inside a `CallScope`,
which records the usage event when the call (or its stream) ends; the retry sleeps and the
`x-ratelimit-*` headers are captured as `client_hooks` describes.
Streams are wrapped to see each chunk: chat streams ask for `include_usage` (and hide the
extra usage-only chunk from callers that did not ask for it); a stream that ends without
usage is counted from its text and marked `token_count_estimated`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from .calls import CallScope, usage_dict
from .client_hooks import install_client_hooks, never_raise, wrap_create
from .counting import count_tokens, tokenizer_name
from .tracker import Tracker

_RATELIMIT_PREFIXES = (b"x-ratelimit-",)
ClientT = TypeVar("ClientT")


def instrument_openai(client: ClientT, tracker: Tracker, *, provider: str | None = None) -> ClientT:
    """Instrument an `openai.OpenAI` or `openai.AsyncOpenAI` client in place and return it.
    `provider` defaults to "azure" for Azure clients and "openai" otherwise."""
    provider = provider or ("azure" if "Azure" in type(client).__name__ else "openai")
    is_async = install_client_hooks(client, tracker, provider=provider, header_prefixes=_RATELIMIT_PREFIXES,
                                    instrument_name="instrument_openai")
    shim = _Shim(tracker, provider)
    client.chat.completions.create = wrap_create(client.chat.completions.create, shim.begin_chat,
                                                 is_async=is_async, provider_label="OpenAI")
    client.responses.create = wrap_create(client.responses.create, shim.begin_responses,
                                          is_async=is_async, provider_label="OpenAI")
    return client


class _Shim:
    """The call scopes of one instrumented client."""

    def __init__(self, tracker: Tracker, provider: str) -> None:
        self.tracker = tracker
        self.provider = provider

    def begin_chat(self, kwargs: dict[str, Any]) -> tuple[CallScope, _StreamObserver | None]:
        return self._begin("chat", kwargs)

    def begin_responses(self, kwargs: dict[str, Any]) -> tuple[CallScope, _StreamObserver | None]:
        return self._begin("responses", kwargs)

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
            never_raise(lambda: self.scope.set_response(chunk), "OpenAI")
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
                never_raise(lambda: self.scope.set_response(response), "OpenAI")

    def finish(self) -> None:
        """Record the call once, estimating the counts when the stream carried no usage."""
        if self.finished:
            return
        self.finished = True
        if self.scope.counts is None and (self.text_parts or self.prompt is not None):
            never_raise(self._estimate, "OpenAI")
        never_raise(self.scope.finish, "OpenAI")

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
