"""Start-up time of the switch: recover 1,000,000 accounts and 10,000,000 journal rows written
after the last checkpoint, with the switch's own `recover()` against a real PostgreSQL.

    python bench/bench_recovery.py [--dsn DSN] [--accounts 1000000] [--rows 10000000] [--json PATH]

The journal is made by the real balance cache (purchases from 1,000 terminals over every
account), COPYed into a fresh database, and a checkpoint is stored before the measured rows. The
measured figure is the wall time of `switch.recover` (master data + checkpoint + replay), which
is what stands between a crash and the first answer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import asyncpg
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger_ext import JOURNAL_COLUMNS, Ledger
from onecard.harness import fresh_database
from switch import recover

CHUNK_ROWS = 200_000
T0 = 1_790_000_000


async def _seed(conn: asyncpg.Connection, accounts: int) -> None:
    await conn.execute("INSERT INTO tenants (id, name) VALUES (1, 'bench')")
    await conn.execute("INSERT INTO identity_classes (id, name) VALUES (1, 'any')")
    per = 1_000_000
    await conn.execute(
        "INSERT INTO merchants (id, tenant_id, name, kind, opening_balance_fen) VALUES"
        " (1, 1, 'opening', 'system', $1), (2, 1, 'canteen', 'canteen', 0)",
        -per * accounts,
    )
    await conn.execute(
        "INSERT INTO accounts (id, tenant_id, class_id, opening_main_fen, opening_subsidy_fen)"
        " SELECT g, 1, 1, $1, 0 FROM generate_series(1, $2) g",
        per, accounts,
    )
    await conn.execute(
        "INSERT INTO cards (card_no, account_id) SELECT g + 100000000, g"
        " FROM generate_series(1, $1) g",
        accounts,
    )


def _ledger(accounts: int) -> Ledger:
    ledger = Ledger(accounts + 1, 8)
    ledger.configure_tenant(1, 28800, [])
    ledger.configure_class(1, 0, 0, 0, 0, 0)
    ledger.open_merchant(1, 1, 0, 0, 0, -1_000_000 * accounts)
    ledger.open_merchant(2, 1, 0, 0, 0, 0)
    for a in range(1, accounts + 1):
        ledger.open_account(a, 1, 1, 0, 1_000_000, 0)
        ledger.bind_card(a + 100_000_000, a)
    return ledger


async def _run(dsn_admin: str, accounts: int, rows: int) -> dict[str, float]:
    dsn = await fresh_database(dsn_admin, "onecard_recovery_bench")
    conn = await asyncpg.connect(dsn)
    figures: dict[str, float] = {"accounts": accounts, "rows": rows}
    try:
        await _seed(conn, accounts)
        ledger = _ledger(accounts)
        # The checkpoint the rows come after (as the switch writes it).
        state = ledger.snapshot()
        balances = ledger.account_balances()
        merchants = ledger.merchant_balances()
        await conn.execute(
            "INSERT INTO checkpoints (lsn, state, account_ids, main_fen, subsidy_fen,"
            " merchant_ids, merchant_balance_fen, total_fen) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
            ledger.lsn, state, [b[0] for b in balances], [b[1] for b in balances],
            [b[2] for b in balances], [m[0] for m in merchants], [m[1] for m in merchants],
            ledger.total_fen(),
        )
        started = time.perf_counter()
        made = 0
        seq = [0] * 1001
        while made < rows:
            chunk = []
            for i in range(made, min(rows, made + CHUNK_ROWS)):
                terminal = 1 + i % 1000
                seq[terminal] += 1
                account = 1 + (i * 7919) % accounts
                o = ledger.purchase(terminal, seq[terminal], account + 100_000_000, 2,
                                    1 + i % 97, T0 + i // 50_000)
                chunk.append(o.journal_row())
            await conn.copy_records_to_table("journal", records=chunk,
                                             columns=list(JOURNAL_COLUMNS))
            made += len(chunk)
            print(f"\r  journal rows written: {made:,}", end="", flush=True)
        print()
        figures["write_seconds"] = round(time.perf_counter() - started, 1)
        await conn.execute("VACUUM ANALYZE journal")
        expected_total = ledger.total_fen()
        expected_lsn = ledger.lsn
        del ledger
        started = time.perf_counter()
        recovered, _master, report = await recover(conn, accounts + 1, 8)
        figures["recovery_seconds"] = round(time.perf_counter() - started, 2)
        figures["replayed_rows"] = report.replayed_rows
        figures["replay_rows_per_second"] = round(report.replayed_rows / report.seconds)
        assert recovered.lsn == expected_lsn and recovered.total_fen() == expected_total == 0
    finally:
        await conn.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("ONECARD_DSN"))
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--json")
    args = parser.parse_args()
    private = None
    dsn = args.dsn
    if not dsn:
        import tempfile

        from onecard.privatepg import start_private_postgres

        private = start_private_postgres(
            Path(tempfile.mkdtemp(prefix="onecard-recovery-pg-")) / "pgdata", delete=True
        )
        dsn = private.dsn
    try:
        figures = asyncio.run(_run(dsn, args.accounts, args.rows))
    finally:
        if private is not None:
            private.stop()
    out = msgspec.json.format(msgspec.json.encode(figures))
    print(out.decode())
    if args.json:
        Path(args.json).write_bytes(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
