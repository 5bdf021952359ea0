"""OCP message bodies: msgspec Structs in one tagged union, encoded as MessagePack arrays.

Each body is `[tag, field1, field2, ...]` (`array_like=True`, integer tags). Constraints live in
the types, so decoding also validates. Rules (docs/protocol.md, "Evolution"): tags are never
reused; new fields are only appended, each with a default; a receiver ignores trailing fields it
does not know. Field constraints are checked when a message is decoded, not when it is built
or sent: the receiver is the one that must not trust it.
"""

from __future__ import annotations

import enum
from typing import Annotated, Final, Union

import msgspec
from msgspec import Meta

from protocols import limits


class Direction(enum.StrEnum):
    """Who sends a message: terminal to switch, switch to terminal, or either."""

    T2S = "T→S"
    S2T = "S→T"
    BOTH = "both"


class TerminalKind(enum.IntEnum):
    POS = 1
    KIOSK = 2
    DOOR = 3
    ATTENDANCE = 4
    WATER = 5
    ADMIN = 6

    @property
    def label(self) -> str:
        """How the spec and the switch's refusals name the kind: "POS", "kiosk", "door"..."""
        return "POS" if self is TerminalKind.POS else self.name.lower()


TerminalId = Annotated[int, Meta(ge=1, le=limits.TERMINAL_ID_MAX)]
Nonce = Annotated[bytes, Meta(min_length=limits.NONCE_BYTES, max_length=limits.NONCE_BYTES)]
TxnSeq = Annotated[int, Meta(ge=1, le=limits.TXN_SEQ_MAX)]
TxnSeqOrZero = Annotated[int, Meta(ge=0, le=limits.TXN_SEQ_MAX)]
CardNo = Annotated[int, Meta(ge=1, le=limits.CARD_NO_MAX)]
MerchantId = Annotated[int, Meta(ge=1, le=limits.MERCHANT_ID_MAX)]
WalletNo = Annotated[int, Meta(ge=0, le=1)]
"""A cardholder wallet: 0 main (cash), 1 subsidy."""
AmountFen = Annotated[int, Meta(ge=0, le=limits.AMOUNT_FEN_MAX)]
BalanceFen = Annotated[int, Meta(ge=limits.BALANCE_FEN_MIN, le=limits.BALANCE_FEN_MAX)]
Code = Annotated[int, Meta(ge=0, le=limits.CODE_MAX)]
TimeMs = Annotated[int, Meta(ge=0, le=limits.TIME_MS_MAX)]
Kind = Annotated[int, Meta(ge=1, le=limits.TERMINAL_KIND_MAX)]
ProtocolVersion = Annotated[int, Meta(ge=1, le=limits.PROTOCOL_VERSION_MAX)]
HeartbeatSeconds = Annotated[int, Meta(ge=1, le=limits.HEARTBEAT_INTERVAL_SECONDS_MAX)]
Firmware = Annotated[str, Meta(max_length=limits.FIRMWARE_CHARS_MAX)]
Detail = Annotated[str, Meta(max_length=limits.DETAIL_CHARS_MAX)]
QrText = Annotated[str, Meta(min_length=1, max_length=limits.QR_CHARS_MAX)]
ReaderNo = Annotated[int, Meta(ge=1, le=limits.READER_NO_MAX)]
PassDirection = Annotated[int, Meta(ge=0, le=1)]
"""0 in, 1 out."""
CredentialKind = Annotated[int, Meta(ge=1, le=4)]
"""1 card, 2 face template id, 3 fingerprint template id, 4 QR code."""
CardNoOrZero = Annotated[int, Meta(ge=0, le=limits.CARD_NO_MAX)]
CredentialText = Annotated[str, Meta(max_length=limits.CREDENTIAL_CHARS_MAX)]
Pin = Annotated[str, Meta(max_length=limits.PIN_CHARS_MAX, pattern="^[0-9]*$")]
FloorAsked = Annotated[int, Meta(ge=-1, le=limits.FLOOR_NO_MAX)]
FloorMask = Annotated[int, Meta(ge=0, le=2**(limits.FLOOR_NO_MAX + 1) - 1)]
OpenMs = Annotated[int, Meta(ge=0, le=limits.OPEN_MS_MAX)]
DoorEventKind = Annotated[int, Meta(ge=1, le=9)]
PinBlock = Annotated[bytes, Meta(min_length=limits.PIN_BLOCK_BYTES,
                                 max_length=limits.PIN_BLOCK_BYTES)]
TopupAmountFen = Annotated[int, Meta(ge=1, le=limits.AMOUNT_FEN_MAX)]
TopupOutcomeNo = Annotated[int, Meta(ge=0, le=2)]
BankCode = Annotated[str, Meta(max_length=limits.BANK_CODE_CHARS_MAX)]


class Message(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """Base of every OCP message. `direction` says who may send it."""

    direction = Direction.BOTH


# --- Session (tags 1-15) ---------------------------------------------------------------------


class SignOn(Message, tag=1, frozen=True):
    """Start a session: which terminal, and its fresh random nonce. Sent plain."""

    direction = Direction.T2S
    terminal_id: TerminalId
    nonce: Nonce
    protocol_version: ProtocolVersion = 1


class SignOnChallenge(Message, tag=2, frozen=True):
    """The switch's fresh nonce; MAC'd with k_s2t, which proves the switch holds the key."""

    direction = Direction.S2T
    nonce: Nonce


class SignOnConfirm(Message, tag=3, frozen=True):
    """MAC'd with k_t2s, which proves the terminal holds the key; completes the handshake."""

    direction = Direction.T2S
    last_txn_seq: TxnSeqOrZero
    terminal_kind: Kind = TerminalKind.POS
    firmware: Firmware = ""


class SignOnResult(Message, tag=4, frozen=True):
    """APPROVED opens the session; any other code closes it."""

    direction = Direction.S2T
    code: Code
    server_time_ms: TimeMs
    last_txn_seq: TxnSeqOrZero
    heartbeat_interval_s: HeartbeatSeconds


class Heartbeat(Message, tag=5, frozen=True):
    direction = Direction.T2S
    terminal_time_ms: TimeMs = 0


class HeartbeatAck(Message, tag=6, frozen=True):
    direction = Direction.S2T
    server_time_ms: TimeMs


class SignOff(Message, tag=7, frozen=True):
    """The terminal sends no more requests; the switch answers what it has and closes."""

    direction = Direction.T2S


# --- Card payments (tags 16-30) --------------------------------------------------------------


class Purchase(Message, tag=16, frozen=True):
    """Charge a card. amount_fen 0 means "the fixed price" at a fixed-amount till."""

    direction = Direction.T2S
    txn_seq: TxnSeq
    card_no: CardNo
    amount_fen: AmountFen
    terminal_time_ms: TimeMs = 0


class PurchaseResult(Message, tag=17, frozen=True):
    direction = Direction.S2T
    txn_seq: TxnSeq
    code: Code
    amount_fen: AmountFen
    """The amount charged (0 when declined)."""
    balance_fen: BalanceFen
    """main_fen + subsidy_fen after the purchase: what the terminal shows."""
    main_fen: BalanceFen
    subsidy_fen: BalanceFen


class Reversal(Message, tag=18, frozen=True):
    """Undo the purchase original_txn_seq of this terminal. amount_fen 0 = whatever was charged."""

    direction = Direction.T2S
    txn_seq: TxnSeq
    original_txn_seq: TxnSeq
    card_no: CardNo
    amount_fen: AmountFen


class ReversalResult(Message, tag=19, frozen=True):
    direction = Direction.S2T
    txn_seq: TxnSeq
    code: Code
    amount_fen: AmountFen
    """The amount returned to the card."""
    balance_fen: BalanceFen


class BalanceInquiry(Message, tag=20, frozen=True):
    direction = Direction.T2S
    txn_seq: TxnSeq
    card_no: CardNo


class BalanceResult(Message, tag=21, frozen=True):
    direction = Direction.S2T
    txn_seq: TxnSeq
    code: Code
    balance_fen: BalanceFen
    main_fen: BalanceFen
    subsidy_fen: BalanceFen


class QrPurchase(Message, tag=22, frozen=True):
    """Charge the card of a phone QR code: qr is the scanned text, as scanned (section 4.4).
    Answered with PurchaseResult, or refused with Error QR_INVALID, QR_EXPIRED or QR_USED."""

    direction = Direction.T2S
    txn_seq: TxnSeq
    qr: QrText
    amount_fen: AmountFen
    terminal_time_ms: TimeMs = 0


# --- Door access (tags 32-47) ----------------------------------------------------------------
# Sent by door terminals (kind 3) only (TERMINAL_KIND_MESSAGES). Decided in the switch from its
# access rules, journaled in the group commit like purchases, answered after the commit
# (section 4.5; docs/access.md).


class CredentialKindCode(enum.IntEnum):
    CARD = 1
    FACE = 2
    FINGERPRINT = 3
    QR = 4


class DoorEventCode(enum.IntEnum):
    OPENED = 1
    CLOSED = 2
    HELD_OPEN = 3
    FORCED_OPEN = 4
    TAMPER = 5
    DURESS = 6
    LOCK_FAULT = 7
    TAMPER_CLEARED = 8
    LOCK_OK = 9


class AccessRequest(Message, tag=32, frozen=True):
    """May this credential pass this reader's door? credential_kind 1 card (card_no), 2 face or
    3 fingerprint (credential: the template id; card_no, if not 0, the card read with it), 4 QR
    code (credential: the scanned text; used once).
    direction 0 in, 1 out (used where the reader is registered for both). pin: what was typed
    ("" none); duress: the terminal's duress flag. floor: the elevator floor asked (-1: none,
    answer with every permitted floor). Answered with AccessResult."""

    direction = Direction.T2S
    txn_seq: TxnSeq
    reader_no: ReaderNo
    pass_direction: PassDirection
    credential_kind: CredentialKind
    card_no: CardNoOrZero = 0
    credential: CredentialText = ""
    pin: Pin = ""
    duress: bool = False
    floor: FloorAsked = -1
    terminal_time_ms: TimeMs = 0


class AccessResult(Message, tag=33, frozen=True):
    """code 0: open the door for open_ms (an elevator: enable the floors of floor_mask, bit n =
    floor n). Any other code: stay shut; the code is the deny reason (section 9)."""

    direction = Direction.S2T
    txn_seq: TxnSeq
    code: Code
    open_ms: OpenMs = 0
    floor_mask: FloorMask = 0


class DoorEvent(Message, tag=34, frozen=True):
    """What the door of reader reader_no did (DoorEventCode): opened, closed, held open too
    long, forced open, tamper, duress, lock fault, tamper cleared, lock ok. Journaled; may raise
    or clear an alarm. Answered with DoorEventAck."""

    direction = Direction.T2S
    txn_seq: TxnSeq
    reader_no: ReaderNo
    event: DoorEventKind
    terminal_time_ms: TimeMs = 0


class DoorEventAck(Message, tag=35, frozen=True):
    """code 0: the event is journaled; the terminal may forget it."""

    direction = Direction.S2T
    txn_seq: TxnSeq
    code: Code


class DoorCommandAction(enum.IntEnum):
    """DoorCommand.action: what the door is told to do (docs/protocol.md 4.5)."""

    OPEN_ONCE = 1
    """Unlock for open_ms, then lock again (one pass, as if a card had been accepted)."""
    HOLD_OPEN = 2
    """Free passage: stay unlocked until told otherwise."""
    HOLD_LOCKED = 3
    """Stay locked, and refuse local openings (exit buttons excepted where fire codes say)."""
    NORMAL = 4
    """End HOLD_OPEN or HOLD_LOCKED: back to deciding each credential."""


class DoorCommandCode(enum.IntEnum):
    """DoorCommandAck.code: what the door did with the command."""

    DONE = 0
    """Carried out."""
    LOCK_FAULT = 1
    """The lock could not do it (fault, jammed, no power)."""
    NO_SUCH_READER = 2
    """The terminal has no reader reader_no."""
    REFUSED = 3
    """The terminal will not do it now (for example a fire alarm holds the door open)."""


CommandId = Annotated[int, Meta(ge=1, le=limits.TXN_SEQ_MAX)]
DoorCommandActionNo = Annotated[int, Meta(ge=1, le=4)]
DoorCommandCodeNo = Annotated[int, Meta(ge=0, le=limits.CODE_MAX)]


class DoorCommand(Message, tag=36, frozen=True):
    """Switch to door terminal (kind 3) only: an operator's command for the door of reader
    reader_no (DoorCommandAction): 1 open once for open_ms (0: the terminal's own default), 2
    hold open, 3 hold locked, 4 back to normal. command_id is the switch's (first field, so an
    Error can name it in txn_seq).
    Not a request: it uses no txn_seq of the terminal's. Answered with DoorCommandAck; a
    terminal that does not implement it answers Error(UNKNOWN_MESSAGE, txn_seq=command_id)."""

    direction = Direction.S2T
    command_id: CommandId
    reader_no: ReaderNo
    action: DoorCommandActionNo
    open_ms: OpenMs = 0


class DoorCommandAck(Message, tag=37, frozen=True):
    """Door terminal only: what it did with DoorCommand command_id (DoorCommandCode: 0 done,
    1 lock fault, 2 no such reader, 3 refused). Not a request: no txn_seq, no answer."""

    direction = Direction.T2S
    command_id: CommandId
    code: DoorCommandCodeNo
    terminal_time_ms: TimeMs = 0
# --- Kiosk top-up from a bound bank card, 圈存 (tags 112-127) ------------------------------
# Accepted only from a terminal registered with kind KIOSK (2) (TERMINAL_KIND_MESSAGES); any
# other terminal is refused NOT_PERMITTED. docs/protocol.md section 4.7.


class TopupOutcome(enum.IntEnum):
    """TopupResult.outcome: what happened to the money."""

    APPROVED = 0
    """The bank approved and the wallet was credited (durable before this answer)."""
    DECLINED = 1
    """Nothing moved: refused by the switch (PIN, limits, no bound card...) or by the bank."""
    UNKNOWN = 2
    """The bank did not answer in time (or the link broke, or its answer was unreadable): the
    wallet was NOT credited, and a reversal advice is stored and repeated until the bank
    acknowledges it, so the bank gives back anything it may have taken."""


class Topup(Message, tag=112, frozen=True):
    """Kiosk only. Top up card_no's main wallet by amount_fen from the bank card bound to the
    cardholder (快速圈存: no bank card is shown). pin_block carries the cardholder's
    query/spending PIN sealed under the session's PIN key (section 4.7)."""

    direction = Direction.T2S
    txn_seq: TxnSeq
    card_no: CardNo
    amount_fen: TopupAmountFen
    pin_block: PinBlock
    terminal_time_ms: TimeMs = 0


class TopupResult(Message, tag=113, frozen=True):
    direction = Direction.S2T
    txn_seq: TxnSeq
    code: Code
    """APPROVED, a decline of the switch (PIN_INCORRECT, TOPUP_LIMIT_EXCEEDED...) or of the
    bank (BANK_DECLINED...), or BANK_NO_ANSWER with outcome UNKNOWN."""
    outcome: TopupOutcomeNo
    """TopupOutcome: 0 approved (credited), 1 declined (nothing moved), 2 unknown, not
    credited (a reversal advice is on its way to the bank)."""
    amount_fen: AmountFen
    """The amount credited (0 unless approved)."""
    balance_fen: BalanceFen
    main_fen: BalanceFen
    subsidy_fen: BalanceFen
    bank_code: BankCode = ""
    """The bank's answer code (ISO 8583 field 39) when the bank answered, else empty."""


# --- Privileged (admin) terminal (tags 128-143) -------------------------------------------
# Accepted only from a terminal registered with kind ADMIN (6) (TERMINAL_KIND_MESSAGES); any
# other terminal is refused NOT_PERMITTED. The switch decides, journals and answers them like
# purchases.


class _AdminResult(Message, frozen=True):
    # The answer to Credit, Debit or Transfer (untagged base; the subclasses keep its field
    # order, so each encodes as [tag, txn_seq, code, amount_fen, balance_fen, main_fen,
    # subsidy_fen]).
    direction = Direction.S2T
    txn_seq: TxnSeq
    code: Code
    amount_fen: AmountFen
    """The amount credited, debited or moved (0 when declined)."""
    balance_fen: BalanceFen
    main_fen: BalanceFen
    subsidy_fen: BalanceFen


class Credit(Message, tag=128, frozen=True):
    """Admin only. Top-up at the counter or subsidy issue: the system account from_merchant_id
    (cash desk, subsidy fund...) pays amount_fen into the card's wallet (0 main, 1 subsidy)."""

    direction = Direction.T2S
    txn_seq: TxnSeq
    card_no: CardNo
    wallet: WalletNo
    amount_fen: AmountFen
    from_merchant_id: MerchantId


class CreditResult(_AdminResult, tag=129, frozen=True):
    pass


class Debit(Message, tag=130, frozen=True):
    """Admin only. Refund paid out at the counter, cancellation with refund, downward
    adjustment: the card's wallet (0 main, 1 subsidy) pays amount_fen to the system account
    to_merchant_id. No spending limit applies; the wallet keeps its floor (section 4.3)."""

    direction = Direction.T2S
    txn_seq: TxnSeq
    card_no: CardNo
    wallet: WalletNo
    amount_fen: AmountFen
    to_merchant_id: MerchantId


class DebitResult(_AdminResult, tag=131, frozen=True):
    pass


class Transfer(Message, tag=132, frozen=True):
    """Admin only. Move amount_fen between the card's own wallets, from_wallet (0 main, 1
    subsidy) to the other one. No merchant account takes part."""

    direction = Direction.T2S
    txn_seq: TxnSeq
    card_no: CardNo
    from_wallet: WalletNo
    amount_fen: AmountFen


class TransferResult(_AdminResult, tag=133, frozen=True):
    pass


# --- Offline access lists and offline upload (tags 96-111) -----------------------------------
# A door terminal keeps the list of credentials that may pass it, with the rules it needs to
# decide alone, as a versioned snapshot plus deltas (docs/protocol.md 4.5). Offline it decides
# from that list, numbers each decision with its own record counter and uploads them when it
# is back; the switch journals each record once.

AccessListVersion = Annotated[int, Meta(ge=0, le=limits.ACCESS_LIST_VERSION_MAX)]
TimeZoneId = Annotated[int, Meta(ge=0, le=limits.TERMINAL_ID_MAX)]
EpochSeconds = Annotated[int, Meta(ge=0, le=limits.EPOCH_SECONDS_MAX)]
RecordNo = Annotated[int, Meta(ge=1, le=limits.TXN_SEQ_MAX)]


class AccessEntry(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One credential that may pass the door: within time zone `time_zone_id` (0: at any
    time), between valid_from_s and valid_until_s (Unix seconds, 0: unbounded), to the floors
    of the mask `floors` (elevators; 0: every floor)."""

    card_no: CardNo
    time_zone_id: TimeZoneId = 0
    valid_from_s: EpochSeconds = 0
    valid_until_s: EpochSeconds = 0
    floors: Annotated[int, Meta(ge=0, le=limits.CARD_NO_MAX)] = 0


class TimeZoneInterval(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """[start_minute, end_minute) of the local day `day` (0 Monday .. 6 Sunday, 7 holiday)."""

    day: Annotated[int, Meta(ge=0, le=7)]
    start_minute: Annotated[int, Meta(ge=0, le=1439)]
    end_minute: Annotated[int, Meta(ge=1, le=1440)]


class OfflineTimeZone(msgspec.Struct, array_like=True, frozen=True, gc=False):
    time_zone_id: Annotated[int, Meta(ge=1, le=limits.TERMINAL_ID_MAX)]
    intervals: Annotated[list[TimeZoneInterval], Meta(max_length=limits.INTERVALS_MAX)]


class OfflineRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One decision the door took alone. record_no is the door's own counter (1, 2, ...,
    never reused): the switch journals each (terminal, record_no) once. code: 0 opened, else
    the deny reason (section 9)."""

    record_no: RecordNo
    time_ms: TimeMs
    reader_no: Annotated[int, Meta(ge=1, le=16)]
    direction: Annotated[int, Meta(ge=0, le=1)]
    card_no: CardNo
    code: Code


class AccessListRequest(Message, tag=96, frozen=True):
    """Door only. Ask for the door's access list: have_version 0 for a whole snapshot, else the
    version held, answered with the deltas since (or nothing new), or refused SNAPSHOT_STALE
    when the switch cannot bridge from it (then ask with 0). txn_seq (from the terminal's
    counter; not journaled) pairs an Error with the request."""

    direction = Direction.T2S
    txn_seq: TxnSeq
    have_version: AccessListVersion


class AccessListSnapshot(Message, tag=97, frozen=True):
    """One part of a whole list, `part` of `parts` (0-based), entries in card_no order. The
    rules (local time, holidays, time zones, the door's offline mode) are in part 0; the
    list is complete, and replaces the held one, when every part of `version` arrived."""

    direction = Direction.S2T
    version: Annotated[int, Meta(ge=1, le=limits.ACCESS_LIST_VERSION_MAX)]
    part: Annotated[int, Meta(ge=0, le=limits.ACCESS_LIST_PARTS_MAX - 1)]
    parts: Annotated[int, Meta(ge=1, le=limits.ACCESS_LIST_PARTS_MAX)]
    entries: Annotated[list[AccessEntry], Meta(max_length=limits.ACCESS_ENTRIES_PER_FRAME_MAX)]
    utc_offset_s: Annotated[int, Meta(ge=-50_400, le=50_400)] = 28_800
    offline_mode: Annotated[int, Meta(ge=0, le=2)] = 0
    """0 card (decide from the list), 1 free passage, 2 locked."""
    holidays: Annotated[list[Annotated[int, Meta(ge=0, le=100_000)]],
                        Meta(max_length=limits.HOLIDAYS_MAX)] = []
    """Local dates, as days since 1970-01-01, on which day 7's intervals apply."""
    time_zones: Annotated[list[OfflineTimeZone], Meta(max_length=limits.TIME_ZONES_MAX)] = []


class AccessListDelta(Message, tag=98, frozen=True):
    """The changes from from_version to to_version: entries added or changed (replace the
    entry of that card_no), and card numbers removed. from_version == to_version with no
    changes: the held list is current. A switch MAY also send it unasked. Rules changes come
    as a whole snapshot."""

    direction = Direction.S2T
    from_version: AccessListVersion
    to_version: Annotated[int, Meta(ge=1, le=limits.ACCESS_LIST_VERSION_MAX)]
    upserts: Annotated[list[AccessEntry], Meta(max_length=limits.ACCESS_ENTRIES_PER_FRAME_MAX)]
    removals: Annotated[list[CardNo], Meta(max_length=limits.ACCESS_ENTRIES_PER_FRAME_MAX)]


class OfflineUpload(Message, tag=99, frozen=True):
    """Door only. Decisions the door took while offline, under its list `snapshot_version`,
    in record_no order. Answered OfflineUploadResult; a record already journaled is counted
    as a duplicate, not journaled again."""

    direction = Direction.T2S
    txn_seq: TxnSeq
    snapshot_version: Annotated[int, Meta(ge=1, le=limits.ACCESS_LIST_VERSION_MAX)]
    records: Annotated[list[OfflineRecord],
                       Meta(min_length=1, max_length=limits.OFFLINE_RECORDS_PER_UPLOAD_MAX)]


class OfflineUploadResult(Message, tag=100, frozen=True):
    """APPROVED: every record of the upload is journaled, `accepted` now and `duplicates`
    before (replays); last_record_no is the highest record_no the switch holds of this door,
    so the door may forget records up to it."""

    direction = Direction.S2T
    txn_seq: TxnSeq
    code: Code
    accepted: Annotated[int, Meta(ge=0, le=limits.OFFLINE_RECORDS_PER_UPLOAD_MAX)]
    duplicates: Annotated[int, Meta(ge=0, le=limits.OFFLINE_RECORDS_PER_UPLOAD_MAX)]
    last_record_no: TxnSeqOrZero


# --- Errors (tag 31) -------------------------------------------------------------------------


class Error(Message, tag=31, frozen=True):
    """A protocol or system error. txn_seq names the refused request, or is 0."""

    direction = Direction.BOTH
    code: Code
    txn_seq: TxnSeqOrZero = 0
    detail: Detail = ""


AnyMessage = Union[  # noqa: UP007 - msgspec needs a runtime Union object
    SignOn,
    SignOnChallenge,
    SignOnConfirm,
    SignOnResult,
    Heartbeat,
    HeartbeatAck,
    SignOff,
    Purchase,
    PurchaseResult,
    Reversal,
    ReversalResult,
    BalanceInquiry,
    BalanceResult,
    QrPurchase,
    Error,
    Topup,
    TopupResult,
    Credit,
    CreditResult,
    Debit,
    DebitResult,
    Transfer,
    TransferResult,
    AccessRequest,
    AccessResult,
    DoorEvent,
    DoorEventAck,
    DoorCommand,
    DoorCommandAck,
    AccessListRequest,
    AccessListSnapshot,
    AccessListDelta,
    OfflineUpload,
    OfflineUploadResult,
]

MESSAGE_TYPES: Final[tuple[type[Message], ...]] = AnyMessage.__args__  # type: ignore[attr-defined]
MESSAGE_BY_TAG: Final[dict[int, type[Message]]] = {
    cls.__struct_config__.tag: cls for cls in MESSAGE_TYPES  # type: ignore[misc]
}

RESERVED_TAG_RANGES: Final[tuple[tuple[int, int, str], ...]] = (
    (8, 15, "session management (future)"),
    (23, 30, "card payments (future)"),
    (38, 47, "door access (future)"),
    (48, 63, "attendance"),
    (64, 79, "water sessions and two-phase holds (authorize, capture, release)"),
    (80, 95, "offline record upload"),
    (101, 111, "offline access lists and upload (future)"),
    (114, 127, "kiosk top-up (future)"),
    (134, 143, "privileged (admin) terminal (future)"),
)
"""Tag ranges reserved for later messages; assigning them is not a version break."""

REQUEST_TYPES: Final[frozenset[type[Message]]] = frozenset(
    {Purchase, Reversal, BalanceInquiry, QrPurchase, Heartbeat, SignOff, Credit, Debit,
     Transfer, AccessRequest, DoorEvent, AccessListRequest, OfflineUpload, Topup}
)
"""Terminal messages that need a session; before sign-on they are answered NOT_SIGNED_ON."""

SESSION_MESSAGE_TYPES: Final[frozenset[type[Message]]] = frozenset(
    {SignOn, SignOnConfirm, Heartbeat, SignOff, Error}
)
"""What a terminal of any kind may send: sign-on, heartbeats, sign-off and errors."""

OFFLINE_ACCESS_MESSAGE_TYPES: Final[frozenset[type[Message]]] = frozenset(
    {AccessListRequest, OfflineUpload}
)
"""What a door terminal sends to keep deciding while offline (tags 96-111)."""

TERMINAL_KIND_MESSAGES: Final[dict[TerminalKind, frozenset[type[Message]]]] = {
    TerminalKind.POS: SESSION_MESSAGE_TYPES | {Purchase, Reversal, BalanceInquiry, QrPurchase},
    TerminalKind.KIOSK: SESSION_MESSAGE_TYPES | {BalanceInquiry, Topup},
    TerminalKind.DOOR: SESSION_MESSAGE_TYPES | OFFLINE_ACCESS_MESSAGE_TYPES
    | frozenset({AccessRequest, DoorEvent, DoorCommandAck}),
    TerminalKind.ATTENDANCE: SESSION_MESSAGE_TYPES,
    TerminalKind.WATER: SESSION_MESSAGE_TYPES | {BalanceInquiry},
    TerminalKind.ADMIN: SESSION_MESSAGE_TYPES | {BalanceInquiry, Credit, Debit, Transfer},
}
"""The messages a terminal of each kind may send (docs/protocol.md 4.1). The kind is the
terminal's registration, never SignOnConfirm.terminal_kind. A switch refuses any other message
with Error(NOT_PERMITTED): not decided, not journaled, txn_seq not used up, session kept. Door,
attendance and water messages (tags 48-79) join their kinds' sets when they are assigned; door
access (32-37) and offline lists (96-100) are the door kind's alone, and a kiosk's Topup (112)
is accepted from kiosks only."""

TXN_SEQ_FIRST: Final[frozenset[type[Message]]] = frozenset(
    cls for cls in MESSAGE_TYPES if cls.__struct_fields__[:1] in (("txn_seq",), ("command_id",))
)
"""Messages whose first field is txn_seq, or a DoorCommand's command_id (recoverable from a
body that fails validation, so the Error refusing it can name it)."""

for _cls in MESSAGE_TYPES:
    assert isinstance(_cls.__struct_config__.tag, int)
    assert not any(lo <= _cls.__struct_config__.tag <= hi for lo, hi, _ in RESERVED_TAG_RANGES)
assert len(MESSAGE_BY_TAG) == len(MESSAGE_TYPES), "tags are unique"
assert all(
    cls.direction is not Direction.S2T for sent in TERMINAL_KIND_MESSAGES.values() for cls in sent
), "terminals send only terminal messages"
assert set(TERMINAL_KIND_MESSAGES) == set(TerminalKind), "every kind has its messages"
