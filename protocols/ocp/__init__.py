"""OCP, the OneCard terminal protocol: a sans-IO codec and connection state machine.

The normative wire format is docs/protocol.md. Use it like h11::

    conn = ocp.Connection(ocp.Role.SWITCH)
    conn.receive_data(data)           # b"" means EOF
    ev = conn.next_event()            # a message Struct, ocp.NEED_DATA or ocp.CLOSED
    data = conn.send(msg)             # bytes to write

Everything public is re-exported here; the modules starting with `_` are private.
"""

from protocols.ocp._codes import (
    CODE_INFO,
    PURCHASE_CHECK_PRECEDENCE,
    CodeInfo,
    CodeKind,
    ResponseCode,
)
from protocols.ocp._connection import CLOSED, NEED_DATA, Connection, Signal, Statistics
from protocols.ocp._errors import (
    BadMac,
    FrameTooLarge,
    InvalidField,
    MalformedFrame,
    NotSignedOn,
    OcpError,
    OcpLocalError,
    OcpRemoteError,
    SequenceError,
    UnexpectedMessage,
    UnknownMessage,
    UnsupportedVersion,
)
from protocols.ocp._frames import FLAG_MAC, VERSION
from protocols.ocp._frames import decode_frame as _decode_frame
from protocols.ocp._frames import encode_frame as _encode_frame
from protocols.ocp._mac import (
    MacKey,
    derive_session_keys,
    derive_terminal_key,
    hkdf_expand,
    hkdf_extract,
)
from protocols.ocp._messages import (
    MESSAGE_TYPES,
    OFFLINE_ACCESS_MESSAGE_TYPES,
    RESERVED_TAG_RANGES,
    SESSION_MESSAGE_TYPES,
    TERMINAL_KIND_MESSAGES,
    AccessEntry,
    AccessListDelta,
    AccessListRequest,
    AccessListSnapshot,
    AccessRequest,
    AccessResult,
    BalanceInquiry,
    BalanceResult,
    CredentialKindCode,
    Credit,
    CreditResult,
    Debit,
    DebitResult,
    Direction,
    DoorCommand,
    DoorCommandAck,
    DoorCommandAction,
    DoorCommandCode,
    DoorEvent,
    DoorEventAck,
    DoorEventCode,
    Error,
    Heartbeat,
    HeartbeatAck,
    Message,
    OfflineRecord,
    OfflineTimeZone,
    OfflineUpload,
    OfflineUploadResult,
    Purchase,
    PurchaseResult,
    QrPurchase,
    Reversal,
    ReversalResult,
    SignOff,
    SignOn,
    SignOnChallenge,
    SignOnConfirm,
    SignOnResult,
    TerminalKind,
    TimeZoneInterval,
    Topup,
    TopupOutcome,
    TopupResult,
    Transfer,
    TransferResult,
)
from protocols.ocp._pin import PinBlockInvalid, derive_pin_key, open_pin, seal_pin
from protocols.ocp._state import TRANSITIONS, Role, State, Way


def encode_frame(msg: Message, *, sequence: int, mac_key: bytes | None = None) -> bytes:
    """One frame carrying `msg` with this sequence, MAC'd under `mac_key` when given.

    Encode-only: no state, no field checks. For tests, vectors and tools; a live session uses
    Connection.send().
    """
    return _encode_frame(msg, sequence, None if mac_key is None else MacKey(mac_key))


def decode_frame(frame: bytes, *, mac_key: bytes | None = None) -> tuple[int, Message]:
    """(sequence, message) of one whole frame, its MAC verified under `mac_key` when given.

    Raises only OcpRemoteError subclasses. No state or sequence checks: a live session uses
    Connection.next_event().
    """
    return _decode_frame(bytes(frame), None if mac_key is None else MacKey(mac_key))


__all__ = [
    "CLOSED",
    "CODE_INFO",
    "FLAG_MAC",
    "MESSAGE_TYPES",
    "NEED_DATA",
    "OFFLINE_ACCESS_MESSAGE_TYPES",
    "PURCHASE_CHECK_PRECEDENCE",
    "RESERVED_TAG_RANGES",
    "SESSION_MESSAGE_TYPES",
    "TERMINAL_KIND_MESSAGES",
    "TRANSITIONS",
    "VERSION",
    "AccessEntry",
    "AccessListDelta",
    "AccessListRequest",
    "AccessListSnapshot",
    "AccessRequest",
    "AccessResult",
    "BadMac",
    "BalanceInquiry",
    "BalanceResult",
    "CodeInfo",
    "CodeKind",
    "Connection",
    "CredentialKindCode",
    "Credit",
    "CreditResult",
    "Debit",
    "DebitResult",
    "Direction",
    "DoorCommand",
    "DoorCommandAck",
    "DoorCommandAction",
    "DoorCommandCode",
    "DoorEvent",
    "DoorEventAck",
    "DoorEventCode",
    "Error",
    "FrameTooLarge",
    "Heartbeat",
    "HeartbeatAck",
    "InvalidField",
    "MacKey",
    "MalformedFrame",
    "Message",
    "NotSignedOn",
    "OcpError",
    "OcpLocalError",
    "OcpRemoteError",
    "OfflineRecord",
    "OfflineTimeZone",
    "OfflineUpload",
    "OfflineUploadResult",
    "PinBlockInvalid",
    "Purchase",
    "PurchaseResult",
    "QrPurchase",
    "ResponseCode",
    "Reversal",
    "ReversalResult",
    "Role",
    "SequenceError",
    "SignOff",
    "SignOn",
    "SignOnChallenge",
    "SignOnConfirm",
    "SignOnResult",
    "Signal",
    "State",
    "Statistics",
    "TerminalKind",
    "TimeZoneInterval",
    "Topup",
    "TopupOutcome",
    "TopupResult",
    "Transfer",
    "TransferResult",
    "UnexpectedMessage",
    "UnknownMessage",
    "UnsupportedVersion",
    "Way",
    "decode_frame",
    "derive_pin_key",
    "derive_session_keys",
    "derive_terminal_key",
    "encode_frame",
    "hkdf_expand",
    "hkdf_extract",
    "open_pin",
    "seal_pin",
]
