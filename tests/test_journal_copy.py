"""The journal's binary COPY records (issue 14): `Outcome.copy_record()` is made when a request
is decided, so a group commit only joins bytes. PostgreSQL must read back exactly the row that
`journal_row()` names, for every kind of outcome and at the bounds of every column, and the
widths the ledger writes must be the journal table's column types."""

from __future__ import annotations

import asyncio
import struct

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger_ext import (
    JOURNAL_COLUMN_WIDTHS,
    JOURNAL_COLUMNS,
    JOURNAL_COPY_HEADER,
    JOURNAL_COPY_TRAILER,
    MAIN,
    SUBSIDY,
    Ledger,
    Outcome,
)

NOW_S = 1_800_000_000
_PG_WIDTHS = {"bigint": 8, "integer": 4, "smallint": 2}
_FORMATS = {8: "q", 4: "i", 2: "h"}


def _reference_record(row: tuple[int, ...]) -> bytes:
    """The same record from struct, column by column: what the Cython code must equal."""
    out = [struct.pack("!h", len(row))]
    for value, width in zip(row, JOURNAL_COLUMN_WIDTHS, strict=True):
        out.append(struct.pack(f"!i{_FORMATS[width]}", width, value))
    return b"".join(out)


def _outcomes() -> list[Outcome]:
    """One outcome of each shape the switch journals: approved and declined purchases, a
    reversal, an inquiry, a hold and its capture, a credit, a debit and a transfer."""
    ledger = Ledger(100, 8)
    ledger.configure_class(1, 0, 0, 0, 0, 0)
    ledger.open_merchant(7, 1)
    ledger.open_account(3, 1, 1, main_fen=10_000, subsidy_fen=500)
    ledger.bind_card(4_000_000_000_000_123, 3)
    card = 4_000_000_000_000_123
    out = [
        ledger.purchase(9, 1, card, 7, 1_234, NOW_S),
        ledger.purchase(9, 2, card, 7, 10**6, NOW_S),              # declined: no funds
        ledger.purchase(9, 3, 5, 7, 100, NOW_S),                   # declined: unknown card
        ledger.reverse(9, 4, 1, card, 1_234, NOW_S),
        ledger.inquire(9, 5, card, 7, NOW_S),
        ledger.hold(9, 6, card, 7, 300, NOW_S + 600, NOW_S),
        ledger.capture(9, 7, 6, 200, NOW_S),
        ledger.credit(9, 8, card, 7, MAIN, 1_000, NOW_S),
        ledger.debit(9, 9, card, 7, SUBSIDY, 50, NOW_S),
        ledger.transfer(9, 10, card, 7, MAIN, 25, NOW_S),
    ]
    assert {o.kind for o in out} >= {1, 2, 3, 4, 5, 8, 9, 10}
    assert any(o.code for o in out) and any(o.main_delta_fen < 0 for o in out)
    return out


def test_every_outcome_kind_encodes_like_the_reference() -> None:
    for o in _outcomes():
        assert o.copy_record() == _reference_record(o.journal_row()), o


@given(st.lists(st.integers(-(2**15), 2**15 - 1), min_size=1, max_size=1))
def test_the_reference_handles_negative_values(values: list[int]) -> None:
    # Two's complement in the column's width, as PostgreSQL reads it.
    rec = _reference_record((values[0],) * 20)
    assert len(rec) == 2 + 4 * 20 + sum(JOURNAL_COLUMN_WIDTHS)


def test_the_widths_are_the_journal_table_types(db_dsn: str) -> None:
    async def go() -> dict[str, int]:
        conn = await asyncpg.connect(db_dsn)
        try:
            rows = await conn.fetch(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'journal'")
        finally:
            await conn.close()
        return {r["column_name"]: _PG_WIDTHS.get(r["data_type"], -1) for r in rows}

    types = asyncio.run(go())
    assert [types[c] for c in JOURNAL_COLUMNS] == list(JOURNAL_COLUMN_WIDTHS)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # one database is enough
@given(st.data())
def test_postgres_reads_back_the_row(db_dsn: str, data: st.DataObject) -> None:
    """Every column at random values inside its type, negative ones included, through a real
    binary COPY into the journal's own column types: PostgreSQL returns journal_row()."""
    rows = [tuple(data.draw(st.integers(-(2 ** (8 * w - 1)), 2 ** (8 * w - 1) - 1))
                  for w in JOURNAL_COLUMN_WIDTHS) for _ in range(3)]
    records = b"".join(_reference_record(r) for r in rows)
    cols = ", ".join(f"{c} {({8: 'bigint', 4: 'integer', 2: 'smallint'})[w]}"
                     for c, w in zip(JOURNAL_COLUMNS, JOURNAL_COLUMN_WIDTHS, strict=True))

    async def go() -> list[tuple[int, ...]]:
        conn = await asyncpg.connect(db_dsn)
        try:
            await conn.execute(f"CREATE TEMP TABLE j ({cols})")
            await conn.copy_to_table(
                "j", source=memoryview(JOURNAL_COPY_HEADER + records + JOURNAL_COPY_TRAILER),
                columns=list(JOURNAL_COLUMNS), format="binary")
            return [tuple(r) for r in await conn.fetch("SELECT * FROM j")]
        finally:
            await conn.close()

    assert asyncio.run(go()) == rows


def test_the_journal_table_takes_the_ledgers_records(db_dsn: str) -> None:
    """The real journal table (its constraints included) reads the ledger's own records back as
    journal_row()."""
    outcomes = _outcomes()
    data = JOURNAL_COPY_HEADER + b"".join(o.copy_record() for o in outcomes) \
        + JOURNAL_COPY_TRAILER

    async def go() -> list[tuple[int, ...]]:
        conn = await asyncpg.connect(db_dsn)
        try:
            await conn.copy_to_table("journal", source=memoryview(data),
                                     columns=list(JOURNAL_COLUMNS), format="binary")
            return [tuple(r) for r in await conn.fetch(
                f"SELECT {', '.join(JOURNAL_COLUMNS)} FROM journal ORDER BY lsn")]
        finally:
            await conn.close()

    assert asyncio.run(go()) == [o.journal_row() for o in outcomes]
