"""Context windows: how full each call's input window was, fixed at ingest like its cost.

A usage event's `context_share` is its input tokens (DESIGN.md section 1: cache reads and writes
and tool prompts included) divided by the model's input window: the project's
`ContextWindowOverride` for the model if it has one, else `max_input_tokens` of the entry that
prices the model (apps.pricing.catalog: litellm's bundled map or a newer imported price book). A model with no known window gets no share
(NULL), never 0, so pages say "unknown" rather than "0%". A share above 1 is kept as sent: the
provider served a longer prompt than the window we know, which is worth seeing.

The share is stored on the raw row so the fold only aggregates it (apps.metrics.context_windows),
and a later override applies to calls ingested after it, as a price override does.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser

from apps.accounts.models import Project
from apps.core.errors import BadRequest, ErrorCode
from apps.pricing.calls import CallUsage
from apps.pricing.catalog import PriceCatalog, resolve_max_input_tokens
from apps.pricing.models import ContextWindowOverride
from apps.pricing.selectors import active_price_catalog

# Far above any model's window today (10 M tokens), and far below an integer overflow.
MAX_CONTEXT_WINDOW_TOKENS = 1_000_000_000


def context_share(*, input_tokens: int, max_input_tokens: int | None) -> float | None:
    """`input_tokens / max_input_tokens`, or None when the window is unknown."""
    if not max_input_tokens or max_input_tokens <= 0:
        return None
    return input_tokens / max_input_tokens


@dataclass
class ProjectContextWindows:
    """The project's window overrides, loaded once, in front of the price catalog (litellm's map
    and imported price books): no query per event, one map lookup per model."""

    overrides: dict[str, int] = field(default_factory=dict)
    catalog: PriceCatalog | None = None  # None: the bundled map alone
    _found: dict[tuple[str, str], int | None] = field(default_factory=dict)

    def max_input_tokens(self, *, model: str, provider: str) -> int | None:
        """The override for `model`, else the catalog's `max_input_tokens`, else None (unknown)."""
        override = self.overrides.get(model)
        if override is not None:
            return override
        key = (model, provider)
        if key not in self._found:
            self._found[key] = resolve_max_input_tokens(model, provider or None, catalog=self.catalog)
        return self._found[key]


def context_windows_for_project(*, project: Project) -> ProjectContextWindows:
    """Load the project's context window overrides, over the price books in force."""
    return ProjectContextWindows(
        overrides=dict(ContextWindowOverride.objects.filter(project=project).values_list("model", "max_input_tokens")),
        catalog=active_price_catalog(),
    )


def context_window_overrides_for_project(*, project: Project):
    return ContextWindowOverride.objects.filter(project=project).order_by("model")


def calls_context_share(*, project: Project, calls: Sequence[CallUsage]) -> list[float | None]:
    """Each call's share of its model's input window, in the calls' order (None: unknown)."""
    windows = context_windows_for_project(project=project)
    return [
        context_share(
            input_tokens=call.input_tokens,
            max_input_tokens=windows.max_input_tokens(model=call.model, provider=call.provider),
        )
        for call in calls
    ]


def context_window_override_set(
    *, project: Project, model: str, max_input_tokens: int, updated_by: AbstractBaseUser | None = None
) -> ContextWindowOverride:
    """Set the project's input window for `model` (calls ingested from now on are measured against it)."""
    model = model.strip()
    if not model:
        raise BadRequest("Name the model the context window is for.", code=ErrorCode.INVALID_MODEL)
    if not 0 < max_input_tokens <= MAX_CONTEXT_WINDOW_TOKENS:
        raise BadRequest(
            f"A context window is 1 to {MAX_CONTEXT_WINDOW_TOKENS:,} input tokens.", code=ErrorCode.INVALID_CONTEXT_WINDOW
        )
    override, _ = ContextWindowOverride.objects.update_or_create(
        project=project,
        model=model,
        defaults={
            "max_input_tokens": max_input_tokens,
            "updated_by": updated_by if updated_by is not None and updated_by.is_authenticated else None,
        },
    )
    return override


def context_window_override_delete(*, project: Project, model: str) -> bool:
    """Remove the project's window for `model` (litellm's applies again); False if there was none."""
    deleted, _ = ContextWindowOverride.objects.filter(project=project, model=model.strip()).delete()
    return deleted > 0
