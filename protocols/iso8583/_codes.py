"""Field 39, the response code: the one table (docs/bank-link.md, "Field 39").

`outcome` says what a 0210 carrying the code means for the money: `approved` (only 00: the bank
has debited the bank card) or `declined` (the bank has moved nothing). A code outside this table
in a 0210 is a protocol violation: the switch treats the answer as unknown (no credit, a
reversal advice follows). In 0430, 00 and 25 acknowledge the advice; in 0810, 00 is success.
"""

from __future__ import annotations

from typing import Final

import msgspec


class Field39Info(msgspec.Struct, frozen=True):
    code: str
    outcome: str
    """"approved" or "declined" (for a 0210)."""
    meaning: str


FIELD39_TABLE: Final[tuple[Field39Info, ...]] = (
    Field39Info("00", "approved", "Approved (0210), acknowledged (0430), done (0810)."),
    Field39Info("05", "declined", "Do not honour."),
    Field39Info("12", "declined", "Invalid transaction (or unsupported network code in 0810)."),
    Field39Info("13", "declined", "Invalid amount."),
    Field39Info("14", "declined", "Invalid card or token (unknown to the bank)."),
    Field39Info("25", "declined", "Unable to locate the original (0430: advice acknowledged, "
                "nothing to reverse)."),
    Field39Info("30", "declined", "Format error."),
    Field39Info("41", "declined", "Lost card."),
    Field39Info("43", "declined", "Stolen card."),
    Field39Info("51", "declined", "Insufficient funds in the bank account."),
    Field39Info("54", "declined", "Expired card."),
    Field39Info("55", "declined", "Incorrect PIN (a bank that checks one of its own)."),
    Field39Info("57", "declined", "Transaction not permitted to the cardholder (card not bound "
                "for top-ups)."),
    Field39Info("61", "declined", "Exceeds the bank's amount limit."),
    Field39Info("63", "declined", "Security violation: MAC does not verify, unknown key "
                "generation, key does not unwrap."),
    Field39Info("65", "declined", "Exceeds the bank's frequency limit."),
    Field39Info("91", "declined", "Issuer or bank system inoperative (also used by the switch "
                "for a request it could not send)."),
    Field39Info("94", "declined", "Duplicate transmission (STAN or RRN seen before)."),
    Field39Info("96", "declined", "System malfunction."),
)
FIELD39: Final = {info.code: info for info in FIELD39_TABLE}
APPROVED: Final = "00"
ADVICE_ACKNOWLEDGED: Final = frozenset({"00", "25"})
