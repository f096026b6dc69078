"""Server-side token counting (issue 4, DESIGN.md section 8): the model's tokeniser, offline, named."""
from __future__ import annotations

import pytest

from apps.pricing.counting import count_tokens
from apps.pricing.offline import get_litellm
from tests.pricing.test_offline import run_without_network

TEXT = "Cost is what a team lead reads first — 日本語, émojis 🚀 and code: `def f(x): return x**2`."


def tiktoken_count(encoding: str, text: str) -> int:
    get_litellm()  # points tiktoken at litellm's bundled encodings before it loads one
    import tiktoken

    return len(tiktoken.get_encoding(encoding).encode(text, disallowed_special=()))


@pytest.mark.parametrize(
    ("model", "tokenizer"),
    [
        ("gpt-4o", "tiktoken:o200k_base"),
        ("gpt-4.1-mini", "tiktoken:o200k_base"),
        ("o3", "tiktoken:o200k_base"),
        ("gpt-5", "tiktoken:o200k_base"),
        ("openai/gpt-4o", "tiktoken:o200k_base"),
        ("gpt-3.5-turbo", "tiktoken:cl100k_base"),
        ("gpt-4", "tiktoken:cl100k_base"),
        ("claude-sonnet-4-5", "huggingface:anthropic"),
        ("anthropic/claude-sonnet-4-5", "huggingface:anthropic"),
        ("gemini-2.5-pro", "tiktoken:cl100k_base"),
        ("meta-llama/Meta-Llama-3-8B-Instruct", "tiktoken:cl100k_base"),
    ],
)
def test_each_model_is_counted_with_the_tokenizer_it_names(model, tokenizer):
    count = count_tokens(model, text=TEXT)
    assert count.tokenizer == tokenizer
    if tokenizer.startswith("tiktoken:"):
        assert count.tokens == tiktoken_count(tokenizer.removeprefix("tiktoken:"), TEXT)


def test_claude_is_counted_with_litellms_bundled_claude_tokenizer_not_tiktoken():
    from litellm.utils import claude_json_str, create_tokenizer

    claude = create_tokenizer(claude_json_str)["tokenizer"]
    count = count_tokens("claude-sonnet-4-5", text=TEXT)
    assert count.tokens == len(claude.encode(TEXT).ids)
    assert count.tokens != tiktoken_count("cl100k_base", TEXT)


def test_messages_add_litellms_per_message_overhead():
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": TEXT}]
    litellm = get_litellm()
    count = count_tokens("gpt-4o", messages=messages)
    assert count == count_tokens("gpt-4o", messages=messages)
    assert count.tokens == litellm.token_counter(model="gpt-4o", messages=messages)
    contents_only = count_tokens("gpt-4o", text=TEXT).tokens + count_tokens("gpt-4o", text="Answer briefly.").tokens
    assert count.tokens > contents_only


@pytest.mark.parametrize("arguments", [{}, {"text": "a", "messages": [{"role": "user", "content": "a"}]}])
def test_exactly_one_of_text_and_messages_is_required(arguments):
    with pytest.raises(ValueError, match="exactly one"):
        count_tokens("gpt-4o", **arguments)


@pytest.mark.slow  # a fresh Python in a subprocess: seconds
def test_counting_works_with_the_network_absent_and_no_tiktoken_cache(tmp_path):
    """Texts, messages and image URLs are counted without a connection or any cache outside litellm's bundle."""
    result = run_without_network(
        """
        from apps.pricing.counting import count_tokens
        text = "The quick brown fox jumps over the lazy dog. " * 20
        counts = {}
        for model in ("gpt-4o", "gpt-3.5-turbo", "claude-sonnet-4-5"):
            count = count_tokens(model, text=text)
            counts[model] = [count.tokens, count.tokenizer]
        with_image = count_tokens("gpt-4o", messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is in this picture?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ]}])
        report(counts=counts, with_image=with_image.tokens)
        """,
        tmp_path,
    )
    assert result["network_attempts"] == []
    assert result["files_in_fresh_caches"] == []  # nothing downloaded or cached outside litellm's bundle
    assert result["counts"]["gpt-4o"][1] == "tiktoken:o200k_base"
    assert result["counts"]["gpt-3.5-turbo"][1] == "tiktoken:cl100k_base"
    assert result["counts"]["claude-sonnet-4-5"][1] == "huggingface:anthropic"
    assert all(tokens > 100 for tokens, _ in result["counts"].values())
    assert result["with_image"] > 10  # an image URL is counted at litellm's default size, never fetched


@pytest.mark.slow  # a fresh Python in a subprocess: seconds
def test_llama_3_names_fall_back_to_tiktoken_fast_instead_of_downloading(tmp_path):
    result = run_without_network(
        """
        import time
        from apps.pricing.offline import get_litellm
        get_litellm()
        from apps.pricing.counting import count_tokens
        started = time.perf_counter()
        count = count_tokens("llama-3-70b-instruct", text="hello there, general kenobi")
        report(tokenizer=count.tokenizer, tokens=count.tokens, seconds=time.perf_counter() - started)
        """,
        tmp_path,
    )
    assert result["network_attempts"] == []
    assert result["tokenizer"] == "tiktoken:cl100k_base"
    assert result["seconds"] < 2  # a Hugging Face download attempt costs ~23 s of retries


@pytest.mark.slow
def test_without_the_offline_flag_a_llama_3_count_tries_to_download_a_tokenizer(tmp_path):
    """Negative control for the test above: the harness sees litellm reach for huggingface.co (~24 s)."""
    result = run_without_network(
        """
        from apps.pricing.offline import get_litellm
        litellm = get_litellm()
        litellm.disable_hf_tokenizer_download = False
        litellm.token_counter(model="llama-3-70b-instruct", text="hello")
        report()
        """,
        tmp_path,
    )
    assert any("huggingface.co" in attempt for attempt in result["network_attempts"])
