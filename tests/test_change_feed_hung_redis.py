"""A Redis that hangs (accepts, never answers) must not hold changes back.

While the feed's blocking stream read is outstanding longer than it should be, the feed reads
the outbox in PostgreSQL meanwhile: a card reported lost is applied while the read still hangs,
not after the read's deadline (measured before the fix: up to 3 s; docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from ledger_ext import Ledger
from switch._change_events import AccountStatusChanged
from switch._change_feed import ChangeFeed
from switch._masterdata import MasterData
from tests import change_writer as admin

DEADLINE_SECONDS = 30.0


class _HungRedis:
    """A client whose XREAD never answers (what a hung Redis server looks like)."""

    def __init__(self) -> None:
        self.reads = 0

    async def xread(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        await asyncio.Event().wait()  # forever, until cancelled

    async def aclose(self) -> None:
        return None


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.lines.append((event, kw))


def test_changes_arrive_from_the_outbox_while_a_stream_read_hangs(db_dsn: str) -> None:
    async def go() -> None:
        ledger = Ledger(64, 16)
        ledger.configure_tenant(1, 28_800)
        ledger.configure_class(1, 0, 0, 0, 0, 0)
        ledger.open_merchant(1, 1)
        ledger.open_account(7, 1, 1, 0, 0, 0)
        ledger.bind_card(7_000, 7)
        pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
        conn = await asyncpg.connect(db_dsn)
        redis = _HungRedis()
        feed = ChangeFeed(ledger, MasterData({}, 1, 1, 1, 0), pool, applied=0,
                          redis_url="redis://127.0.0.1:1/0", key="onecard:test:hung",
                          mac_key=b"k" * 32, log=_Log(), retire_terminal=lambda _: None,
                          poll_seconds=0.2)
        try:
            round_ = asyncio.ensure_future(feed._stream_round(redis))
            async with asyncio.timeout(DEADLINE_SECONDS):
                while redis.reads == 0:
                    await asyncio.sleep(0.01)
            lost = await admin.append(conn, AccountStatusChanged(7, 2))
            async with asyncio.timeout(DEADLINE_SECONDS):
                while feed.applied < lost:
                    assert not round_.done(), "applied only after the hung read gave up"
                    await asyncio.sleep(0.01)
            assert ledger.account(7).status == 2
            assert not round_.done(), "the read is still outstanding: the outbox was read meanwhile"
            async with asyncio.timeout(DEADLINE_SECONDS):
                await round_  # and the round ends at its deadline, marking Redis down
            assert any(event == "changefeed.redis_down" for event, _ in feed.log.lines)
        finally:
            await conn.close()
            await pool.close()

    asyncio.run(go())
