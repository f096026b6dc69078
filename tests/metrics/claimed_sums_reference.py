"""The fold's per-event sums as first written: one Python loop over the claimed events.

apps.metrics.claimed_sums must give exactly these sessions and buckets (tests/metrics/test_claimed_sums.py).
"""
from __future__ import annotations

from apps.ingestion.models import RawEvent
from apps.metrics import algorithms as algo
from apps.metrics.claimed_sums import SUM_COLUMNS, SessionBatch
from apps.metrics.peaks_kernel import CallColumns, CallRow

_ZERO_SUMS = (0,) * len(SUM_COLUMNS)
_USAGE = RawEvent.Type.USAGE.value
_ESTIMATED = RawEvent.TokenSource.ESTIMATED.value
_MINUTE_US = algo.MINUTE_US


def call_row(call: algo.PlacedCall) -> CallRow:
    """A PlacedCall as the fold keeps it."""
    return (call.start_us, call.generation_start_us, call.end_us, call.input_tokens, call.output_tokens)


def minute_shares(call: algo.PlacedCall) -> list[tuple[int, int, int]]:
    """`(bucket_start_us, input_tokens, output_tokens)` of a call per minute bucket."""
    first_bucket_us = call.start_us - call.start_us % algo.MINUTE_US
    if call.end_us - first_bucket_us <= algo.MINUTE_US:
        return [(first_bucket_us, call.input_tokens, call.output_tokens)]
    return [(share.bucket_start_us, share.input_tokens, share.output_tokens) for share in algo.bucket_call_tokens(call)]


def reference_sums(events: list[tuple]) -> tuple[dict[str, SessionBatch], dict[tuple[int, str, str], list[int]]]:
    """claimed_sums as a loop over the events (the fold's code before it went column-wise)."""
    batches: dict[str, SessionBatch] = {}
    calls: dict[str, list[CallRow]] = {}
    buckets: dict[tuple[int, str, str], list[int]] = {}
    place_call = algo.place_call
    session_id_of_batch = batch = None
    for (
        _, session_id, kind, step, provider, model, call_id, start_us, end_us, attributes, duration_ms, ttft,
        input_tokens, output_tokens, cache_read, cache_write, tool, thought, token_source, wait_ms, cost, price_source,
    ) in events:  # fmt: skip
        if session_id != session_id_of_batch:  # claimed events of a session tend to be adjacent
            session_id_of_batch = session_id
            batch = batches.get(session_id)
            if batch is None:
                batch = batches[session_id] = SessionBatch(started_us=start_us, ended_us=end_us)
                calls[session_id] = []
        batch.event_count += 1
        if start_us < batch.started_us:
            batch.started_us = start_us
        if end_us > batch.ended_us:
            batch.ended_us = end_us
        if kind == _USAGE:
            call = place_call(start_us=start_us, duration_ms=duration_ms, time_to_first_token_ms=ttft,
                              input_tokens=input_tokens, output_tokens=output_tokens)  # fmt: skip
            calls[session_id].append(call_row(call))
            group_key = (step, provider, model)
            sums = batch.sums_by_group.get(group_key)
            if sums is None:
                sums = batch.sums_by_group[group_key] = list(_ZERO_SUMS)
            sums[0] += 1
            sums[1] += input_tokens
            sums[2] += output_tokens
            if cache_read:
                sums[3] += cache_read
            if cache_write:
                sums[4] += cache_write
            if tool:
                sums[5] += tool
            if thought:
                sums[6] += thought
            generation_us = call.end_us - call.generation_start_us
            if generation_us:
                sums[7] += output_tokens
                sums[8] += generation_us
            if cost is None:
                sums[12] += input_tokens + output_tokens
                sums[13] += 1
            else:
                sums[11] += cost
            if token_source == _ESTIMATED:
                sums[14] += 1
            first_us = batch.first_us_by_step.get(step)
            if first_us is None or start_us < first_us:
                batch.first_us_by_step[step] = start_us
            if price_source:
                batch.price_source_by_model[(provider, model)] = price_source
            if call_id:
                batch.has_call_id = True
            if attributes != "{}":
                batch.attribute_texts[attributes] = None
            first_bucket_us = start_us - start_us % _MINUTE_US
            start = buckets.get((first_bucket_us, provider, model))
            if start is None:
                start = buckets[(first_bucket_us, provider, model)] = [0, 0, 0, 0, 0, 0, 0]
            if call.end_us - first_bucket_us <= _MINUTE_US:  # most calls: within one minute, no split
                start[0] += input_tokens
                start[1] += output_tokens
            else:
                for bucket_start_us, share_input, share_output in minute_shares(call):
                    delta = buckets.get((bucket_start_us, provider, model))
                    if delta is None:
                        delta = buckets[(bucket_start_us, provider, model)] = [0, 0, 0, 0, 0, 0, 0]
                    delta[0] += share_input
                    delta[1] += share_output
            start[2] += 1
            if cost is None:
                start[6] += input_tokens + output_tokens
            else:
                start[5] += cost
        else:
            wait_us = algo.ms_to_us(wait_ms)
            batch.throttle_count += 1
            batch.throttle_wait_us += wait_us
            key = (algo.bucket_start_us(start_us), provider, model)
            delta = buckets.get(key)
            if delta is None:
                delta = buckets[key] = [0, 0, 0, 0, 0, 0, 0]
            delta[3] += 1
            delta[4] += wait_us
    for session_id, session_calls in calls.items():
        batches[session_id].calls = CallColumns.from_rows(session_calls)
    return batches, buckets

