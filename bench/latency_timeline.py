"""Latency over time under half load, and where it goes, second by second.

    python bench/latency_timeline.py [--dsn DSN] [--seconds 20] [--json PATH]
        [--setting "name = value"]... [--switch-env NAME=VALUE]... [--pin] [--generator-nice N]
        [--terminals 1000] [--load 0.5]

The phases of `onecard bench` (1,000 terminals: saturation, then an open loop at half that
rate), with one row per second of the open loop (docs/benchmarks.md, "The latency tail"):
the generator's p50/p99/max; the switch's own view from its /metrics (end to end, waiting for
the commit before, its own commit, PostgreSQL's part of a commit, event-loop lag, rows per
commit); the CPU and run-queue wait (runnable, not running: /proc/<pid>/task/*/schedstat) of
the switch, the generator and the journal's PostgreSQL backend; `pg_stat_wal` (WAL flushes and
their time, with track_wal_io_timing on for the run); the journal backend's wait events
(pg_stat_activity every 10 ms); then the switch's `journal.slow_commit` lines (threshold 20 ms).
Before the run, an fsync probe (8 KiB + fdatasync in a loop for 2 s in the data directory)
gives the disk's own flush latency. The sampling runs in a process of its own.

`--setting` runs ALTER SYSTEM on the server first (reloadable settings only); `--switch-env`
sets the switch's environment; `--pin` and `--generator-nice` try the scheduling hypotheses.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest import CardPool, LoadGenerator, TerminalSpec
from onecard.bench import BenchOptions, _prepare
from onecard.harness import SwitchProcess, free_port, run_fast
from onecard.probes import Sampler, fsync_probe
from protocols import ocp


async def _journal_backends(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["pid"] for r in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'onecard-switch-journal'")]
    finally:
        await conn.close()


async def _run(args: argparse.Namespace) -> dict[str, object]:
    private = None
    admin = args.dsn
    data_dir: str | None = None
    if not admin:
        from onecard.privatepg import start_private_postgres

        data_dir = str(Path(tempfile.mkdtemp(prefix="onecard-timeline-pg-")) / "pgdata")
        private = start_private_postgres(Path(data_dir), delete=True)
        admin = private.dsn
    try:
        conn = await asyncpg.connect(admin)
        try:
            settings = [*(args.setting or []), "track_wal_io_timing = on"]
            for setting in settings:
                await conn.execute(f"ALTER SYSTEM SET {setting}")
            await conn.execute("SELECT pg_reload_conf()")
            if data_dir is None:
                with contextlib.suppress(asyncpg.PostgresError):
                    data_dir = await conn.fetchval("SHOW data_directory")
        finally:
            await conn.close()
        fsync = fsync_probe(data_dir if data_dir and os.access(data_dir, os.W_OK) else None)
        print(f"fsync probe ({fsync['directory']}): {fsync['calls']} calls, p50 {fsync['p50_ms']}"
              f" ms, p99 {fsync['p99_ms']} ms, p99.9 {fsync['p999_ms']} ms, max {fsync['max_ms']}"
              " ms", flush=True)
        dsn, cards, terminals = await _prepare(admin, BenchOptions(terminals=args.terminals))
        master = os.urandom(32)
        metrics_port = free_port()
        env = {"ONECARD_LOG_LEVEL": "warning", "ONECARD_COMMIT_SLOW_SECONDS": "0.02",
               "ONECARD_METRICS_PORT": str(metrics_port)}
        env.update(dict(kv.split("=", 1) for kv in args.switch_env or []))
        switch = SwitchProcess(dsn, master.hex(), extra_env=env)
        switch.start()
        assert switch.proc is not None
        if args.pin:  # the switch on the first core, the generator on the second
            os.sched_setaffinity(switch.proc.pid, {0})
            os.sched_setaffinity(0, {1})
        if args.generator_nice:
            os.nice(args.generator_nice)
        try:
            gen = LoadGenerator(switch.host, switch.port,
                                [TerminalSpec(t, ocp.derive_terminal_key(master, t, 1))
                                 for t in terminals], CardPool(cards=cards))
            await gen.connect()
            sat = await gen.closed_loop(args.seconds, depth=1, warmup_seconds=2)
            if args.realtime:  # the scheduling hypothesis: never wait for a core
                pids = [switch.proc.pid, *await _journal_backends(dsn)]
                for pid in pids:
                    os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(10))
                print(f"SCHED_FIFO for the switch and the journal's backend: {pids}")
            sampler = Sampler(dsn, {"switch": switch.proc.pid, "generator": os.getpid()},
                              metrics_url=f"http://127.0.0.1:{metrics_port}").start()
            opn = await gen.open_loop(args.seconds, sat.approved_tps * args.load)
            samples = sampler.stop()
            gen.close()
        finally:
            switch.stop()
        slow = [json.loads(line) for line in switch.log_tail(10_000).splitlines()
                if "journal.slow_commit" in line]
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute("ALTER SYSTEM RESET track_wal_io_timing")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()
    finally:
        if private is not None:
            private.stop()
    by_second = {b["second"]: b for b in opn.timeline}
    rows = []
    for s in samples[1:]:
        b = by_second.get(int(s["t"]) - 1, {})
        rows.append({**s, "answered": b.get("answered"), "p50_ms": b.get("p50_ms"),
                     "p99_ms": b.get("p99_ms"), "max_ms": b.get("max_ms")})
    return {"durable_tps": sat.approved_tps, "offered_tps": opn.offered_tps,
            "p50_ms": opn.p50_ms, "p99_ms": opn.p99_ms, "p999_ms": opn.p999_ms,
            "generator_cpu_pct": opn.generator_cpu_pct,
            "send_lag_p50_ms": opn.send_lag_p50_ms, "send_lag_p99_ms": opn.send_lag_p99_ms,
            "cores": len(os.sched_getaffinity(0)) if not args.pin else 2,
            "fsync": fsync, "settings": args.setting or [], "switch_env": args.switch_env or [],
            "pin": args.pin, "generator_nice": args.generator_nice, "realtime": args.realtime,
            "seconds": rows, "slow_commits": slow}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("ONECARD_DSN"))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--setting", action="append", help='e.g. "wal_sync_method = fdatasync"')
    parser.add_argument("--terminals", type=int, default=1000)
    parser.add_argument("--load", type=float, default=0.5,
                        help="open-loop rate as a share of the saturation rate (0.5)")
    parser.add_argument("--switch-env", action="append", metavar="NAME=VALUE",
                        help="an environment setting of the switch, e.g. "
                             "ONECARD_GROUP_COMMIT_WINDOW_SECONDS=0.001")
    parser.add_argument("--pin", action="store_true",
                        help="pin the switch to core 0 and the generator to core 1")
    parser.add_argument("--generator-nice", type=int, default=0,
                        help="run the generator at this nice value (e.g. 10)")
    parser.add_argument("--realtime", action="store_true",
                        help="run the switch and the journal's PostgreSQL backend SCHED_FIFO "
                             "(root): what the latency is when they never wait for a core")
    parser.add_argument("--json")
    args = parser.parse_args()
    result = run_fast(_run(args))  # uvloop, as `onecard bench` runs its generator
    print(f"durable {result['durable_tps']:,.0f}/s; open loop at {result['offered_tps']:,.0f}/s:"
          f" p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, p99.9 {result['p999_ms']} ms")
    print(f"the generator wrote requests late by p50 {result['send_lag_p50_ms']} ms, p99 "
          f"{result['send_lag_p99_ms']} ms (its own loop); its CPU {result['generator_cpu_pct']} %")
    cols = [("t", "t"), ("answers", "answered"), ("p50", "p50_ms"), ("p99", "p99_ms"),
            ("max", "max_ms"), ("sw e2e50", "switch_end_to_end_p50_ms"),
            ("sw e2e99", "switch_end_to_end_p99_ms"), ("queue50", "switch_commit_queue_p50_ms"),
            ("queue99", "switch_commit_queue_p99_ms"), ("commit99", "switch_commit_p99_ms"),
            ("pg99", "switch_group_commit_postgres_p99_ms"), ("lag99", "switch_loop_lag_p99_ms"),
            ("rows", "switch_rows_per_commit"), ("sw cpu", "switch_cpu_ms"),
            ("sw runq", "switch_runq_ms"), ("gen cpu", "generator_cpu_ms"),
            ("gen runq", "generator_runq_ms"), ("jb cpu", "journal_backend_cpu_ms"),
            ("jb runq", "journal_backend_runq_ms"), ("syncs", "wal_syncs"),
            ("sync ms", "wal_sync_ms"), ("write ms", "wal_write_ms")]
    print("per second of the open loop (latency in ms; cpu and runq: ms of the second on a core"
          " and waiting for one; syncs and sync ms: pg_stat_wal):")
    print(" ".join(f"{h:>8}" for h, _ in cols))
    for r in result["seconds"]:  # type: ignore[attr-defined]
        print(" ".join(f"{r.get(k) if r.get(k) is not None else '-':>8}" for _, k in cols))
    waits: dict[str, int] = {}
    for r in result["seconds"]:  # type: ignore[attr-defined]
        for k, v in r.get("journal_waits", {}).items():
            waits[k] = waits.get(k, 0) + v
    total = sum(waits.values()) or 1
    print("journal backend, sampled every 10 ms: " + ", ".join(
        f"{k} {100 * v / total:.0f} %" for k, v in sorted(waits.items(), key=lambda kv: -kv[1])))
    samples = [w for r in result["seconds"]  # type: ignore[attr-defined]
               for w in r.get("journal_wait_samples", [])]
    for s in result["slow_commits"]:  # type: ignore[attr-defined]
        # What the journal's backend was doing while this commit was under way (10 ms samples).
        end = datetime.fromisoformat(s["timestamp"].replace("Z", "+00:00")).timestamp()
        during: dict[str, int] = {}
        for t, event in samples:
            if end - s["seconds"] - 0.01 <= t <= end:
                during[event] = during.get(event, 0) + 1
        s["journal_waits_during"] = during
        print(f"slow commit at {s['timestamp']}: {s['rows']} rows, {s['seconds'] * 1000:.1f} ms;"
              " the journal backend meanwhile: "
              + (", ".join(f"{k} x{v}" for k, v in sorted(during.items(), key=lambda kv: -kv[1]))
                 or "not sampled"))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
