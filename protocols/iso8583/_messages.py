"""The bank link's messages as msgspec Structs, and which fields each MTI carries.

One Struct per message type: the codec (`_codec.py`) turns a Struct into a pyiso8583 dict and
back, fills the fields that are the link's business (7 transmission time, 53 key generation,
128 MAC) and checks every field against `MESSAGE_FIELDS`.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Final

import msgspec
from msgspec import Meta

from protocols.iso8583 import limits


class NetworkCode(enum.IntEnum):
    """Field 70 of 0800/0810."""

    SIGN_ON = 1
    SIGN_OFF = 2
    KEY_EXCHANGE = 101
    CUTOVER = 201
    ECHO = 301


Stan = Annotated[int, Meta(ge=1, le=limits.STAN_MAX)]
Rrn = Annotated[str, Meta(pattern=r"^[0-9A-Za-z]{12}$")]
TerminalId = Annotated[int, Meta(ge=0, le=limits.TERMINAL_ID_MAX)]
TenantId = Annotated[int, Meta(ge=0, le=limits.TENANT_ID_MAX)]
AmountFen = Annotated[int, Meta(gt=0, le=limits.AMOUNT_FEN_MAX)]
Token = Annotated[str, Meta(min_length=1, max_length=limits.TOKEN_CHARS_MAX,
                            pattern=r"^[\x20-\x7e]*$")]
Field39 = Annotated[str, Meta(pattern=r"^[0-9A-Z]{2}$")]
AuthCode = Annotated[str, Meta(pattern=r"^([0-9A-Za-z]{6})?$")]
Reason = Annotated[str, Meta(max_length=limits.REASON_CHARS_MAX, pattern=r"^[\x20-\x7e]*$")]
KeyGeneration = Annotated[int, Meta(ge=0, le=limits.KEY_GENERATION_MAX)]


class NetworkRequest(msgspec.Struct, frozen=True, kw_only=True):
    """0800: sign-on, sign-off, echo, key exchange (53 + 120), cutover (73). Either side may
    send echo and cutover; only the switch sends sign-on, sign-off and key exchange."""

    code: NetworkCode
    stan: Stan
    key_generation: KeyGeneration = 0
    """Key exchange only: the generation of the key in `wrapped_key`."""
    wrapped_key: bytes = b""
    """Key exchange only: the new MAC key, wrapped under the KEK (RFC 3394)."""
    business_date: dt.date | None = None
    """Cutover only: the business date that starts now."""


class NetworkResponse(msgspec.Struct, frozen=True, kw_only=True):
    """0810: the answer to an 0800, same code and STAN."""

    code: NetworkCode
    stan: Stan
    field39: Field39
    key_generation: KeyGeneration = 0
    business_date: dt.date | None = None
    reason: Reason = ""


class TopupRequest(msgspec.Struct, frozen=True, kw_only=True):
    """0200: move `amount_fen` from the bank card `card_token` to the OneCard account
    `account_ref` (a top-up, 圈存)."""

    terminal_id: TerminalId
    stan: Stan
    rrn: Rrn
    amount_fen: AmountFen
    card_token: Token
    """The bank's token for the bound bank card (or the PAN reference the bank gave us); never
    a full card number."""
    account_ref: Token
    local_datetime: dt.datetime
    """The kiosk's local date and time (naive, seconds)."""
    tenant_id: TenantId


class TopupResponse(msgspec.Struct, frozen=True, kw_only=True):
    """0210: the bank's answer, matched to its 0200 by (terminal_id, stan)."""

    terminal_id: TerminalId
    stan: Stan
    rrn: Rrn
    amount_fen: AmountFen
    field39: Field39
    auth_code: AuthCode = ""
    reason: Reason = ""


class ReversalAdvice(msgspec.Struct, frozen=True, kw_only=True):
    """0420 (first) / 0421 (repeat): the top-up with this (terminal_id, stan, rrn) is to be
    undone if the bank carried it out. Same fields as its 0200, plus field 90."""

    terminal_id: TerminalId
    stan: Stan
    rrn: Rrn
    amount_fen: AmountFen
    card_token: Token
    account_ref: Token
    local_datetime: dt.datetime
    tenant_id: TenantId
    repeat: bool = False

    @classmethod
    def of(cls, request: TopupRequest) -> ReversalAdvice:
        """The reversal advice of a top-up request."""
        return cls(**{f: getattr(request, f) for f in TopupRequest.__struct_fields__})


class ReversalResponse(msgspec.Struct, frozen=True, kw_only=True):
    """0430: the bank has recorded the advice (field 39 00, or 25 when it had no original)."""

    terminal_id: TerminalId
    stan: Stan
    rrn: Rrn
    field39: Field39
    reason: Reason = ""


Message = (NetworkRequest | NetworkResponse | TopupRequest | TopupResponse | ReversalAdvice
           | ReversalResponse)

PROCESSING_CODE_TOPUP: Final = "400000"
CURRENCY_CNY: Final = "156"

# For each MTI: the fields it must carry and those it may carry. Anything else is refused.
_NETWORK_REQ = frozenset({7, 11, 70})
_FIN_REQ = frozenset({3, 4, 7, 11, 12, 37, 41, 42, 49, 53, 102, 103, 128})
MESSAGE_FIELDS: Final[dict[str, tuple[frozenset[int], frozenset[int]]]] = {
    "0800": (_NETWORK_REQ, frozenset({53, 73, 120})),
    "0810": (_NETWORK_REQ | {39}, frozenset({44, 53, 73})),
    "0200": (_FIN_REQ, frozenset()),
    "0210": (frozenset({3, 4, 7, 11, 37, 39, 41, 53, 128}), frozenset({38, 44})),
    "0420": (_FIN_REQ | {90}, frozenset()),
    "0421": (_FIN_REQ | {90}, frozenset()),
    "0430": (frozenset({3, 7, 11, 37, 39, 41, 53, 128}), frozenset({44})),
}
MAC_MTIS: Final = frozenset({"0200", "0210", "0420", "0421", "0430"})
"""Financial messages: each carries field 53 (key generation) and field 128 (MAC)."""
MTI_OF: Final[dict[type[msgspec.Struct], str]] = {
    NetworkRequest: "0800", NetworkResponse: "0810", TopupRequest: "0200",
    TopupResponse: "0210", ReversalAdvice: "0420", ReversalResponse: "0430",
}
