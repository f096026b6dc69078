"""The rate limits a provider announces in its response headers, read from an event's attributes.

The SDK's shims copy `x-ratelimit-*` (OpenAI, Azure OpenAI) and `anthropic-ratelimit-*` headers
into the attributes of the call's usage event and of each throttle event, names lower-cased,
counts as numbers (tokensite_client.client_hooks); plain-HTTP senders may send them as text.
Plain functions, no Django: tested fast, run at ingest on every event with attributes.
"""
from __future__ import annotations

from collections.abc import Mapping

DIMENSIONS = ("requests", "tokens", "input_tokens", "output_tokens")
PARTS = ("limit", "remaining", "reset")
# An announcement: the parts a response announced, named `<dimension>_<part>` like the columns
# of limits.ProviderLimit: the limit per minute, what remained, and when it refills (as sent:
# OpenAI a duration such as "6m0s" or "4.612s", Anthropic an RFC 3339 instant).
Announcement = dict[str, int | str]
PART_NAMES = tuple(f"{dimension}_{part}" for dimension in DIMENSIONS for part in PARTS)
RESET_MAX_LENGTH = 64

# Header name -> part name. OpenAI puts the part first, Anthropic last.
_PART_OF_HEADER: dict[str, str] = {}
for _part in PARTS:
    for _dimension in ("requests", "tokens"):
        _PART_OF_HEADER[f"x-ratelimit-{_part}-{_dimension}"] = f"{_dimension}_{_part}"
    for _dimension in DIMENSIONS:
        _PART_OF_HEADER[f"anthropic-ratelimit-{_dimension.replace('_', '-')}-{_part}"] = f"{_dimension}_{_part}"


def announcement_fill(announced: Announcement, attributes: Mapping[str, object] | None) -> bool:
    """Add to `announced` the parts `attributes` announce that it does not hold yet; True if any.

    Walking a model's responses newest first, this keeps each part from the newest response that
    announced it: a 429 that only says `...-remaining: 0` keeps the limit the call before it
    announced. Parts already held are not parsed again, which keeps ingest cheap when every
    event of a batch carries the same dozen headers. A count must be a whole number >= 0 (an int,
    an integral float, or digits as text); anything else is left out rather than guessed, so a
    malformed header never hides a good one.
    """
    if not attributes:
        return False
    filled = False
    for name, value in attributes.items():
        part = _PART_OF_HEADER.get(name)
        if part is None:
            # The SDK sends lower-case names; a plain-HTTP sender may not. Most attributes are
            # not headers at all, and one character tells.
            if name[:1] not in "XA":
                continue
            part = _PART_OF_HEADER.get(name.lower())
            if part is None:
                continue
        if part in announced:
            continue
        parsed = _reset_text(value) if part.endswith("_reset") else _count(value)
        if parsed is not None:
            announced[part] = parsed
            filled = True
    return filled


def _count(value: object) -> int | None:
    if type(value) is int:
        return value if value >= 0 else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None  # bools (an int subclass), negative numbers, fractions, other text


def _reset_text(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    # Kept as sent: providers differ in what a bare number means (seconds, or an epoch instant).
    text = value.strip() if isinstance(value, str) else f"{value:g}"
    return text[:RESET_MAX_LENGTH] or None
