"""The one figure of the reports page (issue 13, item 5) that no route had: sales by wallet.

A tenant's summary (GET /tenants/{id}/summary) sums the merchants' side; which wallet of the
cardholder paid (main or subsidy) is in the journal's wallet deltas only. This route sums them
over the same local days, for the same rows the sales page counts (approved purchases and
captures, less reversals, at the tenant's merchants). Role and subtree as every report
(`reports.read`, the tenant in the log-in's subtree); JSON or a CSV / XLSX download.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Response, get
from litestar.datastructures import State
from litestar.params import Parameter

from admin_api._auth import Actor
from admin_api._downloads import DownloadOperation, Format, download
from admin_api._routes_merchants import tenant_in_scope
from admin_api._routes_reports import day_range
from admin_api._types import Id
from admin_api.console._tally import SALE_KINDS


class WalletSales(msgspec.Struct):
    wallet: str
    """main or subsidy."""
    count: int
    """Rows that moved this wallet."""
    amount_fen: int
    """What the wallet paid: purchases and captures less reversals (positive: spent)."""


class WalletPage(msgspec.Struct):
    tenant_id: int
    from_day: dt.date
    to_day: dt.date
    items: list[WalletSales]
    """Both wallets, main first."""


@get("/tenants/{tenant_id:int}/sales/by-wallet", opt={"permission": "reports.read"},
     tags=["reports"], operation_class=DownloadOperation,
     summary="A tenant's sales by the cardholder's wallet (main or subsidy) over local days "
     "(JSON, CSV, XLSX)")
async def sales_by_wallet(
        tenant_id: Id, actor: Actor, state: State,
        from_day: Annotated[dt.date | None, Parameter(
            description="First local day (default: today)")] = None,
        to_day: Annotated[dt.date | None, Parameter(
            description="Last local day, included (default: today)")] = None,
        format: Format = "json") -> Response[Any]:
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    r = day_range(tenant["utc_offset_s"], from_day, to_day)
    row = await state.pool.fetchrow(
        "SELECT count(*) FILTER (WHERE j.main_delta_fen <> 0) AS main_n,"
        " coalesce(-sum(j.main_delta_fen), 0)::bigint AS main_fen,"
        " count(*) FILTER (WHERE j.subsidy_delta_fen <> 0) AS subsidy_n,"
        " coalesce(-sum(j.subsidy_delta_fen), 0)::bigint AS subsidy_fen"
        " FROM journal j WHERE j.merchant_tenant_id = $1 AND j.committed_at >= $2"
        " AND j.committed_at < $3 AND j.code = 0 AND j.kind = ANY($4::smallint[])",
        tenant_id, r.start, r.end, list(SALE_KINDS))
    items = [WalletSales(wallet="main", count=row["main_n"], amount_fen=row["main_fen"]),
             WalletSales(wallet="subsidy", count=row["subsidy_n"], amount_fen=row["subsidy_fen"])]
    if format != "json":
        return await download(format, f"tenant-{tenant_id}-sales-by-wallet-{r.from_day}_"
                              f"{r.to_day}", items, WalletSales.__struct_fields__)
    return Response(WalletPage(tenant_id=tenant_id, from_day=r.from_day, to_day=r.to_day,
                               items=items))


ROUTES = [sales_by_wallet]
