"""The change outbox in PostgreSQL and its copy in a Redis Stream: reading both.

Shared by the relay (outbox -> stream) and the change feed (stream, else outbox -> caches).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from switch import limits

if TYPE_CHECKING:
    import asyncpg

# created_at as microseconds since the epoch: the entries carry it, the lag is measured from it.
_SELECT_AFTER = (
    "SELECT id, kind, payload::text, (extract(epoch FROM created_at) * 1000000)::bigint"
    " FROM change_outbox WHERE id > $1 ORDER BY id LIMIT $2"
)
STREAM_KEY_PREFIX = "onecard:changes:"


class OutboxRow:
    __slots__ = ("created_us", "id", "kind", "payload")

    def __init__(self, row: Any) -> None:
        self.id: int = row[0]
        self.kind: str = row[1]
        self.payload: bytes = row[2].encode()
        self.created_us: int = row[3]


async def fetch_after(conn: asyncpg.Connection | asyncpg.Pool, after: int,
                      limit: int = limits.CHANGEFEED_BATCH_MAX) -> list[OutboxRow]:
    """Outbox rows with id > after, oldest first. Ids are drawn in commit order (see the
    migration), so nothing committed later can have an id below the last one returned."""
    return [OutboxRow(r) for r in await conn.fetch(_SELECT_AFTER, after, limit)]


async def outbox_position(conn: asyncpg.Connection) -> int:
    """The newest outbox id (0 when empty). Read in the recovery snapshot, it is the position
    whose changes that snapshot's master data already holds."""
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM change_outbox"))


def stream_key(setting: str, database: str) -> str:
    """The stream of this database's outbox: one stream per database, so two sites (or two
    test databases) sharing a Redis never read each other's changes."""
    return setting or STREAM_KEY_PREFIX + database


def raise_if_cancelled() -> None:
    """redis-py can swallow the CancelledError of a command it is connecting or reading for;
    the task would then run on, and a graceful stop (which cancels it) would wait for it
    forever. The task still counts the cancellation (Task.cancelling): honour it. Loops that
    call Redis call this once a round."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def redis_client(url: str) -> aioredis.Redis:
    """A client that fails fast: callers put every command under a deadline and fall back to
    PostgreSQL, so redis-py's own retries would only delay that."""
    return aioredis.Redis.from_url(
        url,
        retry=Retry(NoBackoff(), 0),
        socket_connect_timeout=limits.REDIS_DEADLINE_SECONDS,
        decode_responses=False,
    )


async def stream_top(client: aioredis.Redis, key: str) -> int | None:
    """The outbox id of the stream's last generated entry, None when there is no stream (Redis
    restarted, or the key was deleted). Trimmed entries still count: XADD must go above it."""
    try:
        info = await client.xinfo_stream(key)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return None
        raise
    last = info["last-generated-id"]
    return int(last.split(b"-", 1)[0])
