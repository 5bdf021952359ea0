"""A door controller's side of door commands (docs/protocol.md 4.5, DoorCommand): what the
simulated door does when the switch tells it to open once, hold open, hold locked or go back to
normal, and the DoorCommandAck it answers.

Plain data and pure functions over OCP messages, like OfflineDoor: no socket, no clock (time
comes in as `now_ms`), so the simulator, the tests and a demo drive the same rules.

    door = DoorControl(readers={1, 2})
    ack = door.command(msg, now_ms=now)     # the DoorCommandAck to send (None: ignore it)
    door.events                             # [(reader_no, DoorEventCode)] a real lock reports
    door.mode(1)                            # "normal", "held_open" or "held_locked"
    door.may_open(1)                        # False while held locked: refuse local openings
    door.new_session()                      # at each sign-on: command ids start afresh
"""

from __future__ import annotations

from typing import Final

from protocols import ocp

NORMAL: Final = "normal"
HELD_OPEN: Final = "held_open"
HELD_LOCKED: Final = "held_locked"
_A = ocp.DoorCommandAction
_C = ocp.DoorCommandCode
DEFAULT_OPEN_MS: Final = 3000
"""The door's own open time, for an OPEN_ONCE with open_ms 0 (protocol.md 4.5)."""
COMMANDS_REMEMBERED_MAX: Final = 1000
"""Command ids remembered so a repeat within a session is never carried out twice (the switch
sends none). A command_id is unique within one session only (protocol.md 4.5): `new_session()`
forgets them at each sign-on."""


class DoorControl:
    """The held mode of each reader's door, the commands carried out and the door events a
    real controller would report for them."""

    def __init__(self, readers: set[int] | frozenset[int] = frozenset({1}), *,
                 lock_fault: bool = False, default_open_ms: int = DEFAULT_OPEN_MS) -> None:
        self.readers = frozenset(readers)
        self.default_open_ms = default_open_ms
        self.lock_fault = lock_fault
        """Simulate a broken lock: every command is answered LOCK_FAULT."""
        self.modes: dict[int, str] = {}
        self.received: list[ocp.DoorCommand] = []
        """Every DoorCommand received, in order (a test or a demo reads it)."""
        self.opened: list[tuple[int, int, int]] = []
        """(reader_no, at_ms, open_ms) of each OPEN_ONCE carried out (open_ms 0 on the wire:
        the default; none while the door is held open, which answers DONE)."""
        self.events: list[tuple[int, int]] = []
        """(reader_no, DoorEventCode) a real lock would report (OPENED then CLOSED)."""
        self._done: dict[int, int] = {}

    def new_session(self) -> None:
        """A new session signed on: forget the command ids of the last one. A command_id is
        unique within one session only (the switch never resends on another session, and its
        own mode-hold ids start afresh in each switch process), so an id seen before is a new
        command now. The held modes stay (a terminal keeps them across a reconnect)."""
        self._done.clear()

    def mode(self, reader_no: int) -> str:
        return self.modes.get(reader_no, NORMAL)

    def may_open(self, reader_no: int) -> bool:
        """A local opening (a credential, an exit button) is allowed unless held locked."""
        return self.mode(reader_no) != HELD_LOCKED

    def command(self, msg: ocp.DoorCommand, *, now_ms: int = 0) -> ocp.DoorCommandAck:
        """Carry out one command; the ack to send. A repeat of a command_id within the session
        is not carried out again (it gets the first answer)."""
        self.received.append(msg)
        if msg.command_id in self._done:
            return ocp.DoorCommandAck(msg.command_id, self._done[msg.command_id], now_ms)
        code = self._carry_out(msg, now_ms)
        self._done[msg.command_id] = code
        if len(self._done) > COMMANDS_REMEMBERED_MAX:
            del self._done[next(iter(self._done))]
        return ocp.DoorCommandAck(msg.command_id, code, now_ms)

    def _carry_out(self, msg: ocp.DoorCommand, now_ms: int) -> int:
        r = msg.reader_no
        if r not in self.readers:
            return int(_C.NO_SUCH_READER)
        if self.lock_fault:
            return int(_C.LOCK_FAULT)
        action = msg.action
        if action == _A.OPEN_ONCE:
            if self.mode(r) == HELD_LOCKED:
                return int(_C.REFUSED)
            if self.mode(r) == HELD_OPEN:
                return int(_C.DONE)  # open already: nothing changes
            self.opened.append((r, now_ms, msg.open_ms or self.default_open_ms))
            self.events.append((r, int(ocp.DoorEventCode.OPENED)))
            self.events.append((r, int(ocp.DoorEventCode.CLOSED)))
        elif action == _A.HOLD_OPEN:
            self.modes[r] = HELD_OPEN
        elif action == _A.HOLD_LOCKED:
            self.modes[r] = HELD_LOCKED
        else:
            self.modes.pop(r, None)
        return int(_C.DONE)
