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


# --- Kiosk top-up from a bound bank card, 圈存 (tags 112-127) ------------------------------
# Accepted only from a terminal registered with kind KIOSK (2) (TERMINAL_KIND_MESSAGES); any
# other terminal is refused NOT_PERMITTED. docs/protocol.md section 4.5.


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
    query/spending PIN sealed under the session's PIN key (section 4.5)."""

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
]

MESSAGE_TYPES: Final[tuple[type[Message], ...]] = AnyMessage.__args__  # type: ignore[attr-defined]
MESSAGE_BY_TAG: Final[dict[int, type[Message]]] = {
    cls.__struct_config__.tag: cls for cls in MESSAGE_TYPES  # type: ignore[misc]
}

RESERVED_TAG_RANGES: Final[tuple[tuple[int, int, str], ...]] = (
    (8, 15, "session management (future)"),
    (23, 30, "card payments (future)"),
    (32, 47, "door access"),
    (48, 63, "attendance"),
    (64, 79, "water sessions and two-phase holds (authorize, capture, release)"),
    (80, 95, "offline record upload"),
    (96, 111, "blacklist and parameter download"),
    (114, 127, "kiosk top-up (future)"),
    (134, 143, "privileged (admin) terminal (future)"),
)
"""Tag ranges reserved for later messages; assigning them is not a version break."""

REQUEST_TYPES: Final[frozenset[type[Message]]] = frozenset(
    {Purchase, Reversal, BalanceInquiry, QrPurchase, Heartbeat, SignOff, Credit, Debit,
     Transfer, Topup}
)
"""Terminal messages that need a session; before sign-on they are answered NOT_SIGNED_ON."""

SESSION_MESSAGE_TYPES: Final[frozenset[type[Message]]] = frozenset(
    {SignOn, SignOnConfirm, Heartbeat, SignOff, Error}
)
"""What a terminal of any kind may send: sign-on, heartbeats, sign-off and errors."""

TERMINAL_KIND_MESSAGES: Final[dict[TerminalKind, frozenset[type[Message]]]] = {
    TerminalKind.POS: SESSION_MESSAGE_TYPES | {Purchase, Reversal, BalanceInquiry, QrPurchase},
    TerminalKind.KIOSK: SESSION_MESSAGE_TYPES | {BalanceInquiry, Topup},
    TerminalKind.DOOR: SESSION_MESSAGE_TYPES,
    TerminalKind.ATTENDANCE: SESSION_MESSAGE_TYPES,
    TerminalKind.WATER: SESSION_MESSAGE_TYPES | {BalanceInquiry},
    TerminalKind.ADMIN: SESSION_MESSAGE_TYPES | {BalanceInquiry, Credit, Debit, Transfer},
}
"""The messages a terminal of each kind may send (docs/protocol.md 4.1). The kind is the
terminal's registration, never SignOnConfirm.terminal_kind. A switch refuses any other message
with Error(NOT_PERMITTED): not decided, not journaled, txn_seq not used up, session kept. Door,
attendance and water messages (tags 32-79) join their kinds' sets when they are assigned; a
kiosk's Topup (112) is accepted from kiosks only."""

TXN_SEQ_FIRST: Final[frozenset[type[Message]]] = frozenset(
    cls for cls in MESSAGE_TYPES if cls.__struct_fields__[:1] == ("txn_seq",)
)
"""Messages whose first field is txn_seq (recoverable from a body that fails validation)."""

for _cls in MESSAGE_TYPES:
    assert isinstance(_cls.__struct_config__.tag, int)
    assert not any(lo <= _cls.__struct_config__.tag <= hi for lo, hi, _ in RESERVED_TAG_RANGES)
assert len(MESSAGE_BY_TAG) == len(MESSAGE_TYPES), "tags are unique"
assert all(
    cls.direction is not Direction.S2T for sent in TERMINAL_KIND_MESSAGES.values() for cls in sent
), "terminals send only terminal messages"
assert set(TERMINAL_KIND_MESSAGES) == set(TerminalKind), "every kind has its messages"
