"""What the admin side must do for a switch to see a change: the table change and an outbox row
(`outbox_append`) in ONE transaction. Used by the tests and bench/bench_change_feed.py until the
admin API does it."""

from __future__ import annotations

from typing import Any

import asyncpg

from switch._change_events import (
    AccountOpened,
    AccountStatusChanged,
    CardBound,
    CardCancelled,
    ChangeEvent,
    TerminalUpserted,
    encode_event,
)

Statement = tuple[Any, ...]  # (sql, *args)


async def commit_change(conn: asyncpg.Connection, statements: list[Statement],
                        events: list[ChangeEvent]) -> list[int]:
    """Run the statements, then append the events, in one transaction; their outbox ids."""
    async with conn.transaction():
        for sql, *args in statements:
            await conn.execute(sql, *args)
        return [await append(conn, e) for e in events]


async def append(conn: asyncpg.Connection, event: ChangeEvent) -> int:
    kind, payload = encode_event(event)
    return int(await conn.fetchval("SELECT outbox_append($1, $2::jsonb)", kind,
                                   payload.decode()))


async def set_account_status(conn: asyncpg.Connection, account_id: int, status: int) -> int:
    """Report lost (2), unfreeze (0), freeze (1), close (3)."""
    (oid,) = await commit_change(
        conn, [("UPDATE accounts SET status = $2 WHERE id = $1", account_id, status)],
        [AccountStatusChanged(account_id, status)],
    )
    return oid


async def open_account_with_card(conn: asyncpg.Connection, account_id: int, card_no: int, *,
                                 tenant_id: int = 1, class_id: int = 2) -> list[int]:
    """A new cardholder and their card, at 0 fen (money comes in through the switch)."""
    return await commit_change(
        conn,
        [("INSERT INTO accounts (id, tenant_id, class_id) VALUES ($1, $2, $3)", account_id,
          tenant_id, class_id),
         ("INSERT INTO cards (card_no, account_id) VALUES ($1, $2)", card_no, account_id)],
        [AccountOpened(account_id, tenant_id, class_id), CardBound(card_no, account_id)],
    )


async def replace_card(conn: asyncpg.Connection, old_card: int, new_card: int,
                       account_id: int) -> list[int]:
    return await commit_change(
        conn,
        [("UPDATE cards SET status = 1 WHERE card_no = $1", old_card),
         ("INSERT INTO cards (card_no, account_id) VALUES ($1, $2)", new_card, account_id)],
        [CardBound(new_card, account_id), CardCancelled(old_card, account_id)],
    )


async def set_terminal(conn: asyncpg.Connection, terminal_id: int, *, enabled: bool) -> int:
    row = await conn.fetchrow("SELECT merchant_id, kind, key_version FROM terminals"
                              " WHERE id = $1", terminal_id)
    (oid,) = await commit_change(
        conn, [("UPDATE terminals SET status = $2 WHERE id = $1", terminal_id,
                0 if enabled else 1)],
        [TerminalUpserted(terminal_id, row["merchant_id"], row["kind"], row["key_version"],
                          enabled)],
    )
    return oid
