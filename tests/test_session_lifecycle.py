"""How a session ends, and the corners of docs/protocol.md sections 7 and 8, against a real
switch process over TCP: a second session of one terminal, a stream that ends inside a frame,
a graceful shutdown, and a request that reuses an inquiry's txn_seq."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from protocols import ocp
from tests.switch_site import FREE_CANTEEN_TERMINAL, Site

RC = ocp.ResponseCode
INQUIRY_KIND = 3


@pytest.fixture(scope="module")
def site(pg_server, migrated_template) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    s = Site(pg_server.new_database(template=migrated_template))
    s.start()
    try:
        yield s
    finally:
        s.stop()


def test_a_second_session_closes_the_first_with_session_replaced(site: Site) -> None:
    card = site.card()
    first = site.client(FREE_CANTEEN_TERMINAL)
    assert first.request(ocp.Purchase(1, card["card_no"], 10, 0)).code == RC.APPROVED
    second = site.client(FREE_CANTEEN_TERMINAL, last_txn_seq=1)
    assert second.sign_on_result.last_txn_seq == 1
    # The old session is told why before it is closed (MAC'd: it is a session).
    assert first.read_until_closed() == [ocp.Error(
        RC.SESSION_REPLACED, 0, "terminal signed on again on another connection")]
    assert first.conn.state is ocp.State.CLOSED
    # The new one is served, and a repeat sent there gets the original answer.
    assert second.request(ocp.Purchase(1, card["card_no"], 10, 0)).code == RC.APPROVED
    assert len(site.journal(FREE_CANTEEN_TERMINAL, 1)) == 1
    second.close()
    first.close()
    assert site.switch is not None
    assert '"ocp.session_superseded"' in site.switch.log_tail(100)


def test_a_stream_ending_inside_a_frame_gets_the_answers_owed_and_nothing_else(
        site: Site) -> None:
    """The whole frames before the end are answered; the partial one is discarded unread,
    nothing in it is decided, and no Error follows (the terminal has stopped sending)."""
    tid = FREE_CANTEEN_TERMINAL + 5
    card = site.card(skip=1)
    c = site.client(tid)
    whole = c.conn.send(ocp.Purchase(1, card["card_no"], 10, 0))
    partial = c.conn.send(ocp.Purchase(2, card["card_no"], 10, 0))[:12]
    c.send_raw(whole + partial)
    c.sock.shutdown(socket.SHUT_WR)
    answers = c.read_until_closed()
    c.close()
    assert [(type(a), a.txn_seq, a.code) for a in answers] == [(ocp.PurchaseResult, 1, 0)]
    assert site.journal(tid, 2) == []


def test_a_purchase_reusing_an_inquirys_txn_seq_gets_the_inquirys_answer(site: Site) -> None:
    """(terminal_id, txn_seq) names one request forever: a Purchase that reuses the txn_seq of
    a BalanceInquiry is a repeat of it. It gets the inquiry's BalanceResult, and charges
    nothing (docs/protocol.md section 7)."""
    tid = FREE_CANTEEN_TERMINAL + 4
    card = site.card(skip=2)
    c = site.client(tid)
    inquiry = c.request(ocp.BalanceInquiry(1, card["card_no"]))
    assert isinstance(inquiry, ocp.BalanceResult) and inquiry.code == RC.APPROVED
    assert c.request(ocp.Purchase(1, card["card_no"], 500, 0)) == inquiry
    (row,) = site.journal(tid, 1)
    assert (row["kind"], row["amount_fen"]) == (INQUIRY_KIND, 0)
    again = c.request(ocp.BalanceInquiry(2, card["card_no"]))
    assert (again.main_fen, again.subsidy_fen) == (inquiry.main_fen, inquiry.subsidy_fen)
    c.close()


def test_a_graceful_shutdown_tells_each_session_shutting_down(db_dsn: str) -> None:
    site = Site(db_dsn)
    site.start()
    card = site.card()
    c = site.client(FREE_CANTEEN_TERMINAL)
    assert c.request(ocp.Purchase(1, card["card_no"], 10, 0)).code == RC.APPROVED
    assert site.stop() == 0
    assert c.read_until_closed() == [ocp.Error(RC.SHUTTING_DOWN, 0, "switch is shutting down")]
    c.close()
