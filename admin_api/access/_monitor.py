"""What the doors did: the access record query, alarms and their acknowledgement, door states
for the e-map, and the ADMS devices registered to push to `onecard adms`.

The records, alarms and states are written by the switch (and the patrol checker, the ADMS
edge); here they are read, and an alarm is acknowledged with a note by a log-in holding
`alarms.ack` (the security desk, a tenant admin).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import get, post
from litestar.datastructures import State
from litestar.params import Parameter
from msgspec import Meta

from admin_api._auth import Actor
from admin_api._problems import Problem
from admin_api._store import change, subtree_root
from admin_api._types import After, Id, IdField, Limit, OptionalId, TimeQuery, parse_time
from admin_api.access._scope import NODE_JOIN, in_scope, many_in_scope, node_for_write

CREDENTIAL_KINDS = {1: "card", 2: "face", 3: "fingerprint", 4: "qr"}
SOURCES = {0: "online", 1: "offline", 2: "adms"}


class RecordOut(msgspec.Struct):
    id: int
    at: dt.datetime
    door_id: int
    door: str
    terminal_id: int
    reader_no: int
    direction: str
    source: str
    credential_kind: str
    card_no: int
    person_id: int | None
    opened: bool
    code: int
    """0: opened; else the deny reason (docs/access.md)."""
    duress: bool


class RecordPage(msgspec.Struct):
    items: list[RecordOut]
    next_after: int | None


@get("/access/records", opt={"permission": "access.read"}, tags=["access"],
     summary="Access records (every decision, opened or denied) of your subtree's doors, "
     "newest first, paged")
async def list_records(actor: Actor, state: State, node_id: OptionalId = None,
                       door_id: OptionalId = None, person_id: OptionalId = None,
                       opened: bool | None = None, since: TimeQuery = None,
                       until: TimeQuery = None, after: After = 0,
                       limit: Limit = 100) -> RecordPage:
    """`after`: the last id of the previous page (records come newest first, so the next page
    holds smaller ids)."""
    since_t, until_t = _times(since, until)
    for t in (since_t, until_t):
        if t is not None and t.tzinfo is None:
            raise Problem(422, "unprocessable", "since and until need a time zone")
    scope = await subtree_root(state.pool, actor, node_id)
    if door_id is not None:
        await in_scope(state.pool, actor, "doors", door_id)
    account_id = None
    if person_id is not None:
        from admin_api._routes_people import person_in_scope

        account_id = (await person_in_scope(state.pool, actor, person_id))["account_id"]
    rows = await state.pool.fetch(
        "SELECT d.*, x.name AS door, p.id AS person_id FROM access_decisions d"
        " JOIN doors x ON x.id = d.door_id" + NODE_JOIN
        + " LEFT JOIN people p ON p.account_id = d.account_id AND d.account_id <> 0"
        " WHERE $1 = ANY(n.path) AND ($2 = 0 OR d.id < $2)"
        " AND ($3::integer IS NULL OR d.door_id = $3)"
        " AND ($4::integer IS NULL OR d.account_id = $4)"
        " AND ($5::boolean IS NULL OR (d.code = 0) = $5)"
        " AND ($6::timestamptz IS NULL OR d.committed_at >= $6)"
        " AND ($7::timestamptz IS NULL OR d.committed_at < $7)"
        " ORDER BY d.id DESC LIMIT $8",
        scope, after, door_id, account_id, opened, since_t, until_t, limit + 1)
    items = [RecordOut(id=r["id"], at=r["committed_at"], door_id=r["door_id"], door=r["door"],
                       terminal_id=r["terminal_id"], reader_no=r["reader_no"],
                       direction="in" if r["direction"] == 0 else "out",
                       source=SOURCES.get(r["source"], str(r["source"])),
                       credential_kind=CREDENTIAL_KINDS.get(r["credential_kind"], "?"),
                       card_no=r["card_no"], person_id=r["person_id"], opened=r["code"] == 0,
                       code=r["code"], duress=r["duress"]) for r in rows[:limit]]
    return RecordPage(items=items, next_after=items[-1].id if len(rows) > limit else None)


class AlarmOut(msgspec.Struct):
    id: int
    tenant_id: int
    kind: str
    state: str
    door_id: int | None
    area_id: int | None
    card_no: int | None
    detail: str
    raised_at: dt.datetime
    note: str
    acknowledged_by: int | None
    acknowledged_at: dt.datetime | None
    cleared_at: dt.datetime | None
    cleared_reason: str | None
    """What ended it: 'event' (the door event that ends it), 'acknowledged' (a momentary
    alarm, ended by its acknowledgement) or 'passed' (an anti-passback alarm, ended by the
    person's next pass in the area)."""


class AlarmPage(msgspec.Struct):
    items: list[AlarmOut]
    next_after: int | None


def _alarm_out(r: asyncpg.Record) -> AlarmOut:
    return AlarmOut(id=r["id"], tenant_id=r["tenant_id"], kind=r["kind"], state=r["state"],
                    door_id=r["door_id"], area_id=r["area_id"], card_no=r["card_no"],
                    detail=r["detail"], raised_at=r["raised_at"], note=r["note"],
                    acknowledged_by=r["acknowledged_by"],
                    acknowledged_at=r["acknowledged_at"], cleared_at=r["cleared_at"],
                    cleared_reason=r["cleared_reason"])


_ALARM_SELECT = (
    "SELECT a.*, coalesce(dn.path, tn.path) AS path FROM access_alarms a"
    " JOIN org_nodes tn ON tn.kind = 'tenant' AND tn.tenant_id = a.tenant_id"
    " LEFT JOIN doors x ON x.id = a.door_id LEFT JOIN org_nodes dn ON dn.id = x.node_id"
)
"""An alarm is where its door is (else at its tenant's node)."""


MOMENTARY_KINDS = ("illegal_card", "apb_violation", "duress", "patrol_missed")
"""Alarms no door event ends: their acknowledgement does (docs/access.md, "Alarms and their
lifecycle")."""


@get("/access/alarms", opt={"permission": "access.read"}, tags=["access"],
     summary="Alarms of your subtree, newest first, paged (state: open, acknowledged, "
     "cleared; acknowledged=false: not yet acknowledged, whatever the state)")
async def list_alarms(actor: Actor, state: State,
                      alarm_state: Annotated[Literal["open", "acknowledged", "cleared"] | None,
                                             Parameter(query="state")] = None,
                      kind: Annotated[str | None, Parameter(max_length=32)] = None,
                      acknowledged: bool | None = None,
                      after: After = 0, limit: Limit = 100) -> AlarmPage:
    rows = await state.pool.fetch(
        _ALARM_SELECT + " WHERE $1 = ANY(coalesce(dn.path, tn.path)) AND ($2 = 0 OR a.id < $2)"
        " AND ($3::text IS NULL OR a.state = $3) AND ($4::text IS NULL OR a.kind = $4)"
        " AND ($6::boolean IS NULL OR (a.acknowledged_at IS NOT NULL) = $6)"
        " ORDER BY a.id DESC LIMIT $5", actor.node_id, after, alarm_state, kind, limit + 1,
        acknowledged)
    items = [_alarm_out(r) for r in rows[:limit]]
    return AlarmPage(items=items, next_after=items[-1].id if len(rows) > limit else None)


class AckIn(msgspec.Struct, forbid_unknown_fields=True):
    note: Annotated[str, Meta(min_length=1, max_length=1000)]
    """What was found and done: required."""


@post("/access/alarms/{alarm_id:int}/acknowledge", opt={"permission": "alarms.ack"},
      tags=["access"], status_code=200, summary="Acknowledge an alarm with a note")
async def acknowledge_alarm(alarm_id: Id, data: AckIn, actor: Actor, state: State) -> AlarmOut:
    if not data.note.strip():
        raise Problem(422, "unprocessable", "the note says what was found and done")
    async with change(state.pool, actor) as tx:
        row = await tx.conn.fetchrow(_ALARM_SELECT + " WHERE a.id = $1 FOR UPDATE OF a",
                                     alarm_id)
        actor.require_node(list(row["path"]) if row else None, f"alarm {alarm_id}")
        if row["acknowledged_at"] is not None:
            raise Problem(409, "conflict", "the alarm is acknowledged already")
        out = await _acknowledge(tx.conn, row, data.note, actor)
        tx.audit("access.acknowledge_alarm", "access_alarm", alarm_id, list(row["path"]),
                 before=_alarm_out(row), after=out)
    return out


async def _acknowledge(conn: Any, row: asyncpg.Record, note: str, actor: Actor) -> AlarmOut:
    """A momentary alarm ends with its acknowledgement ('cleared'); one a door event ends stays
    'acknowledged' until that event, or stays 'cleared' if the event came first."""
    ack = await conn.fetchrow(
        "UPDATE access_alarms SET"
        " state = CASE WHEN cleared_at IS NULL AND kind <> ALL($5::text[]) THEN 'acknowledged'"
        " ELSE 'cleared' END,"
        " cleared_reason = CASE WHEN cleared_at IS NULL THEN"
        "   CASE WHEN kind = ANY($5::text[]) THEN 'acknowledged' END ELSE cleared_reason END,"
        " cleared_at = CASE WHEN cleared_at IS NULL AND kind = ANY($5::text[]) THEN now()"
        "   ELSE cleared_at END,"
        " note = $2, acknowledged_by = $3, acknowledged_at = now()"
        " WHERE id = $1 RETURNING *, $4::integer[] AS path", row["id"], note,
        actor.user_id or None, list(row["path"]), list(MOMENTARY_KINDS))
    return _alarm_out(ack)


class AckManyIn(msgspec.Struct, forbid_unknown_fields=True):
    alarm_ids: Annotated[list[int], Meta(min_length=1, max_length=500)]
    note: Annotated[str, Meta(min_length=1, max_length=1000)]
    """What was found and done, for every alarm named: required."""


@post("/access/alarms/acknowledge", opt={"permission": "alarms.ack"}, tags=["access"],
      status_code=200, summary="Acknowledge several alarms with one note (a burst of "
      "anti-passback or illegal-card alarms); all or none")
async def acknowledge_alarms(data: AckManyIn, actor: Actor, state: State) -> list[AlarmOut]:
    if not data.note.strip():
        raise Problem(422, "unprocessable", "the note says what was found and done")
    ids = sorted(set(data.alarm_ids))
    async with change(state.pool, actor) as tx:
        rows = {r["id"]: r for r in await tx.conn.fetch(
            _ALARM_SELECT + " WHERE a.id = ANY($1::bigint[]) ORDER BY a.id FOR UPDATE OF a",
            ids)}
        for alarm_id in ids:  # every one in the caller's subtree, else nothing is done
            row = rows.get(alarm_id)
            actor.require_node(list(row["path"]) if row else None, f"alarm {alarm_id}")
        done = [r for r in rows.values() if r["acknowledged_at"] is not None]
        if done:
            raise Problem(409, "conflict", f"alarm {done[0]['id']} is acknowledged already")
        out = []
        for alarm_id in ids:
            row = rows[alarm_id]
            after = await _acknowledge(tx.conn, row, data.note, actor)
            tx.audit("access.acknowledge_alarm", "access_alarm", alarm_id, list(row["path"]),
                     before=_alarm_out(row), after=after)
            out.append(after)
    return out


class DoorStateOut(msgspec.Struct):
    door_id: int
    name: str
    area_id: int | None
    node_id: int | None
    state: str
    """closed, open, held_open, forced_open, locked, unknown."""
    online: bool
    alarm: bool
    tamper: bool
    lock_fault: bool
    changed_at: dt.datetime | None


@get("/access/door-states", opt={"permission": "access.read"}, tags=["access"],
     summary="Live state of the doors of your subtree (or of one area), for the e-map")
async def door_states(actor: Actor, state: State, node_id: OptionalId = None,
                      area_id: OptionalId = None) -> list[DoorStateOut]:
    scope = await subtree_root(state.pool, actor, node_id)
    if area_id is not None:
        await in_scope(state.pool, actor, "access_areas", area_id)
    rows = await state.pool.fetch(
        "SELECT x.id, x.name, x.area_id, x.node_id, s.state, s.online, s.alarm, s.tamper,"
        " s.lock_fault, s.changed_at FROM doors x" + NODE_JOIN
        + " LEFT JOIN access_door_states s ON s.door_id = x.id"
        " WHERE $1 = ANY(n.path) AND ($2::integer IS NULL OR x.area_id = $2)"
        " ORDER BY x.id LIMIT 10000", scope, area_id)
    return [DoorStateOut(door_id=r["id"], name=r["name"], area_id=r["area_id"],
                         node_id=r["node_id"], state=r["state"] or "unknown",
                         online=bool(r["online"]), alarm=bool(r["alarm"]),
                         tamper=bool(r["tamper"]), lock_fault=bool(r["lock_fault"]),
                         changed_at=r["changed_at"]) for r in rows]


# --- ADMS devices --------------------------------------------------------------------------------


class AdmsDeviceIn(msgspec.Struct, forbid_unknown_fields=True):
    serial_no: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
    """The device's SN, as it sends it."""
    node_id: IdField
    """Its users are the people of this node's subtree holding an active card."""
    terminal_id: IdField | None = None
    """A door terminal of the tenant whose id its records carry (with door_id)."""
    door_id: IdField | None = None
    """The door the device guards: its records become access records of that door."""
    name: Annotated[str, Meta(max_length=200)] = ""


class AdmsDeviceOut(msgspec.Struct):
    serial_no: str
    tenant_id: int
    node_id: int
    terminal_id: int | None
    door_id: int | None
    name: str
    enabled: bool
    last_seen_at: dt.datetime | None
    firmware: str
    records: int
    commands_pending: int
    template_dialect: str
    """How it takes templates: legacy (FINGERTMP, FACE) or biodata (docs/adms.md)."""


async def _device_out(conn: asyncpg.Connection | asyncpg.Pool, serial_no: str) -> AdmsDeviceOut:
    r = await conn.fetchrow(
        "SELECT d.*, (SELECT count(*) FROM adms_records WHERE serial_no = d.serial_no) AS records,"
        " (SELECT count(*) FROM adms_commands WHERE serial_no = d.serial_no"
        " AND status IN ('pending', 'sent')) AS pending FROM adms_devices d WHERE serial_no = $1",
        serial_no)
    return AdmsDeviceOut(serial_no=r["serial_no"], tenant_id=r["tenant_id"],
                         node_id=r["node_id"], terminal_id=r["terminal_id"],
                         door_id=r["door_id"], name=r["name"], enabled=r["enabled"],
                         last_seen_at=r["last_seen_at"], firmware=r["firmware"],
                         records=r["records"], commands_pending=r["pending"],
                         template_dialect=r["bio_dialect"])


@post("/adms/devices", opt={"permission": "access.write"}, tags=["access"],
      summary="Register a ZKTeco ADMS push device by its serial number (docs/adms.md)")
async def register_device(data: AdmsDeviceIn, actor: Actor, state: State) -> AdmsDeviceOut:
    if (data.door_id is None) != (data.terminal_id is None):
        raise Problem(422, "unprocessable", "door_id and terminal_id come together")
    async with change(state.pool, actor) as tx:
        node = await node_for_write(tx.conn, actor, data.node_id)
        if data.door_id is not None and data.terminal_id is not None:
            await many_in_scope(tx.conn, actor, "doors", [data.door_id], node["tenant_id"])
            from admin_api._routes_merchants import terminal_in_scope

            terminal = await terminal_in_scope(tx.conn, actor, data.terminal_id)
            if terminal["kind"] not in (3, 4) or terminal["tenant_id"] != node["tenant_id"]:
                raise Problem(422, "unprocessable", "the terminal must be a door or attendance "
                              "terminal of the device's tenant")
        if await tx.conn.fetchval("SELECT true FROM adms_devices WHERE serial_no = $1",
                                  data.serial_no):
            raise Problem(409, "conflict", f"serial number {data.serial_no} is registered")
        await tx.conn.execute(
            "INSERT INTO adms_devices (serial_no, tenant_id, node_id, terminal_id, door_id, name)"
            " VALUES ($1, $2, $3, $4, $5, $6)", data.serial_no, node["tenant_id"], data.node_id,
            data.terminal_id, data.door_id, data.name)
        out = await _device_out(tx.conn, data.serial_no)
        tx.audit("adms.register_device", "adms_device", data.serial_no, list(node["path"]),
                 after=out)
    return out


@get("/adms/devices", opt={"permission": "access.read"}, tags=["access"],
     summary="ADMS push devices of your subtree")
async def list_devices(actor: Actor, state: State) -> list[AdmsDeviceOut]:
    rows = await state.pool.fetch(
        "SELECT d.serial_no FROM adms_devices d JOIN org_nodes n ON n.id = d.node_id"
        " WHERE $1 = ANY(n.path) ORDER BY d.serial_no LIMIT 10000", actor.node_id)
    return [await _device_out(state.pool, r["serial_no"]) for r in rows]


ROUTES = [list_records, list_alarms, acknowledge_alarm, acknowledge_alarms, door_states,
          register_device, list_devices]


def _times(since: str | None, until: str | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The query's since/until (TimeQuery) as datetimes; 422 for a day that does not exist."""
    try:
        return parse_time(since), parse_time(until)
    except ValueError:
        raise Problem(422, "unprocessable", "since and until must be real dates and times")\
            from None
