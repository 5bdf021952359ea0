"""The outbox relay: change_outbox rows in PostgreSQL -> entries of a Redis Stream.

Each row becomes the entry `<outbox id>-0` with a field `prev`, the outbox id published before
it. Explicit ids make publishing idempotent, so any number of relays may run (one in every
switch by default): an XADD at or below the stream's top is "already there". The relay keeps no
state of its own: it starts where the stream's top is, and when there is no stream (Redis lost
it) it republishes the newest CHANGEFEED_BACKFILL_ROWS_MAX rows. It wakes on the
`onecard_outbox` notification and also polls, in case a notification is missed.

A stream whose top is above the newest outbox id is not this database's history (the database
was restored from a backup, or someone wrote to the key): the relay deletes it and starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
from redis.exceptions import RedisError, ResponseError

from switch import _metrics as metrics
from switch import limits
from switch._change_events import FeedEntry, entry_fields
from switch._errors import DATABASE_FAILURES
from switch._outbox import OutboxRow, fetch_after, raise_if_cancelled, redis_client, stream_top
from switch._settings import redacted_url

_CHANNEL = "onecard_outbox"
_ALREADY_THERE = "equal or smaller than the target stream top"
_FAILURES: tuple[type[Exception], ...] = (*DATABASE_FAILURES, RedisError)


class OutboxRelay:
    def __init__(self, dsn: str, redis_url: str, key: str, mac_key: bytes, log: Any, *,
                 poll_seconds: float = limits.CHANGEFEED_POLL_SECONDS) -> None:
        self._dsn = dsn
        self._redis_url = redis_url
        self._key = key
        self._mac_key = mac_key
        self._poll_seconds = poll_seconds
        self.log = log
        self.position = 0
        self._failing = False

    async def run(self) -> None:
        """Publish until cancelled; failures of PostgreSQL or Redis are retried, not raised."""
        while True:
            try:
                await self._run_connected()
            except _FAILURES as exc:
                metrics.changefeed_relay_up.set(0)
                if not self._failing:
                    self._failing = True
                    self.log.warning("relay.failed", error=str(exc) or type(exc).__name__,
                                     redis=redacted_url(self._redis_url), stream=self._key)
            raise_if_cancelled()
            await asyncio.sleep(limits.CHANGEFEED_REDIS_RETRY_SECONDS)

    async def _run_connected(self) -> None:
        woken = asyncio.Event()
        async with asyncio.timeout(limits.CHANGEFEED_QUERY_DEADLINE_SECONDS):
            conn = await asyncpg.connect(
                self._dsn, server_settings={"application_name": "onecard-relay"}
            )
        client = redis_client(self._redis_url)
        try:
            await conn.add_listener(_CHANNEL, lambda *_: woken.set())
            self.position = await self._start_position(conn, client)
            metrics.changefeed_relay_up.set(1)
            if self._failing:
                self._failing = False
                self.log.info("relay.recovered", position=self.position, stream=self._key)
            while True:
                raise_if_cancelled()
                woken.clear()
                async with asyncio.timeout(limits.CHANGEFEED_QUERY_DEADLINE_SECONDS):
                    rows = await fetch_after(conn, self.position)
                if rows:
                    await self._publish(conn, client, rows)
                    continue  # more may have come meanwhile; the next fetch tells
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_seconds):
                        await woken.wait()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), 2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)

    async def _start_position(self, conn: asyncpg.Connection, client: Any) -> int:
        """Where to publish from. The stream's top is read BEFORE the outbox's newest id: every
        entry was committed before it was published, so a top above that id is not ours."""
        async with asyncio.timeout(limits.REDIS_DEADLINE_SECONDS):
            top = await stream_top(client, self._key)
        async with asyncio.timeout(limits.CHANGEFEED_QUERY_DEADLINE_SECONDS):
            newest = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM change_outbox"))
            if top is not None and top <= newest:
                return top
            if top is not None:
                self.log.error("relay.stream_not_ours", stream=self._key, stream_top=top,
                               outbox_newest=newest)
                async with asyncio.timeout(limits.REDIS_DEADLINE_SECONDS):
                    await client.delete(self._key)
            # No stream: republish the newest rows. The row before them is the first `prev`
            # (0 when there is none), so a switch that had applied it goes on smoothly.
            before = await conn.fetchval(
                "SELECT id FROM change_outbox ORDER BY id DESC OFFSET $1 LIMIT 1",
                limits.CHANGEFEED_BACKFILL_ROWS_MAX,
            )
        start = int(before or 0)
        self.log.info("relay.backfill", stream=self._key, after=start, newest=newest)
        return start

    async def _publish(self, conn: asyncpg.Connection, client: Any,
                       rows: list[OutboxRow]) -> None:
        pipe = client.pipeline(transaction=False)
        prev = self.position
        for row in rows:
            entry = FeedEntry(row.id, prev, row.kind, row.payload, row.created_us)
            pipe.xadd(self._key, entry_fields(entry, self._mac_key), id=f"{row.id}-0",
                      maxlen=limits.CHANGEFEED_STREAM_ENTRIES_MAX, approximate=True)
            prev = row.id
        async with asyncio.timeout(limits.REDIS_DEADLINE_SECONDS):
            results = await pipe.execute(raise_on_error=False)
        added = already = 0
        for result in results:
            if isinstance(result, ResponseError) and _ALREADY_THERE in str(result):
                already += 1  # another relay was first
            elif isinstance(result, BaseException):
                raise result
            else:
                added += 1
        metrics.changefeed_published_total.inc(added)
        self.position = rows[-1].id
        if already == len(rows):
            # Nothing of ours went in: another relay is ahead (go on from its top), or the
            # stream is not ours (it is deleted and the newest rows republished).
            self.position = await self._start_position(conn, client)
