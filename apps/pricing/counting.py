"""Server-side token counts with the model's own tokeniser, offline, naming the tokeniser used.

Counting goes through `litellm.token_counter`, so a count matches what litellm (and the SDK that
uses it) would report. The tokeniser is litellm's choice for the model, with one offline caveat:
`apps.pricing.offline` sets `disable_hf_tokenizer_download`, because the Hugging Face tokenisers
litellm picks for llama and command-r names must be downloaded. With it set, litellm falls back to
tiktoken for *every* model, including Claude, whose tokeniser litellm bundles. So for names litellm
maps to its bundled Claude tokeniser, we hand that tokeniser in ourselves; every other name is
counted with the tiktoken encoding litellm picks for it (o200k_base for the GPT-4o / GPT-5 / o-series
family, else cl100k_base), read from litellm's encodings bundle.

The returned `tokenizer` label is stored with server-estimated counts and returned by the tokenize
API: `tiktoken:<encoding>` or `huggingface:anthropic`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from apps.pricing.offline import get_litellm

ANTHROPIC_TOKENIZER = "huggingface:anthropic"


@dataclass(frozen=True, slots=True)
class TokenCount:
    tokens: int
    tokenizer: str


def count_tokens(model: str, *, text: str | None = None, messages: list[dict] | None = None) -> TokenCount:
    """Tokens in `text`, or in a chat `messages` list with litellm's per-message overhead.

    Exactly one of `text` and `messages` must be given (ValueError otherwise). A leading litellm
    route (`openai/gpt-4o`) is dropped first, since litellm's tokeniser mapping knows bare names.
    """
    if (text is None) == (messages is None):
        raise ValueError("give exactly one of text and messages")
    litellm = get_litellm()
    name = _bare_model_name(model)
    # Images in messages are counted at litellm's default size: fetching a caller's image URL to
    # measure it would be a network call (and a request forgery vector) from the server.
    options = {"text": text, "messages": messages, "use_default_image_token_count": True}
    if _uses_bundled_claude_tokenizer(name):
        tokens = litellm.token_counter(model=name, custom_tokenizer=_claude_tokenizer(), **options)
        return TokenCount(tokens=tokens, tokenizer=ANTHROPIC_TOKENIZER)
    from litellm.litellm_core_utils.token_counter import openai_tokenizer_encoding_name

    tokens = litellm.token_counter(model=name, **options)
    return TokenCount(tokens=tokens, tokenizer=f"tiktoken:{openai_tokenizer_encoding_name(name)}")


def _bare_model_name(model: str) -> str:
    route, _, rest = model.strip().partition("/")
    return rest if rest and route in get_litellm().provider_list else model.strip()


def _uses_bundled_claude_tokenizer(model: str) -> bool:
    from litellm.utils import huggingface_tokenizer_kind

    return huggingface_tokenizer_kind(model) == "anthropic"


@lru_cache(maxsize=1)
def _claude_tokenizer() -> dict:
    """litellm's bundled Claude tokeniser, built once per process (it ships with litellm: no download)."""
    from litellm.utils import claude_json_str, create_tokenizer

    return create_tokenizer(claude_json_str)
