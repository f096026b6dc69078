"""Fake model providers on 127.0.0.1 for the real coding-agent CLIs.

One HTTP server speaks the three APIs the agents call: Anthropic Messages (Claude Code), OpenAI
Responses (Codex CLI) and Gemini generateContent / streamGenerateContent (Gemini CLI, Qwen Code in
its Gemini mode). Every model call is answered first with a 429 and a Retry-After, then with a
success whose usage is known, so a test can compare what TokenSite shows with exactly what the
"provider" returned and the waits it imposed. Every request is logged (`calls`).
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RETRY_AFTER_SECONDS = 1

# Usage the fake returns for the n-th successful call of each API (n = 0, 1, ...): distinct per call
# so a call counted twice or not at all changes every total.
def anthropic_usage(n: int) -> dict:
    return {
        "input_tokens": 11 + n,
        "cache_read_input_tokens": 1200 + 10 * n,
        "cache_creation_input_tokens": 300 + n,
        "cache_creation": {"ephemeral_5m_input_tokens": 200 + n, "ephemeral_1h_input_tokens": 100},
        "output_tokens": 42 + n,
        "service_tier": "standard",
    }


def responses_usage(n: int) -> dict:
    return {
        "input_tokens": 2000 + n,
        "input_tokens_details": {"cached_tokens": 1536},
        "output_tokens": 120 + n,
        "output_tokens_details": {"reasoning_tokens": 64},
        "total_tokens": 2120 + 2 * n,
    }


def gemini_usage(n: int) -> dict:
    return {
        "promptTokenCount": 3000 + n,
        "cachedContentTokenCount": 2048,
        "candidatesTokenCount": 30 + n,
        "thoughtsTokenCount": 50,
        "totalTokenCount": 3080 + 2 * n,
    }


def normalized(api: str, usage: dict) -> dict:
    """DESIGN.md section 1's convention for a usage object this fake returned."""
    if api == "anthropic":
        cache_read = usage["cache_read_input_tokens"]
        cache_write = usage["cache_creation_input_tokens"]
        return {"input": usage["input_tokens"] + cache_read + cache_write, "output": usage["output_tokens"],
                "cache_read": cache_read, "cache_write": cache_write, "thought": 0, "tool": 0}
    if api == "responses":
        return {"input": usage["input_tokens"], "output": usage["output_tokens"],
                "cache_read": usage["input_tokens_details"]["cached_tokens"], "cache_write": 0,
                "thought": usage["output_tokens_details"]["reasoning_tokens"], "tool": 0}
    return {"input": usage["promptTokenCount"] + usage.get("toolUsePromptTokenCount", 0),
            "output": usage["candidatesTokenCount"] + usage["thoughtsTokenCount"],
            "cache_read": usage["cachedContentTokenCount"], "cache_write": 0,
            "thought": usage["thoughtsTokenCount"], "tool": usage.get("toolUsePromptTokenCount", 0)}


@dataclass
class Call:
    api: str
    path: str
    model: str
    status: int
    received: float          # epoch seconds the request arrived
    answered: float          # epoch seconds the response was complete
    usage: dict = field(default_factory=dict)
    request_id: str = ""


class FakeProviders:
    """The fake, started on an ephemeral port; `base_url` for the agents' base-URL settings."""

    def __init__(self, *, retry_after_seconds: int = RETRY_AFTER_SECONDS, first_token_delay: float = 0.05):
        self.retry_after_seconds = retry_after_seconds
        self.first_token_delay = first_token_delay
        self.calls: list[Call] = []
        self.unhandled: list[str] = []
        self._lock = threading.Lock()
        self._attempts: dict[str, int] = {}
        self._successes: dict[str, int] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeProviders:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def next_attempt(self, api: str) -> tuple[bool, int]:
        """(throttle this attempt?, index of the success if not): the 1st, 3rd, ... attempt is refused."""
        with self._lock:
            attempt = self._attempts.get(api, 0)
            self._attempts[api] = attempt + 1
            if attempt % 2 == 0:
                return True, -1
            success = self._successes.get(api, 0)
            self._successes[api] = success + 1
            return False, success

    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def report(self) -> dict:
        """What the fake returned: every call, the usage totals in DESIGN.md's convention, the waits."""
        with self._lock:
            calls = list(self.calls)
        successes = [call for call in calls if call.status == 200 and call.usage]
        totals = {key: 0 for key in ("input", "output", "cache_read", "cache_write", "thought", "tool")}
        for call in successes:
            for key, value in normalized(call.api, call.usage).items():
                totals[key] += value
        # The wait each refused attempt imposed: from its answer to the next attempt of the same API.
        waits_ms = []
        for index, call in enumerate(calls):
            if call.status != 429:
                continue
            following = next((c for c in calls[index + 1:] if c.api == call.api), None)
            if following is not None:
                waits_ms.append(round((following.received - call.answered) * 1000))
        return {"calls": [asdict(call) for call in calls], "successes": len(successes), "totals": totals,
                "throttled": sum(1 for call in calls if call.status == 429), "observed_waits_ms": waits_ms,
                "retry_after_ms": self.retry_after_seconds * 1000, "unhandled": list(self.unhandled)}


def _sse(handler: BaseHTTPRequestHandler, events: list[tuple[str | None, dict]], delay: float) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Cache-Control", "no-cache")
    handler.send_header("Connection", "close")
    for name, value in getattr(handler, "extra_headers", {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    for index, (name, data) in enumerate(events):
        chunk = (f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n"
        handler.wfile.write(chunk.encode())
        handler.wfile.flush()
        if index == 0 and delay:
            time.sleep(delay)
    handler.close_connection = True


def _handler_for(fake: FakeProviders):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _body(self) -> dict:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                return json.loads(raw or b"{}")
            except ValueError:
                return {}

        def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _throttle(self, api: str, model: str, received: float, error: dict) -> None:
            self._json(429, error, {"Retry-After": str(fake.retry_after_seconds)})
            fake.record(Call(api=api, path=self.path, model=model, status=429, received=received,
                             answered=time.time()))

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path.endswith("/models"):
                self._json(200, {"object": "list", "data": [], "models": []})
                return
            fake.unhandled.append(f"GET {self.path}")
            self._json(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            received = time.time()
            body = self._body()
            path = self.path.split("?")[0]
            if path.endswith("/v1/messages/count_tokens"):
                self._json(200, {"input_tokens": 10})
            elif path.endswith("/v1/messages"):
                self._anthropic(body, received)
            elif path.endswith("/responses"):
                self._responses(body, received)
            elif ":streamGenerateContent" in path or ":generateContent" in path:
                self._gemini(path, body, received)
            elif ":countTokens" in path:
                self._json(200, {"totalTokens": 10})
            else:
                fake.unhandled.append(f"POST {self.path}")
                self._json(404, {"error": {"message": "not found"}})

        def _anthropic(self, body: dict, received: float) -> None:
            model = str(body.get("model", ""))
            throttle, n = fake.next_attempt("anthropic")
            if throttle:
                self._throttle("anthropic", model, received, {"type": "error", "error": {
                    "type": "rate_limit_error", "message": "Rate limited by the fake provider"}})
                return
            usage = anthropic_usage(n)
            request_id = f"req_fake{n:04d}{uuid.uuid4().hex[:12]}"
            message_id = f"msg_fake{n:04d}"
            self.extra_headers = {"request-id": request_id}
            start_usage = {key: value for key, value in usage.items()}
            start_usage["output_tokens"] = 1
            text = "OK"
            message = {"id": message_id, "type": "message", "role": "assistant", "model": model,
                       "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
            if body.get("stream"):
                _sse(self, [
                    ("message_start", {"type": "message_start", "message": message}),
                    ("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}}),
                    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": text}}),
                    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                    ("message_delta", {"type": "message_delta",
                                       "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                       "usage": {"output_tokens": usage["output_tokens"]}}),
                    ("message_stop", {"type": "message_stop"}),
                ], fake.first_token_delay)
            else:
                message.update(content=[{"type": "text", "text": text}], stop_reason="end_turn", usage=usage)
                self._json(200, message, {"request-id": request_id})
            fake.record(Call(api="anthropic", path=self.path, model=model, status=200, received=received,
                             answered=time.time(), usage=usage, request_id=request_id))

        def _responses(self, body: dict, received: float) -> None:
            model = str(body.get("model", ""))
            throttle, n = fake.next_attempt("responses")
            if throttle:
                self._throttle("responses", model, received, {"error": {
                    "type": "rate_limit_exceeded", "code": "rate_limit_exceeded",
                    "message": "Rate limited by the fake provider"}})
                return
            usage = responses_usage(n)
            response_id = f"resp_fake{n:04d}{uuid.uuid4().hex[:12]}"
            item = {"type": "message", "id": f"msg_fake{n:04d}", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": "OK", "annotations": []}]}
            base = {"id": response_id, "object": "response", "created_at": int(received), "model": model,
                    "status": "in_progress", "output": [], "usage": None}
            completed = dict(base, status="completed", output=[item], usage=usage)
            self.extra_headers = {"x-request-id": f"req_{response_id}"}
            _sse(self, [
                ("response.created", {"type": "response.created", "response": base}),
                ("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                                "item": dict(item, status="in_progress", content=[])}),
                ("response.output_text.delta", {"type": "response.output_text.delta", "item_id": item["id"],
                                                "output_index": 0, "content_index": 0, "delta": "OK"}),
                ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0,
                                               "item": item}),
                ("response.completed", {"type": "response.completed", "response": completed}),
            ], fake.first_token_delay)
            fake.record(Call(api="responses", path=self.path, model=model, status=200, received=received,
                             answered=time.time(), usage=usage, request_id=response_id))

        def _gemini(self, path: str, body: dict, received: float) -> None:
            model = path.rsplit("/", 1)[-1].split(":")[0]
            throttle, n = fake.next_attempt("gemini")
            if throttle:
                self._throttle("gemini", model, received, {"error": {
                    "code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Rate limited by the fake provider",
                    "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                 "retryDelay": f"{fake.retry_after_seconds}s"}]}})
                return
            usage = gemini_usage(n)
            response_id = f"fake{n:04d}{uuid.uuid4().hex[:12]}"
            first = {"candidates": [{"content": {"role": "model", "parts": [{"text": "O"}]}, "index": 0}],
                     "modelVersion": model, "responseId": response_id}
            last = {"candidates": [{"content": {"role": "model", "parts": [{"text": "K"}]},
                                    "finishReason": "STOP", "index": 0}],
                    "usageMetadata": usage, "modelVersion": model, "responseId": response_id}
            if ":streamGenerateContent" in path:
                self.extra_headers = {}
                _sse(self, [(None, first), (None, last)], fake.first_token_delay)
            else:
                last["candidates"][0]["content"]["parts"] = [{"text": "OK"}]
                self._json(200, last)
            fake.record(Call(api="gemini", path=self.path, model=model, status=200, received=received,
                             answered=time.time(), usage=usage, request_id=response_id))

    return Handler
