"""Attribute values read off the generated classes: each AnyValue member, its empty values included."""
from __future__ import annotations

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from apps.otlp.decoding import attributes_dict


def test_every_member_reads_as_its_own_type_even_when_empty_or_zero():
    # Strings and integers are read without asking which member is set; their defaults ("", 0)
    # must still come back as what was sent, not as the other member's default or None.
    values = {
        "text": AnyValue(string_value="x"), "empty_text": AnyValue(string_value=""),
        "count": AnyValue(int_value=-3), "zero": AnyValue(int_value=0),
        "no": AnyValue(bool_value=False), "ratio": AnyValue(double_value=0.0),
        "raw": AnyValue(bytes_value=b""), "unset": AnyValue(),
        "list": AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=0), AnyValue(string_value="")])),
        "map": AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key="k", value=AnyValue(bool_value=True))])),
    }
    read = attributes_dict([KeyValue(key=key, value=value) for key, value in values.items()])
    assert read == {"text": "x", "empty_text": "", "count": -3, "zero": 0, "no": False, "ratio": 0.0,
                    "raw": b"", "unset": None, "list": [0, ""], "map": {"k": True}}
    assert [type(read[key]) for key in ("zero", "no", "ratio", "raw")] == [int, bool, float, bytes]


def test_a_repeated_key_keeps_its_last_value():
    read = attributes_dict([KeyValue(key="k", value=AnyValue(string_value="first")),
                            KeyValue(key="k", value=AnyValue(int_value=0))])
    assert read == {"k": 0}
