"""One terminal's OCP session over a blocking socket: sign on, request, heartbeat, sign off.

Plain `socket` and the sans-IO `protocols.ocp.Connection`, one request at a time. It imports
neither locust nor gevent: under locust (gevent monkey-patched) the socket calls yield to other
greenlets, elsewhere they simply block. The caller serializes calls (one greenlet at a time per
session) and sets every deadline (`timeout_seconds`).

What goes wrong is one of three exceptions, and the session is then closed:

- `SignOnRefused`: the switch answered the sign-on with a code other than APPROVED.
- `AnswerTimeout`: no answer before the deadline (the request may still be decided later).
- `SessionLost`: the connection is gone: refused, reset, closed by the switch (with or without
  a closing `Error`), or broken by a frame that breaks the protocol.

A result with a decline code is an answer, not an exception; so is an `Error` that names the
request and does not close the connection (`BUSY`, `TXN_SEQ_TOO_OLD`): the caller decides.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import Final

from protocols import limits, ocp

RECEIVE_BYTES_MAX: Final = 65_536
"""Largest read from the socket at once (the Connection buffers at most one partial frame)."""

Answer = ocp.PurchaseResult | ocp.ReversalResult | ocp.BalanceResult | ocp.Error
_RESULT_TYPES: Final = (ocp.PurchaseResult, ocp.ReversalResult, ocp.BalanceResult, ocp.Error)


class SessionError(Exception):
    """Root of the session's errors; the session is closed when one is raised."""


class SignOnRefused(SessionError):
    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"sign-on refused: {code_name(code)}")


class AnswerTimeout(SessionError):
    """No answer before the deadline."""


class SessionLost(SessionError):
    """The connection is gone (refused, reset, closed by the switch, or a protocol error)."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        """The response code of the protocol error that ended the session, if one did."""


def code_name(code: int) -> str:
    """`INSUFFICIENT_FUNDS` for 51; the number itself for a code this version does not know."""
    try:
        return ocp.ResponseCode(code).name
    except ValueError:
        return str(code)


def is_decline(code: int) -> bool:
    """True for a business decline (1..79): an answer, journaled, not a failure of the link."""
    return 0 < code < 80


class OcpSession:
    """A signed-on terminal. See the module docstring."""

    def __init__(self, host: str, port: int, terminal_id: int, terminal_key: bytes, *,
                 last_txn_seq: int = 0, firmware: str = "loadtest") -> None:
        self.host = host
        self.port = port
        self.terminal_id = terminal_id
        self._key = terminal_key
        self._firmware = firmware
        self.txn_seq = last_txn_seq
        """The last txn_seq this terminal used; next_txn_seq() hands out the one after it."""
        self.heartbeat_interval_seconds = 30
        self.last_sent = time.monotonic()
        """monotonic() of the last frame sent: the idle time a heartbeat is due after."""
        self._sock: socket.socket | None = None
        self._conn = ocp.Connection(ocp.Role.TERMINAL)

    @property
    def open(self) -> bool:
        return self._sock is not None

    @property
    def bytes_in(self) -> int:
        """Bytes received on the current connection so far."""
        return self._conn.statistics().bytes_in

    def sign_on(self, timeout_seconds: float) -> ocp.SignOnResult:
        """Connect and sign on. txn_seq continues after the higher of ours and the switch's."""
        deadline = time.monotonic() + timeout_seconds
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout_seconds)
        except TimeoutError as exc:
            raise AnswerTimeout(f"connect to {self.host}:{self.port}: {exc}") from None
        except OSError as exc:
            raise SessionLost(f"connect to {self.host}:{self.port}: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._conn = ocp.Connection(ocp.Role.TERMINAL)
        self._send_bytes(self._conn.start_sign_on(self.terminal_id, self._key, os.urandom(16)))
        try:
            challenge = self._next_message(deadline)
        except SessionLost as exc:
            if exc.code == ocp.ResponseCode.BAD_MAC:  # the challenge did not verify: wrong key
                raise SignOnRefused(exc.code) from None
            raise
        if isinstance(challenge, ocp.Error):
            self.close()
            raise SignOnRefused(challenge.code)
        if not isinstance(challenge, ocp.SignOnChallenge):
            self.close()
            raise SessionLost(f"expected SignOnChallenge, got {type(challenge).__name__}")
        self._send(ocp.SignOnConfirm(self.txn_seq, ocp.TerminalKind.POS, self._firmware))
        result = self._next_message(deadline)
        if isinstance(result, ocp.Error | ocp.SignOnResult) and result.code != 0:
            self.close()
            raise SignOnRefused(result.code)
        if not isinstance(result, ocp.SignOnResult):
            self.close()
            raise SessionLost(f"expected SignOnResult, got {type(result).__name__}")
        # A request sent before a lost connection may be journaled after this sign-on read
        # last_txn_seq; never reuse a txn_seq we sent (a repeat would get that old answer).
        self.txn_seq = max(self.txn_seq, result.last_txn_seq)
        self.heartbeat_interval_seconds = result.heartbeat_interval_s
        return result

    def next_txn_seq(self) -> int:
        self.txn_seq += 1
        return self.txn_seq

    def request(self, msg: ocp.Purchase | ocp.Reversal | ocp.BalanceInquiry,
                timeout_seconds: float) -> Answer:
        """Send one request; its result, or the `Error` that names its txn_seq."""
        deadline = time.monotonic() + timeout_seconds
        self._send(msg)
        want = msg.txn_seq
        while True:
            ev = self._next_message(deadline)
            if isinstance(ev, _RESULT_TYPES) and ev.txn_seq == want:
                if isinstance(ev, ocp.Error) and self._conn.state is ocp.State.CLOSED:
                    self.close()
                return ev
            self._other(ev)

    def heartbeat(self, timeout_seconds: float) -> ocp.HeartbeatAck:
        deadline = time.monotonic() + timeout_seconds
        self._send(ocp.Heartbeat(int(time.time() * 1000)))
        while True:
            ev = self._next_message(deadline)
            if isinstance(ev, ocp.HeartbeatAck):
                return ev
            self._other(ev)

    def sign_off(self) -> None:
        """Best effort: say goodbye and close; nothing is raised."""
        if self._sock is not None and self._conn.state is ocp.State.READY:
            with contextlib.suppress(OSError, ocp.OcpError):
                self._sock.sendall(self._conn.send(ocp.SignOff()))
        self.close()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    # --- Internals ---------------------------------------------------------------------------

    def _other(self, ev: ocp.Message) -> None:
        """A message that is not the awaited answer: a closing Error ends the session; a late
        answer to an abandoned request or a stray HeartbeatAck is dropped."""
        if isinstance(ev, ocp.Error) and self._conn.state is ocp.State.CLOSED:
            self.close()
            raise SessionLost(f"switch closed the session: {code_name(ev.code)} {ev.detail}")

    def _send(self, msg: ocp.Message) -> None:
        try:
            data = self._conn.send(msg)
        except ocp.OcpError as exc:
            self.close()
            raise SessionLost(f"cannot send {type(msg).__name__}: {exc}") from None
        self._send_bytes(data)

    def _send_bytes(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise SessionLost("not connected")
        try:
            sock.sendall(data)
        except OSError as exc:
            self.close()
            raise SessionLost(f"send: {exc}") from None
        self.last_sent = time.monotonic()

    def _next_message(self, deadline: float) -> ocp.Message:
        conn = self._conn
        while True:
            try:
                ev = conn.next_event()
            except ocp.OcpRemoteError as exc:
                # Tell the switch why (one Error, plain when no keys were verified), then close.
                detail = f"{type(exc).__name__}: {exc}"[: limits.DETAIL_CHARS_MAX]
                with contextlib.suppress(OSError, ocp.OcpError):
                    if self._sock is not None:
                        self._sock.sendall(conn.send(ocp.Error(exc.response_code, exc.txn_seq,
                                                               detail)))
                self.close()
                raise SessionLost(f"protocol error {type(exc).__name__}",
                                  code=exc.response_code) from None
            if ev is ocp.CLOSED:
                self.close()
                raise SessionLost("switch closed the connection")
            if ev is not ocp.NEED_DATA:
                assert isinstance(ev, ocp.Message)
                return ev
            sock = self._sock
            if sock is None:
                raise SessionLost("not connected")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise AnswerTimeout("no answer before the deadline")
            sock.settimeout(remaining)
            try:
                data = sock.recv(RECEIVE_BYTES_MAX)
            except TimeoutError:
                self.close()
                raise AnswerTimeout("no answer before the deadline") from None
            except OSError as exc:
                self.close()
                raise SessionLost(f"receive: {exc}") from None
            conn.receive_data(data)
