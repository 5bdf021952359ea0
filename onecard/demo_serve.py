"""`onecard demo --serve`: the whole system on this machine, until Ctrl-C.

A private PostgreSQL (or --dsn), a private Redis when none answers, the migrated and seeded demo
campus, the switch, the admin API (bootstrapped: platform node, tenants, people, system
accounts, the admin terminal) and a trickle of simulated purchases, so that statements,
reports, the console's live sales and the dashboards have something to show. It prints the
operators' console's address, the API's, the interactive docs' and a demo log-in for every
role; Ctrl-C stops everything.
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
from onecard.demo_users import create_demo_users
from onecard.harness import AdminProcess, SwitchProcess, free_port, fresh_database, run_fast
from onecard.seed import SeedPlan, seed_site
from protocols import ocp
from switch._settings import redacted_url

SERVE_DATABASE = "onecard_demo_serve"
TRICKLE_PER_SECOND = 5.0
"""Simulated purchases per second while the demo serves: a quiet afternoon."""

async def _serve(options: DemoOptions) -> None:
    switch = admin = None
    with services(options) as svc:
        try:
            dsn = await fresh_database(svc.server_dsn, SERVE_DATABASE)
            conn = await asyncpg.connect(dsn)
            try:
                seed = await seed_site(conn, SeedPlan(accounts=min(options.accounts, 5_000),
                                                      terminals=min(options.terminals, 40),
                                                      main_fen_max=150_000, subsidy_fen_max=30_000))
            finally:
                await conn.close()
            password = secrets.token_urlsafe(12)
            users = await create_demo_users(dsn, password)
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
            print("")
            print("OneCard demo is serving (Ctrl-C stops everything):")
            print(f"  console             {admin.url}/console/  (log in with a demo log-in "
                  "below; card.office: card office, campus.admin: sales, big screen; "
                  "security.desk: security desk; admin: operations)")
            print(f"  phone pages         {admin.url}/m/  (student: a cardholder, parent: "
                  "their child)")
            print(f"  admin API           {admin.url}")
            print(f"  interactive docs    {admin.url}/docs")
            print(f"  OpenAPI document    {admin.url}/docs/openapi.json")
            print(f"  switch (OCP)        {switch.host}:{switch.port}; metrics "
                  f"http://127.0.0.1:{env['ONECARD_METRICS_PORT']}/metrics")
            print(f"  PostgreSQL          {redacted_url(dsn)}")
            print(f"  change feed         {svc.redis}")
            print(f"  demo log-ins        password for all: {password}")
            for username, role in users:
                print(f"    {username:<16} {role}")
            login = f'{{"username": "admin", "password": "{password}"}}'
            print(f"  try: curl -s -X POST {admin.url}/auth/login -H 'content-type: "
                  f"application/json' -d '{login}'")
            print(f"  {TRICKLE_PER_SECOND:g} simulated purchases per second keep the site busy",
                  flush=True)
            fixed = set(seed.fixed_price_terminals)
            specs = [TerminalSpec(tid, ocp.derive_terminal_key(master, tid, 1),
                                  fixed_price=tid in fixed) for tid in seed.terminals]
            pool = CardPool(cards=seed.cards + seed.lost_cards[:5], amount_fen_min=300,
                            amount_fen_max=2500, unknown_card_share=0.005, reversal_share=0.01,
                            inquiry_share=0.03)
            gen = LoadGenerator(switch.host, switch.port, specs, pool)
            await gen.connect()
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
        finally:
            for process in (admin, switch):
                if process is not None:
                    process.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve_demo(options: DemoOptions) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # stop like Ctrl-C: children and all
    try:
        run_fast(_serve(options))
    except KeyboardInterrupt:
        print("\nstopped", flush=True)
    return 0
