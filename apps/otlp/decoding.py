"""OTLP request bodies (protobuf or JSON) into TelemetryRecords, through the official classes.

Both encodings are parsed into the same `opentelemetry-proto` message types, so everything after
this module is one path. The OTLP JSON mapping differs from protobuf's canonical JSON in one way
that matters: trace and span ids are hex, where `json_format` expects base64; they are converted
before parsing. 64-bit integers as strings or numbers, enums as integers and lowerCamelCase or
snake_case keys are all accepted by `json_format` itself; unknown fields are ignored as the OTLP
spec requires of receivers.
"""
from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import dataclass
from typing import Any

import msgspec
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from apps.core.errors import BadRequest, ErrorCode, PayloadTooLarge
from apps.core.parsers import utf8_error_message
from apps.otlp.records import SIGNAL_LOGS, SIGNAL_METRICS, SIGNAL_TRACES, SpanEvent, TelemetryRecord

MEDIA_PROTOBUF = "application/x-protobuf"
MEDIA_JSON = "application/json"

# AnyValue nests arrays and maps; deeper values than this are kept as their text.
_MAX_VALUE_DEPTH = 8
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
_HEX_ID_FIELDS = frozenset({"trace_id", "span_id", "parent_span_id"})
_json_decoder = msgspec.json.Decoder()


@dataclass(frozen=True)
class SignalTypes:
    request: type[Message]
    response: type[Message]
    partial_success: type[Message]
    rejected_field: str


SIGNALS: dict[str, SignalTypes] = {
    SIGNAL_LOGS: SignalTypes(
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
        logs_service_pb2.ExportLogsPartialSuccess,
        "rejected_log_records",
    ),
    SIGNAL_TRACES: SignalTypes(
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
        trace_service_pb2.ExportTracePartialSuccess,
        "rejected_spans",
    ),
    SIGNAL_METRICS: SignalTypes(
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
        metrics_service_pb2.ExportMetricsPartialSuccess,
        "rejected_data_points",
    ),
}


def otlp_request_parse(*, signal: str, media_type: str, body: bytes) -> Message:
    """The Export*ServiceRequest of a body; 400 `invalid_otlp` when it cannot be decoded."""
    message = SIGNALS[signal].request()
    if media_type == MEDIA_PROTOBUF:
        try:
            message.ParseFromString(body)
        except Exception as exc:  # noqa: BLE001 - any decoder failure on client bytes is the client's 400
            message_text = f"The body is not a valid OTLP {signal} protobuf message: {exc}."
            raise BadRequest(message_text, code=ErrorCode.INVALID_OTLP) from None
        return message
    fast = _json_request_fast(signal, body)
    if fast is not None:
        return fast
    # What the fast path declined is decoded whole and read by json_format, which says what is wrong.
    try:
        document = _json_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}.", code=ErrorCode.MALFORMED_JSON) from None
    except UnicodeDecodeError:
        # msgspec checks UTF-8 in the strings it decodes, and its offset is within the string;
        # decoding the body again says where in the body (the events API's own message).
        raise BadRequest(_utf8_error(body), code=ErrorCode.MALFORMED_JSON) from None
    if not isinstance(document, dict):
        raise BadRequest(f"The body must be an OTLP {signal} JSON object.", code=ErrorCode.INVALID_OTLP)
    try:
        _hex_ids_to_base64(document)
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except Exception as exc:  # noqa: BLE001 - wrong shapes, overflows, bad ids: all the client's 400
        message_text = f"The body is not a valid OTLP {signal} JSON message: {_short(exc)}"
        raise BadRequest(message_text, code=ErrorCode.INVALID_OTLP) from None
    return message


# The fast path for OTLP JSON, record by record. The request, resource and scope levels are decoded
# into small structs (every field under both key spellings) that leave each record (log record,
# span, metric) as its raw JSON; each record is then decoded, mapped and added to the message in
# turn, while its objects are still in the CPU's caches. Decoding the whole document first and
# walking it after made three passes over memory the size of the request instead.
_RECORDS_DEPTH = 2  # the request is level 0, its resource_* entries 1, their scope_* entries 2


def _json_request_fast(signal: str, body: bytes) -> Message | None:
    """The request message, or None for a body the fast path does not read (json_format's then)."""
    request = SIGNALS[signal].request
    try:
        decoded = _level_decoder(request.DESCRIPTOR).decode(body)
        return _level_add(request, decoded, request.DESCRIPTOR, 0)
    except Exception:  # noqa: BLE001 - anything unusual takes json_format's path, which says what is wrong
        return None


@functools.cache
def _level_decoder(descriptor) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(_level_struct(descriptor, 0))


def _level_struct(descriptor, depth: int) -> type:
    """The struct a request, resource or scope level decodes into; its other fields stay plain JSON."""
    fields = []
    for field in descriptor.fields:
        if field.containing_oneof is not None:
            # A oneof is checked only in records (_message_kwargs); OTLP has none above them.
            raise TypeError(f"{descriptor.full_name}.{field.name} is in a oneof")
        if _is_repeated(field) and field.message_type is not None:
            item = msgspec.Raw if depth == _RECORDS_DEPTH else _level_struct(field.message_type, depth + 1)
            kind = list[item] | None
        else:
            kind = Any
        fields.extend((key, kind, None) for key in dict.fromkeys((field.name, field.json_name)))
    return msgspec.defstruct(f"Json{descriptor.name}", fields)


@functools.cache
def _level_fields(descriptor) -> tuple:
    """(name, keys, kind, message type, whether it is a list of messages) of each field of a level."""
    return tuple(
        (field.name, tuple(dict.fromkeys((field.name, field.json_name))), field.type, field.message_type,
         _is_repeated(field) and field.message_type is not None)
        for field in descriptor.fields
    )


def _level_add(add, decoded, descriptor, depth: int) -> Message:
    """add(**the level's own fields), then its lists of messages filled one entry at a time."""
    kwargs = {}
    lists = []
    for name, keys, kind, message_type, is_list in _level_fields(descriptor):
        values = [value for key in keys if (value := getattr(decoded, key)) is not None]
        if not values:
            continue
        if len(values) > 1:
            raise TypeError(f"{name} is given under both of its names")
        if is_list:
            lists.append((name, message_type, values[0]))
        else:
            kwargs[name] = _scalar_or_message(name, kind, message_type, values[0])
    message = add(**kwargs)
    for name, message_type, items in lists:
        add_entry = getattr(message, name).add
        if depth == _RECORDS_DEPTH:
            for raw in items:
                add_entry(**_message_kwargs(_json_decoder.decode(raw), message_type))
        else:
            for item in items:
                _level_add(add_entry, item, message_type, depth + 1)
    return message


# Each record's JSON is mapped onto the message's own constructor (implemented in C by upb), driven
# by the message descriptors, ten times faster than json_format's field-by-field walk in Python.
# It handles exactly what OTLP JSON allows (both key spellings, 64-bit integers as strings, enums
# as integers, hex ids); anything else raises and the request goes through json_format, which also
# produces the error message.
_INT_TYPES = frozenset({
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64, FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
})
_plans: dict = {}
_ANY_VALUE_DESCRIPTOR = AnyValue.DESCRIPTOR


def _plan(descriptor) -> dict:
    plan = _plans.get(descriptor.full_name)
    if plan is None:
        plan = {}
        for field in descriptor.fields:
            oneof = field.containing_oneof
            entry = (field.name, field.type, field.message_type, _is_repeated(field), oneof.name if oneof else None)
            plan[field.name] = plan[field.json_name] = entry
        _plans[descriptor.full_name] = plan
    return plan


def _is_repeated(field) -> bool:
    repeated = getattr(field, "is_repeated", None)
    return repeated if repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _message_kwargs(document: dict, descriptor) -> dict:
    if type(document) is not dict:
        raise TypeError("a message must be an object")
    if descriptor.full_name == _KEY_VALUE:
        return _key_value_kwargs(document)
    plan = _plan(descriptor)
    kwargs = {}
    oneofs_seen: set[str] = set()
    for key, value in document.items():
        entry = plan.get(key)
        if entry is None or value is None:
            continue
        name, kind, message_type, repeated, oneof = entry
        if oneof is not None:
            # Two members of one oneof (an AnyValue with a string and an int) is not a message;
            # the constructor would keep the last, json_format says what is wrong.
            if oneof in oneofs_seen:
                raise TypeError(f"{key}: a second member of oneof {oneof}")
            oneofs_seen.add(oneof)
        if repeated:
            if type(value) is not list:
                raise TypeError(f"{key} must be a list")
            if message_type is not None and message_type.full_name == _KEY_VALUE:
                kwargs[name] = _key_values_kwargs(value)
            else:
                kwargs[name] = [_scalar_or_message(name, kind, message_type, item) for item in value]
        else:
            kwargs[name] = _scalar_or_message(name, kind, message_type, value)
    return kwargs


_KEY_VALUE = "opentelemetry.proto.common.v1.KeyValue"
# AnyValue's scalar members by either key spelling, with the JSON type each must have. Integers
# as JSON numbers are taken as they are; as strings (int64 in proto3 JSON) they go through int().
_ANY_SCALARS = {
    "stringValue": ("string_value", str), "string_value": ("string_value", str),
    "boolValue": ("bool_value", bool), "bool_value": ("bool_value", bool),
    "doubleValue": ("double_value", float), "double_value": ("double_value", float),
    "intValue": ("int_value", int), "int_value": ("int_value", int),
}
_ANY_INTS = frozenset({"intValue", "int_value"})


def _key_values_kwargs(items: list) -> list[dict]:
    """A KeyValue list, most of any OTLP request: the common scalar shapes in one tight loop."""
    out = []
    append = out.append
    for item in items:
        if type(item) is dict and len(item) == 2:
            key = item.get("key")
            value = item.get("value")
            if type(key) is str and type(value) is dict and len(value) == 1:
                ((member, scalar),) = value.items()
                kind = _ANY_SCALARS.get(member)
                if kind is not None:
                    # The decoded record is ours: its dicts are reused as the constructor's kwargs
                    # (should the fast path fail, json_format reads the body decoded anew).
                    if type(scalar) is kind[1]:
                        del value[member]
                        value[kind[0]] = scalar
                        append(item)
                        continue
                    if kind[1] is int and type(scalar) is str:
                        number = int(scalar)
                        del value[member]
                        value["int_value"] = number
                        append(item)
                        continue
        append(_key_value_kwargs(item))
    return out


def _key_value_kwargs(document: dict) -> dict:
    """KeyValue, most of any OTLP request: scalar values without the generic walk."""
    if type(document) is not dict:
        raise TypeError("a KeyValue must be an object")
    key = document.get("key", "")
    value = document.get("value")
    if type(key) is not str:
        raise TypeError("key must be a string")
    if type(value) is dict and len(value) == 1:
        ((member, item),) = value.items()
        scalar = _ANY_SCALARS.get(member)
        if scalar is not None and type(item) is scalar[1]:
            return {"key": key, "value": {scalar[0]: item}}
        if member in _ANY_INTS and type(item) in (int, str):
            return {"key": key, "value": {"int_value": int(item)}}
    if value is None:
        return {"key": key}
    return {"key": key, "value": _message_kwargs(value, _ANY_VALUE_DESCRIPTOR)}


def _scalar_or_message(name: str, kind: int, message_type, value):
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return _message_kwargs(value, message_type)
    if kind in _INT_TYPES or kind == FieldDescriptor.TYPE_ENUM:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TypeError(f"{name} must be an integer")
        return int(value)
    if kind == FieldDescriptor.TYPE_BYTES:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string")
        return bytes.fromhex(value) if name in _HEX_ID_FIELDS else base64.b64decode(value, validate=True)
    if kind == FieldDescriptor.TYPE_STRING:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string")
        return value
    if kind == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a boolean")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number")
    return float(value)


def _utf8_error(body: bytes) -> str:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return utf8_error_message(body, exc)
    return "The body is not valid UTF-8; JSON must be UTF-8."


def _short(exc: Exception) -> str:
    # json_format nests "Failed to parse <field> field: " once per level; what is wrong is at the end.
    text = str(exc)
    return text if len(text) <= 300 else "..." + text[-300:]


def _hex_ids_to_base64(document: dict) -> None:
    """OTLP JSON carries ids as hex; json_format reads bytes fields as base64. Converted in place."""
    pending: list[object] = [document]
    visited = 0
    while pending:
        node = pending.pop()
        visited += 1
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _ID_KEYS and isinstance(value, str):
                    node[key] = _hex_to_base64(key, value)
                elif isinstance(value, (dict, list)):
                    pending.append(value)
        elif isinstance(node, list):
            pending.extend(item for item in node if isinstance(item, (dict, list)))


def _hex_to_base64(key: str, value: str) -> str:
    if not value:
        return value
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{key} must be a hex string, got {value[:40]!r}") from None
    return base64.b64encode(raw).decode("ascii")


def record_count(*, signal: str, message: Message) -> int:
    """How many records (log records, spans, metric data points) the request holds."""
    count = 0
    if signal == SIGNAL_LOGS:
        for resource_logs in message.resource_logs:
            for scope_logs in resource_logs.scope_logs:
                count += len(scope_logs.log_records)
    elif signal == SIGNAL_TRACES:
        for resource_spans in message.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                count += len(scope_spans.spans)
    else:
        for resource_metrics in message.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kind = metric.WhichOneof("data")
                    if kind is not None:
                        count += len(getattr(metric, kind).data_points)
    return count


def records_from_request(*, signal: str, message: Message, max_records: int) -> list[TelemetryRecord]:
    """Flatten a logs or traces request into records; 413 past max_records."""
    count = record_count(signal=signal, message=message)
    if count > max_records:
        raise PayloadTooLarge(f"The request holds {count} records; the limit is {max_records} per request.")
    if signal == SIGNAL_LOGS:
        return _log_records(message)
    if signal == SIGNAL_TRACES:
        return _span_records(message)
    return []


def _log_records(message: logs_service_pb2.ExportLogsServiceRequest) -> list[TelemetryRecord]:
    records: list[TelemetryRecord] = []
    for resource_logs in message.resource_logs:
        resource = attributes_dict(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            scope, scope_version = scope_logs.scope.name, scope_logs.scope.version
            for log in scope_logs.log_records:
                attributes = attributes_dict(log.attributes)
                body = any_value(log.body) if log.HasField("body") else None
                name = log.event_name
                if not name:
                    event_name = attributes.get("event.name")
                    if isinstance(event_name, str):
                        name = event_name
                    elif isinstance(body, str) and len(body) <= 200:
                        name = body
                time = log.time_unix_nano or log.observed_time_unix_nano
                records.append(TelemetryRecord(
                    signal=SIGNAL_LOGS,
                    name=name,
                    attributes=attributes,
                    resource=resource,
                    scope=scope,
                    start_unix_nano=time,
                    end_unix_nano=time,
                    trace_id=_hex_id(log.trace_id),
                    span_id=_hex_id(log.span_id),
                    parent_span_id="",
                    status_code=0,
                    events=(),
                    body=body,
                    scope_version=scope_version,
                    severity_text=log.severity_text,
                ))
    return records


def _span_records(message: trace_service_pb2.ExportTraceServiceRequest) -> list[TelemetryRecord]:
    records: list[TelemetryRecord] = []
    for resource_spans in message.resource_spans:
        resource = attributes_dict(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope, scope_version = scope_spans.scope.name, scope_spans.scope.version
            for span in scope_spans.spans:
                records.append(TelemetryRecord(
                    signal=SIGNAL_TRACES,
                    name=span.name,
                    attributes=attributes_dict(span.attributes),
                    resource=resource,
                    scope=scope,
                    start_unix_nano=span.start_time_unix_nano,
                    end_unix_nano=span.end_time_unix_nano,
                    trace_id=_hex_id(span.trace_id),
                    span_id=_hex_id(span.span_id),
                    parent_span_id=_hex_id(span.parent_span_id),
                    status_code=span.status.code,
                    events=tuple(
                        SpanEvent(event.name, event.time_unix_nano, attributes_dict(event.attributes))
                        for event in span.events
                    ),
                    body=None,
                    scope_version=scope_version,
                    status_message=span.status.message,
                    span_kind=span.kind,
                ))
    return records


def _hex_id(raw: bytes) -> str:
    if not raw or not any(raw):
        return ""
    return binascii.hexlify(raw).decode("ascii")


_SCALAR_KINDS = frozenset({"string_value", "int_value", "double_value", "bool_value", "bytes_value"})
_which_value = AnyValue.WhichOneof


def attributes_dict(key_values) -> dict[str, object]:
    """Repeated KeyValue into a dict; the last value of a repeated key wins."""
    out: dict[str, object] = {}
    for kv in key_values:
        value = kv.value
        # Nearly every attribute is a string or an integer. A oneof member that is not set reads as
        # its default, so a non-empty string (a non-zero integer) is the value: one read instead of
        # WhichOneof and getattr (7.0 -> 6.2 µs for the benchmark's 12 attributes).
        text = value.string_value
        if text:
            out[kv.key] = text
            continue
        number = value.int_value
        if number:
            out[kv.key] = number
            continue
        kind = _which_value(value, "value")
        out[kv.key] = getattr(value, kind) if kind in _SCALAR_KINDS else any_value(value)
    return out


def any_value(value, depth: int = 0) -> object:
    """An AnyValue as str, int, float, bool, bytes, list or dict (None when empty)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        if depth >= _MAX_VALUE_DEPTH:
            return "[...]"
        return [any_value(item, depth + 1) for item in value.array_value.values]
    if kind == "kvlist_value":
        if depth >= _MAX_VALUE_DEPTH:
            return "{...}"
        return {kv.key: any_value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def response_encode(*, signal: str, media_type: str, rejected: int, error_message: str) -> bytes:
    """The Export*ServiceResponse in the request's encoding; partial_success set when there is news."""
    types = SIGNALS[signal]
    response = types.response()
    if rejected or error_message:
        partial = response.partial_success
        setattr(partial, types.rejected_field, rejected)
        partial.error_message = error_message
    if media_type == MEDIA_PROTOBUF:
        return response.SerializeToString()
    return json_format.MessageToJson(response, indent=None).encode("utf-8")
