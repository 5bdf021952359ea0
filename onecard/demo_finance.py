"""The demo's reconciliation with the bank (docs/finance.md), with one injected mismatch.

After the day's settlement, the bank's file of that business day is written for tenant 1 the
way the bank would (every top-up of ours the journal credited that day), plus one line for a
top-up the bank approved and we never credited (an answer lost in transit: the injected
mismatch), and imported through `admin_api.finance.reconcile`. The exceptions are counted from
the database; the injected RRN must be among them.
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


async def reconcile_day(dsn: str, business_day: str, tenant_id: int = 1) -> DemoReconciliation:
    day = dt.date.fromisoformat(business_day)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        t = await pool.fetchrow("SELECT utc_offset_s, cutover_s FROM tenants WHERE id = $1",
                                tenant_id)
        from admin_api.settlement import day_bounds

        start, end = day_bounds(day, t["utc_offset_s"], t["cutover_s"])
        ours = await pool.fetch(
            "SELECT t.rrn, t.stan, t.terminal_id, t.amount_fen FROM bank_topups t"
            " JOIN journal j ON j.terminal_id = t.terminal_id AND j.txn_seq = t.txn_seq"
            " AND j.code = 0 AND j.kind = 8 WHERE t.tenant_id = $1 AND t.created_at >= $2"
            " AND t.created_at < $3 ORDER BY t.rrn", tenant_id, start, end)
        lines = [(r["rrn"], r["stan"], r["terminal_id"], "TOK-DEMO", r["amount_fen"], "000001")
                 for r in ours]
        lines.append((INJECTED_RRN, 999_999, 1, "TOK-LOST", INJECTED_FEN, "000002"))
        bank_file = read_bank_file(write_bank_file(day, lines), day)
        path = await pool.fetchval("SELECT path FROM org_nodes WHERE kind = 'tenant'"
                                   " AND tenant_id = $1", tenant_id)
        node_path = list(path) if path is not None else []
        actor = Actor(user_id=0, username="demo", role="system", node_id=0, node_path=node_path)
        async with change(pool, actor) as tx:
            out = await reconcile(tx.conn, tenant_id, node_path, bank_file, "demo")
            tx.audit("bank_file.import", "bank_file", out.id, node_path, after=out)
        found = await pool.fetch("SELECT rrn FROM reconciliation_exceptions WHERE file_id = $1",
                                 out.id)
    finally:
        await pool.close()
    return DemoReconciliation(business_day=business_day, lines=out.lines_count,
                              matched=out.matched, exceptions=len(found),
                              injected_found=INJECTED_RRN in {r["rrn"] for r in found})


def render(r: DemoReconciliation) -> list[str]:
    found = "found" if r.injected_found else "NOT FOUND"
    return [f"  Reconciliation with the bank ({r.business_day}, tenant 1): {r.lines} file lines, "
            f"{r.matched} matched, {r.exceptions} exception(s); the injected lost answer "
            f"{found}"]
