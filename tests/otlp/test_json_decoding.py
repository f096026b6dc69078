"""OTLP JSON read into the generated classes: the fast mapping and json_format agree."""
from __future__ import annotations

import json

from apps.otlp.decoding import attributes_dict, otlp_request_parse


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
