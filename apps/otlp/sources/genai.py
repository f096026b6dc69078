"""OpenTelemetry GenAI semantic-convention spans (instrumented apps): placeholder, filled in next."""
from __future__ import annotations

from apps.otlp.records import TelemetryRecord
from apps.otlp.sources import SourceOutput


class GenAiSource:
    name = "genai"

    def claims(self, record: TelemetryRecord) -> bool:
        return False

    def convert(self, records: list[TelemetryRecord]) -> SourceOutput:
        return SourceOutput(ignored=len(records))
