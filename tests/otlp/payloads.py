"""OTLP requests built with the official message classes, and their OTLP JSON form."""
from __future__ import annotations

import json
from datetime import datetime

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.conftest import BASE_TIME

T0_NS = int(BASE_TIME.timestamp()) * 1_000_000_000
TRACE_ID = "5b8efff798038103d269b633813fc60c"


def ns(seconds: float) -> int:
    return T0_NS + int(seconds * 1_000_000_000)


def any_value(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def key_values(attributes: dict) -> list[KeyValue]:
    return [KeyValue(key=key, value=any_value(value)) for key, value in attributes.items()]


def genai_span(
    span_id: str, *, parent: str = "", start: float = 0.0, end: float = 1.5, trace_id: str = TRACE_ID,
    status: int = 0, **attributes,
) -> dict:
    base = {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 1250,
        "gen_ai.usage.output_tokens": 875,
    }
    base.update(attributes)
    return {"span_id": span_id, "parent": parent, "start": start, "end": end, "trace_id": trace_id,
            "status": status, "attributes": {k: v for k, v in base.items() if v is not None}}


def traces_request(spans: list[dict], resource: dict | None = None) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(key_values(resource or {"service.name": "support-bot",
                                                                        "service.version": "1.4.0"}))
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "opentelemetry.instrumentation.openai_v2"
    for spec in spans:
        span = scope_spans.spans.add()
        span.trace_id = bytes.fromhex(spec["trace_id"])
        span.span_id = bytes.fromhex(spec["span_id"])
        if spec["parent"]:
            span.parent_span_id = bytes.fromhex(spec["parent"])
        span.name = f"chat {spec['attributes'].get('gen_ai.request.model', '')}"
        span.kind = 3
        span.start_time_unix_nano = ns(spec["start"])
        span.end_time_unix_nano = ns(spec["end"])
        span.status.code = spec["status"]
        span.attributes.extend(key_values(spec["attributes"]))
    return request


def logs_request(records: list[dict], resource: dict | None = None) -> ExportLogsServiceRequest:
    """records: {"event_name", "time" (s), "attributes", "body", "trace_id", "span_id"}."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend(key_values(resource or {"service.name": "support-bot"}))
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = "test"
    for spec in records:
        log = scope_logs.log_records.add()
        log.time_unix_nano = ns(spec.get("time", 0.0))
        if spec.get("event_name"):
            log.event_name = spec["event_name"]
        if spec.get("body") is not None:
            log.body.CopyFrom(any_value(spec["body"]))
        if spec.get("trace_id"):
            log.trace_id = bytes.fromhex(spec["trace_id"])
            log.span_id = bytes.fromhex(spec["span_id"])
        log.attributes.extend(key_values(spec.get("attributes", {})))
    return request


def genai_log(index: int, **attributes) -> dict:
    base = {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o", "gen_ai.response.id": f"chatcmpl-{index}",
        "gen_ai.usage.input_tokens": 1000 + index, "gen_ai.usage.output_tokens": 100 + index,
        "gen_ai.conversation.id": f"conv-{index % 8}", "user.id": f"dev-{index % 4}@example.com",
    }
    base.update(attributes)
    return {"event_name": "gen_ai.client.inference.operation.details", "time": index * 0.01,
            "attributes": base}


def metrics_request(points: int = 3) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    scope_metrics = request.resource_metrics.add().scope_metrics.add()
    metric = scope_metrics.metrics.add()
    metric.name = "gen_ai.client.token.usage"
    for index in range(points):
        point = metric.sum.data_points.add()
        point.as_int = 1000 * (index + 1)
        point.time_unix_nano = ns(index)
    return request


def otlp_json(message, **options) -> bytes:
    """The OTLP JSON mapping of a message: protobuf's JSON with hex trace and span ids (`options`
    go to json_format.MessageToDict)."""
    document = json_format.MessageToDict(message, **options)
    _ids_to_hex(document)
    return json.dumps(document).encode()


def _ids_to_hex(node) -> None:
    import base64

    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id") \
                    and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _ids_to_hex(value)
    elif isinstance(node, list):
        for item in node:
            _ids_to_hex(item)


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(ns(seconds) / 1e9, tz=BASE_TIME.tzinfo).isoformat()
