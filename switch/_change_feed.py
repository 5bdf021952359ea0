"""The change feed consumer: admin-side changes -> this switch's balance cache and master data.

Position: `applied`, the last outbox id whose change the caches hold. Recovery reads it as the
newest outbox id in the same REPEATABLE READ snapshot as the master data, so the snapshot holds
exactly the changes up to it (ids are drawn in commit order: see the migration).

Reading: XREAD (blocking) after `<applied>-0`. An entry whose `prev` is `applied` and whose MAC
verifies is applied. Anything else (a gap: Redis lost or trimmed entries, or restarted; a forged
or foreign entry) is caught up from the outbox in PostgreSQL (`id > applied`, in order), then the
stream is read again. When the stream is quiet for `poll_seconds` the outbox is looked at too,
so a relay that is not running costs freshness, not correctness. While Redis is down the feed
polls PostgreSQL every `poll_seconds` and tries Redis again every few seconds; terminals are
served throughout.

Events are applied on the event loop between requests (they are rare): the hot path does not
look at the feed at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg
from redis.exceptions import RedisError

from protocols.changes import DoorCommandRequested
from switch import _metrics as metrics
from switch import limits
from switch._access import load_card_validity, load_people, load_tenant_rules
from switch._change_events import (
    AccessChanged,
    AccountOpened,
    CardBound,
    ChangeEventError,
    apply_event,
    decode_event,
    parse_entry,
)
from switch._errors import DATABASE_FAILURES
from switch._outbox import fetch_after, raise_if_cancelled, redis_client
from switch._settings import redacted_url

if TYPE_CHECKING:
    from ledger_ext import Ledger
    from switch._access import AccessEngine
    from switch._masterdata import MasterData

_REDIS_FAILURES = (OSError, RedisError, TimeoutError)
_READ_GRACE_SECONDS = 0.05
"""How much longer than its own blocking time an XREAD may take before the feed looks at the
outbox meanwhile."""


class ChangeFeed:
    def __init__(
        self,
        ledger: Ledger,
        master: MasterData,
        pool: asyncpg.Pool,
        *,
        applied: int,
        redis_url: str,
        key: str,
        mac_key: bytes,
        log: Any,
        retire_terminal: Callable[[int], None],
        poll_seconds: float = limits.CHANGEFEED_POLL_SECONDS,
        access: AccessEngine | None = None,
        door_command: Callable[[DoorCommandRequested, int], None] | None = None,
        access_reloaded: Callable[[], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.master = master
        self.applied = applied
        self._pool = pool
        self._redis_url = redis_url
        self._key = key
        self._mac_key = mac_key
        self._poll_seconds = poll_seconds
        self._retire_terminal = retire_terminal
        self.log = log
        self._redis_up: bool | None = None
        self._stream_retry_at = 0.0
        metrics.changefeed_applied_id.set(applied)
        # ACCESS: tenants whose access rules, and accounts / people / cards whose access data,
        # changed: reloaded from PostgreSQL after each batch of events (switch/_access.py).
        self._access = access
        self._access_tenants: set[int] = set()
        self._access_accounts: set[int] = set()
        self._access_people: set[int] = set()
        self._access_cards: set[int] = set()
        # Door commands (switch/_door_commands.py): sent to a door, at most once.
        self._door_command = door_command
        self._access_reloaded = access_reloaded

    async def run(self) -> None:
        client = redis_client(self._redis_url)
        try:
            while True:
                if time.monotonic() >= self._stream_retry_at:
                    await self._stream_round(client)
                else:
                    await self.catch_up()
                    await asyncio.sleep(self._poll_seconds)
                raise_if_cancelled()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), 2)

    # -- the stream ------------------------------------------------------------------------

    async def _stream_round(self, client: Any) -> None:
        block_ms = max(1, int(self._poll_seconds * 1000))
        read = asyncio.ensure_future(client.xread({self._key: f"{self.applied}-0"},
                                                  count=limits.CHANGEFEED_BATCH_MAX,
                                                  block=block_ms))
        deadline = time.monotonic() + self._poll_seconds + limits.REDIS_DEADLINE_SECONDS
        try:
            # A blocking read returns within poll_seconds. One that does not is a Redis that
            # hangs (accepts and never answers): meanwhile the outbox keeps the caches fresh,
            # every poll_seconds, so a change still arrives within about a second.
            while not read.done():
                await asyncio.wait({read}, timeout=self._poll_seconds + _READ_GRACE_SECONDS)
                if read.done():
                    break
                if time.monotonic() >= deadline:
                    raise TimeoutError("Redis did not answer XREAD in time")
                await self.catch_up()
            reply = read.result()
        except _REDIS_FAILURES as exc:
            self._set_redis_up(False, exc)
            self._stream_retry_at = time.monotonic() + limits.CHANGEFEED_REDIS_RETRY_SECONDS
            return
        finally:
            await _settle(read)
        self._set_redis_up(True)
        entries = reply[0][1] if reply else []
        if not entries:
            await self.catch_up()  # quiet: make sure no relay is missing
            return
        first = self.applied
        for entry_id, fields in entries:
            outbox_id = _outbox_id(entry_id)
            if outbox_id <= self.applied:
                continue  # already applied (from PostgreSQL, after a gap)
            try:
                entry = parse_entry(entry_id, fields, self._mac_key)
            except ChangeEventError as exc:
                self.log.warning("changefeed.bad_entry", stream=self._key, error=str(exc))
                entry = None
            if entry is not None and entry.prev == self.applied:
                self._apply(entry.outbox_id, entry.kind, entry.payload, entry.created_us)
                continue
            metrics.changefeed_gaps_total.inc()
            self.log.info("changefeed.gap", applied=self.applied, entry=outbox_id,
                          prev=entry.prev if entry is not None else None)
            self._log_applied(first, "stream")
            await self.catch_up()
            first = self.applied
            if self.applied < outbox_id:
                # PostgreSQL does not have what the stream has: the stream is another
                # database's (or a restored backup's) history, or forged. Trust PostgreSQL,
                # and look at the stream again later (the relay replaces such a stream).
                self.log.error("changefeed.stream_not_ours", stream=self._key,
                               entry=outbox_id, outbox_applied=self.applied)
                self._stream_retry_at = time.monotonic() + limits.CHANGEFEED_REDIS_RETRY_SECONDS
                return
        self._log_applied(first, "stream")
        await self.reload_access()

    def _set_redis_up(self, up: bool, exc: BaseException | None = None) -> None:
        if up == self._redis_up:
            return
        self._redis_up = up
        metrics.changefeed_redis_up.set(1 if up else 0)
        if up:
            self.log.info("changefeed.redis_up", redis=redacted_url(self._redis_url),
                          stream=self._key)
        else:
            self.log.warning("changefeed.redis_down", redis=redacted_url(self._redis_url),
                             error=str(exc) or type(exc).__name__,
                             poll_seconds=self._poll_seconds)

    # -- the outbox ------------------------------------------------------------------------

    async def catch_up(self) -> None:
        """Apply every outbox row after `applied`, in order (holes are rolled-back
        transactions: ids are drawn in commit order, so none can still appear)."""
        first = self.applied
        try:
            while True:
                async with asyncio.timeout(limits.CHANGEFEED_QUERY_DEADLINE_SECONDS):
                    rows = await fetch_after(self._pool, self.applied)
                for row in rows:
                    self._apply(row.id, row.kind, row.payload, row.created_us, "database")
                if len(rows) < limits.CHANGEFEED_BATCH_MAX:
                    break
                await asyncio.sleep(0)  # a long catch-up lets terminals in between batches
        except DATABASE_FAILURES as exc:
            self.log.warning("changefeed.database_unavailable", error=str(exc) or
                             type(exc).__name__)
        self._log_applied(first, "database")
        await self.reload_access()

    # -- applying --------------------------------------------------------------------------

    def _apply(self, outbox_id: int, kind: str, payload: bytes, created_us: int,
               source: str = "stream") -> None:
        try:
            event = decode_event(kind, payload)
            terminal_id = apply_event(self.ledger, self.master, event)
        except ChangeEventError as exc:
            # Refused, not retried: applying it again cannot succeed, and stopping here would
            # hold back every later change (a lost card among them).
            metrics.changefeed_refused_total.inc()
            self.log.error("changefeed.event_refused", outbox_id=outbox_id, kind=kind,
                           error=str(exc))
        else:
            metrics.changefeed_events_total.labels(source).inc()
            if terminal_id:
                self._retire_terminal(terminal_id)
            if (isinstance(event, DoorCommandRequested) and self._door_command is not None
                    and self._access is not None):
                self._door_command(event, created_us)
            if self._access is not None:  # ACCESS
                if isinstance(event, AccessChanged):
                    self._access_tenants.add(event.tenant_id)
                    self._access_people.update(event.people)
                elif isinstance(event, AccountOpened):
                    self._access_accounts.add(event.account_id)
                elif isinstance(event, CardBound):
                    self._access_cards.add(event.card_no)
        self.applied = outbox_id
        metrics.changefeed_applied_id.set(outbox_id)
        metrics.changefeed_lag_seconds.observe(max(0.0, time.time() - created_us / 1e6))

    async def reload_access(self) -> None:
        """ACCESS: reload what the events applied since the last call changed, from
        PostgreSQL, each tenant's rules whole (docs/access.md, "Keeping the switch current").
        A failed read is retried after the next event or poll."""
        engine = self._access
        if engine is None or not (self._access_tenants or self._access_accounts
                                  or self._access_people or self._access_cards):
            return
        tenants, accounts = self._access_tenants, self._access_accounts
        people, cards = self._access_people, self._access_cards
        try:
            async with asyncio.timeout(limits.CHANGEFEED_QUERY_DEADLINE_SECONDS):
                async with self._pool.acquire() as conn, conn.transaction(
                        isolation="repeatable_read", readonly=True):
                    rules = [await load_tenant_rules(conn, t) for t in sorted(tenants)]
                    if accounts:
                        await load_people(engine, conn, account_ids=accounts)
                    if people:
                        await load_people(engine, conn, person_ids=people)
                    if cards:
                        await load_card_validity(engine, conn, cards)
        except DATABASE_FAILURES as exc:
            self.log.warning("changefeed.access_reload_failed", error=str(exc) or
                             type(exc).__name__)
            return
        for r in rules:
            engine.install(r)
        if rules and self._access_reloaded is not None:  # door modes held at the doors
            self._access_reloaded()
        self._access_tenants, self._access_accounts = set(), set()
        self._access_people, self._access_cards = set(), set()
        self.log.info("access.reloaded", tenants=sorted(tenants), accounts=len(accounts),
                      people=len(people), cards=len(cards))

    def _log_applied(self, first: int, source: str) -> None:
        if self.applied != first:
            self.log.info("changefeed.applied", after=first, through=self.applied,
                          source=source)


async def _settle(read: asyncio.Future[Any]) -> None:
    """The read belongs to the round that started it. A round that ends (done, Redis hung,
    or cancelled) cancels a read still running and waits for it a bounded time; whenever the
    read ends, its outcome is retrieved (a failure is Redis being down, which the round
    handles or the next one meets), so nothing is left for asyncio to report."""
    read.add_done_callback(_retrieve)
    if not read.done():
        read.cancel()
        # A cancelled read ends at once, unless redis-py swallows the cancellation (see
        # raise_if_cancelled): then the callback above retrieves its outcome when it ends.
        await asyncio.wait({read}, timeout=_READ_GRACE_SECONDS)


def _retrieve(read: asyncio.Future[Any]) -> None:
    if not read.cancelled():
        read.exception()


def _outbox_id(entry_id: bytes) -> int:
    try:
        return int(entry_id.split(b"-", 1)[0])
    except ValueError:
        return 0
