"""Servers the SDK tests talk to over loopback: a TokenSite ingest and budgets API, an OpenAI
API and an Anthropic Messages API.

All are real HTTP servers (http.server in a thread) so the SDK's sender and the real
openai and anthropic clients go through their whole network stack; only the far end is small.
"""

from __future__ import annotations

import abc
import gzip
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Small SSE writes must not wait for delayed ACKs, or every stream gains 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.server.app.handle(self, body)  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self.server.app.handle_get(self)  # type: ignore[attr-defined]

    def reply(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _HTTPApp(abc.ABC):
    """Start/stop on a fixed port, so a test can take the server away and bring it back."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.app = self  # type: ignore[attr-defined]
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @abc.abstractmethod
    def handle(self, handler: _Handler, body: bytes) -> None:
        """Answer one POST."""

    def handle_get(self, handler: _Handler) -> None:
        handler.reply(404, {"error": {"code": "not_found", "message": handler.path}})


@dataclass
class IngestRequest:
    headers: dict[str, str]
    events: list[dict[str, Any]]
    received_at: float


class FakeIngestServer(_HTTPApp):
    """TokenSite's POST /api/v1/events as issue 2 describes it: bearer key, gzip bodies,
    dedup by event_id, 202/207 replies. `responder` lets a test script failures."""

    def __init__(self, api_key: str = "tsk_test_secret", port: int = 0) -> None:
        super().__init__(port)
        self.api_key = api_key
        self.lock = threading.Lock()
        self.stored: dict[str, dict[str, Any]] = {}
        self.requests: list[IngestRequest] = []
        self.posted_ids: list[str] = []
        self.responder: Callable[[list[dict[str, Any]]], tuple[int, Any, dict[str, str]] | None] | None = None
        self.reject: Callable[[dict[str, Any]], dict[str, list[str]] | None] = lambda event: None
        # GET /api/v1/budgets: the list served (BUDGETS_CONTRACT.md), the status to answer
        # instead of it, and a gate that holds every budget request until it is set.
        self.budgets: list[dict[str, Any]] = []
        self.budgets_status = 200
        self.budgets_gate = threading.Event()
        self.budgets_gate.set()
        self.budget_requests: list[float] = []

    def handle(self, handler: _Handler, body: bytes) -> None:
        if handler.path != "/api/v1/events":
            handler.reply(404, {"error": {"code": "not_found", "message": handler.path}})
            return
        if handler.headers.get("Authorization") != f"Bearer {self.api_key}":
            handler.reply(401, {"error": {"code": "unauthenticated", "message": "unknown key"}})
            return
        if handler.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        events = json.loads(body)["events"]
        with self.lock:
            self.requests.append(IngestRequest(dict(handler.headers), events, time.monotonic()))
            self.posted_ids.extend(event["event_id"] for event in events)
        scripted = self.responder(events) if self.responder is not None else None
        if scripted is not None:
            status, payload, headers = scripted
            handler.reply(status, payload, headers)
            return
        accepted = duplicates = 0
        rejected = []
        with self.lock:
            for index, event in enumerate(events):
                errors = self.reject(event)
                if errors:
                    rejected.append({"index": index, "event_id": event["event_id"], "errors": errors})
                elif event["event_id"] in self.stored:
                    duplicates += 1
                else:
                    self.stored[event["event_id"]] = event
                    accepted += 1
        handler.reply(207 if rejected else 202, {"accepted": accepted, "duplicates": duplicates, "rejected": rejected})

    def handle_get(self, handler: _Handler) -> None:
        if handler.path != "/api/v1/budgets":
            super().handle_get(handler)
            return
        if handler.headers.get("Authorization") != f"Bearer {self.api_key}":
            handler.reply(401, {"error": {"code": "unauthenticated", "message": "unknown key"}})
            return
        self.budgets_gate.wait(30)
        with self.lock:
            self.budget_requests.append(time.monotonic())
            status, budgets = self.budgets_status, list(self.budgets)
        if status != 200:
            handler.reply(status, {"error": {"code": "unavailable", "message": "scripted failure"}})
            return
        handler.reply(200, {"budgets": budgets})

    def events_of_type(self, event_type: str) -> list[dict[str, Any]]:
        with self.lock:
            return [event for event in self.stored.values() if event["type"] == event_type]


@dataclass
class ProviderRequest:
    path: str
    body: dict[str, Any]
    received_at: float


@dataclass
class Scripted:
    """One scripted reply: a status with headers, or a (possibly streamed) success."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    usage: dict[str, Any] | None = None


CHAT_USAGE = {
    "prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 128, "audio_tokens": 0,
                                  "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
}
RESPONSES_USAGE = {
    "input_tokens": 328, "input_tokens_details": {"cached_tokens": 256},
    "output_tokens": 52, "output_tokens_details": {"reasoning_tokens": 16}, "total_tokens": 380,
}
STREAM_WORDS = ["Hello", " there", ",", " friend", "!"]
RATELIMIT_HEADERS = {
    "x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499",
    "x-ratelimit-limit-tokens": "30000", "x-ratelimit-remaining-tokens": "27694",
    "x-ratelimit-reset-tokens": "4.612s",
}


class _FakeProviderServer(_HTTPApp):
    """A provider API that answers from `script` first (429s, 529s...), then succeeds;
    it notes when each request arrived and each reply went out."""

    def __init__(self) -> None:
        super().__init__()
        self.script: list[Scripted] = []
        self.requests: list[ProviderRequest] = []
        self.responses_sent_at: list[float] = []
        self.first_chunk_delay_s = 0.0
        self.lock = threading.Lock()

    def handle(self, handler: _Handler, body: bytes) -> None:
        request = json.loads(body)
        with self.lock:
            self.requests.append(ProviderRequest(handler.path, request, time.monotonic()))
            scripted = self.script.pop(0) if self.script else Scripted()
        self.answer(handler, request, scripted)
        with self.lock:
            self.responses_sent_at.append(time.monotonic())

    def retry_gaps_ms(self) -> list[float]:
        """For each request after the first, how long after the previous reply it arrived."""
        with self.lock:
            return [(request.received_at - replied) * 1000
                    for request, replied in zip(self.requests[1:], self.responses_sent_at)]

    @abc.abstractmethod
    def answer(self, handler: _Handler, request: dict[str, Any], scripted: Scripted) -> None:
        """Reply to one request as `scripted` says."""

    def _stream(self, handler: _Handler, chunks: list[dict[str, Any]], headers: dict[str, str],
                done_marker: bool = False) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        time.sleep(self.first_chunk_delay_s)
        for chunk in chunks:
            event = chunk.pop("__event__", None)
            line = (f"event: {event}\n" if event else "") + f"data: {json.dumps(chunk)}\n\n"
            _write_chunk(handler, line.encode())
        if done_marker:
            _write_chunk(handler, b"data: [DONE]\n\n")
        _write_chunk(handler, b"")


class FakeOpenAIServer(_FakeProviderServer):
    """An OpenAI-compatible API: /v1/chat/completions and /v1/responses, plain or SSE.
    With `stream_usage=False` it ignores `stream_options.include_usage`, like some
    OpenAI-compatible servers do."""

    def __init__(self) -> None:
        super().__init__()
        self.stream_usage = True

    def answer(self, handler: _Handler, request: dict[str, Any], scripted: Scripted) -> None:
        if scripted.status != 200:
            handler.reply(scripted.status, {"error": {"message": "slow down", "type": "rate_limit"}},
                          scripted.headers)
            return
        headers = {**RATELIMIT_HEADERS, **scripted.headers}
        if handler.path.endswith("/chat/completions"):
            usage = scripted.usage or CHAT_USAGE
            if request.get("stream"):
                include = bool((request.get("stream_options") or {}).get("include_usage")) and self.stream_usage
                self._stream(handler, self._chat_chunks(request["model"], usage if include else None), headers,
                             done_marker=True)
            else:
                handler.reply(200, self._chat_completion(request["model"], usage), headers)
        else:
            usage = scripted.usage or RESPONSES_USAGE
            if request.get("stream"):
                self._stream(handler, self._response_events(request["model"], usage), headers)
            else:
                handler.reply(200, self._response(request["model"], usage), headers)

    @staticmethod
    def _chat_completion(model: str, usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "".join(STREAM_WORDS)}}],
            "usage": usage,
        }

    @staticmethod
    def _chat_chunks(model: str, usage: dict[str, Any] | None) -> list[dict[str, Any]]:
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": word},
                                        "finish_reason": None}]} for word in STREAM_WORDS]
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if usage is not None:
            chunks.append({**base, "choices": [], "usage": usage})
        return chunks

    @staticmethod
    def _response(model: str, usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "resp_1", "object": "response", "created_at": int(time.time()), "model": model,
            "status": "completed", "output": [{
                "type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": "".join(STREAM_WORDS), "annotations": []}]}],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "usage": usage,
        }

    def _response_events(self, model: str, usage: dict[str, Any]) -> list[dict[str, Any]]:
        created = {**self._response(model, usage), "status": "in_progress", "output": [], "usage": None}
        events: list[dict[str, Any]] = [{"__event__": "response.created", "type": "response.created",
                                         "sequence_number": 0, "response": created}]
        for number, word in enumerate(STREAM_WORDS, start=1):
            events.append({"__event__": "response.output_text.delta", "type": "response.output_text.delta",
                           "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": word,
                           "sequence_number": number, "logprobs": []})
        events.append({"__event__": "response.completed", "type": "response.completed",
                       "sequence_number": len(STREAM_WORDS) + 1, "response": self._response(model, usage)})
        return events


ANTHROPIC_USAGE = {  # a call that wrote 100,000 prompt tokens to the cache, 60,000 of them for one hour
    "input_tokens": 21, "cache_creation_input_tokens": 100_000, "cache_read_input_tokens": 1200,
    "cache_creation": {"ephemeral_5m_input_tokens": 40_000, "ephemeral_1h_input_tokens": 60_000},
    "output_tokens": 393, "service_tier": "priority",
}
ANTHROPIC_RATELIMIT_HEADERS = {
    "anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": "49",
    "anthropic-ratelimit-requests-reset": "2026-12-02T03:40:01Z",
    "anthropic-ratelimit-input-tokens-limit": "30000", "anthropic-ratelimit-input-tokens-remaining": "28000",
    "anthropic-ratelimit-input-tokens-reset": "2026-12-02T03:40:03Z",
    "anthropic-ratelimit-output-tokens-limit": "8000", "anthropic-ratelimit-output-tokens-remaining": "7600",
    "anthropic-ratelimit-output-tokens-reset": "2026-12-02T03:40:02Z",
    "anthropic-ratelimit-tokens-limit": "38000", "anthropic-ratelimit-tokens-remaining": "35600",
    "anthropic-ratelimit-tokens-reset": "2026-12-02T03:40:02Z",
    "request-id": "req_011CTest",
}
ANTHROPIC_ERRORS = {400: "invalid_request_error", 429: "rate_limit_error", 529: "overloaded_error"}


class FakeAnthropicServer(_FakeProviderServer):
    """Anthropic's POST /v1/messages, plain or SSE (message_start carries the input and
    cache usage, message_delta the output), with `anthropic-ratelimit-*` headers; also
    Bedrock's plain InvokeModel, which returns the same message."""

    def answer(self, handler: _Handler, request: dict[str, Any], scripted: Scripted) -> None:
        if scripted.status != 200:
            error_type = ANTHROPIC_ERRORS.get(scripted.status, "api_error")
            handler.reply(scripted.status, {"type": "error", "error": {"type": error_type, "message": "slow down"}},
                          scripted.headers)
            return
        headers = {**ANTHROPIC_RATELIMIT_HEADERS, **scripted.headers}
        usage = scripted.usage or ANTHROPIC_USAGE
        # Bedrock's InvokeModel names the model in the path: /model/{model}/invoke.
        model = request.get("model") or handler.path.split("/")[2]
        if request.get("stream"):
            self._stream(handler, self._message_events(model, usage), headers)
        else:
            message = self._message(model, usage)
            message["content"] = [{"type": "text", "text": "".join(STREAM_WORDS)}]
            handler.reply(200, message, headers)

    @staticmethod
    def _message(model: str, usage: dict[str, Any]) -> dict[str, Any]:
        return {"id": "msg_01Test", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": "end_turn", "stop_sequence": None, "usage": usage}

    def _message_events(self, model: str, usage: dict[str, Any]) -> list[dict[str, Any]]:
        started = {**self._message(model, {**usage, "output_tokens": 1}), "stop_reason": None}
        events: list[dict[str, Any]] = [
            {"__event__": "message_start", "type": "message_start", "message": started},
            {"__event__": "content_block_start", "type": "content_block_start", "index": 0,
             "content_block": {"type": "text", "text": ""}},
            {"__event__": "ping", "type": "ping"},
        ]
        events.extend({"__event__": "content_block_delta", "type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": word}} for word in STREAM_WORDS)
        events.append({"__event__": "content_block_stop", "type": "content_block_stop", "index": 0})
        events.append({"__event__": "message_delta", "type": "message_delta",
                       "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                       "usage": {"output_tokens": usage["output_tokens"]}})
        events.append({"__event__": "message_stop", "type": "message_stop"})
        return events


def _write_chunk(handler: _Handler, data: bytes) -> None:
    handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    handler.wfile.flush()


class BlackholeServer:
    """Accepts TCP connections and never answers: the server that hangs every request."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)
        self.port = self._socket.getsockname()[1]
        self._accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self._accepted.append(connection)

    def stop(self) -> None:
        self._socket.close()
        for connection in self._accepted:
            connection.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
