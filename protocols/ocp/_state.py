"""Connection states and the one transition table of OCP.

`TRANSITIONS[(role, state, way, event)] -> next state` is every move a connection can make;
anything not in it is a protocol error (`UnexpectedMessage`, or `NotSignedOn` for a request
before sign-on). Events are message names, plus three refinements and one pseudo-event:

- `Error(closing)`: an `Error` whose code closes the connection
  (`CODE_INFO[code].closes_connection`, or a code this implementation does not know);
- `SignOnResult(declined)`: a `SignOnResult` whose code is not APPROVED;
- `EOF`: the peer closed its end of the stream.

docs/make_protocol_tables.py renders this table and a diagram per role into docs/protocol.md.
"""

from __future__ import annotations

import enum
from typing import Final


class Role(enum.StrEnum):
    TERMINAL = "terminal"
    SWITCH = "switch"


class State(enum.StrEnum):
    IDLE = "IDLE"
    """Nothing sent or received yet."""
    AWAIT_CHALLENGE = "AWAIT_CHALLENGE"
    """Terminal: SignOn sent, waiting for SignOnChallenge."""
    CHALLENGED = "CHALLENGED"
    """Terminal: challenge verified, session keys known; must send SignOnConfirm."""
    AWAIT_RESULT = "AWAIT_RESULT"
    """Terminal: SignOnConfirm sent; may pipeline requests while waiting for SignOnResult."""
    SIGN_ON_RECEIVED = "SIGN_ON_RECEIVED"
    """Switch: SignOn received; must call accept_sign_on() or send a closing Error."""
    AWAIT_CONFIRM = "AWAIT_CONFIRM"
    """Switch: challenge sent, waiting for SignOnConfirm."""
    CONFIRMED = "CONFIRMED"
    """Switch: terminal proved its key; requests may arrive; must send SignOnResult first."""
    READY = "READY"
    """Session open: requests one way, answers the other."""
    SIGNED_OFF = "SIGNED_OFF"
    """SignOff sent/received: no more requests; answers still flow; then the switch closes."""
    ERROR = "ERROR"
    """The peer broke the protocol: send one Error, then close."""
    CLOSED = "CLOSED"
    """Done; close the socket."""


class Way(enum.StrEnum):
    SEND = "send"
    RECEIVE = "receive"


EOF_EVENT: Final = "EOF"
ERROR_CLOSING: Final = "Error(closing)"
SIGN_ON_DECLINED: Final = "SignOnResult(declined)"

_T, _S = Role.TERMINAL, Role.SWITCH
_SEND, _RECV = Way.SEND, Way.RECEIVE
_REQUESTS: tuple[str, ...] = (
    "Purchase", "Reversal", "BalanceInquiry", "QrPurchase", "Heartbeat", "Credit", "Debit",
    "Transfer", "AccessRequest", "DoorEvent")
_ANSWERS: tuple[str, ...] = (
    "PurchaseResult", "ReversalResult", "BalanceResult", "HeartbeatAck", "CreditResult",
    "DebitResult", "TransferResult", "AccessResult", "DoorEventAck")
# Offline access lists and upload (tags 96-111): a door asks for its list and uploads what it
# decided alone.
_REQUESTS += ("AccessListRequest", "OfflineUpload")
_ANSWERS += ("AccessListSnapshot", "AccessListDelta", "OfflineUploadResult")
# Kiosk top-up (tag 112-113).
_REQUESTS += ("Topup",)
_ANSWERS += ("TopupResult",)
# Door commands (tags 36-37): the switch tells a door terminal to open once, hold open, hold
# locked or go back to normal; the terminal acknowledges. Neither is a request or an answer:
# the switch sends a DoorCommand only in a session (READY); the terminal acknowledges it while
# it may still send (READY), and after its SignOff takes one in silence (the switch gives up
# on it after its deadline).
_COMMANDS: tuple[str, ...] = ("DoorCommand",)
_COMMAND_ACKS: tuple[str, ...] = ("DoorCommandAck",)
_ERRORS = ("Error", ERROR_CLOSING)


def _build() -> dict[tuple[Role, State, Way, str], State]:
    t: dict[tuple[Role, State, Way, str], State] = {}

    def add(role: Role, state: State, way: Way, events: tuple[str, ...], nxt: State) -> None:
        for event in events:
            key = (role, state, way, event)
            assert key not in t, f"duplicate transition {key}"
            t[key] = nxt

    st = State
    # Terminal.
    add(_T, st.IDLE, _SEND, ("SignOn",), st.AWAIT_CHALLENGE)
    add(_T, st.AWAIT_CHALLENGE, _RECV, ("SignOnChallenge",), st.CHALLENGED)
    add(_T, st.AWAIT_CHALLENGE, _RECV, _ERRORS, st.CLOSED)
    add(_T, st.AWAIT_CHALLENGE, _SEND, _ERRORS, st.CLOSED)
    add(_T, st.CHALLENGED, _SEND, ("SignOnConfirm",), st.AWAIT_RESULT)
    add(_T, st.CHALLENGED, _SEND, _ERRORS, st.CLOSED)
    add(_T, st.CHALLENGED, _RECV, _ERRORS, st.CLOSED)
    add(_T, st.AWAIT_RESULT, _SEND, _REQUESTS, st.AWAIT_RESULT)
    add(_T, st.AWAIT_RESULT, _SEND, _ERRORS, st.CLOSED)
    add(_T, st.AWAIT_RESULT, _RECV, ("SignOnResult",), st.READY)
    add(_T, st.AWAIT_RESULT, _RECV, (SIGN_ON_DECLINED,), st.CLOSED)
    add(_T, st.AWAIT_RESULT, _RECV, _ERRORS, st.CLOSED)
    add(_T, st.READY, _SEND, (*_REQUESTS, *_COMMAND_ACKS, "Error"), st.READY)
    add(_T, st.READY, _SEND, ("SignOff",), st.SIGNED_OFF)
    add(_T, st.READY, _SEND, (ERROR_CLOSING,), st.CLOSED)
    add(_T, st.READY, _RECV, (*_ANSWERS, *_COMMANDS, "Error"), st.READY)
    add(_T, st.READY, _RECV, (ERROR_CLOSING,), st.CLOSED)
    add(_T, st.SIGNED_OFF, _RECV, (*_ANSWERS, *_COMMANDS, "Error"), st.SIGNED_OFF)
    add(_T, st.SIGNED_OFF, _RECV, (ERROR_CLOSING,), st.CLOSED)
    add(_T, st.SIGNED_OFF, _SEND, (ERROR_CLOSING,), st.CLOSED)
    # Switch.
    add(_S, st.IDLE, _RECV, ("SignOn",), st.SIGN_ON_RECEIVED)
    add(_S, st.IDLE, _SEND, _ERRORS, st.CLOSED)  # refuse at accept: BUSY, SHUTTING_DOWN
    add(_S, st.SIGN_ON_RECEIVED, _SEND, ("SignOnChallenge",), st.AWAIT_CONFIRM)
    add(_S, st.SIGN_ON_RECEIVED, _SEND, _ERRORS, st.CLOSED)
    add(_S, st.AWAIT_CONFIRM, _RECV, ("SignOnConfirm",), st.CONFIRMED)
    add(_S, st.AWAIT_CONFIRM, _RECV, _ERRORS, st.CLOSED)
    add(_S, st.AWAIT_CONFIRM, _SEND, _ERRORS, st.CLOSED)
    add(_S, st.CONFIRMED, _RECV, (*_REQUESTS, "Error"), st.CONFIRMED)
    add(_S, st.CONFIRMED, _RECV, (ERROR_CLOSING,), st.CLOSED)
    add(_S, st.CONFIRMED, _SEND, ("SignOnResult",), st.READY)
    add(_S, st.CONFIRMED, _SEND, (SIGN_ON_DECLINED, ERROR_CLOSING), st.CLOSED)
    add(_S, st.READY, _RECV, (*_REQUESTS, *_COMMAND_ACKS, "Error"), st.READY)
    add(_S, st.READY, _RECV, ("SignOff",), st.SIGNED_OFF)
    add(_S, st.READY, _RECV, (ERROR_CLOSING,), st.CLOSED)
    add(_S, st.READY, _SEND, (*_ANSWERS, *_COMMANDS, "Error"), st.READY)
    add(_S, st.READY, _SEND, (ERROR_CLOSING,), st.CLOSED)
    add(_S, st.SIGNED_OFF, _SEND, (*_ANSWERS, "Error"), st.SIGNED_OFF)
    add(_S, st.SIGNED_OFF, _SEND, (ERROR_CLOSING,), st.CLOSED)
    add(_S, st.SIGNED_OFF, _RECV, (ERROR_CLOSING,), st.CLOSED)
    # Both: after a protocol error, one Error then CLOSED; EOF closes any live state.
    for role in Role:
        add(role, st.ERROR, _SEND, _ERRORS, st.CLOSED)
        for state in st:
            if state not in (st.ERROR, st.CLOSED):
                add(role, state, _RECV, (EOF_EVENT,), st.CLOSED)
    return t


TRANSITIONS: Final[dict[tuple[Role, State, Way, str], State]] = _build()

SESSION_STATES: Final[frozenset[tuple[Role, State]]] = frozenset(
    {
        (Role.SWITCH, State.CONFIRMED),
        (Role.SWITCH, State.READY),
        (Role.TERMINAL, State.READY),
        (Role.TERMINAL, State.SIGNED_OFF),
    }
)
"""Where a received authentic message that fails its schema (InvalidField) or has an unknown
tag (UnknownMessage) refuses only that message; elsewhere it is a connection error."""

NOT_SIGNED_ON_STATES: Final[frozenset[State]] = frozenset(
    {State.IDLE, State.SIGN_ON_RECEIVED, State.AWAIT_CONFIRM}
)
"""Switch states in which a request is answered NOT_SIGNED_ON rather than UNEXPECTED_MESSAGE."""

PLAIN_ERROR_STATES: Final[frozenset[tuple[Role, State]]] = frozenset(
    {(Role.SWITCH, State.AWAIT_CONFIRM)}
)
"""Where a plain (un-MAC'd) Error is accepted although we hold the peer's session key: a
terminal that could not verify our challenge has no key to MAC its Error with."""


def compile_table(role: Role, way: Way) -> dict[State, dict[str, State]]:
    """The table for one role and way, as state -> {event: next state}, for fast lookups."""
    out: dict[State, dict[str, State]] = {state: {} for state in State}
    for (r, state, w, event), nxt in TRANSITIONS.items():
        if r is role and w is way:
            out[state][event] = nxt
    return out
