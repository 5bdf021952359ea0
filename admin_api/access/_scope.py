"""Where an access object sits in the organisation, and the one change event every write sends.

Access rows carry `tenant_id` and a `node_id` (NULL: the tenant's own node). An object is in a
log-in's subtree when that node is; one outside answers 404 like every other object the
log-in may not see. Every change of an access rule goes out on the change feed as
`AccessChanged(tenant_id)`, in the transaction of the change, so every switch reloads the
tenant's rules within about a second (docs/access.md).
"""

from __future__ import annotations

from typing import Any, Final

import asyncpg

from admin_api._auth import Actor
from admin_api._problems import Problem
from admin_api._store import Change
from protocols.changes import AccessChanged

# Table -> the words a 404 uses. Only these names are ever put into SQL text.
TABLES: Final = {
    "doors": "door",
    "access_areas": "area",
    "access_door_groups": "door group",
    "access_time_zones": "time zone",
    "access_holiday_calendars": "holiday calendar",
    "access_interlocks": "interlock",
}

NODE_JOIN: Final = (
    " JOIN org_nodes n ON n.id = coalesce(x.node_id, (SELECT t.id FROM org_nodes t"
    " WHERE t.kind = 'tenant' AND t.tenant_id = x.tenant_id))"
)
"""Joins `n`, the node of the access row aliased `x` (its own, else its tenant's)."""


async def in_scope(conn: Any, actor: Actor, table: str, object_id: int, *,
                   lock: bool = False) -> asyncpg.Record:
    """The row (with `path`) if the actor sees it; 404 otherwise."""
    what = TABLES[table]
    row = await conn.fetchrow(
        f"SELECT x.*, n.path FROM {table} x{NODE_JOIN} WHERE x.id = $1"
        + (" FOR UPDATE OF x" if lock else ""), object_id)
    actor.require_node(list(row["path"]) if row else None, f"{what} {object_id}")
    return row


async def many_in_scope(conn: Any, actor: Actor, table: str, ids: list[int],
                        tenant_id: int | None = None) -> list[asyncpg.Record]:
    """Every row of `ids` (404 naming the first the actor does not see); 422 if one belongs
    to another tenant than `tenant_id`."""
    what = TABLES[table]
    rows = {r["id"]: r for r in await conn.fetch(
        f"SELECT x.*, n.path FROM {table} x{NODE_JOIN} WHERE x.id = ANY($1::integer[])",
        sorted(set(ids)))}
    out = []
    for i in dict.fromkeys(ids):
        row = rows.get(i)
        actor.require_node(list(row["path"]) if row else None, f"{what} {i}")
        assert row is not None
        if tenant_id is not None and row["tenant_id"] != tenant_id:
            raise Problem(422, "unprocessable", f"{what} {i} belongs to another tenant")
        out.append(row)
    return out


async def node_for_write(conn: Any, actor: Actor, node_id: int) -> asyncpg.Record:
    """The node a new access object hangs under: in the actor's subtree, of a tenant."""
    node = await conn.fetchrow("SELECT id, kind, tenant_id, path FROM org_nodes WHERE id = $1",
                               node_id)
    actor.require_node(list(node["path"]) if node else None, f"node {node_id}")
    if node["tenant_id"] is None:
        raise Problem(422, "unprocessable", "access objects belong to a tenant or one of its "
                      f"departments, not to a {node['kind']}")
    return node


def changed(tx: Change, tenant_id: int, people: list[int] | None = None) -> None:
    tx.event(AccessChanged(tenant_id, sorted(set(people or []))[:1000]))
