"""Guard patrol (巡更): routes of checkpoints, schedules, rounds, their records and reports.

A checkpoint is a door's reader, due `offset_s` after a round starts and read on time within
`tolerance_s` either side. The guard's credential read there is the patrol record: the access
decision record the switch journaled. The patrol checker (_tasks.py) turns schedules into
rounds and reads into records, and raises a `patrol_missed` alarm for a checkpoint not read by
its due time plus tolerance.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import asyncpg
import msgspec
from litestar import get, post
from litestar.datastructures import State
from msgspec import Meta

from admin_api._auth import Actor
from admin_api._problems import Problem
from admin_api._routes_people import person_in_scope
from admin_api._store import change, node_path, subtree_root
from admin_api._types import Id, IdField, OptionalId, TimeQuery, parse_time
from admin_api.access._doors import doors_in_scope
from admin_api.access._visitors import period

ROUND_SECONDS_MAX = 86_400


class CheckpointIn(msgspec.Struct, forbid_unknown_fields=True):
    door_id: IdField
    offset_s: Annotated[int, Meta(ge=0, le=86_400)]
    """Due this long after the round starts."""
    tolerance_s: Annotated[int, Meta(ge=1, le=3600)] = 300


class RouteIn(msgspec.Struct, forbid_unknown_fields=True):
    node_id: IdField
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    checkpoints: Annotated[list[CheckpointIn], Meta(min_length=1, max_length=64)]


class CheckpointOut(msgspec.Struct):
    seq: int
    door_id: int
    offset_s: int
    tolerance_s: int


class RouteOut(msgspec.Struct):
    id: int
    node_id: int
    tenant_id: int
    name: str
    enabled: bool
    checkpoints: list[CheckpointOut]


class ScheduleIn(msgspec.Struct, forbid_unknown_fields=True):
    guard_person_id: IdField
    weekdays: Annotated[int, Meta(ge=1, le=127)] = 127
    """Bit 0 Monday .. bit 6 Sunday (127: every day)."""
    start_minute: Annotated[int, Meta(ge=0, le=1439)] = 0
    """Minute of the tenant's local day the round starts."""


class ScheduleOut(msgspec.Struct):
    id: int
    route_id: int
    guard_person_id: int
    weekdays: int
    start_minute: int
    enabled: bool


class RoundIn(msgspec.Struct, forbid_unknown_fields=True):
    guard_person_id: IdField
    starts_at: dt.datetime | None = None
    """Default: now."""


class RecordOut(msgspec.Struct):
    seq: int
    door_id: int
    due_at: dt.datetime
    read_at: dt.datetime | None
    status: str


class RoundOut(msgspec.Struct):
    id: int
    route_id: int
    guard_person_id: int
    starts_at: dt.datetime
    ends_at: dt.datetime
    status: str
    records: list[RecordOut]


class PatrolReportRow(msgspec.Struct):
    route_id: int
    route: str
    guard_person_id: int
    guard: str
    rounds: int
    on_time: int
    late: int
    missed: int
    pending: int
    """Checkpoints not yet due or not yet judged."""


async def _route_in_scope(conn: asyncpg.Connection | asyncpg.Pool, actor: Actor, route_id: int,
                          *, lock: bool = False) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT r.*, n.path FROM patrol_routes r JOIN org_nodes n ON n.id = r.node_id"
        " WHERE r.id = $1" + (" FOR UPDATE OF r" if lock else ""), route_id)
    actor.require_node(list(row["path"]) if row else None, f"patrol route {route_id}")
    return row


async def _route_out(conn: asyncpg.Connection | asyncpg.Pool, r: asyncpg.Record) -> RouteOut:
    cps = await conn.fetch("SELECT * FROM patrol_checkpoints WHERE route_id = $1 ORDER BY seq",
                           r["id"])
    return RouteOut(id=r["id"], node_id=r["node_id"], tenant_id=r["tenant_id"], name=r["name"],
                    enabled=r["enabled"],
                    checkpoints=[CheckpointOut(c["seq"], c["door_id"], c["offset_s"],
                                               c["tolerance_s"]) for c in cps])


@post("/patrol/routes", opt={"permission": "patrol.write"}, tags=["patrol"],
      summary="Add a patrol route: checkpoints (door readers) with due offsets and tolerances")
async def create_route(data: RouteIn, actor: Actor, state: State) -> RouteOut:
    async with change(state.pool, actor) as tx:
        path = await node_path(tx.conn, data.node_id)
        actor.require_node(path, f"node {data.node_id}")
        tenant_id = await tx.conn.fetchval("SELECT tenant_id FROM org_nodes WHERE id = $1",
                                           data.node_id)
        if tenant_id is None:
            raise Problem(422, "unprocessable", "a patrol route belongs to a tenant or a "
                          "department")
        doors = await doors_in_scope(tx.conn, actor, [c.door_id for c in data.checkpoints])
        if any(d["tenant_id"] != tenant_id for d in doors):
            raise Problem(422, "unprocessable", "every checkpoint must be a door of the route's "
                          "tenant")
        offsets = [c.offset_s for c in data.checkpoints]
        if offsets != sorted(offsets):
            raise Problem(422, "unprocessable", "checkpoints come in the order they are due "
                          "(offset_s not decreasing)")
        row = await tx.conn.fetchrow(
            "INSERT INTO patrol_routes (tenant_id, node_id, name) VALUES ($1, $2, $3)"
            " RETURNING *", tenant_id, data.node_id, data.name)
        await tx.conn.executemany(
            "INSERT INTO patrol_checkpoints (route_id, seq, door_id, offset_s, tolerance_s)"
            " VALUES ($1, $2, $3, $4, $5)",
            [(row["id"], i, c.door_id, c.offset_s, c.tolerance_s)
             for i, c in enumerate(data.checkpoints, 1)])
        out = await _route_out(tx.conn, row)
        tx.audit("patrol.create_route", "patrol_route", out.id, path or [], after=out)
    return out


@get("/patrol/routes", opt={"permission": "patrol.read"}, tags=["patrol"],
     summary="Patrol routes of your subtree")
async def list_routes(actor: Actor, state: State, node_id: OptionalId = None) -> list[RouteOut]:
    scope = await subtree_root(state.pool, actor, node_id)
    rows = await state.pool.fetch(
        "SELECT r.* FROM patrol_routes r JOIN org_nodes n ON n.id = r.node_id"
        " WHERE $1 = ANY(n.path) ORDER BY r.id LIMIT 1000", scope)
    return [await _route_out(state.pool, r) for r in rows]


@get("/patrol/routes/{route_id:int}", opt={"permission": "patrol.read"}, tags=["patrol"],
     summary="One patrol route")
async def get_route(route_id: Id, actor: Actor, state: State) -> RouteOut:
    return await _route_out(state.pool, await _route_in_scope(state.pool, actor, route_id))


async def _guard(conn: asyncpg.Connection, actor: Actor, route: asyncpg.Record,
                 person_id: int) -> asyncpg.Record:
    guard = await person_in_scope(conn, actor, person_id)
    if guard["tenant_id"] != route["tenant_id"]:
        raise Problem(422, "unprocessable", "the guard must be of the route's tenant")
    return guard


@post("/patrol/routes/{route_id:int}/schedules", opt={"permission": "patrol.write"},
      tags=["patrol"], summary="Schedule a guard on a route (weekdays, start time)")
async def create_schedule(route_id: Id, data: ScheduleIn, actor: Actor, state: State
                          ) -> ScheduleOut:
    async with change(state.pool, actor) as tx:
        route = await _route_in_scope(tx.conn, actor, route_id, lock=True)
        await _guard(tx.conn, actor, route, data.guard_person_id)
        row = await tx.conn.fetchrow(
            "INSERT INTO patrol_schedules (route_id, guard_person_id, weekdays, start_minute)"
            " VALUES ($1, $2, $3, $4) RETURNING *", route_id, data.guard_person_id,
            data.weekdays, data.start_minute)
        out = ScheduleOut(id=row["id"], route_id=route_id, guard_person_id=row["guard_person_id"],
                          weekdays=row["weekdays"], start_minute=row["start_minute"],
                          enabled=row["enabled"])
        tx.audit("patrol.create_schedule", "patrol_schedule", out.id, list(route["path"]),
                 after=out)
    return out


async def round_ends_at(conn: asyncpg.Connection, route_id: int, starts_at: dt.datetime
                        ) -> dt.datetime:
    last = await conn.fetchval(
        "SELECT max(offset_s + tolerance_s) FROM patrol_checkpoints WHERE route_id = $1",
        route_id)
    return starts_at + dt.timedelta(seconds=int(last or 0))


@post("/patrol/routes/{route_id:int}/rounds", opt={"permission": "patrol.write"},
      tags=["patrol"], summary="Start an unscheduled round of a route for a guard")
async def start_round(route_id: Id, data: RoundIn, actor: Actor, state: State) -> RoundOut:
    now = dt.datetime.now(dt.UTC)
    starts_at = data.starts_at or now
    if starts_at.tzinfo is None:
        raise Problem(422, "unprocessable", "starts_at needs a time zone")
    if abs((starts_at - now).total_seconds()) > ROUND_SECONDS_MAX:
        raise Problem(422, "unprocessable", "a round starts within a day of now")
    async with change(state.pool, actor) as tx:
        route = await _route_in_scope(tx.conn, actor, route_id, lock=True)
        await _guard(tx.conn, actor, route, data.guard_person_id)
        row = await tx.conn.fetchrow(
            "INSERT INTO patrol_rounds (route_id, guard_person_id, starts_at, ends_at)"
            " VALUES ($1, $2, $3, $4) RETURNING *", route_id, data.guard_person_id, starts_at,
            await round_ends_at(tx.conn, route_id, starts_at))
        out = RoundOut(id=row["id"], route_id=route_id, guard_person_id=data.guard_person_id,
                       starts_at=row["starts_at"], ends_at=row["ends_at"],
                       status=row["status"], records=[])
        tx.audit("patrol.start_round", "patrol_round", out.id, list(route["path"]), after=out)
    return out


@get("/patrol/routes/{route_id:int}/rounds", opt={"permission": "patrol.read"},
     tags=["patrol"], summary="A route's rounds in a period, with each checkpoint's record")
async def list_rounds(route_id: Id, actor: Actor, state: State,
                      since: TimeQuery = None, until: TimeQuery = None
                      ) -> list[RoundOut]:
    """Default period: the last 7 days."""
    since_t, until_t = _times(since, until)
    await _route_in_scope(state.pool, actor, route_id)
    since_t, until_t = period(since_t, until_t)
    if since_t.tzinfo is None or until_t.tzinfo is None or until_t <= since_t:
        raise Problem(422, "unprocessable", "since and until need a time zone, until after since")
    rounds = await state.pool.fetch(
        "SELECT * FROM patrol_rounds WHERE route_id = $1 AND starts_at >= $2 AND starts_at < $3"
        " ORDER BY starts_at, id LIMIT 1000", route_id, since_t, until_t)
    records = await state.pool.fetch(
        "SELECT * FROM patrol_records WHERE round_id = ANY($1::bigint[]) ORDER BY round_id, seq",
        [r["id"] for r in rounds])
    by_round: dict[int, list[RecordOut]] = {}
    for rec in records:
        by_round.setdefault(rec["round_id"], []).append(
            RecordOut(rec["seq"], rec["door_id"], rec["due_at"], rec["read_at"], rec["status"]))
    return [RoundOut(id=r["id"], route_id=r["route_id"], guard_person_id=r["guard_person_id"],
                     starts_at=r["starts_at"], ends_at=r["ends_at"], status=r["status"],
                     records=by_round.get(r["id"], [])) for r in rounds]


@get("/patrol/report", opt={"permission": "patrol.read"}, tags=["patrol"],
     summary="Patrol report per guard and route: rounds and checkpoints on time, late, missed")
async def patrol_report(actor: Actor, state: State, since: TimeQuery = None,
                        until: TimeQuery = None, node_id: OptionalId = None
                        ) -> list[PatrolReportRow]:
    """Default period: the last 7 days."""
    since_t, until_t = _times(since, until)
    since_t, until_t = period(since_t, until_t)
    if since_t.tzinfo is None or until_t.tzinfo is None or until_t <= since_t:
        raise Problem(422, "unprocessable", "since and until need a time zone, until after since")
    scope = await subtree_root(state.pool, actor, node_id)
    rows = await state.pool.fetch(
        "SELECT r.id AS route_id, r.name AS route, g.id AS guard_person_id, g.name AS guard,"
        " count(DISTINCT o.id) AS rounds,"
        " count(*) FILTER (WHERE pr.status = 'on_time') AS on_time,"
        " count(*) FILTER (WHERE pr.status = 'late') AS late,"
        " count(*) FILTER (WHERE pr.status = 'missed') AS missed,"
        " count(c.seq) - count(pr.seq) AS pending"
        " FROM patrol_rounds o JOIN patrol_routes r ON r.id = o.route_id"
        " JOIN org_nodes n ON n.id = r.node_id JOIN people g ON g.id = o.guard_person_id"
        " JOIN patrol_checkpoints c ON c.route_id = r.id"
        " LEFT JOIN patrol_records pr ON pr.round_id = o.id AND pr.seq = c.seq"
        " WHERE $1 = ANY(n.path) AND o.starts_at >= $2 AND o.starts_at < $3"
        " GROUP BY r.id, r.name, g.id, g.name ORDER BY r.id, g.id LIMIT 10000",
        scope, since_t, until_t)
    return [PatrolReportRow(**dict(r)) for r in rows]


ROUTES = [create_route, list_routes, get_route, create_schedule, start_round, list_rounds,
          patrol_report]


def _times(since: str | None, until: str | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The query's since/until (TimeQuery) as datetimes; 422 for a day that does not exist."""
    try:
        return parse_time(since), parse_time(until)
    except ValueError:
        raise Problem(422, "unprocessable", "since and until must be real dates and times")\
            from None
