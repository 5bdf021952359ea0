"""Visitor passes: reception issues a temporary credential for a host, doors and a window.

A pass is a person of identity class "visitor" under the host's node, with one temporary card
(a QR pass encodes that card number) and a grant of the pass's doors limited to the window. It
ends by itself at `valid_until` (the access task cancels the card, _tasks.py), or earlier when
revoked; either way the card goes out on the change feed as cancelled, so every door refuses
it within a second.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Annotated, Literal

import asyncpg
import msgspec
from litestar import get, post
from litestar.datastructures import State
from litestar.params import Parameter
from msgspec import Meta

from admin_api._auth import Actor
from admin_api._problems import Problem
from admin_api._routes_people import PersonIn, create_person_tx, person_in_scope
from admin_api._store import Change, change, subtree_root
from admin_api._types import AfterId, Id, IdField, Limit, OptionalId, TimeQuery, parse_time
from admin_api.access._doors import (
    credential_usage,
    doors_in_scope,
    grant_person_doors,
    revoke_person_grants,
)
from protocols.changes import CardBound, CardCancelled

PASS_SECONDS_MAX = 31 * 86_400
"""The longest visitor pass: a month (a contractor's)."""
VISITOR_CARD_BASE = 8_800_000_000_000
"""Generated visitor card numbers (a QR pass's) start here; a physical card brings its own."""


class VisitorIn(msgspec.Struct, forbid_unknown_fields=True):
    host_person_id: IdField
    """The person visited: the pass belongs to their node."""
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    door_ids: Annotated[list[IdField], Meta(min_length=1, max_length=64)]
    valid_until: dt.datetime
    """When the pass ends by itself (with a time zone)."""
    valid_from: dt.datetime | None = None
    """Default: now."""
    credential: Literal["card", "qr"] = "qr"
    card_no: Annotated[int, Meta(ge=1, le=10**18)] | None = None
    """The temporary card handed over (credential "card"); a QR pass gets a generated one."""
    phone: Annotated[str, Meta(max_length=32)] = ""
    purpose: Annotated[str, Meta(max_length=200)] = ""


class VisitorOut(msgspec.Struct):
    id: int
    host_person_id: int
    visitor_person_id: int
    name: str
    phone: str
    purpose: str
    credential: str
    card_no: int
    qr: str
    """What the visitor's phone shows for a QR pass (the card number a door reads); "" else."""
    door_ids: list[int]
    valid_from: dt.datetime
    valid_until: dt.datetime
    status: str
    ended_at: dt.datetime | None


class VisitorPage(msgspec.Struct):
    items: list[VisitorOut]
    next_after: int | None


class VisitReport(msgspec.Struct):
    """A pass and what it was used for: entries at doors (granted) and refusals."""

    visitor: VisitorOut
    host_name: str
    entries: int
    denied: int
    first_entry_at: dt.datetime | None
    last_entry_at: dt.datetime | None


_SELECT = (
    "SELECT v.*, n.path FROM visitor_passes v JOIN org_nodes n ON n.id = v.node_id"
)


def period(since: dt.datetime | None, until: dt.datetime | None
           ) -> tuple[dt.datetime, dt.datetime]:
    """A report's period: `until` defaults to now, `since` to 7 days before `until`."""
    until = until or dt.datetime.now(dt.UTC)
    return since or until - dt.timedelta(days=7), until


def qr_text(card_no: int) -> str:
    return f"OCV1:{card_no}"


def visitor_out(r: asyncpg.Record) -> VisitorOut:
    return VisitorOut(id=r["id"], host_person_id=r["host_person_id"],
                      visitor_person_id=r["visitor_person_id"], name=r["visitor_name"],
                      phone=r["visitor_phone"], purpose=r["purpose"],
                      credential=r["credential"], card_no=r["card_no"],
                      qr=qr_text(r["card_no"]) if r["credential"] == "qr" else "",
                      door_ids=list(r["door_ids"]), valid_from=r["valid_from"],
                      valid_until=r["valid_until"], status=r["status"], ended_at=r["ended_at"])


async def _visitor_class(conn: asyncpg.Connection) -> int:
    class_id = await conn.fetchval(
        "SELECT id FROM identity_classes WHERE lower(name) = 'visitor' ORDER BY id LIMIT 1")
    if class_id is None:
        raise Problem(422, "unprocessable", "the site has no identity class named 'visitor' "
                      "(POST /classes)")
    return int(class_id)


@post("/visitors", opt={"permission": "visitors.write"}, tags=["visitors"],
      summary="Issue a visitor pass (a QR code or a temporary card) for a host, doors and a "
      "validity window")
async def issue_pass(data: VisitorIn, actor: Actor, state: State) -> VisitorOut:
    now = dt.datetime.now(dt.UTC)
    valid_from = data.valid_from or now
    if valid_from.tzinfo is None or data.valid_until.tzinfo is None:
        raise Problem(422, "unprocessable", "valid_from and valid_until need a time zone")
    if data.valid_until <= max(valid_from, now):
        raise Problem(422, "unprocessable", "valid_until must be after valid_from and now")
    if (data.valid_until - valid_from).total_seconds() > PASS_SECONDS_MAX:
        raise Problem(422, "unprocessable", f"a pass lasts at most {PASS_SECONDS_MAX // 86400} "
                      "days")
    if (data.credential == "card") != (data.card_no is not None):
        raise Problem(422, "unprocessable", "card_no is given exactly when credential is 'card'")
    async with change(state.pool, actor) as tx:
        host = await person_in_scope(tx.conn, actor, data.host_person_id)
        doors = await doors_in_scope(tx.conn, actor, data.door_ids)
        if any(d["tenant_id"] != host["tenant_id"] for d in doors):
            raise Problem(422, "unprocessable", "every door must be of the host's tenant")
        card_no = data.card_no
        if card_no is None:
            card_no = VISITOR_CARD_BASE + secrets.randbelow(10**12)
        if await tx.conn.fetchval("SELECT true FROM cards WHERE card_no = $1", card_no):
            raise Problem(409, "conflict", f"card number {card_no} is taken (a card number is "
                          "used once on the site and never reused)")
        visitor = await create_person_tx(tx, PersonIn(
            node_id=host["node_id"], name=data.name, class_id=await _visitor_class(tx.conn),
            phone=data.phone))
        await tx.conn.execute(
            "INSERT INTO cards (card_no, account_id, card_type, valid_until)"
            " VALUES ($1, $2, 'temporary', $3)", card_no, visitor.account_id,
            data.valid_until.date() + dt.timedelta(days=1))
        tx.event(CardBound(card_no, visitor.account_id))
        await grant_person_doors(tx, visitor.id, host, [d["id"] for d in doors], valid_from,
                                 data.valid_until)
        row = await tx.conn.fetchrow(
            "INSERT INTO visitor_passes (tenant_id, node_id, host_person_id, visitor_person_id,"
            " visitor_name, visitor_phone, purpose, credential, card_no, door_ids, valid_from,"
            " valid_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            " RETURNING *, $13::integer[] AS path",
            host["tenant_id"], host["node_id"], host["id"], visitor.id, data.name, data.phone,
            data.purpose, data.credential, card_no, sorted({d["id"] for d in doors}),
            valid_from, data.valid_until, list(host["path"]))
        out = visitor_out(row)
        tx.audit("visitor.issue", "visitor_pass", out.id, list(host["path"]), after=out)
    return out


async def end_pass_tx(tx: Change, row: asyncpg.Record, status: str) -> VisitorOut:
    """Revoke or expire one active pass (its row locked): card cancelled, grants gone."""
    before = visitor_out(row)
    ended = await tx.conn.fetchrow(
        "UPDATE visitor_passes SET status = $2, ended_at = now() WHERE id = $1"
        " RETURNING *, $3::integer[] AS path", row["id"], status, list(row["path"]))
    account_id = await tx.conn.fetchval(
        "UPDATE cards SET status = 1, cancelled_at = now(), cancel_reason = $2"
        " WHERE card_no = $1 AND status = 0 RETURNING account_id", row["card_no"],
        f"visitor pass {status}")
    if account_id is not None:
        # The card only: the visitor's account stays as it is (a counter top-up on it, however
        # unlikely, is refunded the usual way, not lost here).
        tx.event(CardCancelled(row["card_no"], account_id))
    await revoke_person_grants(tx, row["visitor_person_id"])
    out = visitor_out(ended)
    tx.audit(f"visitor.{'revoke' if status == 'revoked' else 'expire'}", "visitor_pass",
             row["id"], list(row["path"]), before=before, after=out)
    return out


@post("/visitors/{visitor_id:int}/revoke", opt={"permission": "visitors.write"},
      tags=["visitors"], status_code=200,
      summary="End a visitor pass now (its credential is refused at every door within a second)")
async def revoke_pass(visitor_id: Id, actor: Actor, state: State) -> VisitorOut:
    async with change(state.pool, actor) as tx:
        row = await tx.conn.fetchrow(_SELECT + " WHERE v.id = $1 FOR UPDATE OF v", visitor_id)
        actor.require_node(list(row["path"]) if row else None, f"visitor pass {visitor_id}")
        if row["status"] != "active":
            raise Problem(409, "conflict", f"the pass is already {row['status']}")
        return await end_pass_tx(tx, row, "revoked")


@get("/visitors/{visitor_id:int}", opt={"permission": "visitors.read"}, tags=["visitors"],
     summary="One visitor pass")
async def get_pass(visitor_id: Id, actor: Actor, state: State) -> VisitorOut:
    row = await state.pool.fetchrow(_SELECT + " WHERE v.id = $1", visitor_id)
    actor.require_node(list(row["path"]) if row else None, f"visitor pass {visitor_id}")
    return visitor_out(row)


@get("/visitors", opt={"permission": "visitors.read"}, tags=["visitors"],
     summary="Visitor passes of your subtree, newest first by id, paged")
async def list_passes(actor: Actor, state: State, node_id: OptionalId = None,
                      status: Annotated[Literal["active", "expired", "revoked"] | None,
                                        Parameter()] = None,
                      after: AfterId = 0, limit: Limit = 100) -> VisitorPage:
    scope = await subtree_root(state.pool, actor, node_id)
    rows = await state.pool.fetch(
        _SELECT + " WHERE $1 = ANY(n.path) AND ($2 = 0 OR v.id < $2)"
        " AND ($3::text IS NULL OR v.status = $3) ORDER BY v.id DESC LIMIT $4",
        scope, after, status, limit + 1)
    items = [visitor_out(r) for r in rows[:limit]]
    return VisitorPage(items=items, next_after=items[-1].id if len(rows) > limit else None)


@get("/visitors/report", opt={"permission": "visitors.read"}, tags=["visitors"],
     summary="Visits in a period: each pass with its host and its entries and refusals")
async def visit_report(actor: Actor, state: State, since: TimeQuery = None,
                       until: TimeQuery = None, node_id: OptionalId = None
                       ) -> list[VisitReport]:
    """Default period: the last 7 days."""
    since_t, until_t = _times(since, until)
    since_t, until_t = period(since_t, until_t)
    if since_t.tzinfo is None or until_t.tzinfo is None or until_t <= since_t:
        raise Problem(422, "unprocessable", "since and until need a time zone, until after since")
    if (until_t - since_t).days > 366:
        raise Problem(422, "unprocessable", "a report covers at most a year")
    scope = await subtree_root(state.pool, actor, node_id)
    rows = await state.pool.fetch(
        _SELECT.replace("SELECT v.*", "SELECT v.*, h.name AS host_name")
        + " JOIN people h ON h.id = v.host_person_id"
        " WHERE $1 = ANY(n.path) AND v.valid_from < $3 AND v.valid_until > $2"
        " ORDER BY v.id LIMIT 10000", scope, since_t, until_t)
    usage = await credential_usage(state.pool, [r["card_no"] for r in rows], since_t, until_t)
    out = []
    for r in rows:
        entries, denied, first, last = usage.get(r["card_no"], (0, 0, None, None))
        out.append(VisitReport(visitor=visitor_out(r), host_name=r["host_name"],
                               entries=entries, denied=denied, first_entry_at=first,
                               last_entry_at=last))
    return out


ROUTES = [issue_pass, list_passes, visit_report, get_pass, revoke_pass]


def _times(since: str | None, until: str | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The query's since/until (TimeQuery) as datetimes; 422 for a day that does not exist."""
    try:
        return parse_time(since), parse_time(until)
    except ValueError:
        raise Problem(422, "unprocessable", "since and until must be real dates and times")\
            from None
