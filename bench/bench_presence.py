"""What terminal presence costs (docs/operations.md, "Terminals online"): a sign-on burst of
N terminals at once to a real switch, and the statement the journal writer sends for it.

    python bench/bench_presence.py [--dsn DSN] [--terminals 1000] [--rounds 3] [--json PATH]

Per round: N terminals (the loadtest client) sign on at once; `all_signed_on_s` is the time
until the last SignOnResult, `all_shown_online_s` until terminal_presence shows all of them
online; then they hang up. Then, without the switch, the statement itself on one connection
(as the writer sends it: BEGIN with synchronous_commit off, the write, COMMIT) for 1, 200
(PRESENCE_BATCH_MAX) and N entries, and the start-up sweep (`mark_all_offline`) of N rows.
Medians of 10 (20 for one entry), in ms. The database `onecard_bench_presence` is dropped
and made again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest import CardPool, LoadGenerator, TerminalSpec
from onecard.harness import SwitchProcess, fresh_database
from onecard.seed import SeedPlan, seed_site
from protocols import ocp
from switch import limits
from switch._presence import PresenceBatch, mark_all_offline


async def _until(conn: asyncpg.Connection, online: int, deadline_s: float = 60.0) -> None:
    async with asyncio.timeout(deadline_s):
        # Nothing to wait on but the table: poll it, under the deadline above.
        while await conn.fetchval(  # noqa: ASYNC110
                "SELECT count(*) FROM terminal_presence WHERE online") != online:
            await asyncio.sleep(0.002)


async def _statement_ms(conn: asyncpg.Connection, terminal_ids: list[int], times: int) -> float:
    seconds = []
    for n in range(times):
        batch = PresenceBatch()
        for tid in terminal_ids:
            batch.add(tid, n % 2 == 0, "127.0.0.1:40000", False)
        started = time.perf_counter()
        await batch.write(conn)
        seconds.append(time.perf_counter() - started)
    return round(statistics.median(seconds) * 1000, 3)


async def run(dsn_admin: str, terminals: int, rounds: int) -> dict[str, object]:
    dsn = await fresh_database(dsn_admin, "onecard_bench_presence")
    master = os.urandom(32)
    conn = await asyncpg.connect(dsn)
    out: dict[str, object] = {"terminals": terminals}
    switch: SwitchProcess | None = None
    try:
        seed = await seed_site(conn, SeedPlan(accounts=2_000, terminals=terminals))
        tids = list(seed.terminals)[:terminals]
        switch = SwitchProcess(dsn, master.hex()).start()
        specs = [TerminalSpec(t, ocp.derive_terminal_key(master, t, 1)) for t in tids]
        burst = []
        for _ in range(rounds):
            gen = LoadGenerator(switch.host, switch.port, specs, CardPool(cards=[]))
            started = time.perf_counter()
            await gen.connect(concurrency=terminals)
            signed = time.perf_counter() - started
            await _until(conn, len(tids))
            shown = time.perf_counter() - started
            burst.append({"all_signed_on_s": round(signed, 4),
                          "all_shown_online_s": round(shown, 4)})
            gen.close()
            await _until(conn, 0)
        out["bursts"] = burst
        switch.stop()
        switch = None
        out["write_1_ms"] = await _statement_ms(conn, tids[:1], 20)
        out[f"write_{limits.PRESENCE_BATCH_MAX}_ms"] = await _statement_ms(
            conn, tids[:limits.PRESENCE_BATCH_MAX], 10)
        out[f"write_{len(tids)}_ms"] = await _statement_ms(conn, tids, 10)
        await _statement_ms(conn, tids, 1)  # all online again, for the sweep
        started = time.perf_counter()
        await mark_all_offline(conn)
        out[f"mark_all_offline_{len(tids)}_ms"] = round((time.perf_counter() - started) * 1000, 3)
    finally:
        if switch is not None:
            switch.stop()
        await conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get(
        "ONECARD_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--terminals", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args.dsn, args.terminals, args.rounds))
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
