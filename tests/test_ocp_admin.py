"""The privileged (admin) terminal messages of OCP (tags 128-143) at the codec level.

Who may send them is the switch's decision (it knows a terminal's registered kind; the sans-IO
Connection does not): tests/test_admin_switch.py checks that end to end. Here: tags, fields,
limits, the request / answer sets and the state machine.
"""

from __future__ import annotations

import pytest

from protocols import limits, ocp
from tests.ocp_pair import drain, signed_on_pair

RC = ocp.ResponseCode
CARD = 8_800_000_010

REQUESTS = [
    ocp.Credit(5, CARD, 0, 1_000, 2),
    ocp.Debit(6, CARD, 1, 200, 2),
    ocp.Transfer(7, CARD, 0, 2_500),
]
ANSWERS = [
    ocp.CreditResult(5, RC.APPROVED, 1_000, 3_000, 2_500, 500),
    ocp.DebitResult(6, RC.INSUFFICIENT_FUNDS, 0, 3_000, 2_900, 100),
    ocp.TransferResult(7, RC.APPROVED, 2_500, 3_000, 400, 2_600),
]


def _tag(cls: type[ocp.Message]) -> int:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, int)
    return tag


def test_admin_messages_take_tags_from_their_reserved_range() -> None:
    admin = [cls for cls in ocp.MESSAGE_TYPES if _tag(cls) >= 128]
    assert {type(m) for m in REQUESTS + ANSWERS} == set(admin)
    assert all(128 <= _tag(cls) <= 143 for cls in admin)
    only_admin = {cls for cls in ocp.MESSAGE_TYPES
                  if [k for k, sent in ocp.TERMINAL_KIND_MESSAGES.items() if cls in sent]
                  == [ocp.TerminalKind.ADMIN]}
    assert only_admin == {type(m) for m in REQUESTS}
    # Requests first field txn_seq (evolution rule 5); answers name it too.
    assert all(cls.__struct_fields__[0] == "txn_seq" for cls in admin)
    # What is still reserved for the admin terminal starts after the assigned tags.
    (rest,) = [(lo, hi) for lo, hi, what in ocp.RESERVED_TAG_RANGES if "admin" in what]
    assert rest == (max(_tag(cls) for cls in admin) + 1, 143)


def test_admin_requests_and_answers_cross_a_session() -> None:
    pair = signed_on_pair()
    assert pair.t2s(*REQUESTS) == REQUESTS
    assert pair.s2t(*ANSWERS) == ANSWERS
    assert pair.switch.state is ocp.State.READY


def test_an_admin_request_before_sign_on_is_not_signed_on() -> None:
    frame = ocp.encode_frame(REQUESTS[0], sequence=0)
    with pytest.raises(ocp.NotSignedOn):
        drain(ocp.Connection(ocp.Role.SWITCH), frame)


def test_a_switch_cannot_receive_an_answer() -> None:
    pair = signed_on_pair()
    frame = pair.terminal._frame(ANSWERS[0])  # a buggy terminal sending a result
    with pytest.raises(ocp.UnexpectedMessage):
        pair.to_switch(frame)


@pytest.mark.parametrize(
    ("msg", "path"),
    [
        (ocp.Credit(7, CARD, 2, 100, 2), "$.wallet"),
        (ocp.Credit(7, CARD, -1, 100, 2), "$.wallet"),
        (ocp.Credit(7, CARD, 0, limits.AMOUNT_FEN_MAX + 1, 2), "$.amount_fen"),
        (ocp.Credit(7, CARD, 0, -5, 2), "$.amount_fen"),
        (ocp.Credit(7, CARD, 0, 100, 0), "$.from_merchant_id"),
        (ocp.Credit(7, CARD, 0, 100, limits.MERCHANT_ID_MAX + 1), "$.from_merchant_id"),
        (ocp.Credit(7, 0, 0, 100, 2), "$.card_no"),
        (ocp.Debit(7, CARD, 2, 100, 2), "$.wallet"),
        (ocp.Debit(7, CARD, 0, limits.AMOUNT_FEN_MAX + 1, 2), "$.amount_fen"),
        (ocp.Debit(7, CARD, 0, 100, 0), "$.to_merchant_id"),
        (ocp.Transfer(7, CARD, 2, 100), "$.from_wallet"),
        (ocp.Transfer(7, CARD, 1, limits.AMOUNT_FEN_MAX + 1), "$.amount_fen"),
    ],
)
def test_an_invalid_admin_field_refuses_only_that_request(msg: ocp.Message, path: str) -> None:
    pair = signed_on_pair()
    with pytest.raises(ocp.InvalidField) as info:
        pair.t2s(msg)
    assert (info.value.path, info.value.txn_seq, info.value.closes_connection) == (path, 7, False)
    assert pair.switch.state is ocp.State.READY


def test_not_permitted_is_a_request_error_that_keeps_the_connection() -> None:
    info = ocp.CODE_INFO[RC.NOT_PERMITTED]
    assert (info.kind, info.carried_in, info.closes_connection, info.journaled) == (
        ocp.CodeKind.PROTOCOL, "Error", False, False)
    pair = signed_on_pair()
    refusal = ocp.Error(RC.NOT_PERMITTED, 5, "Credit is for admin terminals")
    assert pair.s2t(refusal) == [refusal]
    assert pair.terminal.state is ocp.State.READY
