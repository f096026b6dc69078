"""Provider usage objects converted to TokenSite's one token convention (DESIGN.md section 1).

This module is the single implementation shared by the SDK and the server's ingest
validation, so it stays pure, fast and free of dependencies: plain dicts in, a frozen
dataclass out. The convention is OpenAI's: cache, tool and thought tokens are subsets of
input or output, never added on top (the double count the peers get wrong).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "InvalidUsageError",
    "UnrecognizedUsageError",
    "UsageCounts",
    "canonical_service_tier",
    "normalize_usage",
    "subset_violations",
    "USAGE_FIELDS",
]

USAGE_FIELDS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "tool_tokens",
    "thought_tokens",
    "cache_write_1h_tokens",
)

STANDARD_TIER = "standard"
# What providers call a service tier -> DESIGN.md section 6's name. OpenAI answers `default` (or
# echoes `auto`) for the standard tier, Anthropic `standard`; `fast` is litellm's alias of priority.
_TIER_ALIASES = {"default": STANDARD_TIER, "auto": STANDARD_TIER, "standard": STANDARD_TIER,
                 "on_demand": STANDARD_TIER, "batches": "batch", "fast": "priority"}
MAX_SERVICE_TIER_CHARS = 32


def canonical_service_tier(service_tier: object) -> str | None:
    """DESIGN.md's name for a service tier as a provider spells it (`default` -> `standard`);
    None for no tier, or for a value that is not a short name."""
    if not isinstance(service_tier, str):
        return None
    tier = service_tier.strip().lower()
    if not tier or len(tier) > MAX_SERVICE_TIER_CHARS or not all(c.isalnum() or c in "_.-" for c in tier):
        return None
    return _TIER_ALIASES.get(tier, tier)

# The key sets each recognised payload is identified by; also what an unrecognised
# object's error message lists, so a client sees what would have been accepted.
OPENAI_CHAT_KEYS = ("prompt_tokens", "completion_tokens")
OPENAI_RESPONSES_KEYS = ("input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details")
ANTHROPIC_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
GEMINI_KEYS = ("promptTokenCount", "candidatesTokenCount", "cachedContentTokenCount",
               "toolUsePromptTokenCount", "thoughtsTokenCount")

EXPECTED_SHAPES: dict[str, tuple[str, ...]] = {
    "openai_chat": OPENAI_CHAT_KEYS,
    "openai_responses": OPENAI_RESPONSES_KEYS,
    "anthropic_messages": ANTHROPIC_KEYS,
    "gemini_usage_metadata": GEMINI_KEYS,
}

# Providers whose native usage object is Anthropic's Messages shape. Bedrock and Vertex
# serve Claude with the same object; the keys still decide when they say otherwise.
_ANTHROPIC_PROVIDERS = frozenset({"anthropic", "bedrock", "vertex_ai", "vertex_ai_beta", "anthropic_text"})
_ANTHROPIC_ONLY_KEYS = frozenset({"cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation",
                                  "server_tool_use"})
_RESPONSES_ONLY_KEYS = frozenset({"input_tokens_details", "output_tokens_details", "total_tokens"})

# Gemini's REST API spells usageMetadata in camelCase; google-genai's model_dump() in snake_case.
_GEMINI_SNAKE_TO_CAMEL = {
    "prompt_token_count": "promptTokenCount",
    "candidates_token_count": "candidatesTokenCount",
    "cached_content_token_count": "cachedContentTokenCount",
    "tool_use_prompt_token_count": "toolUsePromptTokenCount",
    "thoughts_token_count": "thoughtsTokenCount",
    "total_token_count": "totalTokenCount",
}
_GEMINI_KEYS = frozenset(GEMINI_KEYS) | {"totalTokenCount"} | frozenset(_GEMINI_SNAKE_TO_CAMEL)


class InvalidUsageError(ValueError):
    """A usage payload that cannot be turned into counts; `errors` maps field to messages
    in the shape the ingest API's per-event rejections use."""

    def __init__(self, message: str, errors: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.errors = errors


class UnrecognizedUsageError(InvalidUsageError):
    """A usage object of no known provider shape; `expected_keys` lists each shape's keys."""

    def __init__(self, provider: str, keys: list[str]) -> None:
        shapes = "; ".join(f"{name}: {', '.join(shape)}" for name, shape in EXPECTED_SHAPES.items())
        message = (
            f"unrecognised usage object for provider {provider!r} with keys {sorted(keys)}; "
            f"expected one of {shapes}"
        )
        super().__init__(message, {"usage_raw": [message]})
        self.provider = provider
        self.keys = sorted(keys)
        self.expected_keys = EXPECTED_SHAPES


_set = object.__setattr__


@dataclass(frozen=True, slots=True)
class UsageCounts:
    """Token counts of one call in TokenSite's convention (subsets included in their parents)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    tool_tokens: int = 0
    thought_tokens: int = 0
    # The part of cache_write_tokens written for one hour (Anthropic's 1h cache).
    cache_write_1h_tokens: int = 0
    # The service tier the provider says served the call (`standard`, `flex`, `priority`, `batch`).
    service_tier: str | None = None

    def __init__(self, input_tokens: int = 0, output_tokens: int = 0, cache_read_tokens: int = 0,
                 cache_write_tokens: int = 0, tool_tokens: int = 0, thought_tokens: int = 0,
                 cache_write_1h_tokens: int = 0, service_tier: str | None = None) -> None:
        # Written out because the __init__ dataclass generates for a frozen class looks up
        # object.__setattr__ for every field: 3.3 -> 1.3 us per instance, one per recorded call
        # and per ingested usage object. Same parameters (a test holds them to the fields).
        _set(self, "input_tokens", input_tokens)
        _set(self, "output_tokens", output_tokens)
        _set(self, "cache_read_tokens", cache_read_tokens)
        _set(self, "cache_write_tokens", cache_write_tokens)
        _set(self, "tool_tokens", tool_tokens)
        _set(self, "thought_tokens", thought_tokens)
        _set(self, "cache_write_1h_tokens", cache_write_1h_tokens)
        _set(self, "service_tier", service_tier)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in USAGE_FIELDS}


def subset_violations(
    *,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
    tool_tokens: int = 0,
    thought_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
) -> dict[str, list[str]]:
    """The subset rules of DESIGN.md section 1 that these counts break, keyed by the
    offending subset field (empty when they all fit). Keyword-only so the server can pass
    an event's fields with `**`."""
    errors: dict[str, list[str]] = {}
    if cache_read_tokens + cache_write_tokens > input_tokens:
        message = (
            f"cache_read_tokens + cache_write_tokens ({cache_read_tokens} + {cache_write_tokens}) "
            f"exceed input_tokens ({input_tokens})"
        )
        errors["cache_read_tokens"] = [message]
        errors["cache_write_tokens"] = [message]
    if cache_write_1h_tokens > cache_write_tokens:
        errors["cache_write_1h_tokens"] = [
            f"cache_write_1h_tokens ({cache_write_1h_tokens}) exceed cache_write_tokens ({cache_write_tokens})"
        ]
    if tool_tokens > input_tokens:
        errors["tool_tokens"] = [f"tool_tokens ({tool_tokens}) exceed input_tokens ({input_tokens})"]
    if thought_tokens > output_tokens:
        errors["thought_tokens"] = [f"thought_tokens ({thought_tokens}) exceed output_tokens ({output_tokens})"]
    return errors


def normalize_usage(provider: str, raw: Mapping[str, Any]) -> UsageCounts:
    """Convert a provider's own usage object to counts, choosing the shape by its keys and,
    where two shapes share keys (Anthropic and OpenAI Responses both say `input_tokens`), by
    the provider. Missing or null fields count as 0."""
    if type(raw) is not dict and not isinstance(raw, Mapping):  # the exact type first: cheaper
        raise UnrecognizedUsageError(provider, [])
    keys = raw.keys()
    if "prompt_tokens" in keys or "completion_tokens" in keys:
        counts = _openai_chat(raw)
    elif "input_tokens" in keys or "output_tokens" in keys:
        if _is_anthropic(provider, keys):
            counts = _anthropic(raw)
        else:
            counts = _openai_responses(raw)
    elif not _GEMINI_KEYS.isdisjoint(keys):
        counts = _gemini(raw)
    else:
        raise UnrecognizedUsageError(provider, list(keys))
    return counts


def _tier(raw: Mapping[str, Any]) -> str | None:
    # Anthropic puts service_tier in usage; OpenAI on the response (callers may copy it in).
    return canonical_service_tier(raw.get("service_tier"))


def _is_anthropic(provider: str, keys: Any) -> bool:
    if not _ANTHROPIC_ONLY_KEYS.isdisjoint(keys):
        return True
    if not _RESPONSES_ONLY_KEYS.isdisjoint(keys):
        return False
    return provider.lower() in _ANTHROPIC_PROVIDERS


def _count(container: Mapping[str, Any] | None, key: str, path: str) -> int:
    """One count: None and missing are 0; anything but a non-negative whole number is an error."""
    if container is None:
        return 0
    value = container.get(key)
    if type(value) is int and value >= 0:  # the usual case, before the general checks
        return value
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
        message = f"{path} must be a non-negative integer, got {value!r}"
        raise InvalidUsageError(message, {"usage_raw": [message]})
    return int(value)


def _details(raw: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = raw.get(key)
    if value is None:
        return None
    if type(value) is not dict and not isinstance(value, Mapping):
        message = f"{key} must be an object, got {type(value).__name__}"
        raise InvalidUsageError(message, {"usage_raw": [message]})
    return value


def _openai_chat(raw: Mapping[str, Any]) -> UsageCounts:
    prompt_details = _details(raw, "prompt_tokens_details")
    completion_details = _details(raw, "completion_tokens_details")
    # litellm's Usage for Anthropic keeps the lifetime split under prompt_tokens_details.
    lifetimes = _details(prompt_details, "cache_creation_token_details") if prompt_details is not None else None
    return UsageCounts(
        input_tokens=_count(raw, "prompt_tokens", "prompt_tokens"),
        output_tokens=_count(raw, "completion_tokens", "completion_tokens"),
        cache_read_tokens=_count(prompt_details, "cached_tokens", "prompt_tokens_details.cached_tokens"),
        cache_write_tokens=_count(prompt_details, "cache_write_tokens", "prompt_tokens_details.cache_write_tokens"),
        thought_tokens=_count(completion_details, "reasoning_tokens", "completion_tokens_details.reasoning_tokens"),
        cache_write_1h_tokens=_count(lifetimes, "ephemeral_1h_input_tokens",
                                     "prompt_tokens_details.cache_creation_token_details.ephemeral_1h_input_tokens"),
        service_tier=_tier(raw),
    )


def _openai_responses(raw: Mapping[str, Any]) -> UsageCounts:
    input_details = _details(raw, "input_tokens_details")
    output_details = _details(raw, "output_tokens_details")
    return UsageCounts(
        input_tokens=_count(raw, "input_tokens", "input_tokens"),
        output_tokens=_count(raw, "output_tokens", "output_tokens"),
        cache_read_tokens=_count(input_details, "cached_tokens", "input_tokens_details.cached_tokens"),
        thought_tokens=_count(output_details, "reasoning_tokens", "output_tokens_details.reasoning_tokens"),
        service_tier=_tier(raw),
    )


def _anthropic(raw: Mapping[str, Any]) -> UsageCounts:
    # Anthropic's input_tokens excludes cached prompt tokens: add them back so that
    # input covers every token read and the cache counts stay inside it.
    # cache_creation splits the writes by lifetime; the one-hour part bills at 2x input, not 1.25x.
    cache_read = _count(raw, "cache_read_input_tokens", "cache_read_input_tokens")
    lifetimes = _details(raw, "cache_creation")
    written_5m = _count(lifetimes, "ephemeral_5m_input_tokens", "cache_creation.ephemeral_5m_input_tokens")
    written_1h = _count(lifetimes, "ephemeral_1h_input_tokens", "cache_creation.ephemeral_1h_input_tokens")
    cache_write = (
        _count(raw, "cache_creation_input_tokens", "cache_creation_input_tokens")
        if raw.get("cache_creation_input_tokens") is not None
        else written_5m + written_1h
    )
    return UsageCounts(
        input_tokens=_count(raw, "input_tokens", "input_tokens") + cache_read + cache_write,
        output_tokens=_count(raw, "output_tokens", "output_tokens"),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=written_1h,
        service_tier=_tier(raw),
    )


def _gemini(raw: Mapping[str, Any]) -> UsageCounts:
    camel = {_GEMINI_SNAKE_TO_CAMEL.get(key, key): value for key, value in raw.items()}
    tool = _count(camel, "toolUsePromptTokenCount", "toolUsePromptTokenCount")
    thought = _count(camel, "thoughtsTokenCount", "thoughtsTokenCount")
    return UsageCounts(
        input_tokens=_count(camel, "promptTokenCount", "promptTokenCount") + tool,
        output_tokens=_count(camel, "candidatesTokenCount", "candidatesTokenCount") + thought,
        cache_read_tokens=_count(camel, "cachedContentTokenCount", "cachedContentTokenCount"),
        tool_tokens=tool,
        thought_tokens=thought,
    )
