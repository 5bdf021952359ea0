"""An answer that did not come straight from the ledger, shaped for `answer_nowait`.

Three paths answer without a fresh Outcome: a repeat read back from the journal, a request
refused for now (BUSY or SYSTEM_ERROR: retry with the same txn_seq), and the conventional
benchmark baseline. `answer_nowait` reads only these fields.
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

    @classmethod
    def from_journal(cls, row: Any) -> Answer:
        return cls(row["kind"], row["code"], row["txn_seq"], row["amount_fen"], row["main_fen"],
                   row["subsidy_fen"])

    @classmethod
    def refusal(cls, txn_seq: int, code: int) -> Answer:
        return cls(REFUSAL, code, txn_seq)
