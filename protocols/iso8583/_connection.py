"""The sans-IO bank-link connection: bytes in, messages out, and messages to bytes.

    conn = Connection(keys)           # keys: the link's MacKeys, shared by its connections
    conn.receive_data(data)           # b"" means EOF
    ev = conn.next_event()            # a message Struct, NEED_DATA or CLOSED
    data = conn.send(msg, now=now)    # bytes to write

A message the spec refuses raises its Iso8583RemoteError from `next_event()`; the connection
goes on with the next frame unless the error `closes_connection` (a length header over the
limit: the stream can no longer be framed), after which `next_event()` returns CLOSED. No
state table beyond that: which message may come when is the runtime's business (a response
matches a request it sent, or is counted and dropped).
"""

from __future__ import annotations

import datetime as dt
import enum

from protocols.iso8583 import limits
from protocols.iso8583._codec import LENGTH, decode_message, encode_frame
from protocols.iso8583._errors import FrameTooLarge, Iso8583LocalError, MalformedMessage
from protocols.iso8583._mac import MacKeys
from protocols.iso8583._messages import Message


class Signal(enum.Enum):
    NEED_DATA = "NEED_DATA"
    CLOSED = "CLOSED"


NEED_DATA = Signal.NEED_DATA
CLOSED = Signal.CLOSED


class Connection:
    __slots__ = ("_buffer", "_eof", "broken", "keys")

    def __init__(self, keys: MacKeys | None = None) -> None:
        self.keys = keys if keys is not None else MacKeys()
        self._buffer = bytearray()
        self._eof = False
        self.broken = False
        """True after a closing error: the caller closes the socket."""

    def receive_data(self, data: bytes) -> None:
        if self._eof:
            raise Iso8583LocalError("data after EOF")
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_event(self) -> Message | Signal:
        if self.broken:
            return CLOSED
        buf = self._buffer
        if len(buf) < limits.LENGTH_FIELD_BYTES:
            return CLOSED if self._eof else NEED_DATA
        (length,) = LENGTH.unpack_from(buf, 0)
        if length > limits.MESSAGE_BYTES_MAX:
            self.broken = True
            buf.clear()
            raise FrameTooLarge(f"length header {length} > {limits.MESSAGE_BYTES_MAX}")
        end = limits.LENGTH_FIELD_BYTES + length
        if len(buf) < end:
            if self._eof:
                self.broken = True
                raise MalformedMessage(f"EOF inside a frame of {length} bytes")
            return NEED_DATA
        message = bytes(buf[limits.LENGTH_FIELD_BYTES : end])
        del buf[:end]
        return decode_message(message, self.keys)

    def send(self, msg: Message, *, now: dt.datetime) -> bytes:
        return encode_frame(msg, now=now, keys=self.keys)

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)
