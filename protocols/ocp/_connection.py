"""The sans-IO OCP connection: bytes in, events out; messages in, bytes out.

One `Connection` per TCP connection, for either role. It never touches a socket, a clock or a
task: the switch (asyncio), the simulators (trio) and the load generator drive the same object.

    conn.receive_data(data)      # b"" means EOF
    ev = conn.next_event()       # a message Struct, NEED_DATA or CLOSED; raises OcpRemoteError
    data = conn.send(msg)        # bytes to write: framed, sequenced and MAC'd once keys exist

The hot path (a MAC'd frame in a session) is: one length unpack, one header unpack, an HMAC over
a memoryview, one msgspec decode, one dict lookup for the transition.
"""

from __future__ import annotations

import enum
import hmac
from typing import Final, NoReturn

import msgspec

from protocols import limits
from protocols.ocp._codes import CODE_INFO, ResponseCode
from protocols.ocp._errors import (
    BadMac,
    InvalidField,
    MalformedFrame,
    NotSignedOn,
    OcpLocalError,
    OcpRemoteError,
    SequenceError,
    UnexpectedMessage,
    UnknownMessage,
    UnsupportedVersion,
)
from protocols.ocp._errors import (
    FrameTooLarge as _FrameTooLarge,
)
from protocols.ocp._frames import (
    FLAGS_KNOWN,
    HEADER,
    LENGTH,
    PREFIX_BYTES,
    VERSION,
    decode_body,
    encode_frame,
    tag_class,
)
from protocols.ocp._mac import MacKey, derive_session_keys
from protocols.ocp._messages import (
    REQUEST_TYPES,
    Error,
    Message,
    SignOn,
    SignOnChallenge,
    SignOnResult,
)
from protocols.ocp._pin import derive_pin_key
from protocols.ocp._state import (
    EOF_EVENT,
    ERROR_CLOSING,
    NOT_SIGNED_ON_STATES,
    PLAIN_ERROR_STATES,
    SESSION_STATES,
    SIGN_ON_DECLINED,
    Role,
    State,
    Way,
    compile_table,
)


class Signal(enum.Enum):
    """What `next_event()` returns when it has no message."""

    NEED_DATA = "NEED_DATA"
    """Feed more bytes with receive_data()."""
    CLOSED = "CLOSED"
    """The connection is finished (the peer closed, or a closing message was exchanged)."""


NEED_DATA: Final = Signal.NEED_DATA
CLOSED: Final = Signal.CLOSED


class Statistics(msgspec.Struct, frozen=True, gc=False):
    """Counters of one connection."""

    frames_in: int
    frames_out: int
    bytes_in: int
    bytes_out: int
    errors: int
    """Protocol errors raised by next_event() (each an OcpRemoteError)."""


_LENGTH_FIELD = limits.LENGTH_FIELD_BYTES
_MAC_BYTES = limits.MAC_BYTES
_LENGTH_MIN = limits.FRAME_LENGTH_MIN
_LENGTH_MAX = limits.FRAME_LENGTH_MAX
_CLOSING_CODES: Final = frozenset(
    code.value for code, info in CODE_INFO.items() if info.closes_connection
)
_APPROVED = ResponseCode.APPROVED.value
_TABLES: Final = {
    (role, way): compile_table(role, way) for role in Role for way in (Way.SEND, Way.RECEIVE)
}
_ERROR_STATE = State.ERROR
_CLOSED_STATE = State.CLOSED


def _event_name(msg: Message) -> str:
    """The transition-table event of a message (refined for closing Errors, declined sign-ons)."""
    cls = type(msg)
    if cls is Error:
        code = msg.code  # type: ignore[attr-defined]
        return ERROR_CLOSING if code not in _CODES_KNOWN or code in _CLOSING_CODES else "Error"
    if cls is SignOnResult and msg.code != _APPROVED:  # type: ignore[attr-defined]
        return SIGN_ON_DECLINED
    return cls.__name__


_CODES_KNOWN: Final = frozenset(c.value for c in ResponseCode)
_PLAIN_EVENTS: Final = {"SignOn": Role.TERMINAL, "Error": None, ERROR_CLOSING: None}
"""Events that travel in plain frames, and the only role that may send them plain (None: any)."""


def _strict(exc: OcpRemoteError) -> OcpRemoteError:
    """The connection error to raise for a body that fails outside a session.

    InvalidField and UnknownMessage never close the connection, so outside a session (peer not
    authenticated, or still signing on) a schema failure is MalformedFrame and an unknown tag is
    UnexpectedMessage, both connection errors.
    """
    if isinstance(exc, UnknownMessage):
        return UnexpectedMessage(f"{exc.message} (outside a session)")
    if isinstance(exc, InvalidField):
        return MalformedFrame(f"{exc.message} at {exc.path} (outside a session)")
    return exc


class Connection:
    """One end of an OCP connection. See the module docstring and docs/protocol.md."""

    __slots__ = (
        "_buf",
        "_bytes_in",
        "_bytes_out",
        "_eof",
        "_errors",
        "_frames_in",
        "_frames_out",
        "_nonce",
        "_pin_key",
        "_pos",
        "_recv_table",
        "_rx_mac",
        "_rx_seq",
        "_send_table",
        "_state",
        "_terminal_key",
        "_tx_mac",
        "_tx_seq",
        "role",
        "terminal_id",
    )

    def __init__(self, role: Role) -> None:
        self.role: Final = Role(role)
        self.terminal_id: int | None = None
        """Switch side: set by the received SignOn. Terminal side: set by start_sign_on()."""
        self._state = State.IDLE
        self._recv_table = _TABLES[(self.role, Way.RECEIVE)]
        self._send_table = _TABLES[(self.role, Way.SEND)]
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        self._rx_mac: MacKey | None = None
        self._tx_mac: MacKey | None = None
        self._rx_seq = 0
        self._tx_seq = 0
        self._nonce = b""
        self._terminal_key = b""
        self._pin_key = b""
        self._frames_in = self._frames_out = self._bytes_in = self._bytes_out = self._errors = 0

    # --- Introspection ---------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def send_sequence(self) -> int:
        """The sequence number of the next frame send() will produce."""
        return self._tx_seq

    @property
    def receive_sequence(self) -> int:
        """The sequence number the next received frame must carry."""
        return self._rx_seq

    @property
    def pin_key(self) -> bytes:
        """This session's PIN key k_pin (section 4.7; empty before the sign-on's keys): seals
        and opens Topup.pin_block."""
        return self._pin_key

    @property
    def signed_on(self) -> bool:
        """True once session keys are in place (both directions MAC'd)."""
        return self._rx_mac is not None and self._tx_mac is not None

    def statistics(self) -> Statistics:
        return Statistics(
            frames_in=self._frames_in,
            frames_out=self._frames_out,
            bytes_in=self._bytes_in,
            bytes_out=self._bytes_out,
            errors=self._errors,
        )

    def __repr__(self) -> str:
        return (
            f"<ocp.Connection {self.role} {self._state} terminal_id={self.terminal_id} "
            f"rx_seq={self._rx_seq} tx_seq={self._tx_seq}>"
        )

    # --- Receiving -------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes read from the peer; b"" means the peer closed its end.

        Drain next_event() until NEED_DATA before the next call: at most one partial frame may
        stay buffered (OcpLocalError otherwise), so the buffer never holds more than one maximum
        frame beyond the chunk just read.
        """
        if not data:
            self._eof = True
            return
        if self._eof:
            raise OcpLocalError("receive_data() after EOF")
        buf = self._buf
        pos = self._pos
        if pos:
            del buf[:pos]
            self._pos = 0
        if len(buf) >= limits.FRAME_BYTES_MAX:
            raise OcpLocalError(
                f"{len(buf)} unconsumed bytes buffered: drain next_event() until NEED_DATA "
                "before receive_data()"
            )
        buf += data
        self._bytes_in += len(data)

    def next_event(self) -> Message | Signal:
        """The next message from the peer, NEED_DATA, or CLOSED.

        Raises an OcpRemoteError subclass when the peer broke the protocol; unless the error's
        closes_connection is false, the state is then ERROR.
        """
        state = self._state
        if state is _ERROR_STATE:
            raise OcpLocalError("next_event() in state ERROR: send one Error, then close")
        if state is _CLOSED_STATE:
            return CLOSED
        buf = self._buf
        pos = self._pos
        have = len(buf) - pos
        if have < _LENGTH_FIELD:
            return self._at_end(have)
        length = LENGTH.unpack_from(buf, pos)[0]
        if length > _LENGTH_MAX:
            self._fail(_FrameTooLarge(f"length prefix {length} > {_LENGTH_MAX}"))
        if length < _LENGTH_MIN:
            self._fail(MalformedFrame(f"length prefix {length} < {_LENGTH_MIN}"))
        end = pos + _LENGTH_FIELD + length
        if end > len(buf):
            return self._at_end(have)
        _, version, flags, seq = HEADER.unpack_from(buf, pos)
        if version != VERSION:
            self._fail(UnsupportedVersion(f"frame version {version}, expected {VERSION}"))
        if flags & ~FLAGS_KNOWN:
            self._fail(MalformedFrame(f"unknown flag bits 0x{flags:02x}"))
        self._pos = end
        self._frames_in += 1
        if flags:
            if length < _LENGTH_MIN + _MAC_BYTES:
                self._fail(MalformedFrame("MAC flag set but frame too short for a MAC"))
            mac = self._rx_mac
            if mac is not None:
                return self._read_authentic(mac, buf, pos, end, seq)
            return self._read_unkeyed(buf, pos, end - _MAC_BYTES, seq, mac_end=end)
        return self._read_unkeyed(buf, pos, end, seq, mac_end=0)

    def _at_end(self, have: int) -> Signal:
        if not self._eof:
            return NEED_DATA
        if have:
            self._fail(MalformedFrame(f"stream ended inside a frame ({have} bytes)"))
        self._state = self._recv_table[self._state][EOF_EVENT]
        return CLOSED

    def _read_authentic(
        self, mac: MacKey, buf: bytearray, pos: int, end: int, seq: int
    ) -> Message:
        """The hot path: a MAC'd frame while we hold the peer's key."""
        body_end = end - _MAC_BYTES
        view = memoryview(buf)
        signed = view[pos + _LENGTH_FIELD : body_end]
        trailer = view[body_end:end]
        body = view[pos + PREFIX_BYTES : body_end]
        try:
            if not hmac.compare_digest(mac.mac(signed), trailer):
                self._fail(BadMac("MAC does not verify"))
            if seq != self._rx_seq:
                self._fail(SequenceError(f"frame sequence {seq}, expected {self._rx_seq}"))
            self._rx_seq = seq + 1
            try:
                msg = decode_body(body)
            except OcpRemoteError as exc:
                self._fail(self._refine(exc, body))
        finally:
            body.release()
            trailer.release()
            signed.release()
            view.release()
        return self._received(msg)

    def _read_unkeyed(
        self, buf: bytearray, pos: int, body_end: int, seq: int, *, mac_end: int
    ) -> Message:
        """A frame received without the sender's key in hand, or a plain frame in a session."""
        if self._rx_mac is not None and (self.role, self._state) not in PLAIN_ERROR_STATES:
            self._fail(BadMac("plain frame inside a session: every frame MUST be MAC'd"))
        view = memoryview(buf)
        body = view[pos + PREFIX_BYTES : body_end]
        try:
            try:
                msg = decode_body(body)
            except OcpRemoteError as exc:
                self._fail(self._plain_not_error() if self._rx_mac is not None else _strict(exc))
            if self._rx_mac is not None and type(msg) is not Error:
                self._fail(self._plain_not_error())
            event = _event_name(msg)
            self._check_allowed(event, type(msg))
            if mac_end:  # MAC'd, but we have no key yet: only the challenge may do that
                if type(msg) is not SignOnChallenge:
                    self._fail(MalformedFrame(f"{event} MUST be sent plain at this point"))
                with view[pos + _LENGTH_FIELD : body_end] as signed, view[body_end:mac_end] as tr:
                    self._install_terminal_keys(msg, signed, tr)
            else:
                if event not in _PLAIN_EVENTS or _PLAIN_EVENTS[event] not in (None, self._peer):
                    self._fail(BadMac(f"{event} MUST be MAC'd"))
            if seq != self._rx_seq:
                self._fail(SequenceError(f"frame sequence {seq}, expected {self._rx_seq}"))
            self._rx_seq = seq + 1
        finally:
            body.release()
            view.release()
        return self._received(msg)

    def _plain_not_error(self) -> BadMac:
        """A plain frame where only an Error may be plain (PLAIN_ERROR_STATES): whatever it
        carries, even a SignOnConfirm or a request, it is not authentic."""
        return BadMac(f"plain frame in state {self._state}: only an Error may be sent plain here")

    @property
    def _peer(self) -> Role:
        return Role.SWITCH if self.role is Role.TERMINAL else Role.TERMINAL

    def _install_terminal_keys(
        self, msg: SignOnChallenge, signed: memoryview, trailer: memoryview
    ) -> None:
        k_t2s, k_s2t = derive_session_keys(self._terminal_key, self._nonce, msg.nonce)
        rx = MacKey(k_s2t)
        if not hmac.compare_digest(rx.mac(signed), trailer):
            self._fail(BadMac("SignOnChallenge MAC does not verify: wrong terminal key?"))
        self._rx_mac = rx
        self._tx_mac = MacKey(k_t2s)
        self._pin_key = derive_pin_key(self._terminal_key, self._nonce, msg.nonce)
        self._terminal_key = b""

    def _refine(self, exc: OcpRemoteError, body: memoryview) -> OcpRemoteError:
        """Leniency for authentic messages that fail decoding: only in session states."""
        if isinstance(exc, MalformedFrame):
            return exc
        if (self.role, self._state) not in SESSION_STATES:
            return _strict(exc)
        if not isinstance(exc, UnknownMessage):
            cls = tag_class(body)
            if cls is not None and cls.__name__ not in self._recv_table[self._state]:
                return UnexpectedMessage(f"{cls.__name__} received in state {self._state}")
        return exc

    def _check_allowed(self, event: str, cls: type) -> State:
        nxt = self._recv_table[self._state].get(event)
        if nxt is None:
            if (
                self.role is Role.SWITCH
                and cls in REQUEST_TYPES
                and self._state in NOT_SIGNED_ON_STATES
            ):
                self._fail(NotSignedOn(f"{event} before sign-on completed"))
            self._fail(UnexpectedMessage(f"{event} received in state {self._state} by {self.role}"))
        return nxt

    def _received(self, msg: Message) -> Message:
        cls = type(msg)
        event = _event_name(msg) if cls is Error or cls is SignOnResult else cls.__name__
        nxt = self._recv_table[self._state].get(event)
        if nxt is None:
            nxt = self._check_allowed(event, cls)
        self._state = nxt
        if cls is SignOn:
            self.terminal_id = msg.terminal_id  # type: ignore[attr-defined]
            self._nonce = msg.nonce  # type: ignore[attr-defined]
        return msg

    def _fail(self, exc: OcpRemoteError) -> NoReturn:
        self._errors += 1
        if exc.closes_connection:
            self._state = State.ERROR
        raise exc

    # --- Sending ---------------------------------------------------------------------------

    def send(self, msg: Message) -> bytes:
        """Frame `msg` for the peer: the bytes to write. Raises OcpLocalError if not allowed now.

        SignOn and SignOnChallenge are sent by start_sign_on() and accept_sign_on().
        """
        cls = type(msg)
        if cls is SignOn or cls is SignOnChallenge:
            raise OcpLocalError(f"send {cls.__name__} with start_sign_on() / accept_sign_on()")
        event = _event_name(msg) if cls is Error or cls is SignOnResult else cls.__name__
        nxt = self._send_table[self._state].get(event)
        if nxt is None:
            raise OcpLocalError(f"{self.role} cannot send {event} in state {self._state}")
        data = self._frame(msg)
        self._state = nxt
        return data

    def _frame(self, msg: Message) -> bytes:
        seq = self._tx_seq
        if seq > limits.SEQUENCE_MAX:
            raise OcpLocalError("frame sequence exhausted: sign off and sign on again")
        data = encode_frame(msg, seq, self._tx_mac)
        self._tx_seq = seq + 1
        self._frames_out += 1
        self._bytes_out += len(data)
        return data

    def start_sign_on(self, terminal_id: int, terminal_key: bytes, nonce: bytes) -> bytes:
        """Terminal: the plain SignOn frame. `nonce` MUST be 16 fresh random bytes."""
        if self.role is not Role.TERMINAL:
            raise OcpLocalError("start_sign_on() is for Role.TERMINAL")
        if len(terminal_key) != limits.KEY_BYTES:
            raise OcpLocalError(f"terminal_key must be {limits.KEY_BYTES} bytes")
        if len(nonce) != limits.NONCE_BYTES:
            raise OcpLocalError(f"nonce must be {limits.NONCE_BYTES} bytes")
        if not 1 <= terminal_id <= limits.TERMINAL_ID_MAX:
            raise OcpLocalError(f"terminal_id must be 1..{limits.TERMINAL_ID_MAX}")
        nxt = self._send_table[self._state].get("SignOn")
        if nxt is None:
            raise OcpLocalError(f"cannot sign on in state {self._state}")
        data = self._frame(SignOn(terminal_id=terminal_id, nonce=bytes(nonce)))
        self.terminal_id = terminal_id
        self._terminal_key = bytes(terminal_key)
        self._nonce = bytes(nonce)
        self._state = nxt
        return data

    def accept_sign_on(self, terminal_key: bytes, switch_nonce: bytes) -> bytes:
        """Switch: derive the session keys; the MAC'd SignOnChallenge frame.

        `switch_nonce` MUST be 16 fresh random bytes. To refuse the terminal instead, send a
        closing `Error` (UNKNOWN_TERMINAL, TERMINAL_DISABLED, BUSY...) and close.
        """
        if self.role is not Role.SWITCH:
            raise OcpLocalError("accept_sign_on() is for Role.SWITCH")
        if len(terminal_key) != limits.KEY_BYTES:
            raise OcpLocalError(f"terminal_key must be {limits.KEY_BYTES} bytes")
        if len(switch_nonce) != limits.NONCE_BYTES:
            raise OcpLocalError(f"switch_nonce must be {limits.NONCE_BYTES} bytes")
        nxt = self._send_table[self._state].get("SignOnChallenge")
        if nxt is None:
            raise OcpLocalError(f"cannot accept a sign-on in state {self._state}")
        k_t2s, k_s2t = derive_session_keys(terminal_key, self._nonce, switch_nonce)
        self._tx_mac = MacKey(k_s2t)
        self._rx_mac = MacKey(k_t2s)
        self._pin_key = derive_pin_key(terminal_key, self._nonce, switch_nonce)
        data = self._frame(SignOnChallenge(nonce=bytes(switch_nonce)))
        self._state = nxt
        return data
