"""An OTLP/HTTP capture server: keeps every export request an agent sends, decoded to the JSON mapping.

Used to record what the real agents send (the fixtures under fixtures/), not by the tests themselves.
Run: python -m tests.otlp.agents.capture OUT_DIR  (prints its endpoint; stops on SIGTERM).
"""
from __future__ import annotations

import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

MESSAGES = {"logs": ExportLogsServiceRequest, "traces": ExportTraceServiceRequest,
            "metrics": ExportMetricsServiceRequest}


class Capture:
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.count = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/otlp"

    def _handler(self):
        capture = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _read(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self):
                raw = self._read()
                if self.headers.get("Content-Encoding", "") == "gzip":
                    raw = gzip.decompress(raw)
                signal = self.path.rstrip("/").rsplit("/", 1)[-1]
                content_type = self.headers.get("Content-Type", "")
                message = MESSAGES.get(signal)
                decoded: object = None
                if message is not None and "json" in content_type:
                    decoded = json.loads(raw)
                elif message is not None:
                    parsed = message()
                    parsed.ParseFromString(raw)
                    decoded = MessageToDict(parsed)
                with capture.lock:
                    capture.count += 1
                    name = f"{capture.count:03d}-{signal}.json"
                (capture.out_dir / name).write_text(json.dumps({
                    "path": self.path, "content_type": content_type,
                    "headers": {k: v for k, v in self.headers.items() if k.lower() != "authorization"},
                    "authorization": self.headers.get("Authorization", ""), "body": decoded}, indent=1))
                reply = b"{}" if "json" in content_type else b""
                self.send_response(200)
                self.send_header("Content-Type", content_type or "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        return Handler


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    capture = Capture(out)
    print(capture.endpoint, flush=True)
    capture.server.serve_forever()
