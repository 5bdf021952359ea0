"""Settlement routes: a tenant's cutover, a business day's settlement, its confirmation.

    GET  /tenants/{tenant_id}/settlements/{day}          settlement.read
    POST /tenants/{tenant_id}/settlements/{day}/confirm  settlement.confirm
    POST /tenants/{tenant_id}/cutover                    org.write

The tenant's node must be in the caller's subtree (404 otherwise, as for an unknown tenant).
A confirmation request stores the figures as pending and submits a document of type
'settlement'; a second person approves it (`POST /documents/{id}/approve`), which freezes the
day and pays the merchants out (admin_api/settlement/_payout.py).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Final

import msgspec
from litestar import get as get_route
from litestar import post
from litestar.datastructures import State
from msgspec import Meta

from admin_api._auth import Actor
from admin_api._problems import Problem
from admin_api._routes_merchants import tenant_in_scope
from admin_api._store import change
from admin_api._types import Id
from admin_api.settlement._compute import Settlement, compute_settlement, encode
from admin_api.settlement._payout import ensure_accounts, store_pending

DEFAULT_LEVELS: Final = 1
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


class SettlementView(msgspec.Struct):
    status: str
    """open (not requested), pending (a confirmation document waits) or confirmed (frozen)."""
    document_id: int | None
    matches_stored: bool | None
    """For a pending or confirmed day: whether recomputing now gives the stored figures."""
    settlement: Settlement


class ConfirmIn(msgspec.Struct, forbid_unknown_fields=True):
    comment: Annotated[str, Meta(max_length=500)] = ""


class CutoverIn(msgspec.Struct, forbid_unknown_fields=True):
    cutover: Annotated[str, Meta(min_length=5, max_length=8)]
    """Local time of day the business day ends, HH:MM or HH:MM:SS (00:00 by default)."""


class CutoverOut(msgspec.Struct):
    tenant_id: int
    cutover: str
    cutover_s: int


def _clock(cutover_s: int) -> str:
    return f"{cutover_s // 3600:02d}:{cutover_s // 60 % 60:02d}:{cutover_s % 60:02d}"


@get_route("/tenants/{tenant_id:int}/settlements/{day:date}",
           opt={"permission": "settlement.read"}, tags=["settlement"],
           summary="A business day's settlement, computed from the journal (frozen once "
                   "confirmed)")
async def get_settlement(tenant_id: Id, day: dt.date, actor: Actor, state: State
                         ) -> SettlementView:
    await tenant_in_scope(state.pool, actor, tenant_id)
    async with state.pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                              readonly=True):
        s = await compute_settlement(conn, tenant_id, day)
        stored = await conn.fetchrow("SELECT status, document_id, figures FROM settlements"
                                     " WHERE tenant_id = $1 AND business_day = $2",
                                     tenant_id, day)
    if stored is None:
        return SettlementView(status="open", document_id=None, matches_stored=None,
                              settlement=s)
    return SettlementView(status=stored["status"], document_id=stored["document_id"],
                          matches_stored=encode(s).decode() == stored["figures"], settlement=s)


@post("/tenants/{tenant_id:int}/settlements/{day:date}/confirm",
      opt={"permission": "settlement.confirm"}, tags=["settlement"], status_code=200,
      summary="Request the confirmation of a day's settlement: a document another person "
              "approves")
async def confirm_settlement(tenant_id: Id, day: dt.date, data: ConfirmIn, actor: Actor,
                             state: State) -> SettlementView:
    if actor.user_id <= 0:
        raise Problem(403, "forbidden", "settlements are confirmed by a log-in, not an API key")
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    path = list(tenant["path"])
    async with change(state.pool, actor) as tx:
        conn = tx.conn
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _CONFIRM_LOCK, tenant_id)
        stored = await conn.fetchrow(
            "SELECT s.status, s.document_id, d.status AS doc_status FROM settlements s"
            " JOIN documents d ON d.id = s.document_id WHERE s.tenant_id = $1"
            " AND s.business_day = $2", tenant_id, day)
        if stored is not None and stored["status"] == "confirmed":
            raise Problem(409, "already-confirmed", f"the settlement of tenant {tenant_id} for "
                          f"{day} is confirmed (document {stored['document_id']}): frozen")
        if stored is not None and stored["doc_status"] != "rejected":
            raise Problem(409, "in-progress", f"document {stored['document_id']} already asks "
                          f"to confirm this day ({stored['doc_status']})")
        if stored is not None:  # a rejected request: asked again with fresh figures
            await conn.execute("DELETE FROM settlements WHERE tenant_id = $1"
                               " AND business_day = $2", tenant_id, day)
        s = await compute_settlement(conn, tenant_id, day)
        await ensure_accounts(tx, tenant_id, tenant["node_id"])
        levels = await conn.fetchval("SELECT levels FROM approval_policies WHERE tenant_id = $1"
                                     " AND doc_type = 'settlement'", tenant_id)
        doc_id = await conn.fetchval(
            "INSERT INTO documents (tenant_id, node_id, node_path, doc_type, title, reason,"
            " status, levels, total_fen, lines_count, created_by, submitted_at) VALUES"
            " ($1, $2, $3, 'settlement', $4, $5, 'submitted', $6, $7, 0, $8, now())"
            " RETURNING id", tenant_id, tenant["node_id"], path,
            f"Settlement of tenant {tenant_id} for {day}", data.comment,
            int(levels or DEFAULT_LEVELS), s.totals.net_fen, actor.user_id)
        await conn.execute(
            "INSERT INTO approval_steps (document_id, version, level, user_id, decision,"
            " comment) VALUES ($1, 1, 0, $2, 'submit', $3)", doc_id, actor.user_id,
            data.comment)
        await store_pending(conn, s, doc_id)
        tx.audit("settlement.request", "settlement", f"{tenant_id}/{day}", path,
                 after={"document_id": doc_id, "net_fen": s.totals.net_fen,
                        "journal_rows": s.journal_rows})
    return SettlementView(status="pending", document_id=doc_id, matches_stored=True,
                          settlement=s)


_CONFIRM_LOCK: Final = 0x0CA2D011
"""Advisory lock class of one tenant's confirmation requests (second key: the tenant)."""


@post("/tenants/{tenant_id:int}/cutover", opt={"permission": "org.write"},
      tags=["settlement"], status_code=200,
      summary="Set the local time at which the tenant's business day ends")
async def set_cutover(tenant_id: Id, data: CutoverIn, actor: Actor, state: State
                      ) -> CutoverOut:
    m = _CLOCK.match(data.cutover)
    if m is None:
        raise Problem(422, "unprocessable", "cutover is HH:MM or HH:MM:SS (00:00 to 23:59:59)")
    seconds = int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3] or 0)
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    async with change(state.pool, actor) as tx:
        before = await tx.conn.fetchval("SELECT cutover_s FROM tenants WHERE id = $1 FOR UPDATE",
                                        tenant_id)
        await tx.conn.execute("UPDATE tenants SET cutover_s = $2 WHERE id = $1", tenant_id,
                              seconds)
        tx.audit("tenant.cutover", "tenant", tenant_id, list(tenant["path"]),
                 before={"cutover_s": before}, after={"cutover_s": seconds})
    return CutoverOut(tenant_id=tenant_id, cutover=_clock(seconds), cutover_s=seconds)


ROUTES = [get_settlement, confirm_settlement, set_cutover]
