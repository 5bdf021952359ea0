"""If a group commit fails, the switch never acknowledges that batch and recovers from
PostgreSQL; terminals retry with the same txn_seq and get exactly-once results."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from loadtest import CardPool, LoadGenerator
from onecard.seed import SeedPlan
from protocols import ocp
from tests.switch_site import Site, drive_until


async def _kill_journal_backend(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'onecard-switch-journal'"
            " AND datname = current_database()"  # not another site's switch on the server
        ))
    finally:
        await conn.close()


async def _drive(site: Site) -> LoadGenerator:
    async def break_journal() -> None:
        assert await _kill_journal_backend(site.dsn) == 1

    # After the kill the switch drops every connection rather than answer from a state that
    # is not durable: drive_until returns once they are all closed.
    pool = CardPool(cards=site.seed.cards, amount_fen_min=1, amount_fen_max=50)
    return await drive_until(site, pool, depth=1, answers=2_000, then=break_journal)


def test_a_failed_commit_drops_connections_then_recovers_exactly_once(db_dsn: str) -> None:
    site = Site(db_dsn, SeedPlan(accounts=500, terminals=20, with_limits=False))
    site.start()
    try:
        gen = asyncio.run(_drive(site))
        in_flight = gen.unanswered()
        # The batch whose commit failed was never answered: without requests in flight this
        # test would show nothing about them.
        assert in_flight, "no request was in flight when the commit failed"
        # The switch listens again after recovering from PostgreSQL; every request that was in
        # flight is retried with its txn_seq and lands in the journal exactly once.
        deadline = time.monotonic() + 60
        while True:
            try:
                client = site.client(site.seed.terminals[0])
                break
            except OSError:
                assert time.monotonic() < deadline, "switch did not come back"
                time.sleep(0.1)
        client.close()
        for (tid, seq), request in in_flight.items():
            c = site.client(tid, last_txn_seq=seq)
            answer = c.request(request)
            c.close()
            assert isinstance(answer, ocp.PurchaseResult)
            rows = site.journal(tid, seq)
            assert len(rows) == 1 and rows[0]["code"] == answer.code
        for (tid, seq), ev in list(gen.answers.items())[::50]:
            (row,) = site.journal(tid, seq)
            assert row["code"] == ev.code  # type: ignore[attr-defined]
        assert "journal.commit_failed" in site.switch.log_tail(200)  # type: ignore[union-attr]
    finally:
        assert site.stop() == 0
