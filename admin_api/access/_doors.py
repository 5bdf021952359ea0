"""Areas, doors (their modes and elevator floors) and readers.

A door belongs to a tenant and to a node of it; its readers are readers of door terminals
(kind 3) of the same tenant. Every change is audited and sends AccessChanged(tenant_id).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import get, post
from litestar.datastructures import State
from msgspec import Meta

from admin_api._auth import Actor
from admin_api._problems import Problem
from admin_api._routes_merchants import terminal_in_scope
from admin_api._store import Change, change, subtree_root
from admin_api._types import Id, IdField, OptionalId
from admin_api.access._scope import NODE_JOIN, changed, in_scope, many_in_scope, node_for_write

Name = Annotated[str, Meta(min_length=1, max_length=200)]
DOOR_KINDS = ("door", "turnstile", "gate", "elevator")
DoorMode = Literal["normal", "office", "security", "multi_card", "first_card", "free", "locked"]
SecurityFactor = Literal["pin", "face", "fingerprint", "face_or_fingerprint"]


# --- Areas -------------------------------------------------------------------------------------


class AreaIn(msgspec.Struct, forbid_unknown_fields=True):
    node_id: IdField
    name: Name
    parent_id: IdField | None = None
    apb: Literal["off", "hard", "timed"] = "off"
    """Anti-passback: 'hard' refuses a second entry until the person left; 'timed' within
    apb_seconds of the last entry."""
    apb_seconds: Annotated[int, Meta(ge=0, le=86_400)] = 0


class AreaOut(msgspec.Struct):
    id: int
    tenant_id: int
    node_id: int | None
    parent_id: int | None
    name: str
    apb: str
    apb_seconds: int


def _area_out(r: asyncpg.Record) -> AreaOut:
    return AreaOut(id=r["id"], tenant_id=r["tenant_id"], node_id=r["node_id"],
                   parent_id=r["parent_id"], name=r["name"], apb=r["apb"],
                   apb_seconds=r["apb_seconds"])


async def _check_area(conn: Any, actor: Actor, data: AreaIn, tenant_id: int,
                      self_id: int | None = None) -> None:
    if data.apb == "timed" and data.apb_seconds == 0:
        raise Problem(422, "unprocessable", "timed anti-passback needs apb_seconds > 0")
    if data.parent_id is not None:
        await many_in_scope(conn, actor, "access_areas", [data.parent_id], tenant_id)
        # No cycles: the parent's ancestors must not include this area.
        if self_id is not None and await conn.fetchval(
                "WITH RECURSIVE up(id, parent_id) AS (SELECT id, parent_id FROM access_areas"
                " WHERE id = $1 UNION SELECT a.id, a.parent_id FROM access_areas a"
                " JOIN up ON a.id = up.parent_id) SELECT true FROM up WHERE id = $2",
                data.parent_id, self_id):
            raise Problem(422, "unprocessable", "an area cannot be inside itself")


@post("/access/areas", opt={"permission": "access.write"}, tags=["access"],
      summary="Add an area (a building, a floor): doors lead into it; anti-passback is per area")
async def create_area(data: AreaIn, actor: Actor, state: State) -> AreaOut:
    async with change(state.pool, actor) as tx:
        node = await node_for_write(tx.conn, actor, data.node_id)
        await _check_area(tx.conn, actor, data, node["tenant_id"])
        row = await tx.conn.fetchrow(
            "INSERT INTO access_areas (tenant_id, node_id, parent_id, name, apb, apb_seconds)"
            " VALUES ($1, $2, $3, $4, $5, $6) RETURNING *", node["tenant_id"], data.node_id,
            data.parent_id, data.name, data.apb, data.apb_seconds)
        out = _area_out(row)
        tx.audit("access.create_area", "access_area", out.id, list(node["path"]), after=out)
        changed(tx, node["tenant_id"])
    return out


@post("/access/areas/{area_id:int}", opt={"permission": "access.write"}, tags=["access"],
      status_code=200, summary="Change an area (name, parent, anti-passback)")
async def update_area(area_id: Id, data: AreaIn, actor: Actor, state: State) -> AreaOut:
    async with change(state.pool, actor) as tx:
        before = await in_scope(tx.conn, actor, "access_areas", area_id, lock=True)
        node = await node_for_write(tx.conn, actor, data.node_id)
        if node["tenant_id"] != before["tenant_id"]:
            raise Problem(422, "unprocessable", "an area stays in its tenant")
        await _check_area(tx.conn, actor, data, before["tenant_id"], area_id)
        row = await tx.conn.fetchrow(
            "UPDATE access_areas SET node_id = $2, parent_id = $3, name = $4, apb = $5,"
            " apb_seconds = $6 WHERE id = $1 RETURNING *", area_id, data.node_id,
            data.parent_id, data.name, data.apb, data.apb_seconds)
        out = _area_out(row)
        tx.audit("access.update_area", "access_area", area_id, list(before["path"]),
                 before=_area_out(before), after=out)
        changed(tx, before["tenant_id"])
    return out


async def _list(state: State, actor: Actor, table: str, node_id: int | None,
                extra: str = "", *args: Any) -> list[asyncpg.Record]:
    scope = await subtree_root(state.pool, actor, node_id)
    return list(await state.pool.fetch(
        f"SELECT x.*, n.path FROM {table} x{NODE_JOIN} WHERE $1 = ANY(n.path){extra}"
        " ORDER BY x.id LIMIT 10000", scope, *args))


@get("/access/areas", opt={"permission": "access.read"}, tags=["access"],
     summary="Areas of your subtree")
async def list_areas(actor: Actor, state: State, node_id: OptionalId = None) -> list[AreaOut]:
    return [_area_out(r) for r in await _list(state, actor, "access_areas", node_id)]


# --- Doors -------------------------------------------------------------------------------------


class DoorIn(msgspec.Struct, forbid_unknown_fields=True):
    node_id: IdField
    name: Name
    area_id: IdField | None = None
    """The area a person is in after passing the door inwards."""
    kind: Literal["door", "turnstile", "gate", "elevator"] = "door"
    mode: DoorMode = "normal"
    mode_time_zone_id: IdField | None = None
    """The window of office and first-card modes."""
    multi_card_count: Annotated[int, Meta(ge=2, le=8)] = 2
    multi_card_window_s: Annotated[int, Meta(ge=1, le=600)] = 30
    open_ms: Annotated[int, Meta(ge=100, le=60_000)] = 3000
    held_open_s: Annotated[int, Meta(ge=1, le=3600)] = 30
    security_factor: SecurityFactor = "pin"
    """Security mode's second factor besides the card: the PIN, or a biometric verification
    of the same person (docs/access.md, step 9)."""
    security_window_s: Annotated[int, Meta(ge=1, le=120)] = 10
    """Security mode with a biometric factor: how long the first factor waits for the other."""


class DoorOut(msgspec.Struct):
    id: int
    tenant_id: int
    node_id: int | None
    area_id: int | None
    name: str
    kind: str
    mode: str
    mode_time_zone_id: int | None
    multi_card_count: int
    multi_card_window_s: int
    open_ms: int
    held_open_s: int
    security_factor: str
    security_window_s: int


def door_out(r: asyncpg.Record) -> DoorOut:
    return DoorOut(id=r["id"], tenant_id=r["tenant_id"], node_id=r["node_id"],
                   area_id=r["area_id"], name=r["name"], kind=r["kind"], mode=r["mode"],
                   mode_time_zone_id=r["mode_time_zone_id"],
                   multi_card_count=r["multi_card_count"],
                   multi_card_window_s=r["multi_card_window_s"], open_ms=r["open_ms"],
                   held_open_s=r["held_open_s"], security_factor=r["security_factor"],
                   security_window_s=r["security_window_s"])


async def _check_mode(conn: Any, actor: Actor, tenant_id: int, mode: str,
                      time_zone_id: int | None) -> None:
    if mode in ("office", "first_card") and time_zone_id is None:
        raise Problem(422, "unprocessable", f"mode {mode} needs mode_time_zone_id (its window)")
    if time_zone_id is not None:
        await many_in_scope(conn, actor, "access_time_zones", [time_zone_id], tenant_id)


async def _check_door(conn: Any, actor: Actor, data: DoorIn, tenant_id: int) -> None:
    if data.area_id is not None:
        await many_in_scope(conn, actor, "access_areas", [data.area_id], tenant_id)
    await _check_mode(conn, actor, tenant_id, data.mode, data.mode_time_zone_id)


_DOOR_COLUMNS = ("node_id", "area_id", "name", "kind", "mode", "mode_time_zone_id",
                 "multi_card_count", "multi_card_window_s", "open_ms", "held_open_s",
                 "security_factor", "security_window_s")


@post("/access/doors", opt={"permission": "access.write"}, tags=["access"],
      summary="Add a door (or turnstile, gate, elevator car)")
async def create_door(data: DoorIn, actor: Actor, state: State) -> DoorOut:
    async with change(state.pool, actor) as tx:
        node = await node_for_write(tx.conn, actor, data.node_id)
        await _check_door(tx.conn, actor, data, node["tenant_id"])
        row = await tx.conn.fetchrow(
            f"INSERT INTO doors (tenant_id, {', '.join(_DOOR_COLUMNS)})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING *",
            node["tenant_id"], *(getattr(data, c) for c in _DOOR_COLUMNS))
        await tx.conn.execute("INSERT INTO access_door_states (door_id, tenant_id)"
                              " VALUES ($1, $2) ON CONFLICT DO NOTHING", row["id"],
                              node["tenant_id"])
        out = door_out(row)
        tx.audit("access.create_door", "door", out.id, list(node["path"]), after=out)
        changed(tx, node["tenant_id"])
    return out


@post("/access/doors/{door_id:int}", opt={"permission": "access.write"}, tags=["access"],
      status_code=200, summary="Change a door (name, area, kind, mode, timings)")
async def update_door(door_id: Id, data: DoorIn, actor: Actor, state: State) -> DoorOut:
    async with change(state.pool, actor) as tx:
        before = await in_scope(tx.conn, actor, "doors", door_id, lock=True)
        node = await node_for_write(tx.conn, actor, data.node_id)
        if node["tenant_id"] != before["tenant_id"]:
            raise Problem(422, "unprocessable", "a door stays in its tenant")
        await _check_door(tx.conn, actor, data, before["tenant_id"])
        sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(_DOOR_COLUMNS, 2))
        row = await tx.conn.fetchrow(f"UPDATE doors SET {sets} WHERE id = $1 RETURNING *",
                                     door_id, *(getattr(data, c) for c in _DOOR_COLUMNS))
        out = door_out(row)
        tx.audit("access.update_door", "door", door_id, list(before["path"]),
                 before=door_out(before), after=out)
        changed(tx, before["tenant_id"])
    return out


class ModeIn(msgspec.Struct, forbid_unknown_fields=True):
    mode: DoorMode
    mode_time_zone_id: IdField | None = None
    security_factor: SecurityFactor | None = None
    """Security mode's second factor; None keeps the door's."""


@post("/access/doors/{door_id:int}/mode", opt={"permission": "access.write"}, tags=["access"],
      status_code=200, summary="Set a door's mode (normal, office, security, multi-card, "
      "first-card, free passage, locked)")
async def set_door_mode(door_id: Id, data: ModeIn, actor: Actor, state: State) -> DoorOut:
    async with change(state.pool, actor) as tx:
        before = await in_scope(tx.conn, actor, "doors", door_id, lock=True)
        await _check_mode(tx.conn, actor, before["tenant_id"], data.mode, data.mode_time_zone_id)
        row = await tx.conn.fetchrow(
            "UPDATE doors SET mode = $2, mode_time_zone_id = $3,"
            " security_factor = coalesce($4, security_factor) WHERE id = $1 RETURNING *",
            door_id, data.mode, data.mode_time_zone_id, data.security_factor)
        out = door_out(row)
        tx.audit("access.set_door_mode", "door", door_id, list(before["path"]),
                 before=door_out(before), after=out)
        changed(tx, before["tenant_id"])
    return out


@get("/access/doors", opt={"permission": "access.read"}, tags=["access"],
     summary="Doors of your subtree")
async def list_doors(actor: Actor, state: State, node_id: OptionalId = None) -> list[DoorOut]:
    return [door_out(r) for r in await _list(state, actor, "doors", node_id)]


@get("/access/doors/{door_id:int}", opt={"permission": "access.read"}, tags=["access"],
     summary="One door")
async def get_door(door_id: Id, actor: Actor, state: State) -> DoorOut:
    return door_out(await in_scope(state.pool, actor, "doors", door_id))


async def doors_in_scope(conn: Any, actor: Actor, door_ids: list[int]) -> list[asyncpg.Record]:
    """For visitors and patrol: the doors, each in the actor's subtree (404 otherwise)."""
    return await many_in_scope(conn, actor, "doors", door_ids)


# --- Elevator floors ---------------------------------------------------------------------------


class FloorIn(msgspec.Struct, forbid_unknown_fields=True):
    floor_no: Annotated[int, Meta(ge=0, le=63)]
    """The floor's bit in a grant's floor mask."""
    name: Annotated[str, Meta(max_length=200)] = ""


class FloorsIn(msgspec.Struct, forbid_unknown_fields=True):
    floors: Annotated[list[FloorIn], Meta(max_length=64)]


@post("/access/doors/{door_id:int}/floors", opt={"permission": "access.write"},
      tags=["access"], status_code=200,
      summary="Set an elevator's floors (梯控): replaces the list")
async def set_floors(door_id: Id, data: FloorsIn, actor: Actor, state: State) -> list[FloorIn]:
    if len({f.floor_no for f in data.floors}) != len(data.floors):
        raise Problem(422, "unprocessable", "a floor number appears twice")
    async with change(state.pool, actor) as tx:
        door = await in_scope(tx.conn, actor, "doors", door_id, lock=True)
        if door["kind"] != "elevator":
            raise Problem(422, "unprocessable", "only an elevator has floors")
        before = await _floors(tx.conn, door_id)
        await tx.conn.execute("DELETE FROM access_floors WHERE door_id = $1", door_id)
        await tx.conn.executemany(
            "INSERT INTO access_floors (door_id, floor_no, name) VALUES ($1, $2, $3)",
            [(door_id, f.floor_no, f.name) for f in data.floors])
        out = sorted(data.floors, key=lambda f: f.floor_no)
        tx.audit("access.set_floors", "door", door_id, list(door["path"]), before=before,
                 after=out)
        changed(tx, door["tenant_id"])
    return out


async def _floors(conn: Any, door_id: int) -> list[FloorIn]:
    return [FloorIn(r["floor_no"], r["name"]) for r in await conn.fetch(
        "SELECT floor_no, name FROM access_floors WHERE door_id = $1 ORDER BY floor_no",
        door_id)]


@get("/access/doors/{door_id:int}/floors", opt={"permission": "access.read"}, tags=["access"],
     summary="An elevator's floors")
async def get_floors(door_id: Id, actor: Actor, state: State) -> list[FloorIn]:
    await in_scope(state.pool, actor, "doors", door_id)
    return await _floors(state.pool, door_id)


# --- Readers -----------------------------------------------------------------------------------


class ReaderIn(msgspec.Struct, forbid_unknown_fields=True):
    terminal_id: IdField
    """A door terminal (kind door) of the door's tenant."""
    reader_no: Annotated[int, Meta(ge=1, le=16)]
    door_id: IdField
    direction: Literal["in", "out", "request"] = "in"
    """'request': the access request says which way."""
    purpose: Literal["access", "patrol"] = "access"
    """'patrol': a guard-patrol checkpoint (records, no decision)."""


class ReaderOut(msgspec.Struct):
    id: int
    terminal_id: int
    reader_no: int
    door_id: int
    direction: str
    purpose: str


_DIRECTIONS = ("in", "out", "request")


def _reader_out(r: asyncpg.Record) -> ReaderOut:
    return ReaderOut(id=r["id"], terminal_id=r["terminal_id"], reader_no=r["reader_no"],
                     door_id=r["door_id"], direction=_DIRECTIONS[r["direction"]],
                     purpose=r["purpose"])


@post("/access/readers", opt={"permission": "access.write"}, tags=["access"],
      summary="Attach a reader of a door terminal to a door")
async def create_reader(data: ReaderIn, actor: Actor, state: State) -> ReaderOut:
    async with change(state.pool, actor) as tx:
        [door] = await doors_in_scope(tx.conn, actor, [data.door_id])
        terminal = await terminal_in_scope(tx.conn, actor, data.terminal_id)
        if terminal["kind"] != 3:
            raise Problem(422, "unprocessable", "a reader belongs to a door terminal (kind door)")
        if terminal["tenant_id"] != door["tenant_id"]:
            raise Problem(422, "unprocessable", "the terminal and the door are of different "
                          "tenants")
        if await tx.conn.fetchval("SELECT true FROM access_readers WHERE terminal_id = $1"
                                  " AND reader_no = $2", data.terminal_id, data.reader_no):
            raise Problem(409, "conflict", f"terminal {data.terminal_id} already has reader "
                          f"{data.reader_no}")
        row = await tx.conn.fetchrow(
            "INSERT INTO access_readers (tenant_id, terminal_id, reader_no, door_id, direction,"
            " purpose) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *", door["tenant_id"],
            data.terminal_id, data.reader_no, data.door_id, _DIRECTIONS.index(data.direction),
            data.purpose)
        out = _reader_out(row)
        tx.audit("access.create_reader", "access_reader", out.id, list(door["path"]), after=out)
        changed(tx, door["tenant_id"])
    return out


@get("/access/doors/{door_id:int}/readers", opt={"permission": "access.read"},
     tags=["access"], summary="A door's readers")
async def list_readers(door_id: Id, actor: Actor, state: State) -> list[ReaderOut]:
    await in_scope(state.pool, actor, "doors", door_id)
    rows = await state.pool.fetch("SELECT * FROM access_readers WHERE door_id = $1 ORDER BY id",
                                  door_id)
    return [_reader_out(r) for r in rows]


# --- For visitor passes --------------------------------------------------------------------------


async def grant_person_doors(tx: Change, person_id: int, host: asyncpg.Record,
                             door_ids: list[int], valid_from: dt.datetime,
                             valid_until: dt.datetime) -> int:
    """A door group of exactly these doors and a person grant on it for the window (the
    engine refuses outside it by itself); the grant's id."""
    group_id = await tx.conn.fetchval(
        "INSERT INTO access_door_groups (tenant_id, node_id, name) VALUES ($1, $2, $3)"
        " RETURNING id", host["tenant_id"], host["node_id"], f"visitor {person_id}")
    await tx.conn.executemany(
        "INSERT INTO access_door_group_doors (door_group_id, door_id) VALUES ($1, $2)",
        [(group_id, d) for d in sorted(set(door_ids))])
    grant_id = await tx.conn.fetchval(
        "INSERT INTO access_grants (tenant_id, subject, person_id, door_group_id, valid_from,"
        " valid_until) VALUES ($1, 'person', $2, $3, $4, $5) RETURNING id", host["tenant_id"],
        person_id, group_id, valid_from, valid_until)
    changed(tx, host["tenant_id"], [person_id])
    return int(grant_id)


async def revoke_person_grants(tx: Change, person_id: int) -> None:
    tenant_id = await tx.conn.fetchval(
        "DELETE FROM access_grants WHERE subject = 'person' AND person_id = $1"
        " RETURNING tenant_id", person_id)
    if tenant_id is not None:
        changed(tx, tenant_id, [person_id])


async def credential_usage(pool: asyncpg.Pool, card_nos: list[int], since: dt.datetime,
                           until: dt.datetime) -> dict[int, tuple[int, int, dt.datetime | None,
                                                                  dt.datetime | None]]:
    """card_no -> (entries opened, refusals, first entry, last entry) in [since, until)."""
    rows = await pool.fetch(
        "SELECT card_no, count(*) FILTER (WHERE code = 0) AS entries,"
        " count(*) FILTER (WHERE code <> 0) AS denied,"
        " min(committed_at) FILTER (WHERE code = 0) AS first,"
        " max(committed_at) FILTER (WHERE code = 0) AS last"
        " FROM access_decisions WHERE card_no = ANY($1::bigint[])"
        " AND committed_at >= $2 AND committed_at < $3 GROUP BY card_no", card_nos, since, until)
    return {r["card_no"]: (r["entries"], r["denied"], r["first"], r["last"]) for r in rows}


ROUTES = [create_area, update_area, list_areas, create_door, update_door, set_door_mode,
          list_doors, get_door, set_floors, get_floors, create_reader, list_readers]
