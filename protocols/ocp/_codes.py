"""Response codes: the one table of codes for OCP and the ledger.

`ResponseCode` holds the numbers; `CODE_INFO` says, for each, who sends it, whether the
connection is closed, whether the request was journaled and what the terminal should do.
`docs/protocol.md` renders both (docs/make_protocol_tables.py), and the connection reads
`CODE_INFO[...].closes_connection` to decide the state after an `Error`.
"""

from __future__ import annotations

import enum

import msgspec


class ResponseCode(enum.IntEnum):
    APPROVED = 0
    # Business declines: results, journaled by the switch.
    INVALID_MERCHANT = 12
    INVALID_AMOUNT = 13
    UNKNOWN_CARD = 14
    ORIGINAL_NOT_FOUND = 25
    ALREADY_REVERSED = 26
    REVERSAL_MISMATCH = 27
    HOLD_NOT_FOUND = 30
    CAPTURE_EXCEEDS_HOLD = 31
    HOLDS_LIMIT_EXCEEDED = 32
    CARD_LOST = 41
    CARD_CANCELLED = 43
    ACCOUNT_CLOSED = 46
    ACCOUNT_FROZEN = 47
    INSUFFICIENT_FUNDS = 51
    # Kiosk top-up (section 4.7): declines of the switch or the bank; nothing moved.
    BANK_INSUFFICIENT_FUNDS = 52
    PIN_INCORRECT = 55
    NO_BANK_CARD = 56
    CROSS_TENANT_NOT_ALLOWED = 57
    TOPUP_NOT_AVAILABLE = 58
    BANK_DECLINED = 59
    TXN_LIMIT_EXCEEDED = 61
    DAILY_LIMIT_EXCEEDED = 62
    MEAL_AMOUNT_LIMIT_EXCEEDED = 63
    MEAL_COUNT_LIMIT_EXCEEDED = 64
    BALANCE_LIMIT_EXCEEDED = 65
    # Access deny reasons (AccessResult.code; docs/access.md, "The decision, step by step").
    CARD_EXPIRED = 66
    NO_PERMISSION = 67
    OUTSIDE_TIME_ZONE = 68
    HOLIDAY = 69
    DOOR_LOCKED = 70
    LOCKDOWN = 71
    APB_VIOLATION = 72
    INTERLOCK = 73
    PIN_REQUIRED = 74
    PIN_WRONG = 75
    MULTI_CARD_PENDING = 76
    FLOOR_NOT_PERMITTED = 77
    TOPUP_LIMIT_EXCEEDED = 53
    TOPUP_DAILY_LIMIT_EXCEEDED = 54
    BANK_NO_ANSWER = 60
    PIN_TRIES_EXCEEDED = 78
    # Security mode with a biometric second factor (docs/protocol.md 4.5).
    SECOND_FACTOR_REQUIRED = 79
    # Protocol and system errors: sent in an Error message, never journaled.
    TXN_SEQ_TOO_OLD = 80
    INVALID_FIELD = 81
    UNKNOWN_MESSAGE = 82
    MALFORMED_FRAME = 83
    FRAME_TOO_LARGE = 84
    UNSUPPORTED_VERSION = 85
    BAD_MAC = 86
    SEQUENCE_ERROR = 87
    NOT_SIGNED_ON = 88
    UNKNOWN_TERMINAL = 89
    TERMINAL_DISABLED = 90
    UNEXPECTED_MESSAGE = 91
    NOT_PERMITTED = 92
    QR_INVALID = 93
    QR_EXPIRED = 94
    QR_USED = 95
    SYSTEM_ERROR = 96
    BUSY = 97
    SHUTTING_DOWN = 98
    SESSION_REPLACED = 99
    IDLE_TIMEOUT = 100
    UNKNOWN_READER = 101
    # Offline access lists (docs/protocol.md 4.6).
    SNAPSHOT_STALE = 110


class CodeKind(enum.StrEnum):
    APPROVAL = "approval"
    DECLINE = "decline"
    PROTOCOL = "protocol error"
    SYSTEM = "system error"


class CodeInfo(msgspec.Struct, frozen=True, gc=False):
    """What one response code means on the wire."""

    kind: CodeKind
    sender: str
    """"switch", or "either" when a terminal may send it too (in an Error)."""
    carried_in: str
    """The message that carries it: a result message or Error."""
    closes_connection: bool
    """True: the sender closes the connection after the message carrying this code."""
    journaled: bool
    meaning: str
    terminal_action: str


_R = ResponseCode
_D = CodeKind.DECLINE
_RESULT = "result"
_ERROR = "Error"
_DECLINE_ACTION = "Show the decline; do not retry the same txn_seq (a repeat gets the same answer)."


def _decline(meaning: str, action: str = _DECLINE_ACTION) -> CodeInfo:
    return CodeInfo(_D, "switch", _RESULT, False, True, meaning, action)


def _protocol(
    meaning: str,
    action: str,
    *,
    closes: bool,
    sender: str = "either",
    kind: CodeKind = CodeKind.PROTOCOL,
) -> CodeInfo:
    return CodeInfo(kind, sender, _ERROR, closes, False, meaning, action)


def _at_doors(info: CodeInfo) -> CodeInfo:
    """A QR code's refusal: in an Error for a QrPurchase, and also the deny reason of an
    AccessResult on a QR credential (journaled there: section 4.5)."""
    return msgspec.structs.replace(info, carried_in="Error; AccessResult")


_RESIGN = "Close, fix the cause, sign on again; resend unanswered requests with the same txn_seq."

CODE_INFO: dict[ResponseCode, CodeInfo] = {
    _R.APPROVED: CodeInfo(
        CodeKind.APPROVAL, "switch", _RESULT, False, True,
        "The request was carried out (or, for a repeat, had been).",
        "Show the result; the txn_seq is used up.",
    ),
    _R.INVALID_MERCHANT: _decline("The terminal is not bound to an active merchant account."),
    _R.INVALID_AMOUNT: _decline(
        "amount_fen is not acceptable here (0 at a till without a fixed price, or not the fixed "
        "price)."
    ),
    _R.UNKNOWN_CARD: _decline("No card with this card_no."),
    _R.ORIGINAL_NOT_FOUND: _decline(
        "Reversal of a txn_seq the switch never saw; journaled, so the original arriving later "
        "is declined ALREADY_REVERSED."
    ),
    _R.ALREADY_REVERSED: _decline(
        "The purchase was already reversed, or reversed before it arrived; or a second reversal "
        "of the same original."
    ),
    _R.REVERSAL_MISMATCH: _decline(
        "The reversal's card_no differs from the original's, or its amount_fen is neither 0 nor "
        "the charged amount."
    ),
    _R.HOLD_NOT_FOUND: _decline("Reserved for two-phase holds (tags 64-79): no such hold."),
    _R.CAPTURE_EXCEEDS_HOLD: _decline("Reserved for two-phase holds: capture above the hold."),
    _R.HOLDS_LIMIT_EXCEEDED: _decline(
        "Reserved for two-phase holds: the switch holds as many authorizations as it may."
    ),
    _R.CARD_LOST: _decline(
        "The card is reported lost.", "Show the decline; keep the card if policy says so."
    ),
    _R.CARD_CANCELLED: _decline("The card is cancelled (replaced or returned)."),
    _R.ACCOUNT_CLOSED: _decline("The cardholder's account is closed."),
    _R.ACCOUNT_FROZEN: _decline("The cardholder's account is frozen."),
    _R.INSUFFICIENT_FUNDS: _decline(
        "The paying wallet would go below its floor: for the main wallet, main - held - (its "
        "part of the amount) < -overdraft (held: what open holds reserve; overdraft: the "
        "cardholder's class's, often 0); the subsidy wallet's floor is 0. A purchase takes "
        "the wallets in the merchant's spend order (section 4.1 notes), so main + subsidy "
        "covering the amount is not enough at a main-only merchant, and an overdraft lets a "
        "card pay more."
    ),
    _R.CROSS_TENANT_NOT_ALLOWED: _decline(
        "The card belongs to another tenant (campus) and this merchant does not accept it."
    ),
    _R.TXN_LIMIT_EXCEEDED: _decline("The amount is above the card's per-transaction limit."),
    _R.DAILY_LIMIT_EXCEEDED: _decline("The card's daily spending limit would be exceeded."),
    _R.MEAL_AMOUNT_LIMIT_EXCEEDED: _decline("The card's per-meal amount limit would be exceeded."),
    _R.MEAL_COUNT_LIMIT_EXCEEDED: _decline("The card's per-meal purchase count is used up."),
    _R.BALANCE_LIMIT_EXCEEDED: _decline("A credit would take the balance above its maximum."),
    _R.CARD_EXPIRED: _decline(
        "Access: the card is past its valid_until date. Raises an illegal_card alarm (as do "
        "CARD_LOST, CARD_CANCELLED, ACCOUNT_FROZEN and ACCOUNT_CLOSED at a door)."
    ),
    _R.NO_PERMISSION: _decline(
        "Access: no grant lets this person through this door now, or the most specific level "
        "of grants that applies holds a deny (docs/access.md)."
    ),
    _R.OUTSIDE_TIME_ZONE: _decline(
        "Access: a grant would let the person through, but not at this time of the week."
    ),
    _R.HOLIDAY: _decline(
        "Access: a grant would let the person through on a working day; today is a holiday of "
        "its calendar."
    ),
    _R.DOOR_LOCKED: _decline("Access: the door is in locked (forbidden) mode."),
    _R.LOCKDOWN: _decline(
        "Access: an emergency lockdown covers the door; only override pass holders pass."
    ),
    _R.APB_VIOLATION: _decline(
        "Access: anti-passback of the door's area: entering again without having left (hard), "
        "or within the area's time (timed). Raises an apb_violation alarm."
    ),
    _R.INTERLOCK: _decline("Access: another door of the door's interlock is open."),
    _R.PIN_REQUIRED: _decline(
        "Access: the door is in security mode and the request carries no PIN.",
        "Ask for the PIN and send a new AccessRequest (new txn_seq) with it.",
    ),
    _R.PIN_WRONG: _decline("Access: the PIN is not the person's."),
    _R.MULTI_CARD_PENDING: _decline(
        "Access: a multi-card door counted this person; it opens when enough different "
        "permitted people have shown a credential within the door's window.",
        "Show 'waiting for the next card'; the next person's request may open the door.",
    ),
    _R.SECOND_FACTOR_REQUIRED: _decline(
        "Access: the door is in security mode with a biometric factor (card + face, card + "
        "fingerprint): this credential was counted, and the door opens when the other factor "
        "of the same person comes within the door's window (security_window_s), on any reader "
        "of the door. Journaled like any decision. (Factors that do not fit - a card and a "
        "face of different people, a fingerprint at a card + face door - are NO_PERMISSION.)",
        "Keep the door shut; ask for the other factor (\"now your face\" / \"now your card\") "
        "and send it in a new AccessRequest (new txn_seq).",
    ),
    _R.FLOOR_NOT_PERMITTED: _decline(
        "Access: the elevator floor asked for is not among the person's permitted floors."
    ),
    _R.BANK_INSUFFICIENT_FUNDS: _decline(
        "Top-up: the bank declined, the bank account has not enough money (field 39 \"51\")."),
    _R.PIN_INCORRECT: _decline(
        "Top-up: the cardholder's PIN is wrong, or the card has no PIN set; the try counts "
        "towards the lock-out.", "Show the decline; let the cardholder type the PIN again "
        "in a new request (new txn_seq)."),
    _R.NO_BANK_CARD: _decline("Top-up: the cardholder has no bank card bound."),
    _R.TOPUP_NOT_AVAILABLE: _decline(
        "Top-up: bank top-up is disabled for the card's tenant, or the bank link is down "
        "(the bank was not asked).", "Show the decline; try again later."),
    _R.BANK_DECLINED: _decline(
        "Top-up: the bank declined; TopupResult.bank_code carries its field 39."),
    _R.TOPUP_LIMIT_EXCEEDED: _decline(
        "Top-up: the amount is above the tenant's single top-up cap."),
    _R.TOPUP_DAILY_LIMIT_EXCEEDED: _decline(
        "Top-up: the card's or the account's bank top-ups of the day would pass the tenant's "
        "daily cap."),
    _R.BANK_NO_ANSWER: _decline(
        "Top-up, outcome UNKNOWN: the bank did not answer in time, the link broke, or its "
        "answer could not be read. The wallet was not credited; a reversal advice was stored "
        "before this answer and is repeated until the bank acknowledges it.",
        "Show \"not credited\"; do not retry the same txn_seq (a repeat gets this answer)."),
    _R.PIN_TRIES_EXCEEDED: _decline(
        "Top-up: the PIN is locked after too many wrong tries; a card office or the "
        "cardholder (self-service) sets a new one."),
    _R.TXN_SEQ_TOO_OLD: _protocol(
        "The txn_seq is TXN_SEQ_WINDOW (256) or more below the highest txn_seq seen from this "
        "terminal and is not in the journal; the switch cannot tell whether it is a repeat.",
        "Do not retry; record the transaction for manual reconciliation.",
        closes=False, sender="switch",
    ),
    _R.INVALID_FIELD: _protocol(
        "An authenticated message failed its schema (type or limit); `detail` names the field "
        "path, such as `$.amount_fen`. Only that message is refused.",
        "Fix the value; retry with a new txn_seq. The connection stays open.",
        closes=False,
    ),
    _R.UNKNOWN_MESSAGE: _protocol(
        "An authenticated frame carried a tag this peer does not implement. Only that message is "
        "refused.",
        "Do not send that message to this switch. The connection stays open.",
        closes=False,
    ),
    _R.MALFORMED_FRAME: _protocol(
        "The frame or its MessagePack body cannot be parsed: length prefix below 6, flags bits "
        "other than bit 0, a truncated frame at end of stream, a body that is not an array "
        "starting with an integer tag, a str that is not valid UTF-8.",
        _RESIGN, closes=True,
    ),
    _R.FRAME_TOO_LARGE: _protocol(
        "The length prefix is above FRAME_BYTES_MAX - 4; refused before the body is read.",
        _RESIGN, closes=True,
    ),
    _R.UNSUPPORTED_VERSION: _protocol("The frame version byte is not 1.", _RESIGN, closes=True),
    _R.BAD_MAC: _protocol(
        "The MAC is missing or wrong (wrong key, altered frame, wrong direction key).",
        "Close; check the terminal key; sign on again.", closes=True,
    ),
    _R.SEQUENCE_ERROR: _protocol(
        "The frame sequence is not exactly one more than the previous frame's in that direction "
        "(replayed, repeated or skipped), or would pass 2**32-1.",
        _RESIGN, closes=True,
    ),
    _R.NOT_SIGNED_ON: _protocol(
        "A request, Heartbeat or SignOff arrived before the SignOnConfirm: before or with the "
        "SignOn, or MAC'd after the SignOnChallenge (a plain frame there is BAD_MAC).",
        "Sign on, then resend with the same txn_seq.",
        closes=True, sender="switch",
    ),
    _R.UNKNOWN_TERMINAL: _protocol(
        "The switch has no key for this terminal_id. Sent plain, in answer to SignOn.",
        "Close; the terminal must be registered before it can sign on.",
        closes=True, sender="switch",
    ),
    _R.TERMINAL_DISABLED: _protocol(
        "The terminal is registered but disabled. Sent in SignOnResult or Error.",
        "Close; do not retry until an operator enables the terminal.",
        closes=True, sender="switch",
    ),
    _R.UNEXPECTED_MESSAGE: _protocol(
        "A known message that the state machine does not allow now or in this direction.",
        _RESIGN, closes=True,
    ),
    _R.NOT_PERMITTED: _protocol(
        "The message is not one this terminal's kind may send (section 4.1, \"sent by\": "
        "Purchase from a door reader, Credit from a till...). Only that request is refused; it "
        "is not journaled and its txn_seq is not used up.",
        "Do not send it from this terminal; the connection stays open.",
        closes=False, sender="switch",
    ),
    _R.QR_INVALID: _protocol(
        "QrPurchase: the QR code is malformed or its MAC does not verify (forged, altered, or "
        "another site's). Refused before the balance cache: not journaled, txn_seq not used "
        "up; the switch logs a security event.",
        "Show the refusal; do not retry that code. The connection stays open.",
        closes=False, sender="switch",
    ),
    _R.QR_EXPIRED: _at_doors(_protocol(
        "QrPurchase: the QR code is authentic but not valid now: expired, not yet valid, or "
        "issued before the switch last started (it cannot prove the code has not been used). "
        "Not journaled, txn_seq not used up (a repeat of a request already decided gets its "
        "original answer instead). AccessRequest: the same reasons, as the AccessResult code, "
        "journaled as a refusal (section 4.5).",
        "Ask the cardholder to refresh the code; send it in a new QrPurchase with a new "
        "txn_seq. The connection stays open.",
        closes=False, sender="switch",
    )),
    _R.QR_USED: _at_doors(_protocol(
        "QrPurchase: the QR code has already been used (a code pays or opens once). Not "
        "journaled, txn_seq not used up; the switch logs a security event. AccessRequest: the "
        "same, as the AccessResult code, journaled as a refusal (section 4.5).",
        "Ask the cardholder to refresh the code; send it in a new QrPurchase with a new "
        "txn_seq. The connection stays open.",
        closes=False, sender="switch",
    )),
    _R.SYSTEM_ERROR: _protocol(
        "The switch could not commit the request; nothing was journaled.",
        "Retry later with the same txn_seq. The connection stays open.",
        closes=False, sender="switch", kind=CodeKind.SYSTEM,
    ),
    _R.BUSY: _protocol(
        "The switch is overloaded and refused the request without deciding it.",
        "Retry after a pause with the same txn_seq. The connection stays open.",
        closes=False, sender="switch", kind=CodeKind.SYSTEM,
    ),
    _R.SHUTTING_DOWN: _protocol(
        "The switch is draining (stopping, or refusing a new connection while it does): it "
        "answered what it had read, sends this Error with txn_seq 0 and closes.",
        "Reconnect after a pause and resend unanswered requests with the same txn_seq.",
        closes=True, sender="switch", kind=CodeKind.SYSTEM,
    ),
    _R.SESSION_REPLACED: _protocol(
        "The same terminal signed on again on another connection; the switch closes this older "
        "one (txn_seq 0). Answers it still owed here are not sent here.",
        "Use the newer session: resend unanswered requests there with the same txn_seq. If this "
        "terminal did not sign on again, another device uses its terminal_id: report it.",
        closes=True, sender="switch",
    ),
    _R.IDLE_TIMEOUT: _protocol(
        "Nothing arrived on this connection for 3 heartbeat intervals (before sign-on: 3 times "
        "the switch's interval); the switch closes it (txn_seq 0).",
        "Sign on again and resend unanswered requests with the same txn_seq; send a Heartbeat "
        "whenever nothing else was sent for heartbeat_interval_s.",
        closes=True, sender="switch",
    ),
    _R.UNKNOWN_READER: _protocol(
        "AccessRequest or DoorEvent: the terminal has no reader with this reader_no (it is not "
        "registered for a door). Not decided, not journaled, txn_seq not used up.",
        "Register the reader (admin API), or fix the terminal's configuration. The connection "
        "stays open.",
        closes=False, sender="switch",
    ),
    _R.SNAPSHOT_STALE: _protocol(
        "AccessListRequest: have_version is not a version the switch can send deltas from "
        "(older than the oldest it keeps for this door, or newer than its current one, e.g. "
        "from before a restart of the switch); OfflineUpload: snapshot_version is newer than "
        "any version the switch issued. Nothing is sent, journaled or changed.",
        "Ask for the whole list (AccessListRequest with have_version 0); an upload is not "
        "retried with that version. The connection stays open.",
        closes=False, sender="switch",
    ),
}

PURCHASE_CHECK_PRECEDENCE: tuple[ResponseCode, ...] = (
    _R.ALREADY_REVERSED,
    _R.INVALID_MERCHANT,
    _R.UNKNOWN_CARD,
    _R.CARD_CANCELLED,
    _R.CARD_LOST,
    _R.ACCOUNT_CLOSED,
    _R.ACCOUNT_FROZEN,
    _R.CROSS_TENANT_NOT_ALLOWED,
    _R.INVALID_AMOUNT,
    _R.TXN_LIMIT_EXCEEDED,
    _R.DAILY_LIMIT_EXCEEDED,
    _R.MEAL_COUNT_LIMIT_EXCEEDED,
    _R.MEAL_AMOUNT_LIMIT_EXCEEDED,
    _R.INSUFFICIENT_FUNDS,
)
"""Order in which the switch checks a purchase that is not a repeat; the first failing check is
the answer. (A repeat of a journaled (terminal_id, txn_seq) gets the original answer before any
of these.)"""

assert set(CODE_INFO) == set(ResponseCode), "every response code needs its CodeInfo"
assert all(
    (info.kind is CodeKind.DECLINE) == (0 < code < 80) for code, info in CODE_INFO.items()
), "declines are 1..79, protocol and system errors 80 and up"
