"""A tenant's business day and its settlement, computed from the journal alone (docs/settlement.md).

A business day of a tenant runs from one cutover to the next. The cutover is a local time of
day (`tenants.cutover_s`, seconds after local midnight, local = UTC + `utc_offset_s`); the day
is named by the calendar date that holds most of it: a cutover before noon (02:00) ends day D
at D+1 02:00, one from noon on (22:00) ends day D at D 22:00. Default 00:00: the calendar day.

A journal row belongs to the business day that holds its `committed_at` (PostgreSQL's clock
when the batch that holds the row was written; stored in the row, so the assignment never
changes). Not `now_s` (the switch's clock at the decision): committed_at is one clock for every
switch and the admin API, the time reports and statements show (admin_api/_routes_reports.py),
and it is indexed (BRIN, migration 0003), so the switch pays nothing more. A day is closed,
and may be settled, once its end has passed on the database's clock and no transaction that
started before its end is still open (a row's committed_at is its transaction's start, so no
row of the day can appear later). The switch never stops for a cutover: the cutover is only
where a range query cuts.

The computation is one set-based query over the day's rows (grouped by card tenant, merchant
tenant, merchant, kind and "is a payout transit account"), a few small look-ups (the tenant's
merchants, its system accounts, the float before the day), and deterministic arithmetic on the
result: the same journal gives the same `Settlement`, and `encode()` the same bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any, Final

import asyncpg
import msgspec

from admin_api._problems import Problem

SECONDS_PER_DAY: Final = 86_400
NOON_S: Final = 43_200
BP_PER_UNIT: Final = 10_000
MONEY_KINDS: Final = (1, 2, 5)
"""Journal kinds that pay a merchant for a sale: purchase, reversal (negative), capture."""
PURCHASE, REVERSAL, CAPTURE, CREDIT, DEBIT = 1, 2, 5, 8, 9

_encoder = msgspec.json.Encoder()


class MerchantFigures(msgspec.Struct, frozen=True):
    """One merchant's day. sales = gross - reversals; fee = sales x fee_rate_bp / 10,000,
    rounded half away from zero to the fen, per merchant per day; net = sales - fee (payable
    on due_on, by its settlement_cycle). paid_out_fen: what payouts took from the merchant
    account during this day (of earlier days' nets)."""

    merchant_id: int
    count: int
    gross_fen: int
    reversal_count: int
    reversals_fen: int
    sales_fen: int
    fee_rate_bp: int
    fee_fen: int
    net_fen: int
    settlement_cycle: str
    due_on: dt.date
    paid_out_fen: int


class Totals(msgspec.Struct, frozen=True):
    merchants: int
    count: int
    gross_fen: int
    reversal_count: int
    reversals_fen: int
    sales_fen: int
    fee_fen: int
    net_fen: int


class ClearingPair(msgspec.Struct, frozen=True):
    """Spending between this tenant and another in this tenant's day. The card's tenant holds
    the money (its float), the merchant's tenant owes its merchant: the card side pays the
    merchant side. Netted: debtor pays creditor net_fen (0: nobody owes anybody)."""

    other_tenant_id: int
    our_cards_there_count: int
    our_cards_there_fen: int
    their_cards_here_count: int
    their_cards_here_fen: int
    net_fen: int
    debtor_tenant_id: int
    creditor_tenant_id: int


class Flow(msgspec.Struct, frozen=True):
    """Money between the tenant's cards and one system account in the day."""

    in_count: int
    in_fen: int
    """Into wallets (credits from the account)."""
    out_count: int
    out_fen: int
    """Out of wallets (debits to the account)."""


class Bank(msgspec.Struct, frozen=True):
    topups: Flow
    """Bank top-ups (credits from the bank clearing account, kind 8) and debits back to it."""
    payout_count: int
    payouts_fen: int
    """Merchant nets paid out to the bank clearing account (through the transit card)."""


class Subsidy(msgspec.Struct, frozen=True):
    issued: Flow
    """Subsidy fund credits (subsidy batches) and debits back to it (cancellations)."""
    spent_fen: int
    """Taken from subsidy wallets by purchases and captures, less reversals."""


class WalletFloat(msgspec.Struct, frozen=True):
    """Money held on the tenant's cards: the sum of their wallet balances."""

    main_fen: int
    subsidy_fen: int
    total_fen: int


class Settlement(msgspec.Struct, frozen=True):
    tenant_id: int
    business_day: dt.date
    utc_offset_s: int
    cutover_s: int
    start_at: dt.datetime
    end_at: dt.datetime
    journal_rows: int
    """Approved journal rows of the day that involve the tenant (its cards or merchants)."""
    merchants: list[MerchantFigures]
    totals: Totals
    clearing: list[ClearingPair]
    clearing_net_payable_fen: int
    """What the tenant owes the other tenants in all, netted (negative: it is owed)."""
    bank: Bank
    cash: Flow
    """The card office's cash desk: cash top-ups in, refunds paid out."""
    subsidy: Subsidy
    adjustments: Flow
    fees_collected_fen: int
    """Fees moved by payouts from merchants to the tenant's fee account during the day."""
    other_system_fen: int
    """Wallet flows with any other system account (opening balances and the like)."""
    float_open: WalletFloat
    float_close: WalletFloat
    merchant_accounts_change_fen: int
    """Change of every merchant and system account of the tenant over the day."""
    balanced: bool
    """float change + merchant accounts change + clearing net payable == 0 (double entry
    within the tenant once the clearing is paid), and float_close = float_open + the day."""


def encode(s: Settlement) -> bytes:
    """The canonical bytes (JSON, fields in declared order, lists sorted by id)."""
    return _encoder.encode(s)


def sha256(s: Settlement) -> bytes:
    return hashlib.sha256(encode(s)).digest()


def decode(data: bytes | str) -> Settlement:
    return msgspec.json.decode(data, type=Settlement)


def _shift_s(cutover_s: int) -> int:
    """Where day D starts, in seconds after D's local midnight (negative: on the day before)."""
    return cutover_s if cutover_s < NOON_S else cutover_s - SECONDS_PER_DAY


def day_bounds(day: dt.date, utc_offset_s: int, cutover_s: int
               ) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of business day `day` in UTC."""
    midnight = dt.datetime.combine(day, dt.time(), dt.UTC)
    start = midnight + dt.timedelta(seconds=_shift_s(cutover_s) - utc_offset_s)
    return start, start + dt.timedelta(days=1)


def business_day_of(at: dt.datetime, utc_offset_s: int, cutover_s: int) -> dt.date:
    """The business day that holds the instant `at` (timezone-aware)."""
    epoch_us = (at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
    local_us = epoch_us + (utc_offset_s - _shift_s(cutover_s)) * 1_000_000
    return dt.date(1970, 1, 1) + dt.timedelta(days=local_us // (SECONDS_PER_DAY * 1_000_000))


def due_on(day: dt.date, cycle: str) -> dt.date:
    """When a day's net is paid: daily the day itself, weekly the Sunday of its ISO week,
    monthly the last day of its month."""
    if cycle == "weekly":
        return day + dt.timedelta(days=6 - day.weekday())
    if cycle == "monthly":
        first_next = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        return first_next - dt.timedelta(days=1)
    return day


def fee_of(sales_fen: int, fee_rate_bp: int) -> int:
    """sales x rate / 10,000 rounded half away from zero (0.5 fen -> 1 fen, -0.5 -> -1)."""
    scaled = abs(sales_fen) * fee_rate_bp
    fee = (scaled + BP_PER_UNIT // 2) // BP_PER_UNIT
    return fee if sales_fen >= 0 else -fee


DAY_SQL: Final = """
SELECT j.tenant_id, j.merchant_tenant_id, j.merchant_id, j.kind,
       j.account_id = ANY($4::int[]) AS transit,
       count(*) AS n, sum(j.main_delta_fen)::bigint AS main,
       sum(j.subsidy_delta_fen)::bigint AS sub, sum(j.merchant_delta_fen)::bigint AS md
  FROM journal j
 WHERE j.committed_at >= $1 AND j.committed_at < $2 AND j.code = 0
   AND (j.tenant_id = $3 OR j.merchant_tenant_id = $3)
 GROUP BY 1, 2, 3, 4, 5
"""
"""The one pass over the day's rows (through the BRIN index on committed_at)."""

FLOAT_BEFORE_SQL: Final = """
SELECT coalesce((SELECT sum(opening_main_fen) FROM accounts WHERE tenant_id = $1), 0)
       + coalesce(sum(j.main_delta_fen), 0) AS main,
       coalesce((SELECT sum(opening_subsidy_fen) FROM accounts WHERE tenant_id = $1), 0)
       + coalesce(sum(j.subsidy_delta_fen), 0) AS sub
  FROM journal j
 WHERE j.committed_at < $2 AND j.tenant_id = $1 AND j.code = 0
"""
"""The tenant's float at an instant from the whole journal (when no confirmed day before)."""


class _Frozen(msgspec.Struct, frozen=True):
    start_at: dt.datetime
    end_at: dt.datetime
    utc_offset_s: int
    cutover_s: int
    rates: dict[int, tuple[int, str]]


async def _tenant(conn: Any, tenant_id: int) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT id, utc_offset_s, cutover_s FROM tenants WHERE id = $1",
                              tenant_id)
    if row is None:
        raise Problem(404, "not-found", f"no tenant {tenant_id}")
    return row


async def day_state(conn: Any, tenant_id: int, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The day's bounds (frozen ones for a settled day); 404 for an unknown tenant, 422
    for a day that has not started, 409 for one not closed yet (docs/settlement.md)."""
    tenant = await _tenant(conn, tenant_id)
    stored = await conn.fetchrow("SELECT start_at, end_at FROM settlements WHERE tenant_id = $1"
                                 " AND business_day = $2", tenant_id, day)
    if stored is not None:
        return stored["start_at"], stored["end_at"]
    if not dt.date(2000, 1, 1) <= day <= dt.date(9998, 12, 31):
        raise Problem(422, "unprocessable", "business days from 2000-01-01 to 9998-12-31 only")
    start, end = day_bounds(day, tenant["utc_offset_s"], tenant["cutover_s"])
    # Next to a stored day the bounds meet its frozen ones, so a changed cutover leaves no
    # row in two days and none in none.
    near = await conn.fetchrow(
        "SELECT (SELECT end_at FROM settlements WHERE tenant_id = $1 AND business_day = $2)"
        " AS prev_end, (SELECT start_at FROM settlements WHERE tenant_id = $1"
        " AND business_day = $3) AS next_start", tenant_id, day - dt.timedelta(days=1),
        day + dt.timedelta(days=1))
    start = near["prev_end"] or start
    end = near["next_start"] or end
    if start >= end:
        raise Problem(409, "conflict", f"business day {day} of tenant {tenant_id} is empty: "
                      "its neighbours, settled under another cutover, cover it")
    row = await conn.fetchrow(
        "SELECT now() AS now, EXISTS (SELECT 1 FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND xact_start < $1) AS open_before", end)
    if row["now"] < start:
        raise Problem(422, "future-day", f"business day {day} of tenant {tenant_id} starts at "
                      f"{start.isoformat()}: it has not begun")
    if row["now"] < end or row["open_before"]:
        raise Problem(409, "day-open", f"business day {day} of tenant {tenant_id} ends at "
                      f"{end.isoformat()} (its cutover): it is not closed yet"
                      + (" (a transaction that began before the cutover is still open)"
                         if row["now"] >= end else ""))
    return start, end


async def _frozen(conn: Any, tenant_id: int, day: dt.date) -> _Frozen | None:
    row = await conn.fetchrow("SELECT start_at, end_at, figures FROM settlements"
                              " WHERE tenant_id = $1 AND business_day = $2", tenant_id, day)
    if row is None:
        return None
    s = decode(row["figures"])
    rates = {m.merchant_id: (m.fee_rate_bp, m.settlement_cycle) for m in s.merchants}
    return _Frozen(row["start_at"], row["end_at"], s.utc_offset_s, s.cutover_s, rates)


async def _float_before(conn: Any, tenant_id: int, day: dt.date, start: dt.datetime
                        ) -> tuple[int, int]:
    """The float at `start`: the close of the day before when that day is confirmed and ends
    at `start` (its frozen figures equal the journal), else summed over the whole journal."""
    prev = await conn.fetchrow(
        "SELECT figures FROM settlements WHERE tenant_id = $1 AND business_day = $2"
        " AND status = 'confirmed' AND end_at = $3", tenant_id, day - dt.timedelta(days=1),
        start)
    if prev is not None:
        close = decode(prev["figures"]).float_close
        return close.main_fen, close.subsidy_fen
    row = await conn.fetchrow(FLOAT_BEFORE_SQL, tenant_id, start)
    return int(row["main"]), int(row["sub"])


async def compute_settlement(conn: asyncpg.Connection | asyncpg.Pool, tenant_id: int,
                             day: dt.date) -> Settlement:
    """The settlement of `tenant_id`'s business day `day`, from the journal. A day already
    stored (pending or confirmed) keeps its bounds, cutover and merchants' fee rates and
    cycles (so a confirmed day recomputes to its frozen figures). Raises Problem 404 / 422 /
    409 as `day_state`."""
    start, end = await day_state(conn, tenant_id, day)
    frozen = await _frozen(conn, tenant_id, day)
    tenant = await _tenant(conn, tenant_id)
    offset, cutover = ((frozen.utc_offset_s, frozen.cutover_s) if frozen is not None
                       else (tenant["utc_offset_s"], tenant["cutover_s"]))
    transit = [r["transit_account_id"] for r in await conn.fetch(
        "SELECT transit_account_id FROM settlement_accounts ORDER BY tenant_id")]
    rows = await conn.fetch(DAY_SQL, start, end, tenant_id, transit)
    merchants = {r["id"]: r for r in await conn.fetch(
        "SELECT id, kind, fee_rate_bp, settlement_cycle FROM merchants WHERE tenant_id = $1",
        tenant_id)}
    purposes = {r["merchant_id"]: r["purpose"] for r in await conn.fetch(
        "SELECT merchant_id, purpose FROM system_accounts WHERE tenant_id = $1", tenant_id)}
    fee_merchant = await conn.fetchval(
        "SELECT fee_merchant_id FROM settlement_accounts WHERE tenant_id = $1", tenant_id)
    open_main, open_sub = await _float_before(conn, tenant_id, day, start)
    return _figures(tenant_id, day, offset, cutover, start, end, rows, merchants, purposes,
                    fee_merchant, open_main, open_sub, frozen)


class _Acc:
    """Running sums of one merchant."""

    __slots__ = ("count", "gross", "paid_out", "reversal_count", "reversals")

    def __init__(self) -> None:
        self.count = self.gross = self.reversal_count = self.reversals = self.paid_out = 0


def _figures(tenant_id: int, day: dt.date, offset: int, cutover: int, start: dt.datetime,
             end: dt.datetime, rows: list[asyncpg.Record], merchants: dict[int, Any],
             purposes: dict[int, str], fee_merchant: int | None, open_main: int, open_sub: int,
             frozen: _Frozen | None) -> Settlement:
    per: dict[int, _Acc] = {}
    pairs: dict[tuple[int, int], list[int]] = {}
    flows: dict[str, list[int]] = {p: [0, 0, 0, 0] for p in
                                   ("bank_clearing", "cash_desk", "subsidy_fund", "adjustments")}
    payout_count = payouts = fees = other_system = 0
    d_main = d_sub = spent = merchant_change = journal_rows = 0
    for r in rows:
        card_t, merch_t, m, kind = r["tenant_id"], r["merchant_tenant_id"], r["merchant_id"], \
            r["kind"]
        n, md = int(r["n"]), int(r["md"])
        journal_rows += n
        if card_t == tenant_id:
            d_main += int(r["main"])
            d_sub += int(r["sub"])
            if kind in MONEY_KINDS:
                spent -= int(r["sub"])
        if card_t != merch_t:
            pair = pairs.setdefault((card_t, merch_t), [0, 0])
            pair[0] += n if kind in (PURCHASE, CAPTURE) else 0
            pair[1] += md
        if merch_t != tenant_id:
            continue
        merchant_change += md
        info = merchants.get(m)
        if info is not None and info["kind"] != "system":
            acc = per.setdefault(m, _Acc())
            if kind in (PURCHASE, CAPTURE):
                acc.count += n
                acc.gross += md
            elif kind == REVERSAL:
                acc.reversal_count += n
                acc.reversals -= md
            else:
                acc.paid_out -= md
            continue
        purpose = purposes.get(m)
        if r["transit"] and purpose == "bank_clearing" and kind in (CREDIT, DEBIT):
            payout_count += n if kind == DEBIT else 0
            payouts += md
        elif r["transit"] and m == fee_merchant:
            fees += md
        elif purpose in flows and kind in (CREDIT, DEBIT):
            f = flows[purpose]
            if kind == CREDIT:
                f[0] += n
                f[1] -= md
            else:
                f[2] += n
                f[3] += md
        else:
            other_system -= md
    figures = []
    for m in sorted(per):
        acc = per[m]
        if frozen is not None and m in frozen.rates:
            rate, cycle = frozen.rates[m]
        else:
            info = merchants[m]
            rate, cycle = int(info["fee_rate_bp"]), str(info["settlement_cycle"])
        sales = acc.gross - acc.reversals
        fee = fee_of(sales, rate)
        figures.append(MerchantFigures(
            merchant_id=m, count=acc.count, gross_fen=acc.gross,
            reversal_count=acc.reversal_count, reversals_fen=acc.reversals, sales_fen=sales,
            fee_rate_bp=rate, fee_fen=fee, net_fen=sales - fee, settlement_cycle=cycle,
            due_on=due_on(day, cycle), paid_out_fen=acc.paid_out))
    totals = Totals(
        merchants=len(figures), count=sum(f.count for f in figures),
        gross_fen=sum(f.gross_fen for f in figures),
        reversal_count=sum(f.reversal_count for f in figures),
        reversals_fen=sum(f.reversals_fen for f in figures),
        sales_fen=sum(f.sales_fen for f in figures), fee_fen=sum(f.fee_fen for f in figures),
        net_fen=sum(f.net_fen for f in figures))
    clearing = []
    others = sorted({t for pair in pairs for t in pair if t != tenant_id})
    net_payable = 0
    for other in others:
        ours = pairs.get((tenant_id, other), [0, 0])
        theirs = pairs.get((other, tenant_id), [0, 0])
        net = ours[1] - theirs[1]
        net_payable += net
        clearing.append(ClearingPair(
            other_tenant_id=other, our_cards_there_count=ours[0], our_cards_there_fen=ours[1],
            their_cards_here_count=theirs[0], their_cards_here_fen=theirs[1], net_fen=abs(net),
            debtor_tenant_id=tenant_id if net > 0 else other if net < 0 else 0,
            creditor_tenant_id=other if net > 0 else tenant_id if net < 0 else 0))
    close_main, close_sub = open_main + d_main, open_sub + d_sub

    def flow(p: str) -> Flow:
        f = flows[p]
        return Flow(in_count=f[0], in_fen=f[1], out_count=f[2], out_fen=f[3])

    balanced = d_main + d_sub + merchant_change + net_payable == 0
    return Settlement(
        tenant_id=tenant_id, business_day=day, utc_offset_s=offset, cutover_s=cutover,
        start_at=start.astimezone(dt.UTC), end_at=end.astimezone(dt.UTC),
        journal_rows=journal_rows, merchants=figures, totals=totals, clearing=clearing,
        clearing_net_payable_fen=net_payable,
        bank=Bank(topups=flow("bank_clearing"), payout_count=payout_count, payouts_fen=payouts),
        cash=flow("cash_desk"), subsidy=Subsidy(issued=flow("subsidy_fund"), spent_fen=spent),
        adjustments=flow("adjustments"), fees_collected_fen=fees, other_system_fen=other_system,
        float_open=WalletFloat(main_fen=open_main, subsidy_fen=open_sub,
                               total_fen=open_main + open_sub),
        float_close=WalletFloat(main_fen=close_main, subsidy_fen=close_sub,
                                total_fen=close_main + close_sub),
        merchant_accounts_change_fen=merchant_change, balanced=balanced)
