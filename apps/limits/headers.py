"""The rate limits a provider announces in its response headers, read from an event's attributes.

The SDK's shims copy `x-ratelimit-*` (OpenAI, Azure OpenAI) and `anthropic-ratelimit-*` headers
into the attributes of the call's usage event and of each throttle event, names lower-cased,
counts as numbers (tokensite_client.client_hooks); plain-HTTP senders may send them as text.
Plain functions, no Django: tested fast, used at ingest.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DIMENSIONS = ("requests", "tokens", "input_tokens", "output_tokens")
RESET_MAX_LENGTH = 64

# (dimension, part) of each header name: OpenAI puts the part first, Anthropic last.
_HEADER_PARTS: dict[str, tuple[str, str]] = {}
for _part in ("limit", "remaining", "reset"):
    for _dimension in ("requests", "tokens"):
        _HEADER_PARTS[f"x-ratelimit-{_part}-{_dimension}"] = (_dimension, _part)
    for _dimension in DIMENSIONS:
        _HEADER_PARTS[f"anthropic-ratelimit-{_dimension.replace('_', '-')}-{_part}"] = (_dimension, _part)


@dataclass(frozen=True, slots=True)
class AnnouncedLimit:
    """One dimension's announcement: the limit per minute, what was left, and when it refills
    (as sent: OpenAI a duration such as "6m0s" or "4.612s", Anthropic an RFC 3339 instant)."""

    limit: int | None = None
    remaining: int | None = None
    reset: str | None = None

    def merged_over(self, older: AnnouncedLimit) -> AnnouncedLimit:
        """This announcement, with the parts it lacks taken from an older one."""
        return AnnouncedLimit(
            limit=self.limit if self.limit is not None else older.limit,
            remaining=self.remaining if self.remaining is not None else older.remaining,
            reset=self.reset if self.reset is not None else older.reset,
        )


@dataclass(frozen=True, slots=True)
class AnnouncedLimits:
    """Every dimension a response announced; a dimension it did not mention is empty."""

    requests: AnnouncedLimit = AnnouncedLimit()
    tokens: AnnouncedLimit = AnnouncedLimit()
    input_tokens: AnnouncedLimit = AnnouncedLimit()
    output_tokens: AnnouncedLimit = AnnouncedLimit()

    def merged_over(self, older: AnnouncedLimits) -> AnnouncedLimits:
        """A later response's announcement over an earlier one's, part by part: a 429 that only
        says `...-remaining: 0` keeps the limit the call before announced."""
        return AnnouncedLimits(**{
            name: getattr(self, name).merged_over(getattr(older, name)) for name in DIMENSIONS
        })  # fmt: skip


def announced_limits(attributes: Mapping[str, object] | None) -> AnnouncedLimits | None:
    """The limits announced by the headers among `attributes`, or None when there are none.

    A count must be a whole number >= 0 (an int, an integral float, or digits as text); anything
    else is left out rather than guessed, so a malformed header never hides a good one.
    """
    if not attributes:
        return None
    found: dict[str, dict[str, int | str]] = {}
    for name, value in attributes.items():
        # Most attributes are not headers: one character tells, before any lower-casing.
        if name[:1] not in "xXaA":
            continue
        parts = _HEADER_PARTS.get(name.lower())
        if parts is None:
            continue
        dimension, part = parts
        parsed = _reset_text(value) if part == "reset" else _count(value)
        if parsed is not None:
            found.setdefault(dimension, {})[part] = parsed
    if not found:
        return None
    return AnnouncedLimits(**{dimension: AnnouncedLimit(**parts) for dimension, parts in found.items()})


def _count(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _reset_text(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    # Kept as sent: providers differ in what a bare number means (seconds, or an epoch instant).
    text = value.strip() if isinstance(value, str) else f"{value:g}"
    return text[:RESET_MAX_LENGTH] or None
