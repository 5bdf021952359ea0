"""Journal vouchers (记账凭证) of a day's postings, for the finance system (账务接口).

A tenant's day is the approved journal rows at its merchants (system accounts included) that
committed in its business day (admin_api/settlement: from one cutover to the next). They are
grouped by (merchant, kind, the card's tenant): one voucher each, in that order, numbered
`YYYYMMDD-NNNN`. A voucher's lines are the group's sums on the three ledger accounts every
journal row moves:

| account | what |
| --- | --- |
| `wallet.main.t<T>` | the main wallets of tenant T's cardholders |
| `wallet.subsidy.t<T>` | their subsidy wallets |
| `merchant.<id>` | a merchant: a canteen, a shop, or a system account (e.g. bank clearing) |

A balance that falls is a debit, one that rises a credit (every balance is money the site
holds for someone: a cardholder, a merchant; a system account's is the mirror of what it paid
in or out). Each journal row sums to zero over the three accounts, so each voucher's debits
equal its credits, and so do the day's. Lines that sum to zero are left out. Computed from the
journal alone: the same day gives the same vouchers, byte for byte.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import msgspec

from admin_api._routes_queries import KIND_NAMES
from admin_api.finance._reconcile import business_day

VOUCHER_LINES_MAX: Final = 300_000
"""Lines of one day's vouchers (three per voucher at most)."""


class VoucherLine(msgspec.Struct, frozen=True):
    """One line of a voucher: an account debited or credited, in fen."""

    business_date: dt.date
    voucher_no: str
    line_no: int
    account: str
    account_name: str
    debit_fen: int
    credit_fen: int
    reference: str
    """What the voucher books: kind, merchant, rows and their journal positions."""


_SQL: Final = """
SELECT j.merchant_id, m.name AS merchant_name, j.kind, j.tenant_id AS card_tenant,
       count(*) AS n, min(j.lsn) AS lsn_lo, max(j.lsn) AS lsn_hi,
       sum(j.main_delta_fen)::bigint AS main, sum(j.subsidy_delta_fen)::bigint AS subsidy,
       sum(j.merchant_delta_fen)::bigint AS merchant
FROM journal j JOIN merchants m ON m.id = j.merchant_id
WHERE j.merchant_tenant_id = $1 AND j.committed_at >= $2 AND j.committed_at < $3
  AND j.code = 0
GROUP BY 1, 2, 3, 4
ORDER BY 1, 3, 4
"""


async def day_vouchers(conn: Any, tenant_id: int, day: dt.date) -> list[VoucherLine]:
    bounds = await business_day(conn, tenant_id, day)
    if bounds is None:
        return []
    start, end = bounds
    lines: list[VoucherLine] = []
    number = 0
    for r in await conn.fetch(_SQL, tenant_id, start, end):
        postings = [(f"wallet.main.t{r['card_tenant']}",
                     f"main wallets of tenant {r['card_tenant']}", r["main"]),
                    (f"wallet.subsidy.t{r['card_tenant']}",
                     f"subsidy wallets of tenant {r['card_tenant']}", r["subsidy"]),
                    (f"merchant.{r['merchant_id']}", r["merchant_name"], r["merchant"])]
        postings = [p for p in postings if p[2] != 0]
        if not postings:
            continue  # inquiries, and movements that cancel out within the group
        number += 1
        kind = KIND_NAMES.get(r["kind"], str(r["kind"]))
        reference = (f"{kind} at merchant {r['merchant_id']} by cards of tenant "
                     f"{r['card_tenant']}; {r['n']} rows; lsn {r['lsn_lo']}-{r['lsn_hi']}")
        for n, (account, name, delta) in enumerate(postings, start=1):
            lines.append(VoucherLine(
                business_date=day, voucher_no=f"{day:%Y%m%d}-{number:04d}", line_no=n,
                account=account, account_name=name, debit_fen=-delta if delta < 0 else 0,
                credit_fen=delta if delta > 0 else 0, reference=reference))
    return lines
