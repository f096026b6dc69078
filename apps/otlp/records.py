"""The one record type every OTLP source reads: logs, spans and metric points flattened alike.

The receiver decodes an OTLP request (protobuf or JSON, through the official generated classes)
into TelemetryRecords; sources (apps.otlp.sources) turn records into event dicts. Sources never
see protobuf objects, so they can be tested with plain records and stay independent of the wire.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SIGNAL_LOGS = "logs"
SIGNAL_TRACES = "traces"
SIGNAL_METRICS = "metrics"


@dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    time_unix_nano: int
    attributes: Mapping[str, object]


# Not frozen: a frozen dataclass sets each of its 17 fields through object.__setattr__, which
# doubled the cost of building the hundreds of records of each request. Sources only read them.
@dataclass(slots=True)
class TelemetryRecord:
    signal: str                      # "logs" | "traces" | "metrics"
    # logs: the event name (LogRecord.event_name, else attributes["event.name"], else a string body);
    # traces: span name; metrics: metric name
    name: str
    attributes: Mapping[str, object]  # record attributes, AnyValue converted to str/int/float/bool/bytes/list/dict
    resource: Mapping[str, object]    # resource attributes (service.name, service.version, OTEL_RESOURCE_ATTRIBUTES ...)
    scope: str                       # instrumentation scope name
    start_unix_nano: int             # logs: time_unix_nano or observed_time_unix_nano; spans: start
    end_unix_nano: int               # spans: end; logs: = start
    trace_id: str                    # lowercase hex, "" when absent/all-zero
    span_id: str
    parent_span_id: str
    status_code: int                 # span status (0 unset, 1 ok, 2 error); 0 for logs
    events: tuple[SpanEvent, ...]    # span events; () for logs
    body: object                     # log body converted; None for spans
    # Added fields (defaults keep the constructor above working):
    scope_version: str = ""
    status_message: str = ""         # span status message; "" for logs
    span_kind: int = 0               # SpanKind enum value; 0 for logs
    severity_text: str = ""          # logs only

    @property
    def service_name(self) -> str:
        value = self.resource.get("service.name")
        return value if isinstance(value, str) else ""

    @property
    def service_version(self) -> str:
        value = self.resource.get("service.version")
        return value if isinstance(value, str) else ""

    def get(self, key: str, default: object = None) -> object:
        """An attribute of the record, else of its resource."""
        if key in self.attributes:
            return self.attributes[key]
        return self.resource.get(key, default)
