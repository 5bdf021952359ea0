"""Sizing figures of docs/deployment.md ("Sizing for 150,000 cards"): a seeded site of 150,000
cards, the switch's memory and start-up time at two balance-cache sizes, and the journal's bytes
per row after a burst of purchases.

    python bench/bench_sizing.py [--dsn SERVER_DSN] [--accounts 150000] [--terminals 600]

Uses (and drops and re-creates) the database `onecard_sizing` on the server. The switch runs
without the change feed (nothing changes master data here).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest import CardPool, LoadGenerator, TerminalSpec
from onecard.harness import SwitchProcess, fresh_database, run_fast
from onecard.seed import SeedPlan, seed_site
from protocols import ocp

DATABASE = "onecard_sizing"
SIZES = (400_000, 1_000_000)
BURST_SECONDS = 10.0


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return round(kib / 1024, 1)


async def measure(server_dsn: str, accounts: int, terminals: int) -> dict[str, object]:
    dsn = await fresh_database(server_dsn, DATABASE)
    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    seed = await seed_site(conn, SeedPlan(accounts=accounts, terminals=terminals))
    out: dict[str, object] = {"accounts": seed.accounts, "cards": len(seed.cards),
                              "seed_seconds": round(time.perf_counter() - started, 1)}
    master = os.urandom(32)
    for n, accounts_max in enumerate(SIZES):
        if n:
            # The checkpoints fit the other size: docs/deployment.md's remedy.
            await conn.execute("DELETE FROM checkpoints")
        started = time.perf_counter()
        switch = SwitchProcess(dsn, master.hex(), extra_env={
            "ONECARD_ACCOUNTS_MAX": str(accounts_max), "ONECARD_CHANGEFEED": "false"}).start()
        assert switch.proc is not None
        out[f"start_seconds_{accounts_max}"] = round(time.perf_counter() - started, 1)
        out[f"rss_mib_{accounts_max}"] = rss_mib(switch.proc.pid)
        if n == 0:
            fixed = set(seed.fixed_price_terminals)
            specs = [TerminalSpec(t, ocp.derive_terminal_key(master, t, 1), fixed_price=t in fixed)
                     for t in seed.terminals]
            gen = LoadGenerator(switch.host, switch.port, specs,
                                CardPool(cards=seed.cards, amount_fen_min=300,
                                         amount_fen_max=2500))
            await gen.connect()
            report = await gen.closed_loop(BURST_SECONDS, depth=1)
            gen.close()
            out["burst_approved_tps"] = round(report.approved_tps)
            out["rss_mib_after_burst"] = rss_mib(switch.proc.pid)
        if switch.stop() != 0:
            raise RuntimeError(switch.log_tail())
    await conn.execute("VACUUM ANALYZE journal")
    rows = await conn.fetchval("SELECT count(*) FROM journal")
    total = await conn.fetchval("SELECT pg_total_relation_size('journal')")
    heap = await conn.fetchval("SELECT pg_relation_size('journal')")
    await conn.close()
    out.update(journal_rows=rows, journal_bytes_per_row=round(total / rows),
               journal_heap_bytes_per_row=round(heap / rows))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres",
                   help="a PostgreSQL server (any database on it)")
    p.add_argument("--accounts", type=int, default=150_000)
    p.add_argument("--terminals", type=int, default=600)
    args = p.parse_args()
    print(json.dumps(run_fast(measure(args.dsn, args.accounts, args.terminals)), indent=1))


if __name__ == "__main__":
    main()
