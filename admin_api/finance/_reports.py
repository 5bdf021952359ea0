"""Finance reports on the settlement module's figures: per merchant and tenant by day or month,
clearing between parks, the float, and a merchant's settlement statement as a PDF.

Each business day's figures are `admin_api.settlement.compute_settlement` (from the journal
alone; a confirmed day's are frozen), so a report says exactly what settlement says. A month
is the sum of its days (fees are per merchant per day, as settled). Days must have closed
(their cutover passed); at most REPORT_DAYS_MAX in one request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec
from litestar import Response, get
from litestar.datastructures import State
from litestar.params import Parameter

from admin_api._auth import Actor
from admin_api._downloads import DownloadOperation, Format, download, yuan
from admin_api._problems import Problem
from admin_api._routes_merchants import merchant_in_scope, tenant_in_scope
from admin_api._types import INT32_MAX, Id, Limit
from admin_api.settlement import Settlement, compute_settlement

REPORT_DAYS_MAX: Final = 62
"""Business days of one report (two months): each is one settlement computation."""
Period = Literal["day", "month"]
_FROM = Annotated[dt.date | None, Parameter(description="First business day (default: "
                                            "yesterday)")]
_TO = Annotated[dt.date | None, Parameter(description="Last business day, included (default: "
                                          "from_day)")]
_AFTER = Annotated[int, Parameter(ge=0, le=INT32_MAX, description="Rows already read "
                                  "(`next_after`)")]


def _range(tenant: Any, from_day: dt.date | None, to_day: dt.date | None) -> list[dt.date]:
    today = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=tenant["utc_offset_s"])).date()
    first = from_day or today - dt.timedelta(days=1)
    last = to_day or first
    if first > last:
        raise Problem(422, "unprocessable", "from_day is after to_day")
    if (last - first).days >= REPORT_DAYS_MAX:
        raise Problem(422, "unprocessable", f"at most {REPORT_DAYS_MAX} business days in one "
                      "report")
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


async def _days(state: State, tenant_id: int, days: list[dt.date]) -> list[Settlement]:
    async with state.pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                              readonly=True):
        return [await compute_settlement(conn, tenant_id, d) for d in days]


def _period(day: dt.date, period: Period) -> str:
    return day.isoformat() if period == "day" else day.strftime("%Y-%m")


def _page(items: list[Any], after: int, limit: int) -> tuple[list[Any], int | None]:
    return items[after:after + limit], after + limit if len(items) > after + limit else None


# -- settlement per merchant and tenant ----------------------------------------------------------


class SettlementRow(msgspec.Struct):
    """One merchant's (or, with merchant_id null, the tenant's) settled figures of a period."""

    period: str
    merchant_id: int | None
    merchant_name: str
    count: int
    gross_fen: int
    reversal_count: int
    reversals_fen: int
    sales_fen: int
    fee_fen: int
    net_fen: int


class SettlementPage(msgspec.Struct):
    tenant_id: int
    period: Period
    from_day: dt.date
    to_day: dt.date
    items: list[SettlementRow]
    next_after: int | None


def settlement_rows(days: list[Settlement], names: dict[int, str], period: Period
                    ) -> list[SettlementRow]:
    sums: dict[tuple[str, int], list[int]] = {}
    for s in days:
        p = _period(s.business_day, period)
        for m in s.merchants:
            acc = sums.setdefault((p, m.merchant_id), [0] * 7)
            for i, v in enumerate((m.count, m.gross_fen, m.reversal_count, m.reversals_fen,
                                   m.sales_fen, m.fee_fen, m.net_fen)):
                acc[i] += v
        t = s.totals
        acc = sums.setdefault((p, 0), [0] * 7)
        for i, v in enumerate((t.count, t.gross_fen, t.reversal_count, t.reversals_fen,
                               t.sales_fen, t.fee_fen, t.net_fen)):
            acc[i] += v
    return [SettlementRow(period=p, merchant_id=m or None,
                          merchant_name=names.get(m, "") if m else "(tenant total)",
                          count=v[0], gross_fen=v[1], reversal_count=v[2], reversals_fen=v[3],
                          sales_fen=v[4], fee_fen=v[5], net_fen=v[6])
            for (p, m), v in sorted(sums.items(), key=lambda kv: (kv[0][0], kv[0][1] == 0,
                                                                 kv[0][1]))]


@get("/tenants/{tenant_id:int}/finance/settlement", opt={"permission": "finance.read"},
     tags=["finance"], operation_class=DownloadOperation,
     summary="Settlement per merchant and the tenant's total, by business day or month: a "
     "JSON page, or a CSV / XLSX download")
async def settlement_report(tenant_id: Id, actor: Actor, state: State, period: Period = "day",
                            from_day: _FROM = None, to_day: _TO = None, after: _AFTER = 0,
                            limit: Limit = 1000, format: Format = "json"
                            ) -> Response[SettlementPage]:
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    days = _range(tenant, from_day, to_day)
    figures = await _days(state, tenant_id, days)
    names = {r["id"]: r["name"] for r in await state.pool.fetch(
        "SELECT id, name FROM merchants WHERE tenant_id = $1", tenant_id)}
    rows = settlement_rows(figures, names, period)
    if format != "json":
        return await download(format, f"tenant-{tenant_id}-settlement-{period}-{days[0]}_"
                              f"{days[-1]}", rows, SettlementRow.__struct_fields__)
    page, more = _page(rows, after, limit)
    return Response(SettlementPage(tenant_id=tenant_id, period=period, from_day=days[0],
                                   to_day=days[-1], items=page, next_after=more))


# -- clearing between parks ----------------------------------------------------------------------


class ClearingRow(msgspec.Struct):
    """Spending between this tenant and another in one business day, netted."""

    business_day: dt.date
    other_tenant_id: int
    our_cards_there_count: int
    our_cards_there_fen: int
    their_cards_here_count: int
    their_cards_here_fen: int
    net_fen: int
    debtor_tenant_id: int
    creditor_tenant_id: int
    other_tenant_name: str = ""
    """The other park's name: it is no secret to the finance of a park it clears with. Nothing
    else of the other park is in the answer."""


class ClearingPage(msgspec.Struct):
    tenant_id: int
    from_day: dt.date
    to_day: dt.date
    items: list[ClearingRow]
    next_after: int | None


@get("/tenants/{tenant_id:int}/finance/clearing", opt={"permission": "finance.read"},
     tags=["finance"], operation_class=DownloadOperation,
     summary="Clearing between parks (跨园区): who owes whom per business day, netted (JSON, "
     "CSV, XLSX)")
async def clearing_report(tenant_id: Id, actor: Actor, state: State, from_day: _FROM = None,
                          to_day: _TO = None, after: _AFTER = 0, limit: Limit = 1000,
                          format: Format = "json") -> Response[ClearingPage]:
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    days = _range(tenant, from_day, to_day)
    pairs = [(s.business_day, c) for s in await _days(state, tenant_id, days) for c in s.clearing]
    names = {r["id"]: r["name"] for r in await state.pool.fetch(
        "SELECT id, name FROM tenants WHERE id = ANY($1::int[])",
        sorted({c.other_tenant_id for _, c in pairs}))}
    rows = [ClearingRow(business_day=day, **msgspec.structs.asdict(c),
                        other_tenant_name=names.get(c.other_tenant_id, ""))
            for day, c in pairs]
    if format != "json":
        return await download(format, f"tenant-{tenant_id}-clearing-{days[0]}_{days[-1]}", rows,
                              ClearingRow.__struct_fields__)
    page, more = _page(rows, after, limit)
    return Response(ClearingPage(tenant_id=tenant_id, from_day=days[0], to_day=days[-1],
                                 items=page, next_after=more))


# -- the float -----------------------------------------------------------------------------------


class FloatRow(msgspec.Struct):
    """Money held on the tenant's cards at the day's start and at its cutover, and what came
    in and went out of the wallets from the bank, the cash desk and the subsidy fund."""

    business_day: dt.date
    open_main_fen: int
    open_subsidy_fen: int
    open_total_fen: int
    close_main_fen: int
    close_subsidy_fen: int
    close_total_fen: int
    bank_topups_fen: int
    bank_debits_fen: int
    cash_in_fen: int
    cash_out_fen: int
    subsidy_issued_fen: int
    subsidy_spent_fen: int
    balanced: bool


class FloatPage(msgspec.Struct):
    tenant_id: int
    from_day: dt.date
    to_day: dt.date
    items: list[FloatRow]
    next_after: int | None


@get("/tenants/{tenant_id:int}/finance/float", opt={"permission": "finance.read"},
     tags=["finance"], operation_class=DownloadOperation,
     summary="The float (money held on cards) per business day, with the bank, cash and "
     "subsidy flows (JSON, CSV, XLSX)")
async def float_report(tenant_id: Id, actor: Actor, state: State, from_day: _FROM = None,
                       to_day: _TO = None, after: _AFTER = 0, limit: Limit = 1000,
                       format: Format = "json") -> Response[FloatPage]:
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    days = _range(tenant, from_day, to_day)
    rows = [FloatRow(business_day=s.business_day, open_main_fen=s.float_open.main_fen,
                     open_subsidy_fen=s.float_open.subsidy_fen,
                     open_total_fen=s.float_open.total_fen,
                     close_main_fen=s.float_close.main_fen,
                     close_subsidy_fen=s.float_close.subsidy_fen,
                     close_total_fen=s.float_close.total_fen,
                     bank_topups_fen=s.bank.topups.in_fen, bank_debits_fen=s.bank.topups.out_fen,
                     cash_in_fen=s.cash.in_fen, cash_out_fen=s.cash.out_fen,
                     subsidy_issued_fen=s.subsidy.issued.in_fen,
                     subsidy_spent_fen=s.subsidy.spent_fen, balanced=s.balanced)
            for s in await _days(state, tenant_id, days)]
    if format != "json":
        return await download(format, f"tenant-{tenant_id}-float-{days[0]}_{days[-1]}", rows,
                              FloatRow.__struct_fields__)
    page, more = _page(rows, after, limit)
    return Response(FloatPage(tenant_id=tenant_id, from_day=days[0], to_day=days[-1],
                              items=page, next_after=more))


# -- a merchant's settlement statement (PDF) ----------------------------------------------------

_FONTS: Final = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)


class StatementLine(msgspec.Struct, frozen=True):
    business_day: dt.date
    count: int
    gross_fen: int
    reversals_fen: int
    fee_fen: int
    net_fen: int
    due_on: dt.date


def render_statement(merchant: Any, fee_rate_bp: int, lines: list[StatementLine],
                     first: dt.date, last: dt.date) -> bytes:
    """A merchant's settlement statement: one row per business day, and the totals."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    font = next((f for f in _FONTS if Path(f).exists()), None)
    family = "helvetica"
    if font:
        pdf.add_font("body", "", font)
        family = "body"

    def text(s: str) -> str:
        return s if font else s.encode("latin-1", "replace").decode("latin-1")

    pdf.set_font(family, size=15)
    pdf.cell(0, 10, text(f"Settlement statement: {merchant['name']} (merchant "
                         f"{merchant['id']})"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, size=9)
    for label, value in (("Tenant", str(merchant["tenant_id"])),
                         ("Business days", f"{first} to {last}"),
                         ("Fee rate", f"{fee_rate_bp} bp"),
                         ("Settlement cycle", merchant["settlement_cycle"])):
        pdf.cell(35, 6, text(label))
        pdf.cell(0, 6, text(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    widths = (28, 18, 30, 30, 25, 30, 28)
    for w, h in zip(widths, ("Day", "Count", "Gross (yuan)", "Reversals", "Fee", "Net (yuan)",
                             "Due on"), strict=True):
        pdf.cell(w, 7, h, border=1)
    pdf.ln()
    for x in lines:
        for w, c in zip(widths, (str(x.business_day), str(x.count), yuan(x.gross_fen),
                                 yuan(x.reversals_fen), yuan(x.fee_fen), yuan(x.net_fen),
                                 str(x.due_on)), strict=True):
            pdf.cell(w, 6, c, border=1)
        pdf.ln()
    totals = (sum(x.count for x in lines), sum(x.gross_fen for x in lines),
              sum(x.reversals_fen for x in lines), sum(x.fee_fen for x in lines),
              sum(x.net_fen for x in lines))
    # The figures also as plain keywords in the document's information dictionary, for a
    # machine (and the tests) to read without a PDF text extractor.
    pdf.set_keywords(f"merchant_id={merchant['id']} from={first} to={last} count={totals[0]} "
                     f"gross_fen={totals[1]} reversals_fen={totals[2]} fee_fen={totals[3]} "
                     f"net_fen={totals[4]}")
    for w, c in zip(widths, ("Total", str(totals[0]), yuan(totals[1]), yuan(totals[2]),
                             yuan(totals[3]), yuan(totals[4]), ""), strict=True):
        pdf.cell(w, 7, c, border=1)
    pdf.ln()
    out = io.BytesIO()
    pdf.output(out)
    return out.getvalue()


@get("/merchants/{merchant_id:int}/settlement-statement", opt={"permission": "finance.read"},
     tags=["finance"], media_type="application/pdf",
     summary="A merchant's settlement statement over business days, as a PDF")
async def merchant_statement(merchant_id: Id, actor: Actor, state: State,
                             from_day: _FROM = None, to_day: _TO = None) -> Response[bytes]:
    merchant = await merchant_in_scope(state.pool, actor, merchant_id)
    tenant = {"id": merchant["tenant_id"], "utc_offset_s": merchant["utc_offset_s"]}
    days = _range(tenant, from_day, to_day)
    lines = []
    fee_rate = int(merchant["fee_rate_bp"])
    for s in await _days(state, merchant["tenant_id"], days):
        for m in s.merchants:
            if m.merchant_id == merchant_id:
                fee_rate = m.fee_rate_bp
                lines.append(StatementLine(s.business_day, m.count, m.gross_fen,
                                           m.reversals_fen, m.fee_fen, m.net_fen, m.due_on))
    pdf = await asyncio.to_thread(render_statement, merchant, fee_rate, lines, days[0],
                                  days[-1])
    return Response(pdf, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="merchant-{merchant_id}-statement-'
                               f'{days[0]}_{days[-1]}.pdf"', "Cache-Control": "no-store"})


ROUTES = [settlement_report, clearing_report, float_report, merchant_statement]
