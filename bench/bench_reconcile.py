"""Reconciliation of a bank file at its line limit (200,000 lines), against a real PostgreSQL.

    python bench/bench_reconcile.py [--dsn DSN] [--lines 200000] [--json PATH]

A fresh database (`onecard_bench_reconcile` on the server of --dsn, default $ONECARD_DSN or
127.0.0.1:5432) is migrated and seeded (two tenants, 10,000 cards); `--lines` top-ups of
yesterday are generated in `bank_topups` with their journal credits (`INSERT ... SELECT
generate_series`, not timed), and the bank's file of that day is written with every one of
them but two (ours_only), one amount changed (amount_differs) and one line of the bank's own
(bank_only). Measured: `read_bank_file` (checking every line) and `reconcile` (the import and
the matching, one transaction), wall time each.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
from pathlib import Path

import asyncpg
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from admin_api.finance import read_bank_file, reconcile, write_bank_file
from admin_api.settlement import day_bounds
from onecard.harness import fresh_database
from onecard.seed import SeedPlan, seed_site

DATABASE = "onecard_bench_reconcile"

_TOPUPS_SQL = """
WITH g AS (SELECT g, $3::timestamptz + (g * interval '0.3 second') AS ts,
                  (g % 10000) + 1 AS a, 100 + (g * 7919) % 50000 AS amt
           FROM generate_series(1, $1::bigint) AS g),
 j AS (INSERT INTO journal (lsn, kind, code, terminal_id, txn_seq, ref_txn_seq, card_no,
           account_id, merchant_id, tenant_id, merchant_tenant_id, amount_fen, main_delta_fen,
           subsidy_delta_fen, merchant_delta_fen, held_delta_fen, main_fen, subsidy_fen,
           expires_s, now_s, committed_at)
       SELECT g, 8, 0, 9000, g, 0, 8800000000 + a * 10, a, $2, 1, 1, amt, amt, 0, -amt, 0, 0,
              0, 0, extract(epoch FROM ts)::bigint, ts FROM g)
INSERT INTO bank_topups (tenant_id, terminal_id, txn_seq, account_id, card_no, bank_card_id,
                         amount_fen, stan, rrn, state, lsn, created_at)
SELECT 1, 9000, g, a, 8800000000 + a * 10, $4, amt, 1 + g % 999999, lpad(g::text, 12, '0'),
       'approved', g, ts FROM g
"""


async def main(args: argparse.Namespace) -> dict[str, object]:
    dsn = await fresh_database(args.dsn, DATABASE)
    conn = await asyncpg.connect(dsn)
    try:
        await seed_site(conn, SeedPlan(accounts=10_000, terminals=10, with_limits=False))
        # The seed opens each tenant's bank clearing account (0012_topup.sql); a top-up names a
        # bound bank card, here one for all (the matching reads RRNs, not cards).
        clearing = await conn.fetchval("SELECT merchant_id FROM system_accounts"
                                       " WHERE tenant_id = 1 AND purpose = 'bank_clearing'")
        # Account 1's bound bank card (the seed binds some: one per account at most).
        bank_card = await conn.fetchval(
            "SELECT id FROM bank_cards WHERE account_id = 1 AND unbound_at IS NULL"
        ) or await conn.fetchval(
            "INSERT INTO bank_cards (tenant_id, account_id, pan_masked, bank_token)"
            " VALUES (1, 1, '622202******0128', 'TOK-1') RETURNING id")
        t = await conn.fetchrow("SELECT utc_offset_s, cutover_s FROM tenants WHERE id = 1")
        now = await conn.fetchval("SELECT now()")
        day = (now + dt.timedelta(seconds=t["utc_offset_s"])).date() - dt.timedelta(days=2)
        start, _ = day_bounds(day, t["utc_offset_s"], t["cutover_s"])
        await conn.execute(_TOPUPS_SQL, args.lines, clearing, start + dt.timedelta(minutes=1),
                           bank_card)
        await conn.execute("VACUUM ANALYZE journal")
        await conn.execute("VACUUM ANALYZE bank_topups")
        rows = await conn.fetch("SELECT rrn, stan, terminal_id, amount_fen FROM bank_topups"
                                " ORDER BY rrn")
        lines = [(r["rrn"], r["stan"], r["terminal_id"], "TOK-1", r["amount_fen"], "000001")
                 for r in rows[2:]]
        lines[0] = (*lines[0][:4], lines[0][4] + 1, lines[0][5])
        lines[-1] = ("BANKONLY0001", 1, 9000, "TOK-2", 5000, "000002")
        data = write_bank_file(day, lines)
        t0 = time.perf_counter()
        bank_file = read_bank_file(data, day)
        read_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        async with conn.transaction():
            out = await reconcile(conn, 1, [], bank_file, "bench")
        reconcile_s = time.perf_counter() - t0
    finally:
        await conn.close()
    assert (out.ours_only, out.amount_differs, out.bank_only) == (3, 1, 1), out
    return {"lines": len(lines), "bytes": len(data), "read_seconds": round(read_s, 3),
            "reconcile_seconds": round(reconcile_s, 3), "matched": out.matched,
            "exceptions": out.exceptions}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dsn", default=os.environ.get(
        "ONECARD_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--lines", type=int, default=200_000)
    p.add_argument("--json")
    args = p.parse_args()
    result = asyncio.run(main(args))
    print(result)
    if args.json:
        Path(args.json).write_bytes(msgspec.json.format(msgspec.json.encode(result)))
