"""The demo's reconciliation with the bank (docs/finance.md), with one injected mismatch.

After the day's settlement, the bank simulator's own file of its business day before the
cutover (`BankHost.daily_lines`: every top-up the bank approved and did not reverse, the bank's
record, not ours) is imported as tenant 1's file of our business day that ended there, plus one
line for a top-up the bank approved and we never credited (an answer lost in transit: the
injected mismatch), through `admin_api.finance.reconcile`. The demo keeps kiosks idle across
the cutover, so both sides hold the same top-ups in that day: every other line matches. The
matched and exception counts are read back from the database; the injected RRN must be the one
exception.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import asyncpg
import msgspec

from admin_api import Actor
from admin_api._store import change
from admin_api.finance import read_bank_file, reconcile, write_bank_file

INJECTED_RRN: Final = "DEMOLOST0001"
INJECTED_FEN: Final = 10_000


class DemoReconciliation(msgspec.Struct):
    business_day: str
    lines: int
    matched: int
    exceptions: int
    """From the database: the day's reconciliation exceptions."""
    injected_found: bool
    matched_agrees: bool = False
    """`matched` (lines whose RRN the journal credited for the same amount, counted here) is
    what the reconciliation module stored for the file."""


_COUNTS: Final = """
SELECT f.lines_count, f.matched AS module_matched,
  (SELECT count(*) FROM bank_file_lines b
    JOIN bank_topups t ON t.rrn = b.rrn AND t.tenant_id = $2
    JOIN journal j ON j.terminal_id = t.terminal_id AND j.txn_seq = t.txn_seq AND j.code = 0
                  AND j.kind = 8 AND j.amount_fen = b.amount_fen
    WHERE b.file_id = f.id) AS matched
FROM bank_files f WHERE f.id = $1
"""


async def reconcile_day(dsn: str, business_day: str, bank_lines: list[str],
                        tenant_id: int = 1) -> DemoReconciliation:
    """`bank_lines`: the bank's daily file as lines (its header first, its own date in the
    first column), relabelled here to `business_day`."""
    day = dt.date.fromisoformat(business_day)
    lines = [(rrn, int(stan), int(terminal), token, int(amount), auth)
             for _, rrn, stan, terminal, token, amount, _, auth
             in (line.split(",") for line in bank_lines[1:])]
    lines.append((INJECTED_RRN, 999_999, 1, "TOK-LOST", INJECTED_FEN, "000002"))
    bank_file = read_bank_file(write_bank_file(day, lines), day)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        path = await pool.fetchval("SELECT path FROM org_nodes WHERE kind = 'tenant'"
                                   " AND tenant_id = $1", tenant_id)
        node_path = list(path) if path is not None else []
        actor = Actor(user_id=0, username="demo", role="system", node_id=0, node_path=node_path)
        async with change(pool, actor) as tx:
            out = await reconcile(tx.conn, tenant_id, node_path, bank_file, "demo")
            tx.audit("bank_file.import", "bank_file", out.id, node_path, after=out)
        counts = await pool.fetchrow(_COUNTS, out.id, tenant_id)
        found = await pool.fetch("SELECT rrn FROM reconciliation_exceptions WHERE file_id = $1",
                                 out.id)
    finally:
        await pool.close()
    return DemoReconciliation(business_day=business_day, lines=counts["lines_count"],
                              matched=counts["matched"], exceptions=len(found),
                              matched_agrees=counts["matched"] == counts["module_matched"],
                              injected_found=INJECTED_RRN in {r["rrn"] for r in found})


def render(r: DemoReconciliation) -> list[str]:
    found = "found" if r.injected_found else "NOT FOUND"
    return [f"  Reconciliation with the bank ({r.business_day}, tenant 1): {r.lines} file lines, "
            f"{r.matched} matched{'' if r.matched_agrees else ' (NOT as the module counted)'}, "
            f"{r.exceptions} exception(s); the injected lost answer {found}"]
