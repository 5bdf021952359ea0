"""Who may pass where and when: door groups, time zones, holiday calendars, permission grants,
lockdowns and their override holders, interlocks.

Grants go to a person, a department (a node and everything under it) or an identity class, on
a door group, within a time zone (none: at any time), for elevator floors (none: all), as
'allow' or 'deny'. Precedence is the engine's (docs/access.md): the most specific subject
wins, and at the same level a deny beats an allow. Every change sends AccessChanged.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import get, post
from litestar.datastructures import State
from msgspec import Meta

from admin_api._auth import Actor, hash_password
from admin_api._problems import Problem
from admin_api._routes_people import person_in_scope
from admin_api._store import change, node_path, subtree_root
from admin_api._types import Id, IdField, OptionalId
from admin_api.access._scope import NODE_JOIN, changed, in_scope, many_in_scope, node_for_write

Name = Annotated[str, Meta(min_length=1, max_length=200)]


# --- Door groups ---------------------------------------------------------------------------------


class DoorGroupIn(msgspec.Struct, forbid_unknown_fields=True):
    node_id: IdField
    name: Name
    door_ids: Annotated[list[IdField], Meta(max_length=4096)] = []


class DoorGroupOut(msgspec.Struct):
    id: int
    tenant_id: int
    node_id: int | None
    name: str
    door_ids: list[int]


async def _children(conn: Any, sql: str, parents: list[asyncpg.Record]
                    ) -> list[list[asyncpg.Record]]:
    """The child rows of each parent, in one query for all of them (a list is not one query
    per item): `sql` selects the parent's id as `parent`, for `= ANY($1::bigint[])`."""
    by_parent: dict[int, list[asyncpg.Record]] = {r["id"]: [] for r in parents}
    for child in await conn.fetch(sql, list(by_parent)):
        by_parent[child["parent"]].append(child)
    return [by_parent[r["id"]] for r in parents]


async def _groups_out(conn: Any, rows: list[asyncpg.Record]) -> list[DoorGroupOut]:
    doors = await _children(conn, "SELECT door_group_id AS parent, door_id"
                            " FROM access_door_group_doors WHERE door_group_id = ANY($1::bigint[])"
                            " ORDER BY door_id", rows)
    return [DoorGroupOut(id=r["id"], tenant_id=r["tenant_id"], node_id=r["node_id"],
                         name=r["name"], door_ids=[d["door_id"] for d in ds])
            for r, ds in zip(rows, doors, strict=True)]


async def _group_out(conn: Any, r: asyncpg.Record) -> DoorGroupOut:
    return (await _groups_out(conn, [r]))[0]


@post("/access/door-groups", opt={"permission": "access.write"}, tags=["access"],
      summary="Add a door group (what a grant names)")
async def create_door_group(data: DoorGroupIn, actor: Actor, state: State) -> DoorGroupOut:
    async with change(state.pool, actor) as tx:
        node = await node_for_write(tx.conn, actor, data.node_id)
        await many_in_scope(tx.conn, actor, "doors", data.door_ids, node["tenant_id"])
        row = await tx.conn.fetchrow(
            "INSERT INTO access_door_groups (tenant_id, node_id, name) VALUES ($1, $2, $3)"
            " RETURNING *", node["tenant_id"], data.node_id, data.name)
        await tx.conn.executemany(
            "INSERT INTO access_door_group_doors (door_group_id, door_id) VALUES ($1, $2)",
            [(row["id"], d) for d in sorted(set(data.door_ids))])
        out = await _group_out(tx.conn, row)
        tx.audit("access.create_door_group", "access_door_group", out.id, list(node["path"]),
                 after=out)
        changed(tx, node["tenant_id"])
    return out


class DoorGroupDoorsIn(msgspec.Struct, forbid_unknown_fields=True):
    door_ids: Annotated[list[IdField], Meta(max_length=4096)]


@post("/access/door-groups/{group_id:int}/doors", opt={"permission": "access.write"},
      tags=["access"], status_code=200, summary="Set a door group's doors (replaces the list)")
async def set_group_doors(group_id: Id, data: DoorGroupDoorsIn, actor: Actor, state: State
                          ) -> DoorGroupOut:
    async with change(state.pool, actor) as tx:
        group = await in_scope(tx.conn, actor, "access_door_groups", group_id, lock=True)
        await many_in_scope(tx.conn, actor, "doors", data.door_ids, group["tenant_id"])
        before = await _group_out(tx.conn, group)
        await tx.conn.execute("DELETE FROM access_door_group_doors WHERE door_group_id = $1",
                              group_id)
        await tx.conn.executemany(
            "INSERT INTO access_door_group_doors (door_group_id, door_id) VALUES ($1, $2)",
            [(group_id, d) for d in sorted(set(data.door_ids))])
        out = await _group_out(tx.conn, group)
        tx.audit("access.set_group_doors", "access_door_group", group_id, list(group["path"]),
                 before=before, after=out)
        changed(tx, group["tenant_id"])
    return out


async def _list(state: State, actor: Actor, table: str, node_id: int | None
                ) -> list[asyncpg.Record]:
    scope = await subtree_root(state.pool, actor, node_id)
    return list(await state.pool.fetch(
        f"SELECT x.*, n.path FROM {table} x{NODE_JOIN} WHERE $1 = ANY(n.path)"
        " ORDER BY x.id LIMIT 10000", scope))


@get("/access/door-groups", opt={"permission": "access.read"}, tags=["access"],
     summary="Door groups of your subtree")
async def list_door_groups(actor: Actor, state: State, node_id: OptionalId = None
                           ) -> list[DoorGroupOut]:
    return await _groups_out(state.pool, await _list(state, actor, "access_door_groups", node_id))


# --- Time zones and holiday calendars ----------------------------------------------------------


class IntervalIn(msgspec.Struct, forbid_unknown_fields=True):
    day: Annotated[int, Meta(ge=0, le=7)]
    """0 Monday .. 6 Sunday, 7 holidays."""
    start_minute: Annotated[int, Meta(ge=0, le=1439)]
    end_minute: Annotated[int, Meta(ge=1, le=1440)]


class TimeZoneIn(msgspec.Struct, forbid_unknown_fields=True):
    node_id: IdField
    name: Name
    intervals: Annotated[list[IntervalIn], Meta(max_length=64)]
    """Minutes of the tenant's local day, [start, end)."""
    holiday_calendar_id: IdField | None = None


class TimeZoneOut(msgspec.Struct):
    id: int
    tenant_id: int
    node_id: int | None
    name: str
    holiday_calendar_id: int | None
    intervals: list[IntervalIn]


async def _tzs_out(conn: Any, rows: list[asyncpg.Record]) -> list[TimeZoneOut]:
    intervals = await _children(
        conn, "SELECT time_zone_id AS parent, day, start_minute, end_minute"
        " FROM access_time_zone_intervals WHERE time_zone_id = ANY($1::bigint[])"
        " ORDER BY day, start_minute", rows)
    return [TimeZoneOut(id=r["id"], tenant_id=r["tenant_id"], node_id=r["node_id"],
                        name=r["name"], holiday_calendar_id=r["holiday_calendar_id"],
                        intervals=[IntervalIn(i["day"], i["start_minute"], i["end_minute"])
                                   for i in iv])
            for r, iv in zip(rows, intervals, strict=True)]


async def _tz_out(conn: Any, r: asyncpg.Record) -> TimeZoneOut:
    return (await _tzs_out(conn, [r]))[0]


def _check_intervals(intervals: list[IntervalIn]) -> None:
    by_day: dict[int, list[IntervalIn]] = {}
    for i in intervals:
        if i.start_minute >= i.end_minute:
            raise Problem(422, "unprocessable", f"day {i.day}: an interval ends after it starts")
        by_day.setdefault(i.day, []).append(i)
    for day, items in by_day.items():
        items.sort(key=lambda i: i.start_minute)
        for a, b in itertools.pairwise(items):
            if b.start_minute < a.end_minute:
                raise Problem(422, "unprocessable", f"day {day}: intervals overlap")


async def _write_intervals(conn: Any, tz_id: int, intervals: list[IntervalIn]) -> None:
    await conn.execute("DELETE FROM access_time_zone_intervals WHERE time_zone_id = $1", tz_id)
    await conn.executemany(
        "INSERT INTO access_time_zone_intervals (time_zone_id, day, start_minute, end_minute)"
        " VALUES ($1, $2, $3, $4)", [(tz_id, i.day, i.start_minute, i.end_minute)
                                     for i in intervals])


@post("/access/time-zones", opt={"permission": "access.write"}, tags=["access"],
      summary="Add a time zone (时段): weekly intervals and a holiday calendar")
async def create_time_zone(data: TimeZoneIn, actor: Actor, state: State) -> TimeZoneOut:
    _check_intervals(data.intervals)
    async with change(state.pool, actor) as tx:
        node = await node_for_write(tx.conn, actor, data.node_id)
        if data.holiday_calendar_id is not None:
            await many_in_scope(tx.conn, actor, "access_holiday_calendars",
                                [data.holiday_calendar_id], node["tenant_id"])
        row = await tx.conn.fetchrow(
            "INSERT INTO access_time_zones (tenant_id, node_id, name, holiday_calendar_id)"
            " VALUES ($1, $2, $3, $4) RETURNING *", node["tenant_id"], data.node_id, data.name,
            data.holiday_calendar_id)
        await _write_intervals(tx.conn, row["id"], data.intervals)
        out = await _tz_out(tx.conn, row)
        tx.audit("access.create_time_zone", "access_time_zone", out.id, list(node["path"]),
                 after=out)
        changed(tx, node["tenant_id"])
    return out


@post("/access/time-zones/{time_zone_id:int}", opt={"permission": "access.write"},
      tags=["access"], status_code=200, summary="Change a time zone's intervals and calendar")
async def update_time_zone(time_zone_id: Id, data: TimeZoneIn, actor: Actor, state: State
                           ) -> TimeZoneOut:
    _check_intervals(data.intervals)
    async with change(state.pool, actor) as tx:
        tz = await in_scope(tx.conn, actor, "access_time_zones", time_zone_id, lock=True)
        node = await node_for_write(tx.conn, actor, data.node_id)
        if node["tenant_id"] != tz["tenant_id"]:
            raise Problem(422, "unprocessable", "a time zone stays in its tenant")
        if data.holiday_calendar_id is not None:
            await many_in_scope(tx.conn, actor, "access_holiday_calendars",
                                [data.holiday_calendar_id], tz["tenant_id"])
        before = await _tz_out(tx.conn, tz)
        row = await tx.conn.fetchrow(
            "UPDATE access_time_zones SET node_id = $2, name = $3, holiday_calendar_id = $4"
            " WHERE id = $1 RETURNING *", time_zone_id, data.node_id, data.name,
            data.holiday_calendar_id)
        await _write_intervals(tx.conn, time_zone_id, data.intervals)
        out = await _tz_out(tx.conn, row)
        tx.audit("access.update_time_zone", "access_time_zone", time_zone_id, list(tz["path"]),
                 before=before, after=out)
        changed(tx, tz["tenant_id"])
    return out


@get("/access/time-zones", opt={"permission": "access.read"}, tags=["access"],
     summary="Time zones of your subtree")
async def list_time_zones(actor: Actor, state: State, node_id: OptionalId = None
                          ) -> list[TimeZoneOut]:
    return await _tzs_out(state.pool, await _list(state, actor, "access_time_zones", node_id))


class HolidayIn(msgspec.Struct, forbid_unknown_fields=True):
    day: dt.date
    name: Annotated[str, Meta(max_length=200)] = ""


class CalendarIn(msgspec.Struct, forbid_unknown_fields=True):
    node_id: IdField
    name: Name
    holidays: Annotated[list[HolidayIn], Meta(max_length=366)] = []


class CalendarOut(msgspec.Struct):
    id: int
    tenant_id: int
    node_id: int | None
    name: str
    holidays: list[HolidayIn]


async def _calendars_out(conn: Any, rows: list[asyncpg.Record]) -> list[CalendarOut]:
    holidays = await _children(conn, "SELECT calendar_id AS parent, day, name FROM access_holidays"
                               " WHERE calendar_id = ANY($1::bigint[]) ORDER BY day", rows)
    return [CalendarOut(id=r["id"], tenant_id=r["tenant_id"], node_id=r["node_id"],
                        name=r["name"], holidays=[HolidayIn(h["day"], h["name"]) for h in hs])
            for r, hs in zip(rows, holidays, strict=True)]


async def _calendar_out(conn: Any, r: asyncpg.Record) -> CalendarOut:
    return (await _calendars_out(conn, [r]))[0]


def _check_days(holidays: list[HolidayIn]) -> None:
    if len({h.day for h in holidays}) != len(holidays):
        raise Problem(422, "unprocessable", "a day appears twice")


@post("/access/holiday-calendars", opt={"permission": "access.write"}, tags=["access"],
      summary="Add a holiday calendar (days on which time zones use their holiday intervals)")
async def create_calendar(data: CalendarIn, actor: Actor, state: State) -> CalendarOut:
    _check_days(data.holidays)
    async with change(state.pool, actor) as tx:
        node = await node_for_write(tx.conn, actor, data.node_id)
        row = await tx.conn.fetchrow(
            "INSERT INTO access_holiday_calendars (tenant_id, node_id, name) VALUES ($1, $2, $3)"
            " RETURNING *", node["tenant_id"], data.node_id, data.name)
        await tx.conn.executemany(
            "INSERT INTO access_holidays (calendar_id, day, name) VALUES ($1, $2, $3)",
            [(row["id"], h.day, h.name) for h in data.holidays])
        out = await _calendar_out(tx.conn, row)
        tx.audit("access.create_calendar", "access_holiday_calendar", out.id,
                 list(node["path"]), after=out)
        changed(tx, node["tenant_id"])
    return out


class HolidaysIn(msgspec.Struct, forbid_unknown_fields=True):
    holidays: Annotated[list[HolidayIn], Meta(max_length=366)]


@post("/access/holiday-calendars/{calendar_id:int}/holidays",
      opt={"permission": "access.write"}, tags=["access"], status_code=200,
      summary="Set a calendar's holidays (replaces the list)")
async def set_holidays(calendar_id: Id, data: HolidaysIn, actor: Actor, state: State
                       ) -> CalendarOut:
    _check_days(data.holidays)
    async with change(state.pool, actor) as tx:
        cal = await in_scope(tx.conn, actor, "access_holiday_calendars", calendar_id, lock=True)
        before = await _calendar_out(tx.conn, cal)
        await tx.conn.execute("DELETE FROM access_holidays WHERE calendar_id = $1", calendar_id)
        await tx.conn.executemany(
            "INSERT INTO access_holidays (calendar_id, day, name) VALUES ($1, $2, $3)",
            [(calendar_id, h.day, h.name) for h in data.holidays])
        out = await _calendar_out(tx.conn, cal)
        tx.audit("access.set_holidays", "access_holiday_calendar", calendar_id,
                 list(cal["path"]), before=before, after=out)
        changed(tx, cal["tenant_id"])
    return out


@get("/access/holiday-calendars", opt={"permission": "access.read"}, tags=["access"],
     summary="Holiday calendars of your subtree")
async def list_calendars(actor: Actor, state: State, node_id: OptionalId = None
                         ) -> list[CalendarOut]:
    return await _calendars_out(state.pool,
                                await _list(state, actor, "access_holiday_calendars", node_id))


# --- Grants ------------------------------------------------------------------------------------


class GrantIn(msgspec.Struct, forbid_unknown_fields=True):
    door_group_id: IdField
    subject: Literal["person", "department", "class"] = "person"
    person_id: IdField | None = None
    department_id: IdField | None = None
    """An org node of the tenant: the grant covers everyone under it."""
    class_id: Annotated[int, Meta(ge=1, le=255)] | None = None
    time_zone_id: IdField | None = None
    """None: at any time."""
    floors: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    """Elevators: the floors' bit mask; None: every floor."""
    effect: Literal["allow", "deny"] = "allow"
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None


class GrantOut(msgspec.Struct):
    id: int
    tenant_id: int
    subject: str
    person_id: int | None
    department_id: int | None
    class_id: int | None
    door_group_id: int
    time_zone_id: int | None
    floors: int | None
    effect: str
    valid_from: dt.datetime | None
    valid_until: dt.datetime | None


def _grant_out(r: asyncpg.Record) -> GrantOut:
    return GrantOut(id=r["id"], tenant_id=r["tenant_id"], subject=r["subject"],
                    person_id=r["person_id"], department_id=r["node_id"],
                    class_id=r["class_id"], door_group_id=r["door_group_id"],
                    time_zone_id=r["time_zone_id"], floors=r["floors"], effect=r["effect"],
                    valid_from=r["valid_from"], valid_until=r["valid_until"])


_GRANT_SELECT = (
    "SELECT x.*, n.path FROM access_grants x JOIN access_door_groups g ON g.id = x.door_group_id"
    " JOIN org_nodes n ON n.id = coalesce(g.node_id, (SELECT t.id FROM org_nodes t"
    " WHERE t.kind = 'tenant' AND t.tenant_id = g.tenant_id))"
)
"""A grant is where its door group is."""


@post("/access/grants", opt={"permission": "access.write"}, tags=["access"],
      summary="Grant (or deny) a door group to a person, a department or an identity class")
async def create_grant(data: GrantIn, actor: Actor, state: State) -> GrantOut:
    subjects = {"person": data.person_id, "department": data.department_id,
                "class": data.class_id}
    if subjects[data.subject] is None or any(
            v is not None for k, v in subjects.items() if k != data.subject):
        field = "department_id" if data.subject == "department" else f"{data.subject}_id"
        raise Problem(422, "unprocessable", f"a {data.subject} grant names exactly its {field}")
    for t in (data.valid_from, data.valid_until):
        if t is not None and t.tzinfo is None:
            raise Problem(422, "unprocessable", "valid_from and valid_until need a time zone")
    if data.valid_from and data.valid_until and data.valid_until <= data.valid_from:
        raise Problem(422, "unprocessable", "valid_until must be after valid_from")
    async with change(state.pool, actor) as tx:
        group = await in_scope(tx.conn, actor, "access_door_groups", data.door_group_id)
        tenant_id = group["tenant_id"]
        people: list[int] = []
        if data.person_id is not None:
            person = await person_in_scope(tx.conn, actor, data.person_id)
            if person["tenant_id"] != tenant_id:
                raise Problem(422, "unprocessable", "the person is of another tenant than the "
                              "door group")
            people = [data.person_id]
        if data.department_id is not None:
            path = await node_path(tx.conn, data.department_id)
            actor.require_node(path, f"node {data.department_id}")
            if await tx.conn.fetchval("SELECT tenant_id FROM org_nodes WHERE id = $1",
                                      data.department_id) != tenant_id:
                raise Problem(422, "unprocessable", "the department is of another tenant")
        if data.class_id is not None and not await tx.conn.fetchval(
                "SELECT true FROM identity_classes WHERE id = $1", data.class_id):
            raise Problem(422, "unprocessable", f"no identity class {data.class_id}")
        if data.time_zone_id is not None:
            await many_in_scope(tx.conn, actor, "access_time_zones", [data.time_zone_id],
                                tenant_id)
        row = await tx.conn.fetchrow(
            "INSERT INTO access_grants (tenant_id, subject, person_id, node_id, class_id,"
            " door_group_id, time_zone_id, floors, effect, valid_from, valid_until)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *", tenant_id,
            data.subject, data.person_id, data.department_id, data.class_id,
            data.door_group_id, data.time_zone_id, data.floors, data.effect, data.valid_from,
            data.valid_until)
        out = _grant_out(row)
        tx.audit("access.grant", "access_grant", out.id, list(group["path"]), after=out)
        changed(tx, tenant_id, people)
    return out


@post("/access/grants/{grant_id:int}/revoke", opt={"permission": "access.write"},
      tags=["access"], status_code=200, summary="Remove a grant (refused at the door within a "
      "second)")
async def revoke_grant(grant_id: Id, actor: Actor, state: State) -> GrantOut:
    async with change(state.pool, actor) as tx:
        row = await tx.conn.fetchrow(_GRANT_SELECT + " WHERE x.id = $1 FOR UPDATE OF x",
                                     grant_id)
        actor.require_node(list(row["path"]) if row else None, f"grant {grant_id}")
        await tx.conn.execute("DELETE FROM access_grants WHERE id = $1", grant_id)
        out = _grant_out(row)
        tx.audit("access.revoke_grant", "access_grant", grant_id, list(row["path"]), before=out)
        changed(tx, row["tenant_id"], [row["person_id"]] if row["person_id"] else [])
    return out


@get("/access/grants", opt={"permission": "access.read"}, tags=["access"],
     summary="Grants on the door groups of your subtree (optionally one person's, or one "
     "group's)")
async def list_grants(actor: Actor, state: State, node_id: OptionalId = None,
                      person_id: OptionalId = None, door_group_id: OptionalId = None
                      ) -> list[GrantOut]:
    scope = await subtree_root(state.pool, actor, node_id)
    rows = await state.pool.fetch(
        _GRANT_SELECT + " WHERE $1 = ANY(n.path) AND ($2::integer IS NULL OR x.person_id = $2)"
        " AND ($3::integer IS NULL OR x.door_group_id = $3) ORDER BY x.id LIMIT 10000",
        scope, person_id, door_group_id)
    return [_grant_out(r) for r in rows]


# --- Lockdown and override holders --------------------------------------------------------------


class LockdownIn(msgspec.Struct, forbid_unknown_fields=True):
    node_id: IdField
    """The tenant's node (or a node inside it): the site the lockdown is of."""
    area_id: IdField | None = None
    """None: the whole site; else this area and the areas under it."""
    reason: Annotated[str, Meta(max_length=500)] = ""


class LockdownOut(msgspec.Struct):
    id: int
    tenant_id: int
    area_id: int | None
    reason: str
    started_at: dt.datetime
    ended_at: dt.datetime | None


def _lockdown_out(r: asyncpg.Record) -> LockdownOut:
    return LockdownOut(id=r["id"], tenant_id=r["tenant_id"], area_id=r["area_id"],
                       reason=r["reason"], started_at=r["started_at"], ended_at=r["ended_at"])


async def _tenant_node(conn: Any, actor: Actor, tenant_id: int) -> list[int]:
    """A site-wide action needs the tenant's own node in the actor's subtree."""
    path = await conn.fetchval("SELECT path FROM org_nodes WHERE kind = 'tenant'"
                               " AND tenant_id = $1", tenant_id)
    if path is None or actor.node_id not in path:
        raise Problem(403, "forbidden", "a site-wide lockdown needs a log-in at the tenant's "
                      "node or above")
    return list(path)


@post("/access/lockdowns", opt={"permission": "access.lockdown"}, tags=["access"],
      summary="Emergency lockdown of a site or an area: only override holders pass")
async def start_lockdown(data: LockdownIn, actor: Actor, state: State) -> LockdownOut:
    async with change(state.pool, actor) as tx:
        node = await node_for_write(tx.conn, actor, data.node_id)
        path = list(node["path"])
        if data.area_id is not None:
            [area] = await many_in_scope(tx.conn, actor, "access_areas", [data.area_id],
                                         node["tenant_id"])
            path = list(area["path"])
        else:
            path = await _tenant_node(tx.conn, actor, node["tenant_id"])
        row = await tx.conn.fetchrow(
            "INSERT INTO access_lockdowns (tenant_id, area_id, reason, started_by)"
            " VALUES ($1, $2, $3, $4) RETURNING *", node["tenant_id"], data.area_id,
            data.reason, actor.user_id or None)
        out = _lockdown_out(row)
        tx.audit("access.lockdown", "access_lockdown", out.id, path, after=out)
        changed(tx, node["tenant_id"])
    return out


async def _lockdown_in_scope(conn: Any, actor: Actor, lockdown_id: int, lock: bool = False
                             ) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT x.*, coalesce(an.path, tn.path) AS path FROM access_lockdowns x"
        " JOIN org_nodes tn ON tn.kind = 'tenant' AND tn.tenant_id = x.tenant_id"
        " LEFT JOIN access_areas a ON a.id = x.area_id"
        " LEFT JOIN org_nodes an ON an.id = a.node_id WHERE x.id = $1"
        + (" FOR UPDATE OF x" if lock else ""), lockdown_id)
    actor.require_node(list(row["path"]) if row else None, f"lockdown {lockdown_id}")
    return row


@post("/access/lockdowns/{lockdown_id:int}/end", opt={"permission": "access.lockdown"},
      tags=["access"], status_code=200, summary="End a lockdown")
async def end_lockdown(lockdown_id: Id, actor: Actor, state: State) -> LockdownOut:
    async with change(state.pool, actor) as tx:
        row = await _lockdown_in_scope(tx.conn, actor, lockdown_id, lock=True)
        if row["ended_at"] is not None:
            raise Problem(409, "conflict", "the lockdown has ended already")
        ended = await tx.conn.fetchrow(
            "UPDATE access_lockdowns SET ended_at = now(), ended_by = $2 WHERE id = $1"
            " RETURNING *", lockdown_id, actor.user_id or None)
        out = _lockdown_out(ended)
        tx.audit("access.end_lockdown", "access_lockdown", lockdown_id, list(row["path"]),
                 before=_lockdown_out(row), after=out)
        changed(tx, row["tenant_id"])
    return out


@get("/access/lockdowns", opt={"permission": "access.read"}, tags=["access"],
     summary="Lockdowns of your subtree's sites, active ones first")
async def list_lockdowns(actor: Actor, state: State) -> list[LockdownOut]:
    rows = await state.pool.fetch(
        "SELECT x.* FROM access_lockdowns x"
        " JOIN org_nodes tn ON tn.kind = 'tenant' AND tn.tenant_id = x.tenant_id"
        " LEFT JOIN access_areas a ON a.id = x.area_id"
        " LEFT JOIN org_nodes an ON an.id = a.node_id"
        " WHERE $1 = ANY(coalesce(an.path, tn.path))"
        " ORDER BY x.ended_at IS NOT NULL, x.id DESC LIMIT 1000", actor.node_id)
    return [_lockdown_out(r) for r in rows]


class OverrideIn(msgspec.Struct, forbid_unknown_fields=True):
    person_id: IdField


class OverrideOut(msgspec.Struct):
    tenant_id: int
    person_id: int
    granted_at: dt.datetime


@post("/access/override-holders", opt={"permission": "access.lockdown"}, tags=["access"],
      summary="Give a person a lockdown override pass")
async def add_override(data: OverrideIn, actor: Actor, state: State) -> OverrideOut:
    async with change(state.pool, actor) as tx:
        person = await person_in_scope(tx.conn, actor, data.person_id)
        row = await tx.conn.fetchrow(
            "INSERT INTO access_override_holders (tenant_id, person_id) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING RETURNING *", person["tenant_id"], data.person_id)
        if row is None:
            raise Problem(409, "conflict", "the person holds an override pass already")
        out = OverrideOut(row["tenant_id"], row["person_id"], row["granted_at"])
        tx.audit("access.add_override", "person", data.person_id, list(person["path"]),
                 after=out)
        changed(tx, person["tenant_id"], [data.person_id])
    return out


@post("/access/override-holders/{person_id:int}/remove", opt={"permission": "access.lockdown"},
      tags=["access"], status_code=200, summary="Take a person's lockdown override pass away")
async def remove_override(person_id: Id, actor: Actor, state: State) -> OverrideOut:
    async with change(state.pool, actor) as tx:
        person = await person_in_scope(tx.conn, actor, person_id)
        row = await tx.conn.fetchrow(
            "DELETE FROM access_override_holders WHERE tenant_id = $1 AND person_id = $2"
            " RETURNING *", person["tenant_id"], person_id)
        if row is None:
            raise Problem(404, "not-found", f"person {person_id} holds no override pass")
        out = OverrideOut(row["tenant_id"], row["person_id"], row["granted_at"])
        tx.audit("access.remove_override", "person", person_id, list(person["path"]),
                 before=out)
        changed(tx, person["tenant_id"], [person_id])
    return out


@get("/access/override-holders", opt={"permission": "access.read"}, tags=["access"],
     summary="Override pass holders of your subtree")
async def list_overrides(actor: Actor, state: State) -> list[OverrideOut]:
    rows = await state.pool.fetch(
        "SELECT o.* FROM access_override_holders o JOIN people p ON p.id = o.person_id"
        " JOIN org_nodes n ON n.id = p.node_id WHERE $1 = ANY(n.path) ORDER BY o.person_id"
        " LIMIT 10000", actor.node_id)
    return [OverrideOut(r["tenant_id"], r["person_id"], r["granted_at"]) for r in rows]


# --- Interlocks (互锁) ---------------------------------------------------------------------------


class InterlockIn(msgspec.Struct, forbid_unknown_fields=True):
    node_id: IdField
    name: Name
    door_ids: Annotated[list[IdField], Meta(min_length=2, max_length=8)]
    """A door of the interlock opens only while every other one is closed."""


class InterlockOut(msgspec.Struct):
    id: int
    tenant_id: int
    node_id: int | None
    name: str
    door_ids: list[int]


async def _interlocks_out(conn: Any, rows: list[asyncpg.Record]) -> list[InterlockOut]:
    doors = await _children(conn, "SELECT interlock_id AS parent, door_id FROM"
                            " access_interlock_doors WHERE interlock_id = ANY($1::bigint[])"
                            " ORDER BY door_id", rows)
    return [InterlockOut(id=r["id"], tenant_id=r["tenant_id"], node_id=r["node_id"],
                         name=r["name"], door_ids=[d["door_id"] for d in ds])
            for r, ds in zip(rows, doors, strict=True)]


async def _interlock_out(conn: Any, r: asyncpg.Record) -> InterlockOut:
    return (await _interlocks_out(conn, [r]))[0]


@post("/access/interlocks", opt={"permission": "access.write"}, tags=["access"],
      summary="Interlock doors (an airlock): each opens only while the others are closed")
async def create_interlock(data: InterlockIn, actor: Actor, state: State) -> InterlockOut:
    if len(set(data.door_ids)) != len(data.door_ids):
        raise Problem(422, "unprocessable", "a door appears twice")
    async with change(state.pool, actor) as tx:
        node = await node_for_write(tx.conn, actor, data.node_id)
        await many_in_scope(tx.conn, actor, "doors", data.door_ids, node["tenant_id"])
        row = await tx.conn.fetchrow(
            "INSERT INTO access_interlocks (tenant_id, node_id, name) VALUES ($1, $2, $3)"
            " RETURNING *", node["tenant_id"], data.node_id, data.name)
        await tx.conn.executemany(
            "INSERT INTO access_interlock_doors (interlock_id, door_id) VALUES ($1, $2)",
            [(row["id"], d) for d in data.door_ids])
        out = await _interlock_out(tx.conn, row)
        tx.audit("access.create_interlock", "access_interlock", out.id, list(node["path"]),
                 after=out)
        changed(tx, node["tenant_id"])
    return out


@get("/access/interlocks", opt={"permission": "access.read"}, tags=["access"],
     summary="Interlocks of your subtree")
async def list_interlocks(actor: Actor, state: State, node_id: OptionalId = None
                          ) -> list[InterlockOut]:
    return await _interlocks_out(state.pool,
                                 await _list(state, actor, "access_interlocks", node_id))


# --- PINs -----------------------------------------------------------------------------------------


Pin = Annotated[str, Meta(pattern=r"^[0-9]{4,12}$")]


class PinsIn(msgspec.Struct, forbid_unknown_fields=True):
    pin: Pin
    """What the person types at a security-mode door (4 to 12 digits)."""
    duress_pin: Pin | None = None
    """Opens like the PIN and raises a silent duress alarm; must differ from the PIN."""


class PinsOut(msgspec.Struct):
    person_id: int
    pin_set: bool
    duress_pin_set: bool


@post("/access/people/{person_id:int}/pins", opt={"permission": "access.write"},
      tags=["access"], status_code=200,
      summary="Set a person's door PIN and duress PIN (stored as argon2id hashes only)")
async def set_pins(person_id: Id, data: PinsIn, actor: Actor, state: State) -> PinsOut:
    if data.duress_pin is not None and data.duress_pin == data.pin:
        raise Problem(422, "unprocessable", "the duress PIN must differ from the PIN")
    pin_hash = await hash_password(data.pin)
    duress_hash = None if data.duress_pin is None else await hash_password(data.duress_pin)
    async with change(state.pool, actor) as tx:
        person = await person_in_scope(tx.conn, actor, person_id)
        await tx.conn.execute(
            "INSERT INTO access_person_pins (person_id, pin_hash, duress_pin_hash)"
            " VALUES ($1, $2, $3) ON CONFLICT (person_id) DO UPDATE SET"
            " pin_hash = EXCLUDED.pin_hash, duress_pin_hash = EXCLUDED.duress_pin_hash,"
            " updated_at = now()", person_id, pin_hash, duress_hash)
        out = PinsOut(person_id, True, duress_hash is not None)
        tx.audit("access.set_pins", "person", person_id, list(person["path"]), after=out)
        changed(tx, person["tenant_id"], [person_id])
    return out


ROUTES = [create_door_group, set_group_doors, list_door_groups, create_time_zone,
          update_time_zone, list_time_zones, create_calendar, set_holidays, list_calendars,
          create_grant, revoke_grant, list_grants, start_lockdown, end_lockdown, list_lockdowns,
          add_override, remove_override, list_overrides, create_interlock, list_interlocks,
          set_pins]
