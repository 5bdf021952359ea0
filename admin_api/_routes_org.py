"""The organisation tree (up to seven levels under the platform) and identity classes."""

from __future__ import annotations

from typing import Annotated, Literal

import asyncpg
import msgspec
from litestar import get, post
from litestar.datastructures import State
from msgspec import Meta

from admin_api._auth import Actor
from admin_api._money import ensure_system_accounts
from admin_api._problems import Problem
from admin_api._store import change, next_id
from admin_api._types import ClassIdParam, Id, IdField
from protocols.changes import ClassConfigured, TenantConfigured

DEPTH_MAX = 7
TENANTS_MAX = 4096
Name = Annotated[str, Meta(min_length=1, max_length=200)]
Fen = Annotated[int, Meta(ge=0, le=10**12)]

# Which kind of node may hang under which.
_CHILD_KINDS: dict[str, frozenset[str]] = {
    "platform": frozenset({"agent", "tenant"}),
    "agent": frozenset({"agent", "tenant"}),
    "tenant": frozenset({"department"}),
    "department": frozenset({"department"}),
}


class NodeIn(msgspec.Struct, forbid_unknown_fields=True):
    parent_id: IdField
    kind: Literal["agent", "tenant", "department"]
    name: Name
    utc_offset_s: Annotated[int, Meta(ge=-50_400, le=50_400)] = 28_800
    """For a tenant: its local time's offset from UTC (meal windows and daily limits)."""


class NodeOut(msgspec.Struct):
    id: int
    parent_id: int | None
    kind: str
    name: str
    tenant_id: int | None
    path: list[int]
    depth: int


def node_out(r: asyncpg.Record) -> NodeOut:
    return NodeOut(id=r["id"], parent_id=r["parent_id"], kind=r["kind"], name=r["name"],
                   tenant_id=r["tenant_id"], path=list(r["path"]), depth=r["depth"])


_NODE_COLUMNS = "id, parent_id, kind, name, tenant_id, path, depth"


@get("/org/nodes", opt={"permission": "org.read"}, tags=["organisation"],
     summary="Your subtree of the organisation, root first")
async def list_nodes(actor: Actor, state: State) -> list[NodeOut]:
    rows = await state.pool.fetch(
        f"SELECT {_NODE_COLUMNS} FROM org_nodes WHERE $1 = ANY(path) ORDER BY depth, id"
        " LIMIT 10000", actor.node_id)
    return [node_out(r) for r in rows]


@get("/org/nodes/{node_id:int}", opt={"permission": "org.read"}, tags=["organisation"],
     summary="One node of your subtree")
async def get_node(node_id: Id, actor: Actor, state: State) -> NodeOut:
    row = await state.pool.fetchrow(f"SELECT {_NODE_COLUMNS} FROM org_nodes WHERE id = $1",
                                    node_id)
    actor.require_node(list(row["path"]) if row else None, f"node {node_id}")
    return node_out(row)


@post("/org/nodes", opt={"permission": "org.write"}, tags=["organisation"],
      summary="Add an agent, a tenant (a site run on its own) or a department")
async def create_node(data: NodeIn, actor: Actor, state: State) -> NodeOut:
    async with change(state.pool, actor) as tx:
        parent = await tx.conn.fetchrow(
            f"SELECT {_NODE_COLUMNS} FROM org_nodes WHERE id = $1 FOR SHARE", data.parent_id)
        actor.require_node(list(parent["path"]) if parent else None, f"node {data.parent_id}")
        if data.kind not in _CHILD_KINDS[parent["kind"]]:
            raise Problem(422, "unprocessable",
                          f"a {data.kind} cannot be placed under a {parent['kind']}")
        if parent["depth"] >= DEPTH_MAX:
            raise Problem(422, "unprocessable", f"at most {DEPTH_MAX} levels under the platform")
        tenant_id = parent["tenant_id"]
        if data.kind == "tenant":
            tenant_id = await next_id(tx.conn, "tenants", TENANTS_MAX)
            await tx.conn.execute(
                "INSERT INTO tenants (id, name, utc_offset_s) VALUES ($1, $2, $3)",
                tenant_id, data.name, data.utc_offset_s)
            tx.event(TenantConfigured(tenant_id, data.utc_offset_s, []))
        node_id = await tx.conn.fetchval("SELECT nextval('org_nodes_id_seq')")
        if data.kind == "tenant":
            await ensure_system_accounts(tx.conn, tenant_id, None, tx.event)
        row = await tx.conn.fetchrow(
            f"INSERT INTO org_nodes (id, parent_id, kind, name, tenant_id, path, depth)"
            f" VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_NODE_COLUMNS}",
            node_id, parent["id"], data.kind, data.name, tenant_id,
            [*parent["path"], node_id], parent["depth"] + 1,
        )
        out = node_out(row)
        tx.audit("org.create_node", "org_node", node_id, out.path, after=out)
    return out


class ClassIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    overdraft_fen: Fen = 0
    txn_limit_fen: Fen = 0
    """0: no limit."""
    daily_limit_fen: Fen = 0
    meal_count_max: Annotated[int, Meta(ge=0, le=1000)] = 0
    meal_amount_max_fen: Fen = 0


class ClassOut(ClassIn):
    id: int = 0


def _class_out(r: asyncpg.Record) -> ClassOut:
    return ClassOut(id=r["id"], name=r["name"], overdraft_fen=r["overdraft_fen"],
                    txn_limit_fen=r["txn_limit_fen"], daily_limit_fen=r["daily_limit_fen"],
                    meal_count_max=r["meal_count_max"],
                    meal_amount_max_fen=r["meal_amount_max_fen"])


@get("/classes", opt={"permission": "org.read"}, tags=["organisation"],
     summary="Identity classes (student, staff, visitor...) and their limits")
async def list_classes(state: State) -> list[ClassOut]:
    rows = await state.pool.fetch("SELECT * FROM identity_classes ORDER BY id")
    return [_class_out(r) for r in rows]


def _require_platform(actor: Actor) -> None:
    if len(actor.node_path) != 1:
        raise Problem(403, "forbidden", "identity classes are platform-wide: only a log-in at "
                      "the platform node changes them")


@post("/classes", opt={"permission": "org.write"}, tags=["organisation"],
      summary="Add an identity class (platform node only)")
async def create_class(data: ClassIn, actor: Actor, state: State) -> ClassOut:
    _require_platform(actor)
    async with change(state.pool, actor) as tx:
        class_id = await tx.conn.fetchval(
            "SELECT coalesce(max(id), 0) + 1 FROM identity_classes")
        if class_id > 255:
            raise Problem(409, "capacity", "at most 255 identity classes")
        row = await tx.conn.fetchrow(
            "INSERT INTO identity_classes VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
            class_id, data.name, data.overdraft_fen, data.txn_limit_fen, data.daily_limit_fen,
            data.meal_count_max, data.meal_amount_max_fen)
        out = _class_out(row)
        tx.audit("class.create", "identity_class", class_id, actor.node_path, after=out)
        tx.event(ClassConfigured(class_id, data.overdraft_fen, data.txn_limit_fen,
                                 data.daily_limit_fen, data.meal_count_max,
                                 data.meal_amount_max_fen))
    return out


@post("/classes/{class_id:int}", opt={"permission": "org.write"}, tags=["organisation"],
      status_code=200, summary="Change an identity class's overdraft and limits")
async def update_class(class_id: ClassIdParam, data: ClassIn, actor: Actor, state: State
                       ) -> ClassOut:
    _require_platform(actor)
    async with change(state.pool, actor) as tx:
        before = await tx.conn.fetchrow(
            "SELECT * FROM identity_classes WHERE id = $1 FOR UPDATE", class_id)
        if before is None:
            raise Problem(404, "not-found", f"no identity class {class_id}")
        row = await tx.conn.fetchrow(
            "UPDATE identity_classes SET name = $2, overdraft_fen = $3, txn_limit_fen = $4,"
            " daily_limit_fen = $5, meal_count_max = $6, meal_amount_max_fen = $7"
            " WHERE id = $1 RETURNING *",
            class_id, data.name, data.overdraft_fen, data.txn_limit_fen, data.daily_limit_fen,
            data.meal_count_max, data.meal_amount_max_fen)
        out = _class_out(row)
        tx.audit("class.update", "identity_class", class_id, actor.node_path,
                 before=_class_out(before), after=out)
        tx.event(ClassConfigured(class_id, data.overdraft_fen, data.txn_limit_fen,
                                 data.daily_limit_fen, data.meal_count_max,
                                 data.meal_amount_max_fen))
    return out


ROUTES = [list_nodes, get_node, create_node, list_classes, create_class, update_class]
