"""The JSON routes the console's pages need that the API did not have: a people search over
name, card number, external id and department; a person's latest transactions; today's sales
by hour; and the live stream (server-sent events) of today's sales and the switch's state.

They are ordinary API routes: in the OpenAPI document, behind a permission and the subtree
check, walked by tests/test_admin_access.py like every other. The pages themselves hold no data.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Final

import asyncpg
import msgspec
from litestar import Request, get
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.response import ServerSentEvent

from admin_api._auth import Actor
from admin_api._live import Event, live_response, message
from admin_api._routes_merchants import tenant_in_scope
from admin_api._routes_people import ACCOUNT_STATUS, person_in_scope
from admin_api._routes_queries import _ENTRY_SELECT, Entry, entry
from admin_api._routes_reports import _from, _Sql, day_range
from admin_api._types import Id

SEARCH_MAX: Final = 100
"""Most people one search answers (the clerk narrows the words, not pages)."""
_PURCHASE, _REVERSAL, _CAPTURE = 1, 2, 5
SALE_KINDS: Final = (_PURCHASE, _REVERSAL, _CAPTURE)
"""What counts as sales: purchases and captures, less reversals (the merchants' net)."""


class PersonHit(msgspec.Struct):
    id: int
    name: str
    external_id: str | None
    node_id: int
    department: str
    """The name of the person's node (a department, or the tenant itself)."""
    tenant_id: int
    class_id: int
    account_status: str
    card_nos: list[int]
    """The person's cards that are not cancelled."""


class PersonSearch(msgspec.Struct):
    items: list[PersonHit]
    more: bool
    """More people matched than `limit`: narrow the words."""


def _like(text: str) -> str:
    """`text` as a literal inside ILIKE '%...%' (its own % and _ match only themselves)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@get("/people/search", opt={"permission": "people.read"}, tags=["people"],
     summary="Find people of your subtree by name, card number, external id or department",
     description="`q` matches a name or department name containing it (any case), an "
     "external id equal to it, or (digits) a card number of the person's account. Without "
     "`q`: the first people by name. At most `limit` people, by name.")
async def search_people(actor: Actor, state: State,
                        q: Annotated[str | None, Parameter(max_length=100)] = None,
                        limit: Annotated[int, Parameter(ge=1, le=SEARCH_MAX)] = 50
                        ) -> PersonSearch:
    words = (q or "").strip() or None
    card_no = int(words) if words and words.isascii() and words.isdigit() and len(words) <= 18 \
        else None
    rows = await state.pool.fetch(
        "SELECT p.id, p.name, p.external_id, p.node_id, n.name AS department, p.tenant_id,"
        " p.class_id, a.status AS account_status, array(SELECT c.card_no FROM cards c"
        "  WHERE c.account_id = p.account_id AND c.status = 0 ORDER BY c.card_no) AS card_nos"
        " FROM people p JOIN accounts a ON a.id = p.account_id"
        " JOIN org_nodes n ON n.id = p.node_id"
        " WHERE $1 = ANY(n.path) AND ($2::text IS NULL"
        "  OR p.name ILIKE '%' || $3 || '%' OR n.name ILIKE '%' || $3 || '%'"
        "  OR p.external_id = $2"
        "  OR p.account_id = (SELECT c.account_id FROM cards c WHERE c.card_no = $4))"
        " ORDER BY p.name, p.id LIMIT $5",
        actor.node_id, words, _like(words or ""), card_no, limit + 1)
    items = [PersonHit(id=r["id"], name=r["name"], external_id=r["external_id"],
                       node_id=r["node_id"], department=r["department"], tenant_id=r["tenant_id"],
                       class_id=r["class_id"],
                       account_status=ACCOUNT_STATUS[r["account_status"]],
                       card_nos=list(r["card_nos"])) for r in rows[:limit]]
    return PersonSearch(items=items, more=len(rows) > limit)


@get("/people/{person_id:int}/recent", opt={"permission": "people.read"}, tags=["reports"],
     summary="A person's latest transactions, newest first, with running balance")
async def recent_transactions(person_id: Id, actor: Actor, state: State,
                              limit: Annotated[int, Parameter(ge=1, le=200)] = 20
                              ) -> list[Entry]:
    person = await person_in_scope(state.pool, actor, person_id)
    rows = await state.pool.fetch(
        _ENTRY_SELECT + " WHERE j.account_id = $1 AND j.kind <> 3 ORDER BY j.lsn DESC LIMIT $2",
        person["account_id"], limit)
    return [entry(r) for r in rows]


class HourSales(msgspec.Struct):
    hour: int
    """The local hour, 0-23."""
    purchases: int
    """Approved purchases and captures."""
    declined: int
    """Declined purchases."""
    amount_fen: int
    """Net sales: purchases and captures less reversals."""


class Sales(msgspec.Struct):
    tenant_id: int
    day: dt.date
    """The tenant's local day."""
    utc_offset_s: int
    hours: list[HourSales]
    """All 24 hours, in order."""
    purchases: int
    declined: int
    amount_fen: int
    as_of_lsn: int
    """The journal up to here is counted."""
    switch_connected: bool
    """The admin API's own terminal is signed on to the switch."""


async def sales_of(pool: asyncpg.Pool, tenant: Any, day: dt.date | None,
                   switch_connected: bool) -> Sales:
    offset = tenant["utc_offset_s"]
    r = day_range(offset, day, day)
    q = _Sql()
    sql = (
        "SELECT l.minute / 60 AS hour,"
        f" count(*) FILTER (WHERE j.code = 0 AND j.kind IN ({_PURCHASE}, {_CAPTURE})) AS n,"
        f" count(*) FILTER (WHERE j.code <> 0 AND j.kind = {_PURCHASE}) AS declined,"
        " coalesce(sum(j.merchant_delta_fen), 0)::bigint AS amount"
        + _from(q, offset, [])
        + f" WHERE j.merchant_tenant_id = {q(tenant['id'])}"
        f" AND j.committed_at >= {q(r.start)} AND j.committed_at < {q(r.end)}"
        f" AND j.kind = ANY({q(list(SALE_KINDS))}::smallint[]) GROUP BY 1"
    )
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                        readonly=True):
        lsn = await conn.fetchval("SELECT coalesce(max(lsn), 0) FROM journal")
        rows = await conn.fetch(sql, *q.args)
    by_hour = {row["hour"]: row for row in rows}
    hours = [HourSales(hour=h, purchases=by_hour[h]["n"] if h in by_hour else 0,
                       declined=by_hour[h]["declined"] if h in by_hour else 0,
                       amount_fen=by_hour[h]["amount"] if h in by_hour else 0)
             for h in range(24)]
    return Sales(tenant_id=tenant["id"], day=r.from_day, utc_offset_s=offset, hours=hours,
                 purchases=sum(h.purchases for h in hours),
                 declined=sum(h.declined for h in hours),
                 amount_fen=sum(h.amount_fen for h in hours), as_of_lsn=lsn,
                 switch_connected=switch_connected)


@get("/tenants/{tenant_id:int}/sales/hourly", opt={"permission": "reports.read"},
     tags=["reports"], summary="A tenant's sales of one local day by hour (today by default)")
async def hourly_sales(tenant_id: Id, actor: Actor, state: State,
                       day: Annotated[dt.date | None, Parameter(
                           description="The local day (default: today)")] = None) -> Sales:
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    return await sales_of(state.pool, tenant, day, bool(state.money.connected()))


def _today(utc_offset_s: int) -> dt.date:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=utc_offset_s)).date()


class _SalesPoll:
    """`sales` (a Sales, at once and whenever a journal row of the tenant's merchants commits
    or the day turns) and `switch` ({"connected": bool}, at once and on every change)."""

    def __init__(self, pool: asyncpg.Pool, tenant: Any, connected: Any) -> None:
        self.pool, self.tenant, self.connected = pool, tenant, connected
        self.last_lsn = -1
        self.day: dt.date | None = None
        self.was_connected: bool | None = None

    async def __call__(self) -> list[Event]:
        events: list[Event] = []
        is_connected = bool(self.connected())
        today = _today(self.tenant["utc_offset_s"])
        newer = await self.pool.fetchval(
            "SELECT max(lsn) FROM journal WHERE lsn > $1 AND merchant_tenant_id = $2",
            max(self.last_lsn, 0), self.tenant["id"])
        if self.last_lsn < 0 or newer is not None or today != self.day:
            sales = await sales_of(self.pool, self.tenant, today, is_connected)
            self.last_lsn, self.day = max(sales.as_of_lsn, newer or 0), today
            events.append(message("sales", sales, self.last_lsn))
        if is_connected != self.was_connected:
            self.was_connected = is_connected
            events.append(message("switch", {"connected": is_connected}))
        return events


@get("/tenants/{tenant_id:int}/live", opt={"permission": "reports.read"}, tags=["reports"],
     media_type="text/event-stream",
     summary="Today's sales by hour and the switch's state, pushed as server-sent events",
     description="A text/event-stream: a `sales` event (the body of "
     "GET /tenants/{tenant_id}/sales/hourly) at once and whenever a transaction of the "
     "tenant's merchants is journaled; a `switch` event ({\"connected\": true|false}) at once "
     "and on every change. The stream ends after live_max_seconds (reconnect) and soon after "
     "the token is revoked. Send the token as for any route (the console reads the stream "
     "with fetch, not EventSource).")
async def live(tenant_id: Id, actor: Actor, state: State,
               request: Request[Any, Any, Any]) -> ServerSentEvent:
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    return live_response(request, state, _SalesPoll(state.pool, tenant, state.money.connected))


ROUTES = [search_people, recent_transactions, hourly_sales, live]
