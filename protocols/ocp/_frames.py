"""Frame layout and body codec.

A frame is `length(u32be) version(u8) flags(u8) sequence(u32be) body [mac(16)]`; the length
counts every byte after itself. The body is a MessagePack array `[tag, fields...]`. This module
owns the layout constants, the module-level msgspec Encoder/Decoder, the encoder of whole frames,
and the mapping of body decode failures onto the OCP error classes.
"""

from __future__ import annotations

import hmac
import re
import struct
from typing import Final

import msgspec

from protocols import limits
from protocols.ocp._errors import InvalidField, MalformedFrame, OcpLocalError, UnknownMessage
from protocols.ocp._mac import MacKey
from protocols.ocp._messages import (
    MESSAGE_BY_TAG,
    TXN_SEQ_FIRST,
    AnyMessage,
    Message,
    Reversal,
)

VERSION: Final = 1
FLAG_MAC: Final = 0x01
FLAGS_KNOWN: Final = FLAG_MAC

LENGTH: Final = struct.Struct(">I")
HEADER: Final = struct.Struct(">IBBI")
"""length, version, flags, sequence: the first HEADER.size bytes of every frame."""
PREFIX_BYTES: Final = limits.LENGTH_FIELD_BYTES + limits.HEADER_BYTES
assert HEADER.size == PREFIX_BYTES

ENCODER: Final = msgspec.msgpack.Encoder()
DECODER: Final = msgspec.msgpack.Decoder(AnyMessage)
_RAW_DECODER: Final = msgspec.msgpack.Decoder()
_PATH = re.compile(r" - at `\$\[(\d+)\](.*)`$")
_SHORT = re.compile(r"^Expected `array` of at least length \d+, got (\d+)$")
"""msgspec's reason for a body that ends before a required field: `got` elements, so the first
missing field is element `got` (element 0 is the tag)."""


def encode_frame(msg: Message, sequence: int, mac: MacKey | None) -> bytes:
    """One frame carrying `msg`, MAC'd with `mac` when given. Checks no field constraint."""
    if not 0 <= sequence <= limits.SEQUENCE_MAX:
        raise OcpLocalError(f"sequence {sequence} is outside 0..{limits.SEQUENCE_MAX}")
    buf = bytearray(PREFIX_BYTES)
    ENCODER.encode_into(msg, buf, PREFIX_BYTES)
    if mac is None:
        HEADER.pack_into(buf, 0, len(buf) - limits.LENGTH_FIELD_BYTES, VERSION, 0, sequence)
    else:
        length = len(buf) - limits.LENGTH_FIELD_BYTES + limits.MAC_BYTES
        HEADER.pack_into(buf, 0, length, VERSION, FLAG_MAC, sequence)
        buf += mac.mac(buf[limits.LENGTH_FIELD_BYTES :])
    if len(buf) > limits.FRAME_BYTES_MAX:
        raise OcpLocalError(f"{type(msg).__name__} needs {len(buf)} bytes > FRAME_BYTES_MAX")
    return bytes(buf)


def _txn_seq_of(raw: list[object], cls: type[Message] | None) -> int:
    """Element 1 of a raw body when it can be a txn_seq, else 0."""
    if cls is not None and cls not in TXN_SEQ_FIRST:
        return 0
    value = raw[1] if len(raw) > 1 else None
    if type(value) is int and 1 <= value <= limits.TXN_SEQ_MAX:
        return value
    return 0


def decode_body(body: bytes | memoryview) -> Message:
    """Decode and validate a body. Raises MalformedFrame, UnknownMessage or InvalidField only.

    UnknownMessage and InvalidField are raised with closes_connection=False; the connection
    decides whether the state allows that leniency.
    """
    try:
        msg = DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise _classify(body, str(exc)) from None
    except (msgspec.DecodeError, RecursionError, ValueError, TypeError) as exc:
        raise MalformedFrame(f"body is not valid MessagePack: {exc}") from None
    if type(msg) is Reversal and msg.original_txn_seq >= msg.txn_seq:
        # It names no purchase sent before it (each new request gets the next txn_seq).
        raise InvalidField("Reversal: original_txn_seq must be below txn_seq",
                           path="$.original_txn_seq", txn_seq=msg.txn_seq)
    return msg


def _classify(
    body: bytes | memoryview, reason: str
) -> MalformedFrame | UnknownMessage | InvalidField:
    try:
        raw = _RAW_DECODER.decode(body)
    except (msgspec.MsgspecError, RecursionError, ValueError, TypeError) as exc:
        return MalformedFrame(f"body is not valid MessagePack: {exc}")
    if type(raw) is not list or not raw or type(raw[0]) is not int:
        return MalformedFrame("body is not a MessagePack array starting with an integer tag")
    tag = raw[0]
    cls = MESSAGE_BY_TAG.get(tag)
    if cls is None:
        return UnknownMessage(f"unknown message tag {tag}", tag=tag, txn_seq=_txn_seq_of(raw, None))
    path = "$"
    fields = cls.__struct_fields__
    match = _PATH.search(reason)
    if match is not None:
        index, rest = int(match.group(1)), match.group(2)
    elif (match := _SHORT.match(reason)) is not None:
        index, rest = int(match.group(1)), ""
    else:
        index, rest = 0, ""
    if 1 <= index <= len(fields):
        path = f"$.{fields[index - 1]}{rest}"
    return InvalidField(
        f"{cls.__name__}: {reason}", path=path, txn_seq=_txn_seq_of(raw, cls)
    )


def tag_class(body: bytes | memoryview) -> type[Message] | None:
    """The message class named by a body's tag, if the body is an array with a known tag."""
    try:
        raw = _RAW_DECODER.decode(body)
    except (msgspec.MsgspecError, RecursionError, ValueError, TypeError):
        return None
    if type(raw) is list and raw and type(raw[0]) is int:
        return MESSAGE_BY_TAG.get(raw[0])
    return None


def decode_frame(frame: bytes, mac: MacKey | None) -> tuple[int, Message]:
    """(sequence, message) of exactly one whole frame; for tests, vectors and tools.

    With `mac`, the frame MUST carry a MAC that verifies; without, it MUST be plain.
    Raises only OcpRemoteError subclasses (the connection's checks of state and sequence are
    not applied).
    """
    from protocols.ocp._errors import BadMac, FrameTooLarge, UnsupportedVersion

    if len(frame) < PREFIX_BYTES:
        raise MalformedFrame(f"{len(frame)} bytes is shorter than a frame header")
    length, version, flags, sequence = HEADER.unpack_from(frame, 0)
    if length > limits.FRAME_LENGTH_MAX:
        raise FrameTooLarge(f"length prefix {length} > {limits.FRAME_LENGTH_MAX}")
    if length < limits.FRAME_LENGTH_MIN or limits.LENGTH_FIELD_BYTES + length != len(frame):
        raise MalformedFrame(f"length prefix {length} does not match {len(frame)} bytes")
    if version != VERSION:
        raise UnsupportedVersion(f"frame version {version}")
    if flags & ~FLAGS_KNOWN:
        raise MalformedFrame(f"unknown flag bits 0x{flags:02x}")
    end = len(frame)
    if flags & FLAG_MAC:
        if length < limits.FRAME_LENGTH_MIN + limits.MAC_BYTES:
            raise MalformedFrame("MAC flag set but frame too short for a MAC")
        end -= limits.MAC_BYTES
        if mac is None:
            raise BadMac("frame is MAC'd but no key was given")
        if not hmac.compare_digest(mac.mac(frame[limits.LENGTH_FIELD_BYTES : end]), frame[end:]):
            raise BadMac("MAC does not verify")
    elif mac is not None:
        raise BadMac("frame is not MAC'd")
    return sequence, decode_body(frame[PREFIX_BYTES:end])
