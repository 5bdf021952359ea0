"""The admin API's way to move money: an asyncio OCP client for one admin terminal (kind 6).

Money never moves in the admin API itself. A counter top-up, a subsidy, a refund paid out at
the counter, a downward adjustment or a transfer between a cardholder's wallets is a request
to the switch, made as the site's admin terminal (registered with kind 6; docs/protocol.md
section 4.3): the switch decides it in its balance cache, journals it, and answers only after
the journal commit. Requests are idempotent per (terminal, txn_seq), exactly like a POS's.

    client = SwitchClient(host, port, terminal_id, terminal_key)
    last = await client.start()          # signed on; `last` = highest txn_seq journaled
    r = await client.credit(txn_seq, card_no, WALLET_MAIN, 5_000, from_merchant_id=2)
    if r.code == 0: ...                  # r.amount_fen, r.main_fen, r.subsidy_fen
    await client.close()

The caller owns txn_seq, and this is the whole contract:

* Give every new money movement a txn_seq above every one used before by this terminal (and
  above `start()`'s answer), and store it with the operation (e.g. with the HTTP request's
  idempotency key) BEFORE calling. A retry of the same operation, after a timeout, a crash of
  the admin API or of the switch, MUST reuse its txn_seq: the switch then answers the original
  result and never applies it twice. A repeat with other fields still gets the original answer.
* One terminal id per process: a second session of the same terminal replaces the first, so
  two processes sharing one admin terminal would keep cutting each other off.
* Keep txn_seqs in flight within 256 of each other: a request 256 or more below the highest
  txn_seq the switch has seen, and not journaled, is refused TXN_SEQ_TOO_OLD (SwitchRefused,
  code 80). Its journal was searched first, so it was NOT carried out: retry with a new
  txn_seq.

Outcomes: a result message (CreditResult, DebitResult, TransferResult, BalanceResult) whose
`code` is 0 (done) or a decline (1-79: nothing moved; the decline is journaled too);
`SwitchRefused` when the switch refused the request without deciding it (NOT_PERMITTED: this
terminal is not registered as an admin terminal; INVALID_FIELD; TXN_SEQ_TOO_OLD);
`SwitchUnavailable` when no answer came within `timeout` (the switch is down, restarting or
unreachable): the outcome is UNKNOWN, retry later with the same txn_seq. BUSY and SYSTEM_ERROR
are retried here, with the same txn_seq, until the timeout.

Connection handling: one TCP connection, requests pipelined (any number may be outstanding,
matched to answers by txn_seq), heartbeats while idle, and reconnection with every request
still waiting resent under its own txn_seq. This module imports only `protocols` (the layer
rule of admin_api).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Final

from protocols import ocp

WALLET_MAIN: Final = 0
WALLET_SUBSIDY: Final = 1
_RETRY_LATER: Final = frozenset({ocp.ResponseCode.BUSY, ocp.ResponseCode.SYSTEM_ERROR})
_RETRY_SECONDS: Final = 0.2
_RECONNECT_SECONDS_MAX: Final = 5.0
_READ_BYTES: Final = 65_536

Answer = ocp.CreditResult | ocp.DebitResult | ocp.TransferResult | ocp.BalanceResult
_ANSWERS: Final = (ocp.CreditResult, ocp.DebitResult, ocp.TransferResult, ocp.BalanceResult)


class SwitchError(Exception):
    """Root of the errors of SwitchClient."""


class SwitchUnavailable(SwitchError):
    """No answer within the timeout. The request may or may not have been carried out: retry
    it later with the same txn_seq (the switch answers the original result)."""


class SwitchRefused(SwitchError):
    """The switch refused the request without deciding it (nothing journaled, nothing moved):
    `code` is NOT_PERMITTED (92), INVALID_FIELD (81) or TXN_SEQ_TOO_OLD (80)."""

    def __init__(self, code: int, txn_seq: int, detail: str) -> None:
        try:
            name = ocp.ResponseCode(code).name
        except ValueError:
            name = str(code)
        super().__init__(f"txn_seq {txn_seq} refused {name} ({code}): {detail}")
        self.code = code
        self.txn_seq = txn_seq
        self.detail = detail


class SwitchClient:
    """One admin terminal's session with the switch. See the module docstring."""

    def __init__(self, host: str, port: int, terminal_id: int, terminal_key: bytes, *,
                 timeout: float = 5.0, firmware: str = "onecard-admin-api") -> None:
        if len(terminal_key) != 32:
            raise ValueError("terminal_key must be 32 bytes")
        self.host = host
        self.port = port
        """Read at each connection attempt: change it and the next reconnection uses it."""
        self.terminal_id = terminal_id
        self.timeout = timeout
        self.last_txn_seq = 0
        """The highest txn_seq the switch had journaled for this terminal at the last sign-on."""
        self.last_error = ""
        """Why the last connection attempt or session ended ("" while none has)."""
        self._key = bytes(terminal_key)
        self._firmware = firmware
        self._pending: dict[int, tuple[ocp.Message, asyncio.Future[Answer]]] = {}
        self._conn: ocp.Connection | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> int:
        """Connect and sign on; the highest txn_seq journaled for this terminal. Raises
        SwitchUnavailable if that does not happen within the timeout (it keeps trying in the
        background until close())."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"ocp-admin-{self.terminal_id}")
        try:
            async with asyncio.timeout(self.timeout):
                await self._ready.wait()
        except TimeoutError:
            raise SwitchUnavailable(f"cannot sign on: {self.last_error or 'timeout'}") from None
        return self.last_txn_seq

    async def close(self) -> None:
        """Sign off and stop. Requests still waiting fail with SwitchUnavailable."""
        self._closed = True
        if self._conn is not None and self._writer is not None:
            with contextlib.suppress(ocp.OcpError, OSError, RuntimeError):
                self._writer.write(self._conn.send(ocp.SignOff()))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(SwitchUnavailable("client closed"))
        self._pending.clear()

    @property
    def connected(self) -> bool:
        """True while signed on."""
        return self._ready.is_set()

    # -- requests ------------------------------------------------------------------------

    async def credit(self, txn_seq: int, card_no: int, wallet: int, amount_fen: int,
                     from_merchant_id: int) -> ocp.CreditResult:
        """The system account from_merchant_id (cash desk, subsidy fund) pays amount_fen into
        the card's wallet (WALLET_MAIN or WALLET_SUBSIDY)."""
        answer = await self._request(
            ocp.Credit(txn_seq, card_no, wallet, amount_fen, from_merchant_id))
        assert isinstance(answer, ocp.CreditResult)
        return answer

    async def debit(self, txn_seq: int, card_no: int, wallet: int, amount_fen: int,
                    to_merchant_id: int) -> ocp.DebitResult:
        """The card's wallet pays amount_fen to the system account to_merchant_id (a refund
        paid out at the counter, a cancellation with refund, a downward adjustment)."""
        answer = await self._request(
            ocp.Debit(txn_seq, card_no, wallet, amount_fen, to_merchant_id))
        assert isinstance(answer, ocp.DebitResult)
        return answer

    async def transfer(self, txn_seq: int, card_no: int, from_wallet: int,
                       amount_fen: int) -> ocp.TransferResult:
        """Move amount_fen from one of the card's wallets to the other."""
        answer = await self._request(ocp.Transfer(txn_seq, card_no, from_wallet, amount_fen))
        assert isinstance(answer, ocp.TransferResult)
        return answer

    async def balance(self, txn_seq: int, card_no: int) -> ocp.BalanceResult:
        """The card's balances as the switch holds them now (uses up a txn_seq, like every
        request; declines as a purchase would at the cash desk: CARD_LOST...)."""
        answer = await self._request(ocp.BalanceInquiry(txn_seq, card_no))
        assert isinstance(answer, ocp.BalanceResult)
        return answer

    async def _request(self, msg: ocp.Message) -> Answer:
        if self._closed:
            raise SwitchUnavailable("client closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"ocp-admin-{self.terminal_id}")
        txn_seq: int = msg.txn_seq  # type: ignore[attr-defined]
        if txn_seq in self._pending:
            raise SwitchError(f"txn_seq {txn_seq} is already in flight")
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[txn_seq] = (msg, future)
        self._send(msg)  # or, when not signed on, at the next sign-on
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            reason = self.last_error if not self.connected else "no answer"
            raise SwitchUnavailable(
                f"txn_seq {txn_seq}: {reason or 'no answer'} within {self.timeout:g} s; the "
                "outcome is unknown: retry with the same txn_seq") from None
        finally:
            entry = self._pending.get(txn_seq)
            if entry is not None and entry[1] is future:
                del self._pending[txn_seq]  # timed out: not resent after a reconnection

    def _send(self, msg: ocp.Message) -> None:
        conn, writer = self._conn, self._writer
        if conn is None or writer is None or not self._ready.is_set():
            return
        try:
            writer.write(conn.send(msg))
        except (ocp.OcpLocalError, OSError, RuntimeError) as exc:
            self.last_error = f"send failed: {exc}"  # resent after the reconnection

    def _retry_later(self, txn_seq: int) -> None:
        entry = self._pending.get(txn_seq)
        if entry is not None and not entry[1].done():
            self._send(entry[0])

    # -- the session ---------------------------------------------------------------------

    async def _run(self) -> None:
        pause = _RETRY_SECONDS
        while not self._closed:
            try:
                await self._session()
                pause = _RETRY_SECONDS
            except (OSError, EOFError, TimeoutError, ocp.OcpError, SwitchError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self._ready.clear()
                writer, self._writer, self._conn = self._writer, None, None
                if writer is not None:
                    writer.close()
            if self._closed:
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, _RECONNECT_SECONDS_MAX)

    async def _session(self) -> None:
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port)
        self._writer = writer
        conn = ocp.Connection(ocp.Role.TERMINAL)
        writer.write(conn.start_sign_on(self.terminal_id, self._key, os.urandom(16)))
        async with asyncio.timeout(self.timeout):
            challenge = await _next(conn, reader)
            if not isinstance(challenge, ocp.SignOnChallenge):
                raise SwitchError(f"sign-on refused: {challenge}")
            writer.write(conn.send(ocp.SignOnConfirm(self.last_txn_seq, ocp.TerminalKind.ADMIN,
                                                     self._firmware)))
            result = await _next(conn, reader)
        if not isinstance(result, ocp.SignOnResult) or result.code != ocp.ResponseCode.APPROVED:
            raise SwitchError(f"sign-on refused: {result}")
        self.last_txn_seq = max(self.last_txn_seq, result.last_txn_seq)
        self._conn = conn
        self._ready.set()
        self.last_error = ""
        for txn_seq in sorted(self._pending):  # unanswered: the same txn_seq, the same fields
            self._send(self._pending[txn_seq][0])
        idle = max(1.0, result.heartbeat_interval_s / 2)
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout(idle):
                    ev = await _next(conn, reader)
            except TimeoutError:
                writer.write(conn.send(ocp.Heartbeat(int(time.time() * 1000))))
                continue
            if isinstance(ev, _ANSWERS):
                entry = self._pending.pop(ev.txn_seq, None)
                if entry is not None and not entry[1].done():
                    entry[1].set_result(ev)
            elif isinstance(ev, ocp.Error):
                entry = self._pending.get(ev.txn_seq) if ev.txn_seq else None
                if entry is None:
                    self.last_error = f"switch error {ev.code}: {ev.detail}"
                elif ev.code in _RETRY_LATER:
                    loop.call_later(_RETRY_SECONDS, self._retry_later, ev.txn_seq)
                elif not entry[1].done():
                    del self._pending[ev.txn_seq]
                    entry[1].set_exception(SwitchRefused(ev.code, ev.txn_seq, ev.detail))


async def _next(conn: ocp.Connection, reader: asyncio.StreamReader) -> ocp.Message:
    """The next message; EOFError when the switch closed the connection."""
    while True:
        ev = conn.next_event()
        if ev is ocp.CLOSED:
            raise EOFError("the switch closed the connection")
        if ev is not ocp.NEED_DATA:
            assert isinstance(ev, ocp.Message)
            return ev
        conn.receive_data(await reader.read(_READ_BYTES))
