"""The access background task of the admin API: visitor passes expire, patrols are checked.

It runs in the admin API process, beside the card expiry, every `access_check_seconds`:
everything it needs (passes, schedules, rounds, the switch's decision records) is in
PostgreSQL, its work is minutes-scale, and each step locks the rows it changes and skips the
locked ones, so several admin API processes may run it at once. The switch stays on the hot
path only; a separate `onecard patrol-check` process would be one more thing to deploy and
watch for no gain (docs/access-admin.md).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Final

import asyncpg
import msgspec
import structlog

from admin_api._expiry import SYSTEM
from admin_api._store import change
from admin_api.access._visitors import end_pass_tx

BATCH_MAX: Final = 1_000
SCHEDULES_MAX: Final = 10_000

log = structlog.get_logger("onecard.admin.access")


async def expire_passes(pool: asyncpg.Pool) -> int:
    """End the visitor passes past valid_until now; how many."""
    done = 0
    while True:
        async with change(pool, SYSTEM) as tx:
            rows = await tx.conn.fetch(
                "SELECT v.*, n.path FROM visitor_passes v JOIN org_nodes n ON n.id = v.node_id"
                " WHERE v.status = 'active' AND v.valid_until <= now() ORDER BY v.id LIMIT $1"
                " FOR UPDATE OF v SKIP LOCKED", BATCH_MAX)
            for r in rows:
                await end_pass_tx(tx, r, "expired")
        done += len(rows)
        if len(rows) < BATCH_MAX:
            return done


class PatrolCheck(msgspec.Struct, frozen=True):
    rounds_made: int = 0
    on_time: int = 0
    late: int = 0
    missed: int = 0
    """Each missed checkpoint raised one patrol_missed alarm."""


async def make_scheduled_rounds(conn: asyncpg.Connection, now: dt.datetime) -> int:
    """The rounds of the schedules that started in the last day (each once)."""
    rows = await conn.fetch(
        "SELECT s.id, s.route_id, s.guard_person_id, s.weekdays, s.start_minute,"
        " t.utc_offset_s, (SELECT max(offset_s + tolerance_s) FROM patrol_checkpoints c"
        " WHERE c.route_id = r.id) AS length_s"
        " FROM patrol_schedules s JOIN patrol_routes r ON r.id = s.route_id"
        " JOIN tenants t ON t.id = r.tenant_id WHERE s.enabled AND r.enabled"
        " ORDER BY s.id LIMIT $1", SCHEDULES_MAX)
    todo = []
    for s in rows:
        offset = dt.timedelta(seconds=s["utc_offset_s"])
        local_today = (now + offset).date()
        for day in (local_today - dt.timedelta(days=1), local_today):
            if not s["weekdays"] >> day.weekday() & 1:
                continue
            starts_at = (dt.datetime.combine(day, dt.time(), dt.UTC)
                         + dt.timedelta(minutes=s["start_minute"]) - offset)
            if now - dt.timedelta(days=1) < starts_at <= now:
                todo.append((s["route_id"], s["id"], s["guard_person_id"], starts_at,
                             starts_at + dt.timedelta(seconds=s["length_s"] or 0)))
    if not todo:
        return 0
    made = await conn.fetch(
        "INSERT INTO patrol_rounds (route_id, schedule_id, guard_person_id, starts_at, ends_at)"
        " SELECT * FROM unnest($1::integer[], $2::integer[], $3::integer[],"
        " $4::timestamptz[], $5::timestamptz[])"
        " ON CONFLICT (schedule_id, starts_at) DO NOTHING RETURNING id",
        *map(list, zip(*todo, strict=True)))
    return len(made)


async def _first_read(conn: asyncpg.Connection, door_id: int, account_id: int,
                      lo: dt.datetime, hi: dt.datetime) -> dt.datetime | None:
    """When the guard's credential was first read at the door in [lo, hi]."""
    value = await conn.fetchval(
        "SELECT min(committed_at) FROM access_decisions WHERE door_id = $1 AND account_id = $2"
        " AND committed_at >= $3 AND committed_at <= $4", door_id, account_id, lo, hi)
    return value


async def judge_rounds(conn: asyncpg.Connection, now: dt.datetime) -> PatrolCheck:
    """Turn reads into records, and due checkpoints without a read into missed ones (and
    alarms); close the rounds that are over."""
    on_time = late = missed = 0
    rounds = await conn.fetch(
        "SELECT o.*, r.tenant_id, r.name AS route, g.account_id, g.name AS guard"
        " FROM patrol_rounds o JOIN patrol_routes r ON r.id = o.route_id"
        " JOIN people g ON g.id = o.guard_person_id"
        " WHERE o.status = 'open' AND o.starts_at <= $1 ORDER BY o.id LIMIT $2"
        " FOR UPDATE OF o SKIP LOCKED", now, BATCH_MAX)
    for o in rounds:
        checkpoints = await conn.fetch(
            "SELECT * FROM patrol_checkpoints WHERE route_id = $1 ORDER BY seq", o["route_id"])
        records = {r["seq"]: r for r in await conn.fetch(
            "SELECT * FROM patrol_records WHERE round_id = $1", o["id"])}
        for c in checkpoints:
            due = o["starts_at"] + dt.timedelta(seconds=c["offset_s"])
            tol = dt.timedelta(seconds=c["tolerance_s"])
            rec = records.get(c["seq"])
            if rec is None:
                read = await _first_read(conn, c["door_id"], o["account_id"], due - tol,
                                         due + tol)
                if read is not None:
                    on_time += 1
                    await conn.execute(
                        "INSERT INTO patrol_records (round_id, seq, door_id, due_at, read_at,"
                        " status) VALUES ($1, $2, $3, $4, $5, 'on_time')",
                        o["id"], c["seq"], c["door_id"], due, read)
                elif now > due + tol:
                    missed += 1
                    await conn.execute(
                        "INSERT INTO patrol_records (round_id, seq, door_id, due_at, status)"
                        " VALUES ($1, $2, $3, $4, 'missed')", o["id"], c["seq"], c["door_id"],
                        due)
                    await conn.execute(
                        "INSERT INTO access_alarms (tenant_id, kind, door_id, account_id,"
                        " detail) VALUES ($1, 'patrol_missed', $2, $3, $4)",
                        o["tenant_id"], c["door_id"], o["account_id"],
                        f"round {o['id']} of route {o['route']!r}: {o['guard']} did not read "
                        f"checkpoint {c['seq']} by {(due + tol).isoformat()}")
            elif rec["status"] == "missed":
                read = await _first_read(conn, c["door_id"], o["account_id"], due + tol,
                                         max(o["ends_at"], due + tol))
                if read is not None:
                    late += 1
                    await conn.execute(
                        "UPDATE patrol_records SET status = 'late', read_at = $3"
                        " WHERE round_id = $1 AND seq = $2", o["id"], c["seq"], read)
        if now > o["ends_at"]:
            await conn.execute("UPDATE patrol_rounds SET status = 'closed' WHERE id = $1",
                               o["id"])
    return PatrolCheck(on_time=on_time, late=late, missed=missed)


async def check_patrols(pool: asyncpg.Pool, now: dt.datetime | None = None) -> PatrolCheck:
    now = now or dt.datetime.now(dt.UTC)
    async with pool.acquire() as conn, conn.transaction():
        made = await make_scheduled_rounds(conn, now)
        result = await judge_rounds(conn, now)
    if result.missed:
        log.warning("patrol.checkpoints_missed", checkpoints=result.missed)
    return msgspec.structs.replace(result, rounds_made=made)


async def run_access_tasks(pool: asyncpg.Pool, every_seconds: float) -> None:
    """Until cancelled: expire passes and check patrols every `every_seconds`; failures are
    logged and retried."""
    while True:
        try:
            n = await expire_passes(pool)
            if n:
                log.info("visitor.passes_expired", passes=n)
            await check_patrols(pool)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("admin.access_tasks_failed", error=str(exc))
        await asyncio.sleep(every_seconds)
