"""The bank link's runtime: persistent connections to the bank host (docs/bank-link.md).

    link = BankLink(BankLinkConfig(host=..., port=..., kek=...), log=log)
    await link.start()                        # or: tg.create_task(link.run()) in a supervisor
    answer = await link.authorize_topup(req)  # BankAnswer: approved | declined | unknown
    acked = await link.send_reversal_advice(advice, repeat=False)
    await link.close()

A small pool of connections (`connections`), each: connect → sign-on (0800/001) → key exchange
if the link holds no MAC key → echo every `echo_interval_seconds` → on any failure, close,
answer the connection's pending requests "unknown", and reconnect after a jittered back-off
(equal jitter: a uniform draw in [d/2, d], d doubling from `reconnect_min_seconds` to
`reconnect_max_seconds`). When every connection is down the MAC key is dropped, and the next
sign-on exchanges a new one (a restarted bank has forgotten it). The key is also rotated every
`key_exchange_interval_seconds`.

Answers are matched by (message, terminal id, STAN), never by arrival order. An answer with no
pending request is counted and dropped: `late` when its request timed out, `duplicate` when it
was answered already, `unsolicited` for a STAN never sent. None of them is ever reported as an
approval. Messages the codec refuses are counted by reason; only a frame over the size limit
closes the connection.

Purchases never wait on any of this: nothing here is on the OCP request path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import os
import random
import time
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal

import asyncpg
import msgspec
from msgspec import Meta

from protocols import iso8583
from protocols.iso8583 import ReversalAdvice, TopupRequest
from protocols.ocp import ResponseCode
from switch import _metrics as metrics
from switch._logging import get_logger

__all__ = [
    "FIELD39_RESPONSE_CODES",
    "BankAnswer",
    "BankLink",
    "BankLinkConfig",
    "ReversalAdvice",
    "TopupRequest",
    "allocate_stan_rrn",
]

PENDING_REQUESTS_MAX: Final = 10_000
"""Requests awaiting the bank's answer at once; past it a top-up is refused unsent (91)."""
RECENT_KEYS_MAX: Final = 65_536
"""Keys of requests answered or timed out, remembered to tell late and duplicate answers from
unsolicited ones."""
WRITE_BUFFER_BYTES_MAX: Final = 1 << 20
"""A bank that does not read what we write is dropped past this."""
RECEIVE_BYTES: Final = 65_536

_R = ResponseCode
FIELD39_RESPONSE_CODES: Final[dict[str, ResponseCode]] = {
    "00": _R.APPROVED,
    "05": _R.NOT_PERMITTED,
    "12": _R.NOT_PERMITTED,
    "13": _R.INVALID_AMOUNT,
    "14": _R.UNKNOWN_CARD,
    "25": _R.SYSTEM_ERROR,
    "30": _R.SYSTEM_ERROR,
    "41": _R.CARD_LOST,
    "43": _R.CARD_LOST,
    "51": _R.INSUFFICIENT_FUNDS,
    "54": _R.CARD_CANCELLED,
    "55": _R.NOT_PERMITTED,
    "57": _R.NOT_PERMITTED,
    "61": _R.TXN_LIMIT_EXCEEDED,
    "63": _R.SYSTEM_ERROR,
    "65": _R.DAILY_LIMIT_EXCEEDED,
    "91": _R.SYSTEM_ERROR,
    "94": _R.SYSTEM_ERROR,
    "96": _R.SYSTEM_ERROR,
}
"""Field 39 -> our response code (docs/bank-link.md, "Field 39"). Every code of the spec's
table has one; an outcome "unknown" is SYSTEM_ERROR."""
assert set(FIELD39_RESPONSE_CODES) == set(iso8583.FIELD39)


class BankLinkConfig(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    port: Annotated[int, Meta(ge=1, le=65535)]
    kek: Annotated[bytes, Meta(min_length=32, max_length=32)]
    connections: Annotated[int, Meta(ge=1, le=8)] = 1
    response_timeout_seconds: Annotated[float, Meta(gt=0, le=120)] = 5.0
    echo_interval_seconds: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    key_exchange_interval_seconds: Annotated[float, Meta(gt=0, le=86_400)] = 3600.0
    connect_timeout_seconds: Annotated[float, Meta(gt=0, le=120)] = 5.0
    reconnect_min_seconds: Annotated[float, Meta(gt=0, le=60)] = 0.5
    reconnect_max_seconds: Annotated[float, Meta(gt=0, le=600)] = 30.0

    def __repr__(self) -> str:
        return (f"BankLinkConfig(host={self.host!r}, port={self.port}, kek=<secret>, "
                f"connections={self.connections})")


Outcome = Literal["approved", "declined", "unknown"]


class BankAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """What became of a top-up request.

    `approved`: the bank debited the bank card (field 39 00): credit the wallet.
    `declined`: the bank moved nothing (field 39 in the table, not 00; or the request was
    never sent, `sent` false, field 39 "91").
    `unknown`: sent, and no valid answer in time (timeout, link lost, an answer that does not
    match or carries a code outside the table): credit nothing, store a reversal advice.
    """

    outcome: Outcome
    field39: str
    """The bank's code ("" when none arrived)."""
    response_code: int
    """Ours (FIELD39_RESPONSE_CODES; SYSTEM_ERROR when unknown)."""
    auth_code: str = ""
    reason: str = ""
    sent: bool = True


async def allocate_stan_rrn(conn: asyncpg.Connection) -> tuple[int, str]:
    """A STAN unique for today (UTC) and an RRN unique forever, from PostgreSQL (migration
    0011): they survive restarts. Raises asyncpg's CheckViolationError past 999,999 a day."""
    row = await conn.fetchrow("SELECT stan, rrn FROM bank_next_stan_rrn()")
    assert row is not None
    return int(row["stan"]), str(row["rrn"])


class _LinkDown(Exception):
    """Ends one connection's life: it is closed and reconnected."""


class _Pending:
    __slots__ = ("future", "label", "request", "sent_at", "slot")

    def __init__(self, future: asyncio.Future[Any], slot: _Slot, label: str,
                 request: iso8583.Message) -> None:
        self.future = future
        self.slot = slot
        self.label = label
        self.request = request
        self.sent_at = time.perf_counter()


class _Slot:
    """One connection of the pool."""

    __slots__ = ("conn", "index", "out", "signed_on", "writer")

    def __init__(self, index: int) -> None:
        self.index = index
        self.conn: iso8583.Connection | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.signed_on = False
        self.out = bytearray()
        """Frames written in this turn of the event loop: one socket write per turn."""


_Key = tuple[str, int, int]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class BankLink:
    def __init__(self, config: BankLinkConfig, *, log: Any = None,
                 on_cutover: Callable[[dt.date], None] | None = None) -> None:
        self.config = config
        self.log = log if log is not None else get_logger()
        self.on_cutover = on_cutover
        self.keys = iso8583.MacKeys()
        self.business_date: dt.date | None = None
        self._slots = [_Slot(i) for i in range(config.connections)]
        self._pending: dict[_Key, _Pending] = {}
        self._recent: collections.OrderedDict[_Key, str] = collections.OrderedDict()
        self._network_stan = 0
        self._next_slot = 0
        self._generation = 0
        self._task: asyncio.Task[None] | None = None
        self._key_lock = asyncio.Lock()

    # -- public ------------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """True while a connection is signed on and a MAC key is in force."""
        return self.keys.current is not None and any(s.signed_on for s in self._slots)

    async def start(self) -> None:
        """Run the link in a task of its own (for callers without a supervisor)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="bank-link")

    async def sign_off(self) -> None:
        """Sign every connection off (0800/002, each waiting at most the response timeout):
        nothing new is sent on them; the connections stay open until close() or the end of
        run()."""
        for slot in [s for s in self._slots if s.signed_on]:
            slot.signed_on = False  # nothing new on it
            answer = await self._network(slot, iso8583.NetworkCode.SIGN_OFF)
            self.log.info("bank.signed_off", connection=slot.index,
                          answered=answer is not None)
        self._gauges()

    async def close(self) -> None:
        """Sign off, then close every connection and stop."""
        await self.sign_off()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._down_all()

    async def wait_available(self) -> None:
        """Return once the link is available (the caller sets the deadline)."""
        while not self.available:  # noqa: ASYNC110 - a state of several sockets; polled
            await asyncio.sleep(0.01)

    def set_pending_advices(self, count: Callable[[], float]) -> None:
        """The top-up flow tells the gauge onecard_bank_pending_advices how to count."""
        metrics.bank_pending_advices.set_function(count)

    async def authorize_topup(self, req: TopupRequest) -> BankAnswer:
        """Send the 0200 and wait (at most response_timeout_seconds) for its 0210."""
        key: _Key = ("topup", req.terminal_id, req.stan)
        refused = self._refuse(key)
        if refused is not None:
            return refused
        why: list[str] = []
        answer = await self._request(self._pick(), req, key, "topup", why=why)
        if answer is None:
            # The advice's reason (switch/_topup.py): "link_down" or "timeout".
            reason = ("connection lost before the answer" if why == ["link_down"]
                      else "no answer in time")
            return BankAnswer(outcome="unknown", field39="", reason=reason,
                              response_code=int(_R.SYSTEM_ERROR))
        assert type(answer) is iso8583.TopupResponse
        if answer.rrn != req.rrn or answer.amount_fen != req.amount_fen:
            self.log.warning("bank.answer_mismatch", terminal_id=req.terminal_id, stan=req.stan)
            return BankAnswer(outcome="unknown", field39=answer.field39,
                              reason="answer does not match the request",
                              response_code=int(_R.SYSTEM_ERROR))
        info = iso8583.FIELD39.get(answer.field39)
        if info is None:
            self.log.warning("bank.unknown_field39", field39=answer.field39)
            return BankAnswer(outcome="unknown", field39=answer.field39,
                              reason="field 39 not in the spec",
                              response_code=int(_R.SYSTEM_ERROR))
        outcome: Outcome = "approved" if info.outcome == "approved" else "declined"
        return BankAnswer(outcome=outcome, field39=answer.field39,
                          response_code=int(FIELD39_RESPONSE_CODES[answer.field39]),
                          auth_code=answer.auth_code,
                          reason=answer.reason or ("" if outcome == "approved" else info.meaning))

    async def send_reversal_advice(self, advice: ReversalAdvice, *, repeat: bool) -> bool:
        """Send the 0420 (or 0421 when `repeat`); True when the bank acknowledged it (0430
        with field 39 00 or 25). False: not sent, or no acknowledgement in time; repeat later."""
        key: _Key = ("reversal", advice.terminal_id, advice.stan)
        if self._refuse(key) is not None:
            return False
        msg = msgspec.structs.replace(advice, repeat=repeat)
        answer = await self._request(self._pick(), msg, key, "reversal")
        return (type(answer) is iso8583.ReversalResponse
                and answer.rrn == advice.rrn
                and answer.field39 in iso8583.ADVICE_ACKNOWLEDGED)

    async def cutover(self, business_date: dt.date) -> bool:
        """Tell the bank that `business_date` starts now (0800/201); True when it answered 00."""
        if not self.available:
            return False
        answer = await self._network(self._pick(), iso8583.NetworkCode.CUTOVER,
                                     business_date=business_date)
        if answer is not None and answer.field39 == iso8583.APPROVED:
            self.business_date = business_date
            return True
        return False

    def state(self) -> dict[str, object]:
        """For /readyz: plain reads."""
        return {"available": self.available,
                "connections": sum(1 for s in self._slots if s.signed_on),
                "pending": len(self._pending)}

    # -- requests ----------------------------------------------------------------------------

    def _refuse(self, key: _Key) -> BankAnswer | None:
        reason = None
        if not self.available:
            reason = "bank link unavailable"
        elif len(self._pending) >= PENDING_REQUESTS_MAX:
            reason = "too many requests pending at the bank"
        elif key in self._pending:
            raise ValueError(f"{key[0]} with terminal {key[1]} STAN {key[2]} is already pending")
        if reason is None:
            return None
        return BankAnswer(outcome="declined", field39="91", reason=reason, sent=False,
                          response_code=int(FIELD39_RESPONSE_CODES["91"]))

    def _pick(self) -> _Slot:
        up = [s for s in self._slots if s.signed_on]
        if not up:
            raise _LinkDown("no connection signed on")
        self._next_slot = (self._next_slot + 1) % len(up)
        return up[self._next_slot]

    async def _request(self, slot: _Slot, msg: iso8583.Message, key: _Key,
                       label: str, *, why: list[str] | None = None
                       ) -> iso8583.Message | None:
        """Write `msg` on `slot` and wait for the answer matched to `key`; None on timeout or
        when the connection went down first (`why` gets "timeout" or "link_down")."""
        why = [] if why is None else why
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[key] = _Pending(future, slot, label, msg)
        try:
            try:
                self._write(slot, msg)
            except (_LinkDown, OSError, iso8583.Iso8583LocalError) as exc:
                self.log.warning("bank.write_failed", message=label, error=str(exc))
                why.append("link_down")
                return None
            async with asyncio.timeout(self.config.response_timeout_seconds):
                return await future
        except TimeoutError:
            metrics.bank_timeouts_total.labels(label).inc()
            self.log.warning("bank.timeout", message=label, terminal_id=key[1], stan=key[2])
            self._remember(key, "late")
            why.append("timeout")
            return None
        except _LinkDown:
            self._remember(key, "late")
            why.append("link_down")
            return None
        finally:
            self._pending.pop(key, None)

    def _write(self, slot: _Slot, msg: iso8583.Message) -> None:
        """Queue `msg` on `slot`; the frames queued in one turn of the loop go out in one
        write (a syscall per top-up cost more than its encoding)."""
        writer, conn = slot.writer, slot.conn
        if writer is None or conn is None or writer.is_closing():
            raise _LinkDown("connection closed")
        if writer.transport.get_write_buffer_size() > WRITE_BUFFER_BYTES_MAX:
            writer.transport.abort()
            raise _LinkDown("the bank does not read")
        if not slot.out:
            asyncio.get_running_loop().call_soon(self._flush, slot, writer)
        slot.out += conn.send(msg, now=_utcnow())

    @staticmethod
    def _flush(slot: _Slot, writer: asyncio.StreamWriter) -> None:
        data = bytes(slot.out)
        slot.out.clear()
        if slot.writer is writer and not writer.is_closing():
            writer.write(data)

    def _remember(self, key: _Key, what: str) -> None:
        self._recent[key] = what
        self._recent.move_to_end(key)
        while len(self._recent) > RECENT_KEYS_MAX:
            self._recent.popitem(last=False)

    def _next_stan(self) -> int:
        self._network_stan = self._network_stan % iso8583.limits.STAN_MAX + 1
        return self._network_stan

    async def _network(self, slot: _Slot, code: iso8583.NetworkCode,
                       **fields: Any) -> iso8583.NetworkResponse | None:
        stan = self._next_stan()
        msg = iso8583.NetworkRequest(code=code, stan=stan, **fields)
        answer = await self._request(slot, msg, ("network", slot.index, stan), "network")
        assert answer is None or type(answer) is iso8583.NetworkResponse
        return answer

    async def _exchange_key(self, slot: _Slot, *, only_if_missing: bool = False) -> None:
        """A fresh MAC key, wrapped under the KEK, to the bank; in force once it says 00.
        `only_if_missing`: unless another connection installed one meanwhile."""
        async with self._key_lock:
            if only_if_missing and self.keys.current is not None:
                return
            key = os.urandom(iso8583.limits.MAC_KEY_BYTES)
            generation = max(self._generation + 1, int(time.time()))
            # The bank MACs its answers under the new key as soon as it has it, maybe before
            # its 0810 reaches us: accept that key from now on, send under it after the 0810.
            self.keys.install(generation, key, current=False)
            answer = await self._network(
                slot, iso8583.NetworkCode.KEY_EXCHANGE, key_generation=generation,
                wrapped_key=iso8583.wrap_key(self.config.kek, key))
            if answer is None or answer.field39 != iso8583.APPROVED:
                raise _LinkDown(f"key exchange refused ({answer and answer.field39})")
            self._generation = generation
            self.keys.install(generation, key)
            metrics.bank_key_exchanges_total.inc()
            self.log.info("bank.key_exchanged", generation=generation)
            self._gauges()

    # -- connections -------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep every connection of the pool up until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                for slot in self._slots:
                    tg.create_task(self._keep_up(slot), name=f"bank-link-{slot.index}")
                tg.create_task(self._rotate_keys(), name="bank-key-rotation")
        finally:
            self._down_all()

    async def _rotate_keys(self) -> None:
        while True:
            await asyncio.sleep(self.config.key_exchange_interval_seconds)
            up = [s for s in self._slots if s.signed_on]
            if up:
                with contextlib.suppress(_LinkDown):
                    await self._exchange_key(up[0])

    async def _keep_up(self, slot: _Slot) -> None:
        cfg = self.config
        delay = cfg.reconnect_min_seconds
        while True:
            try:
                async with asyncio.timeout(cfg.connect_timeout_seconds):
                    reader, writer = await asyncio.open_connection(cfg.host, cfg.port)
            except (OSError, TimeoutError) as exc:
                self.log.warning("bank.connect_failed", connection=slot.index, error=str(exc))
            else:
                slot.conn, slot.writer = iso8583.Connection(self.keys), writer
                try:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._read(slot, reader))
                        await self._sign_on(slot)
                        delay = cfg.reconnect_min_seconds
                        await self._echo_loop(slot)
                except* (_LinkDown, OSError) as group:
                    self.log.warning("bank.link_down", connection=slot.index,
                                     error=str(group.exceptions[0]))
                except* Exception as group:
                    # A bug here must not end the switch's TaskGroup (purchases go on): log
                    # it, drop the connection, reconnect.
                    self.log.error("bank.link_failed", connection=slot.index,
                                   exc_info=group.exceptions[0])
                finally:
                    self._down(slot)
            metrics.bank_reconnects_total.inc()
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(2 * delay, cfg.reconnect_max_seconds)

    async def _sign_on(self, slot: _Slot) -> None:
        answer = await self._network(slot, iso8583.NetworkCode.SIGN_ON)
        if answer is None or answer.field39 != iso8583.APPROVED:
            raise _LinkDown(f"sign-on refused ({answer and answer.field39})")
        await self._exchange_key(slot, only_if_missing=True)
        slot.signed_on = True
        self.log.info("bank.signed_on", connection=slot.index, generation=self.keys.current)
        self._gauges()

    async def _echo_loop(self, slot: _Slot) -> None:
        while True:
            await asyncio.sleep(self.config.echo_interval_seconds)
            answer = await self._network(slot, iso8583.NetworkCode.ECHO)
            if answer is None or answer.field39 != iso8583.APPROVED:
                raise _LinkDown("echo not answered")

    def _down(self, slot: _Slot) -> None:
        slot.signed_on = False
        slot.out.clear()
        if slot.writer is not None:
            slot.writer.transport.abort()
        slot.writer = slot.conn = None
        for pending in list(self._pending.values()):
            if pending.slot is slot and not pending.future.done():
                pending.future.set_exception(_LinkDown("connection lost"))
        if not any(s.signed_on for s in self._slots):
            self.keys.clear()  # a bank that restarted has forgotten it: exchange anew
        self._gauges()

    def _down_all(self) -> None:
        for slot in self._slots:
            self._down(slot)

    def _gauges(self) -> None:
        metrics.bank_link_connections.set(sum(1 for s in self._slots if s.signed_on))
        metrics.bank_link_available.set(1 if self.available else 0)

    async def _read(self, slot: _Slot, reader: asyncio.StreamReader) -> None:
        conn = slot.conn
        assert conn is not None
        while True:
            data = await reader.read(RECEIVE_BYTES)
            conn.receive_data(data)
            while True:
                try:
                    ev = conn.next_event()
                except iso8583.Iso8583RemoteError as exc:
                    metrics.bank_bad_messages_total.labels(exc.reason).inc()
                    self.log.warning("bank.bad_message", reason=exc.reason, mti=exc.mti,
                                     error=exc.message, connection=slot.index)
                    if exc.closes_connection:
                        raise _LinkDown(exc.message) from None
                    continue
                if ev is iso8583.NEED_DATA:
                    break
                if ev is iso8583.CLOSED:
                    raise _LinkDown("the bank closed the connection")
                assert not isinstance(ev, iso8583.Signal)
                self._dispatch(slot, ev)

    def _dispatch(self, slot: _Slot, msg: iso8583.Message) -> None:
        if type(msg) is iso8583.NetworkResponse:
            self._match(("network", slot.index, msg.stan), msg, "network")
        elif type(msg) is iso8583.TopupResponse:
            self._match(("topup", msg.terminal_id, msg.stan), msg, "topup")
        elif type(msg) is iso8583.ReversalResponse:
            self._match(("reversal", msg.terminal_id, msg.stan), msg, "reversal")
        elif type(msg) is iso8583.NetworkRequest:
            self._on_network_request(slot, msg)
        else:
            metrics.bank_bad_messages_total.labels("unexpected").inc()
            self.log.warning("bank.bad_message", reason="unexpected",
                             mti=iso8583.mti_of(msg), connection=slot.index)

    def _match(self, key: _Key, msg: iso8583.Message, label: str) -> None:
        pending = self._pending.get(key)
        if pending is None or pending.future.done():
            seen = self._recent.get(key)
            reason = {"late": "late", "answered": "duplicate"}.get(seen or "", "unsolicited")
            metrics.bank_unmatched_total.labels(reason).inc()
            self.log.warning("bank.unmatched_answer", reason=reason, message=label,
                             terminal_id=key[1], stan=key[2])
            return
        field39 = getattr(msg, "field39", "")
        metrics.bank_answers_total.labels(
            label, field39 if field39 in iso8583.FIELD39 else "other").inc()
        metrics.bank_roundtrip_seconds.labels(label).observe(
            time.perf_counter() - pending.sent_at)
        self._remember(key, "answered")
        pending.future.set_result(msg)

    def _on_network_request(self, slot: _Slot, msg: iso8583.NetworkRequest) -> None:
        code, field39 = msg.code, "00"
        if code is iso8583.NetworkCode.CUTOVER and msg.business_date is not None:
            self.business_date = msg.business_date
            self.log.info("bank.cutover", business_date=msg.business_date.isoformat())
            if self.on_cutover is not None:
                self.on_cutover(msg.business_date)
        elif code is not iso8583.NetworkCode.ECHO:
            field39 = "12"  # sign-on, sign-off and key exchange are ours to send
        answer = iso8583.NetworkResponse(
            code=code, stan=msg.stan, field39=field39,
            business_date=msg.business_date if code is iso8583.NetworkCode.CUTOVER else None)
        with contextlib.suppress(_LinkDown, OSError):
            self._write(slot, answer)
