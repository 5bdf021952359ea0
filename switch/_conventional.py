"""The conventional design, kept only as the benchmark's baseline.

Behind the same protocol and sessions, each purchase is its own SQL transaction through an
asyncpg pool: UPDATE the balance row, INSERT the journal row, COMMIT, answer. This is how a
typical one-card server works, and `onecard bench` measures it at its best pool size so the
group-commit design is compared with something real. It is never used in production: it keeps no
limits, no double entry and no idempotency beyond the journal's unique key, and it writes to
tables of its own (`conv_balances`, `conv_journal`, the same columns and indexes as `journal`)
so the real journal, which the switch replays at start, never sees its rows. It is also the one
place where a task is created per request, because that is what the conventional design does.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from ledger_ext import PURCHASE
from switch._answer import Answer

SETUP_SQL = """
CREATE TABLE IF NOT EXISTS conv_balances (
    account_id integer PRIMARY KEY, main_fen bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS conv_journal (LIKE journal INCLUDING ALL);
CREATE SEQUENCE IF NOT EXISTS conv_lsn;
"""

UPDATE_SQL = (
    "UPDATE conv_balances SET main_fen = main_fen - $2 WHERE account_id = $1 AND main_fen >= $2"
    " RETURNING main_fen"
)
INSERT_SQL = (
    "INSERT INTO conv_journal (lsn, kind, code, terminal_id, txn_seq, ref_txn_seq, card_no,"
    " account_id, merchant_id, tenant_id, merchant_tenant_id, amount_fen, main_delta_fen,"
    " subsidy_delta_fen, merchant_delta_fen, held_delta_fen, main_fen, subsidy_fen, expires_s,"
    " now_s) VALUES (nextval('conv_lsn'), 1, $1, $2, $3, 0, $4, $5, $6, 1, 1, $7, $8, 0, $9, 0,"
    " $10, 0, 0, $11)"
)


class ConventionalHandler:
    def __init__(self, pool: asyncpg.Pool, card_accounts: dict[int, int]) -> None:
        self._pool = pool
        self._cards = card_accounts
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def create(cls, dsn: str, pool_size: int) -> ConventionalHandler:
        pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
        async with pool.acquire() as conn:
            cards = {r[0]: r[1] for r in await conn.fetch("SELECT card_no, account_id FROM cards")}
        return cls(pool, cards)

    def submit(self, session: Any, terminal_id: int, merchant_id: int, ev: Any) -> None:
        task = asyncio.get_running_loop().create_task(
            self._purchase(session, terminal_id, merchant_id, ev)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _purchase(self, session: Any, terminal_id: int, merchant_id: int, ev: Any) -> None:
        account = self._cards.get(ev.card_no, 0)
        amount = ev.amount_fen
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                balance = await conn.fetchval(UPDATE_SQL, account, amount) if account else None
                code = 0 if balance is not None else (51 if account else 14)
                await conn.execute(
                    INSERT_SQL, code, terminal_id, ev.txn_seq, ev.card_no, account, merchant_id,
                    amount, -amount if code == 0 else 0, amount if code == 0 else 0,
                    balance or 0, int(time.time()),
                )
        except (OSError, asyncpg.PostgresError):
            code, balance = 96, None  # SYSTEM_ERROR: not committed; retry with the same txn_seq
        session.answer_nowait(Answer(PURCHASE, code, ev.txn_seq, amount, balance or 0))
        session.flush()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._pool.close()
