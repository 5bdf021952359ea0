"""A bank host simulator (trio): the host side of docs/bank-link.md over real TCP.

    host = BankHost(kek, balances={"TOK-1": 100_000})
    async with trio.open_nursery() as nursery:
        port = await nursery.start(host.serve, 0)       # listens on 127.0.0.1:port

or, from a thread-less caller (tests, the demo, asyncio code), `BankHostThread`:

    with BankHostThread(kek) as sim:                     # trio.run in a thread
        sim.host.set_behaviour("decline", field39="51")  # plain attribute writes: thread-safe
        sim.call(sim.host.cutover, date)                 # anything that writes to sockets

It keeps a balance per bank card token, signs on connections, takes key exchanges (the new MAC
key unwrapped under the KEK), answers echoes, top-ups (0200) and reversal advices (0420/0421),
and can be told, per card or for all, to approve, decline with a field 39, delay, drop the
connection after debiting, answer after the switch's timeout (`late`), answer twice, answer
with a frame that cannot be parsed after debiting (`garbage`: a byte after the last field), or
not answer at all. `restart()` drops every connection and forgets the MAC keys, as a bank restarting
would; balances, top-ups and advices survive it. Everything received is recorded, bad input
with its reason; `write_daily_file()` writes the bank's daily top-up file (docs/bank-link.md,
"The bank's daily top-up file").
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio

from protocols import iso8583

ACTIONS: Final = ("approve", "decline", "delay", "drop", "late", "twice", "silent", "garbage")
ADVICE_ACTIONS: Final = ("ack", "silent", "drop")
DAILY_FILE_HEADER: Final = ("business_date,rrn,stan,terminal_id,card_token,amount_fen,field39,"
                            "auth_code")
RECEIVE_BYTES: Final = 65536
RECORDED_MAX: Final = 100_000
"""Messages, bad-input reasons and advices kept for inspection (the newest); top-ups are kept
by RRN for the daily file and for reversals."""


@dataclass(frozen=True)
class Behaviour:
    action: str = "approve"
    field39: str = "05"
    """The decline's code (action "decline")."""
    delay_seconds: float = 0.0
    """How long to wait before answering (actions "delay" and "late")."""


@dataclass
class TopupRecord:
    business_date: dt.date
    request: iso8583.TopupRequest
    field39: str
    auth_code: str
    reversed: bool = False


@dataclass
class _Peer:
    stream: trio.SocketStream
    conn: iso8583.Connection
    signed_on: bool = False
    send_lock: trio.Lock = field(default_factory=trio.Lock)
    outbox: bytearray | None = None
    """While a received chunk is being drained: answers to write when it is done."""


class BankHost:
    def __init__(self, kek: bytes, *, balances: dict[str, int] | None = None,
                 default_balance_fen: int | None = None, late_seconds: float = 3.0,
                 business_date: dt.date | None = None) -> None:
        if len(kek) != iso8583.limits.KEK_BYTES:
            raise ValueError("the KEK is 32 bytes")
        self._kek = kek
        self.keys = iso8583.MacKeys()
        self.balances: dict[str, int] = dict(balances or {})
        self.default_balance_fen = default_balance_fen
        self.late_seconds = late_seconds
        self.business_date = business_date or dt.datetime.now(dt.UTC).date()
        self.default = Behaviour()
        self.per_card: dict[str, Behaviour] = {}
        self.advice_action = "ack"
        self.refuse_connections = False
        self.received: collections.deque[iso8583.Message] = collections.deque(
            maxlen=RECORDED_MAX)
        self.bad_input: collections.deque[str] = collections.deque(maxlen=RECORDED_MAX)
        """The reason of every message refused (Iso8583RemoteError.reason)."""
        self.topups: dict[str, TopupRecord] = {}
        """By RRN."""
        self.advices: collections.deque[iso8583.ReversalAdvice] = collections.deque(
            maxlen=RECORDED_MAX)
        self.advice_tombstones: set[str] = set()
        """RRNs reversed before any top-up was seen: a late 0200 with one is declined (94)."""
        self.connections_accepted = 0
        self._peers: list[_Peer] = []
        self._auth_counter = 0
        self._network_stan = 0
        self._lock = threading.Lock()

    # -- control (plain writes: safe from any thread) ---------------------------------------

    def set_behaviour(self, action: str, *, card: str | None = None, field39: str = "05",
                      delay_seconds: float = 0.0) -> None:
        """How to answer top-ups: for one card token, or for all (`card=None`)."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}")
        if action == "decline" and field39 not in iso8583.FIELD39 and len(field39) != 2:
            raise ValueError(f"field39 {field39!r}")
        behaviour = Behaviour(action, field39, delay_seconds)
        if card is None:
            self.default = behaviour
            self.per_card.clear()
        else:
            self.per_card[card] = behaviour

    def set_advice_action(self, action: str) -> None:
        if action not in ADVICE_ACTIONS:
            raise ValueError(f"advice action must be one of {ADVICE_ACTIONS}")
        self.advice_action = action

    @property
    def signed_on_connections(self) -> int:
        return sum(1 for p in self._peers if p.signed_on)

    def received_of(self, cls: type[Any]) -> list[Any]:
        """The messages of one type received so far (safe from another thread)."""
        while True:
            try:
                messages = list(self.received)
            except RuntimeError:  # appended to meanwhile by the simulator's thread
                continue
            return [m for m in messages if type(m) is cls]

    # -- control that touches sockets (call inside trio: BankHostThread.call) --------------

    async def restart(self) -> None:
        """Drop every connection and forget the MAC keys, as a restarting bank would."""
        self.keys.clear()
        await self.drop_connections()

    async def drop_connections(self) -> None:
        for peer in list(self._peers):
            await peer.stream.aclose()
        self._peers.clear()

    async def send_raw(self, data: bytes) -> int:
        """Write `data` as is to every signed-on connection (bad-input tests); how many."""
        peers = [p for p in self._peers if p.signed_on]
        for peer in peers:
            async with peer.send_lock:
                await peer.stream.send_all(data)
        return len(peers)

    async def send(self, msg: iso8583.Message) -> int:
        """Encode `msg` (MAC'd under the bank's current key when financial) and send it to
        every signed-on connection."""
        return await self.send_raw(iso8583.encode_frame(msg, now=_now(), keys=self.keys))

    async def cutover(self, business_date: dt.date) -> int:
        """Start a business day here and tell the switch (0800 cutover on every connection)."""
        self.business_date = business_date
        return await self.send(iso8583.NetworkRequest(
            code=iso8583.NetworkCode.CUTOVER, stan=self._next_network_stan(),
            business_date=business_date))

    async def echo(self) -> int:
        return await self.send(iso8583.NetworkRequest(
            code=iso8583.NetworkCode.ECHO, stan=self._next_network_stan()))

    # -- the daily file --------------------------------------------------------------------

    def daily_lines(self, business_date: dt.date) -> list[str]:
        lines = [DAILY_FILE_HEADER]
        for rrn in sorted(self.topups):
            rec = self.topups[rrn]
            if rec.business_date != business_date or rec.reversed or rec.field39 != "00":
                continue
            req = rec.request
            lines.append(",".join((
                business_date.isoformat(), req.rrn, f"{req.stan:06d}", str(req.terminal_id),
                req.card_token, str(req.amount_fen), rec.field39, rec.auth_code)))
        return lines

    def write_daily_file(self, path: str | Path, business_date: dt.date) -> int:
        """The bank's top-up file of one business day: header, one line per approved top-up
        not reversed, UTF-8, LF. Returns the number of top-up lines."""
        lines = self.daily_lines(business_date)
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
        return len(lines) - 1

    # -- serving ---------------------------------------------------------------------------

    async def serve(self, port: int, host: str = "127.0.0.1", *,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(bound)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, stream: trio.SocketStream) -> None:
        if self.refuse_connections:
            await stream.aclose()
            return
        self.connections_accepted += 1
        peer = _Peer(stream, iso8583.Connection(self.keys))
        self._peers.append(peer)
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        data = await stream.receive_some(RECEIVE_BYTES)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""
                    peer.conn.receive_data(data)
                    if not await self._drain(peer, nursery):
                        break
                nursery.cancel_scope.cancel()
        finally:
            if peer in self._peers:
                self._peers.remove(peer)
            await stream.aclose()

    async def _drain(self, peer: _Peer, nursery: trio.Nursery) -> bool:
        """Take every whole message buffered; False when the connection is to be closed.
        Immediate answers to top-ups are written together, once the buffer is drained."""
        peer.outbox = bytearray()
        try:
            while True:
                try:
                    ev = peer.conn.next_event()
                except iso8583.Iso8583RemoteError as exc:
                    self.bad_input.append(exc.reason)
                    if exc.closes_connection:
                        return False
                    continue
                if ev is iso8583.NEED_DATA:
                    return True
                if ev is iso8583.CLOSED:
                    return False
                assert not isinstance(ev, iso8583.Signal)
                self.received.append(ev)
                if not await self._on_message(peer, ev, nursery):
                    return False
        finally:
            data, peer.outbox = bytes(peer.outbox), None
            if data:
                try:
                    async with peer.send_lock:
                        await peer.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

    async def _answer(self, peer: _Peer, msg: iso8583.Message, *, delay: float = 0.0,
                      times: int = 1) -> None:
        if delay:
            await trio.sleep(delay)
        data = iso8583.encode_frame(msg, now=_now(), keys=self.keys)
        try:
            async with peer.send_lock:
                for _ in range(times):
                    await peer.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _on_message(self, peer: _Peer, msg: iso8583.Message,
                          nursery: trio.Nursery) -> bool:
        if type(msg) is iso8583.NetworkRequest:
            return await self._on_network(peer, msg)
        if type(msg) is iso8583.NetworkResponse:
            return True  # an answer to our echo or cutover
        if not peer.signed_on:
            self.bad_input.append("not_signed_on")
            return True
        if type(msg) is iso8583.TopupRequest:
            return self._on_topup(peer, msg, nursery)
        if type(msg) is iso8583.ReversalAdvice:
            return await self._on_advice(peer, msg)
        self.bad_input.append("unexpected")
        return True

    async def _on_network(self, peer: _Peer, msg: iso8583.NetworkRequest) -> bool:
        code, f39, generation = msg.code, "00", 0
        if code is iso8583.NetworkCode.SIGN_ON:
            peer.signed_on = True
        elif code is iso8583.NetworkCode.SIGN_OFF:
            peer.signed_on = False
        elif code is iso8583.NetworkCode.KEY_EXCHANGE:
            try:
                key = iso8583.unwrap_key(self._kek, msg.wrapped_key)
            except iso8583.BadKey:
                self.bad_input.append("bad_key")
                f39 = "63"
            else:
                self.keys.install(msg.key_generation, key)
                generation = msg.key_generation
        elif code is iso8583.NetworkCode.CUTOVER and msg.business_date is not None:
            self.business_date = msg.business_date
        await self._answer(peer, iso8583.NetworkResponse(
            code=code, stan=msg.stan, field39=f39, key_generation=generation,
            business_date=msg.business_date if code is iso8583.NetworkCode.CUTOVER else None))
        return True

    def _behaviour(self, token: str) -> Behaviour:
        return self.per_card.get(token, self.default)

    def _on_topup(self, peer: _Peer, req: iso8583.TopupRequest, nursery: trio.Nursery) -> bool:
        behaviour = self._behaviour(req.card_token)
        action = behaviour.action
        if action == "silent":
            return True
        f39, auth = self._decide(req, behaviour)
        answer = iso8583.TopupResponse(
            terminal_id=req.terminal_id, stan=req.stan, rrn=req.rrn, amount_fen=req.amount_fen,
            field39=f39, auth_code=auth)
        if action == "drop":
            return False  # decided (and debited when approved), the answer lost with the line
        if action == "garbage":
            # Decided (and debited when approved); the answer's frame is sound, its message is
            # not: a byte after the last field (docs/bank-link.md section 10: dropped, the
            # connection stays up).
            if peer.outbox is not None:
                peer.outbox += garble(iso8583.encode_frame(answer, now=_now(), keys=self.keys))
            return True
        delay = {"delay": behaviour.delay_seconds,
                 "late": behaviour.delay_seconds or self.late_seconds}.get(action, 0.0)
        times = 2 if action == "twice" else 1
        if delay == 0 and peer.outbox is not None:
            peer.outbox += iso8583.encode_frame(answer, now=_now(), keys=self.keys) * times
        else:
            nursery.start_soon(self._answer_later, peer, answer, delay, times)
        return True

    async def _answer_later(self, peer: _Peer, answer: iso8583.Message, delay: float,
                            times: int) -> None:
        await self._answer(peer, answer, delay=delay, times=times)

    def _decide(self, req: iso8583.TopupRequest, behaviour: Behaviour) -> tuple[str, str]:
        with self._lock:
            if req.rrn in self.topups or req.rrn in self.advice_tombstones:
                return "94", ""
            if behaviour.action == "decline":
                f39, auth = behaviour.field39, ""
            elif req.card_token not in self.balances and self.default_balance_fen is None:
                f39, auth = "14", ""
            else:
                balance = self.balances.setdefault(req.card_token, self.default_balance_fen or 0)
                if balance < req.amount_fen:
                    f39, auth = "51", ""
                else:
                    self.balances[req.card_token] = balance - req.amount_fen
                    self._auth_counter += 1
                    f39, auth = "00", f"{self._auth_counter % 1_000_000:06d}"
            self.topups[req.rrn] = TopupRecord(self.business_date, req, f39, auth)
            return f39, auth

    async def _on_advice(self, peer: _Peer, advice: iso8583.ReversalAdvice) -> bool:
        self.advices.append(advice)
        if self.advice_action == "silent":
            return True
        if self.advice_action == "drop":
            return False
        with self._lock:
            rec = self.topups.get(advice.rrn)
            if rec is None or rec.request.terminal_id != advice.terminal_id:
                self.advice_tombstones.add(advice.rrn)
                f39 = "25"
            else:
                if rec.field39 == "00" and not rec.reversed:
                    self.balances[rec.request.card_token] += rec.request.amount_fen
                rec.reversed = True
                f39 = "00"
        await self._answer(peer, iso8583.ReversalResponse(
            terminal_id=advice.terminal_id, stan=advice.stan, rrn=advice.rrn, field39=f39))
        return True

    def _next_network_stan(self) -> int:
        self._network_stan = self._network_stan % iso8583.limits.STAN_MAX + 1
        return self._network_stan


def garble(frame: bytes) -> bytes:
    """The frame with one byte more after its message's last field (its length header says
    so): framed soundly, parsed by nobody."""
    body = frame[2:] + b"\x00"
    return len(body).to_bytes(2, "big") + body


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class BankHostThread:
    """A BankHost served by trio.run in a daemon thread; for callers that are not trio."""

    def __init__(self, kek: bytes, *, port: int = 0, host: str = "127.0.0.1",
                 **options: Any) -> None:
        self.host = BankHost(kek, **options)
        self._address = (host, port)
        self.port = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bank-host", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:
                self._cancel = scope
                async with trio.open_nursery() as nursery:
                    self.port = await nursery.start(self.host.serve, self._address[1],
                                                    self._address[0])
                    self._started.set()

        try:
            trio.run(main)
        except BaseException as exc:  # reported by start()
            self._failure = exc
        finally:
            self._started.set()

    def start(self) -> BankHostThread:
        self._thread.start()
        if not self._started.wait(30) or self._failure is not None or not self.port:
            raise RuntimeError(f"bank host did not start: {self._failure!r}")
        return self

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run `await fn(*args)` in the simulator's trio thread and return its result."""
        assert self._token is not None
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def stop(self) -> None:
        if self._token is not None and self._cancel is not None and self._thread.is_alive():
            cancel = self._cancel
            trio.from_thread.run_sync(cancel.cancel, trio_token=self._token)
        self._thread.join(10)

    def __enter__(self) -> BankHostThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_bank_host(port: int, kek: bytes, *, host: str = "127.0.0.1",
                  default_balance_fen: int | None = 10_000_000,
                  on_ready: Callable[[int], None] | None = None) -> None:
    """`onecard bank-sim`: serve until interrupted."""
    bank = BankHost(kek, default_balance_fen=default_balance_fen)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(bank.serve, port, host)
            if on_ready is not None:
                on_ready(bound)

    trio.run(main)
