"""Settlement of one business day with 10,000,000 journal rows, against a real PostgreSQL.

    python bench/bench_settlement.py [--dsn DSN] [--rows 10000000] [--other-rows 1000000]
                                     [--runs 3] [--json PATH]

A fresh database (`onecard_bench_settlement` on the server of --dsn, default $ONECARD_DSN or
127.0.0.1:5432) is migrated and seeded (two tenants, 100,000 cards, 20 merchants, the system
accounts); then `--rows` journal rows are generated inside one business day of tenant 1 by
`INSERT ... SELECT generate_series` (purchases at both parks' merchants, cross-park purchases,
reversals, cash and subsidy credits; every row balances), plus `--other-rows` on the days
before and after (which the day's range query must skip). Generation is not timed. The
measured figure is the wall time of `admin_api.settlement.compute_settlement` for that day,
run `--runs` times (the first after the generation's VACUUM ANALYZE); every run must give the
same bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import os
import sys
import time
from pathlib import Path

import asyncpg
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from admin_api.settlement import compute_settlement, day_bounds, encode
from onecard.harness import fresh_database
from onecard.seed import SeedPlan, seed_site

DATABASE = "onecard_bench_settlement"
CHUNK_ROWS = 1_000_000
TERMINALS = 200

# One row g of the day: kind by g % 100 (0-1 reversal, 2 cash credit, 3 subsidy credit, else
# purchase), merchant by g % 20 (0..14 tenant 1's, 15..19 tenant 2's: cross-park for tenant 1's
# cards), account g % accounts + 1, amount 100..2,599 fen. Time: spread evenly over [t0, t0+span).
_ROWS_SQL = """
INSERT INTO journal (lsn, kind, code, terminal_id, txn_seq, ref_txn_seq, card_no, account_id,
    merchant_id, tenant_id, merchant_tenant_id, amount_fen, main_delta_fen, subsidy_delta_fen,
    merchant_delta_fen, held_delta_fen, main_fen, subsidy_fen, expires_s, now_s, committed_at)
SELECT g, k.kind, 0, 1 + g % {terminals}, g, 0, 8800000000 + a * 10, a, k.merchant, 1,
       k.merchant_tenant, amt,
       CASE WHEN k.kind = 2 THEN amt WHEN k.kind = 1 THEN -amt
            WHEN k.kind = 8 AND k.wallet = 0 THEN amt ELSE 0 END,
       CASE WHEN k.kind = 8 AND k.wallet = 1 THEN amt ELSE 0 END,
       CASE WHEN k.kind = 2 THEN -amt WHEN k.kind = 1 THEN amt ELSE -amt END,
       0, 0, 0, 0, extract(epoch FROM ts)::bigint, ts
  FROM generate_series($1::bigint, $2::bigint) AS g
 CROSS JOIN LATERAL (SELECT (g % $3) + 1 AS a, 100 + (g * 7919) % 2500 AS amt,
                            $4::timestamptz + ($5::double precision * (g - $1) / ($2 - $1 + 1))
                                * interval '1 second' AS ts) v
 CROSS JOIN LATERAL (SELECT
        CASE WHEN g % 100 < 2 THEN 2 WHEN g % 100 IN (2, 3) THEN 8 ELSE 1 END AS kind,
        CASE WHEN g % 100 = 2 THEN 2 WHEN g % 100 = 3 THEN 7
             WHEN g % 20 < 15 THEN 101 + g % 20 ELSE 201 + g % 20 END AS merchant,
        CASE WHEN g % 100 IN (2, 3) OR g % 20 < 15 THEN 1 ELSE 2 END AS merchant_tenant,
        CASE WHEN g % 100 = 3 THEN 1 ELSE 0 END AS wallet) k
"""


async def _seed(conn: asyncpg.Connection, accounts: int) -> None:
    await seed_site(conn, SeedPlan(accounts=accounts, terminals=TERMINALS, with_limits=False))
    await conn.executemany(
        "INSERT INTO merchants (id, tenant_id, name, kind, fee_rate_bp, settlement_cycle)"
        " VALUES ($1, $2, $3, 'canteen', $4, $5)",
        [(101 + i, 1, f"till {i}", 30 + i, ("daily", "weekly", "monthly")[i % 3])
         for i in range(15)] + [(201 + i, 2, f"east till {i}", 60, "daily")
                                for i in range(15, 20)])
    await conn.execute(
        "INSERT INTO system_accounts VALUES (1, 'cash_desk', 2), (1, 'subsidy_fund', 7)")


async def _generate(conn: asyncpg.Connection, first: int, rows: int, t0: dt.datetime,
                    span_s: float, accounts: int) -> None:
    done = 0
    while done < rows:
        n = min(CHUNK_ROWS, rows - done)
        lo = first + done
        # Each chunk spreads over its share of the span, so chunks stay in time order.
        start = t0 + dt.timedelta(seconds=span_s * done / rows)
        await conn.execute(_ROWS_SQL.format(terminals=TERMINALS), lo, lo + n - 1, accounts,
                           start, span_s * n / rows)
        done += n
        print(f"  {done:,} of {rows:,} rows", file=sys.stderr, flush=True)


async def main(args: argparse.Namespace) -> dict[str, object]:
    dsn = await fresh_database(args.dsn, DATABASE)
    conn = await asyncpg.connect(dsn)
    try:
        await _seed(conn, args.accounts)
        offset = await conn.fetchval("SELECT utc_offset_s FROM tenants WHERE id = 1")
        now = await conn.fetchval("SELECT now()")
        local_today = (now + dt.timedelta(seconds=offset)).date()
        day = local_today - dt.timedelta(days=3)
        start, end = day_bounds(day, offset, 0)
        t_gen = time.perf_counter()
        before = args.other_rows // 2
        await _generate(conn, 1, before, start - dt.timedelta(days=1), 86_399.0, args.accounts)
        await _generate(conn, before + 1, args.rows, start, 86_399.0, args.accounts)
        await _generate(conn, before + args.rows + 1, args.other_rows - before, end, 86_399.0,
                        args.accounts)
        await conn.execute("VACUUM ANALYZE journal")
        await conn.execute("SELECT brin_summarize_new_values('journal_committed_at')")
        generation_s = time.perf_counter() - t_gen
        times = []
        digests = set()
        for _ in range(args.runs):
            t = time.perf_counter()
            s = await compute_settlement(conn, 1, day)
            times.append(time.perf_counter() - t)
            digests.add(hashlib.sha256(encode(s)).hexdigest())
        assert len(digests) == 1, "runs gave different figures"
        assert s.journal_rows == args.rows, (s.journal_rows, args.rows)
        assert s.balanced
        plan = await conn.fetch("EXPLAIN " + "SELECT 1 FROM journal j WHERE j.committed_at >= $1"
                                " AND j.committed_at < $2", start, end)
        return {
            "rows_in_day": args.rows, "rows_other_days": args.other_rows,
            "accounts": args.accounts, "generation_seconds": round(generation_s, 1),
            "settlement_seconds": [round(x, 2) for x in times],
            "settlement_seconds_min": round(min(times), 2),
            "merchants": s.totals.merchants, "net_fen": s.totals.net_fen,
            "figures_sha256": digests.pop(), "balanced": s.balanced,
            "scan": plan[0][0], "server_version": await conn.fetchval("SHOW server_version"),
            "max_parallel_workers_per_gather": await conn.fetchval(
                "SHOW max_parallel_workers_per_gather"),
        }
    finally:
        await conn.close()
        if not args.keep:
            admin = await asyncpg.connect(args.dsn)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
            finally:
                await admin.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dsn", default=os.environ.get("ONECARD_DSN",
                                                   "postgresql://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--other-rows", type=int, default=1_000_000)
    p.add_argument("--accounts", type=int, default=100_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", help="write the figures as JSON to this path")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards")
    options = p.parse_args()
    out = asyncio.run(main(options))
    text = msgspec.json.format(msgspec.json.encode(out))
    print(text.decode())
    if options.json:
        Path(options.json).write_bytes(text)
