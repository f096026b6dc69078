"""Provider usage normalisation (DESIGN.md section 1), with payloads shaped as each
provider documents them, cached, cache-write, tool and reasoning tokens present."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokensite_client.usage import (
    InvalidUsageError,
    UnrecognizedUsageError,
    UsageCounts,
    normalize_usage,
    subset_violations,
)

OPENAI_CHAT = {  # Chat Completions `usage`, with the newer cache_write_tokens
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "cache_write_tokens": 64, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 128, "audio_tokens": 0,
                                  "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
}
OPENAI_RESPONSES = {
    "input_tokens": 328,
    "input_tokens_details": {"cached_tokens": 256},
    "output_tokens": 52,
    "output_tokens_details": {"reasoning_tokens": 16},
    "total_tokens": 380,
}
ANTHROPIC = {  # Messages API `usage`: input_tokens excludes the cached parts
    "input_tokens": 21,
    "cache_creation_input_tokens": 188086,
    "cache_read_input_tokens": 1200,
    "cache_creation": {"ephemeral_5m_input_tokens": 188086, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 393,
    "server_tool_use": {"web_search_requests": 0},
    "service_tier": "standard",
}
GEMINI = {  # generateContent `usageMetadata`
    "promptTokenCount": 1200,
    "candidatesTokenCount": 300,
    "totalTokenCount": 1850,
    "cachedContentTokenCount": 800,
    "toolUsePromptTokenCount": 150,
    "thoughtsTokenCount": 200,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1200}],
    "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 800}],
}


def test_openai_chat_usage_keeps_cache_and_reasoning_inside_the_totals() -> None:
    assert normalize_usage("openai", OPENAI_CHAT) == UsageCounts(
        input_tokens=2006, output_tokens=300, cache_read_tokens=1920, cache_write_tokens=64,
        tool_tokens=0, thought_tokens=128)


def test_openai_chat_usage_without_cache_write_counts_it_as_zero() -> None:
    payload = {**OPENAI_CHAT, "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0}}
    assert normalize_usage("openai", payload).cache_write_tokens == 0


def test_openai_responses_usage() -> None:
    assert normalize_usage("openai", OPENAI_RESPONSES) == UsageCounts(328, 52, 256, 0, 0, 16)


def test_anthropic_usage_adds_cached_prompt_tokens_to_input_once() -> None:
    counts = normalize_usage("anthropic", ANTHROPIC)
    assert counts == UsageCounts(input_tokens=21 + 188086 + 1200, output_tokens=393,
                                 cache_read_tokens=1200, cache_write_tokens=188086, service_tier="standard")
    assert counts.total_tokens == 21 + 188086 + 1200 + 393


def test_anthropic_one_hour_cache_writes_are_the_part_of_cache_write_the_usage_says() -> None:
    usage = {**ANTHROPIC, "cache_creation_input_tokens": 100_000, "service_tier": "priority",
             "cache_creation": {"ephemeral_5m_input_tokens": 40_000, "ephemeral_1h_input_tokens": 60_000}}
    counts = normalize_usage("anthropic", usage)
    assert (counts.cache_write_tokens, counts.cache_write_1h_tokens, counts.service_tier) == (
        100_000, 60_000, "priority")
    assert counts.input_tokens == 21 + 100_000 + 1200


def test_anthropic_lifetime_breakdown_alone_gives_the_cache_write_total() -> None:
    usage = {"input_tokens": 5, "output_tokens": 1,
             "cache_creation": {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 70}}
    counts = normalize_usage("anthropic", usage)
    assert (counts.input_tokens, counts.cache_write_tokens, counts.cache_write_1h_tokens) == (105, 100, 70)


def test_anthropic_one_hour_writes_above_the_cache_write_total_are_rejected() -> None:
    usage = {**ANTHROPIC, "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 188087}}
    with pytest.raises(InvalidUsageError, match="ephemeral_1h_input_tokens"):
        normalize_usage("anthropic", usage)
    assert subset_violations(input_tokens=10, output_tokens=0, cache_write_tokens=3,
                             cache_write_1h_tokens=4) == {
        "cache_write_1h_tokens": ["cache_write_1h_tokens (4) exceed cache_write_tokens (3)"]}


def test_gemini_usage_metadata_total_matches_the_providers_total() -> None:
    counts = normalize_usage("gemini", GEMINI)
    assert counts == UsageCounts(input_tokens=1350, output_tokens=500, cache_read_tokens=800,
                                 cache_write_tokens=0, tool_tokens=150, thought_tokens=200)
    assert counts.total_tokens == GEMINI["totalTokenCount"]


def test_gemini_snake_case_from_the_python_sdk_is_the_same_payload() -> None:
    snake = {"prompt_token_count": 1200, "candidates_token_count": 300, "cached_content_token_count": 800,
             "tool_use_prompt_token_count": 150, "thoughts_token_count": 200, "total_token_count": 1850}
    assert normalize_usage("vertex_ai", snake) == normalize_usage("gemini", GEMINI)


def test_provider_decides_between_anthropic_and_responses_when_keys_are_shared() -> None:
    minimal = {"input_tokens": 10, "output_tokens": 4}
    assert normalize_usage("anthropic", minimal) == normalize_usage("openai", minimal) == UsageCounts(10, 4)
    assert normalize_usage("openai", {"input_tokens": 10, "output_tokens": 4,
                                      "cache_read_input_tokens": 5}).input_tokens == 15


def test_missing_and_null_fields_count_as_zero() -> None:
    payload = {"prompt_tokens": 7, "completion_tokens": None, "prompt_tokens_details": None,
               "completion_tokens_details": {"reasoning_tokens": None}}
    assert normalize_usage("openai", payload) == UsageCounts(input_tokens=7)


def test_unrecognised_object_names_the_keys_it_expected() -> None:
    with pytest.raises(UnrecognizedUsageError) as caught:
        normalize_usage("mystery", {"tokens": 5})
    error = caught.value
    assert error.keys == ["tokens"]
    assert "prompt_tokens" in str(error) and "promptTokenCount" in str(error)
    assert "cache_read_input_tokens" in str(error)
    assert set(error.expected_keys) == {"openai_chat", "openai_responses", "anthropic_messages",
                                        "gemini_usage_metadata"}
    assert list(error.errors) == ["usage_raw"]


@pytest.mark.parametrize("value", [-1, 1.5, "12", True])
def test_non_integer_counts_are_invalid(value: object) -> None:
    with pytest.raises(InvalidUsageError, match="prompt_tokens"):
        normalize_usage("openai", {"prompt_tokens": value, "completion_tokens": 1})


def test_subset_violations_name_the_fields_that_break() -> None:
    assert subset_violations(input_tokens=10, output_tokens=5, cache_read_tokens=6, cache_write_tokens=4,
                             tool_tokens=10, thought_tokens=5) == {}
    broken = subset_violations(input_tokens=10, output_tokens=5, cache_read_tokens=8, cache_write_tokens=4,
                               tool_tokens=11, thought_tokens=6)
    assert set(broken) == {"cache_read_tokens", "cache_write_tokens", "tool_tokens", "thought_tokens"}
    assert "exceed input_tokens (10)" in broken["tool_tokens"][0]


counts = st.integers(min_value=0, max_value=10**8)


@given(counts, counts, counts, counts)
def test_anthropic_payloads_always_fit_the_subset_rules(plain: int, read: int, write: int, output: int) -> None:
    result = normalize_usage("anthropic", {"input_tokens": plain, "cache_read_input_tokens": read,
                                           "cache_creation_input_tokens": write, "output_tokens": output})
    assert subset_violations(**result.as_dict()) == {}
    assert result.input_tokens == plain + read + write


@given(counts, counts, counts, counts, counts)
def test_gemini_payloads_always_fit_the_subset_rules(prompt: int, candidates: int, cached: int, tool: int,
                                                     thoughts: int) -> None:
    result = normalize_usage("gemini", {"promptTokenCount": prompt + cached, "candidatesTokenCount": candidates,
                                        "cachedContentTokenCount": cached, "toolUsePromptTokenCount": tool,
                                        "thoughtsTokenCount": thoughts})
    assert subset_violations(**result.as_dict()) == {}
    assert result.total_tokens == prompt + cached + candidates + tool + thoughts


def test_usage_module_imports_nothing_heavy() -> None:
    """The server imports it to validate usage_raw: no litellm, openai or Django behind it."""
    code = ("import sys, tokensite_client.usage; "
            "print(sorted(m for m in ('litellm', 'openai', 'django') if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
