"""Latency over time under half load, beside the CPU of every process that shares the cores.

    python bench/latency_timeline.py [--dsn DSN] [--seconds 20] [--json PATH]
                                     [--setting "name = value"]...

The phases of `onecard bench` (1,000 terminals: saturation, then an open loop at half that
rate), but with one row per second of the open loop: answers, p99 and max latency, the CPU share
of the switch, the generator and PostgreSQL, and whether an autovacuum worker ran; then the
switch's `journal.slow_commit` lines (its threshold lowered to 20 ms here). This is how the
stalls in docs/benchmarks.md were told apart. `--setting` runs ALTER SYSTEM on the server first
(reloadable settings only), to test one PostgreSQL setting against another on the same script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest import CardPool, LoadGenerator, TerminalSpec
from onecard.bench import BenchOptions, _prepare
from onecard.harness import SwitchProcess
from protocols import ocp


def _postgres_processes(user: str | None) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["name", "username", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        is_postgres = "postgres" in (p.info["name"] or "") or cmd.startswith("postgres:")
        if is_postgres and (user is None or p.info["username"] == user):
            out.append(p)
    return out


async def _sample(procs: dict[str, list[psutil.Process]], t0: float, rows: list[dict[str, float]],
                  pg_user: str | None) -> None:
    last: dict[str, float] = {}
    while True:
        procs["postgres"] = _postgres_processes(pg_user)  # autovacuum workers come and go
        row: dict[str, float] = {"t": round(time.perf_counter() - t0, 1)}
        for name, group in procs.items():
            total = 0.0
            for p in group:
                try:
                    c = p.cpu_times()
                    total += c.user + c.system
                except psutil.Error:
                    pass
            row[f"{name}_cpu_pct"] = round(100 * (total - last.get(name, total)))
            last[name] = total
        row["autovacuum"] = sum(
            1 for p in procs["postgres"] if "autovacuum worker" in " ".join(p.cmdline() or [])
        ) if procs["postgres"] else 0
        rows.append(row)
        await asyncio.sleep(1.0)


async def _run(args: argparse.Namespace) -> dict[str, object]:
    private = None
    admin = args.dsn
    pg_user = None
    if not admin:
        from onecard.privatepg import start_private_postgres

        private = start_private_postgres(
            Path(tempfile.mkdtemp(prefix="onecard-timeline-pg-")) / "pgdata", delete=True
        )
        admin, pg_user = private.dsn, "pgserver"
    try:
        if args.setting:
            conn = await asyncpg.connect(admin)
            for setting in args.setting:
                await conn.execute(f"ALTER SYSTEM SET {setting}")
            await conn.execute("SELECT pg_reload_conf()")
            await conn.close()
        dsn, cards, terminals = await _prepare(admin, BenchOptions(terminals=1000))
        master = os.urandom(32)
        switch = SwitchProcess(dsn, master.hex(), extra_env={"ONECARD_LOG_LEVEL": "warning",
                                                             "ONECARD_COMMIT_SLOW_SECONDS": "0.02"})
        switch.start()
        try:
            gen = LoadGenerator(switch.host, switch.port,
                                [TerminalSpec(t, ocp.derive_terminal_key(master, t, 1))
                                 for t in terminals], CardPool(cards=cards))
            await gen.connect()
            sat = await gen.closed_loop(args.seconds, depth=1, warmup_seconds=2)
            assert switch.proc is not None
            procs = {"switch": [psutil.Process(switch.proc.pid)], "generator": [psutil.Process()],
                     "postgres": []}
            samples: list[dict[str, float]] = []
            t0 = time.perf_counter()
            sampler = asyncio.create_task(_sample(procs, t0, samples, pg_user))
            opn = await gen.open_loop(args.seconds, sat.approved_tps / 2)
            sampler.cancel()
            gen.close()
        finally:
            switch.stop()
        slow = [json.loads(line) for line in switch.log_tail(10_000).splitlines()
                if "journal.slow_commit" in line]
    finally:
        if private is not None:
            private.stop()
    by_second = {b["second"]: b for b in opn.timeline}
    rows = []
    for s in samples[1:]:
        b = by_second.get(int(s["t"]) - 1, {})
        rows.append({**s, "answered": b.get("answered"), "p99_ms": b.get("p99_ms"),
                     "max_ms": b.get("max_ms")})
    return {"durable_tps": sat.approved_tps, "offered_tps": opn.offered_tps,
            "p50_ms": opn.p50_ms, "p99_ms": opn.p99_ms, "p999_ms": opn.p999_ms,
            "settings": args.setting or [], "seconds": rows, "slow_commits": slow}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("ONECARD_DSN"))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--setting", action="append", help='e.g. "wal_sync_method = fdatasync"')
    parser.add_argument("--json")
    args = parser.parse_args()
    result = asyncio.run(_run(args))
    print(f"durable {result['durable_tps']:,.0f}/s; open loop at {result['offered_tps']:,.0f}/s:"
          f" p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, p99.9 {result['p999_ms']} ms")
    print(f"{'t':>5} {'answers':>8} {'p99 ms':>8} {'max ms':>8} {'switch%':>8} {'gen%':>6}"
          f" {'pg%':>5} {'autovac':>7}")
    for r in result["seconds"]:  # type: ignore[attr-defined]
        print(f"{r['t']:>5} {r['answered'] or 0:>8} {r['p99_ms'] or 0:>8} {r['max_ms'] or 0:>8}"
              f" {r['switch_cpu_pct']:>8} {r['generator_cpu_pct']:>6} {r['postgres_cpu_pct']:>5}"
              f" {r['autovacuum']:>7}")
    for s in result["slow_commits"]:  # type: ignore[attr-defined]
        print(f"slow commit at {s['timestamp']}: {s['rows']} rows, {s['seconds'] * 1000:.1f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
