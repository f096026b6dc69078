"""The deterministic event ids the OTLP receiver and `tokensite-client import` share."""
from __future__ import annotations

import random
import uuid

from tokensite_client import agent_ids


def test_an_event_id_is_stable_across_releases():
    # Stored ids depend on this: a resend or an import after a release must find the same id.
    assert agent_ids.event_id_for("genai", "trace", "resp-1") == "31bb2ea8-2f9e-59eb-b573-5ed6214a0eca"
    assert agent_ids.event_id_for("genai", None, 7) == agent_ids.event_id_for("genai", "", "7")


def test_an_event_id_is_the_uuid5_of_its_parts_for_any_parts():
    # event_id_for computes uuid5 by hand; every id it derives must be the one uuid.uuid5 gives,
    # or resent batches and imports stop matching events stored by earlier releases.
    rng = random.Random(13)
    alphabet = "abcXYZ019 -_.:/\x1f\x00é€漢😀\U0010fffd"

    def part():
        kind = rng.randrange(5)
        if kind == 0:
            return None
        if kind == 1:
            return rng.randrange(-(2**70), 2**70)
        if kind == 2:
            return "".join(rng.choice(alphabet) for _ in range(rng.randrange(60)))
        if kind == 3:
            return "".join(chr(rng.choice((rng.randrange(32, 0xD800), rng.randrange(0xE000, 0x110000))))
                           for _ in range(rng.randrange(1, 30)))
        return rng.choice(("genai", "claude-code", "codex", "", "usage", "throttle"))

    for _ in range(20_000):
        parts = [part() for _ in range(rng.randrange(7))]
        text = "\x1f".join("" if item is None else str(item) for item in parts)
        assert agent_ids.event_id_for(*parts) == str(uuid.uuid5(agent_ids.EVENT_ID_NAMESPACE, text)), parts
