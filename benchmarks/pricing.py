"""Pricing and counting throughput: TokenSite's cost path against `litellm.completion_cost`, and tokens/s counted.

    .venv/bin/python benchmarks/pricing.py            # full run (~1 min)
    .venv/bin/python benchmarks/pricing.py --quick    # a few seconds, for CI

The product prices an event by resolving the model's `ModelPrice` once (cached per model and
provider, in the catalog of the price books in force) and doing integer/Decimal arithmetic; here
that catalog holds an imported book (litellm's own file imported over the bundled map, so both
sides price at the same prices) as after `manage.py prices_import`; the baseline calls `litellm.completion_cost` per
event, which looks the model up and walks its pricing rules every time. Both price the same events,
and the run checks their totals agree, so the faster path is not a different answer. The baseline's
`ModelResponse` objects are built before its clock starts, which flatters litellm: an ingest path
using it would have to build them per event too.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from apps.pricing.offline import ensure_offline, get_litellm  # noqa: E402

# Service tiers as they occur in the mix (DESIGN.md section 6), with the share of calls of each;
# a tier a model has no prices for bills at the standard price, as in the product.
SERVICE_TIERS = [(None, 70), ("default", 10), ("batch", 10), ("flex", 5), ("priority", 5)]
# Share of a call's cache writes that go to the one-hour cache, when it writes and is Anthropic's.
ONE_HOUR_WRITE_SHARE = 0.4

# (model as sent by clients, provider, share of traffic, uses prompt cache, has reasoning tokens)
TRAFFIC = [
    ("gpt-4o", "openai", 20, True, False),
    ("gpt-4o-mini", "openai", 15, True, False),
    ("o4-mini", "openai", 5, True, True),
    ("gpt-5", "openai", 5, True, True),
    ("claude-sonnet-4-5", "anthropic", 15, True, False),
    ("claude-haiku-4-5", "anthropic", 8, True, False),
    ("anthropic.claude-sonnet-4-20250514-v1:0", "bedrock", 4, True, False),
    ("gemini-2.5-pro", "gemini", 8, True, True),
    ("gemini-2.5-flash", "gemini", 8, True, True),
    ("gemini-2.5-pro", "vertex_ai", 3, True, True),
    ("mistral-large-latest", "mistral", 3, False, False),
    ("deepseek-chat", "deepseek", 3, True, False),
    ("azure/gpt-4o", "azure", 3, True, False),
]


def make_events(count: int, seed: int = 4) -> list[dict]:
    """A realistic mix: mostly short calls, some long-context (a few past 200k), caches and reasoning,
    one-hour cache writes on Anthropic models, and every service tier."""
    rng = random.Random(seed)
    weights = [share for _, _, share, _, _ in TRAFFIC]
    tiers, tier_weights = zip(*SERVICE_TIERS)
    week_start = datetime(2026, 11, 16, tzinfo=timezone.utc)
    events = []
    for model, provider, _, caches, reasons in rng.choices(TRAFFIC, weights=weights, k=count):
        input_tokens = int(rng.lognormvariate(8, 1.3)) + 1 if rng.random() > 0.02 else rng.randint(200_001, 900_000)
        output_tokens = int(rng.lognormvariate(6, 1)) + 1
        cache_read = rng.randint(0, input_tokens // 2) if caches and rng.random() < 0.6 else 0
        cache_write = rng.randint(0, (input_tokens - cache_read) // 4) if caches and rng.random() < 0.2 else 0
        tier = rng.choices(tiers, weights=tier_weights)[0]
        # litellm's batch calculator has no one-hour price (TokenSite applies Anthropic's batch
        # discount to it): batches keep to five-minute writes so both sides price the same usage.
        writes_1h = "claude" in model and cache_write and tier != "batch" and rng.random() < ONE_HOUR_WRITE_SHARE
        events.append(
            {
                "model": model,
                "provider": provider,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_read_tokens": cache_read,
                "cache_write_tokens": cache_write,
                "thought_tokens": rng.randint(0, output_tokens) if reasons else 0,
                "cache_write_1h_tokens": rng.randint(0, cache_write) if writes_1h else 0,
                "service_tier": tier,
                "timestamp": week_start + timedelta(seconds=rng.randint(0, 7 * 86_400)),
            }
        )
    return events


def imported_book_catalog():
    """The catalog after an operator imported litellm's own file as a price book."""
    import json

    from apps.pricing.catalog import catalog_with_books
    from apps.pricing.offline import bundled_tokenizers_dir

    litellm_file = bundled_tokenizers_dir().parents[1] / "model_prices_and_context_window_backup.json"
    return catalog_with_books([("import-1-benchmark", json.loads(litellm_file.read_text()))])


def price_events_our_way(events: list[dict], catalog) -> tuple[float, int, int]:
    """(seconds, total nano-USD, priced events): what ingestion does per event."""
    from apps.pricing.catalog import resolve_model_price
    from apps.pricing.cost import event_cost_nanousd

    total_nanousd = priced = 0
    started = time.perf_counter()
    for event in events:
        price = resolve_model_price(event["model"], event["provider"], catalog=catalog)
        if price is None:
            continue
        total_nanousd += event_cost_nanousd(
            price.for_service_tier(event["service_tier"]),
            input_tokens=event["input_tokens"],
            output_tokens=event["output_tokens"],
            cache_read_tokens=event["cache_read_tokens"],
            cache_write_tokens=event["cache_write_tokens"],
            thought_tokens=event["thought_tokens"],
            cache_write_1h_tokens=event["cache_write_1h_tokens"],
            billed_at=event["timestamp"],
        )
        priced += 1
    return time.perf_counter() - started, total_nanousd, priced


def litellm_responses(events: list[dict]) -> list[tuple[str, str | None, object]]:
    """One (map key, tier litellm is asked for, ModelResponse) per event, usage shaped as litellm's
    own provider transformations shape it. A tier the model has no prices for is asked as standard:
    TokenSite bills it at the standard price, where litellm's batch calculator would halve it."""
    from apps.pricing.catalog import resolve_model_price
    from litellm.types.utils import (
        CacheCreationTokenDetails,
        CompletionTokensDetailsWrapper,
        PromptTokensDetailsWrapper,
    )

    litellm = get_litellm()
    responses = []
    for event in events:
        price = resolve_model_price(event["model"], event["provider"])
        key = price.source.removeprefix("litellm:")
        tier = event["service_tier"]
        priced_tier = tier if tier and price.for_service_tier(tier).source.endswith(f"[{tier}]") else None
        written_1h = event["cache_write_1h_tokens"]
        usage = litellm.Usage(
            prompt_tokens=event["input_tokens"],
            completion_tokens=event["output_tokens"],
            total_tokens=event["input_tokens"] + event["output_tokens"],
            prompt_tokens_details=PromptTokensDetailsWrapper(
                cached_tokens=event["cache_read_tokens"], cache_creation_tokens=event["cache_write_tokens"],
                cache_creation_token_details=CacheCreationTokenDetails(
                    ephemeral_5m_input_tokens=event["cache_write_tokens"] - written_1h,
                    ephemeral_1h_input_tokens=written_1h,
                ) if written_1h else None,
            ),
            completion_tokens_details=CompletionTokensDetailsWrapper(reasoning_tokens=event["thought_tokens"]),
            cache_read_input_tokens=event["cache_read_tokens"],
            cache_creation_input_tokens=event["cache_write_tokens"],
        )
        responses.append((key, priced_tier, litellm.ModelResponse(model=key, usage=usage)))
    return responses


def price_events_with_litellm(responses: list[tuple[str, str | None, object]]) -> tuple[float, float]:
    """(seconds, total USD as litellm's float sum); batches through litellm's batch calculator."""
    litellm = get_litellm()
    total_usd = 0.0
    started = time.perf_counter()
    for key, tier, response in responses:
        if tier == "batch":
            total_usd += litellm.completion_cost(completion_response=response, model=key, call_type="retrieve_batch")
        else:
            total_usd += litellm.completion_cost(completion_response=response, model=key, service_tier=tier)
    return time.perf_counter() - started, total_usd


def count_throughput(seconds_budget: float) -> list[tuple[str, str, float]]:
    """Tokens/s counted per tokeniser over this repository's own source and docs (prose and code)."""
    from apps.pricing.counting import count_tokens

    corpus = "\n".join(path.read_text() for path in sorted((REPO_ROOT / "apps").rglob("*.py")))
    chunks = [corpus[start : start + 4_000] for start in range(0, len(corpus), 4_000)]
    results = []
    for model in ("gpt-4o", "gpt-3.5-turbo", "claude-sonnet-4-5"):
        count_tokens(model, text="warm up")
        tokens, tokenizer, started = 0, "", time.perf_counter()
        for chunk in chunks * 50:
            counted = count_tokens(model, text=chunk)
            tokens, tokenizer = tokens + counted.tokens, counted.tokenizer
            if time.perf_counter() - started > seconds_budget:
                break
        results.append((model, tokenizer, tokens / (time.perf_counter() - started)))
    return results


def main() -> None:
    from apps.pricing.catalog import resolve_model_price

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run for CI (a few seconds)")
    args = parser.parse_args()
    event_count, baseline_count, count_seconds = (20_000, 1_000, 0.3) if args.quick else (200_000, 20_000, 3.0)

    ensure_offline()
    started = time.perf_counter()
    get_litellm()
    print(f"import litellm (offline):            {time.perf_counter() - started:8.2f} s")

    events = make_events(event_count)
    catalog = imported_book_catalog()
    ours_seconds, total_nanousd, priced = price_events_our_way(events, catalog)
    ours_rate = priced / ours_seconds
    print(f"TokenSite path (resolve + cost):      {ours_rate:12,.0f} events/s  ({priced:,} events)")
    bundled_seconds, bundled_nanousd, _ = price_events_our_way(events, None)
    print(f"  same, bundled map alone (no book):  {priced / bundled_seconds:12,.0f} events/s"
          f"  (same total: {bundled_nanousd == total_nanousd})")

    baseline = events[:baseline_count]
    litellm_seconds, litellm_total_usd = price_events_with_litellm(litellm_responses(baseline))
    litellm_rate = len(baseline) / litellm_seconds
    print(f"litellm.completion_cost per event:    {litellm_rate:12,.0f} events/s  ({len(baseline):,} events)")
    print(f"speed-up:                             {ours_rate / litellm_rate:12.1f} x  (target >= 20 x)")

    _, baseline_nanousd, _ = price_events_our_way(baseline, catalog)
    difference_usd = abs(baseline_nanousd / 1e9 - litellm_total_usd)
    print(
        f"same events, same total:              ${baseline_nanousd / 1e9:,.6f} vs ${litellm_total_usd:,.6f}"
        f" (|diff| {difference_usd:.2e} USD over {len(baseline):,} events)"
    )
    print(f"all {event_count:,} events:                   ${total_nanousd / 1e9:,.2f}")
    tiered = sum(1 for event in events if event["service_tier"] not in (None, "default"))
    one_hour = sum(1 for event in events if event["cache_write_1h_tokens"])
    print(f"in the mix:                           {tiered:,} flex/priority/batch calls,"
          f" {one_hour:,} with one-hour writes")
    books = {resolve_model_price(model, provider, catalog=catalog).price_book for model, provider, *_ in TRAFFIC}
    print(f"price books:                          {', '.join(sorted(books))}")

    for model, tokenizer, rate in count_throughput(count_seconds):
        print(f"count_tokens {model:<18} {tokenizer:<22} {rate:12,.0f} tokens/s")


if __name__ == "__main__":
    main()
