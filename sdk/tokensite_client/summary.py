"""This process's running totals (F-063 `TokenUsage`) and the "Token Usage Summary" box.

Totals are kept per (step, provider, model) as events are recorded, under a lock held
only for a handful of additions, so `summary()` never walks the events and `record_*`
stays cheap. Cost is worked out only when the box is printed, through litellm's local
price map, and a model missing from that map is shown as unpriced, never as $0.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TextIO

from .litellm_loader import import_litellm

# litellm prices a call's prompt at a higher tier above this many tokens; totals are kept
# apart on each side of it so a sum of small calls is never priced as one huge call.
_TIER_THRESHOLD_TOKENS = 200_000
RULE = "─" * 31


@dataclass(frozen=True)
class TokenUsage:
    """Token totals of one step and model in this process (F-063's fields first)."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    model: str
    timestamp: datetime  # first call of the group, UTC
    step: str
    provider: str
    cache_read_tokens: int
    cache_write_tokens: int
    tool_tokens: int
    thought_tokens: int
    calls: int
    duration_ms: float
    throttle_count: int
    throttle_wait_ms: float


@dataclass(frozen=True)
class CostEstimate:
    cost_usd: float | None  # None when no token could be priced
    unpriced_tokens: int


class _Totals:
    __slots__ = ("first_epoch", "input", "output", "cache_read", "cache_write", "tool", "thought", "calls",
                 "duration_ms", "throttle_count", "throttle_wait_ms")

    def __init__(self, first_epoch: float) -> None:
        self.first_epoch = first_epoch
        self.input = self.output = self.cache_read = self.cache_write = self.tool = self.thought = 0
        self.calls = self.throttle_count = 0
        self.duration_ms = self.throttle_wait_ms = 0.0


_Key = tuple[str, str, str, bool]  # step, provider, model, prompt above the tier threshold


class UsageTotals:
    """Thread-safe running totals; also counts the events recorded, for `stats()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[_Key, _Totals] = {}
        self.usage_events = 0
        self.throttle_events = 0

    def add_usage(self, *, step: str, provider: str, model: str, epoch: float, duration_ms: float,
                  input_tokens: int, output_tokens: int, cache_read_tokens: int, cache_write_tokens: int,
                  tool_tokens: int, thought_tokens: int) -> None:
        key = (step, provider, model, input_tokens > _TIER_THRESHOLD_TOKENS)
        with self._lock:
            totals = self._groups.get(key)
            if totals is None:
                totals = self._groups[key] = _Totals(epoch)
            elif epoch < totals.first_epoch:
                totals.first_epoch = epoch
            totals.input += input_tokens
            totals.output += output_tokens
            totals.cache_read += cache_read_tokens
            totals.cache_write += cache_write_tokens
            totals.tool += tool_tokens
            totals.thought += thought_tokens
            totals.calls += 1
            totals.duration_ms += duration_ms
            self.usage_events += 1

    def add_throttle(self, *, step: str, provider: str, model: str, epoch: float, wait_ms: float) -> None:
        key = (step, provider, model, False)
        with self._lock:
            totals = self._groups.get(key)
            if totals is None:
                totals = self._groups[key] = _Totals(epoch)
            totals.throttle_count += 1
            totals.throttle_wait_ms += wait_ms
            self.throttle_events += 1

    def reset(self) -> None:
        """Start empty (a forked child's totals are its own)."""
        self._lock = threading.Lock()
        self._groups = {}
        self.usage_events = self.throttle_events = 0

    def snapshot(self) -> list[TokenUsage]:
        """One TokenUsage per step and model, in order of each group's first call."""
        merged: dict[tuple[str, str, str], _Totals] = {}
        for (step, provider, model, _above), totals in self._tier_groups():
            merged_totals = merged.get((step, provider, model))
            if merged_totals is None:
                merged_totals = merged[(step, provider, model)] = _Totals(totals.first_epoch)
            _add_into(merged_totals, totals)
        return sorted((_usage(key, totals) for key, totals in merged.items()), key=lambda u: u.timestamp)

    def _tier_groups(self) -> list[tuple[_Key, _Totals]]:
        with self._lock:
            return [(key, _copy(totals)) for key, totals in self._groups.items()]

    def estimate_cost(self) -> CostEstimate:
        """Cost of everything recorded, per litellm's local price map; groups whose model
        the map lacks are counted as unpriced tokens instead."""
        try:
            litellm = import_litellm()
        except ImportError:
            groups = self._tier_groups()
            return CostEstimate(None, sum(t.input + t.output for _, t in groups))
        cost = 0.0
        priced = False
        unpriced = 0
        for (_step, provider, model, above), totals in self._tier_groups():
            if totals.calls == 0:
                continue
            price_key = _price_key(litellm.model_cost, provider, model)
            if price_key is None:
                unpriced += totals.input + totals.output
                continue
            # Prices are linear within a tier, and every call of a group sits in the same
            # tier: price a below-threshold group in chunks that stay below it.
            chunks = 1 if above else max(1, -(-totals.input // _TIER_THRESHOLD_TOKENS))
            for index in range(chunks):
                usage = litellm.Usage(
                    prompt_tokens=_share(totals.input, chunks, index),
                    completion_tokens=_share(totals.output, chunks, index),
                    total_tokens=_share(totals.input, chunks, index) + _share(totals.output, chunks, index),
                    prompt_tokens_details={"cached_tokens": _share(totals.cache_read, chunks, index),
                                           "cache_write_tokens": _share(totals.cache_write, chunks, index)},
                    completion_tokens_details={"reasoning_tokens": _share(totals.thought, chunks, index)},
                )
                prompt_cost, completion_cost = litellm.cost_per_token(model=price_key, usage_object=usage)
                cost += prompt_cost + completion_cost
            priced = True
        return CostEstimate(cost if priced else None, unpriced)


def format_usd(amount: float) -> str:
    """Money for people: "$1,234.50"; under a dollar up to 4 decimals ("$0.42", "$0.0042")."""
    if abs(amount) >= 1:
        return f"${amount:,.2f}"
    text = f"{amount:.4f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"${whole}.{decimals.ljust(2, '0')}"


def render_summary_box(
    *, input_tokens: int, output_tokens: int, cost_usd: float | None, unpriced_tokens: int,
    extra_rows: tuple[tuple[str, str], ...] = (),
) -> str:
    """The seed's "Token Usage Summary" box (F-063, CLI Display), plus optional metric rows.

    The server's `usage_summary` command prints the same box from a session's aggregates.
    """
    rows = [("Input tokens:", f"{input_tokens:,}"), ("Output tokens:", f"{output_tokens:,}"),
            ("Total tokens:", f"{input_tokens + output_tokens:,}")]
    width = max(len(label) for label, _ in rows) + 2 + max(len(value) for _, value in rows)
    lines = ["Token Usage Summary", RULE]
    lines += [label + value.rjust(width - len(label)) for label, value in rows]
    lines.append(RULE)
    if cost_usd is None:
        lines.append("Estimated cost: unknown" + (f" ({unpriced_tokens:,} tokens unpriced)"
                                                  if unpriced_tokens else ""))
    else:
        suffix = f" (+ {unpriced_tokens:,} tokens unpriced)" if unpriced_tokens else ""
        lines.append(f"Estimated cost: {format_usd(cost_usd)}{suffix}")
    if extra_rows:
        label_width = max(len(label) for label, _ in extra_rows) + 1
        lines.append(RULE)
        lines += [label.ljust(label_width) + value for label, value in extra_rows]
    return "\n".join(lines)


def render_box(usages: list[TokenUsage], cost: CostEstimate) -> str:
    """The box for this process's totals."""
    return render_summary_box(
        input_tokens=sum(u.input_tokens for u in usages),
        output_tokens=sum(u.output_tokens for u in usages),
        cost_usd=cost.cost_usd,
        unpriced_tokens=cost.unpriced_tokens,
    )


def print_box(usages: list[TokenUsage], cost: CostEstimate, file: TextIO) -> None:
    print(render_box(usages, cost), file=file)


def _price_key(model_cost: dict[str, object], provider: str, model: str) -> str | None:
    for candidate in (model, f"{provider}/{model}"):
        if candidate in model_cost:
            return candidate
    return None


def _share(total: int, parts: int, index: int) -> int:
    """The index-th of `parts` near-equal integer shares of `total` (they sum to it exactly)."""
    return total // parts + (1 if index < total % parts else 0)


def _copy(totals: _Totals) -> _Totals:
    copy = _Totals(totals.first_epoch)
    _add_into(copy, totals)
    return copy


def _add_into(target: _Totals, source: _Totals) -> None:
    target.first_epoch = min(target.first_epoch, source.first_epoch)
    target.input += source.input
    target.output += source.output
    target.cache_read += source.cache_read
    target.cache_write += source.cache_write
    target.tool += source.tool
    target.thought += source.thought
    target.calls += source.calls
    target.duration_ms += source.duration_ms
    target.throttle_count += source.throttle_count
    target.throttle_wait_ms += source.throttle_wait_ms


def _usage(key: tuple[str, str, str], totals: _Totals) -> TokenUsage:
    step, provider, model = key
    return TokenUsage(
        input_tokens=totals.input, output_tokens=totals.output, total_tokens=totals.input + totals.output,
        model=model, timestamp=datetime.fromtimestamp(totals.first_epoch, timezone.utc), step=step,
        provider=provider, cache_read_tokens=totals.cache_read, cache_write_tokens=totals.cache_write,
        tool_tokens=totals.tool, thought_tokens=totals.thought, calls=totals.calls,
        duration_ms=totals.duration_ms, throttle_count=totals.throttle_count,
        throttle_wait_ms=totals.throttle_wait_ms,
    )
