"""`onecard demo --serve`: the whole system on this machine, until Ctrl-C.

A private PostgreSQL (or --dsn), a private Redis when none answers, the migrated and seeded demo
campus, the switch, the admin API (bootstrapped: platform node, tenants, people, system
accounts, the admin terminal) and a trickle of simulated purchases, so that statements,
reports, the console's live sales and the dashboards have something to show. The campus has
doors too (onecard/demo_access_seed.py: areas with floor plans, doors placed on them, grants)
with door controllers signed on and a trickle of passes and alarms, and a till that buys with
every card issued during the demo (onecard/demo_doors.py). It prints the operators' console's
address, the API's, the interactive docs', a demo log-in for every role and, per journey of
the console, which log-in walks it; Ctrl-C (or SIGTERM) stops everything.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time

import asyncpg

from loadtest import CardPool, LoadGenerator, TerminalSpec
from onecard.demo import DemoOptions, services
from onecard.demo_access_seed import seed_demo_access
from onecard.demo_doors import DoorTrickle, WatchedTill, cancel_quietly
from onecard.demo_users import create_demo_users
from onecard.harness import AdminProcess, SwitchProcess, free_port, fresh_database, run_fast
from onecard.seed import SeedPlan, seed_site
from protocols import ocp
from switch._settings import redacted_url

SERVE_DATABASE = "onecard_demo_serve"
TRICKLE_PER_SECOND = 5.0
"""Simulated purchases per second while the demo serves: a quiet afternoon."""

JOURNEYS = (
    ("card.office", "People: find someone, open them, Issue card (the demo till buys with it "
     "within seconds)"),
    ("campus.admin", "Sales: the simulated tills' purchases arrive live"),
    ("card.office", "the person's page: Report lost; the till's next purchase is refused"),
    ("card.office", "the person's page: submit a cancellation; finance.a, then finance.b: "
     "Approvals, Approve"),
    ("security.desk", "Security desk: an alarm about once a minute on the e-map; acknowledge "
     "it; Door control: Open once"),
    ("parent", "phone pages: their child only (student: the child's own view)"),
    ("cashier", "Cashier: find someone, top up (a double click tops up once)"),
    ("east.office", "another park: finds nothing of the campus"),
)
"""Printed under the log-ins: which log-in walks each journey of the console, and where."""


async def _serve(options: DemoOptions) -> None:
    switch = admin = None
    tasks: list[asyncio.Task[None]] = []
    gen: LoadGenerator | None = None
    doors: DoorTrickle | None = None
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    loop.add_signal_handler(signal.SIGTERM, main.cancel)  # stop like Ctrl-C: children and all
    database = options.database or SERVE_DATABASE
    with services(options, database) as svc:
        try:
            ready0 = time.monotonic()
            dsn = await fresh_database(svc.server_dsn, database)
            conn = await asyncpg.connect(dsn)
            try:
                seed = await seed_site(conn, SeedPlan(accounts=min(options.accounts, 5_000),
                                                      terminals=min(options.terminals, 40),
                                                      main_fen_max=150_000, subsidy_fen_max=30_000))
            finally:
                await conn.close()
            password = secrets.token_urlsafe(12)
            users = await create_demo_users(dsn, password)
            conn = await asyncpg.connect(dsn)
            try:
                access = await seed_demo_access(conn)
            finally:
                await conn.close()
            master = os.urandom(32)
            env = {**svc.switch_env, "ONECARD_PORT": str(free_port()),
                   "ONECARD_METRICS_PORT": str(free_port())}
            switch = SwitchProcess(dsn, master.hex(), extra_env=env).start()
            # The demo's log-ins were made a moment ago: no cooling-off before they approve.
            admin = AdminProcess(dsn, master.hex(), extra_env={
                "ONECARD_ADMIN_APPROVER_COOLING_OFF_SECONDS": "0",
                "ONECARD_ADMIN_SWITCH_PORT": str(switch.port),
                # The console's operations page reads the switch's operator port.
                "ONECARD_ADMIN_SWITCH_STATUS_URL":
                    f"http://127.0.0.1:{env['ONECARD_METRICS_PORT']}",
                "ONECARD_ADMIN_PORT": str(options.admin_port or free_port())}).start()
            fixed = set(seed.fixed_price_terminals)
            # One free-amount till buys with the cards issued during the demo; the others
            # trickle.
            watched = next(t for t in reversed(seed.terminals) if t not in fixed)
            specs = [TerminalSpec(tid, ocp.derive_terminal_key(master, tid, 1),
                                  fixed_price=tid in fixed)
                     for tid in seed.terminals if tid != watched]
            pool = CardPool(cards=seed.cards + seed.lost_cards[:5], amount_fen_min=300,
                            amount_fen_max=2500, unknown_card_share=0.005, reversal_share=0.01,
                            inquiry_share=0.03)
            gen = LoadGenerator(switch.host, switch.port, specs, pool)
            await gen.connect()
            doors = DoorTrickle(switch.host, switch.port, master, dsn, access,
                                cards=seed.cards, lost_cards=seed.lost_cards)
            await doors.connect()
            till = WatchedTill(switch.host, switch.port, master, dsn, watched)
            tasks = [loop.create_task(doors.run()), loop.create_task(till.run()),
                     loop.create_task(_trickle(gen))]
            print("")
            print("OneCard demo is serving (Ctrl-C stops everything):")
            print(f"  console             {admin.url}/console/  (log in with a demo log-in "
                  "below)")
            print(f"  phone pages         {admin.url}/m/  (student: a cardholder, parent: "
                  "their child)")
            print(f"  admin API           {admin.url}")
            print(f"  interactive docs    {admin.url}/docs")
            print(f"  OpenAPI document    {admin.url}/docs/openapi.json")
            print(f"  switch (OCP)        {switch.host}:{switch.port}; metrics "
                  f"http://127.0.0.1:{env['ONECARD_METRICS_PORT']}/metrics")
            print(f"  PostgreSQL          {redacted_url(dsn)}")
            print(f"  change feed         {svc.redis}")
            print(f"  doors               {len(access.doors)} doors in {len(access.areas)} "
                  f"areas ({', '.join(access.areas)}), each area with a floor plan; "
                  f"{len(access.doors)} door controllers signed on")
            print(f"  demo log-ins        password for all: {password}")
            for username, role in users:
                print(f"    {username:<16} {role}")
            print("  journeys            (log in at the console; the parent at the phone pages)")
            for username, journey in JOURNEYS:
                print(f"    {username:<16} {journey}")
            login = f'{{"username": "admin", "password": "{password}"}}'
            print(f"  try: curl -s -X POST {admin.url}/auth/login -H 'content-type: "
                  f"application/json' -d '{login}'")
            print(f"  {TRICKLE_PER_SECOND:g} simulated purchases per second keep the site busy; "
                  "a card at a door every second or two, an alarm about once a minute "
                  f"(ready in {time.monotonic() - ready0:.1f} s)", flush=True)
            # Until Ctrl-C or SIGTERM (or a trickle fails: its error ends the demo).
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                await cancel_quietly(task)
            if doors is not None:
                doors.close()
            if gen is not None:
                gen.close()
            # A second SIGTERM meanwhile only cancels again: the children still stop in order
            # (the handler stays until the loop closes).
            for process in (admin, switch):
                if process is not None:
                    process.stop()


async def _trickle(gen: LoadGenerator) -> None:
    started, sent = time.monotonic(), 0
    while True:
        live = [t for t in gen.terms if not t.closed]
        if not live:
            await asyncio.sleep(1.0)
            continue
        live[sent % len(live)].send_request()
        sent += 1
        due = started + sent / TRICKLE_PER_SECOND
        await asyncio.sleep(max(0.0, due - time.monotonic()))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve_demo(options: DemoOptions) -> int:
    # Before the loop runs (and after it): SIGTERM stops like Ctrl-C, children and all. While
    # it runs, SIGTERM cancels the serving task (_serve), which stops them in order.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        run_fast(_serve(options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nstopped", flush=True)
    return 0
