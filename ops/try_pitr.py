"""Point-in-time recovery as docs/deployment.md ("Backups and restore") describes it, tried on a
scratch PostgreSQL cluster of its own, from start to end:

    sudo python ops/try_pitr.py [--bindir /usr/lib/postgresql/15/bin] [--port 55432]

initdb a cluster (as the user postgres) with WAL archiving on; seed 5,000 cardholders; a burst
of purchases; `pg_basebackup`; another burst that ends with the switch killed (no final
checkpoint); the cluster stopped `immediate` and set aside as lost; the base backup restored with
`restore_command` and `recovery.signal`. It then checks that the journal has every row, that the
switch recovers by replaying the rows after the base backup's checkpoint, that the conservation
audit holds, and prints the WAL written per journal row. Everything is in a temporary directory,
removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest import CardPool, LoadGenerator, TerminalSpec
from onecard.audit import audit_conservation
from onecard.harness import SwitchProcess, fresh_database, run_fast
from onecard.seed import SeedPlan, SeedResult, seed_site
from protocols import ocp


def as_postgres(*cmd: str) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True)


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


async def burst(dsn: str, master: bytes, seed: SeedResult, seconds: float, *,
                kill: bool = False) -> None:
    switch = SwitchProcess(dsn, master.hex(), extra_env={"ONECARD_CHANGEFEED": "false"}).start()
    fixed = set(seed.fixed_price_terminals)
    specs = [TerminalSpec(t, ocp.derive_terminal_key(master, t, 1), fixed_price=t in fixed)
             for t in seed.terminals]
    gen = LoadGenerator(switch.host, switch.port, specs,
                        CardPool(cards=seed.cards, amount_fen_min=300, amount_fen_max=2500))
    await gen.connect()
    await gen.closed_loop(seconds, depth=1)
    gen.close()
    if kill:
        switch.kill()  # the machine dies with the switch: no final checkpoint
    elif switch.stop() != 0:
        raise RuntimeError(switch.log_tail())


async def journal_top(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT count(*) AS n, coalesce(max(lsn), 0) AS top"
                                  " FROM journal")
        return int(row["n"]), int(row["top"])
    finally:
        await conn.close()


async def wait_until_open(dsn: str, deadline_seconds: float = 120.0) -> None:
    """Until PostgreSQL has replayed the archive and left recovery."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            conn = await asyncpg.connect(dsn)
            try:
                if not await conn.fetchval("SELECT pg_is_in_recovery()"):
                    return
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the restored cluster did not finish recovery")
        await asyncio.sleep(0.5)


async def trial(bindir: str, port: int, top: Path) -> None:
    data, base, restored, wal = top / "data", top / "base", top / "restored", top / "wal"
    wal.mkdir()
    for path in (top, wal):
        shutil.chown(path, "postgres", "postgres")
    as_postgres(f"{bindir}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust")
    append(data / "postgresql.conf",
           f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{top}'\n"
           "wal_level = replica\narchive_mode = on\n"
           f"archive_command = 'test ! -f {wal}/%f && cp %p {wal}/%f'\n")
    as_postgres(f"{bindir}/pg_ctl", "-D", str(data), "-l", str(top / "data.log"), "-w", "start")
    dsn = await fresh_database(f"postgresql://postgres@127.0.0.1:{port}/postgres", "onecard")
    conn = await asyncpg.connect(dsn)
    seed = await seed_site(conn, SeedPlan(accounts=5_000, terminals=50))
    await conn.close()
    master = os.urandom(32)
    await burst(dsn, master, seed, 3)
    as_postgres(f"{bindir}/pg_basebackup", "-h", "127.0.0.1", "-p", str(port), "-U",
                "postgres", "-D", str(base), "-Fp", "-Xs", "--checkpoint=fast")
    conn = await asyncpg.connect(dsn)
    wal_at_base = await conn.fetchval("SELECT pg_current_wal_lsn()")
    await conn.close()
    rows_at_base, _ = await journal_top(dsn)
    await burst(dsn, master, seed, 5, kill=True)  # purchases only the WAL archive holds
    rows, newest = await journal_top(dsn)
    conn = await asyncpg.connect(dsn)
    wal_bytes = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)",
                                    wal_at_base)
    await conn.execute("SELECT pg_switch_wal()")  # the last segment goes to the archive
    await conn.close()
    status = data / "pg_wal" / "archive_status"
    deadline = time.monotonic() + 60
    while any(p.suffix == ".ready" for p in status.iterdir()):
        if time.monotonic() > deadline:
            raise TimeoutError("archiving did not catch up")
        await asyncio.sleep(0.2)
    print(f"journal rows: {rows_at_base} at the base backup, {rows} (newest lsn {newest}) at the "
          f"loss; WAL per journal row since the base backup: "
          f"{wal_bytes / (rows - rows_at_base):.0f} bytes")
    as_postgres(f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop")
    as_postgres("cp", "-a", str(base), str(restored))
    append(restored / "postgresql.auto.conf", f"restore_command = 'cp {wal}/%f %p'\n")
    as_postgres("touch", str(restored / "recovery.signal"))
    as_postgres(f"{bindir}/pg_ctl", "-D", str(restored), "-l", str(top / "restored.log"), "-w",
                "start")
    try:
        await wait_until_open(dsn)
        assert await journal_top(dsn) == (rows, newest), "the restore lost journal rows"
        switch = SwitchProcess(dsn, master.hex(), extra_env={"ONECARD_CHANGEFEED": "false"})
        switch.start()
        assert switch.stop() == 0, switch.log_tail()
        [recovered] = [line for line in switch.log_path.read_text().splitlines()
                       if '"switch.recovered"' in line]
        print("restored; the switch:", recovered)
        conn = await asyncpg.connect(dsn)
        report = await audit_conservation(conn)
        await conn.close()
        print("conserved:", report.conserved, "-", report.reason)
        assert report.conserved
    finally:
        as_postgres(f"{bindir}/pg_ctl", "-D", str(restored), "-m", "fast", "stop")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout
    p.add_argument("--bindir", default=bindir.strip() or "/usr/lib/postgresql/15/bin")
    p.add_argument("--port", type=int, default=55432)
    args = p.parse_args()
    top = Path(tempfile.mkdtemp(prefix="onecard-pitr-"))
    try:
        run_fast(trial(args.bindir, args.port, top))
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
