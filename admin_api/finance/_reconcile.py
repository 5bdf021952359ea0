"""Reconciliation with the bank: its daily file against our top-ups, by RRN.

For a tenant and business day, every line of the bank's file (a top-up the bank approved and
did not reverse) is looked up by RRN among our top-ups (`bank_topups`) and the journal's
credit of it (the row of the top-up's (terminal, txn_seq), approved):

| the bank's file | our journal | outcome |
| --- | --- | --- |
| the RRN | credited (or credited by its bank exception), same amount | matched |
| the RRN | credited, another amount | amount_differs |
| the RRN | not credited (no top-up, declined, unknown, reversed) | bank_only |
| — | credited that day | ours_only |

"That day" is the tenant's business day (admin_api/settlement: from one cutover to the next)
that holds the top-up's creation.

Each difference becomes one `reconciliation_exceptions` row (one per RRN, ever) for finance
to resolve by a document (`resolve`): credit the wallet from the bank clearing account,
reverse (debit it back to that account), or write off (nothing moves). Importing is all or
nothing, and writes no balance.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final, Literal

import asyncpg
import msgspec

from admin_api.finance._bankfile import BankFile
from admin_api.settlement import day_bounds

Kind = Literal["ours_only", "bank_only", "amount_differs"]
KINDS: Final = ("ours_only", "bank_only", "amount_differs")
_IMPORT_LOCK: Final = 0x0CA2D013
"""Advisory lock class of a tenant's bank file import (the second key is the tenant)."""
BANK_CLEARING_NAME: Final = "bank clearing"


class ReconcileConflict(Exception):
    """Another file was imported for this tenant and day already."""


class ReconcileRefused(Exception):
    """The import is refused before anything is written (e.g. a day not over yet)."""


class FileResult(msgspec.Struct):
    """One imported bank file and what its matching found."""

    id: int
    tenant_id: int
    business_date: dt.date
    lines_count: int
    total_fen: int
    matched: int
    ours_only: int
    bank_only: int
    amount_differs: int
    imported_by: str
    imported_at: dt.datetime
    repeated: bool = False
    """True: this very file had been imported before; this is that import."""

    @property
    def exceptions(self) -> int:
        return self.ours_only + self.bank_only + self.amount_differs


def file_result(r: Any, repeated: bool = False) -> FileResult:
    return FileResult(id=r["id"], tenant_id=r["tenant_id"], business_date=r["business_date"],
                      lines_count=r["lines_count"], total_fen=r["total_fen"],
                      matched=r["matched"], ours_only=r["ours_only"], bank_only=r["bank_only"],
                      amount_differs=r["amount_differs"], imported_by=r["imported_by"],
                      imported_at=r["imported_at"], repeated=repeated)


async def business_day(conn: Any, tenant_id: int, day: dt.date
                       ) -> tuple[dt.datetime, dt.datetime] | None:
    """[start, end) in UTC of the tenant's business day `day` (None: no such tenant, or a day
    outside 1970..9998)."""
    if not dt.date(1970, 1, 2) <= day <= dt.date(9998, 12, 31):
        return None
    t = await conn.fetchrow("SELECT utc_offset_s, cutover_s FROM tenants WHERE id = $1",
                            tenant_id)
    if t is None:
        return None
    return day_bounds(day, t["utc_offset_s"], t["cutover_s"])


_MATCH: Final = """
SELECT b.rrn, b.amount_fen AS bank_fen, t.id AS topup_id, t.state, t.account_id, t.card_no,
       coalesce(j.amount_fen, x.amount_fen, 0) AS our_fen,
       CASE WHEN coalesce(j.amount_fen, x.amount_fen) IS NULL THEN 'bank_only'
            WHEN coalesce(j.amount_fen, x.amount_fen) <> b.amount_fen THEN 'amount_differs'
            ELSE 'matched' END AS outcome
FROM bank_file_lines b
LEFT JOIN bank_topups t ON t.rrn = b.rrn AND t.tenant_id = $2
LEFT JOIN journal j ON j.terminal_id = t.terminal_id AND j.txn_seq = t.txn_seq
                   AND j.code = 0 AND j.kind = 8
LEFT JOIN journal x ON j.lsn IS NULL AND t.state = 'approved' AND x.lsn = t.lsn
                   AND x.code = 0 AND x.kind = 8
WHERE b.file_id = $1
UNION ALL
SELECT t.rrn, 0, t.id, t.state, t.account_id, t.card_no,
       coalesce(j.amount_fen, x.amount_fen), 'ours_only'
FROM bank_topups t
LEFT JOIN journal j ON j.terminal_id = t.terminal_id AND j.txn_seq = t.txn_seq
                   AND j.code = 0 AND j.kind = 8
LEFT JOIN journal x ON j.lsn IS NULL AND t.state = 'approved' AND x.lsn = t.lsn
                   AND x.code = 0 AND x.kind = 8
WHERE t.tenant_id = $2 AND t.created_at >= $3 AND t.created_at < $4
  AND (j.lsn IS NOT NULL OR x.lsn IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM bank_file_lines b WHERE b.file_id = $1 AND b.rrn = t.rrn)
"""
"""Each side by its index: the bank's lines by RRN (bank_topups.rrn is unique), ours by
(tenant, created_at); never the whole history of top-ups. Our credit of a top-up is the
journal row of its kiosk request, or, for a bank exception resolved by a credit
(admin_api/finance/_bankexc.py), the row `bank_topups.lsn` names (the admin terminal's credit
from the bank clearing account)."""


async def reconcile(conn: asyncpg.Connection, tenant_id: int, node_path: list[int],
                    bank_file: BankFile, imported_by: str) -> FileResult:
    """Import the file and match it (in the caller's transaction). The same file again
    answers its first import (`repeated`); another file for a day already imported raises
    ReconcileConflict; a day that has not ended yet raises ReconcileRefused."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _IMPORT_LOCK, tenant_id)
    day = bank_file.business_date
    bounds = await business_day(conn, tenant_id, day)
    if bounds is None:
        raise ReconcileRefused(f"no tenant {tenant_id}, or {day} is not a business day (1970 to "
                               "9998)")
    start, end = bounds
    known = await conn.fetchrow("SELECT * FROM bank_files WHERE tenant_id = $1"
                                " AND business_date = $2", tenant_id, day)
    if known is not None:
        if bytes(known["file_sha256"]) == bank_file.sha256:
            return file_result(known, repeated=True)
        raise ReconcileConflict(f"tenant {tenant_id}'s bank file of {day} was imported already "
                                f"(file {known['id']}, {known['lines_count']} lines) and this "
                                "is another file: nothing was changed")
    if await conn.fetchval("SELECT now() < $1", end):
        raise ReconcileRefused(f"business day {day} of tenant {tenant_id} has not ended yet "
                               "(its cutover): a day is reconciled after it is over")
    file_id = await conn.fetchval(
        "INSERT INTO bank_files (tenant_id, business_date, file_sha256, lines_count, total_fen,"
        " matched, ours_only, bank_only, amount_differs, imported_by)"
        " VALUES ($1, $2, $3, $4, $5, 0, 0, 0, 0, $6) RETURNING id", tenant_id, day,
        bank_file.sha256, len(bank_file.lines), bank_file.total_fen, imported_by)
    await conn.copy_records_to_table(
        "bank_file_lines", columns=["file_id", "line_no", "rrn", "stan", "terminal_id",
                                    "card_token", "amount_fen", "field39", "auth_code"],
        records=[(file_id, x.line_no, x.rrn, x.stan, x.terminal_id, x.card_token, x.amount_fen,
                  x.field39, x.auth_code) for x in bank_file.lines])
    counts = dict.fromkeys(("matched", *KINDS), 0)
    found = []
    for r in await conn.fetch(_MATCH, file_id, tenant_id, start, end):
        counts[r["outcome"]] += 1
        if r["outcome"] != "matched":
            found.append((file_id, tenant_id, node_path, day, r["outcome"], r["rrn"],
                          r["topup_id"], r["state"], r["account_id"], r["card_no"],
                          r["bank_fen"], r["our_fen"]))
    # One exception per RRN, ever: a difference already known (another day's file) stays the
    # one it was, with its resolution.
    await conn.executemany(
        "INSERT INTO reconciliation_exceptions (file_id, tenant_id, node_path, business_date,"
        " kind, rrn, topup_id, topup_state, account_id, card_no, bank_amount_fen,"
        " our_amount_fen) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        " ON CONFLICT (rrn) DO NOTHING", found)
    row = await conn.fetchrow(
        "UPDATE bank_files SET matched = $2, ours_only = $3, bank_only = $4,"
        " amount_differs = $5 WHERE id = $1 RETURNING *", file_id, counts["matched"],
        counts["ours_only"], counts["bank_only"], counts["amount_differs"])
    return file_result(row)


async def ensure_bank_clearing(conn: asyncpg.Connection, tenant_id: int, node_id: int | None,
                               emit: Any) -> int:
    """The tenant's bank clearing system account (made, or adopted by name, if missing);
    `emit(event)` puts a new merchant on the change feed. The top-up branch makes it too."""
    from admin_api._money import MERCHANTS_MAX
    from admin_api._store import next_id
    from protocols.changes import MerchantOpened

    have = await conn.fetchval("SELECT merchant_id FROM system_accounts WHERE tenant_id = $1"
                               " AND purpose = 'bank_clearing'", tenant_id)
    if have is not None:
        return int(have)
    merchant = await conn.fetchval(
        "SELECT m.id FROM merchants m WHERE m.tenant_id = $1 AND m.kind = 'system'"
        " AND m.name = $2 AND NOT EXISTS (SELECT 1 FROM system_accounts s"
        " WHERE s.merchant_id = m.id) ORDER BY m.id LIMIT 1", tenant_id, BANK_CLEARING_NAME)
    if merchant is None:
        merchant = await next_id(conn, "merchants", MERCHANTS_MAX)
        await conn.execute("INSERT INTO merchants (id, tenant_id, name, kind, node_id) VALUES"
                           " ($1, $2, $3, 'system', $4)", merchant, tenant_id,
                           BANK_CLEARING_NAME, node_id)
        emit(MerchantOpened(merchant, tenant_id))
    await conn.execute("INSERT INTO system_accounts VALUES ($1, 'bank_clearing', $2)",
                       tenant_id, merchant)
    return int(merchant)
