"""Access rows of a group commit: decision records, door events, alarms, door states.

The journal writer (switch/_journal.py) takes an `AccessBatch` with each batch of money rows
and calls `write` inside the transaction that COPYs them, so a decision is durable in the same
commit as the purchases beside it; the answers go out only after that commit. A batch of
decisions alone (no money rows, no events, no alarms) is one COPY: a COPY outside a
transaction block is its own atomic transaction.

After the commit, `committed` hands the alarms raised and cleared to the publisher, which adds
them to a Redis stream the console follows (the table is the truth; the stream a live copy).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from switch import limits
from switch._access import EVENT_CLEARS, EVENT_STATE
from switch._outbox import raise_if_cancelled, redis_client

if TYPE_CHECKING:
    import asyncpg

DECISION_COLUMNS = (
    "terminal_id", "txn_seq", "tenant_id", "door_id", "area_id", "reader_no", "direction",
    "credential_kind", "card_no", "credential", "account_id", "code", "open_ms", "floors",
    "duress", "grant_id", "decided_ms",
)
EVENT_COLUMNS = ("terminal_id", "txn_seq", "tenant_id", "door_id", "event", "at_ms")
ALARMS_STREAM_PREFIX = "onecard:access:alarms:"
ALARMS_PENDING_MAX = 10_000
"""Alarm notices waiting for Redis; past this the oldest are dropped (the table has them)."""

_INSERT_ALARMS = """
INSERT INTO access_alarms (tenant_id, kind, door_id, area_id, account_id, card_no, terminal_id,
                           source, txn_seq, detail)
SELECT * FROM unnest($1::int[], $2::text[], $3::int[], $4::int[], $5::int[], $6::bigint[],
                     $7::int[], $8::smallint[], $9::bigint[], $10::text[])
RETURNING id, tenant_id, kind, door_id
"""
_CLEAR_ALARMS = """
UPDATE access_alarms a SET state = 'cleared', cleared_at = now(), cleared_by_event = e.seq,
                           cleared_reason = 'event'
FROM unnest($1::int[], $2::text[], $3::bigint[]) AS e(door_id, kind, seq)
WHERE a.door_id = e.door_id AND a.kind = e.kind AND a.cleared_at IS NULL
RETURNING a.id, a.tenant_id, a.kind, a.door_id
"""

_CLEAR_APB_ALARMS = """
UPDATE access_alarms a SET state = 'cleared', cleared_at = now(), cleared_reason = 'passed'
FROM unnest($1::int[], $2::int[]) AS p(account_id, area_id)
WHERE a.kind = 'apb_violation' AND a.cleared_at IS NULL
  AND a.account_id = p.account_id AND a.area_id = p.area_id
RETURNING a.id, a.tenant_id, a.kind, a.door_id
"""
"""A person passed a door of an area again: the open anti-passback alarms of theirs there end
(docs/access.md, "Alarms and their lifecycle")."""

_DOOR_COMMANDS = """
UPDATE door_commands d SET state = c.state, state_at = now(),
                           ack_code = coalesce(c.ack_code, d.ack_code),
                           terminal_id = coalesce(c.terminal_id, d.terminal_id),
                           reader_no = coalesce(c.reader_no, d.reader_no)
FROM unnest($1::bigint[], $2::text[], $3::smallint[], $4::int[], $5::smallint[])
     AS c(id, state, ack_code, terminal_id, reader_no)
WHERE d.id = c.id AND (d.state = 'pending' OR (d.state = 'sent' AND c.state <> 'sent'))
"""
"""Door commands move forward only: pending -> sent -> done / failed / unsupported / expired,
or pending -> offline / expired (switch/_door_commands.py). A state already final stays."""


class AccessBatch:
    """The access rows of one commit."""

    __slots__ = ("alarms", "apb_cleared", "commands", "decisions", "events", "published")

    def __init__(self) -> None:
        self.decisions: list[tuple] = []
        self.events: list[tuple] = []
        # (tenant, kind, door, area, account, card_no, terminal, source, txn_seq, detail)
        self.alarms: list[tuple] = []
        # (account, area, txn_seq): passes that end the person's open APB alarms of the area.
        self.apb_cleared: list[tuple[int, int, int]] = []
        self.published: list[tuple[int, int, str, int, str]] = []
        # Door commands: id -> (state, ack code, terminal, reader_no) (switch/_door_commands.py).
        self.commands: dict[int, tuple[str, int | None, int | None, int | None]] = {}

    def __bool__(self) -> bool:
        return bool(self.decisions or self.events or self.alarms or self.apb_cleared
                    or self.commands)

    def __len__(self) -> int:
        return len(self.decisions) + len(self.events)

    @property
    def single_copy(self) -> bool:
        """Decisions only: one COPY is the whole, atomic, write."""
        return (not self.events and not self.alarms and not self.apb_cleared
                and not self.commands)

    async def write(self, conn: asyncpg.Connection) -> None:
        """Inside the group commit's transaction (or alone, when `single_copy`)."""
        if self.decisions:
            await conn.copy_records_to_table("access_decisions", records=self.decisions,
                                             columns=DECISION_COLUMNS)
        if self.events:
            await conn.copy_records_to_table("access_door_events", records=self.events,
                                             columns=EVENT_COLUMNS)
        if self.alarms:  # before the events' clearing: an alarm raised and ended in one batch
            cols = [list(c) for c in zip(*self.alarms, strict=True)]
            for r in await conn.fetch(_INSERT_ALARMS, *cols):
                self.published.append((r["id"], r["tenant_id"], r["kind"], r["door_id"] or 0,
                                       "open"))
        if self.apb_cleared:  # after the alarms: raised and ended in one batch
            for r in await conn.fetch(_CLEAR_APB_ALARMS, [a for a, _, _ in self.apb_cleared],
                                      [a for _, a, _ in self.apb_cleared]):
                self.published.append((r["id"], r["tenant_id"], r["kind"], r["door_id"] or 0,
                                       "cleared"))
        if self.events:
            await self._door_states(conn)
        if self.commands:
            ids = list(self.commands)
            rows = [self.commands[i] for i in ids]
            await conn.execute(_DOOR_COMMANDS, ids, [r[0] for r in rows], [r[1] for r in rows],
                               [r[2] for r in rows], [r[3] for r in rows])

    async def _door_states(self, conn: asyncpg.Connection) -> None:
        doors: list[int] = []
        kinds: list[str] = []
        seqs: list[int] = []
        states: dict[int, dict[str, Any]] = {}
        for _terminal_id, txn_seq, tenant_id, door_id, event, _at in self.events:
            for kind in EVENT_CLEARS.get(event, ()):
                doors.append(door_id)
                kinds.append(kind)
                seqs.append(txn_seq)
            st = states.setdefault(door_id, {"tenant_id": tenant_id})
            if event in EVENT_STATE:
                st["state"] = EVENT_STATE[event]
            if event == 5:
                st["tamper"] = True
            elif event == 8:
                st["tamper"] = False
            elif event == 7:
                st["lock_fault"] = True
            elif event == 9:
                st["lock_fault"] = False
        if doors:
            for r in await conn.fetch(_CLEAR_ALARMS, doors, kinds, seqs):
                self.published.append((r["id"], r["tenant_id"], r["kind"], r["door_id"] or 0,
                                       "cleared"))
        for door_id, st in states.items():
            await conn.execute(
                "INSERT INTO access_door_states (door_id, tenant_id, state, tamper, lock_fault)"
                " VALUES ($1, $2, coalesce($3, 'unknown'), coalesce($4, false),"
                " coalesce($5, false))"
                " ON CONFLICT (door_id) DO UPDATE SET"
                " state = coalesce($3, access_door_states.state),"
                " tamper = coalesce($4, access_door_states.tamper),"
                " lock_fault = coalesce($5, access_door_states.lock_fault),"
                " changed_at = now()",
                door_id, st["tenant_id"], st.get("state"), st.get("tamper"),
                st.get("lock_fault"))
        await conn.execute(
            "UPDATE access_door_states s SET alarm = EXISTS (SELECT 1 FROM access_alarms a"
            " WHERE a.door_id = s.door_id AND a.cleared_at IS NULL AND a.kind IN"
            " ('forced_open', 'held_open', 'tamper', 'lock_fault'))"
            " WHERE s.door_id = ANY($1::int[])", list(states))


class AlarmPublisher:
    """Adds each alarm raised or cleared to the Redis stream `onecard:access:alarms:<db>`, after
    its commit. Best effort: while Redis is down the notices wait (bounded) and go later."""

    def __init__(self, redis_url: str, key: str, log: Any) -> None:
        self._redis_url = redis_url
        self.key = key
        self._log = log
        self._pending: list[tuple[int, int, str, int, str]] = []
        self._wakeup = asyncio.Event()
        self.published = 0

    def committed(self, batch: AccessBatch) -> None:
        if batch.published:
            self._pending.extend(batch.published)
            if len(self._pending) > ALARMS_PENDING_MAX:
                del self._pending[:len(self._pending) - ALARMS_PENDING_MAX]
            self._wakeup.set()

    async def run(self) -> None:
        client = redis_client(self._redis_url)
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                pending, self._pending = self._pending, []
                try:
                    async with asyncio.timeout(limits.REDIS_DEADLINE_SECONDS):
                        pipe = client.pipeline(transaction=False)
                        for alarm_id, tenant_id, kind, door_id, state in pending:
                            pipe.xadd(self.key, {"id": alarm_id, "tenant_id": tenant_id,
                                                 "kind": kind, "door_id": door_id,
                                                 "state": state},
                                      maxlen=100_000, approximate=True)
                        await pipe.execute()
                    self.published += len(pending)
                except Exception as exc:  # Redis down or hung: the notices wait
                    self._log.warning("access.alarm_stream_unavailable", error=str(exc) or
                                      type(exc).__name__, waiting=len(pending))
                    self._pending[:0] = pending
                    await asyncio.sleep(limits.CHANGEFEED_REDIS_RETRY_SECONDS)
                    self._wakeup.set()
                raise_if_cancelled()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), 2)

