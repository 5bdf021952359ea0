"""Door commands: the security desk's "open once", "lock", "free passage", "normal".

An operator's command arrives on the change feed (`DoorCommandRequested`, written by the admin
API with its door_commands row). The switch looks for a live session of a door terminal with a
reader of the door; it sends that session a `DoorCommand` (docs/protocol.md 4.5) and waits for
the `DoorCommandAck`. Every state the command reaches ('sent', 'done', 'failed', 'unsupported',
'offline', 'expired') is written through the journal's group commit (switch/_access_journal.py),
never on a connection of its own.

At most once (docs/access-admin.md, "Door commands"): a command is sent once, on the session
open when it arrives, and never again. The switch remembers the ids it has handled (a change
feed replayed by a recovery within the process sends none again), refuses any command requested
before this process started (its predecessor may have sent it) or before its last recovery
(settle_unfinished expired it) or longer ago than
DOOR_COMMAND_FRESH_SECONDS (a door opening minutes late is worse than not opening), and never
resends after a reconnect: an unacknowledged command ends 'expired' after
DOOR_COMMAND_ACK_SECONDS, and the operator asks again.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from protocols import ocp
from protocols.changes import DOOR_COMMAND_ACTIONS, DoorCommandRequested
from switch import limits
from switch._access import FREE, LOCKED, Reader

if TYPE_CHECKING:
    from switch._server import Runtime

_ACTION_NO = {name: i for i, name in enumerate(DOOR_COMMAND_ACTIONS, 1)}
_REFUSALS = frozenset({int(ocp.ResponseCode.UNKNOWN_MESSAGE), int(ocp.ResponseCode.INVALID_FIELD)})
"""The Error codes by which a door refuses a DoorCommand (protocol.md 4.5); no other code's
txn_seq names a command."""


class DoorCommands:
    """The commands of one switch process: kept across recoveries (it lives in the Runtime)."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        # Database time (PostgreSQL's now(), which stamps requested_at and the change
        # event's created_us), not this host's clock: a skewed clock must neither resend nor
        # expire everything. Read at each settle_unfinished; until then this host's clock.
        self.started_us = int(time.time() * 1_000_000)
        """When this process started serving, in database time (its first settle)."""
        self.round_us = self.started_us
        """When the current serving round (the start, or the last recovery) began, in
        database time: a command asked before it was expired by settle_unfinished."""
        self.clock_offset_us = 0
        """Database time minus this host's time.time(), as measured at the last settle."""
        self._settled = False
        # command_id -> (terminal_id, deadline on time.monotonic()): sent, not yet acked.
        self.waiting: dict[int, tuple[int, float]] = {}
        self._seen: OrderedDict[int, None] = OrderedDict()
        self.sent = 0
        # Mode holds (second part of issue 13): a door in mode 'free' is held open and one in
        # mode 'locked' held locked at its terminal, pushed when the mode changes and at each
        # sign-on. Not operator commands: no door_commands row, ids counted down from the top
        # of the uint32 range (far from the table's ids), idempotent, so resending is safe.
        # A command_id is unique within one session only (protocol.md 4.5).
        self.modes: dict[int, int] = {}
        """door_id -> the DoorCommandAction its mode asks for (as last pushed or seen)."""
        self._sync_ids: set[int] = set()
        # The door readers (patrol readers left out) by terminal and by door, built once per
        # rules reload (AccessEngine.install swaps in a new readers dict): a restart burst of
        # sign-ons must not scan every reader for each door terminal.
        self._indexed: object = None
        self._by_terminal: dict[int, list[tuple[int, Reader]]] = {}
        self._by_door: dict[int, list[tuple[int, int, Reader]]] = {}
        # A random start per process: a terminal that (against protocol.md 4.5) remembers
        # ids across sessions must not answer a new hold with its predecessor's old answer.
        self._next_sync_id = limits.DOOR_MODE_SYNC_ID_TOP - secrets.randbelow(
            limits.DOOR_MODE_SYNC_ID_TOP - limits.DOOR_MODE_SYNC_ID_BOTTOM + 1)

    async def settle_unfinished(self, conn: Any) -> None:
        """At the start of each serving round (the process's start, and each recovery within
        it): a command asked before now (database time) and still 'pending' or 'sent' will
        never be sent or answered: 'expired'. After a recovery that also covers states lost
        with the failed journal batch, and every command still waiting for its ack: each
        session of the last round was closed, so no ack can come. (One statement, before any
        terminal is served, not a connection per command.) Also reads the database's clock:
        every later age is measured in database time."""
        before = time.time()
        async with asyncio.timeout(limits.DOOR_COMMAND_ACK_SECONDS * 2):
            row = await conn.fetchrow(
                "WITH x AS (UPDATE door_commands SET state = 'expired', state_at = now()"
                " WHERE state IN ('pending', 'sent') AND requested_at < now() RETURNING 1)"
                " SELECT (SELECT count(*) FROM x) AS n,"
                " (extract(epoch FROM now()) * 1000000)::bigint AS now_us")
        after = time.time()
        if not self._settled:
            self.started_us = row["now_us"]
        self._settled = True
        self.round_us = row["now_us"]
        self.clock_offset_us = row["now_us"] - int((before + after) / 2 * 1_000_000)
        if row["n"]:
            self._rt.log.info("door_command.expired_at_start", rows=row["n"])
        for cid in self.waiting:
            if cid not in self._sync_ids:  # its row was among those just expired
                self._rt.log.info("door_command.expired", command_id=cid,
                                  terminal_id=self.waiting[cid][0], reason="recovery")
        self.waiting.clear()
        self._sync_ids.clear()
        if abs(self.clock_offset_us) > 1_000_000:
            self._rt.log.warning("door_command.clock_skew",
                                 offset_s=round(self.clock_offset_us / 1e6, 3))

    def now_us(self) -> int:
        """Now in database time (this host's clock corrected by the last measured offset)."""
        return int(time.time() * 1_000_000) + self.clock_offset_us

    # -- from the change feed --------------------------------------------------------------

    def requested(self, event: DoorCommandRequested, created_us: int) -> None:
        """A command reached this switch: send it now or record why not."""
        cid = event.command_id
        if cid in self._seen:
            return  # handled before (a replay of the feed): never twice
        self._seen[cid] = None
        while len(self._seen) > limits.DOOR_COMMANDS_SEEN_MAX:
            self._seen.popitem(last=False)
        rt = self._rt
        log = rt.log
        now_us = self.now_us()  # database time, like created_us
        if (created_us < self.round_us  # expired by settle_unfinished (or its predecessor's)
                or now_us - created_us > limits.DOOR_COMMAND_FRESH_SECONDS * 1_000_000):
            log.info("door_command.too_late", command_id=cid, door_id=event.door_id,
                     age_s=round((now_us - created_us) / 1e6, 3))
            self._state(cid, "expired")
            return
        target = self._target(event)
        if target is None:
            log.info("door_command.offline", command_id=cid, door_id=event.door_id)
            self._state(cid, "offline")
            return
        session, reader_no = target
        action = _ACTION_NO[event.action]
        open_ms = event.open_ms if action == ocp.DoorCommandAction.OPEN_ONCE else 0
        if not session.send_door_command(ocp.DoorCommand(cid, reader_no, action, open_ms)):
            self._state(cid, "offline")
            return
        self.sent += 1
        self.waiting[cid] = (session.terminal_id,
                             time.monotonic() + limits.DOOR_COMMAND_ACK_SECONDS)
        log.info("door_command.sent", command_id=cid, door_id=event.door_id,
                 terminal_id=session.terminal_id, reader_no=reader_no, action=event.action,
                 open_ms=open_ms)
        self._state(cid, "sent", terminal_id=session.terminal_id, reader_no=reader_no)

    def _index(self) -> None:
        """(Re)build the reader indexes if the rules were reloaded since the last build."""
        readers = self._rt.access.readers
        if readers is self._indexed:
            return
        by_terminal: dict[int, list[tuple[int, Reader]]] = {}
        by_door: dict[int, list[tuple[int, int, Reader]]] = {}
        for (terminal_id, reader_no), reader in sorted(readers.items(), key=lambda kv: kv[0]):
            if reader.patrol:
                continue
            by_terminal.setdefault(terminal_id, []).append((reader_no, reader))
            by_door.setdefault(reader.door.door_id, []).append((terminal_id, reader_no, reader))
        self._by_terminal, self._by_door, self._indexed = by_terminal, by_door, readers

    def terminal_readers(self, terminal_id: int) -> list[tuple[int, Reader]]:
        """(reader_no, reader) of a terminal's door readers, by reader_no."""
        self._index()
        return self._by_terminal.get(terminal_id, [])

    def door_readers(self, door_id: int) -> list[tuple[int, int, Reader]]:
        """(terminal_id, reader_no, reader) of a door's readers, in that order."""
        self._index()
        return self._by_door.get(door_id, [])

    def _target(self, event: DoorCommandRequested) -> tuple[Any, int] | None:
        """(the session, reader_no) of a signed-on door terminal with a reader of the door:
        the lowest terminal id and reader_no."""
        rt = self._rt
        for terminal_id, reader_no, reader in self.door_readers(event.door_id):
            if reader.door.tenant_id != event.tenant_id:
                return None  # not this tenant's door: nothing is sent
            session = rt.sessions.get(terminal_id)
            if session is None or session.closed or not session.is_door:
                continue
            return session, reader_no
        return None

    # -- from the door terminal's session --------------------------------------------------

    def acked(self, terminal_id: int, ack: ocp.DoorCommandAck) -> None:
        """An ack counts only from the terminal the command (or hold) was sent to."""
        waiting = self.waiting.get(ack.command_id)
        if waiting is None or waiting[0] != terminal_id:
            self._rt.log.info("door_command.ack_ignored", command_id=ack.command_id,
                              terminal_id=terminal_id, code=ack.code)
            return
        del self.waiting[ack.command_id]
        if ack.command_id in self._sync_ids:
            self._sync_ids.discard(ack.command_id)
            self._rt.log.info("door_mode.acked", command_id=ack.command_id,
                              terminal_id=terminal_id, code=ack.code)
            return
        state = "done" if ack.code == ocp.DoorCommandCode.DONE else "failed"
        self._rt.log.info("door_command." + state, command_id=ack.command_id,
                          terminal_id=terminal_id, code=ack.code)
        self._state(ack.command_id, state, ack_code=ack.code)

    def refused(self, terminal_id: int, error: ocp.Error) -> bool:
        """An Error from a door terminal: True if it refused a command we are waiting for
        (UNKNOWN_MESSAGE: 'unsupported'; INVALID_FIELD naming it: 'failed'). Any other code
        is not about a command: its txn_seq is one of the door's own requests, which may
        equal a waiting command_id by chance (protocol.md 4.5)."""
        if error.code not in _REFUSALS:
            return False
        waiting = self.waiting.get(error.txn_seq)
        if not error.txn_seq or waiting is None or waiting[0] != terminal_id:
            return False
        del self.waiting[error.txn_seq]
        if error.txn_seq in self._sync_ids:
            self._sync_ids.discard(error.txn_seq)
            self._rt.log.info("door_mode.refused", command_id=error.txn_seq,
                              terminal_id=terminal_id, code=error.code)
            return True
        state = ("unsupported" if error.code == ocp.ResponseCode.UNKNOWN_MESSAGE else "failed")
        self._rt.log.info("door_command." + state, command_id=error.txn_seq,
                          terminal_id=terminal_id, code=error.code, detail=error.detail)
        self._state(error.txn_seq, state, ack_code=error.code)
        return True

    # -- mode holds: 'free' and 'locked' doors held at their terminals ----------------------

    def modes_reloaded(self) -> None:
        """After the access rules were (re)loaded: push the hold of every door whose mode
        changed since it was last seen to its signed-on terminals. A door seen for the first
        time is only recorded (its terminal gets its hold when it signs on)."""
        rt = self._rt
        for tenant in rt.access.tenants.values():
            for door in tenant.doors.values():
                want = _mode_action(door.mode)
                before = self.modes.get(door.door_id)
                self.modes[door.door_id] = want
                if before is None or before == want:
                    continue
                for session, reader_no in self._door_sessions(door.door_id):
                    self._push(session, reader_no, want, door.door_id)

    def signed_on(self, session: Any) -> None:
        """A door terminal signed on: hold the doors of its readers whose mode is 'free' or
        'locked'. (Nothing for the others: NORMAL would also end an operator's hold. A door
        taken out of 'free' or 'locked' while its terminal was away learns it from its access
        list's offline_mode, protocol.md 4.6, and from the next mode change.)"""
        doors: dict[int, tuple[int, Reader]] = {}
        for reader_no, reader in self.terminal_readers(session.terminal_id):
            doors.setdefault(reader.door.door_id, (reader_no, reader))  # its lowest reader
        for door_id, (reader_no, reader) in sorted(doors.items()):
            want = _mode_action(reader.door.mode)
            self.modes.setdefault(door_id, want)
            if want != ocp.DoorCommandAction.NORMAL:
                self._push(session, reader_no, want, door_id)

    def _door_sessions(self, door_id: int) -> list[tuple[Any, int]]:
        """(session, its lowest reader_no of the door) of each signed-on door terminal."""
        rt = self._rt
        found: dict[int, int] = {}
        for terminal_id, reader_no, _reader in self.door_readers(door_id):
            session = rt.sessions.get(terminal_id)
            if session is None or session.closed or not session.is_door:
                continue
            found.setdefault(terminal_id, reader_no)  # sorted: its lowest reader_no
        return [(rt.sessions[t], r) for t, r in found.items()]

    def _push(self, session: Any, reader_no: int, action: int, door_id: int) -> None:
        cid = self._next_sync_id
        self._next_sync_id = (cid - 1 if cid > limits.DOOR_MODE_SYNC_ID_BOTTOM
                              else limits.DOOR_MODE_SYNC_ID_TOP)
        if not session.send_door_command(ocp.DoorCommand(cid, reader_no, action, 0)):
            return
        self._sync_ids.add(cid)
        self.waiting[cid] = (session.terminal_id,
                             time.monotonic() + limits.DOOR_COMMAND_ACK_SECONDS)
        self._rt.log.info("door_mode.sent", command_id=cid, door_id=door_id,
                          terminal_id=session.terminal_id, reader_no=reader_no, action=action)

    # -- the sweeper, every second ---------------------------------------------------------

    def expire(self, now: float) -> None:
        """Commands whose ack did not come in time end 'expired' (never resent)."""
        late = [cid for cid, (_tid, deadline) in self.waiting.items() if deadline <= now]
        for cid in late:
            terminal_id, _ = self.waiting.pop(cid)
            if cid in self._sync_ids:
                self._sync_ids.discard(cid)
                self._rt.log.info("door_mode.unanswered", command_id=cid,
                                  terminal_id=terminal_id)
                continue
            self._rt.log.info("door_command.expired", command_id=cid, terminal_id=terminal_id)
            self._state(cid, "expired")

    def _state(self, command_id: int, state: str, *, ack_code: int | None = None,
               terminal_id: int | None = None, reader_no: int | None = None) -> None:
        journal = self._rt.journal
        commands = journal.access_batch.commands
        prior = commands.get(command_id)
        if prior is not None:  # sent and answered in one batch: keep where it was sent
            terminal_id = prior[2] if terminal_id is None else terminal_id
            reader_no = prior[3] if reader_no is None else reader_no
        commands[command_id] = (state, ack_code, terminal_id, reader_no)
        journal.wake_access()


def _mode_action(mode: int) -> int:
    """The hold a door mode asks of the door: free -> HOLD_OPEN, locked -> HOLD_LOCKED, any
    other mode (deciding each credential) -> NORMAL."""
    if mode == FREE:
        return int(ocp.DoorCommandAction.HOLD_OPEN)
    if mode == LOCKED:
        return int(ocp.DoorCommandAction.HOLD_LOCKED)
    return int(ocp.DoorCommandAction.NORMAL)
