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
from admin_api._types import Id
from admin_api.console._tally import Tallies

SEARCH_MAX: Final = 100
"""Most people one search answers (the clerk narrows the words, not pages)."""
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


async def sales_of(pool: asyncpg.Pool, tallies: Tallies, tenant: Any, day: dt.date | None,
                   switch_connected: bool, fresh_seconds: float = 0.0) -> Sales:
    """From the process's shared tally of the day (admin_api/console/_tally.py)."""
    tally, local_day = await tallies.of(pool, tenant, day, fresh_seconds=fresh_seconds)
    hours = [HourSales(hour=h, purchases=f[0], declined=f[1], amount_fen=f[2])
             for h in range(24) for f in (tally.hours.get(h, (0, 0, 0)),)]
    return Sales(tenant_id=tenant["id"], day=local_day, utc_offset_s=tenant["utc_offset_s"],
                 hours=hours, purchases=sum(h.purchases for h in hours),
                 declined=sum(h.declined for h in hours),
                 amount_fen=sum(h.amount_fen for h in hours), as_of_lsn=tally.lsn,
                 switch_connected=switch_connected)


@get("/tenants/{tenant_id:int}/sales/hourly", opt={"permission": "reports.read"},
     tags=["reports"], summary="A tenant's sales of one local day by hour (today by default)")
async def hourly_sales(tenant_id: Id, actor: Actor, state: State,
                       day: Annotated[dt.date | None, Parameter(
                           description="The local day (default: today)")] = None) -> Sales:
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    return await sales_of(state.pool, state.tallies, tenant, day, bool(state.money.connected()))


def _today(utc_offset_s: int) -> dt.date:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=utc_offset_s)).date()


class _SalesPoll:
    """`sales` (a Sales, at once and whenever a sale of the tenant's merchants is journaled
    or the day turns) and `switch` ({"connected": bool}, at once and on every change). Every
    stream reads the process's shared tally, refreshed at most once per poll interval."""

    def __init__(self, pool: asyncpg.Pool, tallies: Tallies, tenant: Any, connected: Any,
                 fresh_seconds: float) -> None:
        self.pool, self.tallies, self.tenant, self.connected = pool, tallies, tenant, connected
        self.fresh_seconds = fresh_seconds
        self.sales_lsn = -1
        self.day: dt.date | None = None
        self.was_connected: bool | None = None

    async def __call__(self) -> list[Event]:
        events: list[Event] = []
        is_connected = bool(self.connected())
        today = _today(self.tenant["utc_offset_s"])
        tally, _ = await self.tallies.of(self.pool, self.tenant, today,
                                         fresh_seconds=self.fresh_seconds)
        if tally.sales_lsn != self.sales_lsn or today != self.day:
            sales = await sales_of(self.pool, self.tallies, self.tenant, today, is_connected,
                                   fresh_seconds=float("inf"))
            self.sales_lsn, self.day = tally.sales_lsn, today
            events.append(message("sales", sales, sales.as_of_lsn))
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
    poll = _SalesPoll(state.pool, state.tallies, tenant, state.money.connected,
                      state.settings.live_poll_seconds)
    return live_response(request, state, poll)


ROUTES = [search_people, recent_transactions, hourly_sales, live]
