"""What a fold's claimed events add up to, per session and per minute bucket, computed by columns.

A fold claims up to 100,000 events per transaction. Summing them one Python statement at a
time was the largest part of a worker's time per event, so here they arrive as columns
(apps.metrics.claimed_events) and one compiled pass (numba, GIL released) places every call,
sums every (session, step, provider, model) group and every minute bucket. Python then walks
only the groups (a few per session), each distinct (session, attributes) pair, and the calls
that cross a minute boundary; each session's calls stay columns (`CallColumns` slices).

The numbers are those of a loop over the events (tests/metrics/claimed_sums_reference.py is
that loop, and tests compare the two on random and edge-case events): integer sums, and call
placement with algorithms.generation_interval_us's float operations (IEEE, no fastmath;
`np.rint` rounds half to even, as Python's `round` does).

Bounds: ingestion caps a duration at 24 hours and a token count at 10**9, so every sum here
fits an int64 many times over; a claim whose token, cost, duration or wait totals could overflow
one is still refused with a ValueError rather than summed wrong.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from apps.ingestion.models import RawEvent
from apps.metrics import algorithms as algo
from apps.metrics.buckets import BUCKET_COLUMNS
from apps.metrics.claimed_events import ClaimedEvents, TextColumn, first_of_keys
from apps.metrics.peaks_kernel import CallColumns

# TokenSums columns, in the order of the sum vectors (the kernel adds into them by position).
SUM_COLUMNS = (
    "calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "tool_tokens",
    "thought_tokens", "timed_output_tokens", "generation_us", "throttle_count", "throttle_wait_us", "cost_nanousd",
    "unpriced_tokens", "unpriced_calls", "estimated_calls",
)  # fmt: skip
_USAGE = RawEvent.Type.USAGE.value
_NO_CALLS = CallColumns.from_rows([])  # shared by the batches without calls; nothing writes into it
_INT64_SAFE = 2**62
_OK = -1


@dataclass(slots=True)
class SessionBatch:
    """What the claimed events of one session add up to."""

    sums_by_group: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)  # (step, provider, model)
    first_us_by_step: dict[str, int] = field(default_factory=dict)
    price_source_by_model: dict[tuple[str, str], str] = field(default_factory=dict)
    calls: CallColumns = field(default_factory=lambda: _NO_CALLS)  # in event order
    attribute_texts: dict[str, None] = field(default_factory=dict)  # distinct, in event order
    event_count: int = 0
    throttle_count: int = 0
    throttle_wait_us: int = 0
    started_us: int = 0
    ended_us: int = 0
    has_call_id: bool = False


@njit(cache=True, nogil=True)
def _sums_kernel(
    group_codes, bucket_keys, usage, starts_us, ends_at_us, durations_ms, ttfts_ms, inputs, outputs, cache_reads,
    cache_writes, tools, thoughts, estimated, priced, costs, waits_ms, price_sourced,
    group_sums, group_events, group_first_usage_us, group_started_us, group_ended_us, group_throttles,
    group_throttle_wait_us, group_last_priced, generation_starts_us, call_ends_us, crosses, bucket_starts_us,
    bucket_sums,
):  # fmt: skip
    """One pass over the events (in id order). Group arrays are indexed by group code, bucket
    sums by bucket key; returns the index of the first event whose duration or wait is not a
    non-negative float (the caller raises algorithms' error for it), or -1."""
    minute_us = 60_000_000
    for event in range(group_codes.shape[0]):
        group = group_codes[event]
        start_us = starts_us[event]
        group_events[group] += 1
        if start_us < group_started_us[group]:
            group_started_us[group] = start_us
        if ends_at_us[event] > group_ended_us[group]:
            group_ended_us[group] = ends_at_us[event]
        bucket_us = start_us - start_us % minute_us  # Python's modulo: floor, also before 1970
        bucket_starts_us[event] = bucket_us
        bucket = bucket_keys[event]
        if usage[event]:
            duration_ms = durations_ms[event]
            if not duration_ms >= 0 or duration_ms * 1000.0 >= 2.0**53:
                return event
            # algorithms.generation_interval_us
            duration_us = np.int64(np.rint(duration_ms * 1000.0))
            end_us = start_us + duration_us
            ttft_ms = ttfts_ms[event]  # NaN for none: no comparison holds, as for None
            if 0 < ttft_ms and ttft_ms < duration_ms:
                generation_us = np.int64(np.rint((duration_ms - ttft_ms) * 1000.0))
            else:
                generation_us = duration_us
            generation_starts_us[event] = end_us - generation_us
            call_ends_us[event] = end_us
            input_tokens = inputs[event]
            output_tokens = outputs[event]
            group_sums[group, 0] += 1
            group_sums[group, 1] += input_tokens
            group_sums[group, 2] += output_tokens
            group_sums[group, 3] += cache_reads[event]
            group_sums[group, 4] += cache_writes[event]
            group_sums[group, 5] += tools[event]
            group_sums[group, 6] += thoughts[event]
            if generation_us:
                group_sums[group, 7] += output_tokens
                group_sums[group, 8] += generation_us
            if priced[event]:
                group_sums[group, 11] += costs[event]
                bucket_sums[bucket, 5] += costs[event]
            else:
                group_sums[group, 12] += input_tokens + output_tokens
                group_sums[group, 13] += 1
                bucket_sums[bucket, 6] += input_tokens + output_tokens
            if estimated[event]:
                group_sums[group, 14] += 1
            if start_us < group_first_usage_us[group]:
                group_first_usage_us[group] = start_us
            if price_sourced[event]:
                group_last_priced[group] = event
            bucket_sums[bucket, 2] += 1
            if end_us - bucket_us <= minute_us:  # most calls: within one minute, no split
                bucket_sums[bucket, 0] += input_tokens
                bucket_sums[bucket, 1] += output_tokens
            else:
                crosses[event] = True
        else:
            wait_ms = waits_ms[event]
            if not wait_ms >= 0 or wait_ms * 1000.0 >= 2.0**53:
                return event
            wait_us = np.int64(np.rint(wait_ms * 1000.0))  # algorithms.ms_to_us
            group_throttles[group] += 1
            group_throttle_wait_us[group] += wait_us
            bucket_sums[bucket, 3] += 1
            bucket_sums[bucket, 4] += wait_us
    return _OK


@njit(cache=True, nogil=True)
def _share_rows_needed(crossing, starts_us, ends_us):
    """Upper bound of the bucket shares `_shares_kernel` writes: one per minute a call spans."""
    minute_us = 60_000_000
    rows = 0
    for event in crossing:
        first_bucket_us = starts_us[event] - starts_us[event] % minute_us
        rows += (ends_us[event] - first_bucket_us) // minute_us + 2
    return rows


@njit(cache=True, nogil=True)
def _shares_kernel(crossing, starts_us, generation_starts_us, ends_us, inputs, outputs,
                   share_events, share_buckets_us, share_inputs, share_outputs):  # fmt: skip
    """algorithms.bucket_call_tokens of each crossing call, as rows (event, bucket start, input,
    output): the start bucket first, then each later bucket receiving output. Returns the row
    count. The caller keeps calls whose `2 * output * generation` could overflow an int64."""
    minute_us = 60_000_000
    rows = 0
    for event in crossing:
        start_us = starts_us[event]
        generation_start_us = generation_starts_us[event]
        end_us = ends_us[event]
        output_tokens = outputs[event]
        first_bucket_us = start_us - start_us % minute_us
        first = rows
        share_events[first] = event
        share_buckets_us[first] = first_bucket_us
        share_inputs[first] = inputs[event]
        share_outputs[first] = output_tokens if generation_start_us == end_us else 0
        rows += 1
        generation_us = end_us - generation_start_us
        if generation_us:
            bucket_from_us = generation_start_us - generation_start_us % minute_us
            while bucket_from_us < end_us:
                share_from_us = max(bucket_from_us, generation_start_us)
                share_to_us = min(bucket_from_us + minute_us, end_us)
                # placed_before: round half up in integers, as bucket_call_tokens does.
                tokens = (2 * output_tokens * (share_to_us - generation_start_us) + generation_us) // (
                    2 * generation_us
                ) - (2 * output_tokens * (share_from_us - generation_start_us) + generation_us) // (2 * generation_us)
                if tokens:
                    if bucket_from_us == first_bucket_us:
                        share_outputs[first] += tokens
                    else:
                        share_events[rows] = event
                        share_buckets_us[rows] = bucket_from_us
                        share_inputs[rows] = 0
                        share_outputs[rows] = tokens
                        rows += 1
                bucket_from_us += minute_us
    return rows


def claimed_sums(
    claimed: ClaimedEvents,
) -> tuple[dict[str, SessionBatch], dict[tuple[int, str, str], list[int]]]:
    """Per-session sums and calls of the claimed events, and what they add to each minute
    bucket: `{(bucket_start_us, provider, model): [sums in BUCKET_COLUMNS order]}`."""
    size = len(claimed)
    if not size:
        return {}, {}
    usage, inputs, outputs, starts_us = claimed.usage, claimed.input_tokens, claimed.output_tokens, claimed.starts_us
    if int(inputs.min()) < 0 or int(outputs.min()) < 0:
        raise ValueError("token counts must be >= 0")  # as algorithms.PlacedCall
    _check_int64_totals(inputs, outputs, claimed.cache_read_tokens, claimed.cache_write_tokens, claimed.tool_tokens,
                        claimed.thought_tokens, claimed.costs_nanousd)  # fmt: skip
    sessions, steps, providers, models = claimed.sessions, claimed.steps, claimed.providers, claimed.models
    # A group is (session, step, provider, model), a minute bucket (provider, model, minute); the
    # code of each is the index of its first event (sparse: the kernel's arrays have a row per event).
    group_codes = first_of_keys(np.stack([sessions.codes, steps.codes, providers.codes, models.codes], axis=1))
    minutes = starts_us // algo.MINUTE_US  # floor, as algorithms.bucket_start_us
    bucket_keys = first_of_keys(np.stack([providers.codes, models.codes, minutes], axis=1))

    group_sums = np.zeros((size, len(SUM_COLUMNS)), np.int64)
    group_events = np.zeros(size, np.int64)
    group_first_usage_us = np.full(size, np.iinfo(np.int64).max, np.int64)
    group_started_us = np.full(size, np.iinfo(np.int64).max, np.int64)
    group_ended_us = np.full(size, np.iinfo(np.int64).min, np.int64)
    group_throttles = np.zeros(size, np.int64)
    group_throttle_wait_us = np.zeros(size, np.int64)
    group_last_priced = np.full(size, -1, np.int64)
    generation_starts_us = np.zeros(size, np.int64)
    call_ends_us = np.zeros(size, np.int64)
    crosses = np.zeros(size, np.bool_)
    bucket_starts_us = np.zeros(size, np.int64)
    bucket_sums = np.zeros((size, len(BUCKET_COLUMNS)), np.int64)
    bad_event = _sums_kernel(
        group_codes, bucket_keys, usage, starts_us, claimed.ends_at_us, claimed.durations_ms, claimed.ttfts_ms,
        inputs, outputs, claimed.cache_read_tokens, claimed.cache_write_tokens, claimed.tool_tokens,
        claimed.thought_tokens, claimed.estimated, claimed.priced, claimed.costs_nanousd, claimed.waits_ms,
        claimed.price_sources.nonempty,
        group_sums, group_events, group_first_usage_us, group_started_us, group_ended_us, group_throttles,
        group_throttle_wait_us, group_last_priced, generation_starts_us, call_ends_us, crosses, bucket_starts_us,
        bucket_sums,
    )  # fmt: skip
    if bad_event != _OK:
        _raise_for(claimed.row(bad_event))
    # Each duration and wait is below 2**53 us now; their sums must fit too (summed in the kernel,
    # checked after it so that a bad value raises its own error first).
    # Summed in order, one column at a time, as Python floats: the same roundings (and the same NaN
    # from an unused throttle duration) as the per-event code these checks came from.
    for milliseconds in (claimed.durations_ms, claimed.waits_ms):
        if sum((milliseconds * 1000.0).tolist()) >= _INT64_SAFE:
            raise ValueError("claimed events' totals exceed what a fold sums in one transaction")

    batches: dict[str, SessionBatch] = {}
    # The last priced event of each (session, provider, model), by id, names its price source.
    last_priced: dict[tuple[str, str, str], int] = {}
    groups = np.flatnonzero(group_codes == np.arange(size))
    group_rows = zip(
        sessions.codes[groups].tolist(), steps.codes[groups].tolist(), providers.codes[groups].tolist(),
        models.codes[groups].tolist(), group_events[groups].tolist(), group_started_us[groups].tolist(),
        group_ended_us[groups].tolist(), group_throttles[groups].tolist(), group_throttle_wait_us[groups].tolist(),
        group_sums[groups].tolist(), group_first_usage_us[groups].tolist(), group_last_priced[groups].tolist(),
    )  # fmt: skip
    session_text, step_text, provider_text, model_text = sessions.text, steps.text, providers.text, models.text
    for (session_code, step_code, provider_code, model_code, events_in_group, started_us, ended_us, throttles, wait_us,
         sums, first_us, priced_event) in group_rows:  # fmt: skip
        session_id, step = session_text(session_code), step_text(step_code)
        provider, model = provider_text(provider_code), model_text(model_code)
        batch = batches.get(session_id)
        if batch is None:
            batch = batches[session_id] = SessionBatch(started_us=started_us, ended_us=ended_us)
        batch.event_count += events_in_group
        if started_us < batch.started_us:
            batch.started_us = started_us
        if ended_us > batch.ended_us:
            batch.ended_us = ended_us
        batch.throttle_count += throttles
        batch.throttle_wait_us += wait_us
        if sums[0]:  # a group of throttle waits only adds no call sums
            batch.sums_by_group[(step, provider, model)] = sums
            if first_us < batch.first_us_by_step.get(step, first_us + 1):
                batch.first_us_by_step[step] = first_us
        if priced_event > last_priced.get((session_id, provider, model), -1):
            last_priced[(session_id, provider, model)] = priced_event
    for (session_id, provider, model), event in last_priced.items():
        batches[session_id].price_source_by_model[(provider, model)] = claimed.price_sources[event]
    for session_code in np.unique(sessions.codes[usage & claimed.call_ids.nonempty]).tolist():
        batches[session_text(session_code)].has_call_id = True
    usage_events = np.flatnonzero(usage)
    # Distinct (session, attributes) of usage events, in event order.
    pairs = first_of_keys(np.stack([sessions.codes[usage_events], claimed.attributes.codes[usage_events]], axis=1))
    for event in usage_events[pairs == np.arange(usage_events.shape[0])].tolist():
        text = claimed.attributes[event]
        if text != "{}":
            batches[sessions[event]].attribute_texts[text] = None
    _calls_attach(batches, sessions, usage_events, starts_us, generation_starts_us, call_ends_us, inputs, outputs)

    buckets = {}
    for event in np.flatnonzero(bucket_keys == np.arange(size)).tolist():
        buckets[(int(bucket_starts_us[event]), providers[event], models[event])] = bucket_sums[event].tolist()
    for event, bucket_start_us, share_input, share_output in _crossing_shares(
        np.flatnonzero(crosses), starts_us, generation_starts_us, call_ends_us, inputs, outputs
    ):
        key = (bucket_start_us, providers[event], models[event])
        sums = buckets.get(key)
        if sums is None:
            sums = buckets[key] = [0] * len(BUCKET_COLUMNS)
        sums[0] += share_input
        sums[1] += share_output
    return batches, buckets


def _calls_attach(
    batches: dict[str, SessionBatch], sessions: TextColumn, usage_events: np.ndarray, starts_us: np.ndarray,
    generation_starts_us: np.ndarray, ends_us: np.ndarray, inputs: np.ndarray, outputs: np.ndarray,
) -> None:
    """Give each session its placed calls, in event order, as slices of columns ordered by session."""
    if not usage_events.size:
        return
    order = usage_events[np.argsort(sessions.codes[usage_events], kind="stable")]
    columns = [column[order] for column in (starts_us, generation_starts_us, ends_us, inputs, outputs)]
    session_codes = sessions.codes[order]
    bounds = (np.flatnonzero(session_codes[1:] != session_codes[:-1]) + 1).tolist()
    for first, last in zip([0, *bounds], [*bounds, order.shape[0]]):
        batch = batches[sessions.text(int(session_codes[first]))]
        batch.calls = CallColumns(*(column[first:last] for column in columns))


def _crossing_shares(
    crossing: np.ndarray, starts_us: np.ndarray, generation_starts_us: np.ndarray, ends_us: np.ndarray,
    inputs: np.ndarray, outputs: np.ndarray,
) -> list[tuple[int, int, int, int]]:
    """`(event, bucket_start_us, input_tokens, output_tokens)` of every minute share of the calls
    crossing a minute (algorithms.bucket_call_tokens)."""
    if not crossing.size:
        return []
    # 2 * output * generation must fit an int64 for the kernel; any other call is split in Python.
    generation_us = ends_us[crossing] - generation_starts_us[crossing]
    in_kernel = outputs[crossing] < _INT64_SAFE // np.maximum(2 * generation_us, 1)
    share_rows = _share_rows_needed(crossing[in_kernel], starts_us, ends_us)
    share_events, share_buckets_us, share_inputs, share_outputs = (np.empty(share_rows, np.int64) for _ in range(4))
    written = _shares_kernel(
        crossing[in_kernel], starts_us, generation_starts_us, ends_us, inputs, outputs,
        share_events, share_buckets_us, share_inputs, share_outputs,
    )  # fmt: skip
    shares = list(zip(share_events[:written].tolist(), share_buckets_us[:written].tolist(),
                      share_inputs[:written].tolist(), share_outputs[:written].tolist()))  # fmt: skip
    for event in crossing[~in_kernel].tolist():
        call = algo.PlacedCall(int(starts_us[event]), int(ends_us[event]), int(generation_starts_us[event]),
                               int(inputs[event]), int(outputs[event]))  # fmt: skip
        shares.extend((event, share.bucket_start_us, share.input_tokens, share.output_tokens)
                      for share in algo.bucket_call_tokens(call))  # fmt: skip
    return shares


def _check_int64_totals(*columns: np.ndarray) -> None:
    """Refuse columns whose sum could overflow an int64 (bound first, exact Python sum if needed)."""
    for column in columns:
        if column.size and int(np.abs(column).max()) * column.shape[0] >= _INT64_SAFE:
            if sum(column.tolist()) >= _INT64_SAFE:
                raise ValueError("claimed events' totals exceed what a fold sums in one transaction")


def _raise_for(row: dict) -> None:
    """Raise algorithms' own error for an event (`ClaimedEvents.row`) the kernel could not place:
    negative, NaN or infinite, or (finite) beyond the 2**53 us the kernel's float-to-int rounding
    is exact for."""
    if row["type"] == _USAGE:
        algo.generation_interval_us(row["timestamp"], row["duration_ms"], row["time_to_first_token_ms"])
        raise ValueError(f"duration {row['duration_ms']!r} ms is beyond any call's")
    algo.ms_to_us(row["wait_ms"])
    raise ValueError(f"wait {row['wait_ms']!r} ms is beyond any throttle's")
