"""Settlement: business days, cutover, the day's figures from the journal, confirmation and
payouts (docs/settlement.md). The first domain package of admin_api (shared/design
architecture: "a package per domain").

    s = await compute_settlement(conn, tenant_id, dt.date(2026, 12, 1))
    encode(s)   # the canonical bytes: the same journal gives the same bytes
"""

from admin_api.settlement._compute import (
    Bank,
    ClearingPair,
    Flow,
    MerchantFigures,
    Settlement,
    Subsidy,
    Totals,
    WalletFloat,
    business_day_of,
    compute_settlement,
    day_bounds,
    day_state,
    decode,
    due_on,
    encode,
    fee_of,
    sha256,
)
from admin_api.settlement._payout import execute_payouts, on_approved
from admin_api.settlement._routes import ROUTES

__all__ = [
    "ROUTES",
    "Bank",
    "ClearingPair",
    "Flow",
    "MerchantFigures",
    "Settlement",
    "Subsidy",
    "Totals",
    "WalletFloat",
    "business_day_of",
    "compute_settlement",
    "day_bounds",
    "day_state",
    "decode",
    "due_on",
    "encode",
    "execute_payouts",
    "fee_of",
    "on_approved",
    "sha256",
]
