"""Counting tokens locally with the model's own tokeniser, through litellm, offline.

Used before a call (context planning, F-063) and after a stream that ended without a
usage object, where the streamed text is all there is to count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .litellm_loader import import_litellm


def count_tokens(model: str, text: str | None = None, messages: Sequence[dict[str, Any]] | None = None) -> int:
    """Tokens of `text` or of a chat `messages` list for `model` (exactly one of the two)."""
    if (text is None) == (messages is None):
        raise ValueError("pass exactly one of text or messages")
    litellm = import_litellm()
    if messages is not None:
        return int(litellm.token_counter(model=model, messages=list(messages)))
    return int(litellm.token_counter(model=model, text=text))


def tokenizer_name(model: str) -> str:
    """The tokeniser `count_tokens` uses for `model`, recorded with estimated counts.

    With Hugging Face downloads disabled, litellm counts every model with a tiktoken
    encoding: the model's own for OpenAI models, cl100k_base for the rest."""
    import_litellm()
    from litellm.litellm_core_utils.token_counter import openai_tokenizer_encoding_name

    return f"tiktoken/{openai_tokenizer_encoding_name(model)}"


def estimate_tokens(model: str, text: str) -> tuple[int, str]:
    """Tokens of `text` and the tokeniser that counted them; without litellm, OpenAI's
    rule of thumb of four characters a token."""
    try:
        return count_tokens(model, text=text), tokenizer_name(model)
    except ImportError:
        return len(text) // 4, "chars/4"
