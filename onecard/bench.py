"""`onecard bench`: durable purchases per second and latency, against a real PostgreSQL.

One run measures, on the same server and with the same generator:
  1. saturation: N terminals in a closed loop (one request outstanding each), purchases only;
  2. latency under load: an open loop at half the saturation rate, latency from each request's
     scheduled send time (p50, p99, p99.9);
  2b. declines: the saturation loop again with DECLINE_SHARE of purchases on unknown cards
     (each decline is a journaled, durable answer like an approval);
  3. the conventional design behind the same protocol (onecard/conventional.py: one task and one
     SQL transaction per purchase through an asyncpg pool) at its best pool size among 8, 16,
     32, 64;
  4. the conventional design's ceiling with no protocol at all: the same SQL transaction driven
     by pgbench at its best client count among 8, 16, 32, 64;
  5. (before 3 and 4) the web console: the admin API under simulated operators and live
     streams while the tills buy at a steady rate (onecard/bench_console.py; --skip-console);
and the generator's own CPU share; and how busy the machine was apart from the bench (CPU steal,
other processes' CPU: onecard/machine_load.py) before the run and during each phase, with a
warning beside figures taken on a busy machine. A short summary goes to stdout and, with --json,
every figure to a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from loadtest import CardPool, LoadGenerator, TerminalSpec
from onecard.access_demo import READERS_PER_DOOR, seed_doors
from onecard.bench_bank import BankBench, run_bank_phases
from onecard.bench_console import HURT_RATIO, ConsoleBench, run_console_phase
from onecard.conventional import SETUP_SQL, ConventionalProcess
from onecard.harness import SwitchProcess, free_port, fresh_database, run_fast
from onecard.machine_load import LoadMeter, MachineLoad, Sample, combine, load_between
from onecard.probes import Sampler, fsync_probe
from onecard.seed import CANTEEN_FREE, SeedPlan, seed_site
from onecard.status import Samples, scrape, switch_figures
from protocols import ocp

BENCH_DATABASE = os.environ.get("ONECARD_BENCH_DATABASE", "onecard_bench")
"""The database the bench drops and recreates: ONECARD_BENCH_DATABASE names another, so two
benches on one server do not drop each other's."""
POOL_SIZES = (8, 16, 32, 64)
COMPARISON_SECONDS = 8.0
# The decline-heavy phase: this share of purchases names a card nobody issued.
DECLINE_SHARE = 0.2
QUIET_CHECK_SECONDS = 2.0
"""How long the machine's load is sampled before the run starts."""
LOAD_WINDOWS = {"before": "before the run", "saturation": "during saturation",
                "open_loop": "during the open loop",
                "conventional": "during the conventional design's runs",
                "doors": "during door saturation", "doors_open_loop": "during the doors' open loop",
                "mixed": "during the mixed open loop"}
"""The windows whose machine load the bench keeps (BenchResult.machine_load)."""

PGBENCH_SCRIPT = """\\set aid random(1, {accounts})
\\set amt random(100, 1500)
\\set neg -1 * :amt
BEGIN;
UPDATE conv_balances SET main_fen = main_fen - :amt WHERE account_id = :aid AND main_fen >= :amt;
INSERT INTO conv_journal (lsn, kind, code, terminal_id, txn_seq, ref_txn_seq, card_no, account_id, merchant_id, tenant_id, merchant_tenant_id, amount_fen, main_delta_fen, subsidy_delta_fen, merchant_delta_fen, held_delta_fen, main_fen, subsidy_fen, expires_s, now_s) VALUES (nextval('conv_lsn'), 1, 0, 0, currval('conv_lsn'), 0, :aid, :aid, {merchant}, 1, 1, :amt, :neg, 0, :amt, 0, 0, 0, 0, 0);
END;
"""


# Kiosks and bound bank cards of the bench site (the kiosk top-up phase).
BENCH_KIOSKS = 32
BENCH_BANK_CARDS = 256


class BenchOptions(msgspec.Struct):
    terminals: int = 1000
    seconds: float = 20.0
    json_path: str | None = None
    dsn: str | None = None
    accounts: int = 100_000
    skip_conventional: bool = False
    skip_doors: bool = False
    skip_console: bool = False
    database: str = BENCH_DATABASE
    """The database the bench drops and creates on the server of `dsn`: two benches on one
    server need two names, or each drops the other's."""


class BenchResult(msgspec.Struct):
    terminals: int
    seconds: float
    durable_tps: float
    saturation_p50_ms: float
    saturation_p99_ms: float
    offered_tps: float
    achieved_open_tps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    conventional_tps: float
    conventional_by_pool: dict[str, float]
    pgbench_tps: float
    pgbench_by_clients: dict[str, float]
    ratio: float
    ratio_pgbench: float
    generator_cpu_pct: float
    switch_cpu_pct: float
    switch_cpu_us_per_purchase: float
    switch_journal_rows_per_commit: float
    # The switch's own histograms (sampled requests) over the open loop: end to end inside the
    # switch, each stage, group commit latency, rows per commit. Latencies in ms.
    switch_metrics_open_loop: dict[str, float]
    # Saturation again with DECLINE_SHARE of purchases declined (UNKNOWN_CARD): every answer,
    # approved or declined, is durable; its ratio to durable_tps (target >= 0.85).
    durable_tps_declines: float
    declines_ratio: float
    decline_share: float
    # The switch's event-loop lag (how late a callback due now ran) per phase: p50, p99 and
    # the bound of the bucket holding the largest (ms); and the largest of the whole run.
    loop_lag_ms: dict[str, dict[str, float]]
    loop_lag_max_ms: float
    saturation_timeline: list[dict[str, float]]
    open_loop_timeline: list[dict[str, float]]
    fsync: str
    synchronous_commit: str
    postgres: str
    cpus: int
    # The cores this run could use (its CPU affinity): the switch, PostgreSQL and the generator
    # share them.
    cores: int
    # The disk's own flush latency, to set beside the commit latency (issue 14): 8 KiB written
    # and fdatasync'ed in a loop for 2 s in PostgreSQL's data directory (onecard/probes.py).
    fsync_p99_ms: float
    fsync_probe: dict[str, float | int | str]
    # Where the open loop's time went, medians over its seconds (onecard/probes.py): each
    # process's ms per second on a core and runnable but waiting for one (switch, generator,
    # the journal's PostgreSQL backend), WAL flushes per second and their ms (the ms only where
    # track_wal_io_timing is on: the private server sets it), and how late the generator itself
    # wrote its requests (p50, p99).
    open_loop_where: dict[str, float]
    # The machine apart from the bench (onecard/machine_load.py), by window: "before" the run,
    # "saturation", "open_loop", "conventional" (its measured windows, every pool size).
    machine_load: dict[str, MachineLoad]
    busy_machine: dict[str, list[str]]
    """The windows whose figures were taken on a busy machine, and why."""
    # Doors (docs/access.md): access decisions per second at saturation over the same number
    # of terminals (door controllers, a card at one of two readers), and the open loop at half
    # that rate; then a mixed open loop, half tills and half doors at the purchases' open-loop
    # rate, with each type's latency (purchases not slower per request than alone).
    door_tps: float = 0.0
    door_saturation_p99_ms: float = 0.0
    door_offered_tps: float = 0.0
    door_p50_ms: float = 0.0
    door_p99_ms: float = 0.0
    door_p999_ms: float = 0.0
    door_switch_cpu_us_per_decision: float = 0.0
    door_records_per_commit: float = 0.0
    mixed_offered_tps: float = 0.0
    mixed_purchase_p50_ms: float = 0.0
    mixed_purchase_p99_ms: float = 0.0
    mixed_access_p50_ms: float = 0.0
    mixed_access_p99_ms: float = 0.0
    door_open_loop_timeline: list[dict[str, float]] = msgspec.field(default_factory=list)
    # Kiosk top-ups against the instant bank simulator, and purchases with the bank link down
    # and reversal advices pending (onecard/bench_bank.py; targets: topup_tps >= 5,000,
    # durable_tps_bank_down within 10 % of durable_tps).
    topup_tps: float = 0.0
    topup_p99_ms: float = 0.0
    durable_tps_bank_down: float = 0.0
    bank_down_ratio: float = 0.0
    bank: BankBench | None = None
    # The web console (onecard/bench_console.py): the admin API under simulated operators and
    # open live streams while the tills buy at a steady rate; the tills' p99 with and without.
    console_requests_per_s: float = 0.0
    console_p50_ms: float = 0.0
    console_p99_ms: float = 0.0
    console_pages: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)
    console_live_lag_p50_ms: float = 0.0
    console_live_lag_p99_ms: float = 0.0
    console_live_streams: int = 0
    admin_cpu_pct: float = 0.0
    purchase_p99_ms_with_console: float = 0.0
    purchase_p99_ms_without_console: float = 0.0
    console: ConsoleBench | None = None


async def _settings(conn: asyncpg.Connection) -> tuple[str, str, str]:
    return (
        await conn.fetchval("SHOW fsync"),
        await conn.fetchval("SHOW synchronous_commit"),
        await conn.fetchval("SELECT version()"),
    )


async def _prepare(admin_dsn: str, options: BenchOptions) -> tuple[str, list[int], list[int]]:
    dsn = await fresh_database(admin_dsn, options.database)
    conn = await asyncpg.connect(dsn)
    try:
        # Big balances and no limits: the benchmark measures throughput, not declines.
        plan = SeedPlan(accounts=options.accounts, terminals=options.terminals, lost_share=0,
                        frozen_share=0, closed_share=0, replaced_share=0,
                        main_fen_max=100_000_000, subsidy_fen_max=0, with_limits=False,
                        kiosks=BENCH_KIOSKS, bank_cards=BENCH_BANK_CARDS)
        seed = await seed_site(conn, plan)
        # Every terminal sells at the same free-amount canteen: one hot merchant account, the
        # hardest case for a ledger (every purchase credits it).
        await conn.execute("UPDATE terminals SET merchant_id = $1", CANTEEN_FREE)
        await conn.execute(SETUP_SQL)
        await conn.execute(
            "INSERT INTO conv_balances SELECT id, opening_main_fen FROM accounts"
        )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return dsn, seed.cards, seed.terminals


def _medians(rows: list[dict[str, object]]) -> dict[str, float]:
    """The median of each numeric key over the sampler's per-second rows."""
    keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, int | float)} - {"t"})
    out = {}
    for k in keys:
        values = [float(r[k]) for r in rows if isinstance(r.get(k), int | float)]  # type: ignore[arg-type]
        if values:
            out[k] = round(statistics.median(values), 2)
    return out


def _report_load(name: str, windows: list[tuple[Sample, Sample]],
                 loads: dict[str, MachineLoad]) -> None:
    """Keep the load over the windows and print it beside the figures just printed, with a
    warning when the machine was busy."""
    load = loads[name] = combine([load_between(a, b) for a, b in windows])
    line = f"  machine {LOAD_WINDOWS[name]}: {load.describe()}"
    if load.busy():
        line += (f"\n  WARNING: busy machine {LOAD_WINDOWS[name]} ({'; '.join(load.busy())}): "
                 "these figures measure the machine as much as the switch")
    print(line, flush=True)


async def _run_switch_phase(dsn: str, master: bytes, terminals: list[int], cards: list[int],
                            options: BenchOptions, meter: LoadMeter,
                            loads: dict[str, MachineLoad]) -> dict[str, object]:
    metrics_url = f"http://127.0.0.1:{free_port()}"
    switch = SwitchProcess(dsn, master.hex(), extra_env={
        "ONECARD_LOG_LEVEL": "warning", "ONECARD_METRICS_PORT": metrics_url.rsplit(":", 1)[1],
    }).start()
    scrapes: list[Samples] = []
    try:
        specs = [TerminalSpec(t, ocp.derive_terminal_key(master, t, 1)) for t in terminals]
        gen = LoadGenerator(switch.host, switch.port, specs, CardPool(cards=cards))
        await gen.connect()
        scrapes.append(scrape(metrics_url))
        print(f"  {len(specs)} terminals signed on; saturation for {options.seconds:g} s ...",
              flush=True)
        cpu: list[float] = []
        marks: list[Sample] = []

        def mark() -> None:
            cpu.append(switch.cpu_seconds())
            marks.append(meter.sample())

        sat = await gen.closed_loop(
            options.seconds, depth=1, warmup_seconds=2.0,
            on_measure_start=mark, on_measure_end=mark,
        )
        scrapes.append(scrape(metrics_url))
        switch_cpu_pct = 100.0 * (cpu[1] - cpu[0]) / sat.seconds
        cpu_us = 1e6 * (cpu[1] - cpu[0]) / max(1, sat.answered)
        print(f"  saturation: {sat.approved_tps:,.0f} durable purchases/s "
              f"(p50 {sat.p50_ms:.1f} ms, p99 {sat.p99_ms:.1f} ms, generator CPU "
              f"{sat.generator_cpu_pct:.0f} %, switch CPU {switch_cpu_pct:.0f} % = "
              f"{cpu_us:.1f} µs per purchase)", flush=True)
        _report_load("saturation", [(marks[0], marks[1])], loads)
        rate = max(1.0, sat.approved_tps / 2)
        print(f"  open loop at {rate:,.0f}/s for {options.seconds:g} s ...", flush=True)
        open_start = meter.sample()
        assert switch.proc is not None
        sampler = Sampler(dsn, {"switch": switch.proc.pid, "generator": os.getpid()}).start()
        opn = await gen.open_loop(options.seconds, rate)
        open_end = meter.sample()
        where = _medians(sampler.stop()[1:])
        where["generator_send_lag_p50_ms"] = opn.send_lag_p50_ms
        where["generator_send_lag_p99_ms"] = opn.send_lag_p99_ms
        scrapes.append(scrape(metrics_url))
        inside = switch_figures(scrapes[1], scrapes[2])
        print(f"  open loop: p50 {opn.p50_ms:.2f} ms, p99 {opn.p99_ms:.2f} ms, "
              f"p99.9 {opn.p999_ms:.2f} ms", flush=True)
        _report_load("open_loop", [(open_start, open_end)], loads)
        print("  the switch's own metrics over the open loop: "
              + ", ".join(f"{k} {v:g}" for k, v in inside.items()), flush=True)
        print("  where the open loop's time went (medians per second): "
              + ", ".join(f"{k} {v:g}" for k, v in where.items()), flush=True)
        gen.pool = CardPool(cards=cards, unknown_card_share=DECLINE_SHARE)
        print(f"  declines: saturation with {DECLINE_SHARE:.0%} unknown cards for "
              f"{options.seconds:g} s ...", flush=True)
        dec = await gen.closed_loop(options.seconds, depth=1, warmup_seconds=2.0)
        scrapes.append(scrape(metrics_url))
        print(f"  declines: {dec.tps:,.0f} durable answers/s ({dec.codes}), "
              f"{dec.tps / sat.approved_tps:.2f} of saturation", flush=True)
        gen.close()
        lag = {phase: {k.removeprefix("loop_lag_"): v
                       for k, v in switch_figures(a, b).items() if k.startswith("loop_lag")}
               for phase, a, b in (("saturation", scrapes[0], scrapes[1]),
                                   ("open_loop", scrapes[1], scrapes[2]),
                                   ("declines", scrapes[2], scrapes[3]))}
        lag_max = scrapes[3].get(("onecard_event_loop_lag_max_seconds", ()), 0.0) * 1000
        print(f"  event-loop lag (ms): {lag}, largest {lag_max:.1f}", flush=True)
    finally:
        switch.stop()
    conn = await asyncpg.connect(dsn)
    try:
        batches = await conn.fetchval(
            "SELECT count(DISTINCT committed_at) FROM journal WHERE kind = 1"
        )
        rows = await conn.fetchval("SELECT count(*) FROM journal")
    finally:
        await conn.close()
    return {"sat": sat, "open": opn, "dec": dec,
            "rows_per_commit": rows / batches if batches else 0.0,
            "switch_cpu_pct": switch_cpu_pct, "cpu_us": cpu_us, "inside": inside,
            "lag": lag, "lag_max": lag_max, "where": where}


async def _run_door_phase(dsn: str, master: bytes, terminals: list[int], cards: list[int],
                          options: BenchOptions, purchase_rate: float, meter: LoadMeter,
                          loads: dict[str, MachineLoad]) -> dict[str, Any]:
    """Door decisions at saturation and in an open loop at half that rate, then a mixed open
    loop (docs/access.md; BenchResult.door_*)."""
    conn = await asyncpg.connect(dsn)
    try:
        doors = await seed_doors(conn, len(terminals), apb=False)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    switch = SwitchProcess(dsn, master.hex(), extra_env={"ONECARD_LOG_LEVEL": "warning"}).start()
    try:
        door_specs = [TerminalSpec(t, ocp.derive_terminal_key(master, t, 1),
                                   door_readers=READERS_PER_DOOR) for t in doors]
        gen = LoadGenerator(switch.host, switch.port, door_specs, CardPool(cards=cards))
        await gen.connect()
        print(f"  {len(door_specs)} door controllers signed on; door saturation for "
              f"{options.seconds:g} s ...", flush=True)
        cpu: list[float] = []
        marks: list[Sample] = []

        def mark() -> None:
            cpu.append(switch.cpu_seconds())
            marks.append(meter.sample())

        sat = await gen.closed_loop(options.seconds, depth=1, warmup_seconds=2.0,
                                    on_measure_start=mark, on_measure_end=mark)
        cpu_us = 1e6 * (cpu[1] - cpu[0]) / max(1, sat.answered)
        print(f"  doors: {sat.tps:,.0f} durable decisions/s (p99 {sat.p99_ms:.1f} ms, switch "
              f"{cpu_us:.1f} µs per decision)", flush=True)
        _report_load("doors", [(marks[0], marks[1])], loads)
        rate = max(1.0, sat.tps / 2)
        print(f"  doors open loop at {rate:,.0f}/s for {options.seconds:g} s ...", flush=True)
        a = meter.sample()
        opn = await gen.open_loop(options.seconds, rate)
        _report_load("doors_open_loop", [(a, meter.sample())], loads)
        print(f"  doors open loop: p50 {opn.p50_ms:.2f} ms, p99 {opn.p99_ms:.2f} ms, "
              f"p99.9 {opn.p999_ms:.2f} ms", flush=True)
        gen.close()
        # Mixed: half the terminals tills, half doors, interleaved, at the purchases' rate.
        half = len(terminals) // 2
        mixed_specs: list[TerminalSpec] = []
        for pos, door in zip(terminals[:half], door_specs[:half], strict=True):
            mixed_specs += [TerminalSpec(pos, ocp.derive_terminal_key(master, pos, 1)), door]
        mixed = LoadGenerator(switch.host, switch.port, mixed_specs, CardPool(cards=cards))
        await mixed.connect()
        print(f"  mixed open loop (tills and doors) at {purchase_rate:,.0f}/s for "
              f"{options.seconds:g} s ...", flush=True)
        a = meter.sample()
        mix = await mixed.open_loop(options.seconds, purchase_rate)
        _report_load("mixed", [(a, meter.sample())], loads)
        mixed.close()
        lat = mix.by_type_latency
        print(f"  mixed: purchases p50 {lat.get('purchase', {}).get('p50_ms', 0):.2f} / p99 "
              f"{lat.get('purchase', {}).get('p99_ms', 0):.2f} ms, doors p50 "
              f"{lat.get('access', {}).get('p50_ms', 0):.2f} / p99 "
              f"{lat.get('access', {}).get('p99_ms', 0):.2f} ms", flush=True)
    finally:
        switch.stop()
    conn = await asyncpg.connect(dsn)
    try:
        batches = await conn.fetchval(
            "SELECT count(DISTINCT committed_at) FROM access_decisions")
        rows = await conn.fetchval("SELECT count(*) FROM access_decisions")
    finally:
        await conn.close()
    return {"sat": sat, "open": opn, "mix": mix, "cpu_us": cpu_us,
            "per_commit": rows / batches if batches else 0.0}


async def _run_conventional(dsn: str, master: bytes, terminals: list[int], cards: list[int],
                            pool_size: int, run: int, meter: LoadMeter,
                            windows: list[tuple[Sample, Sample]]) -> float:
    """Purchases/s at this pool size; the machine's load over the measured window is added to
    `windows` (sampled while the server and its PostgreSQL backends run)."""
    server = ConventionalProcess(dsn, master.hex(), args=["--pool-size", str(pool_size)]).start()
    try:
        # Each run starts its terminals' counters afresh above every earlier run's, since
        # conv_journal keeps (terminal_id, txn_seq) unique like the journal.
        specs = [TerminalSpec(t, ocp.derive_terminal_key(master, t, 1),
                              last_txn_seq=(run + 1) * 100_000_000)
                 for t in terminals]
        gen = LoadGenerator(server.host, server.port, specs, CardPool(cards=cards))
        await gen.connect()
        marks: list[Sample] = []
        rep = await gen.closed_loop(COMPARISON_SECONDS, depth=1, warmup_seconds=1.0,
                                    on_measure_start=lambda: marks.append(meter.sample()),
                                    on_measure_end=lambda: marks.append(meter.sample()))
        windows.append((marks[0], marks[1]))
        gen.close()
    finally:
        server.stop()
    return rep.approved_tps


def _pgbench_binary(bin_dir: str | None) -> str | None:
    if bin_dir and Path(bin_dir, "pgbench").exists():
        return str(Path(bin_dir, "pgbench"))
    return shutil.which("pgbench")


def _run_pgbench(pgbench: str, dsn: str, clients: int, accounts: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(PGBENCH_SCRIPT.format(accounts=accounts, merchant=CANTEEN_FREE))
        script = f.name
    try:
        out = subprocess.run(
            [pgbench, "-n", "-M", "prepared", "-c", str(clients), "-j", "2",
             "-T", str(int(COMPARISON_SECONDS)), "-f", script, dsn],
            capture_output=True, text=True, timeout=COMPARISON_SECONDS + 120,
        )
    finally:
        os.unlink(script)
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout)
    if match is None:
        raise RuntimeError(f"pgbench failed: {out.stdout[-500:]} {out.stderr[-500:]}")
    return float(match.group(1))


async def _bench(options: BenchOptions) -> BenchResult:
    cores = len(os.sched_getaffinity(0))
    private = None
    bin_dir = None
    loads: dict[str, MachineLoad] = {}
    meter = LoadMeter(markers=[options.database])
    quiet_start = meter.sample()
    await asyncio.sleep(QUIET_CHECK_SECONDS)
    _report_load("before", [(quiet_start, meter.sample())], loads)
    if options.dsn:
        admin_dsn = options.dsn
    else:
        from onecard.privatepg import start_private_postgres

        private = start_private_postgres(
            Path(tempfile.mkdtemp(prefix="onecard-bench-pg-")) / "pgdata", delete=True
        )
        admin_dsn, bin_dir = private.dsn, private.bin_dir
        meter.markers.append(private.data_dir)
    try:
        dsn, cards, terminals = await _prepare(admin_dsn, options)
        conn = await asyncpg.connect(dsn)
        try:
            fsync, sync_commit, version = await _settings(conn)
            data_dir = private.data_dir if private is not None else None
            if private is not None:  # WAL write and flush times for open_loop_where
                await conn.execute("ALTER SYSTEM SET track_wal_io_timing = on")
                await conn.execute("SELECT pg_reload_conf()")
            else:
                with contextlib.suppress(asyncpg.PostgresError):
                    data_dir = await conn.fetchval("SHOW data_directory")
        finally:
            await conn.close()
        print(f"PostgreSQL: {version.split(',')[0]}; fsync={fsync}, "
              f"synchronous_commit={sync_commit}", flush=True)
        probe = fsync_probe(data_dir if data_dir and os.access(data_dir, os.W_OK) else None)
        print(f"fsync probe: p50 {probe['p50_ms']} ms, p99 {probe['p99_ms']} ms, p99.9 "
              f"{probe['p999_ms']} ms ({probe['calls']:,} flushes of 8 KiB in 2 s, "
              f"{probe['directory']}); {cores} cores", flush=True)
        master = os.urandom(32)
        phase = await _run_switch_phase(dsn, master, terminals, cards, options, meter, loads)
        doors: dict[str, Any] = {}
        if not options.skip_doors:
            doors = await _run_door_phase(dsn, master, terminals, cards, options,
                                          phase["open"].offered_tps,  # type: ignore[attr-defined]
                                          meter, loads)
        bank = await run_bank_phases(dsn, master, terminals, cards, options.seconds)
        console = None
        if not options.skip_console:
            console = await run_console_phase(
                dsn, master, terminals, cards, options.seconds,
                phase["open"].offered_tps)  # type: ignore[attr-defined]
        conv: dict[str, float] = {}
        pgb: dict[str, float] = {}
        if not options.skip_conventional:
            windows: list[tuple[Sample, Sample]] = []
            for run, size in enumerate(POOL_SIZES):
                conv[str(size)] = await _run_conventional(dsn, master, terminals, cards, size, run,
                                                          meter, windows)
                print(f"  conventional, pool {size}: {conv[str(size)]:,.0f} purchases/s",
                      flush=True)
            _report_load("conventional", windows, loads)
            pgbench = _pgbench_binary(bin_dir)
            if pgbench is None:
                print("  pgbench not found: skipping the pgbench ceiling", flush=True)
            else:
                for clients in POOL_SIZES:
                    pgb[str(clients)] = _run_pgbench(pgbench, dsn, clients, options.accounts)
                    print(f"  pgbench, {clients} clients: {pgb[str(clients)]:,.0f} tps",
                          flush=True)
    finally:
        if private is not None:
            private.stop()
    sat, opn, dec = phase["sat"], phase["open"], phase["dec"]
    durable = sat.approved_tps  # type: ignore[attr-defined]
    durable_declines = dec.tps  # type: ignore[attr-defined]
    conventional_tps = max(conv.values()) if conv else 0.0
    pgbench_tps = max(pgb.values()) if pgb else 0.0
    return BenchResult(
        terminals=options.terminals,
        seconds=options.seconds,
        durable_tps=durable,
        saturation_p50_ms=sat.p50_ms,  # type: ignore[attr-defined]
        saturation_p99_ms=sat.p99_ms,  # type: ignore[attr-defined]
        offered_tps=opn.offered_tps,  # type: ignore[attr-defined]
        achieved_open_tps=opn.approved_tps,  # type: ignore[attr-defined]
        p50_ms=opn.p50_ms,  # type: ignore[attr-defined]
        p99_ms=opn.p99_ms,  # type: ignore[attr-defined]
        p999_ms=opn.p999_ms,  # type: ignore[attr-defined]
        conventional_tps=conventional_tps,
        conventional_by_pool=conv,
        pgbench_tps=pgbench_tps,
        pgbench_by_clients=pgb,
        ratio=round(durable / conventional_tps, 2) if conventional_tps else 0.0,
        ratio_pgbench=round(durable / pgbench_tps, 2) if pgbench_tps else 0.0,
        generator_cpu_pct=sat.generator_cpu_pct,  # type: ignore[attr-defined]
        switch_cpu_pct=round(float(phase["switch_cpu_pct"]), 1),  # type: ignore[arg-type]
        switch_cpu_us_per_purchase=round(float(phase["cpu_us"]), 2),  # type: ignore[arg-type]
        switch_journal_rows_per_commit=round(float(phase["rows_per_commit"]), 1),  # type: ignore[arg-type]
        switch_metrics_open_loop=phase["inside"],  # type: ignore[arg-type]
        durable_tps_declines=durable_declines,
        declines_ratio=round(durable_declines / durable, 3) if durable else 0.0,
        decline_share=DECLINE_SHARE,
        loop_lag_ms=phase["lag"],  # type: ignore[arg-type]
        loop_lag_max_ms=round(float(phase["lag_max"]), 3),  # type: ignore[arg-type]
        saturation_timeline=sat.timeline,  # type: ignore[attr-defined]
        open_loop_timeline=opn.timeline,  # type: ignore[attr-defined]
        fsync=fsync,
        synchronous_commit=sync_commit,
        postgres=version.split(",")[0],
        cpus=os.cpu_count() or 0,
        cores=cores,
        fsync_p99_ms=float(probe["p99_ms"]),
        fsync_probe=probe,
        open_loop_where=phase["where"],  # type: ignore[arg-type]
        machine_load=loads,
        busy_machine={name: load.busy() for name, load in loads.items() if load.busy()},
        **_door_fields(doors),
        topup_tps=bank.topup_tps,
        topup_p99_ms=bank.topup_p99_ms,
        durable_tps_bank_down=bank.durable_tps_bank_down,
        bank_down_ratio=round(bank.durable_tps_bank_down / durable, 3) if durable else 0.0,
        bank=bank,
        **_console_fields(console),
    )


def _console_fields(c: ConsoleBench | None) -> dict[str, Any]:
    if c is None:
        return {}
    return {
        "console_requests_per_s": c.console_requests_per_s, "console_p50_ms": c.console_p50_ms,
        "console_p99_ms": c.console_p99_ms, "console_pages": c.console_pages,
        "console_live_lag_p50_ms": c.console_live_lag_p50_ms,
        "console_live_lag_p99_ms": c.console_live_lag_p99_ms,
        "console_live_streams": c.console_live_streams, "admin_cpu_pct": c.admin_cpu_pct,
        "purchase_p99_ms_with_console": c.purchase_p99_ms_with_console,
        "purchase_p99_ms_without_console": c.purchase_p99_ms_without_console, "console": c,
    }


def _door_fields(doors: dict[str, Any]) -> dict[str, Any]:
    if not doors:
        return {}
    sat, opn, mix = doors["sat"], doors["open"], doors["mix"]
    lat = mix.by_type_latency
    return {
        "door_tps": sat.tps, "door_saturation_p99_ms": sat.p99_ms,
        "door_offered_tps": opn.offered_tps, "door_p50_ms": opn.p50_ms,
        "door_p99_ms": opn.p99_ms, "door_p999_ms": opn.p999_ms,
        "door_switch_cpu_us_per_decision": round(doors["cpu_us"], 2),
        "door_records_per_commit": round(doors["per_commit"], 1),
        "mixed_offered_tps": mix.offered_tps,
        "mixed_purchase_p50_ms": lat.get("purchase", {}).get("p50_ms", 0.0),
        "mixed_purchase_p99_ms": lat.get("purchase", {}).get("p99_ms", 0.0),
        "mixed_access_p50_ms": lat.get("access", {}).get("p50_ms", 0.0),
        "mixed_access_p99_ms": lat.get("access", {}).get("p99_ms", 0.0),
        "door_open_loop_timeline": opn.timeline,
    }


def summary(r: BenchResult, json_path: str | None) -> str:
    """The run in a few lines: the headline figures, and whether the machine was busy."""
    lines = [
        f"durable: {r.durable_tps:,.0f} purchases/s (saturation p99 {r.saturation_p99_ms:.1f} ms)"
        f"; open loop at {r.offered_tps:,.0f}/s: p50 {r.p50_ms:.2f}, p99 {r.p99_ms:.2f}, "
        f"p99.9 {r.p999_ms:.2f} ms",
        f"switch CPU {r.switch_cpu_pct:.0f} % of a core ({r.switch_cpu_us_per_purchase:.1f} µs "
        f"per purchase), generator {r.generator_cpu_pct:.0f} %; "
        f"{r.switch_journal_rows_per_commit:.0f} journal rows per commit",
        f"declines phase: {r.durable_tps_declines:,.0f} answers/s, {r.declines_ratio:.2f} of "
        f"durable; event-loop lag at most {r.loop_lag_max_ms:.1f} ms",
        f"kiosk top-ups: {r.topup_tps:,.0f}/s (p99 {r.topup_p99_ms:.1f} ms); bank down: "
        f"{r.durable_tps_bank_down:,.0f} purchases/s, {r.bank_down_ratio:.2f} of durable",
    ]
    if r.door_tps:
        lines.append(f"doors: {r.door_tps:,.0f} decisions/s; open loop at "
                     f"{r.door_offered_tps:,.0f}/s: p50 {r.door_p50_ms:.2f}, p99 "
                     f"{r.door_p99_ms:.2f} ms; mixed at {r.mixed_offered_tps:,.0f}/s: purchases "
                     f"p99 {r.mixed_purchase_p99_ms:.2f} ms (alone {r.p99_ms:.2f}), doors p99 "
                     f"{r.mixed_access_p99_ms:.2f} ms")
    if r.console is not None:
        c = r.console
        hurt = c.purchase_p99_ratio > HURT_RATIO
        lines.append(
            f"console: {c.operators} operators, {r.console_requests_per_s:,.0f} requests/s, p50 "
            f"{r.console_p50_ms:.1f} / p99 {r.console_p99_ms:.1f} ms; {r.console_live_streams} "
            f"live streams, lag p50 {r.console_live_lag_p50_ms:.0f} / p99 "
            f"{r.console_live_lag_p99_ms:.0f} ms; admin API CPU {r.admin_cpu_pct:.0f} %; tills at "
            f"{c.purchase_rate:,.0f}/s: p99 {r.purchase_p99_ms_with_console:.2f} ms with the "
            f"console, {r.purchase_p99_ms_without_console:.2f} without"
            + (f" (x{c.purchase_p99_ratio:g}: THE CONSOLE HURTS THE TILLS)" if hurt else ""))
    if r.conventional_tps:
        lines.append(f"conventional {r.conventional_tps:,.0f}/s: ratio {r.ratio:g}x"
                     + (f"; pgbench {r.pgbench_tps:,.0f} tps: ratio {r.ratio_pgbench:g}x"
                        if r.pgbench_tps else ""))
    if r.busy_machine:
        lines.append("WARNING: figures taken on a busy machine: " + "; ".join(
            f"{LOAD_WINDOWS[name]}: {', '.join(why)}" for name, why in r.busy_machine.items()))
    else:
        lines.append("machine: quiet before and during the run (no steal or other load above "
                     "the limits)")
    lines[-1] += f"; {r.cores} cores, the disk's fsync p99 {r.fsync_p99_ms:g} ms (probe)"
    lines.append(f"every figure: {json_path}" if json_path else
                 "every figure (timelines, the machine's load by phase): --json PATH")
    return "\n".join(lines)


def run_bench(options: BenchOptions) -> int:
    started = time.perf_counter()
    result = run_fast(_bench(options))
    if options.json_path:
        Path(options.json_path).write_bytes(msgspec.json.format(msgspec.json.encode(result)))
    print(summary(result, options.json_path))
    print(f"bench finished in {time.perf_counter() - started:.0f} s")
    return 0
