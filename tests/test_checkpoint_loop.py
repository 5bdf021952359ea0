"""A checkpoint holds the event loop only while it takes the snapshot (issue 9, item 17), and
with checkpoint_fork (the default, issue 14) not even then: a forked child takes it.

A thousand terminals with full idempotency windows make a snapshot of about 47 MB. Sent as one
query parameter, asyncpg copied it whole several times in one go and held the event loop for
hundreds of ms after the snapshot (the balance arrays likewise: 700 ms at a million accounts);
now both go in pieces with the loop running in between, and PostgreSQL builds the same row
from them (recovery restores it to the same state, the arrays are the balances).
"""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg
import pytest

from ledger_ext import Ledger
from switch import load_settings
from switch._journal import Journal
from switch._server import Runtime

TERMINALS = 1_000
NOW_S = 1_800_000_000


def _busy_ledger(terminals: int = TERMINALS) -> Ledger:
    ledger = Ledger(10_000, 16)
    ledger.configure_class(1, 0, 0, 0, 0, 0)
    ledger.open_merchant(1, 1)
    for account in range(1, 1_001):
        ledger.open_account(account, 1, 1, main_fen=10**9)
        ledger.bind_card(1_000_000 + account, account)
    for terminal in range(1, terminals + 1):
        for seq in range(1, 257):
            ledger.purchase(terminal, seq, 1_000_000 + 1 + seq % 1_000, 1, 1, NOW_S)
    return ledger


async def _checkpoint(dsn: str, ledger: Ledger) -> tuple[float, float, bytes]:
    """Write a checkpoint in-process while a 2 ms timer chain measures the longest stretch the
    loop was held, apart from the snapshot itself; returns (snapshot s, longest other hold s,
    state)."""
    runtime = Runtime(load_settings(env={"ONECARD_DSN": dsn, "ONECARD_CHECKPOINT_FORK": "false",
                                         "ONECARD_MASTER_SECRET": os.urandom(32).hex()}))
    runtime.ledger = ledger
    conn = await asyncpg.connect(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        runtime.journal = Journal(conn)
        runtime.journal.durable_lsn = ledger.lsn
        runtime.journal.stats.rows = 1
        loop = asyncio.get_running_loop()
        gaps: list[float] = []
        last = [time.perf_counter()]

        def tick() -> None:
            now = time.perf_counter()
            gaps.append(now - last[0])
            last[0] = now
            handle[0] = loop.call_later(0.002, tick)

        snapshot = ledger.snapshot
        taken: list[float] = []

        def timed_snapshot() -> bytes:
            started = time.perf_counter()
            state = snapshot()
            taken.append(time.perf_counter() - started)
            gaps.clear()  # the hold of the snapshot itself is not measured here
            return state

        ledger_proxy = _Proxy(ledger, snapshot=timed_snapshot)
        runtime.ledger = ledger_proxy  # type: ignore[assignment]
        handle = [loop.call_later(0.002, tick)]
        try:
            await runtime.write_checkpoint(pool)
        finally:
            handle[0].cancel()
        row = await conn.fetchrow(
            "SELECT state, account_ids, main_fen, subsidy_fen FROM checkpoints"
            " ORDER BY lsn DESC, id DESC LIMIT 1")
        assert (row["account_ids"], row["main_fen"], row["subsidy_fen"]) == \
            ledger.balance_columns()
        return taken[0], max(gaps[1:]), row["state"]
    finally:
        await pool.close()
        await conn.close()


class _Proxy:
    """The ledger with one method replaced (a cdef class takes no new attributes)."""

    def __init__(self, ledger: Ledger, **methods: object) -> None:
        self._ledger = ledger
        self.__dict__.update(methods)

    def __getattr__(self, name: str) -> object:
        return getattr(self._ledger, name)


@pytest.mark.slow  # the in-process snapshot is the fallback since issue 14; 10 s
def test_a_47_mb_checkpoint_is_stored_in_pieces_and_restores(db_dsn: str) -> None:
    ledger = _busy_ledger()
    snapshot_seconds, held, state = asyncio.run(_checkpoint(db_dsn, ledger))
    assert len(state) > 40_000_000
    assert state == ledger.snapshot()
    restored = Ledger(10_000, 16)
    restored.configure_class(1, 0, 0, 0, 0, 0)
    restored.open_merchant(1, 1)
    for account in range(1, 1_001):
        restored.open_account(account, 1, 1, main_fen=10**9)
    restored.restore(state)
    assert restored.snapshot() == state
    # Storing it holds the loop less than taking the snapshot did: pieces of 1 MB. (As one
    # parameter, asyncpg's copies held it two to three times as long as the snapshot.)
    # Measured on a loaded 2-core machine: 263 ms before, 56 ms after; 121 ms once under a
    # load average of 13, so the floor leaves room for scheduling noise, not for one piece.
    assert held < max(snapshot_seconds, 0.25), (held, snapshot_seconds)


async def _forked_checkpoint(dsn: str, ledger: Ledger, first_seq: int = 10_000
                             ) -> tuple[float, bytes, bytes, int]:
    """Write a checkpoint with the forked snapshot while a task keeps deciding purchases on the
    same ledger and a 2 ms timer chain measures the longest hold of the loop; returns (longest
    hold s, the state as it was when the checkpoint began, the stored state, purchases made
    meanwhile)."""
    runtime = Runtime(load_settings(env={"ONECARD_DSN": dsn,
                                         "ONECARD_MASTER_SECRET": os.urandom(32).hex()}))
    runtime.ledger = ledger
    conn = await asyncpg.connect(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        runtime.journal = Journal(conn)
        runtime.journal.durable_lsn = 10**12  # every row counts as durable here
        runtime.journal.stats.rows = 1
        loop = asyncio.get_running_loop()
        gaps: list[float] = []
        last = [time.perf_counter()]

        def tick() -> None:
            now = time.perf_counter()
            gaps.append(now - last[0])
            last[0] = now
            handle[0] = loop.call_later(0.002, tick)

        decided = [0]

        async def keep_deciding() -> None:
            seq = first_seq
            while True:
                for _ in range(50):
                    seq += 1
                    ledger.purchase(1, seq, 1_000_000 + 1 + seq % 1_000, 1, 1, NOW_S)
                    decided[0] += 1
                await asyncio.sleep(0)

        before = ledger.snapshot()
        handle = [loop.call_later(0.002, tick)]
        # The checkpoint's first step (the fork) runs before the decider's first step.
        checkpoint = asyncio.ensure_future(runtime.write_checkpoint(pool))
        decider = asyncio.ensure_future(keep_deciding())
        try:
            await checkpoint
        finally:
            handle[0].cancel()
            decider.cancel()
        state = await conn.fetchval("SELECT state FROM checkpoints ORDER BY lsn DESC, id DESC"
                                    " LIMIT 1")
        return max(gaps[1:]), before, state, decided[0]
    finally:
        await pool.close()
        await conn.close()


def test_a_forked_snapshot_holds_the_loop_a_few_ms_and_is_the_state_of_its_lsn(
    db_dsn: str,
) -> None:
    ledger = _busy_ledger(400)  # a 19 MB snapshot: enough to see it, quick to store
    started = time.perf_counter()
    ledger.snapshot()
    in_process = time.perf_counter() - started
    # The loop was held for the fork and the pieces, not for the snapshot: at 1,000 terminals
    # the snapshot alone took 150-270 ms in-process here, and forked the longest hold was 10-40
    # ms on a loaded 2-core machine. The floor leaves room for scheduling noise; so do three
    # tries (a machine at load 11 once stalled one checkpoint's loop 300 ms: a stall hits one
    # try, a snapshot taken in the loop would hit all three).
    holds = []
    for attempt in range(3):
        held, before, state, decided = asyncio.run(
            _forked_checkpoint(db_dsn, ledger, first_seq=10_000 + attempt * 1_000_000))
        assert decided > 0  # the ledger changed while the child took the snapshot
        assert state == before  # ... and the snapshot is the state at the fork, not after
        assert state != ledger.snapshot()
        holds.append(held)
        if held < max(in_process, 0.25):
            break
    assert min(holds) < max(in_process, 0.25), (holds, in_process)
