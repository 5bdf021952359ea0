"""The bank link: ISO 8583 (1987 layout, ASCII fields, binary bitmaps) as a sans-IO codec.

The normative spec is docs/bank-link.md. The field specification is data (`FIELDS`, and `SPEC`
for pyiso8583); messages are msgspec Structs; financial messages carry an AES-CMAC under a key
that the key exchange rotates, the key travelling wrapped under the KEK (RFC 3394)::

    keys = iso8583.MacKeys()
    conn = iso8583.Connection(keys)
    conn.receive_data(data)                  # b"" means EOF
    ev = conn.next_event()                   # a message Struct, NEED_DATA or CLOSED
    data = conn.send(msg, now=now)           # bytes to write

Imports nothing of ours. Everything public is re-exported here.
"""

from protocols.iso8583 import limits
from protocols.iso8583._codec import (
    decode_message,
    encode_frame,
    encode_message,
    frame,
    mti_of,
    original_data,
    transmission_time,
)
from protocols.iso8583._codes import (
    ADVICE_ACKNOWLEDGED,
    APPROVED,
    FIELD39,
    FIELD39_TABLE,
    Field39Info,
)
from protocols.iso8583._connection import CLOSED, NEED_DATA, Connection, Signal
from protocols.iso8583._errors import (
    REMOTE_ERROR_CLASSES,
    REMOTE_ERROR_REASONS,
    BadKey,
    BadMac,
    FrameTooLarge,
    Iso8583Error,
    Iso8583LocalError,
    Iso8583RemoteError,
    MalformedMessage,
    UnknownMti,
)
from protocols.iso8583._mac import MacKeys, cmac, unwrap_key, wrap_key
from protocols.iso8583._messages import (
    CURRENCY_CNY,
    MAC_MTIS,
    MESSAGE_FIELDS,
    PROCESSING_CODE_TOPUP,
    Message,
    NetworkCode,
    NetworkRequest,
    NetworkResponse,
    ReversalAdvice,
    ReversalResponse,
    TopupRequest,
    TopupResponse,
)
from protocols.iso8583._spec import FIELD_BY_NUMBER, FIELDS, SPEC, FieldSpec

__all__ = [
    "ADVICE_ACKNOWLEDGED",
    "APPROVED",
    "CLOSED",
    "CURRENCY_CNY",
    "FIELD39",
    "FIELD39_TABLE",
    "FIELDS",
    "FIELD_BY_NUMBER",
    "MAC_MTIS",
    "MESSAGE_FIELDS",
    "NEED_DATA",
    "PROCESSING_CODE_TOPUP",
    "REMOTE_ERROR_CLASSES",
    "REMOTE_ERROR_REASONS",
    "SPEC",
    "BadKey",
    "BadMac",
    "Connection",
    "Field39Info",
    "FieldSpec",
    "FrameTooLarge",
    "Iso8583Error",
    "Iso8583LocalError",
    "Iso8583RemoteError",
    "MacKeys",
    "MalformedMessage",
    "Message",
    "NetworkCode",
    "NetworkRequest",
    "NetworkResponse",
    "ReversalAdvice",
    "ReversalResponse",
    "Signal",
    "TopupRequest",
    "TopupResponse",
    "UnknownMti",
    "cmac",
    "decode_message",
    "encode_frame",
    "encode_message",
    "frame",
    "limits",
    "mti_of",
    "original_data",
    "transmission_time",
    "unwrap_key",
    "wrap_key",
]
