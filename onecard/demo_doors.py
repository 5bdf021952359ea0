"""What moves while `onecard demo --serve` runs, besides the purchase trickle: door traffic with
alarms for the security desk, and a till that buys with every card issued during the demo.

`TerminalSession` is one terminal's OCP session to the switch (signed on with the key derived
from the master secret, a heartbeat while idle, answers matched to requests by txn_seq).
Anything the switch sends unasked goes to its `on_message` (a door command, when the switch
has one); the sessions stay open for the whole demo, reachable in `DoorTrickle.controllers`.

`DoorTrickle` plays the doors of onecard/demo_access_seed.py: a card at a random reader every
PASS_EVERY_SECONDS (the door opens and closes when it is granted; the server room refuses
students, a few cards are unknown), and an alarm FIRST_ALARM_SECONDS after the start and then
every ALARM_EVERY_SECONDS, in turn a door forced open, a lost card at a door and a door held
open. A door forced or held open stays so until its alarm is acknowledged at the desk (or
ALARM_CLOSE_SECONDS passed): then it reports closed, which clears the alarm.

`WatchedTill` buys 3.50 yuan with every card of the campus issued since the demo started,
every WATCH_EVERY_SECONDS (after a refusal, every WATCH_REFUSED_SECONDS): a card the card
office issues is seen buying on the person page and the sales page, and once it is reported
lost its next purchase is refused (docs/console.md, "Try it").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Callable
from typing import Any, Final

import asyncpg

from onecard.demo_access_seed import DemoAccess, DemoDoor
from protocols import ocp
from terminals_sim import DoorControl

EV = ocp.DoorEventCode
PASS_EVERY_SECONDS: Final = 1.5
FIRST_ALARM_SECONDS: Final = 10.0
ALARM_EVERY_SECONDS: Final = 60.0
ALARM_CLOSE_SECONDS: Final = 15 * 60.0
OPEN_SECONDS: Final = 2.0
"""A granted door stays open this long, then reports closed."""
HEARTBEAT_SECONDS: Final = 20.0
WATCH_EVERY_SECONDS: Final = 2.0
WATCH_REFUSED_SECONDS: Final = 30.0
WATCH_AMOUNT_FEN: Final = 350
WATCH_CARDS_MAX: Final = 20
UNKNOWN_CARD_SHARE: Final = 0.02
RECEIVED_KEPT: Final = 100


class TerminalSession(asyncio.Protocol):
    """One terminal's session: sign-on, requests answered by txn_seq, heartbeats."""

    def __init__(self, terminal_id: int, key: bytes, *, app: str = "demo",
                 on_message: Callable[[TerminalSession, Any], None] | None = None) -> None:
        self.terminal_id = terminal_id
        self.key = key
        self.app = app
        self.on_message = on_message
        """Called with what the switch sends unasked (not an answer to a request)."""
        self.conn = ocp.Connection(ocp.Role.TERMINAL)
        self.transport: Any = None
        self.txn_seq = 0
        self.signed_on: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.Event()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._heartbeat: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, host: str, port: int, terminal_id: int, key: bytes,
                   **kwargs: Any) -> TerminalSession:
        loop = asyncio.get_running_loop()
        _, session = await loop.create_connection(lambda: cls(terminal_id, key, **kwargs),
                                                  host, port)
        async with asyncio.timeout(60):
            await session.signed_on
        return session

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.conn.start_sign_on(self.terminal_id, self.key, os.urandom(16)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if not self.signed_on.done():
            self.signed_on.set_exception(ConnectionError(f"terminal {self.terminal_id} lost"))
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"terminal {self.terminal_id} lost"))
        self._waiting.clear()

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        while (ev := self.conn.next_event()) is not ocp.NEED_DATA and ev is not ocp.CLOSED:
            if isinstance(ev, ocp.SignOnChallenge):
                self.transport.write(self.conn.send(ocp.SignOnConfirm(self.txn_seq, 1, self.app)))
            elif isinstance(ev, ocp.SignOnResult):
                if ev.code != 0:
                    self.signed_on.set_exception(ConnectionError(
                        f"terminal {self.terminal_id}: sign-on refused ({ev.code})"))
                    return
                self.txn_seq = max(self.txn_seq, ev.last_txn_seq)
                self._heartbeat = asyncio.get_running_loop().create_task(self._beat())
                if not self.signed_on.done():
                    self.signed_on.set_result(None)
            elif isinstance(ev, ocp.HeartbeatAck):
                pass
            elif (waiter := self._waiting.pop(getattr(ev, "txn_seq", -1), None)) is not None:
                if not waiter.done():
                    waiter.set_result(ev)
            elif self.on_message is not None:
                self.on_message(self, ev)

    async def _beat(self) -> None:
        while not self.closed.is_set():
            await asyncio.sleep(HEARTBEAT_SECONDS)
            self.transport.write(self.conn.send(ocp.Heartbeat(int(time.time() * 1000))))

    def next_seq(self) -> int:
        self.txn_seq += 1
        return self.txn_seq

    async def request(self, msg: Any) -> Any:
        """Send `msg` (with a txn_seq from next_seq()) and wait for its answer."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[msg.txn_seq] = waiter
        try:
            self.transport.write(self.conn.send(msg))
            async with asyncio.timeout(30):
                return await waiter
        finally:
            self._waiting.pop(msg.txn_seq, None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class DoorTrickle:
    """Door controllers signed on for the demo's life, passes and alarms (module text)."""

    def __init__(self, host: str, port: int, master: bytes, dsn: str, access: DemoAccess,
                 cards: list[int], lost_cards: list[int], *, seed: int = 7) -> None:
        self.host, self.port, self.master, self.dsn = host, port, master, dsn
        self.access = access
        self.cards = cards
        self.lost_cards = lost_cards
        self.rnd = random.Random(seed)
        self.controllers: dict[int, TerminalSession] = {}
        """Terminal id -> its open session (the door simulator a switch command reaches)."""
        self.doors = {d.terminal_id: d for d in access.doors}
        self.held: dict[int, float] = {}
        """Door id -> when it was forced or held open (until its alarm is acknowledged)."""
        self.opening: set[int] = set()
        self.passes = 0
        self.alarms = 0
        self.received: list[tuple[int, Any]] = []
        """(terminal id, message) the switch sent a controller unasked, latest RECEIVED_KEPT."""
        self.control: dict[int, DoorControl] = {}
        """Terminal id -> its simulated lock (the held mode and the commands carried out)."""
        self._control_session: dict[int, TerminalSession] = {}
        """Terminal id -> the session its lock last took a command on (a new one: new ids)."""
        self._doors_moving: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        sessions = await asyncio.gather(*(
            TerminalSession.open(self.host, self.port, d.terminal_id,
                                 ocp.derive_terminal_key(self.master, d.terminal_id, 1),
                                 app="demo door", on_message=self._received)
            for d in self.access.doors))
        self.controllers = {s.terminal_id: s for s in sessions}
        # Each controller tells its door's state once signed on: closed (the desk shows it).
        await asyncio.gather(*(self._event(d, EV.CLOSED) for d in self.access.doors))

    def _received(self, session: TerminalSession, msg: Any) -> None:
        self.received = [*self.received[-(RECEIVED_KEPT - 1):], (session.terminal_id, msg)]
        if not isinstance(msg, ocp.DoorCommand):
            return
        # The security desk's command (Open once, Lock, Free passage, Normal): carried out by
        # the simulated lock (terminals_sim.DoorControl) and acknowledged; an opening is
        # reported like a pass's, opened and then closed.
        control = self.control.setdefault(session.terminal_id, DoorControl({1, 2}))
        if self._control_session.get(session.terminal_id) is not session:
            # A new sign-on: command ids are unique within a session only (protocol.md 4.5).
            control.new_session()
            self._control_session[session.terminal_id] = session
        opened = len(control.opened)
        ack = control.command(msg, now_ms=int(time.time() * 1000))
        session.transport.write(session.conn.send(ack))
        door = self.doors.get(session.terminal_id)
        if (door is not None and len(control.opened) > opened
                and door.door_id not in self.opening
                and door.door_id not in self.held):
            self.opening.add(door.door_id)
            task = asyncio.get_running_loop().create_task(self._open_and_close(door))
            self._doors_moving.add(task)
            task.add_done_callback(self._doors_moving.discard)

    def close(self) -> None:
        for task in self._doors_moving:
            task.cancel()
        for s in self.controllers.values():
            s.close()

    async def run(self) -> None:
        """Passes, alarms and closings until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._passes())
            tg.create_task(self._alarms())
            tg.create_task(self._closings())

    def _live(self, door: DemoDoor) -> TerminalSession | None:
        session = self.controllers.get(door.terminal_id)
        return None if session is None or session.closed.is_set() else session

    async def _event(self, door: DemoDoor, event: int) -> None:
        session = self._live(door)
        if session is not None:
            await session.request(ocp.DoorEvent(session.next_seq(), 1, event,
                                                int(time.time() * 1000)))

    async def _passes(self) -> None:
        while True:
            await asyncio.sleep(PASS_EVERY_SECONDS * (0.5 + self.rnd.random()))
            with contextlib.suppress(TimeoutError, ConnectionError):  # a slow answer: go on
                await self._pass()

    async def _pass(self) -> None:
        free = [d for d in self.access.doors
                if d.door_id not in self.held and d.door_id not in self.opening]
        if not free:
            return
        # The server room is one door of eleven (mostly refused: students).
        door = self.rnd.choice(free)
        session = self._live(door)
        if session is None:
            return
        card = (9_000_000_000_000 + self.rnd.randrange(1_000_000)
                if self.rnd.random() < UNKNOWN_CARD_SHARE else self.rnd.choice(self.cards))
        answer = await session.request(ocp.AccessRequest(
            session.next_seq(), self.rnd.choice((1, 2)), 0, 1, card))
        self.passes += 1
        if answer.code == 0:
            self.opening.add(door.door_id)
            task = asyncio.get_running_loop().create_task(self._open_and_close(door))
            self._doors_moving.add(task)
            task.add_done_callback(self._doors_moving.discard)

    async def _open_and_close(self, door: DemoDoor) -> None:
        try:
            with contextlib.suppress(TimeoutError, ConnectionError):
                await self._event(door, EV.OPENED)
                await asyncio.sleep(OPEN_SECONDS)
                await self._event(door, EV.CLOSED)
        finally:
            self.opening.discard(door.door_id)

    async def _alarms(self) -> None:
        await asyncio.sleep(FIRST_ALARM_SECONDS)
        turn = 0
        while True:
            with contextlib.suppress(TimeoutError, ConnectionError):
                turn = await self._alarm(turn)
            await asyncio.sleep(ALARM_EVERY_SECONDS)

    async def _alarm(self, turn: int) -> int:
        """One alarm of kind `turn` % 3 at a door without one; returns the next turn."""
        free = [d for d in self.access.doors
                if d.door_id not in self.held and d.door_id not in self.opening]
        if not free:
            return turn
        door = self.rnd.choice(free)
        kind = turn % 3
        if kind == 1 and self.lost_cards:
            session = self._live(door)
            if session is not None:
                await session.request(ocp.AccessRequest(
                    session.next_seq(), 1, 0, 1, self.rnd.choice(self.lost_cards)))
        else:
            self.held[door.door_id] = time.monotonic()
            await self._event(door, EV.FORCED_OPEN if kind == 0 else EV.HELD_OPEN)
        self.alarms += 1
        return turn + 1

    async def _closings(self) -> None:
        """Doors forced or held open report closed once their alarm is acknowledged."""
        conn = await asyncpg.connect(self.dsn)
        try:
            by_id = {d.door_id: d for d in self.access.doors}
            while True:
                await asyncio.sleep(1.0)
                if not self.held:
                    continue
                acked = {r["door_id"] for r in await conn.fetch(
                    "SELECT DISTINCT door_id FROM access_alarms WHERE door_id = ANY($1::int[])"
                    " AND state = 'acknowledged' AND kind IN ('forced_open', 'held_open')",
                    list(self.held))}
                now = time.monotonic()
                for door_id, since in list(self.held.items()):
                    if door_id in acked or now - since > ALARM_CLOSE_SECONDS:
                        with contextlib.suppress(TimeoutError, ConnectionError):
                            await self._event(by_id[door_id], EV.CLOSED)
                            del self.held[door_id]
        finally:
            await conn.close()


class WatchedTill:
    """A till buying with the cards issued since the demo started (module text)."""

    def __init__(self, host: str, port: int, master: bytes, dsn: str, terminal_id: int,
                 tenant_id: int = 1) -> None:
        self.host, self.port, self.master, self.dsn = host, port, master, dsn
        self.terminal_id = terminal_id
        self.tenant_id = tenant_id
        self.session: TerminalSession | None = None
        self.next_at: dict[int, float] = {}
        self.answers: dict[int, int] = {}
        """Card -> the code of its latest purchase."""

    async def run(self) -> None:
        self.session = await TerminalSession.open(
            self.host, self.port, self.terminal_id,
            ocp.derive_terminal_key(self.master, self.terminal_id, 1), app="demo till")
        conn = await asyncpg.connect(self.dsn)
        try:
            since = await conn.fetchval("SELECT now()")
            while True:
                await asyncio.sleep(WATCH_EVERY_SECONDS)
                cards = [r["card_no"] for r in await conn.fetch(
                    "SELECT c.card_no FROM cards c JOIN accounts a ON a.id = c.account_id"
                    " WHERE a.tenant_id = $1 AND c.issued_at >= $2"
                    " ORDER BY c.issued_at DESC LIMIT $3", self.tenant_id, since,
                    WATCH_CARDS_MAX)]
                now = time.monotonic()
                for card in cards:
                    if self.next_at.get(card, 0.0) > now:
                        continue
                    s = self.session
                    try:
                        answer = await s.request(ocp.Purchase(
                            s.next_seq(), card, WATCH_AMOUNT_FEN, int(time.time() * 1000)))
                    except (TimeoutError, ConnectionError):
                        continue  # slow, or the switch went away: the next round tries again
                    self.answers[card] = answer.code
                    self.next_at[card] = now + (WATCH_REFUSED_SECONDS if answer.code else 0.0)
        finally:
            await conn.close()
            if self.session is not None:
                self.session.close()


async def cancel_quietly(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
