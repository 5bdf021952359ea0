"""One simulated POS terminal: a trio task, a real TCP connection, the sans-IO OCP Connection.

What a till does, in order: sign on (and stay signed on, sending a Heartbeat whenever it has
sent nothing for the interval the switch gave); take the next cardholder; maybe ask the balance;
send the Purchase (amount 0 at a fixed-price till); wait for the answer. An answer that does not
come within the answer timeout is asked for again by resending the same request with the same
txn_seq; a dropped connection is re-established with exponential back-off and jitter, and the
unanswered request is resent on the new session. When the retries are used up the purchase is
given up and reversed (a Reversal of its txn_seq), so the cardholder is never charged for a
meal the till did not hand over.

One task per terminal, no task per request: the task reads its socket only while it waits for
an answer or a HeartbeatAck, which is all a real till does too.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import time
from typing import TYPE_CHECKING, Any, Final

import trio

from protocols import limits as wire
from protocols import ocp
from terminals_sim import limits
from terminals_sim._crowd import Customer
from terminals_sim._errors import SimError
from terminals_sim._site import SiteTerminal

if TYPE_CHECKING:
    from terminals_sim._run import Simulation

_APPROVED: Final = int(ocp.ResponseCode.APPROVED)
_RETRY_CODES: Final = frozenset({int(ocp.ResponseCode.BUSY), int(ocp.ResponseCode.SYSTEM_ERROR)})
_CLOSING_CODES: Final = frozenset(
    int(code) for code, info in ocp.CODE_INFO.items() if info.closes_connection
)
_RESULTS: Final = (ocp.PurchaseResult, ocp.BalanceResult, ocp.ReversalResult)
_CODE_NAMES: Final = {int(c): c.name for c in ocp.ResponseCode}
_NEED_DATA: Final = ocp.NEED_DATA
_CLOSED: Final = ocp.CLOSED
_BACKOFF_DOUBLINGS_MAX: Final = 30
_BROKEN: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_SENT: Final = frozenset({ocp.SignOn, ocp.SignOnConfirm, ocp.Heartbeat, ocp.SignOff,
                         ocp.Purchase, ocp.Reversal, ocp.BalanceInquiry})
assert ocp.TERMINAL_KIND_MESSAGES[ocp.TerminalKind.POS] >= _SENT, "a POS sends POS messages only"


def code_name(code: int) -> str:
    return _CODE_NAMES.get(code, str(code))


class _Lost(Exception):
    """The connection is gone: EOF, reset, a protocol error, or a closing Error."""


class _RetryLater:
    """The switch refused a request for now (BUSY, SYSTEM_ERROR): resend it, same txn_seq."""


_RETRY_LATER: Final = _RetryLater()


def _now_ms() -> int:
    return int(time.time() * 1000)


class Pos:
    __slots__ = (
        "_conn",
        "_failures",
        "_heartbeat_seconds",
        "_idle_scope",
        "_key",
        "_last_sent",
        "_queue_in",
        "_queue_out",
        "_rng",
        "_seen",
        "_sessions",
        "_signed_on",
        "_sim",
        "_stream",
        "spec",
        "txn_seq",
    )

    def __init__(self, sim: Simulation, spec: SiteTerminal, key: bytes, rng: random.Random
                 ) -> None:
        self._sim = sim
        self.spec = spec
        self._key = key
        self._rng = rng
        self.txn_seq = 0
        """The terminal's persistent transaction counter (kept across reconnects)."""
        self._queue_in, self._queue_out = trio.open_memory_channel[Customer](
            sim.scenario.pos.queue_max
        )
        self._stream: trio.SocketStream | None = None
        self._conn: ocp.Connection | None = None
        self._signed_on = False
        self._sessions = 0
        self._failures = 0
        self._heartbeat_seconds = 30.0
        self._last_sent = 0.0
        self._idle_scope: trio.CancelScope | None = None
        # txn_seq -> the first answer seen for it (kept or dropped), to compare repeats with.
        self._seen: dict[int, Any] = {}

    # -- the queue at the till -----------------------------------------------------------

    def queue_length(self) -> int:
        return self._queue_out.statistics().current_buffer_used

    def enqueue_nowait(self, customer: Customer) -> bool:
        """Join this till's queue; False when it is full (the cardholder walks away)."""
        try:
            self._queue_in.send_nowait(customer)
        except trio.WouldBlock:
            return False
        return True

    def wake(self) -> None:
        """Stop waiting idle (the phase changed or the run is over) and look again."""
        if self._idle_scope is not None:
            self._idle_scope.cancel()

    # -- the till's life -------------------------------------------------------------------

    async def run(self) -> None:
        sim = self._sim
        try:
            await self._ensure_connected()
            while True:
                customer = await self._next_customer()
                if customer is None:
                    break
                await self._serve(customer)
            await self._sign_off()
        finally:
            self._drop()
            sim.terminal_done()

    async def _next_customer(self) -> Customer | None:
        sim = self._sim
        schedule = sim.schedule
        tid = self.spec.terminal_id
        while True:
            if schedule.finished:
                return None
            await self._ensure_connected()
            if schedule.finished:
                return None
            hb_due = self._last_sent + self._heartbeat_seconds
            plan = schedule.plan
            visit = plan.till_visit.get(tid) if plan is not None else None
            if plan is not None and visit is not None and not plan.arrivals:
                # Think mode: someone is always waiting; serve them after the think time.
                think = plan.phase.think_seconds or 0.0
                wake_at = trio.current_time() + think * (0.5 + self._rng.random())
                if await self._idle_until(min(wake_at, hb_due), None) is _WOKEN:
                    continue
                if trio.current_time() < wake_at:
                    await self._heartbeat()
                    continue
                if schedule.plan is not plan:
                    continue
                return sim.crowd.customer(plan.phase, visit)
            if plan is not None and plan.arrivals:
                got = await self._idle_until(hb_due, self._queue_out.receive)
                if isinstance(got, Customer):
                    if schedule.finished:
                        return None
                    return got
                if got is _WOKEN:
                    continue
            elif await self._idle_until(hb_due, None) is _WOKEN:
                continue
            await self._heartbeat()

    async def _idle_until(self, deadline: float, receive: Any) -> Any:
        """Wait until `deadline` (None back) or for `receive()` (its value), whichever is
        first; _WOKEN when wake() interrupted the wait."""
        scope = trio.CancelScope(deadline=deadline)
        self._idle_scope = scope
        try:
            with scope:
                if receive is None:
                    await trio.sleep_forever()
                return await receive()
        finally:
            self._idle_scope = None
        if scope.cancelled_caught and trio.current_time() < deadline:
            return _WOKEN
        return None

    async def _serve(self, customer: Customer) -> None:
        sim = self._sim
        pos = sim.scenario.pos
        plan = sim.schedule.last
        assert plan is not None
        phase = plan.phase
        if plan.arrivals and phase.serve_seconds:
            await trio.sleep(phase.serve_seconds * (0.5 + self._rng.random()))
        card = customer.card_no
        if customer.inquiry:
            inquiry = ocp.BalanceInquiry(self._next_txn_seq(), card)
            await self._exchange(inquiry, "inquiry", pos.retries_max, False)
        amount = 0 if self.spec.fixed_price_fen else customer.amount_fen
        purchase = ocp.Purchase(self._next_txn_seq(), card, amount, _now_ms())
        share = phase.faults.never_answer_share
        black_hole = bool(share) and self._rng.random() < share
        answer = await self._exchange(purchase, "purchase", pos.retries_max, black_hole)
        if answer is not None:
            return
        # No answer after every retry: the till shows "failed" and reverses the purchase, which
        # the switch may or may not have carried out. amount_fen 0 = whatever was charged.
        sim.stats.reversals_sent += 1
        reversal = ocp.Reversal(self._next_txn_seq(), purchase.txn_seq, card, purchase.amount_fen)
        if await self._exchange(reversal, "reversal", pos.reversal_retries_max, False) is None:
            sim.stats.reversals_unanswered += 1

    def _next_txn_seq(self) -> int:
        if self.txn_seq >= wire.TXN_SEQ_MAX:
            raise SimError(f"terminal {self.spec.terminal_id}: txn_seq exhausted")
        self.txn_seq += 1
        return self.txn_seq

    # -- one request until it is answered or given up -----------------------------------

    async def _exchange(self, msg: Any, kind: str, retries_max: int, black_hole: bool) -> Any:
        """Send `msg` until answered (the answer back) or `retries_max` resends went
        unanswered (None). Every resend carries the same txn_seq and fields."""
        sim = self._sim
        stats = sim.stats
        seq = msg.txn_seq
        attempts = 0
        first_sent = 0.0
        stats.in_flight += 1
        try:
            while True:
                await self._ensure_connected()
                try:
                    await self._send(msg)
                except _Lost:
                    continue
                attempts += 1
                if attempts == 1:
                    first_sent = trio.current_time()
                    stats.sent[kind] += 1
                    sim.record_request(self.spec.terminal_id, msg)
                else:
                    stats.retries += 1
                lost = False
                try:
                    answer = await self._wait_answer(seq, black_hole)
                except _Lost:
                    answer = None
                    lost = True
                if answer is _RETRY_LATER:
                    stats.busy += 1
                    await trio.sleep(sim.scenario.pos.busy_pause_seconds)
                elif answer is not None:
                    self._accept(kind, msg, answer, trio.current_time() - first_sent)
                    return answer
                elif not lost:
                    stats.timeouts += 1
                if attempts > retries_max:
                    stats.gave_up += 1
                    sim.record_gave_up(self.spec.terminal_id, msg)
                    return None
        finally:
            stats.in_flight -= 1

    async def _wait_answer(self, seq: int, black_hole: bool) -> Any:
        """The answer to `seq`, _RETRY_LATER, or None after the answer timeout."""
        sim = self._sim
        stats = sim.stats
        plan = sim.schedule.last
        drop = plan.phase.faults.drop_answer_share if plan is not None else 0.0
        rng = self._rng
        with trio.move_on_after(sim.scenario.pos.answer_timeout_seconds):
            while True:
                ev = await self._receive()
                t = type(ev)
                if t in _RESULTS:
                    self._compare(ev)
                    if ev.txn_seq != seq:
                        continue  # a late answer to an earlier send: compared, and done
                    if black_hole or (drop and rng.random() < drop):
                        stats.answers_dropped += 1  # the simulated network lost it
                        continue
                    return ev
                if t is ocp.Error:
                    code = ev.code
                    if code in _CLOSING_CODES:
                        stats.closed_by_switch[code_name(code)] += 1
                        raise self._lost()
                    if ev.txn_seq == seq:
                        return _RETRY_LATER if code in _RETRY_CODES else ev
                    stats.protocol_errors += 1
                # HeartbeatAck, or an Error about another request: nothing to do.
        return None

    def _compare(self, answer: Any) -> None:
        """Every answer to one txn_seq must be the same answer (a repeat is never re-decided)."""
        seen = self._seen
        seq = answer.txn_seq
        first = seen.get(seq)
        if first is None:
            if len(seen) >= limits.ANSWERS_COMPARED_MAX:
                del seen[next(iter(seen))]
            seen[seq] = answer
            return
        stats = self._sim.stats
        stats.repeats_answered += 1
        if first != answer:
            stats.answer_mismatches += 1

    def _accept(self, kind: str, request: Any, answer: Any, latency: float) -> None:
        sim = self._sim
        stats = sim.stats
        code = answer.code
        name = code_name(code)
        stats.answered += 1
        stats.answers[(kind, name)] += 1
        stats.latency.add(latency)
        stats.window_latency.add(latency)
        if code == _APPROVED:
            stats.approved += 1
        elif kind == "purchase":
            stats.purchase_declines[name] += 1
        if kind == "reversal":
            stats.reversals[name] += 1
        sim.record_answer(self.spec.terminal_id, request, answer)

    # -- the connection --------------------------------------------------------------------

    async def _ensure_connected(self) -> None:
        """Return once signed on; reconnect with exponential back-off and jitter."""
        sim = self._sim
        behaviour = sim.scenario.pos
        while self._conn is None or not self._signed_on:
            if self._failures:
                doublings = min(self._failures - 1, _BACKOFF_DOUBLINGS_MAX)
                delay = min(behaviour.backoff_max_seconds,
                            behaviour.backoff_initial_seconds * 2.0**doublings)
                await trio.sleep(delay * (0.5 + 0.5 * self._rng.random()))
            async with sim.sign_on_limiter:
                ok = await self._sign_on()
            if ok:
                if self._sessions:
                    sim.stats.reconnects += 1
                self._sessions += 1
                self._failures = 0
            else:
                self._failures += 1

    async def _sign_on(self) -> bool:
        sim = self._sim
        stats = sim.stats
        behaviour = sim.scenario.pos
        spec = self.spec
        try:
            with trio.fail_after(behaviour.sign_on_timeout_seconds):
                stream = await trio.open_tcp_stream(sim.host, sim.port)
                stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
                conn = ocp.Connection(ocp.Role.TERMINAL)
                self._stream, self._conn = stream, conn
                await self._send_raw(conn.start_sign_on(spec.terminal_id, self._key,
                                                        os.urandom(wire.NONCE_BYTES)))
                ev: Any = await self._receive()
                if type(ev) is ocp.SignOnChallenge:
                    await self._send(ocp.SignOnConfirm(self.txn_seq, ocp.TerminalKind.POS,
                                                       behaviour.firmware))
                    ev = await self._receive()
                if type(ev) is ocp.SignOnResult and ev.code == _APPROVED:
                    # Continue above the larger of our counter and the switch's journal.
                    self.txn_seq = max(self.txn_seq, ev.last_txn_seq)
                    self._heartbeat_seconds = float(ev.heartbeat_interval_s)
                    self._signed_on = True
                    stats.signed_on_changed(+1)
                    return True
                code = getattr(ev, "code", -1)
                stats.sign_on_refused[code_name(code)] += 1
        except (_Lost, trio.TooSlowError, *_BROKEN):
            stats.connect_failures += 1
        self._drop()
        return False

    async def _heartbeat(self) -> None:
        """Send a Heartbeat and wait for its HeartbeatAck; no ack in time drops the line."""
        stats = self._sim.stats
        try:
            await self._send(ocp.Heartbeat(_now_ms()))
            stats.heartbeats += 1
            with trio.move_on_after(self._sim.scenario.pos.answer_timeout_seconds):
                while True:
                    ev = await self._receive()
                    if type(ev) is ocp.HeartbeatAck:
                        return
                    if type(ev) in _RESULTS:
                        self._compare(ev)
                    elif type(ev) is ocp.Error and ev.code in _CLOSING_CODES:
                        stats.closed_by_switch[code_name(ev.code)] += 1
                        raise self._lost()
            stats.heartbeat_timeouts += 1
            self._drop()
        except _Lost:
            pass

    async def _sign_off(self) -> None:
        if self._conn is not None and self._signed_on:
            with contextlib.suppress(_Lost):
                await self._send(ocp.SignOff())

    async def _send(self, msg: Any) -> None:
        conn = self._conn
        if conn is None:
            raise _Lost()
        try:
            data = conn.send(msg)
        except ocp.OcpLocalError:
            raise self._lost() from None
        await self._send_raw(data)

    async def _send_raw(self, data: bytes) -> None:
        stream = self._stream
        if stream is None:
            raise _Lost()
        try:
            await stream.send_all(data)
        except _BROKEN:
            raise self._lost() from None
        self._last_sent = trio.current_time()

    async def _receive(self) -> Any:
        """The next message from the switch; raises _Lost when the connection ended."""
        conn = self._conn
        stream = self._stream
        if conn is None or stream is None:
            raise _Lost()
        while True:
            try:
                ev = conn.next_event()
            except ocp.OcpRemoteError:
                self._sim.stats.protocol_errors += 1
                raise self._lost() from None
            if ev is _NEED_DATA:
                try:
                    data = await stream.receive_some(limits.RECEIVE_BYTES_MAX)
                except _BROKEN:
                    raise self._lost() from None
                conn.receive_data(data)  # b"": the switch closed; next_event says CLOSED
                continue
            if ev is _CLOSED:
                raise self._lost()
            return ev

    def _lost(self) -> _Lost:
        self._drop()
        self._failures = max(self._failures, 1)  # the next sign-on waits a jittered back-off
        return _Lost()

    def _drop(self) -> None:
        """Close the socket now (a till's power cord, or the end of the run)."""
        if self._signed_on:
            self._signed_on = False
            self._sim.stats.signed_on_changed(-1)
        stream = self._stream
        self._stream = None
        self._conn = None
        if stream is not None:
            stream.socket.close()


class _Woken:
    """What _idle_until returns when wake() interrupted the wait."""


_WOKEN: Final = _Woken()
