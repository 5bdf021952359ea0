"""One simulated door controller on a live OCP connection: a trio task, a real TCP connection,
the sans-IO OCP Connection and `DoorControl` for the door commands (docs/protocol.md 4.5).

It signs on as a door (kind 3), heartbeats when idle, carries out every DoorCommand and
acknowledges it, and, for an OPEN_ONCE carried out, reports the door's DoorEvents like a real
lock: opened at once, closed after open_ms (each with the next txn_seq; the switch journals
them and answers DoorEventAck). A demo or a test runs it until `stop()`:

    door = DoorTerminal(host, port, terminal_id, key, DoorControl(readers={1}))
    trio.run(door.run)          # in a thread: door.stop() from any thread ends it
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Final

import trio

from protocols import limits as wire
from protocols import ocp
from terminals_sim import limits
from terminals_sim._door_control import DoorControl
from terminals_sim._errors import SimError

_POLL_SECONDS: Final = 0.2
"""How often the task looks at `stop()` and its heartbeat clock while nothing arrives."""
_SIGN_ON_SECONDS: Final = 10.0
_CLOSING_CODES: Final = frozenset(
    int(code) for code, info in ocp.CODE_INFO.items() if info.closes_connection
)


def _now_ms() -> int:
    return int(time.time() * 1000)


class DoorTerminal:
    """A door controller that obeys the switch's door commands."""

    def __init__(self, host: str, port: int, terminal_id: int, key: bytes,
                 control: DoorControl | None = None, *, events: bool = True) -> None:
        self.host, self.port = host, port
        self.terminal_id = terminal_id
        self._key = key
        self.control = control or DoorControl()
        self.events = events
        """Report DoorEvents (opened, closed) for each OPEN_ONCE carried out."""
        self.signed_on = threading.Event()
        self.acks = 0
        self.events_acked = 0
        self._stop = threading.Event()
        self._txn_seq = 0
        self._conn = ocp.Connection(ocp.Role.TERMINAL)
        self._stream: trio.SocketStream | None = None

    def stop(self) -> None:
        """End the run (from any thread): sign off and close."""
        self._stop.set()

    async def run(self) -> None:
        with trio.fail_after(_SIGN_ON_SECONDS):
            heartbeat_s = await self._sign_on()
        # Command ids are unique within a session only (protocol.md 4.5): forget the last
        # session's before the first command of this one (a mode hold follows the sign-on).
        self.control.new_session()
        self.signed_on.set()
        last_sent = trio.current_time()
        closing: list[tuple[float, int]] = []  # (when, reader_no): a CLOSED event due
        try:
            while not self._stop.is_set():
                now = trio.current_time()
                for due in [c for c in closing if c[0] <= now]:
                    closing.remove(due)
                    await self._send(self._event(due[1], ocp.DoorEventCode.CLOSED))
                    last_sent = trio.current_time()
                if now - last_sent >= heartbeat_s / 2:
                    await self._send(ocp.Heartbeat(_now_ms()))
                    last_sent = trio.current_time()
                ev = None
                with trio.move_on_after(_POLL_SECONDS):
                    ev = await self._receive()
                if ev is None or type(ev) is ocp.HeartbeatAck:
                    continue
                if type(ev) is ocp.DoorEventAck:
                    self.events_acked += 1
                elif type(ev) is ocp.DoorCommand:
                    opened = len(self.control.opened)
                    ack = self.control.command(ev, now_ms=_now_ms())
                    await self._send(ack)  # at once: the lock has acted (protocol.md 4.5)
                    self.acks += 1
                    if self.events and len(self.control.opened) > opened:  # it opened now
                        reader_no, _at, open_ms = self.control.opened[-1]
                        await self._send(self._event(reader_no, ocp.DoorEventCode.OPENED))
                        closing.append((trio.current_time() + open_ms / 1000, reader_no))
                    last_sent = trio.current_time()
                elif type(ev) is ocp.Error and ev.code in _CLOSING_CODES:
                    return
            await self._send(ocp.SignOff())
        finally:
            if self._stream is not None:
                await self._stream.aclose()

    def _event(self, reader_no: int, event: int) -> ocp.DoorEvent:
        self._txn_seq += 1
        return ocp.DoorEvent(self._txn_seq, reader_no, int(event), _now_ms())

    async def _sign_on(self) -> float:
        stream = await trio.open_tcp_stream(self.host, self.port)
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self._stream = stream
        await stream.send_all(self._conn.start_sign_on(self.terminal_id, self._key,
                                                       os.urandom(wire.NONCE_BYTES)))
        ev = await self._receive()
        if type(ev) is not ocp.SignOnChallenge:
            raise SimError(f"door {self.terminal_id}: no sign-on challenge ({ev!r})")
        await self._send(ocp.SignOnConfirm(0, ocp.TerminalKind.DOOR, "onecard-sim-door"))
        ev = await self._receive()
        if type(ev) is not ocp.SignOnResult or ev.code != ocp.ResponseCode.APPROVED:
            raise SimError(f"door {self.terminal_id}: sign-on refused ({ev!r})")
        self._txn_seq = ev.last_txn_seq
        return float(ev.heartbeat_interval_s)

    async def _send(self, msg: Any) -> None:
        assert self._stream is not None
        await self._stream.send_all(self._conn.send(msg))

    async def _receive(self) -> Any:
        assert self._stream is not None
        while True:
            ev = self._conn.next_event()
            if ev is ocp.NEED_DATA:
                self._conn.receive_data(await self._stream.receive_some(limits.RECEIVE_BYTES_MAX))
                continue
            if ev is ocp.CLOSED:
                raise SimError(f"door {self.terminal_id}: the switch closed the connection")
            return ev
