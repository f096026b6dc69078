"""OTLP JSON read into the generated classes: the fast mapping and json_format agree."""
from __future__ import annotations

import json

import pytest
from google.protobuf import json_format

from apps.core.errors import BadRequest
from apps.otlp.decoding import attributes_dict, otlp_request_parse
from tests.otlp.payloads import genai_log, genai_span, logs_request, metrics_request, otlp_json, traces_request


def _logs(time_unix_nano) -> bytes:
    return json.dumps({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "app"}}]},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": time_unix_nano,
            "traceId": "0af7651916cd43dd8448eb211c80319c",
            "attributes": [
                {"key": "count", "value": {"intValue": "5"}},
                {"key": "small", "value": {"intValue": 7}},
                {"key": "text", "value": {"stringValue": "s"}},
                {"key": "flag", "value": {"boolValue": True}},
                {"key": "ratio", "value": {"doubleValue": 0.5}},
                {"key": "list", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}},
            ],
        }]}],
    }]}).encode()


def _read(body: bytes) -> tuple[dict, dict, int, bytes]:
    message = otlp_request_parse(signal="logs", media_type="application/json", body=body)
    resource_logs = message.resource_logs[0]
    log = resource_logs.scope_logs[0].log_records[0]
    return attributes_dict(resource_logs.resource.attributes), attributes_dict(log.attributes), \
        log.time_unix_nano, log.trace_id


def test_a_request_the_fast_mapping_declines_is_read_whole_by_json_format():
    # A float timestamp is left to json_format, after the fast mapping already went over the attributes.
    assert _read(_logs(1.0e9)) == _read(_logs("1000000000"))
    resource, attributes, time_unix_nano, trace_id = _read(_logs(1.0e9))
    assert resource == {"service.name": "app"}
    assert attributes == {"count": 5, "small": 7, "text": "s", "flag": True, "ratio": 0.5, "list": ["a"]}
    assert time_unix_nano == 1_000_000_000
    assert trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"


def _logs_with(attributes: list, **record) -> bytes:
    return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": "1", "attributes": attributes, **record}]}]}]}).encode()


def test_each_key_spelling_reads_the_same_message():
    camel = _logs_with(
        [{"key": "a", "value": {"stringValue": "x"}}, {"key": "b", "value": {"intValue": "5"}},
         {"key": "c", "value": {"boolValue": False}}, {"key": "d", "value": {"doubleValue": 1.5}}],
        severityText="INFO", observedTimeUnixNano="2",
    )
    mixed = json.dumps({"resource_logs": [{"scope_logs": [{"log_records": [{
        "time_unix_nano": 1, "severity_text": "INFO", "observedTimeUnixNano": 2,
        "attributes": [{"key": "a", "value": {"string_value": "x"}}, {"key": "b", "value": {"int_value": 5}},
                       {"key": "c", "value": {"bool_value": False}}, {"key": "d", "value": {"double_value": 1.5}}],
    }]}]}]}).encode()
    assert otlp_request_parse(signal="logs", media_type="application/json", body=mixed) == \
        otlp_request_parse(signal="logs", media_type="application/json", body=camel)
    _, attributes, time_unix_nano, _ = _read(mixed.replace(b'"log_records": [{', b'"log_records": [{"traceId": "", '))
    assert attributes == {"a": "x", "b": 5, "c": False, "d": 1.5} and time_unix_nano == 1


@pytest.mark.parametrize("attributes, where", [
    ([{"key": "a", "value": {"stringValue": "x", "intValue": 1}}], "oneof"),
    ([{"key": "a", "value": {"intValue": "12x"}}], "12x"),
    ([{"key": "a", "value": {"intValue": str(2**63)}}], "out of range"),
    ([{"key": "a", "value": {"intValue": 1.5}}], "1.5"),
    ([{"key": "a", "value": {"boolValue": 1}}], "true or false"),
    ([{"key": "a", "value": {"stringValue": 5}}], "stringValue"),
    ([{"key": 5, "value": {"stringValue": "x"}}], "key field"),
    ({"a": "x"}, "must be in []"),
])
def test_a_malformed_key_value_is_a_400_that_says_what_is_wrong(attributes, where):
    with pytest.raises(BadRequest) as raised:
        otlp_request_parse(signal="logs", media_type="application/json", body=_logs_with(attributes))
    assert raised.value.code == "invalid_otlp"
    assert where in raised.value.message


@pytest.mark.parametrize("body", [
    _logs_with([{"key": "a", "value": {"stringValue": "x"}}])[:-4],
    _logs_with([{"key": "a", "value": {"stringValue": "\u00e9"}}]).replace(b"\\u00e9", b"\xe9"),
])
def test_a_body_that_is_not_json_is_a_400_malformed_json(body):
    with pytest.raises(BadRequest) as raised:
        otlp_request_parse(signal="logs", media_type="application/json", body=body)
    assert raised.value.code == "malformed_json"


@pytest.mark.parametrize("signal, request_message", [
    ("logs", logs_request([genai_log(0), genai_log(1, **{"gen_ai.usage.input_tokens": 7})],
                          resource={"service.name": "app", "team": "core"})),
    ("traces", traces_request([genai_span("00f067aa0ba902b7", start=0, end=1.5, **{"gen_ai.usage.input_tokens": 9})])),
    ("metrics", metrics_request()),
])
@pytest.mark.parametrize("snake_case", [False, True])
def test_exporter_json_of_every_signal_is_read_without_json_format(monkeypatch, signal, request_message, snake_case):
    # json_format reads a record at about ten times the fast path's cost: what exporters send (enums
    # as integers, as the OTLP JSON mapping says) must never need it, in either key spelling.
    def refuse(*args, **kwargs):
        raise AssertionError("json_format was needed")

    monkeypatch.setattr(json_format, "ParseDict", refuse)
    body = otlp_json(request_message, use_integers_for_enums=True, preserving_proto_field_name=snake_case)
    assert otlp_request_parse(signal=signal, media_type="application/json", body=body) == request_message
