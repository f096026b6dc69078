"""`manage.py usage_summary`: the seed's CLI box for one session."""
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import post_events, throttle_event, usage_event

pytestmark = pytest.mark.django_db(transaction=True)


def test_usage_summary_prints_the_seed_box(api_client, ingest_key):
    post_events(api_client, ingest_key, [
        usage_event(step="persona_generation", input_tokens=42000, output_tokens=7500, duration_ms=25000),
        usage_event(step="summary_generation", input_tokens=3230, output_tokens=1250, duration_ms=5000),
        throttle_event(wait_ms=2500),
    ])  # fmt: skip
    out = StringIO()
    call_command("usage_summary", "--team", "acme", "--project", "chatbot", "--session", "session-1", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[:6] == [
        "Token Usage Summary",
        "───────────────────────────────",
        "Input tokens:   45,230",
        "Output tokens:   8,750",
        "Total tokens:   53,980",
        "───────────────────────────────",
    ]
    # gpt-4o: 45,230 x $2.50/M + 8,750 x $10/M
    assert lines[6] == "Estimated cost: $0.2006"
    assert lines[7:] == [
        "───────────────────────────────",
        "Tokens per second:  291.7",
        "Burst (1 s peak):   45,780 tok/s",  # both calls start together: 45,230 in + 550 out
        "Peak tokens/minute: 53,980",
        "Throttle wait:      2,500 ms (1 wait)",
    ]


def test_usage_summary_of_unknown_session_fails_clearly(project):
    with pytest.raises(CommandError, match="not found"):
        call_command("usage_summary", "--team", "acme", "--project", "chatbot", "--session", "nope")
