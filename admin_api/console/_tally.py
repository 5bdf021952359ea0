"""A site's sales of one local day, kept by adding the journal's new rows: what the sales page,
its live stream and the big screen show, for every caller at once.

Each open sales page and big screen used to aggregate the whole day's journal on every poll
(once a second while the tills sell): 30 open pages at 5,000 purchases/s kept PostgreSQL busy
enough to hold the tills' commits for seconds (`onecard bench`, console phase). Now one
`DayTally` per (tenant, local day) in the process counts the rows up to `lsn` and, when asked
again, adds only the rows after it (`lsn` is the journal's primary key, so that is an index
range scan over the new rows). Rows are added in lsn order and never change: the journal has
one writer, which commits in lsn order (docs/architecture.md), so a row below a counted `lsn`
can never appear later. Callers asking within `fresh_seconds` of the last refresh share it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from typing import Any, Final

import asyncpg

from admin_api._routes_reports import _from, _Sql, day_range

PURCHASE, REVERSAL, CAPTURE, CREDIT = 1, 2, 5, 8
SALE_KINDS: Final = (PURCHASE, REVERSAL, CAPTURE)
"""Journal kinds that move a merchant's takings (a reversal gives a purchase's money back)."""
TALLIES_MAX: Final = 1024
"""(tenant, day) tallies kept by one process; the least recently used goes first."""


@dataclasses.dataclass(eq=False)
class DayTally:
    """What a tenant's merchants sold on one local day, counted up to journal row `lsn`."""

    hours: dict[int, list[int]] = dataclasses.field(default_factory=dict)
    """Local hour -> [purchases approved, purchases declined, merchants' takings in fen]."""
    merchants: dict[int, list[int]] = dataclasses.field(default_factory=dict)
    """Merchant id -> [purchases approved, purchases declined, takings in fen]."""
    topups: list[int] = dataclasses.field(default_factory=lambda: [0, 0])
    """[credits approved, fen] of the tenant's cardholders (counter and bank top-ups)."""
    lsn: int = 0
    """The journal up to here is counted."""
    sales_lsn: int = 0
    """The highest lsn of a sale counted (0: none yet): moves only when a sale of this tenant
    was journaled, which is when a live sales page has something new to show."""
    refreshed: float = float("-inf")
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)


class Tallies:
    """The process's day tallies (module text)."""

    def __init__(self, entries_max: int = TALLIES_MAX) -> None:
        self._tallies: dict[tuple[int, dt.date], DayTally] = {}
        self._max = entries_max

    async def of(self, pool: asyncpg.Pool, tenant: Any, day: dt.date | None = None, *,
                 fresh_seconds: float = 0.0) -> tuple[DayTally, dt.date]:
        """The tally of `tenant`'s local `day` (today by default), brought up to the journal's
        last row unless another caller did within `fresh_seconds`."""
        r = day_range(tenant["utc_offset_s"], day, day)
        key = (tenant["id"], r.from_day)
        tally = self._tallies.pop(key, None) or DayTally()
        self._tallies[key] = tally  # the most recently used last
        while len(self._tallies) > self._max:
            del self._tallies[next(iter(self._tallies))]
        async with tally.lock:
            if time.monotonic() - tally.refreshed >= fresh_seconds:
                await _add_new_rows(pool, tenant, r, tally)
                tally.refreshed = time.monotonic()
        return tally, r.from_day


async def _add_new_rows(pool: asyncpg.Pool, tenant: Any, r: Any, tally: DayTally) -> None:
    offset, tid = tenant["utc_offset_s"], tenant["id"]
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                        readonly=True):
        upto = await conn.fetchval("SELECT coalesce(max(lsn), 0) FROM journal")
        if upto <= tally.lsn:
            return
        # The first count of a day reads its rows by time (the BRIN index on committed_at);
        # later ones only the rows after the last count (the primary key).
        q = _Sql()
        after = f" AND j.lsn > {q(tally.lsn)}" if tally.lsn else ""
        sales = await conn.fetch(
            "SELECT l.minute / 60 AS hour, j.merchant_id,"
            f" count(*) FILTER (WHERE j.code = 0 AND j.kind IN ({PURCHASE}, {CAPTURE})) AS n,"
            f" count(*) FILTER (WHERE j.code <> 0 AND j.kind = {PURCHASE}) AS declined,"
            " coalesce(sum(j.merchant_delta_fen), 0)::bigint AS amount, max(j.lsn) AS top"
            + _from(q, offset, [])
            + f" WHERE j.merchant_tenant_id = {q(tid)} AND j.lsn <= {q(upto)}{after}"
            f" AND j.committed_at >= {q(r.start)} AND j.committed_at < {q(r.end)}"
            f" AND j.kind = ANY({q(list(SALE_KINDS))}::smallint[]) GROUP BY 1, 2", *q.args)
        topups = await conn.fetchrow(
            "SELECT count(*) AS n, coalesce(sum(j.amount_fen), 0)::bigint AS fen FROM journal j"
            f" WHERE j.tenant_id = $1 AND j.kind = {CREDIT} AND j.code = 0 AND j.lsn <= $2"
            + (" AND j.lsn > $5" if tally.lsn else " AND $5::bigint = 0")
            + " AND j.committed_at >= $3 AND j.committed_at < $4",
            tid, upto, r.start, r.end, tally.lsn)
    for row in sales:
        for into, k in ((tally.hours, row["hour"]), (tally.merchants, row["merchant_id"])):
            figures = into.setdefault(k, [0, 0, 0])
            figures[0] += row["n"]
            figures[1] += row["declined"]
            figures[2] += row["amount"]
        tally.sales_lsn = max(tally.sales_lsn, row["top"])
    tally.topups[0] += topups["n"]
    tally.topups[1] += topups["fen"]
    tally.lsn = upto
