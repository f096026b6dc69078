"""otlp_export: one OTLP request into usage and throttle events, stored like the events API's.

decode (apps.otlp.decoding) -> hand each record to the first source that claims it
(apps.otlp.sources) -> the events they produce go through apps.ingestion.services.events_store,
the same validation, pricing, idempotent storage and fold hand-off as `POST /api/v1/events`.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings

from apps.accounts.models import Project
from apps.core.collector import cyclic_gc_paused
from apps.ingestion.services import IngestResult, events_store
from apps.otlp.decoding import otlp_request_parse, record_count, records_from_request
from apps.otlp.pending_throttles import project_scope
from apps.otlp.records import SIGNAL_METRICS, TelemetryRecord
from apps.otlp.sources import Source, registered_sources, source_for

_MAX_REASONS_SHOWN = 5


@dataclass
class OtlpExportResult:
    records: int = 0
    used: int = 0
    ignored: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    events_accepted: int = 0
    events_duplicate: int = 0

    def summary(self) -> str:
        """The partial_success message: how many records were used, and why any were not."""
        text = (
            f"{self.used} of {self.records} records used, {self.ignored} carried no usage, {self.rejected} rejected; "
            f"{self.events_accepted} events stored, {self.events_duplicate} already stored."
        )
        if self.reasons:
            shown = "; ".join(self.reasons[:_MAX_REASONS_SHOWN])
            more = len(self.reasons) - _MAX_REASONS_SHOWN
            text += f" Rejected: {shown}" + (f" (and {more} more)." if more > 0 else ".")
        return text


def otlp_export(*, project: Project, signal: str, media_type: str, body: bytes) -> OtlpExportResult:
    """Store the usage an OTLP request carries; metrics are acknowledged and never add tokens."""
    with cyclic_gc_paused():
        message = otlp_request_parse(signal=signal, media_type=media_type, body=body)
        if signal == SIGNAL_METRICS:
            # Counters and histograms aggregate calls the logs and traces already report one by one.
            count = record_count(signal=signal, message=message)
            return OtlpExportResult(records=count, ignored=count)
        records = records_from_request(signal=signal, message=message, max_records=settings.OTLP_MAX_RECORDS)
        return records_store(project=project, records=records)


def records_store(
    *, project: Project, records: list[TelemetryRecord], sources: tuple[Source, ...] | None = None
) -> OtlpExportResult:
    """Convert records with their sources and store the events; the counts for the reply."""
    result = OtlpExportResult(records=len(records))
    by_source: dict[Source, list[TelemetryRecord]] = defaultdict(list)
    for record in records:
        source = source_for(record, sources if sources is not None else registered_sources())
        if source is None:
            result.ignored += 1
        else:
            by_source[source].append(record)
    events: list[dict] = []
    for source, claimed in by_source.items():
        with project_scope(project.pk):
            output = source.convert(claimed)
        events.extend(output.events)
        result.used += output.used
        result.ignored += output.ignored
        result.rejected += len(output.rejected)
        result.reasons.extend(f"{source.name}: {reason}" for reason in output.rejected)
    if events:
        _events_store(project=project, events=events, result=result)
    return result


def _events_store(*, project: Project, events: list[dict], result: OtlpExportResult) -> None:
    # The sources' dicts go in as they are: validated against the events API's own types and rules.
    stored: IngestResult = events_store(project=project, raw_events=events)
    result.events_accepted = stored.accepted
    result.events_duplicate = stored.duplicates
    for rejection in stored.rejected:
        # A record whose event failed validation (e.g. absurd token counts) was not used after all.
        result.rejected += 1
        result.used = max(0, result.used - 1)
        errors = ", ".join(f"{name}: {' '.join(messages)}" for name, messages in rejection.errors.items())
        result.reasons.append(f"event {rejection.event_id}: {errors}")
