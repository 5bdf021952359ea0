"""The switch's door command bookkeeping (switch/_door_commands.py) on its own: a stand-in
runtime (readers, sessions, the journal's access batch) and no sockets, for what the end to
end tests in tests/test_door_commands.py cannot make happen on purpose: a process's mode-hold
ids, an ack from the wrong terminal, an Error whose txn_seq is a request's, a recovery round
with commands still waiting, and the reader index.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from protocols import ocp
from protocols.changes import DoorCommandRequested
from switch import limits
from switch._access import FREE, LOCKED, Door, Reader
from switch._door_commands import DoorCommands

A = ocp.DoorCommandAction
RC = ocp.ResponseCode


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    warning = info


class Session:
    def __init__(self, terminal_id: int) -> None:
        self.terminal_id = terminal_id
        self.closed = False
        self.is_door = True
        self.sent: list[ocp.DoorCommand] = []

    def send_door_command(self, msg: ocp.DoorCommand) -> bool:
        self.sent.append(msg)
        return True


class Journal:
    def __init__(self) -> None:
        self.access_batch = SimpleNamespace(commands={})

    def wake_access(self) -> None:
        pass


def door(door_id: int, mode: int = 0, tenant_id: int = 1) -> Door:
    return Door(door_id=door_id, tenant_id=tenant_id, area_id=1, areas=(1,), apb=0,
                apb_seconds=0, elevator=False, all_floors=0, mode=mode, mode_time_zone=None,
                multi_card_count=0, multi_card_window_s=0, open_ms=4000, interlocked=(),
                by_person={}, by_node={}, by_class={})


def runtime(readers: dict[tuple[int, int], Reader]) -> Any:
    doors = {r.door.door_id: r.door for r in readers.values()}
    return SimpleNamespace(
        log=Log(), sessions={}, journal=Journal(),
        access=SimpleNamespace(readers=readers,
                               tenants={1: SimpleNamespace(doors=doors)}))


def test_each_process_starts_its_mode_hold_ids_at_a_random_place() -> None:
    starts = {DoorCommands(runtime({}))._next_sync_id for _ in range(20)}
    assert len(starts) > 15, "a switch restart must not begin at the same id"
    assert all(limits.DOOR_MODE_SYNC_ID_BOTTOM <= s <= limits.DOOR_MODE_SYNC_ID_TOP
               for s in starts)


class Database:
    """A stand-in for the journal connection: its clock is `skew_s` off this host's; it
    counts the statements that expire unfinished commands."""

    def __init__(self, skew_s: float = 0.0) -> None:
        self.skew_us = int(skew_s * 1_000_000)
        self.settles = 0

    def _now_us(self) -> int:
        return int(time.time() * 1_000_000) + self.skew_us

    async def fetchrow(self, query: str, *args: Any) -> dict[str, int]:
        assert "UPDATE door_commands" in query and "requested_at < now()" in query
        self.settles += 1
        return {"n": 0, "now_us": self._now_us()}


def lobby() -> tuple[Any, DoorCommands, Session]:
    rt = runtime({(7, 1): Reader(door(3), 0, False)})
    session = Session(7)
    rt.sessions[7] = session
    return rt, DoorCommands(rt), session


@pytest.mark.parametrize("skew_s", [-3600.0, 3600.0])
def test_ages_are_measured_in_database_time(skew_s: float) -> None:
    """The database's clock (requested_at, the event's created_us) an hour off the switch
    host's: a fresh command is still sent, a stale one (by database time) still expired."""
    rt, commands, session = lobby()
    db = Database(skew_s)
    asyncio.run(commands.settle_unfinished(db))
    assert abs(commands.clock_offset_us - db.skew_us) < 500_000
    fresh = db._now_us()
    commands.requested(DoorCommandRequested(1, 1, 3, "open_once", 4000), fresh)
    assert [m.command_id for m in session.sent] == [1]
    assert rt.journal.access_batch.commands[1][0] == "sent"
    commands.started_us -= 60_000_000  # as if this process had served for a minute
    stale = db._now_us() - int((limits.DOOR_COMMAND_FRESH_SECONDS + 1) * 1_000_000)
    commands.requested(DoorCommandRequested(2, 1, 3, "open_once", 4000), stale)
    assert rt.journal.access_batch.commands[2][0] == "expired"
    before_start = commands.round_us - 1
    commands.requested(DoorCommandRequested(3, 1, 3, "open_once", 4000), before_start)
    assert [m.command_id for m in session.sent] == [1]
    assert rt.journal.access_batch.commands[3][0] == "expired"


def test_a_recovery_round_forgets_what_the_last_round_waited_for() -> None:
    """A journal failure, then a new round in the same process: the sessions were closed, so
    nothing still waiting can be acked (settle_unfinished expired its row in the database);
    a command asked before the new round reaching the feed late is not sent (its row was
    expired too), one asked after it is."""
    rt, commands, session = lobby()
    db = Database()
    asyncio.run(commands.settle_unfinished(db))
    commands.requested(DoorCommandRequested(1, 1, 3, "open_once", 4000), db._now_us())
    commands._push(session, 1, int(A.HOLD_LOCKED), 3)
    assert len(commands.waiting) == 2
    asked_before_recovery = db._now_us()
    time.sleep(0.002)
    asyncio.run(commands.settle_unfinished(db))  # the recovery round starts
    assert db.settles == 2 and commands.waiting == {} and not commands._sync_ids
    assert commands.round_us > asked_before_recovery
    ack = ocp.DoorCommandAck(1, 0)
    rt.journal.access_batch.commands.clear()  # the failed batch is gone with its journal
    commands.acked(7, ack)
    assert 1 not in rt.journal.access_batch.commands, "no ack can count after a recovery"
    commands.requested(DoorCommandRequested(2, 1, 3, "open_once", 4000), asked_before_recovery)
    assert rt.journal.access_batch.commands[2][0] == "expired"
    commands.requested(DoorCommandRequested(3, 1, 3, "open_once", 4000), db._now_us())
    assert [m.command_id for m in session.sent][-1] == 3
    assert rt.journal.access_batch.commands[3][0] == "sent"


class CountingReaders(dict):  # type: ignore[type-arg]
    """The engine's readers dict, counting whole scans."""

    scans = 0

    def items(self) -> Any:
        CountingReaders.scans += 1
        return super().items()


def test_sign_ons_use_a_reader_index_built_once_per_reload() -> None:
    """A restart burst: 200 door terminals sign on; the readers are scanned once (not once
    per terminal), and again only after a reload swapped in new rules."""
    readers = CountingReaders()
    for t in range(1, 201):
        mode = LOCKED if t % 2 else FREE
        readers[(t, 2)] = Reader(door(1000 + t, mode), 0, False)
        readers[(t, 1)] = Reader(door(1000 + t, mode), 1, False)
        readers[(t, 3)] = Reader(door(5000 + t, mode), 0, True)  # patrol: never held
    rt = runtime(readers)
    commands = DoorCommands(rt)
    CountingReaders.scans = 0
    sessions = [Session(t) for t in range(1, 201)]
    for s in sessions:
        rt.sessions[s.terminal_id] = s
        commands.signed_on(s)
    assert CountingReaders.scans == 1
    for s in sessions:  # one hold per door, on its lowest reader
        want = A.HOLD_LOCKED if s.terminal_id % 2 else A.HOLD_OPEN
        assert [(m.reader_no, m.action) for m in s.sent] == [(1, want)]
    commands.requested(DoorCommandRequested(9, 1, 1007, "open_once", 4000), commands.now_us())
    assert sessions[6].sent[-1].command_id == 9 and sessions[6].sent[-1].reader_no == 1
    assert CountingReaders.scans == 1
    reloaded = CountingReaders(readers)
    reloaded[(1, 1)] = Reader(door(1001, FREE), 0, False)
    rt.access.readers = reloaded  # AccessEngine.install swaps in a new dict
    commands.signed_on(sessions[0])
    commands.signed_on(sessions[1])
    assert CountingReaders.scans == 2
    assert sessions[0].sent[-1].action == A.HOLD_OPEN


def test_only_the_commands_terminal_and_only_a_refusal_code_settle_it() -> None:
    """An ack from another terminal is ignored (operator command or mode hold); an Error
    whose txn_seq equals a waiting command_id but whose code is not UNKNOWN_MESSAGE or
    INVALID_FIELD is about the door's own request, not the command."""
    rt, commands, session = lobby()
    other = Session(8)
    rt.sessions[8] = other
    commands.requested(DoorCommandRequested(5, 1, 3, "open_once", 4000), commands.now_us())
    commands._push(session, 1, int(A.HOLD_OPEN), 3)
    hold_id = session.sent[-1].command_id
    commands.acked(8, ocp.DoorCommandAck(5, 0))
    commands.acked(8, ocp.DoorCommandAck(hold_id, 0))
    assert set(commands.waiting) == {5, hold_id}
    assert rt.journal.access_batch.commands[5][0] == "sent"
    commands.acked(7, ocp.DoorCommandAck(hold_id, 0))
    assert set(commands.waiting) == {5}
    for code in (RC.TXN_SEQ_TOO_OLD, RC.NOT_PERMITTED, RC.UNEXPECTED_MESSAGE):
        assert not commands.refused(7, ocp.Error(code, 5, "about the door's request 5"))
    assert set(commands.waiting) == {5}
    assert not commands.refused(8, ocp.Error(RC.UNKNOWN_MESSAGE, 5, "unknown tag 36"))
    assert commands.refused(7, ocp.Error(RC.UNKNOWN_MESSAGE, 5, "unknown tag 36"))
    assert rt.journal.access_batch.commands[5][:2] == ("unsupported", RC.UNKNOWN_MESSAGE)
    commands.requested(DoorCommandRequested(6, 1, 3, "open_once", 4000), commands.now_us())
    assert commands.refused(7, ocp.Error(RC.INVALID_FIELD, 6, "invalid field $.open_ms"))
    assert rt.journal.access_batch.commands[6][0] == "failed"
    assert commands.waiting == {}
