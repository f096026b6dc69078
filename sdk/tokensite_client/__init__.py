"""tokensite_client: track every LLM call of an application in TokenSite.

    import tokensite_client as ts
    tracker = ts.Tracker()                       # TOKENSITE_URL / TOKENSITE_API_KEY
    client = ts.instrument_openai(openai.OpenAI(), tracker)
    claude = ts.instrument_anthropic(anthropic.Anthropic(), tracker)

`LiteLLMCallback` is imported on first use, so importing this package never imports
litellm (seconds and ~150 MB) unless the application asks for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .anthropic_shim import instrument_anthropic
from .budgets import BudgetExceeded, BudgetStatus
from .calls import CallScope
from .openai_shim import instrument_openai
from .retrying import RetryScope, retrying
from .summary import TokenUsage
from .tracker import DeliveryStats, Tracker
from .usage import InvalidUsageError, UnrecognizedUsageError, UsageCounts, normalize_usage, subset_violations

if TYPE_CHECKING:
    from .litellm_shim import LiteLLMCallback

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "BudgetStatus",
    "CallScope",
    "DeliveryStats",
    "InvalidUsageError",
    "LiteLLMCallback",
    "RetryScope",
    "TokenUsage",
    "Tracker",
    "UnrecognizedUsageError",
    "UsageCounts",
    "instrument_anthropic",
    "instrument_openai",
    "normalize_usage",
    "retrying",
    "subset_violations",
]


def __getattr__(name: str) -> Any:
    if name == "LiteLLMCallback":
        from .litellm_shim import LiteLLMCallback

        return LiteLLMCallback
    raise AttributeError(f"module 'tokensite_client' has no attribute {name!r}")
