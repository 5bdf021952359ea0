"""Start-up: master data, then the last checkpoint, then every journal row after it.

Recovery is replay: the result equals the state before the crash, to the fen.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec

from ledger_ext import JOURNAL_COLUMNS, Ledger, LedgerError
from switch import limits
from switch._errors import RecoveryError
from switch._masterdata import MasterData, load_master_data
from switch._outbox import outbox_position

if TYPE_CHECKING:
    import asyncpg

_SELECT_AFTER = (
    f"SELECT {', '.join(JOURNAL_COLUMNS)} FROM journal WHERE lsn > $1 ORDER BY lsn"
)


class RecoveryReport(msgspec.Struct, frozen=True):
    checkpoint_lsn: int
    replayed_rows: int
    lsn: int
    seconds: float
    accounts: int
    merchants: int
    cards: int
    # The newest change_outbox id in the recovery snapshot: the master data holds every change
    # up to it, and the change feed goes on after it.
    changes_applied: int = 0


async def recover(
    conn: asyncpg.Connection, accounts_max: int, merchants_max: int
) -> tuple[Ledger, MasterData, RecoveryReport]:
    started = time.perf_counter()
    ledger = Ledger(accounts_max, merchants_max)
    # One snapshot of the database for everything: master data, checkpoint and journal agree.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        try:
            master = await load_master_data(conn, ledger)
        except LedgerError as exc:
            raise RecoveryError(f"master data does not fit the balance cache: {exc}") from exc
        # Same snapshot: the master data just read holds exactly the changes up to this id.
        changes_applied = await outbox_position(conn)
        checkpoint = await conn.fetchrow(
            "SELECT lsn, state FROM checkpoints ORDER BY lsn DESC, id DESC LIMIT 1"
        )
        checkpoint_lsn = 0
        if checkpoint is not None:
            try:
                ledger.restore(checkpoint["state"])
            except LedgerError as exc:
                raise RecoveryError(
                    f"checkpoint at lsn {checkpoint['lsn']} is unusable: {exc}"
                ) from exc
            checkpoint_lsn = checkpoint["lsn"]
            # A card reported lost (or an account unfrozen) after the checkpoint: the database,
            # not the checkpoint, says what an account's status is now.
            master.apply_statuses(ledger)
        replayed = 0
        replay = ledger.replay
        cursor = await conn.cursor(_SELECT_AFTER, checkpoint_lsn)
        while True:
            rows = await cursor.fetch(limits.REPLAY_FETCH_ROWS_MAX)
            if not rows:
                break
            try:
                for row in rows:
                    replay(tuple(row))
            except LedgerError as exc:
                raise RecoveryError(f"journal cannot be replayed: {exc}") from exc
            replayed += len(rows)
    if ledger.total_fen() != 0:
        raise RecoveryError(
            f"balances sum to {ledger.total_fen()} fen after replay, not 0: the journal or the "
            "checkpoint is not sound"
        )
    report = RecoveryReport(
        checkpoint_lsn=checkpoint_lsn,
        replayed_rows=replayed,
        lsn=ledger.lsn,
        seconds=time.perf_counter() - started,
        accounts=master.accounts,
        merchants=master.merchants,
        cards=master.cards,
        changes_applied=changes_applied,
    )
    return ledger, master, report
