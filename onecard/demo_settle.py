"""The demo's cutover and settlement (docs/settlement.md).

Before the purchases start, every tenant's cutover is set to fall in the middle of the burst,
so the switch authorizes across it with no pause; afterwards the business day that ended there
is settled per tenant by `admin_api.settlement`, and checked against sums over the journal
written independently here in SQL (gross, reversals, float at the cutover, inter-park clearing,
bank top-ups by the kiosks' rows of bank_topups, subsidy spent). `settlement_balanced` is true
when they agree and every tenant's day nets to zero.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg
import msgspec

from admin_api import Problem
from admin_api.settlement import Settlement, business_day_of, compute_settlement

CLOSE_DEADLINE_SECONDS = 30.0


class DemoSettlement(msgspec.Struct):
    business_day: str
    cutover_utc: str
    tenants: int
    journal_rows: int
    """Rows of the day settled (each tenant's rows; a cross-park row counts in both)."""
    gross_fen: int
    net_fen: int
    fee_fen: int
    clearing_fen: int
    """What tenants owe each other, netted (the sum of the debtors' debts)."""
    float_fen: int
    """Money on every card at the cutover."""
    rows_after_cutover: int
    """Purchases decided after the cutover, while the switch kept authorizing: the next day's."""
    settlement_balanced: bool
    mismatches: list[str]


async def set_cutover(conn: asyncpg.Connection, seconds_ahead: float) -> dt.datetime:
    """Every tenant's business day ends `seconds_ahead` from now (the database's clock, whole
    seconds); the instant it ends."""
    now = await conn.fetchval("SELECT now()")
    end = dt.datetime.fromtimestamp(int(now.timestamp() + seconds_ahead) + 1, dt.UTC)
    await conn.execute(
        "UPDATE tenants SET cutover_s = (($1::bigint + utc_offset_s) % 86400 + 86400) % 86400",
        int(end.timestamp()))
    return end


_INDEPENDENT = """
WITH d AS (SELECT * FROM journal WHERE code = 0 AND committed_at >= $1 AND committed_at < $2)
SELECT
  (SELECT coalesce(sum(d.amount_fen), 0) FROM d JOIN merchants m ON m.id = d.merchant_id
    WHERE m.tenant_id = $3 AND m.kind <> 'system' AND d.kind IN (1, 5)) AS gross,
  (SELECT coalesce(sum(d.amount_fen), 0) FROM d JOIN merchants m ON m.id = d.merchant_id
    WHERE m.tenant_id = $3 AND m.kind <> 'system' AND d.kind = 2) AS reversals,
  (SELECT coalesce(sum(a.opening_main_fen + a.opening_subsidy_fen), 0) FROM accounts a
    WHERE a.tenant_id = $3)
  + (SELECT coalesce(sum(j.main_delta_fen + j.subsidy_delta_fen), 0) FROM journal j
      JOIN accounts a ON a.id = j.account_id WHERE a.tenant_id = $3 AND j.committed_at < $2)
    AS float_close,
  (SELECT coalesce(sum(CASE WHEN d.kind = 2 THEN -d.amount_fen ELSE d.amount_fen END
                       * CASE WHEN d.tenant_id = $3 THEN 1 ELSE -1 END), 0) FROM d
    WHERE d.tenant_id <> d.merchant_tenant_id AND $3 IN (d.tenant_id, d.merchant_tenant_id)
      AND d.kind IN (1, 2, 5)) AS clearing,
  (SELECT coalesce(sum(d.amount_fen), 0) FROM d JOIN bank_topups t
     ON t.terminal_id = d.terminal_id AND t.txn_seq = d.txn_seq
    WHERE d.kind = 8 AND t.tenant_id = $3) AS bank_topups,
  -(SELECT coalesce(sum(d.subsidy_delta_fen), 0) FROM d JOIN accounts a ON a.id = d.account_id
     WHERE a.tenant_id = $3 AND d.kind IN (1, 2, 5)) AS subsidy_spent
"""


def _check(s: Settlement, ind: Any) -> list[str]:
    out = []
    got = {"gross": s.totals.gross_fen, "reversals": s.totals.reversals_fen,
           "float_close": s.float_close.total_fen, "clearing": s.clearing_net_payable_fen,
           "bank_topups": s.bank.topups.in_fen, "subsidy_spent": s.subsidy.spent_fen}
    for name, value in got.items():
        if int(ind[name]) != value:
            out.append(f"tenant {s.tenant_id} {name}: settlement {value}, journal {ind[name]}")
    if not s.balanced:
        out.append(f"tenant {s.tenant_id}: the day does not net to zero")
    return out


async def settle_day(conn: asyncpg.Connection, end: dt.datetime) -> DemoSettlement:
    """Wait until the day that ended at `end` is closed, settle it for every tenant, check."""
    tenants = await conn.fetch("SELECT id, utc_offset_s, cutover_s FROM tenants ORDER BY id")
    days = {t["id"]: business_day_of(end - dt.timedelta(microseconds=1), t["utc_offset_s"],
                                     t["cutover_s"]) for t in tenants}
    settled: list[Settlement] = []
    async with asyncio.timeout(CLOSE_DEADLINE_SECONDS):
        for t in tenants:
            while True:
                try:
                    settled.append(await compute_settlement(conn, t["id"], days[t["id"]]))
                    break
                except Problem as exc:
                    if exc.slug != "day-open":
                        raise
                    await asyncio.sleep(0.1)  # the day closes within a commit's time
    mismatches = []
    for s in settled:
        ind = await conn.fetchrow(_INDEPENDENT, s.start_at, s.end_at, s.tenant_id)
        mismatches += _check(s, ind)
    after = await conn.fetchval("SELECT count(*) FROM journal WHERE committed_at >= $1", end)
    first = settled[0]
    return DemoSettlement(
        business_day=str(first.business_day), cutover_utc=end.isoformat(),
        tenants=len(settled), journal_rows=sum(s.journal_rows for s in settled),
        gross_fen=sum(s.totals.gross_fen for s in settled),
        net_fen=sum(s.totals.net_fen for s in settled),
        fee_fen=sum(s.totals.fee_fen for s in settled),
        clearing_fen=sum(max(s.clearing_net_payable_fen, 0) for s in settled),
        float_fen=sum(s.float_close.total_fen for s in settled), rows_after_cutover=after,
        settlement_balanced=not mismatches, mismatches=mismatches)


def render(d: DemoSettlement) -> list[str]:
    return [
        f"  Settlement of business day {d.business_day} (cutover {d.cutover_utc}, "
        f"{d.tenants} tenants):",
        f"    journal rows {d.journal_rows:,}; gross {d.gross_fen / 100:,.2f} yuan, fees "
        f"{d.fee_fen / 100:,.2f}, net payable {d.net_fen / 100:,.2f}",
        f"    inter-park clearing {d.clearing_fen / 100:,.2f} yuan; float at cutover "
        f"{d.float_fen / 100:,.2f} yuan; {d.rows_after_cutover:,} rows after the cutover",
        f"    SETTLEMENT BALANCED: {'yes' if d.settlement_balanced else 'NO'}"
        + ("" if d.settlement_balanced else " — " + "; ".join(d.mismatches)),
    ]
