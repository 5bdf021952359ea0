"""Self-service kiosks topping up from bound bank cards (圈存), for the demo and the bench.

`KioskClient` is one kiosk over asyncio: it signs on, seals the cardholder's PIN under its
session's PIN key (docs/protocol.md 4.7) and sends `Topup`s. `bank_summary` counts what the
bank part of the demo shows, from the database alone.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncpg
import msgspec

from protocols import ocp


class BankSummary(msgspec.Struct):
    """The demo's `bank` object (computed from the database). Settlement and reconciliation
    add their own fields here."""

    topups_approved: int = 0
    topups_declined: int = 0
    """Declined by the bank (bank_topups) or refused by the switch (bank_topup_refusals)."""
    topups_unknown: int = 0
    """Answered "unknown, not credited" (then reversed by an advice)."""
    reversals_sent: int = 0
    """Top-ups whose reversal advice the bank acknowledged."""
    reversals_pending: int = 0
    """Advices stored and not yet acknowledged: 0 at the end of a demo."""
    credited_fen: int = 0
    settlement_balanced: bool = False
    """The day's settlement equals the journal's sums, computed independently, and nets to
    zero (onecard/demo_settle.py)."""
    reconciliation_matched: int = 0
    """Lines of the bank's file of the day that matched our credits (the day's approved
    top-ups: more than 0)."""
    reconciliation_exceptions: int = 0
    """Exceptions the day's reconciliation with the bank's file found (the injected one)."""
    reconciliation_injected_found: bool = False
    """The injected mismatch is among those exceptions."""
    bank_exceptions_open: int = 0
    """Reversal advices the bank never acknowledged, handed to a person and not resolved yet
    (bank_exception documents not executed: admin_api/finance/_bankexc.py). 0 in a demo."""


async def bank_summary(conn: asyncpg.Connection) -> BankSummary:
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE state = 'approved') AS approved,"
        " count(*) FILTER (WHERE state = 'declined') AS declined,"
        f" count(*) FILTER (WHERE code = {int(ocp.ResponseCode.BANK_NO_ANSWER)}) AS unknown,"
        " coalesce(sum(amount_fen) FILTER (WHERE state = 'approved'), 0)::bigint AS credited"
        " FROM bank_topups")
    # Refused by the switch before the bank was asked (wrong PIN, caps, no bound card, top-up
    # off or the link down: migration 0017): declined too.
    refused = await conn.fetchval("SELECT count(*) FROM bank_topup_refusals")
    advices = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE state = 'acknowledged') AS sent,"
        " count(*) FILTER (WHERE state = 'pending') AS pending FROM bank_advices")
    open_exceptions = await conn.fetchval(
        "SELECT count(*) FROM documents WHERE doc_type = 'bank_exception'"
        " AND status <> 'executed'")
    assert row is not None and advices is not None
    return BankSummary(row["approved"], row["declined"] + refused, row["unknown"],
                       advices["sent"], advices["pending"], int(row["credited"]),
                       bank_exceptions_open=int(open_exceptions or 0))


class KioskClient:
    def __init__(self, terminal_id: int, key: bytes) -> None:
        self.terminal_id = terminal_id
        self.key = key
        self.conn = ocp.Connection(ocp.Role.TERMINAL)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.seq = 0

    async def connect(self, host: str, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection(host, port)
        self.writer.write(self.conn.start_sign_on(self.terminal_id, self.key, os.urandom(16)))
        challenge = await self.next_message()
        assert isinstance(challenge, ocp.SignOnChallenge), challenge
        self.writer.write(self.conn.send(ocp.SignOnConfirm(0, ocp.TerminalKind.KIOSK, "kiosk")))
        result = await self.next_message()
        assert isinstance(result, ocp.SignOnResult) and result.code == 0, result
        self.seq = result.last_txn_seq

    async def next_message(self) -> Any:
        assert self.reader is not None
        while True:
            ev = self.conn.next_event()
            if ev is not ocp.NEED_DATA:
                return ev
            data = await self.reader.read(65536)
            self.conn.receive_data(data)

    def topup_msg(self, card_no: int, amount_fen: int, pin: str) -> ocp.Topup:
        self.seq += 1
        block = ocp.seal_pin(self.conn.pin_key, pin, terminal_id=self.terminal_id,
                             txn_seq=self.seq, card_no=card_no, amount_fen=amount_fen,
                             nonce=os.urandom(12))
        return ocp.Topup(self.seq, card_no, amount_fen, block)

    def send(self, msg: ocp.Message) -> None:
        assert self.writer is not None
        self.writer.write(self.conn.send(msg))

    async def topup(self, card_no: int, amount_fen: int, pin: str) -> Any:
        self.send(self.topup_msg(card_no, amount_fen, pin))
        return await self.next_message()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
