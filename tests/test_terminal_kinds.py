"""Each terminal kind may send only its own messages (docs/protocol.md 4.1, "sent by"), end to
end: a real switch process, real TCP, real PostgreSQL, one terminal registered with each kind.

Every (kind, request) pair is sent; what the kind may not send is refused Error(NOT_PERMITTED)
with the request's txn_seq, not decided, not journaled, its txn_seq not used up, the session
kept. The terminal's claim in SignOnConfirm.terminal_kind counts for nothing (the test client
always claims POS): its registration decides.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from onecard.seed import ADMIN_TERMINAL, CANTEEN_FREE, CASH_DESK_MERCHANT
from protocols import ocp
from tests.switch_site import FREE_CANTEEN_TERMINAL, Site

RC = ocp.ResponseCode
KIND = ocp.TerminalKind
TERMINAL_OF_KIND = {KIND.POS: FREE_CANTEEN_TERMINAL, KIND.KIOSK: 102, KIND.DOOR: 103,
                    KIND.ATTENDANCE: 104, KIND.WATER: 105, KIND.ADMIN: ADMIN_TERMINAL}
INQUIRY_TERMINAL = 6
"""A POS terminal of its own for looking at balances."""
REQUEST_TYPES = [cls for cls in ocp.MESSAGE_TYPES if cls.direction is ocp.Direction.T2S
                 and cls.__struct_fields__[:1] == ("txn_seq",)]
DETAIL = {
    ocp.Purchase: "Purchase is accepted from POS terminals (kind 1) only",
    ocp.Reversal: "Reversal is accepted from POS terminals (kind 1) only",
    ocp.QrPurchase: "QrPurchase is accepted from POS terminals (kind 1) only",
    ocp.BalanceInquiry: "BalanceInquiry is accepted from POS, kiosk, water and admin terminals "
                        "(kinds 1, 2, 5, 6) only",
    ocp.Credit: "Credit is accepted from admin terminals (kind 6) only",
    ocp.Debit: "Debit is accepted from admin terminals (kind 6) only",
    ocp.Transfer: "Transfer is accepted from admin terminals (kind 6) only",
    ocp.AccessRequest: "AccessRequest is accepted from door terminals (kind 3) only",
    ocp.DoorEvent: "DoorEvent is accepted from door terminals (kind 3) only",
    ocp.AccessListRequest: "AccessListRequest is accepted from door terminals (kind 3) only",
    ocp.OfflineUpload: "OfflineUpload is accepted from door terminals (kind 3) only",
    ocp.Topup: "Topup is accepted from kiosk terminals (kind 2) only",
}


@pytest.fixture(scope="module")
def site(pg_server, migrated_template) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    s = Site(pg_server.new_database(template=migrated_template))
    for kind, tid in TERMINAL_OF_KIND.items():
        if kind not in (KIND.POS, KIND.ADMIN):
            s.fetch("INSERT INTO terminals (id, merchant_id, kind, name) VALUES ($1, $2, $3, $4)",
                    tid, CANTEEN_FREE, int(kind), kind.name.lower())
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _request(cls: type[ocp.Message], txn_seq: int, card_no: int) -> ocp.Message:
    """A well-formed request of each type, for `card_no` (QrPurchase: a code that is no QR)."""
    fields = {
        ocp.Purchase: (txn_seq, card_no, 100, 0),
        ocp.Reversal: (txn_seq, 1, card_no, 0),
        ocp.BalanceInquiry: (txn_seq, card_no),
        ocp.QrPurchase: (txn_seq, "OC" + "A" * 56, 100, 0),
        ocp.Credit: (txn_seq, card_no, 0, 100, CASH_DESK_MERCHANT),
        ocp.Debit: (txn_seq, card_no, 0, 100, CASH_DESK_MERCHANT),
        ocp.Transfer: (txn_seq, card_no, 0, 100),
        ocp.AccessRequest: (txn_seq, 1, 0, 1, card_no),
        ocp.DoorEvent: (txn_seq, 1, int(ocp.DoorEventCode.CLOSED)),
        ocp.AccessListRequest: (txn_seq, 0),
        ocp.OfflineUpload: (txn_seq, 1, [ocp.OfflineRecord(1, 1, 1, 0, card_no, 0)]),
        ocp.Topup: (txn_seq, card_no, 100, bytes(40), 0),
    }[cls]
    return cls(*fields)


def test_the_table_names_every_terminal_message_and_kind() -> None:
    assert set(ocp.TERMINAL_KIND_MESSAGES) == set(KIND) == set(TERMINAL_OF_KIND)
    assert set(DETAIL) == set(REQUEST_TYPES)
    for sent in ocp.TERMINAL_KIND_MESSAGES.values():
        assert sent >= ocp.SESSION_MESSAGE_TYPES
    assert set().union(*ocp.TERMINAL_KIND_MESSAGES.values()) == {
        cls for cls in ocp.MESSAGE_TYPES if cls.direction is not ocp.Direction.S2T}


@pytest.mark.parametrize("kind", list(KIND), ids=[k.name.lower() for k in KIND])
def test_each_kind_may_send_only_its_own_messages(site: Site, kind: ocp.TerminalKind) -> None:
    tid = TERMINAL_OF_KIND[kind]
    permitted = ocp.TERMINAL_KIND_MESSAGES[kind]
    # The card of every refused request: nothing may touch it.
    refused_card = site.card(skip=2 * int(kind))
    served_card = site.card(skip=2 * int(kind) + 1)
    client = site.client(tid)  # claims kind 1 (POS) in SignOnConfirm, whatever it is
    base = client.sign_on_result.last_txn_seq
    requests = [_request(cls, seq, served_card["card_no"] if cls in permitted
                         else refused_card["card_no"])
                for seq, cls in enumerate(REQUEST_TYPES, start=base + 1)]
    for msg in requests:  # pipelined, one write each
        client.send(msg)
    answers = {a.txn_seq: a for a in (client.next_message() for _ in requests)}
    for msg in requests:
        answer = answers[msg.txn_seq]
        if type(msg) in permitted:  # reaches its own checks (a decline, QR_INVALID...)
            assert not (isinstance(answer, ocp.Error) and answer.code == RC.NOT_PERMITTED), msg
        else:
            assert answer == ocp.Error(RC.NOT_PERMITTED, msg.txn_seq, DETAIL[type(msg)]), msg
            assert site.journal(tid, msg.txn_seq) == []
    # Session messages are every kind's (SignOn and SignOnConfirm above), and the session went
    # on after each refusal.
    client.send(ocp.Error(RC.UNKNOWN_MESSAGE, 0, "tag 40"))  # logged, not answered
    assert isinstance(client.request(ocp.Heartbeat(0)), ocp.HeartbeatAck)
    client.send(ocp.SignOff())
    assert client.next_message() is ocp.CLOSED
    client.close()
    assert site.fetch("SELECT 1 FROM journal WHERE card_no = $1", refused_card["card_no"]) == []
    # A refused txn_seq is not used up: the switch reports only the decided ones (a top-up
    # that credited nothing is no decision of the balance cache: section 4.5).
    decided = [m.txn_seq for m in requests
               if type(m) in permitted and not isinstance(answers[m.txn_seq], ocp.Error)
               and not isinstance(m, ocp.Topup)]
    again = site.client(tid)
    assert again.sign_on_result.last_txn_seq == max(decided, default=base)
    again.close()
    inquiry = site.client(INQUIRY_TERMINAL)
    seq = inquiry.sign_on_result.last_txn_seq + 1
    balance = inquiry.request(ocp.BalanceInquiry(seq, refused_card["card_no"]))
    inquiry.close()
    assert (balance.main_fen, balance.subsidy_fen) == (refused_card["main"],
                                                       refused_card["subsidy"])
