"""OTLP sources: who sent a record, and how its records become TokenSite events.

A source claims the records it understands (by service.name, scope or event name) and converts
them into event dicts exactly as `POST /api/v1/events` accepts them; the receiver then stores
those through the same path as the native API (apps.ingestion.services.events_store), so
validation, pricing, idempotency and folding are never duplicated here.

Every event id is derived from the record (event_id_for), never random: an exporter that resends
a batch, or an agent that reports one call in its logs and again in its traces, produces the same
ids and is counted once.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from tokensite_client import agent_ids
from tokensite_client.events import DEVELOPER_ATTRIBUTE, SOURCE_ATTRIBUTE, SOURCE_VERSION_ATTRIBUTE

from apps.otlp.records import TelemetryRecord

# Never change: stored event ids (and so idempotency across upgrades) depend on it.
EVENT_ID_NAMESPACE = agent_ids.EVENT_ID_NAMESPACE


# Developer, most specific first: an email, then an account or user id, then an installation id.
DEVELOPER_KEYS: tuple[str, ...] = (
    "user.email",
    "enduser.email",
    "user.account_uuid",
    "user.account_id",
    "account.id",
    "user.id",
    "enduser.id",
    "user.name",
    "installation.id",
    "user.installation_id",
    "device.id",
)

# OTEL_RESOURCE_ATTRIBUTES keys a team sets to attribute spend; copied onto events as given.
TEAM_KEYS: tuple[str, ...] = (
    "team", "team.name", "team.id", "department", "department.name", "org", "organization",
    "cost_center", "cost_centre", "cost.center", "cost.centre", "costcenter", "costcentre",
    "project", "environment", "deployment.environment", "deployment.environment.name",
)

_TEAM_KEY_SET = frozenset(TEAM_KEYS)

MAX_ATTRIBUTE_VALUE_CHARS = 200
_UNIX_EPOCH = datetime(1970, 1, 1)


@dataclass
class SourceOutput:
    # Event dicts exactly as POST /api/v1/events accepts them (event_id from event_id_for).
    events: list[dict] = field(default_factory=list)
    used: int = 0        # records that produced or contributed to an event
    ignored: int = 0     # records that carry no usage (prompt text, tool results, unknown events): not errors
    # One reason per record that should carry usage but could not be used (reported in partial_success).
    rejected: list[str] = field(default_factory=list)


@runtime_checkable
class Source(Protocol):
    name: str

    def claims(self, record: TelemetryRecord) -> bool: ...

    def convert(self, records: list[TelemetryRecord]) -> SourceOutput: ...


@functools.cache
def registered_sources() -> tuple[Source, ...]:
    """Every source, in priority order: a record goes to the first source that claims it.

    Imported lazily so a source module may import the helpers of this package.
    """
    from apps.otlp.sources.genai import GenAiSource

    # --- Agent sources (owned by the "agents" work: claude_code.py, codex.py, gemini_cli.py) ---
    from apps.otlp.sources.claude_code import ClaudeCodeSource
    from apps.otlp.sources.codex import CodexSource
    from apps.otlp.sources.gemini_cli import GeminiCliSource

    agents: list[Source] = [ClaudeCodeSource(), CodexSource(), GeminiCliSource()]
    # --- end of agent sources ---

    # The generic GenAI semantic-convention source comes last: it claims any span with gen_ai.*
    # usage, which agents emitting their own spans must get first.
    return (*agents, GenAiSource())


def source_for(record: TelemetryRecord, sources: tuple[Source, ...] | None = None) -> Source | None:
    for source in sources if sources is not None else registered_sources():
        if source.claims(record):
            return source
    return None


# A deterministic event id: uuid5 over a fixed namespace and the parts, in order. Pass the source
# name first, then what identifies the call (session, request or response id, trace and span id,
# timestamp) and, for several events of one call, what tells them apart (e.g. "throttle",
# attempt). None counts as "". Defined once in the SDK (tokensite_client.agent_ids), because
# `tokensite-client import` must derive the same ids; the SDK's own function, not a wrapper, as
# it runs once per record.
event_id_for = agent_ids.event_id_for


def as_int(value: object) -> int | None:
    """An integer count from an attribute: int, integral float or decimal string; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, (str, bytes)):
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        text = text.strip()
        if len(text) > 40:
            return None
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return None
            return int(number) if math.isfinite(number) and number.is_integer() else None
    return None


def as_float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and len(value) <= 40:
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def as_text(value: object) -> str:
    """A short attribute value as text ("" for None, lists and maps)."""
    if type(value) is str:
        if "\x00" in value:
            value = value.replace("\x00", "")
        return value if len(value) <= MAX_ATTRIBUTE_VALUE_CHARS else value[:MAX_ATTRIBUTE_VALUE_CHARS]
    if value is None or isinstance(value, (list, dict, tuple)):
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).replace("\x00", "")
    return text[:MAX_ATTRIBUTE_VALUE_CHARS]


def iso_from_unix_nano(nanos: int) -> str:
    """RFC 3339 UTC with microseconds (none when zero), as the events API accepts timestamps."""
    # The text of datetime.isoformat() of naive UTC, with the date, hour and minute looked up:
    # the records of one request fall in a few minutes, and this runs once per record.
    minutes, micros = divmod(int(nanos) // 1000, 60_000_000)
    seconds, micros = divmod(micros, 1_000_000)
    if micros:
        return f"{_minute_text(minutes)}:{seconds:02d}.{micros:06d}Z"
    return f"{_minute_text(minutes)}:{seconds:02d}Z"


@functools.lru_cache(maxsize=4096)
def _minute_text(minutes: int) -> str:
    """"YYYY-MM-DDTHH:MM" of a minute since the Unix epoch."""
    return (_UNIX_EPOCH + timedelta(minutes=minutes)).isoformat(timespec="minutes")


def developer_of(record: TelemetryRecord, keys: tuple[str, ...] = DEVELOPER_KEYS) -> str:
    """DESIGN.md section 9: user.email, else an account or user id, else the installation id.

    Looks in the record's attributes first, then in its resource.
    """
    attributes, resource = record.attributes, record.resource
    for key in keys:
        if key in attributes or key in resource:
            text = as_text(record.get(key)).strip()
            if text:
                return text
    return ""


def team_attributes(record: TelemetryRecord) -> dict[str, str | int | float | bool]:
    """The OTEL_RESOURCE_ATTRIBUTES keys a team uses for attribution, from the resource."""
    out: dict[str, str | int | float | bool] = {}
    present = _TEAM_KEY_SET.intersection(record.resource)
    for key in TEAM_KEYS if present else ():
        if key not in present:
            continue
        value = record.resource.get(key)
        if isinstance(value, (bool, int, float)) and not (isinstance(value, float) and not math.isfinite(value)):
            out[key] = value
        elif (text := as_text(value)):
            out[key] = text
    return out


def event_attributes(
    record: TelemetryRecord,
    *,
    source: str,
    version: str = "",
    developer: str | None = None,
    extra: dict[str, object] | None = None,
) -> dict[str, str | int | float | bool]:
    """Attributes for an event from a record: developer, source name and version, team keys, extras.

    `developer=None` looks it up with developer_of. Values are kept short so an event's attributes
    stay well under the ingestion limit; None and empty values are left out.
    """
    attributes: dict[str, str | int | float | bool] = {}
    developer = developer_of(record) if developer is None else developer
    if developer:
        attributes[DEVELOPER_ATTRIBUTE] = as_text(developer)
    if source:
        attributes[SOURCE_ATTRIBUTE] = as_text(source)
    if version:
        attributes[SOURCE_VERSION_ATTRIBUTE] = as_text(version)
    attributes.update(team_attributes(record))
    for key, value in (extra or {}).items():
        if isinstance(value, bool) or (isinstance(value, int) and abs(value) < 2**53):
            attributes[key] = value
        elif isinstance(value, float):
            if math.isfinite(value):
                attributes[key] = value
        elif (text := as_text(value)):
            attributes[key] = text
    return attributes
