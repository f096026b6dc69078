"""The deterministic event ids the OTLP receiver and `tokensite-client import` share."""
from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st
from tokensite_client import agent_ids

from tests.conftest import property_examples

# Surrogates cannot be encoded as UTF-8, by uuid5 nor by anyone else.
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
_part = st.one_of(st.none(), _text, st.integers(), st.floats(allow_nan=False))


@settings(max_examples=property_examples(500))
@given(st.lists(_part, max_size=6))
def test_event_ids_are_the_uuid5_of_the_joined_parts(parts):
    # Stored ids depend on this: the fast spelling must stay bit for bit uuid.uuid5.
    text = "\x1f".join("" if part is None else str(part) for part in parts)
    assert agent_ids.event_id_for(*parts) == str(uuid.uuid5(agent_ids.EVENT_ID_NAMESPACE, text))


def test_an_event_id_is_stable_across_releases():
    assert agent_ids.event_id_for("genai", "trace", "resp-1") == "31bb2ea8-2f9e-59eb-b573-5ed6214a0eca"
