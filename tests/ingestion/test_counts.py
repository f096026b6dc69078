"""Usage events carrying a provider's usage object or text instead of counts."""
import pytest

from apps.ingestion.models import RawEvent
from apps.pricing.counting import count_tokens
from tests.conftest import post_events, usage_event

pytestmark = pytest.mark.django_db


def counts_only(**overrides):
    event = usage_event(**overrides)
    del event["input_tokens"], event["output_tokens"]
    return event


def stored(event) -> RawEvent:
    return RawEvent.objects.get(event_id=event["event_id"])


def test_anthropic_usage_raw_is_normalised_at_ingest(api_client, ingest_key):
    event = counts_only(provider="anthropic", model="claude-3-5-sonnet-20241022", usage_raw={
        "input_tokens": 100, "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 3000, "output_tokens": 500,
    })  # fmt: skip
    assert post_events(api_client, ingest_key, [event]).status_code == 202
    row = stored(event)
    assert (row.input_tokens, row.output_tokens, row.cache_read_tokens, row.cache_write_tokens) == (5100, 500, 3000, 2000)
    assert row.token_source == "usage_raw" and row.usage_raw["cache_read_input_tokens"] == 3000


def test_openai_chat_usage_raw_is_normalised(api_client, ingest_key):
    event = counts_only(usage_raw={
        "prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 128, "audio_tokens": 0},
    })  # fmt: skip
    post_events(api_client, ingest_key, [event])
    row = stored(event)
    assert (row.input_tokens, row.output_tokens, row.cache_read_tokens, row.thought_tokens) == (1200, 300, 1024, 128)


def test_gemini_usage_metadata_is_normalised(api_client, ingest_key):
    event = counts_only(provider="gemini", model="gemini-2.5-pro", usage_raw={
        "promptTokenCount": 1000, "candidatesTokenCount": 200, "cachedContentTokenCount": 400,
        "toolUsePromptTokenCount": 50, "thoughtsTokenCount": 300, "totalTokenCount": 1550,
    })  # fmt: skip
    post_events(api_client, ingest_key, [event])
    row = stored(event)
    assert (row.input_tokens, row.output_tokens, row.cache_read_tokens, row.tool_tokens, row.thought_tokens) == (
        1050, 500, 400, 50, 300)


def test_unrecognised_usage_raw_is_a_per_event_error_naming_expected_keys(api_client, ingest_key):
    event = counts_only(usage_raw={"tokens_used": 5})
    response = post_events(api_client, ingest_key, [usage_event(), event])
    assert response.status_code == 207
    (rejection,) = response.json()["rejected"]
    assert "prompt_tokens" in rejection["errors"]["usage_raw"][0]


def test_text_is_counted_with_the_models_tokeniser_and_not_stored(api_client, ingest_key):
    text_in, text_out = "Write a haiku about autumn leaves.", "Crimson leaves drift down\nwhispering to the cold earth"
    event = counts_only(input_text=text_in, output_text=text_out)
    assert post_events(api_client, ingest_key, [event]).status_code == 202
    row = stored(event)
    assert row.input_tokens == count_tokens("gpt-4o", text=text_in).tokens
    assert row.output_tokens == count_tokens("gpt-4o", text=text_out).tokens
    assert row.token_source == "estimated" and row.tokenizer == "tiktoken:o200k_base"
    assert text_in not in str(RawEvent.objects.filter(pk=row.pk).values().get())


def test_messages_are_counted(api_client, ingest_key):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    event = usage_event(messages=messages, output_tokens=7)
    del event["input_tokens"]
    post_events(api_client, ingest_key, [event])
    row = stored(event)
    assert row.input_tokens == count_tokens("gpt-4o", messages=messages).tokens and row.output_tokens == 7


def test_client_counts_win_over_text_on_the_same_side(api_client, ingest_key):
    event = usage_event(input_tokens=999, input_text="short")
    post_events(api_client, ingest_key, [event])
    assert stored(event).input_tokens == 999
