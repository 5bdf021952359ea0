"""The admin side's writes: one transaction per change, with its audit row and its outbox rows.

    async with change(pool, actor) as tx:
        before = await tx.conn.fetchrow(...)
        await tx.conn.execute("UPDATE accounts SET status = 2 ...")
        tx.audit("card.report_loss", "card", card_no, node_path, before=..., after=...)
        tx.event(AccountStatusChanged(account_id, 2))

On leaving the block the audit rows are written and the events appended to the outbox (last,
just before COMMIT, as migrations/sql/0002_change_feed.sql asks), all in the one transaction:
a change is never visible without its audit trail, and a switch never misses it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec

from admin_api._auth import Actor
from protocols.changes import ChangeEvent, encode_event

_json = msgspec.json.Encoder()


def jsonable(value: Any) -> Any:
    """A record or struct as JSON-ready builtins (dates as ISO strings)."""
    if value is None:
        return None
    if isinstance(value, asyncpg.Record):
        value = dict(value)
    return msgspec.to_builtins(value, builtin_types=None, str_keys=True)


class Change:
    def __init__(self, conn: asyncpg.Connection, actor: Actor) -> None:
        self.conn = conn
        self.actor = actor
        self._audit: list[tuple[str, str, str, list[int], Any, Any]] = []
        self._events: list[ChangeEvent] = []

    def audit(self, action: str, entity: str, entity_id: object, node_path: list[int], *,
              before: Any = None, after: Any = None) -> None:
        self._audit.append((action, entity, str(entity_id), node_path, jsonable(before),
                            jsonable(after)))

    def event(self, event: ChangeEvent) -> None:
        self._events.append(event)

    async def _finish(self) -> None:
        a = self.actor
        if self._audit:
            await self.conn.executemany(
                "INSERT INTO audit_log (user_id, username, role, client_ip, action, entity,"
                " entity_id, node_path, before, after)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb)",
                [(a.user_id or None, a.username, a.role, a.client_ip, action, entity, eid, path,
                  None if before is None else _json.encode(before).decode(),
                  None if after is None else _json.encode(after).decode())
                 for action, entity, eid, path, before, after in self._audit],
            )
        if self._events:
            # One pipelined round trip for all of them (an import appends 20,000), in order.
            await self.conn.executemany(
                "SELECT outbox_append($1, $2::jsonb)",
                [(kind, payload.decode()) for kind, payload in map(encode_event, self._events)])


@asynccontextmanager
async def change(pool: asyncpg.Pool, actor: Actor) -> AsyncIterator[Change]:
    async with pool.acquire() as conn, conn.transaction():
        tx = Change(conn, actor)
        yield tx
        await tx._finish()


async def node_path(conn: asyncpg.Connection | asyncpg.Pool, node_id: int) -> list[int] | None:
    path = await conn.fetchval("SELECT path FROM org_nodes WHERE id = $1", node_id)
    return list(path) if path is not None else None


async def subtree_root(conn: asyncpg.Connection | asyncpg.Pool, actor: Actor,
                       node_id: int | None) -> int:
    """The node a listing covers the subtree of: `node_id` if the actor sees it (else 404),
    else the actor's own node."""
    if node_id is None:
        return actor.node_id
    actor.require_node(await node_path(conn, node_id), f"node {node_id}")
    return node_id


async def next_id(conn: asyncpg.Connection, table: str, limit: int) -> int:
    """The next dense id of `accounts`, `merchants` or `terminals` (the switch's balance cache
    indexes by id). Takes a lock that serialises creators of that table to their commit."""
    assert table in ("accounts", "merchants", "terminals", "tenants")
    await conn.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
    new = int(await conn.fetchval(f"SELECT coalesce(max(id), 0) + 1 FROM {table}"))
    if new > limit:
        from admin_api._problems import Problem

        raise Problem(409, "capacity", f"no free id left in {table} (at most {limit})")
    return new
