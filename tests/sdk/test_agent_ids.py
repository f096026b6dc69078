"""The deterministic event ids the OTLP receiver and `tokensite-client import` share."""
from __future__ import annotations

from tokensite_client import agent_ids


def test_an_event_id_is_stable_across_releases():
    # Stored ids depend on this: a resend or an import after a release must find the same id.
    assert agent_ids.event_id_for("genai", "trace", "resp-1") == "31bb2ea8-2f9e-59eb-b573-5ed6214a0eca"
    assert agent_ids.event_id_for("genai", None, 7) == agent_ids.event_id_for("genai", "", "7")
