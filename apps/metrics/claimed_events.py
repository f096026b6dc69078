"""The events one fold transaction claims, as columns: what the claim returns and claimed_sums reads.

A claim holds up to 100,000 events. Read as rows, each event was 22 Python objects made by the
database driver and then taken apart again into columns; that was the largest share of a
worker's time per event. On PostgreSQL the claim now returns one row: per column, the
`array_send` of an `array_agg`, i.e. the column in PostgreSQL's binary array format (a header,
then per element a big-endian 4-byte length and the value). Fixed-width columns become numpy
arrays in one `frombuffer` each; text columns are located and deduplicated by compiled passes
over the bytes, and only each distinct text is decoded to a `str` (a call_id only when asked for).
On SQLite the claim still returns rows, which `ClaimedEvents.from_rows` turns into the same columns.

Text columns carry codes: an event's code is the index of the first event with the same text,
so codes follow first appearance in id order, and any tuple of codes can be coded again the same
way (`first_of_keys`) to group events by several columns.
"""
from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import count

import numpy as np
from numba import njit

from apps.ingestion.models import RawEvent

# The claimed events' columns, in the order the fold's claim reads them (`timestamp` and
# `end_at` as integer epoch microseconds): the rows of `from_rows`, the dicts of `row`.
CLAIM_COLUMNS = (
    "id", "session_id", "type", "step", "provider", "model", "call_id", "timestamp", "end_at", "attributes",
    "duration_ms", "time_to_first_token_ms", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "tool_tokens", "thought_tokens", "token_source", "wait_ms", "cost_nanousd", "price_source",
)  # fmt: skip

_USAGE = RawEvent.Type.USAGE.value
_THROTTLE = RawEvent.Type.THROTTLE.value
_ESTIMATED = RawEvent.TokenSource.ESTIMATED.value
_CLIENT = RawEvent.TokenSource.CLIENT.value
_NULL_LENGTH = -1
# timestamptz's binary value counts microseconds from 2000-01-01 UTC.
_POSTGRES_EPOCH_US = 946_684_800_000_000


class TextColumn:
    """One text column of the claimed events: a code per event, texts decoded once per code."""

    __slots__ = ("codes", "nonempty", "_texts", "_decode")

    def __init__(self, codes: np.ndarray, nonempty: np.ndarray, texts: dict[int, str | None],
                 decode: Callable[[int], str | None] | None = None) -> None:  # fmt: skip
        self.codes = codes  # int64: per event, the index of the first event with the same text
        self.nonempty = nonempty  # bool: per event, the text is neither NULL nor ''
        self._texts = texts
        self._decode = decode

    def text(self, code: int) -> str | None:
        """The text of a code (an event index whose code is itself)."""
        try:
            return self._texts[code]
        except KeyError:
            value = self._texts[code] = self._decode(code)
            return value

    def __getitem__(self, event: int) -> str | None:
        return self.text(int(self.codes[event]))

    def distinct_codes(self) -> np.ndarray:
        """Every code once, in first-appearance order."""
        return np.flatnonzero(self.codes == np.arange(self.codes.shape[0]))

    def codes_of(self, texts: set[str]) -> np.ndarray:
        """The codes of those of `texts` that occur."""
        return np.array([code for code in self.distinct_codes().tolist() if self.text(code) in texts], np.int64)


@dataclass(slots=True, eq=False)
class ClaimedEvents:
    """Claimed events in id order: numpy columns (int64, float64, bool) and `TextColumn`s."""

    ids: np.ndarray
    sessions: TextColumn
    usage: np.ndarray  # type == usage; the other type is throttle
    steps: TextColumn
    providers: TextColumn
    models: TextColumn
    call_ids: TextColumn
    starts_us: np.ndarray
    ends_at_us: np.ndarray
    attributes: TextColumn  # JSON text of each event's attributes
    durations_ms: np.ndarray
    ttfts_ms: np.ndarray  # NaN where the event has none
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    cache_read_tokens: np.ndarray
    cache_write_tokens: np.ndarray
    tool_tokens: np.ndarray
    thought_tokens: np.ndarray
    estimated: np.ndarray  # token_source == estimated
    waits_ms: np.ndarray
    priced: np.ndarray  # cost_nanousd is not NULL
    costs_nanousd: np.ndarray  # 0 where unpriced
    price_sources: TextColumn

    def __len__(self) -> int:
        return self.ids.shape[0]

    def row(self, event: int) -> dict:
        """One event as the SQLite claim reads it (`CLAIM_COLUMNS` names, Python values); for
        error messages and the few per-event paths."""
        ttft = float(self.ttfts_ms[event])
        return {
            "id": int(self.ids[event]), "session_id": self.sessions[event],
            "type": _USAGE if self.usage[event] else _THROTTLE, "step": self.steps[event],
            "provider": self.providers[event], "model": self.models[event], "call_id": self.call_ids[event],
            "timestamp": int(self.starts_us[event]), "end_at": int(self.ends_at_us[event]),
            "attributes": self.attributes[event], "duration_ms": float(self.durations_ms[event]),
            "time_to_first_token_ms": None if math.isnan(ttft) else ttft,
            "input_tokens": int(self.input_tokens[event]), "output_tokens": int(self.output_tokens[event]),
            "cache_read_tokens": int(self.cache_read_tokens[event]),
            "cache_write_tokens": int(self.cache_write_tokens[event]),
            "tool_tokens": int(self.tool_tokens[event]), "thought_tokens": int(self.thought_tokens[event]),
            "token_source": _ESTIMATED if self.estimated[event] else _CLIENT, "wait_ms": float(self.waits_ms[event]),
            "cost_nanousd": int(self.costs_nanousd[event]) if self.priced[event] else None,
            "price_source": self.price_sources[event],
        }  # fmt: skip

    @classmethod
    def from_rows(cls, rows: Sequence[tuple]) -> ClaimedEvents:
        """Columns of claimed rows in `CLAIM_COLUMNS` order (any order of ids).

        Raises ValueError for a number an int64 cannot hold (the totals could not be summed).
        """
        rows = sorted(rows)  # by id: arrival order decides which attribute value is first
        if not rows:
            return _empty()
        (
            ids, session_ids, kinds, steps, providers, models, call_ids, starts_us, ends_at_us, attributes,
            durations_ms, ttfts_ms, inputs, outputs, cache_reads, cache_writes, tools, thoughts, token_sources,
            waits_ms, costs, price_sources,
        ) = zip(*rows)  # fmt: skip
        try:
            ints = [np.array(column, np.int64) for column in (ids, starts_us, ends_at_us, inputs, outputs, cache_reads,
                                                              cache_writes, tools, thoughts)]  # fmt: skip
            priced = np.array([cost is not None for cost in costs], np.bool_)
            cost_values = np.array([0 if cost is None else cost for cost in costs], np.int64)
        except OverflowError:
            raise ValueError("claimed events' totals exceed what a fold sums in one transaction") from None
        ids, starts, ends, inputs, outputs, cache_reads, cache_writes, tools, thoughts = ints
        return cls(
            ids=ids, sessions=_python_texts(session_ids), usage=np.array([k == _USAGE for k in kinds], np.bool_),
            steps=_python_texts(steps), providers=_python_texts(providers), models=_python_texts(models),
            call_ids=_python_texts(call_ids), starts_us=starts, ends_at_us=ends, attributes=_python_texts(attributes),
            durations_ms=np.array(durations_ms, np.float64), ttfts_ms=np.array(ttfts_ms, np.float64),
            input_tokens=inputs, output_tokens=outputs, cache_read_tokens=cache_reads, cache_write_tokens=cache_writes,
            tool_tokens=tools, thought_tokens=thoughts,
            estimated=np.array([source == _ESTIMATED for source in token_sources], np.bool_),
            waits_ms=np.array(waits_ms, np.float64), priced=priced, costs_nanousd=cost_values,
            price_sources=_python_texts(price_sources),
        )  # fmt: skip


def _python_texts(values: Sequence[str | None]) -> TextColumn:
    first: dict[str | None, int] = {}
    codes = np.fromiter(map(first.setdefault, values, count()), np.int64, len(values))
    nonempty = np.fromiter(map(bool, values), np.bool_, len(values))
    return TextColumn(codes, nonempty, {code: value for value, code in first.items()})


def _empty() -> ClaimedEvents:
    empty = {"i8": np.empty(0, np.int64), "ts": np.empty(0, np.int64), "f8": np.empty(0, np.float64),
             "b": np.empty(0, np.bool_), "t": TextColumn(np.empty(0, np.int64), np.empty(0, np.bool_), {})}  # fmt: skip
    return ClaimedEvents(**{name: empty[kind] for name, _, kind in POSTGRES_ARRAYS})


# --- PostgreSQL: the claim's one row of binary arrays ----------------------------------------

# What the PostgreSQL claim aggregates per column, in `ClaimedEvents` field order, with the
# binary element each yields: "i8" int8, "ts" timestamptz, "f8" float8, "b" bool, "t" text.
# NULLs only in text columns; the others are made NOT NULL here (ttft NaN, cost 0 plus a flag).
POSTGRES_ARRAYS = (
    ("ids", "{id}", "i8"),
    ("sessions", "{session_id}", "t"),
    ("usage", "{type} = '" + _USAGE + "'", "b"),
    ("steps", "{step}", "t"),
    ("providers", "{provider}", "t"),
    ("models", "{model}", "t"),
    ("call_ids", "{call_id}", "t"),
    ("starts_us", "{timestamp}", "ts"),
    ("ends_at_us", "{end_at}", "ts"),
    ("attributes", "{attributes}::text", "t"),
    ("durations_ms", "{duration_ms}", "f8"),
    ("ttfts_ms", "coalesce({time_to_first_token_ms}, 'NaN'::float8)", "f8"),
    ("input_tokens", "{input_tokens}", "i8"),
    ("output_tokens", "{output_tokens}", "i8"),
    ("cache_read_tokens", "{cache_read_tokens}", "i8"),
    ("cache_write_tokens", "{cache_write_tokens}", "i8"),
    ("tool_tokens", "{tool_tokens}", "i8"),
    ("thought_tokens", "{thought_tokens}", "i8"),
    ("estimated", "{token_source} = '" + _ESTIMATED + "'", "b"),
    ("waits_ms", "{wait_ms}", "f8"),
    ("priced", "{cost_nanousd} IS NOT NULL", "b"),
    ("costs_nanousd", "coalesce({cost_nanousd}, 0)", "i8"),
    ("price_sources", "{price_source}", "t"),
)
_FIXED_ELEMENTS = {"i8": (">i8", 8), "ts": (">i8", 8), "f8": (">f8", 8), "b": ("u1", 1)}
# Element type oids each kind accepts (pg_type): int8, timestamptz, float8, bool; text, varchar.
_ELEMENT_TYPES = {"i8": {20}, "ts": {1184}, "f8": {701}, "b": {16}, "t": {25, 1043}}
_ARRAY_HEADER_BYTES = 20
# timestamptz 'infinity' and '-infinity'.
_INFINITE_TIMESTAMPS = (np.iinfo(np.int64).max, np.iinfo(np.int64).min)


def postgres_select_list(quote: Callable[[str], str]) -> str:
    """The claim's SELECT list on PostgreSQL: one `array_send(array_agg(...))` per column."""
    columns = {name: quote(name) for name in CLAIM_COLUMNS}
    return ", ".join(f"array_send(array_agg({expression.format(**columns)}))" for _, expression, _ in POSTGRES_ARRAYS)


def from_postgres_arrays(buffers: Sequence[bytes | None]) -> ClaimedEvents:
    """`ClaimedEvents` of the claim's row (`postgres_select_list`'s values; NULLs when it claimed
    nothing). Raises ValueError for a buffer that is not the expected one-dimensional array of
    its column's type, NULL in a fixed-width column, or an infinite timestamp."""
    if buffers[0] is None:
        return _empty()
    size = _array_length(buffers[0], "i8")
    fixed: dict[str, np.ndarray] = {}
    spans: dict[str, tuple[bytes, np.ndarray, np.ndarray]] = {}  # buffer, offsets, lengths
    for (name, _, kind), buffer in zip(POSTGRES_ARRAYS, buffers, strict=True):
        if _array_length(buffer, kind) != size:
            raise ValueError(f"claimed column {name} has another length than the ids")
        if kind == "t":
            offsets, lengths = _text_spans(np.frombuffer(buffer, np.uint8), size)
            spans[name] = (buffer, offsets, lengths)
        else:
            fixed[name] = _fixed_array(buffer, size, kind)
    ids = fixed["ids"]
    if size > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        order = np.argsort(ids, kind="stable")
        fixed = {name: values[order] for name, values in fixed.items()}
        spans = {name: (buffer, offsets[order], lengths[order]) for name, (buffer, offsets, lengths) in spans.items()}
    texts = {name: _buffer_texts(buffer, offsets, lengths) for name, (buffer, offsets, lengths) in spans.items()}
    return ClaimedEvents(**fixed, **texts)


def _array_length(buffer: bytes | None, kind: str) -> int:
    """Elements of a one-dimensional binary array of `kind` (header: ndim, has-null flag,
    element type oid, then per dimension its length and lower bound)."""
    if buffer is None or len(buffer) < _ARRAY_HEADER_BYTES:
        raise ValueError("claimed column is not a one-dimensional array")
    ndim, _, element_type, length, _ = np.frombuffer(buffer, ">i4", 5).tolist()
    if ndim != 1:
        raise ValueError(f"claimed column is a {ndim}-dimensional array")
    if element_type not in _ELEMENT_TYPES[kind]:
        raise ValueError(f"claimed column has elements of type oid {element_type}")
    return length


def _fixed_array(buffer: bytes, size: int, kind: str) -> np.ndarray:
    element, width = _FIXED_ELEMENTS[kind]
    if len(buffer) != _ARRAY_HEADER_BYTES + size * (4 + width):
        raise ValueError("claimed column holds NULL or values of another width")
    cells = np.frombuffer(buffer, np.dtype([("length", ">i4"), ("value", element)]), size, _ARRAY_HEADER_BYTES)
    if size and not bool(np.all(cells["length"] == width)):
        raise ValueError("claimed column holds NULL or values of another width")
    values = cells["value"]
    if kind == "b":
        return values != 0
    if kind == "ts":
        values = values.astype(np.int64)
        if bool(np.isin(values, _INFINITE_TIMESTAMPS).any()):
            raise ValueError("claimed event has an infinite timestamp")
        return values + _POSTGRES_EPOCH_US
    return values.astype(np.int64 if kind == "i8" else np.float64)


def _buffer_texts(buffer: bytes, offsets: np.ndarray, lengths: np.ndarray) -> TextColumn:
    def decode(event: int) -> str | None:
        length = int(lengths[event])
        if length == _NULL_LENGTH:
            return None
        start = int(offsets[event])
        return buffer[start : start + length].decode()

    data = np.frombuffer(buffer, np.uint8)
    # Equal texts have equal (length, digest); codes from those are exact once every element is
    # checked byte by byte against its code's element. A 64-bit digest collision between texts of
    # one length fails that check, and the column is then coded from its decoded texts.
    codes = first_of_keys(np.stack([lengths, _text_digests(data, offsets, lengths).view(np.int64)], axis=1))
    if not _same_bytes_as_codes(data, offsets, lengths, codes):
        return _python_texts([decode(event) for event in range(lengths.shape[0])])
    return TextColumn(codes, lengths > 0, {}, decode)


@njit(cache=True, nogil=True)
def _text_spans(data, size):
    """(offset, length) of each element of a binary text array; length -1 for NULL."""
    offsets = np.empty(size, np.int64)
    lengths = np.empty(size, np.int64)
    end = data.shape[0]
    position = 20
    for element in range(size):
        if position + 4 > end:
            raise ValueError("text array ends inside an element")
        length = np.int32(
            (np.uint32(data[position]) << 24) | (np.uint32(data[position + 1]) << 16)
            | (np.uint32(data[position + 2]) << 8) | np.uint32(data[position + 3])
        )  # fmt: skip
        position += 4
        if length < -1 or position + max(length, 0) > end:
            raise ValueError("text array ends inside an element")
        offsets[element] = position
        lengths[element] = length
        if length > 0:
            position += length
    if position != end:
        raise ValueError("text array ends elsewhere than its elements")
    return offsets, lengths


_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)


@njit(cache=True, nogil=True)
def _text_digests(data, offsets, lengths):
    """FNV-1a of each element's bytes (a NULL, length -1, hashes as nothing)."""
    digests = np.empty(offsets.shape[0], np.uint64)
    for element in range(offsets.shape[0]):
        digest = _FNV_OFFSET
        start = offsets[element]
        for index in range(start, start + max(lengths[element], 0)):
            digest = (digest ^ np.uint64(data[index])) * _FNV_PRIME
        digests[element] = digest
    return digests


@njit(cache=True, nogil=True)
def _same_bytes_as_codes(data, offsets, lengths, codes):
    """Every element has the length and bytes of the element its code names."""
    for element in range(offsets.shape[0]):
        first = codes[element]
        if first == element:
            continue
        if lengths[first] != lengths[element]:
            return False
        start, other = offsets[element], offsets[first]
        for index in range(max(lengths[element], 0)):
            if data[start + index] != data[other + index]:
                return False
    return True


@njit(cache=True, nogil=True)
def first_of_keys(keys):
    """Per row of `keys` (int64, rows x columns), the index of the first row equal to it: an
    open-addressing hash table of first indices, every hit compared column by column."""
    size = keys.shape[0]
    codes = np.empty(size, np.int64)
    table_size = 16
    while table_size < 2 * size:  # at most half full: probing always ends, and soon
        table_size *= 2
    table = np.full(table_size, -1, np.int64)
    mask = np.uint64(table.shape[0] - 1)
    for row in range(size):
        digest = _FNV_OFFSET
        for column in range(keys.shape[1]):
            digest = (digest ^ np.uint64(keys[row, column])) * _FNV_PRIME
            digest ^= digest >> np.uint64(29)
        slot = digest & mask
        while True:
            first = table[slot]
            if first < 0:
                table[slot] = row
                codes[row] = row
                break
            same = True
            for column in range(keys.shape[1]):
                if keys[first, column] != keys[row, column]:
                    same = False
                    break
            if same:
                codes[row] = first
                break
            slot = (slot + np.uint64(1)) & mask
    return codes


def compile_decoders() -> None:
    """Compile (or load from numba's cache) the kernels `from_postgres_arrays` runs, on a
    one-element text array."""
    buffer = struct.pack(">5ii", 1, 0, 25, 1, 1, 1) + b"a"
    _buffer_texts(buffer, *_text_spans(np.frombuffer(buffer, np.uint8), 1))
