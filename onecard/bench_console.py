"""`onecard bench`'s console phase: the admin API process against the bench database, under
simulated operators and open live streams, while the tills buy at a steady open-loop rate.

Two windows of CONSOLE_SECONDS at the same purchase rate on the same switch: first without the
console (the admin API up and idle), then with CONSOLE_OPERATORS operators (asyncio HTTP clients
with keep-alive cycling through the main pages' data calls, about a page a second each) and
CONSOLE_STREAMS live streams (sales, alarms, operations) open, and a probe till buying every
0.1 s whose purchases are matched against the sales streams' events (the live lag). The console
side runs in a process of its own (`python -m onecard.bench_console`, a plan on stdin, `ready`
and then its figures on stdout), so the purchases' generator keeps its core.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from typing import Final

import asyncpg
import msgspec

from loadtest import CardPool, LoadGenerator, TerminalSpec
from onecard.console_probe import ConsoleLoad, ConsoleLoadPlan, percentile, run_console_load
from onecard.demo_users import create_demo_users
from onecard.harness import AdminProcess, SwitchProcess, free_port, process_cpu_seconds, run_fast
from protocols import ocp

CONSOLE_SECONDS: Final = 8.0
"""Each window's length (at most: --seconds is shorter)."""
CONSOLE_OPERATORS: Final = 20
CONSOLE_STREAMS: Final = 50
CONSOLE_RATE_MAX: Final = 5_000.0
"""Purchases per second during the phase: half the open loop's rate, at most this."""
HURT_RATIO: Final = 1.5
"""purchase_p99 with the console over without it above this: the console hurts the tills."""


class ConsoleBench(msgspec.Struct):
    seconds: float
    operators: int
    purchase_rate: float
    console_requests_per_s: float
    console_p50_ms: float
    console_p99_ms: float
    console_pages: dict[str, dict[str, float]]
    """Per page: p50_ms, p99_ms, n (page loads: every data call of the page, in order)."""
    console_failed_pages: int
    console_live_lag_p50_ms: float
    console_live_lag_p99_ms: float
    console_live_lag_samples: int
    console_live_streams: int
    console_stream_events: int
    admin_cpu_pct: float
    purchase_p50_ms_without_console: float
    purchase_p99_ms_without_console: float
    purchase_p50_ms_with_console: float
    purchase_p99_ms_with_console: float
    purchase_p99_ratio: float
    """With over without: above HURT_RATIO the console hurts the tills (summary says so)."""
    loader_cpu_pct: float = 0.0
    """The simulated operators' and streams' own process (at nice 19: it stands for browsers
    on other machines), % of one core over the loaded window."""


def figures(load: ConsoleLoad, *, rate: float, operators: int, admin_cpu_pct: float,
            without: tuple[float, float], with_console: tuple[float, float]) -> ConsoleBench:
    """The phase's figures from the console side's raw samples and the two windows'
    purchase latencies ((p50, p99) in ms)."""
    every = [ms for v in load.page_ms.values() for ms in v]
    return ConsoleBench(
        seconds=load.seconds, operators=operators, purchase_rate=round(rate, 1),
        console_requests_per_s=round(load.requests / load.seconds, 1) if load.seconds else 0.0,
        console_p50_ms=percentile(every, 0.5), console_p99_ms=percentile(every, 0.99),
        console_pages={name: {"p50_ms": percentile(v, 0.5), "p99_ms": percentile(v, 0.99),
                              "n": len(v)} for name, v in sorted(load.page_ms.items())},
        console_failed_pages=load.failed,
        console_live_lag_p50_ms=percentile(load.live_lags_ms, 0.5),
        console_live_lag_p99_ms=percentile(load.live_lags_ms, 0.99),
        console_live_lag_samples=len(load.live_lags_ms),
        console_live_streams=load.streams_open, console_stream_events=load.stream_events,
        admin_cpu_pct=round(admin_cpu_pct, 1),
        purchase_p50_ms_without_console=without[0], purchase_p99_ms_without_console=without[1],
        purchase_p50_ms_with_console=with_console[0],
        purchase_p99_ms_with_console=with_console[1],
        purchase_p99_ratio=round(with_console[1] / without[1], 2) if without[1] else 0.0)


async def run_console_phase(dsn: str, master: bytes, terminals: list[int], cards: list[int],
                            seconds: float, open_loop_rate: float) -> ConsoleBench:
    window = min(seconds, CONSOLE_SECONDS)
    rate = max(1.0, min(CONSOLE_RATE_MAX, open_loop_rate / 2))
    password = secrets.token_urlsafe(12)
    await create_demo_users(dsn, password)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE people")
    finally:
        await conn.close()
    metrics_port = free_port()
    switch = SwitchProcess(dsn, master.hex(), extra_env={
        "ONECARD_LOG_LEVEL": "warning", "ONECARD_METRICS_PORT": str(metrics_port)}).start()
    admin = None
    try:
        admin = AdminProcess(dsn, master.hex(), extra_env={
            "ONECARD_LOG_LEVEL": "warning",
            "ONECARD_ADMIN_APPROVER_COOLING_OFF_SECONDS": "0",
            "ONECARD_ADMIN_SWITCH_PORT": str(switch.port),
            "ONECARD_ADMIN_SWITCH_STATUS_URL": f"http://127.0.0.1:{metrics_port}"}).start()
        till, tills = terminals[0], terminals[1:]
        gen = LoadGenerator(switch.host, switch.port,
                            [TerminalSpec(t, ocp.derive_terminal_key(master, t, 1))
                             for t in tills], CardPool(cards=cards))
        await gen.connect()
        print(f"  console: tills at {rate:,.0f} purchases/s for {window:g} s without the "
              "console ...", flush=True)
        alone = await gen.open_loop(window, rate)
        plan = ConsoleLoadPlan(
            url=admin.url, password=password, dsn=dsn, switch_host=switch.host,
            switch_port=switch.port, till_id=till,
            till_key_hex=ocp.derive_terminal_key(master, till, 1).hex(), cards=cards[:1000],
            operators=CONSOLE_OPERATORS, streams=CONSOLE_STREAMS, seconds=window)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "onecard.bench_console", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE)
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(msgspec.json.encode(plan) + b"\n")
        await child.stdin.drain()
        child.stdin.close()
        async with asyncio.timeout(120):
            line = await child.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"the console load did not start: {line!r}")
        print(f"  console: {CONSOLE_OPERATORS} operators and {CONSOLE_STREAMS} live streams, "
              f"tills at {rate:,.0f}/s for {window:g} s ...", flush=True)
        cpu0, loader0, t0 = admin.cpu_seconds(), process_cpu_seconds(child.pid), time.monotonic()
        loaded = await gen.open_loop(window, rate)
        elapsed = time.monotonic() - t0
        admin_cpu_pct = 100.0 * (admin.cpu_seconds() - cpu0) / elapsed
        loader_cpu_pct = 100.0 * (process_cpu_seconds(child.pid) - loader0) / elapsed
        gen.close()
        async with asyncio.timeout(120):
            out = await child.stdout.read()
        if await child.wait() != 0:
            raise RuntimeError("the console load failed")
        load = msgspec.json.decode(out, type=ConsoleLoad)
    finally:
        if admin is not None:
            admin.stop()
        switch.stop()
    result = figures(load, rate=rate, operators=CONSOLE_OPERATORS, admin_cpu_pct=admin_cpu_pct,
                     without=(alone.p50_ms, alone.p99_ms),
                     with_console=(loaded.p50_ms, loaded.p99_ms))
    result = msgspec.structs.replace(result, loader_cpu_pct=round(loader_cpu_pct, 1))
    print(f"  console: {result.console_requests_per_s:,.0f} requests/s, pages p50 "
          f"{result.console_p50_ms:.1f} / p99 {result.console_p99_ms:.1f} ms "
          f"({result.console_failed_pages} failed), live lag p50 "
          f"{result.console_live_lag_p50_ms:.0f} / p99 {result.console_live_lag_p99_ms:.0f} ms "
          f"over {result.console_live_streams} streams, admin API CPU "
          f"{result.admin_cpu_pct:.0f} % (the simulated operators' process "
          f"{result.loader_cpu_pct:.0f} %, at nice 19); purchases p99 "
          f"{result.purchase_p99_ms_with_console:.2f}"
          f" ms with the console, {result.purchase_p99_ms_without_console:.2f} ms without",
          flush=True)
    return result


def _main() -> int:
    # The operators' browsers are on other machines at a site: here their stand-in yields
    # the cores to the switch, the database and the admin API it measures.
    os.nice(19)
    plan = msgspec.json.decode(sys.stdin.buffer.readline(), type=ConsoleLoadPlan)

    def ready() -> None:
        sys.stdout.write("ready\n")
        sys.stdout.flush()

    load = run_fast(run_console_load(plan, ready))
    sys.stdout.buffer.write(msgspec.json.encode(load))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
