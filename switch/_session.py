"""One terminal connection: bytes in, OCP events, ledger decisions, journal, answers out.

This is the hot path. It runs as an asyncio Protocol (no task, no future per request): a
`data_received` call decodes every complete frame, decides each request in the balance cache and
hands the Outcome to the journal; the journal calls `answer_nowait` for each once its batch has
committed, and `flush` writes every answer of that batch for this connection in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING, Any, cast

from ledger_ext import (
    APPROVED,
    CREDIT,
    DEBIT,
    INQUIRY,
    PURCHASE,
    REVERSAL,
    TRANSFER,
    TXN_SEQ_TOO_OLD,
)
from protocols import limits as ocp_limits
from protocols import ocp, qr
from switch import (
    _codes,  # noqa: F401  (asserts ledger and wire codes agree)
    limits,
)
from switch import _metrics as metrics
from switch._access import ACCESS_ANSWER, EVENT_RAISES, QR_COUNTED, AccessAnswer
from switch._answer import REFUSAL, Answer
from switch._qr import door_credential

if TYPE_CHECKING:
    from switch._masterdata import TerminalInfo
    from switch._server import Runtime

_NEED_DATA = ocp.NEED_DATA
_CLOSED = ocp.CLOSED
_Purchase = ocp.Purchase
_Reversal = ocp.Reversal
_BalanceInquiry = ocp.BalanceInquiry
_QrPurchase = ocp.QrPurchase
_Heartbeat = ocp.Heartbeat
_PurchaseResult = ocp.PurchaseResult
_ReversalResult = ocp.ReversalResult
_BalanceResult = ocp.BalanceResult
_Credit = ocp.Credit
_Debit = ocp.Debit
_Transfer = ocp.Transfer
_AccessRequest = ocp.AccessRequest
_DoorEvent = ocp.DoorEvent
_DoorCommandAck = ocp.DoorCommandAck
_OFFLINE_REQUESTS = frozenset({ocp.AccessListRequest, ocp.OfflineUpload})  # switch/_offline.py
_Topup = ocp.Topup
_ADMIN_REQUESTS = frozenset({_Credit, _Debit, _Transfer})
_ADMIN_RESULTS: dict[int, type[ocp.CreditResult | ocp.DebitResult | ocp.TransferResult]] = {
    CREDIT: ocp.CreditResult,
    DEBIT: ocp.DebitResult,
    TRANSFER: ocp.TransferResult,
}
"""Outcome kind of an admin request -> its answer (all three have the same fields)."""
_ALL_MESSAGES = frozenset(ocp.MESSAGE_TYPES)


def _not_permitted_detail(cls: type[ocp.Message]) -> str:
    """"Credit is accepted from admin terminals (kind 6) only": which kinds may send it."""
    kinds = [k for k, sent in ocp.TERMINAL_KIND_MESSAGES.items() if cls in sent]
    names = [k.label for k in kinds]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    numbers = ", ".join(str(int(k)) for k in kinds)
    return (f"{cls.__name__} is accepted from {listed} terminals "
            f"(kind{'s' if len(kinds) > 1 else ''} {numbers}) only")


_NOT_PERMITTED_DETAIL = {
    cls: _not_permitted_detail(cls) for cls in ocp.MESSAGE_TYPES
    if cls.direction is ocp.Direction.T2S and cls not in ocp.SESSION_MESSAGE_TYPES
}
"""The detail of Error(NOT_PERMITTED) for each request (docs/protocol.md 4.1)."""
_TILL_KINDS = frozenset((PURCHASE, REVERSAL, INQUIRY))
"""Outcome kinds answered to a till, whose balances only a till that may serve the card sees."""
_RC = ocp.ResponseCode
_perf = time.perf_counter
_observe_decode = metrics.request_stage_seconds.labels("decode").observe
_observe_authorize = metrics.request_stage_seconds.labels("authorize").observe
_observe_commit_wait = metrics.request_stage_seconds.labels("commit_wait").observe
_observe_commit_queue = metrics.request_stage_seconds.labels("commit_queue").observe
_observe_commit = metrics.request_stage_seconds.labels("commit").observe
_observe_answer = metrics.request_stage_seconds.labels("answer").observe
_observe_paused = metrics.paused_outstanding_requests.observe


def request_id(terminal_id: int, txn_seq: int) -> str:
    """The id of one request, in logs and metrics exemplars: "<terminal_id>:<txn_seq>". It is
    the journal's unique key (terminal_id, txn_seq), so a log line leads to its journal row and
    the terminal's own receipt (which prints txn_seq) leads to both."""
    return f"{terminal_id}:{txn_seq}"


class TerminalSession(asyncio.Protocol):
    __slots__ = (
        "_conn",
        "_countdown",
        "_kind_gauge",
        "_out",
        "_outstanding",
        "_paused",
        "_pending_terminal",
        "_permitted",
        "_rt",
        "_timed",
        "_transport",
        "_written",
        "closed",
        "last_seen",
        "log",
        "merchant_id",
        "peer",
        "terminal_id",
    )

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._conn = ocp.Connection(ocp.Role.SWITCH)
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._outstanding = 0
        self._paused = False
        self._pending_terminal: TerminalInfo | None = None
        # The messages this terminal's kind may send, from its registration at sign-on. Before
        # that the Connection lets only sign-on messages through.
        self._permitted = _ALL_MESSAGES
        # Latency sampling: requests left until the next timed one; the timed ones in flight,
        # txn_seq -> (bytes arrived, decided), both time.perf_counter().
        self._countdown = runtime.settings.latency_sample_every
        self._timed: dict[int, tuple[float, float]] = {}
        self._written: list[tuple[float, float, int]] = []  # timed answers not yet written
        self._kind_gauge: Any = None
        self.terminal_id = 0
        self.merchant_id = 0
        self.closed = False
        self.last_seen = time.monotonic()
        self.peer = ""
        self.log = runtime.log

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        rt = self._rt
        if len(rt.connections) >= rt.settings.connections_max or rt.stopping:
            metrics.protocol_errors_total.labels("busy").inc()
            code = _RC.SHUTTING_DOWN if rt.stopping else _RC.BUSY
            transport.write(self._conn.send(ocp.Error(code, 0, "switch is not taking connections")))
            self.closed = True
            transport.close()
            return
        rt.connections.add(self)
        metrics.connections_open.inc()
        transport.set_write_buffer_limits(high=limits.WRITE_BUFFER_BYTES_MAX)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        rt = self._rt
        if self in rt.connections:
            rt.connections.discard(self)
            metrics.connections_open.dec()
        if self.terminal_id and rt.sessions.get(self.terminal_id) is self:
            del rt.sessions[self.terminal_id]
            self._kind_gauge.dec()
            # Its current session ended: offline (and a door terminal's doors with it). A
            # session replaced by a newer one is no longer in rt.sessions and writes nothing.
            rt.journal.presence_changed(self.terminal_id, False, self.peer,
                                        _DoorEvent in self._permitted)
            self.log.info("ocp.session_closed", terminal_id=self.terminal_id, peer=self.peer)

    def pause_writing(self) -> None:
        # The terminal does not read its answers: it cannot be served. Abort, not close: a
        # close would wait for the buffer it never drains (and keep the connection forever).
        self.log.warning("ocp.slow_reader", terminal_id=self.terminal_id, peer=self.peer)
        self.abort()

    def eof_received(self) -> bool:
        # A terminal that half-closes after SignOff still gets the answers it is owed.
        self._rt.close_after_answers(self)
        return True

    def data_received(self, data: bytes) -> None:
        if self.closed or self._rt.stopping:
            return  # draining: decide nothing new; the terminal retries with the same txn_seq
        self.last_seen = time.monotonic()
        self._conn.receive_data(data)
        self._decide_buffered()

    def _decide_buffered(self) -> None:
        """Decide every complete frame in the buffer, up to the limits: at
        PIPELINE_REQUESTS_MAX outstanding or a full journal batch it stops, leaves the rest
        in the buffer and stops reading the transport; `resume_reading` carries on here."""
        conn = self._conn
        rt = self._rt
        ledger = rt.ledger
        journal = rt.journal
        arrived = _perf()
        now_s = int(time.time())
        tid = self.terminal_id
        merchant_id = self.merchant_id
        permitted = self._permitted
        outstanding = self._outstanding
        countdown = self._countdown
        t0 = t1 = 0.0
        while True:
            if outstanding >= limits.PIPELINE_REQUESTS_MAX or journal.congested:
                self._pause_reading(outstanding)
                break
            # Sampling: when the countdown has run out, the next request is timed (a control
            # message or a partial frame leaves it run out, so the request after it is).
            countdown -= 1
            timed = countdown <= 0
            if timed:
                t0 = _perf()
            try:
                ev: Any = conn.next_event()
            except ocp.InvalidField as exc:
                self._refuse(exc.response_code, exc.txn_seq, f"invalid field {exc.path}")
                continue
            except ocp.UnknownMessage as exc:
                self._refuse(exc.response_code, exc.txn_seq, str(exc))
                continue
            except ocp.OcpRemoteError as exc:
                self._protocol_error(exc)
                return
            if ev is _NEED_DATA:
                break
            if timed:
                t1 = _perf()
            if ev is _CLOSED:  # the terminal signed off, sent a closing Error, or hung up
                self.close()
                return
            t = type(ev)
            if t not in permitted:  # another kind's message: nothing decided, nothing journaled
                self._refuse(_RC.NOT_PERMITTED,
                             ev.command_id if t is _DoorCommandAck else ev.txn_seq,
                             _NOT_PERMITTED_DETAIL[t], reason="not_permitted")
                continue
            if t is _Purchase:
                o = ledger.purchase(tid, ev.txn_seq, ev.card_no, merchant_id, ev.amount_fen, now_s)
            elif t is _Reversal:
                o = ledger.reverse(
                    tid, ev.txn_seq, ev.original_txn_seq, ev.card_no, ev.amount_fen, now_s
                )
            elif t is _BalanceInquiry:
                o = ledger.inquire(tid, ev.txn_seq, ev.card_no, merchant_id, now_s)
            elif t is _QrPurchase:
                o = self._qr_purchase(ev, now_s)
                if o is None:  # refused, or answered after a journal look-up
                    outstanding = self._outstanding
                    continue
            elif t in _ADMIN_REQUESTS:
                o = self._admin_request(ev, now_s)
                if o is None:  # refused before the ledger: nothing decided, nothing journaled
                    continue
            elif t is _AccessRequest or t is _DoorEvent:  # ACCESS: answered after the commit
                self._access_request(ev, t is _DoorEvent)
                outstanding = self._outstanding
                continue
            elif t in _OFFLINE_REQUESTS:  # OFFLINE: served by a worker (switch/_offline.py)
                if rt.offline.submit(self, ev):
                    self._outstanding += 1
                    outstanding = self._outstanding
                else:
                    self._refuse(_RC.BUSY, ev.txn_seq, "offline requests are queued full")
                continue
            elif t is _Topup:  # a kiosk's bank top-up: decided off this path (switch/_topup.py)
                rt.topups.submit_nowait(self, ev)
                continue
            elif t is _DoorCommandAck:  # a door's answer to a command: not a request
                rt.door_commands.acked(tid, ev)
                continue
            else:
                self._control(ev)
                if self.closed:
                    return
                tid = self.terminal_id
                merchant_id = self.merchant_id
                permitted = self._permitted
                continue
            outstanding += 1
            self._outstanding = outstanding
            if timed:
                t2 = _perf()
                countdown = rt.settings.latency_sample_every
                self._timed[o.txn_seq] = (arrived, t2)
                _observe_decode(t1 - t0)
                _observe_authorize(t2 - t1)
            if o.repeat:
                journal.answer_when_durable(self, o)
            elif o.code == TXN_SEQ_TOO_OLD:
                rt.look_up_old(self, o)
            else:
                journal.submit(self, o)
            outstanding = self._outstanding
        self._countdown = countdown
        if self._out:
            self.flush()

    def _pause_reading(self, outstanding: int) -> None:
        self._paused = True
        assert self._transport is not None
        self._transport.pause_reading()
        self._rt.journal.pause_until_commit(self)
        _observe_paused(outstanding)

    # -- called by the journal -------------------------------------------------------------

    def answer_nowait(self, o: Any) -> None:
        self._outstanding -= 1
        if self.closed:
            return
        kind = o.kind
        if kind == ACCESS_ANSWER:  # ACCESS: AccessResult or DoorEventAck, built at decision
            self._out.append(self._conn.send(o.message))
            return
        code = o.code
        if self._timed:
            self._observe_answered(o.txn_seq, kind)
        main = o.main_fen
        subsidy = o.subsidy_fen
        if (o.tenant_id != o.merchant_tenant_id and kind in _TILL_KINDS
                and not self._rt.ledger.cross_tenant_allowed(o.tenant_id, o.merchant_tenant_id)):
            main = subsidy = 0  # a till sees only the cards it may serve (protocol.md 9.3)
        if code == TXN_SEQ_TOO_OLD:
            msg: Any = ocp.Error(code, o.txn_seq, "txn_seq is too old and not in the journal")
        elif kind == REFUSAL:  # refused, not decided (BUSY, SYSTEM_ERROR, a QR code...)
            msg = ocp.Error(code, o.txn_seq, o.detail or "retry later with the same txn_seq")
        elif kind == PURCHASE:
            # amount_fen is what was charged: 0 on a decline (the journal keeps the request's).
            msg = _PurchaseResult(
                o.txn_seq, code, o.amount_fen if code == 0 else 0, main + subsidy, main, subsidy
            )
        elif kind == REVERSAL:
            msg = _ReversalResult(o.txn_seq, code, o.amount_fen if code == 0 else 0,
                                  main + subsidy)
        elif kind == INQUIRY:
            msg = _BalanceResult(o.txn_seq, code, main + subsidy, main, subsidy)
        elif (admin_result := _ADMIN_RESULTS.get(kind)) is not None:
            msg = admin_result(o.txn_seq, code, o.amount_fen if code == 0 else 0,
                               o.main_fen + o.subsidy_fen, o.main_fen, o.subsidy_fen)
        else:  # an outcome kind this connection cannot have asked for
            msg = ocp.Error(_RC.SYSTEM_ERROR, o.txn_seq, "unexpected outcome kind")
        self._out.append(self._conn.send(msg))

    def send_offline(self, txn_seq: int, messages: list[ocp.Message]) -> None:
        """OFFLINE: the worker's answer to an AccessListRequest or OfflineUpload: every part
        of a snapshot (or delta), the last one as the request's answer."""
        if not self.closed:
            for msg in messages[:-1]:
                self._out.append(self._conn.send(msg))
        last = messages[-1]
        self.answer_nowait(AccessAnswer(txn_seq, last, getattr(last, "code", 0)))
        self.flush()
        self.resume_if_drained()

    def _observe_answered(self, txn_seq: int, kind: int) -> None:
        times = self._timed.pop(txn_seq, None)
        if times is not None:  # observed when written (flush): (arrived, decided, kind)
            self._written.append((times[0], times[1], kind))

    def _observe_written(self) -> None:
        now = _perf()
        journal = self._rt.journal
        sent, acked = journal.batch_sent_at, journal.batch_acked_at
        for arrived, decided, kind in self._written:
            _observe_commit_wait(now - decided)
            if decided <= sent:  # answered by the batch just committed (else a repeat's)
                _observe_commit_queue(sent - decided)
                _observe_commit(acked - sent)
                _observe_answer(now - acked)
            metrics.request_seconds.labels(metrics.REQUEST_TYPES.get(kind, "other")).observe(
                now - arrived
            )
        self._written.clear()

    def flush(self) -> None:
        out = self._out
        if not out or self.closed:
            out.clear()
            self._written.clear()
            return
        transport = self._transport
        assert transport is not None
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()  # before write: write may call pause_writing, which aborts
        transport.write(data)
        if self._written:
            self._observe_written()

    def resume_reading(self) -> None:
        if self._paused and not self.closed and not self._rt.stopping:
            self._paused = False
            assert self._transport is not None
            self._transport.resume_reading()
            self._decide_buffered()  # frames left in the buffer when reading stopped

    def resume_if_drained(self) -> None:
        """Resume a paused session once it is under its pipeline limit again."""
        if (self._paused and self._outstanding < limits.PIPELINE_REQUESTS_MAX
                and not self._rt.journal.congested):
            self.resume_reading()

    def retire(self) -> None:
        """Take no new request (the terminal was disabled or re-keyed); answers still owed go
        out, then the runtime closes the session (close_after_answers)."""
        self._paused = False  # so no commit resumes reading
        if self._transport is not None and not self.closed:
            self._transport.pause_reading()

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self.closed = True
            if self._transport is not None:
                self._transport.close()

    def end(self, code: int, detail: str) -> None:
        """End the connection with a closing Error saying why (SESSION_REPLACED, IDLE_TIMEOUT,
        SHUTTING_DOWN: docs/protocol.md section 8), after whatever is queued. If the terminal
        has not read what was written before, abort: it would never drain the buffer."""
        if self.closed:
            return
        with contextlib.suppress(ocp.OcpLocalError):  # the connection already failed or closed
            self._out.append(self._conn.send(ocp.Error(code, 0, detail)))
        self.close()
        if self._transport is not None and self._transport.get_write_buffer_size():
            self._transport.abort()

    def abort(self) -> None:
        """Drop the connection now, discarding anything unsent."""
        self._out.clear()
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    # -- privileged (admin) requests --------------------------------------------------------

    def _admin_request(self, ev: Any, now_s: int) -> Any:
        """Decide a privileged request of an admin terminal in the ledger, or refuse it (None).
        (Only an admin terminal gets here: TERMINAL_KIND_MESSAGES.)"""
        ledger = self._rt.ledger
        t = type(ev)
        if t is _Transfer:  # between the card's own wallets, at this terminal's counter
            return ledger.transfer(self.terminal_id, ev.txn_seq, ev.card_no, self.merchant_id,
                                   ev.from_wallet, ev.amount_fen, now_s)
        field = "from_merchant_id" if t is _Credit else "to_merchant_id"
        merchant_id = getattr(ev, field)
        if merchant_id > ledger.merchants_max:
            # Within the wire's limit but beyond the accounts this switch holds: no such
            # account. Refused like a field out of range: nothing decided, txn_seq not used.
            self._refuse(_RC.INVALID_FIELD, ev.txn_seq, f"invalid field $.{field}")
            return None
        decide = ledger.credit if t is _Credit else ledger.debit
        return decide(self.terminal_id, ev.txn_seq, ev.card_no, merchant_id, ev.wallet,
                      ev.amount_fen, now_s)

    # -- door access (ACCESS: docs/access.md) -------------------------------------------------

    def _access_request(self, ev: Any, is_event: bool) -> None:
        """Decide an AccessRequest (or take a DoorEvent) from the access rules in memory, add
        its rows to the next group commit and answer after it (docs/protocol.md 4.5)."""
        rt = self._rt
        engine = rt.access
        journal = rt.journal
        tid = self.terminal_id
        seq = ev.txn_seq
        prior = engine.repeat_of(tid, seq)
        if prior is not None:  # a repeat: its original answer, once that is durable
            self._outstanding += 1
            journal.submit_access(self, AccessAnswer(seq, prior, prior.code, repeat=True))
            return
        if seq <= engine.last_txn_seq.get(tid, 0) - ocp_limits.TXN_SEQ_WINDOW:
            self._refuse(_RC.TXN_SEQ_TOO_OLD, seq, "txn_seq is too old and not in the journal")
            return
        reader = engine.readers.get((tid, ev.reader_no))
        if reader is None:
            self._refuse(_RC.UNKNOWN_READER, seq,
                         f"terminal {tid} has no reader {ev.reader_no}")
            return
        now_ms = int(time.time() * 1000)
        batch = journal.access_batch
        door = reader.door
        answer: Any
        if is_event:
            engine.door_event(door, ev.event, now_ms)
            batch.events.append((tid, seq, door.tenant_id, door.door_id, ev.event,
                                 ev.terminal_time_ms or now_ms))
            alarm = EVENT_RAISES.get(ev.event)
            if alarm is not None:
                batch.alarms.append((door.tenant_id, alarm, door.door_id, door.area_id or None,
                                     None, None, tid, 0, seq, ""))
            answer = ocp.DoorEventAck(seq, 0)
            code = 0
        else:
            kind = ev.credential_kind
            if kind == 4 and rt.qr.full:
                self._refuse(_RC.BUSY, seq, "too many QR codes in use: retry later with the "
                             "same txn_seq")
                return
            d = engine.decide(reader, ev, now_ms)
            direction = reader.direction if reader.direction < 2 else ev.pass_direction
            if d.qr is not None:
                credential = door_credential(d.qr)  # the nonce, never the code
                card_no = d.qr.card_no
                if d.code in QR_COUNTED:
                    rt.qr.spend(d.qr, tid, seq)  # used up before the commit, like a purchase
            else:
                credential = ev.credential if kind in (2, 3) else ""
                card_no = ev.card_no if kind < 4 else 0  # a face's: the card read with it
            batch.decisions.append((
                tid, seq, door.tenant_id, door.door_id, door.area_id, ev.reader_no, direction,
                kind, card_no, credential, d.account_id, d.code, d.open_ms, d.floors,
                d.duress, d.grant_id, now_ms))
            if d.alarm:
                batch.alarms.append((door.tenant_id, d.alarm, door.door_id,
                                     door.area_id or None, d.account_id or None,
                                     card_no or None, tid, 0, seq, ""))
            if d.cleared_apb:
                batch.apb_cleared.append((d.account_id, door.area_id, seq))
            code = d.code
            answer = ocp.AccessResult(seq, code, d.open_ms, d.floors)
        engine.remember(tid, seq, answer)
        self._outstanding += 1
        journal.submit_access(self, AccessAnswer(seq, answer, code))

    # -- door commands (switch/_door_commands.py) --------------------------------------------

    @property
    def is_door(self) -> bool:
        """Signed on as a door terminal (kind 3, from its registration)."""
        return bool(self.terminal_id) and _DoorEvent in self._permitted

    def send_door_command(self, msg: ocp.DoorCommand) -> bool:
        """Write a DoorCommand now; False if this session cannot take one (closing, signed
        off, not a door: the command is then 'offline')."""
        if self.closed or not self.is_door or self in self._rt._closing_after_answers:
            return False
        try:
            self._out.append(self._conn.send(msg))
        except ocp.OcpLocalError:  # signed off or failed: not in READY
            return False
        self.flush()
        return True

    # -- kiosk top-ups (switch/_topup.py) ---------------------------------------------------

    @property
    def pin_key(self) -> bytes:
        return self._conn.pin_key

    def refuse_topup(self, code: int, txn_seq: int, detail: str) -> None:
        self._refuse(code, txn_seq, detail)

    def send_topup_answer(self, msg: ocp.Message) -> None:
        """Write a top-up's answer now (it was decided by a top-up worker, not a commit)."""
        if self.closed:
            return  # the kiosk asks again with the same txn_seq and gets the stored answer
        with contextlib.suppress(ocp.OcpLocalError):
            self._out.append(self._conn.send(msg))
        self.flush()

    # -- phone QR codes ----------------------------------------------------------------------

    def _qr_purchase(self, ev: Any, now_s: int) -> Any:
        """Decide a QrPurchase in the ledger (an Outcome), or refuse it (None): docs/protocol.md
        section 4.4. A code that may not pay is refused before the ledger, except that a repeat
        of a request already decided gets its original answer, whatever the code is now."""
        rt = self._rt
        gate = rt.qr
        tid = self.terminal_id
        seq = ev.txn_seq
        try:
            token = qr.authenticate(gate.key, ev.qr)
        except qr.QrError as exc:  # malformed, or forged: a security event, nothing decided
            self._refuse(_RC.QR_INVALID, seq, f"QR code refused: {exc}",
                         reason="qr_bad_mac" if isinstance(exc, qr.QrBadMac) else "qr_malformed")
            return None
        ledger = rt.ledger
        paid = gate.paid_by(token, now_s)
        if paid == (tid, seq):
            # This very request paid with it: the ledger answers a repeat with the original
            # answer (a retry after a failed commit is decided again, as any request is).
            return ledger.purchase(tid, seq, token.card_no, self.merchant_id, ev.amount_fen,
                                   now_s)
        if paid is None:
            problem = gate.time_problem(token, now_s)
            if problem is None:
                if gate.full:
                    self._refuse(_RC.BUSY, seq, "too many QR codes in use: retry later with "
                                 "the same txn_seq")
                    return None
                o = ledger.purchase(tid, seq, token.card_no, self.merchant_id, ev.amount_fen,
                                    now_s)
                if o.code == APPROVED and not o.repeat and o.lsn:
                    gate.spend(token, tid, seq)
                return o
            code, reason = _RC.QR_EXPIRED, ""
        else:
            code, reason = _RC.QR_USED, "qr_reused"
            problem = "the QR code has already paid: refresh it"
        if seq > ledger.last_txn_seq(tid):
            # Above every txn_seq this terminal has had decided: not a repeat. Refuse now.
            self._refuse(code, seq, problem, reason=reason,
                         paid_by=request_id(*paid) if paid else None)
            return None
        # Possibly a repeat of a request decided while the code could still pay: the journal
        # has the answer it is owed (the look-up waits until everything decided is durable);
        # if the journal does not hold it, the refusal.
        self._outstanding += 1
        rt.look_up_old(self, Answer.refusal(seq, code, problem, reason))
        return None

    # -- control messages ------------------------------------------------------------------

    def _control(self, ev: Any) -> None:
        t = type(ev)
        if t is _Heartbeat:
            self._out.append(self._conn.send(ocp.HeartbeatAck(int(time.time() * 1000))))
        elif t is ocp.SignOn:
            self._sign_on(ev)
        elif t is ocp.SignOnConfirm:
            self._confirm(ev)
        elif t is ocp.SignOff:
            self.log.info("ocp.sign_off", terminal_id=self.terminal_id)
            self._rt.close_after_answers(self)
        elif t is ocp.Error:
            if self.is_door and self._rt.door_commands.refused(self.terminal_id, ev):
                return  # a door that cannot carry out a command (docs/protocol.md 4.5)
            self.log.warning("ocp.terminal_error", terminal_id=self.terminal_id, code=ev.code,
                             detail=ev.detail)
        else:
            self._refuse(_RC.UNEXPECTED_MESSAGE, 0, f"{t.__name__} is not handled by the switch")

    def _sign_on(self, ev: ocp.SignOn) -> None:
        rt = self._rt
        info = rt.master.terminals.get(ev.terminal_id)
        if info is None or not info.enabled:
            code = _RC.UNKNOWN_TERMINAL if info is None else _RC.TERMINAL_DISABLED
            metrics.protocol_errors_total.labels(metrics.CODE_NAMES[code]).inc()
            self.log.warning("ocp.sign_on_refused", terminal_id=ev.terminal_id, peer=self.peer,
                             code=int(code))
            self._out.append(self._conn.send(ocp.Error(code, 0, "terminal cannot sign on")))
            self.close()
            return
        self._pending_terminal = info
        self._out.append(self._conn.accept_sign_on(rt.terminal_key(info), os.urandom(16)))

    def _confirm(self, ev: ocp.SignOnConfirm) -> None:
        rt = self._rt
        info = self._pending_terminal
        assert info is not None
        self.terminal_id = info.terminal_id
        self.merchant_id = info.merchant_id
        # A change of kind, like disabling or re-keying, retires the session (change feed).
        self._permitted = ocp.TERMINAL_KIND_MESSAGES[ocp.TerminalKind(info.kind)]
        old = rt.sessions.get(info.terminal_id)
        if old is not None and old is not self:
            self.log.info("ocp.session_superseded", terminal_id=info.terminal_id, peer=old.peer)
            rt.sessions.pop(info.terminal_id)
            old._kind_gauge.dec()
            old.end(_RC.SESSION_REPLACED, "terminal signed on again on another connection")
        rt.sessions[info.terminal_id] = self
        # Online (in the next batch, after its answers: switch/_presence.py), and a door
        # terminal's doors with it.
        rt.journal.presence_changed(info.terminal_id, True, self.peer,
                                    info.kind == ocp.TerminalKind.DOOR)
        self._kind_gauge = metrics.terminals_connected.labels(
            metrics.TERMINAL_KINDS.get(info.kind, "other")
        )
        self._kind_gauge.inc()
        last = max(rt.ledger.last_txn_seq(info.terminal_id),
                   rt.access.last_txn_seq.get(info.terminal_id, 0))  # ACCESS
        self._out.append(
            self._conn.send(
                ocp.SignOnResult(
                    _RC.APPROVED,
                    int(time.time() * 1000),
                    last,
                    rt.settings.heartbeat_interval_seconds,
                )
            )
        )
        if info.kind == ocp.TerminalKind.DOOR:  # doors in mode free / locked: held so
            rt.door_commands.signed_on(self)
        self.log.info(
            "ocp.sign_on",
            terminal_id=info.terminal_id,
            peer=self.peer,
            terminal_last_txn_seq=ev.last_txn_seq,
            switch_last_txn_seq=last,
            firmware=ev.firmware,
        )

    # -- refusals --------------------------------------------------------------------------

    def _refuse(self, code: int, txn_seq: int, detail: str, *, reason: str = "",
                **extra: Any) -> None:
        """Refuse one request of an authenticated terminal; the connection stays. A `reason`
        makes it a security event, like a bad MAC: the terminal asked for something its
        registration does not allow ("not_permitted"), or offered a forged or spent QR code."""
        self.log_refusal(code, txn_seq, detail, reason, **extra)
        self._out.append(self._conn.send(ocp.Error(code, txn_seq, detail[:200])))

    def log_refusal(self, code: int, txn_seq: int, detail: str, reason: str = "",
                    **extra: Any) -> None:
        """Count and log a request refused without a decision (`_refuse`, or a QR purchase
        refused after its journal look-up found nothing)."""
        metrics.protocol_errors_total.labels(metrics.CODE_NAMES.get(code, str(code))).inc()
        fields = {k: v for k, v in extra.items() if v is not None}
        if reason:
            fields["reason"] = reason
        self.log.warning("ocp.security_violation" if reason else "ocp.request_refused",
                         request_id=request_id(self.terminal_id, txn_seq),
                         terminal_id=self.terminal_id, code=int(code), txn_seq=txn_seq,
                         detail=detail, **fields)

    def _protocol_error(self, exc: ocp.OcpRemoteError) -> None:
        code = int(exc.response_code)
        metrics.protocol_errors_total.labels(metrics.CODE_NAMES.get(code, str(code))).inc()
        # A forged or altered frame (bad MAC) and a replayed or skipped one (sequence) are
        # security events: somebody may be attacking the terminal link.
        security = isinstance(exc, (ocp.BadMac, ocp.SequenceError))
        self.log.warning(
            "ocp.security_violation" if security else "ocp.protocol_error",
            reason="bad_mac" if isinstance(exc, ocp.BadMac) else (
                "replay_or_sequence" if security else "malformed"),
            terminal_id=self.terminal_id,
            peer=self.peer,
            code=code,
            error=type(exc).__name__,
            detail=str(exc)[:200],
        )
        with contextlib.suppress(ocp.OcpError):
            self._out.append(self._conn.send(ocp.Error(code, exc.txn_seq, str(exc)[:200])))
        self.close()
