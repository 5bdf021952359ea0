"""Card expiry: a card past its `valid_until` (in its tenant's local time) is cancelled.

A background task of the admin API looks every `expiry_check_seconds`; each expired card is
cancelled like a replaced one (status cancelled, reason "expired"), audited as done by
"system", and goes out on the change feed, so every switch refuses it within a second. Safe
with several admin API processes: the cards are locked and skipped when another one has them.
"""

from __future__ import annotations

import asyncio
from typing import Final

import asyncpg
import structlog

from admin_api._auth import Actor
from admin_api._store import change
from protocols.changes import CardCancelled

BATCH_MAX: Final = 1_000
SYSTEM: Final = Actor(user_id=0, username="system", role="system", node_id=0, node_path=[])

log = structlog.get_logger("onecard.admin.expiry")


async def expire_cards(pool: asyncpg.Pool) -> int:
    """Cancel the cards past their validity now; how many."""
    done = 0
    while True:
        async with change(pool, SYSTEM) as tx:
            rows = await tx.conn.fetch(
                "SELECT c.card_no, c.account_id, c.valid_until, n.path FROM cards c"
                " JOIN people p ON p.account_id = c.account_id"
                " JOIN org_nodes n ON n.id = p.node_id JOIN tenants t ON t.id = p.tenant_id"
                " WHERE c.status = 0 AND c.valid_until IS NOT NULL"
                " AND c.valid_until < (now() + make_interval(secs => t.utc_offset_s))::date"
                " ORDER BY c.card_no LIMIT $1 FOR UPDATE OF c SKIP LOCKED", BATCH_MAX)
            for r in rows:
                await tx.conn.execute(
                    "UPDATE cards SET status = 1, cancelled_at = now(), cancel_reason = 'expired'"
                    " WHERE card_no = $1", r["card_no"])
                tx.audit("card.expire", "card", r["card_no"], list(r["path"]),
                         before={"status": "active", "valid_until": r["valid_until"]},
                         after={"status": "cancelled", "cancel_reason": "expired"})
                tx.event(CardCancelled(r["card_no"], r["account_id"]))
        done += len(rows)
        if len(rows) < BATCH_MAX:
            return done


async def run_expiry(pool: asyncpg.Pool, every_seconds: float) -> None:
    """Until cancelled: expire cards every `every_seconds`; failures are logged and retried."""
    while True:
        try:
            n = await expire_cards(pool)
            if n:
                log.info("admin.cards_expired", cards=n)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("admin.expiry_failed", error=str(exc))
        await asyncio.sleep(every_seconds)
