"""Reading a server's requested delay from `Retry-After` (and OpenAI's `retry-after-ms`)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping


def parse_retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked to wait, or None when it did not say (or said nonsense).
    Accepts `retry-after-ms`, `Retry-After` in seconds, or `Retry-After` as an HTTP date."""
    if not headers:
        return None
    lowered = {key.lower(): value for key, value in headers.items()}
    milliseconds = lowered.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(float(milliseconds) / 1000, 0.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(float(email.utils.mktime_tz(parsed)) - time.time(), 0.0)


def retry_after_ms(headers: Mapping[str, str] | None) -> float | None:
    seconds = parse_retry_after_s(headers)
    return None if seconds is None else round(seconds * 1000, 3)
