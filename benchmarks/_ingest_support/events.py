"""Realistic usage events, and request bodies of them that each carry fresh event ids.

A load generator must not spend the CPU it shares with the server on building JSON, so each
process encodes a pool of event templates once and a body is only a join of those fragments
behind new event ids. Ids are a random per-process prefix plus a counter: unique across
processes and runs (so every event is a real insert), and well-formed version-4 UUIDs.
"""
from __future__ import annotations

import json
import random
import os
from datetime import datetime, timedelta, timezone

# (provider, model, share of traffic, uses prompt caching). All but one are in litellm's price map,
# so the ingest path prices nearly every event; claude-3-5-sonnet-20241022 is not in the bundled
# map any more and takes the unpriced path, as retired models do in production.
TRAFFIC = (
    ("openai", "gpt-4o", 35, True),
    ("anthropic", "claude-sonnet-4-5", 25, True),
    ("openai", "gpt-4o-mini", 20, True),
    ("anthropic", "claude-haiku-4-5", 10, False),
    ("anthropic", "claude-3-5-sonnet-20241022", 5, True),
    ("openai", "o3-mini", 5, True),
)
STEPS = ("plan", "retrieve", "draft", "review", "summarise")
TEMPLATE_POOL_SIZE = 2000
EVENTS_PER_SESSION = 40


def usage_event_templates(count: int, *, now: datetime, seed: int, session_prefix: str) -> list[dict]:
    """`count` usage events without event_id: timestamps in the hour before `now`, a model mix, some cache tokens."""
    rng = random.Random(seed)
    weights = [share for _, _, share, _ in TRAFFIC]
    events = []
    for index, (provider, model, _, caches) in enumerate(rng.choices(TRAFFIC, weights=weights, k=count)):
        input_tokens = int(rng.lognormvariate(7.5, 1.1)) + 1
        output_tokens = int(rng.lognormvariate(5.5, 0.9)) + 1
        cache_read_tokens = rng.randint(0, input_tokens // 2) if caches and rng.random() < 0.5 else 0
        cache_write_tokens = (
            rng.randint(0, (input_tokens - cache_read_tokens) // 4) if caches and rng.random() < 0.15 else 0
        )
        duration_ms = round(rng.uniform(300, 20_000), 1)
        event = {
            "type": "usage",
            "session_id": f"{session_prefix}-{index // EVENTS_PER_SESSION}",
            "step": rng.choice(STEPS),
            "provider": provider,
            "model": model,
            "timestamp": (now - timedelta(seconds=rng.uniform(60, 3500))).isoformat(timespec="milliseconds"),
            "duration_ms": duration_ms,
            "time_to_first_token_ms": round(duration_ms * rng.uniform(0.05, 0.3), 1),
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_tokens": cache_read_tokens,
            "cache_write_tokens": cache_write_tokens,
            "attributes": {"app": "bench", "environment": rng.choice(("prod", "staging")), "user": f"u{rng.randint(1, 50)}"},
            "call_id": f"call-{index}",
        }
        events.append(event)
    return events


class EventIdSource:
    """Fresh random version-4 UUID strings, a batch at a time, at a fraction of `uuid.uuid4()`'s cost.

    Random like a client's ids (not a counter), so the unique index sees the same scattered
    inserts it sees in production.
    """

    def next_ids(self, count: int) -> list[str]:
        hex_digits = os.urandom(16 * count).hex()
        ids = []
        for start in range(0, 32 * count, 32):
            h = hex_digits[start : start + 32]
            ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}")
        return ids


# The RFC 4122 variant: the top two bits of the 17th hex digit are 10.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


class BodyFactory:
    """JSON bodies `{"events": [...]}` of `batch_size` events, each with a new event_id."""

    def __init__(self, *, batch_size: int, now: datetime, seed: int) -> None:
        self.batch_size = batch_size
        templates = usage_event_templates(TEMPLATE_POOL_SIZE, now=now, seed=seed, session_prefix=f"bench-{seed}")
        # '{"event_id":"' + id + '",' + the rest of the object: the template minus its leading '{'.
        self._fragments = [json.dumps(event, separators=(",", ":"))[1:].encode() for event in templates]
        self._position = 0
        self._ids = EventIdSource()

    def body(self) -> bytes:
        fragments = self._fragments
        start = self._position
        self._position = (start + self.batch_size) % len(fragments)
        picked = [fragments[(start + offset) % len(fragments)] for offset in range(self.batch_size)]
        parts = [b'{"event_id":"%s",%s' % (event_id.encode(), fragment) for event_id, fragment in zip(self._ids.next_ids(self.batch_size), picked)]
        return b'{"events":[' + b",".join(parts) + b"]}"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
