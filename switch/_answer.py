"""An answer that did not come straight from the ledger, shaped for `answer_nowait`.

Two paths answer without a fresh Outcome: a repeat read back from the journal, and a request
refused without a decision (BUSY or SYSTEM_ERROR: retry with the same txn_seq; or a QR code
that may not pay, unless the journal holds the request). `answer_nowait` reads only these
fields.
"""

from __future__ import annotations

from typing import Any

import msgspec

# kind 0 is no request type: answer_nowait sends it as an Error carrying `code`.
REFUSAL = 0


class Answer(msgspec.Struct, frozen=True):
    kind: int
    code: int
    txn_seq: int
    amount_fen: int = 0
    main_fen: int = 0
    subsidy_fen: int = 0
    detail: str = ""
    """A refusal's Error.detail (empty: "retry later with the same txn_seq")."""
    reason: str = ""
    """A refusal that is a security event: its log reason (e.g. "qr_reused")."""
    tenant_id: int = 0
    merchant_tenant_id: int = 0
    """The card's and the merchant's tenant: whether a till may see the balances."""

    @classmethod
    def from_journal(cls, row: Any) -> Answer:
        return cls(row["kind"], row["code"], row["txn_seq"], row["amount_fen"], row["main_fen"],
                   row["subsidy_fen"], tenant_id=row["tenant_id"],
                   merchant_tenant_id=row["merchant_tenant_id"])

    @classmethod
    def refusal(cls, txn_seq: int, code: int, detail: str = "", reason: str = "") -> Answer:
        return cls(REFUSAL, code, txn_seq, detail=detail, reason=reason)
