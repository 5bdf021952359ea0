"""A seeded site with a switch running as a real process, for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec

from loadtest import CardPool, LoadGenerator, TerminalSpec
from onecard.audit import AuditReport, audit_conservation
from onecard.harness import SwitchProcess
from onecard.harness import free_port as free_port  # re-exported for the tests
from onecard.seed import SeedPlan, SeedResult, seed_site
from protocols import ocp
from protocols.bank_card import bank_card_key
from tests.ocp_client import OcpClient

# Terminal ids by merchant in onecard.seed (merchant = [4, 4, 3, 5, 6][tid % 5]).
FREE_CANTEEN_TERMINAL = 1
FIXED_CANTEEN_TERMINAL = 2
SUPERMARKET_TERMINAL = 3
EAST_PARK_TERMINAL = 4


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def drive_until(site: Site, pool: CardPool, *, depth: int, answers: int,
                      then: Callable[[], Awaitable[None]]) -> LoadGenerator:
    """Every terminal of the site pipelines `depth` requests in a closed loop; once `answers`
    have arrived, `then` runs (kill, stop, break the database); return when the switch has
    closed every connection. The generator records every request and answer."""
    assert site.switch is not None
    specs = [TerminalSpec(t, site.key(t)) for t in site.seed.terminals]
    gen = LoadGenerator(site.switch.host, site.switch.port, specs, pool, record=True)
    await gen.connect()
    gen.start_closed_loop(depth)
    async with asyncio.timeout(120):
        await gen.wait_answered(answers)
    await then()
    async with asyncio.timeout(60):
        await gen.wait_disconnected()
    gen.stop_closed_loop()
    return gen


async def _fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


class Site:
    def __init__(self, dsn: str, plan: SeedPlan | None = None) -> None:
        self.dsn = dsn
        self.master = os.urandom(32)

        async def seed() -> SeedResult:
            conn = await asyncpg.connect(dsn)
            try:
                # Bank card numbers sealed under the site's key, as the admin API keeps them.
                chosen = plan or SeedPlan(accounts=300, terminals=10)
                if not chosen.bank_card_key:
                    chosen = msgspec.structs.replace(
                        chosen, bank_card_key=bank_card_key(self.master))
                return await seed_site(conn, chosen)
            finally:
                await conn.close()

        self.seed = run(seed())
        self.switch: SwitchProcess | None = None

    def start(self, **kw: Any) -> SwitchProcess:
        self.switch = SwitchProcess(self.dsn, self.master.hex(), **kw).start()
        return self.switch

    def stop(self) -> int:
        assert self.switch is not None
        return self.switch.stop()

    def key(self, terminal_id: int) -> bytes:
        return ocp.derive_terminal_key(self.master, terminal_id, 1)

    def client(self, terminal_id: int, *, sign_on: bool = True, last_txn_seq: int = 0
               ) -> OcpClient:
        assert self.switch is not None
        c = OcpClient(self.switch.host, self.switch.port, terminal_id, self.key(terminal_id))
        if sign_on:
            result = c.sign_on(last_txn_seq)
            assert isinstance(result, ocp.SignOnResult) and result.code == 0, result
        return c

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return run(_fetch(self.dsn, sql, *args))

    def card(self, *, account_status: int = 0, class_id: int = 2, min_main: int = 5_000,
             subsidy_zero: bool = False, skip: int = 0) -> asyncpg.Record:
        """A card (with its account's opening balances) matching the wish."""
        rows = self.fetch(
            "SELECT c.card_no, a.id AS account_id, a.opening_main_fen AS main,"
            " a.opening_subsidy_fen AS subsidy, a.status"
            " FROM cards c JOIN accounts a ON a.id = c.account_id"
            " WHERE c.status = 0 AND a.status = $1 AND a.class_id = $2"
            " AND a.opening_main_fen >= $3 AND ($4 = false OR a.opening_subsidy_fen = 0)"
            " ORDER BY a.id OFFSET $5 LIMIT 1",
            account_status, class_id, min_main, subsidy_zero, skip,
        )
        assert rows, "the seed has no such card"
        return rows[0]

    def audit(self) -> AuditReport:
        """The conservation audit, computed from the database alone."""

        async def go() -> AuditReport:
            conn = await asyncpg.connect(self.dsn)
            try:
                return await audit_conservation(conn)
            finally:
                await conn.close()

        return run(go())  # type: ignore[no-any-return]

    def journal(self, terminal_id: int, txn_seq: int) -> list[asyncpg.Record]:
        return self.fetch(
            "SELECT * FROM journal WHERE terminal_id = $1 AND txn_seq = $2", terminal_id, txn_seq
        )
