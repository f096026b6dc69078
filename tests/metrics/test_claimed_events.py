"""Claimed events as columns: PostgreSQL's binary arrays decode to exactly the rows SQLite's claim reads."""
from __future__ import annotations

import math
import struct
from datetime import timedelta

import numpy as np
import psycopg
import pytest
from django.db import connection
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.ingestion.models import RawEvent
from apps.metrics import claimed_events as events_module
from apps.metrics.claimed_events import (
    CLAIM_COLUMNS,
    POSTGRES_ARRAYS,
    ClaimedEvents,
    first_of_keys,
    from_postgres_arrays,
    postgres_select_list,
)
from apps.metrics.folding import claim_statement_postgres
from tests.conftest import BASE_TIME, property_examples

_POSTGRES_EPOCH_US = 946_684_800_000_000
_ELEMENT_OIDS = {"i8": 20, "ts": 1184, "f8": 701, "b": 16, "t": 25}
_PACK = {"i8": ">q", "ts": ">q", "f8": ">d", "b": ">?"}


def array_send(kind: str, values: list) -> bytes:
    """PostgreSQL's binary format of a one-dimensional array (what `array_send` returns)."""
    has_null = any(value is None for value in values)
    out = [struct.pack(">5i", 1, int(has_null), _ELEMENT_OIDS[kind], len(values), 1)]
    for value in values:
        if value is None:
            out.append(struct.pack(">i", -1))
            continue
        if kind == "t":
            data = value.encode()
        elif kind == "ts":
            data = struct.pack(">q", value - _POSTGRES_EPOCH_US)
        else:
            data = struct.pack(_PACK[kind], value)
        out.append(struct.pack(">i", len(data)) + data)
    return b"".join(out)


def column_values(row: dict, name: str):
    """A claim row's value of one of POSTGRES_ARRAYS' columns, as the claim's SQL computes it."""
    return {
        "ids": row["id"], "sessions": row["session_id"], "usage": row["type"] == "usage", "steps": row["step"],
        "providers": row["provider"], "models": row["model"], "call_ids": row["call_id"],
        "starts_us": row["timestamp"], "ends_at_us": row["end_at"], "attributes": row["attributes"],
        "durations_ms": row["duration_ms"],
        "ttfts_ms": math.nan if row["time_to_first_token_ms"] is None else row["time_to_first_token_ms"],
        # The token columns carry their database names.
        **{name: row[name] for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                                        "tool_tokens", "thought_tokens")},
        "estimated": row["token_source"] == "estimated", "waits_ms": row["wait_ms"],
        "priced": row["cost_nanousd"] is not None, "costs_nanousd": row["cost_nanousd"] or 0,
        "price_sources": row["price_source"],
    }[name]  # fmt: skip


def encoded(rows: list[dict]) -> list[bytes]:
    return [array_send(kind, [column_values(row, name) for row in rows]) for name, _, kind in POSTGRES_ARRAYS]


def claim_row(**values) -> dict:
    row = dict.fromkeys(CLAIM_COLUMNS, 0)
    row.update(id=1, session_id="s", type="usage", step="plan", provider="openai", model="gpt-4o", call_id=None,
               timestamp=1_795_165_680_000_000, end_at=1_795_165_681_000_000, attributes="{}", duration_ms=1000.0,
               time_to_first_token_ms=None, token_source="client", wait_ms=0.0, cost_nanousd=None,
               price_source="")  # fmt: skip
    row.update(values)
    return row


def as_rows(claimed: ClaimedEvents) -> list[dict]:
    return [claimed.row(event) for event in range(len(claimed))]


def tuples(rows: list[dict]) -> list[tuple]:
    return [tuple(row[name] for name in CLAIM_COLUMNS) for row in rows]


def assert_same_events(decoded: ClaimedEvents, expected: ClaimedEvents) -> None:
    assert as_rows(decoded) == as_rows(expected)
    for name, _, kind in POSTGRES_ARRAYS:
        ours, theirs = getattr(decoded, name), getattr(expected, name)
        if kind == "t":
            assert ours.codes.tolist() == theirs.codes.tolist(), name
            assert ours.nonempty.tolist() == theirs.nonempty.tolist(), name
        else:
            assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs, equal_nan=True), name


MIXED = [
    claim_row(id=7, session_id="s-ü", call_id="", attributes='{"user": "zoë"}', cost_nanousd=12, price_source="a"),
    claim_row(id=3, session_id="s-😀", type="throttle", call_id="c-1", duration_ms=0.0, wait_ms=2500.5),
    claim_row(id=5, session_id="s-ü", step="", provider="", model="", call_id="c-1", time_to_first_token_ms=10.5,
              token_source="estimated", input_tokens=2**40, output_tokens=3, cost_nanousd=0),
    claim_row(id=9, session_id="s-😀", call_id=None, timestamp=-1, end_at=0, attributes='{"user": "zoë"}'),
]  # fmt: skip


def test_binary_arrays_decode_to_the_columns_of_the_same_rows_in_id_order():
    decoded = from_postgres_arrays(encoded(MIXED))
    assert decoded.ids.tolist() == [3, 5, 7, 9]
    assert_same_events(decoded, ClaimedEvents.from_rows(tuples(MIXED)))


def test_null_and_empty_texts_are_different_values():
    decoded = from_postgres_arrays(encoded(MIXED))
    assert [decoded.call_ids[event] for event in range(4)] == ["c-1", "c-1", "", None]
    assert decoded.call_ids.codes.tolist() == [0, 0, 2, 3]
    assert decoded.call_ids.nonempty.tolist() == [True, True, False, False]


def test_texts_whose_digests_collide_are_still_told_apart(monkeypatch):
    # Every text given one digest: the byte check finds the collision, the decoded texts decide.
    monkeypatch.setattr(events_module, "_text_digests", lambda data, offsets, _: np.zeros(len(offsets), np.uint64))
    rows = [claim_row(id=number, call_id=value) for number, value in enumerate(["ab", "cd", "ab", None, "", "cd"], 1)]
    decoded = from_postgres_arrays(encoded(rows))
    assert decoded.call_ids.codes.tolist() == [0, 1, 0, 3, 4, 1]
    assert [decoded.call_ids[event] for event in range(6)] == ["ab", "cd", "ab", None, "", "cd"]
    assert decoded.call_ids.nonempty.tolist() == [True, True, True, False, False, True]


def test_a_claim_of_nothing_is_empty():
    assert len(from_postgres_arrays([None] * len(POSTGRES_ARRAYS))) == 0
    assert len(ClaimedEvents.from_rows([])) == 0


@pytest.mark.parametrize(
    "damage",
    [
        lambda buffers: [struct.pack(">5i", 2, 0, 20, 1, 1) + buffers[0][20:], *buffers[1:]],  # two dimensions
        lambda buffers: [*buffers[:2], array_send("b", [True, None]), *buffers[3:]],  # NULL in a fixed column
        lambda buffers: [*buffers[:1], array_send("t", ["s"]), *buffers[2:]],  # another length
        lambda buffers: [*buffers[:1], buffers[1][:-1], *buffers[2:]],  # text cut short
        lambda buffers: [*buffers[:1], buffers[1][:22], *buffers[2:]],  # text cut inside a length
        lambda buffers: [array_send("f8", [1.0, 2.0]), *buffers[1:]],  # another element type
        lambda buffers: [buffers[0] + b"\0", *buffers[1:]],  # bytes after the last element
        lambda buffers: [*buffers[:7], struct.pack(">5i", 1, 0, 1184, 2, 1) + struct.pack(">iq", 8, 2**63 - 1) * 2,
                         *buffers[8:]],  # 'infinity'
        lambda buffers: buffers[:-1],  # a column missing
    ],
)
def test_a_malformed_array_is_refused(damage):
    rows = [claim_row(), claim_row(id=2)]
    with pytest.raises(ValueError):
        from_postgres_arrays(damage(encoded(rows)))


texts = st.one_of(st.none(), st.text(st.characters(exclude_categories=("Cs",)), max_size=6))


@settings(max_examples=property_examples(200), deadline=None, database=None)
@given(values=st.lists(texts, max_size=300), data=st.data())
def test_text_codes_are_first_appearances_exactly(values, data):
    rows = [claim_row(id=number, call_id=value) for number, value in enumerate(values, 1)]
    # PostgreSQL returns the claimed rows in any order; the decoder sorts them by id.
    shuffled = data.draw(st.permutations(rows))
    decoded = from_postgres_arrays(encoded(shuffled)) if rows else ClaimedEvents.from_rows([])
    first: dict = {}
    assert decoded.call_ids.codes.tolist() == [first.setdefault(value, index) for index, value in enumerate(values)]
    assert [decoded.call_ids[event] for event in range(len(values))] == values


@settings(max_examples=property_examples(200), deadline=None, database=None)
@given(keys=st.lists(st.tuples(st.integers(-3, 3), st.integers(-(2**63), 2**63 - 1)), max_size=300))
def test_key_codes_are_first_appearances_exactly(keys):
    first: dict = {}
    expected = [first.setdefault(key, index) for index, key in enumerate(keys)]
    assert first_of_keys(np.array(keys, np.int64).reshape(len(keys), 2)).tolist() == expected


def test_an_int64_overflowing_row_is_refused():
    with pytest.raises(ValueError, match="exceed"):
        ClaimedEvents.from_rows(tuples([claim_row(input_tokens=2**63)]))


# --- against PostgreSQL's own output ---------------------------------------------------------


def stored(project, rows: list[dict]) -> None:
    RawEvent.objects.bulk_create([
        RawEvent(
            project=project, event_id=f"00000000-0000-4000-8000-{number:012d}", type=row["type"],
            session_id=row["session_id"], step=row["step"], provider=row["provider"], model=row["model"],
            call_id=row["call_id"], timestamp=BASE_TIME + timedelta(microseconds=number * 1_000_003),
            end_at=BASE_TIME + timedelta(seconds=number, microseconds=7), received_at=BASE_TIME,
            attributes=row["attributes"], duration_ms=row["duration_ms"],
            time_to_first_token_ms=row["time_to_first_token_ms"], input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"], token_source=row["token_source"], wait_ms=row["wait_ms"],
            cost_nanousd=row["cost_nanousd"], price_source=row["price_source"],
        )
        for number, row in enumerate(rows, 1)
    ])  # fmt: skip


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgres_arrays_decode_to_the_rows_of_a_plain_select(project):
    rows = [{**row, "attributes": {"user": "zoë", "n": 1.5} if row["attributes"] != "{}" else {}} for row in MIXED]
    stored(project, rows * 50)
    quote = connection.ops.quote_name
    table = quote(RawEvent._meta.db_table)
    where = f"FROM {table} WHERE project_id = %s"
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(f"SELECT {postgres_select_list(quote)} {where}", [project.pk], binary=True)
        decoded = from_postgres_arrays(cursor.fetchone())
    plain = ", ".join(
        f"(EXTRACT(EPOCH FROM {quote(name)}) * 1000000)::bigint" if name in ("timestamp", "end_at")
        else f"{quote(name)}::text" if name == "attributes" else quote(name)
        for name in CLAIM_COLUMNS
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {plain} {where}", [project.pk])
        expected = ClaimedEvents.from_rows(cursor.fetchall())
    assert len(decoded) == 200
    assert_same_events(decoded, expected)


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_claim_of_nothing_pending_is_empty_on_postgres(project):
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(*claim_statement_postgres(project.pk, ["nobody"]), binary=True)
        assert len(from_postgres_arrays(cursor.fetchone())) == 0
