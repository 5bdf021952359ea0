"""The big screen's figures: a site's day at a glance (transactions, sales per canteen,
top-ups, door arrivals, alarms), once and pushed live.

`GET /tenants/{id}/screen` answers them for the tenant's local day (today by default);
`GET /tenants/{id}/screen/live` pushes a `screen` event (the same body) at once and whenever
something it counts changes: a journal row, an access decision or an alarm of the tenant, or
the day turns. The access figures (arrivals, alarms) need `access.read` besides
`reports.read`; without it they are null.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Request, get
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.response import ServerSentEvent

from admin_api._auth import Actor
from admin_api._live import Event, live_response, message
from admin_api._routes_merchants import tenant_in_scope
from admin_api._routes_reports import day_range
from admin_api._types import Id
from admin_api.console._routes import _today
from admin_api.console._tally import Tallies


class CanteenSales(msgspec.Struct):
    merchant_id: int
    name: str
    purchases: int
    amount_fen: int
    """Net sales: purchases and captures less reversals."""


class Screen(msgspec.Struct):
    tenant_id: int
    name: str
    day: dt.date
    purchases: int
    declined: int
    amount_fen: int
    canteens: list[CanteenSales]
    """Every merchant of the site with a sale today, by amount (largest first)."""
    topups: int
    topup_fen: int
    arrivals: int | None
    """Doors opened inwards today (None: no access.read)."""
    people_in: int | None
    """Distinct cardholders among them."""
    alarms_today: int | None
    alarms_active: int | None
    """Alarms not cleared (whatever their day)."""
    as_of_lsn: int


async def screen_of(pool: asyncpg.Pool, tallies: Tallies, tenant: Any, day: dt.date | None,
                    access: bool, fresh_seconds: float = 0.0) -> Screen:
    """Sales and top-ups from the process's shared tally of the day (console/_tally.py); the
    access figures counted here (a day's decisions of a site are few next to its sales)."""
    tally, local_day = await tallies.of(pool, tenant, day, fresh_seconds=fresh_seconds)
    r = day_range(tenant["utc_offset_s"], local_day, local_day)
    tid = tenant["id"]
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                        readonly=True):
        name = await conn.fetchval("SELECT name FROM tenants WHERE id = $1", tid)
        names = dict(await conn.fetch("SELECT id, name FROM merchants WHERE id = ANY($1)",
                                      list(tally.merchants)))
        arrivals = alarms = None
        if access:
            arrivals = await conn.fetchrow(
                "SELECT count(*) AS n, count(DISTINCT account_id) FILTER"
                " (WHERE account_id <> 0) AS people FROM access_decisions"
                " WHERE tenant_id = $1 AND code = 0 AND direction = 0 AND committed_at >= $2"
                " AND committed_at < $3", tid, r.start, r.end)
            alarms = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE raised_at >= $2 AND raised_at < $3) AS today,"
                " (SELECT count(*) FROM access_alarms WHERE tenant_id = $1"
                "  AND state <> 'cleared') AS active"
                " FROM access_alarms WHERE tenant_id = $1 AND raised_at >= $2", tid, r.start,
                r.end)
    canteens = sorted((CanteenSales(merchant_id=m, name=names.get(m) or f"#{m}",
                                    purchases=f[0], amount_fen=f[2])
                       for m, f in tally.merchants.items()),
                      key=lambda c: (-c.amount_fen, c.name))
    figures = list(tally.merchants.values())
    return Screen(tenant_id=tid, name=name or str(tid), day=local_day,
                  purchases=sum(f[0] for f in figures),
                  declined=sum(f[1] for f in figures),
                  amount_fen=sum(f[2] for f in figures),
                  canteens=[c for c in canteens if c.purchases or c.amount_fen],
                  topups=tally.topups[0], topup_fen=tally.topups[1],
                  arrivals=arrivals["n"] if arrivals else None,
                  people_in=arrivals["people"] if arrivals else None,
                  alarms_today=alarms["today"] if alarms else None,
                  alarms_active=alarms["active"] if alarms else None, as_of_lsn=tally.lsn)


@get("/tenants/{tenant_id:int}/screen", opt={"permission": "reports.read"}, tags=["reports"],
     summary="A site's day for the big screen: transactions, sales per canteen, top-ups, "
     "arrivals and alarms")
async def screen(tenant_id: Id, actor: Actor, state: State,
                 day: Annotated[dt.date | None, Parameter(
                     description="The local day (default: today)")] = None) -> Screen:
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    return await screen_of(state.pool, state.tallies, tenant, day, actor.can("access.read"))


class _ScreenPoll:
    def __init__(self, pool: asyncpg.Pool, tallies: Tallies, tenant: Any, access: bool,
                 fresh_seconds: float) -> None:
        self.pool, self.tallies, self.tenant, self.access = pool, tallies, tenant, access
        self.fresh_seconds = fresh_seconds
        self.seen: tuple[Any, ...] | None = None
        self.sent: Screen | None = None

    async def __call__(self) -> list[Event]:
        tid = self.tenant["id"]
        mark = await self.pool.fetchrow(
            "SELECT (SELECT coalesce(max(lsn), 0) FROM journal) AS lsn,"
            " (SELECT coalesce(max(id), 0) FROM access_decisions WHERE tenant_id = $1) AS dec,"
            " (SELECT count(*) FROM access_alarms WHERE tenant_id = $1"
            "  AND state <> 'cleared') AS active,"
            " (SELECT coalesce(max(id), 0) FROM access_alarms WHERE tenant_id = $1) AS alarm",
            tid)
        seen = (*mark.values(), _today(self.tenant["utc_offset_s"]))
        if seen == self.seen:
            return []
        self.seen = seen
        figures = await screen_of(self.pool, self.tallies, self.tenant, None, self.access,
                                  fresh_seconds=self.fresh_seconds)
        body = msgspec.structs.replace(figures, as_of_lsn=0)
        if body == self.sent:  # another site's transaction: nothing of this one moved
            return []
        self.sent = body
        return [message("screen", figures, mark["lsn"])]


@get("/tenants/{tenant_id:int}/screen/live", opt={"permission": "reports.read"},
     tags=["reports"], media_type="text/event-stream",
     summary="The big screen's figures (GET /tenants/{tenant_id}/screen), pushed as "
     "server-sent events whenever they change")
async def screen_live(tenant_id: Id, actor: Actor, state: State,
                      request: Request[Any, Any, Any]) -> ServerSentEvent:
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    return live_response(request, state,
                         _ScreenPoll(state.pool, state.tallies, tenant, actor.can("access.read"),
                                     state.settings.live_poll_seconds))


ROUTES = [screen, screen_live]
