"""Door commands: the security desk opens a door once, holds it open or locked, or sets it back
to normal, from the console (issue 13; docs/access-admin.md, "Door commands").

POST inserts the command ('pending'), audits it and appends a `door_command` change event in
one transaction; the switch that holds a session of the door's terminal sends it (DoorCommand,
docs/protocol.md 4.5) and records what became of it. Nothing here waits for the door: the
answer is 202 with the command, and the console polls GET /access/door-commands/{id}.
At most once: a command is never resent; an 'offline' or 'expired' one stays so.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import asyncpg
import msgspec
from litestar import get, post
from litestar.datastructures import State
from litestar.params import Parameter
from msgspec import Meta

from admin_api._auth import Actor
from admin_api._problems import Problem
from admin_api._store import change
from admin_api._types import Id
from admin_api.access._scope import NODE_JOIN, in_scope
from protocols.changes import DoorCommandRequested

DoorAction = Literal["open_once", "hold_open", "hold_locked", "normal"]
COMMANDS_LISTED_MAX = 200
CommandsLimit = Annotated[int, Parameter(ge=1, le=COMMANDS_LISTED_MAX,
                                         description="commands listed (1..200)")]


class DoorCommandIn(msgspec.Struct, forbid_unknown_fields=True):
    action: DoorAction
    open_ms: Annotated[int, Meta(ge=1000, le=30_000)] | None = None
    """open_once only: how long the door stays unlocked (default: the door's open_ms)."""
    note: Annotated[str, Meta(max_length=500)] = ""


class DoorCommandOut(msgspec.Struct):
    id: int
    door_id: int
    tenant_id: int
    action: str
    open_ms: int
    state: str
    """pending, sent, done, failed, offline, unsupported, expired (docs/access-admin.md)."""
    state_at: dt.datetime
    requested_at: dt.datetime
    requested_by: int | None
    note: str
    ack_code: int | None
    terminal_id: int | None
    reader_no: int | None


def _out(r: asyncpg.Record) -> DoorCommandOut:
    return DoorCommandOut(id=r["id"], door_id=r["door_id"], tenant_id=r["tenant_id"],
                          action=r["action"], open_ms=r["open_ms"], state=r["state"],
                          state_at=r["state_at"], requested_at=r["requested_at"],
                          requested_by=r["requested_by"], note=r["note"],
                          ack_code=r["ack_code"], terminal_id=r["terminal_id"],
                          reader_no=r["reader_no"])


@post("/access/doors/{door_id:int}/commands", opt={"permission": "access.control"},
      tags=["access"], status_code=202,
      summary="Tell a door to open once, hold open, hold locked or go back to normal")
async def create_door_command(door_id: Id, data: DoorCommandIn, actor: Actor,
                              state: State) -> DoorCommandOut:
    if data.open_ms is not None and data.action != "open_once":
        raise Problem(400, "invalid-request", "open_ms is for open_once only")
    async with change(state.pool, actor) as tx:
        door = await in_scope(tx.conn, actor, "doors", door_id)
        open_ms = (data.open_ms or door["open_ms"]) if data.action == "open_once" else 0
        row = await tx.conn.fetchrow(
            "INSERT INTO door_commands (tenant_id, door_id, action, open_ms, requested_by, note)"
            " VALUES ($1, $2, $3, $4, $5, $6) RETURNING *", door["tenant_id"], door_id,
            data.action, open_ms, actor.user_id or None, data.note)
        out = _out(row)
        tx.audit("access.door_command", "door", door_id, list(door["path"]), after=out)
        tx.event(DoorCommandRequested(out.id, out.tenant_id, door_id, data.action, open_ms))
    return out


@get("/access/doors/{door_id:int}/commands", opt={"permission": "access.read"},
     tags=["access"], summary="A door's latest commands, newest first")
async def list_door_commands(door_id: Id, actor: Actor, state: State,
                             limit: CommandsLimit = 20) -> list[DoorCommandOut]:
    await in_scope(state.pool, actor, "doors", door_id)
    rows = await state.pool.fetch(
        "SELECT * FROM door_commands WHERE door_id = $1 ORDER BY id DESC LIMIT $2",
        door_id, limit)
    return [_out(r) for r in rows]


@get("/access/door-commands/{command_id:int}", opt={"permission": "access.read"},
     tags=["access"], summary="One door command and its state")
async def get_door_command(command_id: Id, actor: Actor, state: State) -> DoorCommandOut:
    # One query and one 404 text whether the command does not exist or is out of the
    # log-in's part: another park learns neither command ids nor door ids.
    row = await state.pool.fetchrow(
        "SELECT c.*, n.path FROM door_commands c JOIN doors x ON x.id = c.door_id"
        f"{NODE_JOIN} WHERE c.id = $1", command_id)
    actor.require_node(list(row["path"]) if row else None, f"door command {command_id}")
    return _out(row)


ROUTES = [create_door_command, list_door_commands, get_door_command]
