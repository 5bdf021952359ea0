"""The purchase spine end to end: a terminal over real TCP, the switch as a real process, the
journal in a real PostgreSQL."""

from __future__ import annotations

import json
import struct
from collections import Counter

import msgspec
import pytest

from protocols import ocp
from tests.switch_site import (
    EAST_PARK_TERMINAL,
    FIXED_CANTEEN_TERMINAL,
    FREE_CANTEEN_TERMINAL,
    SUPERMARKET_TERMINAL,
    Site,
)

RC = ocp.ResponseCode


def test_one_purchase_is_approved_journaled_and_answered_with_the_balance(site: Site) -> None:
    card = site.card()
    c = site.client(FREE_CANTEEN_TERMINAL)
    r = c.request(ocp.Purchase(1, card["card_no"], 1234, 0))
    assert isinstance(r, ocp.PurchaseResult)
    assert (r.txn_seq, r.code, r.amount_fen) == (1, RC.APPROVED, 1234)
    assert r.balance_fen == card["main"] + card["subsidy"] - 1234
    assert r.balance_fen == r.main_fen + r.subsidy_fen
    # Answered only after commit: the row is there the moment the answer is.
    (row,) = site.journal(FREE_CANTEEN_TERMINAL, 1)
    assert row["code"] == 0 and row["amount_fen"] == 1234
    assert row["main_delta_fen"] + row["subsidy_delta_fen"] == -1234
    assert row["merchant_delta_fen"] == 1234
    c.close()


def test_a_repeat_gets_the_original_answer_and_is_journaled_once(site: Site) -> None:
    card = site.card()
    c = site.client(FREE_CANTEEN_TERMINAL)
    first = c.request(ocp.Purchase(7, card["card_no"], 500, 0))
    again = c.request(ocp.Purchase(7, card["card_no"], 500, 0))
    assert first == again
    # Even from a new session (the terminal rebooted) and with a different amount.
    c.close()
    c2 = site.client(FREE_CANTEEN_TERMINAL, last_txn_seq=7)
    assert c2.sign_on_result.last_txn_seq == 7
    assert c2.request(ocp.Purchase(7, card["card_no"], 999, 0)) == first
    assert len(site.journal(FREE_CANTEEN_TERMINAL, 7)) == 1
    inquiry = c2.request(ocp.BalanceInquiry(8, card["card_no"]))
    assert inquiry.balance_fen == card["main"] + card["subsidy"] - 500
    c2.close()


def test_pipelined_requests_are_answered_with_their_txn_seq(site: Site) -> None:
    card = site.card()
    c = site.client(FREE_CANTEEN_TERMINAL)
    for seq in range(1, 51):
        c.send(ocp.Purchase(seq, card["card_no"], 10, 0))
    answers = [c.next_message() for _ in range(50)]
    assert sorted(a.txn_seq for a in answers) == list(range(1, 51))
    assert all(a.code == RC.APPROVED for a in answers)
    assert min(a.balance_fen for a in answers) == card["main"] + card["subsidy"] - 500
    c.close()


def test_declines_are_journaled_and_move_no_money(site: Site) -> None:
    c = site.client(SUPERMARKET_TERMINAL)  # main wallet only
    poor = site.card(min_main=0)
    cases = [
        (ocp.Purchase(1, 1, 100, 0), RC.UNKNOWN_CARD),
        (ocp.Purchase(2, site.seed.lost_cards[0], 100, 0), RC.CARD_LOST),
        (ocp.Purchase(3, site.seed.cancelled_cards[0], 100, 0), RC.CARD_CANCELLED),
        (ocp.Purchase(4, poor["card_no"], poor["main"] + 5_001, 0), RC.INSUFFICIENT_FUNDS),
        (ocp.Purchase(5, poor["card_no"], 0, 0), RC.INVALID_AMOUNT),
    ]
    for request, code in cases:
        answer = c.request(request)
        assert isinstance(answer, ocp.PurchaseResult)
        assert answer.code == code, (request, answer)
        (row,) = site.journal(SUPERMARKET_TERMINAL, request.txn_seq)
        assert row["code"] == code
        assert row["main_delta_fen"] == row["subsidy_delta_fen"] == row["merchant_delta_fen"] == 0
    c.close()
    # Declines are counted, not logged one by one: one summary line, at the latest at stop.
    assert site.stop() == 0
    assert site.switch is not None
    lines = [json.loads(line) for line in site.switch.log_tail(200).splitlines()
             if '"requests.declined"' in line]
    assert [(x["total"], x["codes"]) for x in lines] == [
        (len(cases), dict(Counter(RC(code).name.lower() for _, code in cases)))]


def test_fixed_price_till_charges_its_price(site: Site) -> None:
    card = site.card()
    c = site.client(FIXED_CANTEEN_TERMINAL)
    r = c.request(ocp.Purchase(1, card["card_no"], 0, 0))
    assert (r.code, r.amount_fen) == (RC.APPROVED, 800)
    assert c.request(ocp.Purchase(2, card["card_no"], 799, 0)).code == RC.INVALID_AMOUNT
    c.close()


def test_reversal_returns_the_money_and_reversal_before_original_blocks_it(site: Site) -> None:
    card = site.card()
    c = site.client(FREE_CANTEEN_TERMINAL)
    start = c.request(ocp.BalanceInquiry(1, card["card_no"])).balance_fen
    assert c.request(ocp.Purchase(2, card["card_no"], 700, 0)).balance_fen == start - 700
    rev = c.request(ocp.Reversal(3, 2, card["card_no"], 700))
    assert isinstance(rev, ocp.ReversalResult)
    assert (rev.code, rev.amount_fen, rev.balance_fen) == (RC.APPROVED, 700, start)
    assert c.request(ocp.Reversal(3, 2, card["card_no"], 700)) == rev  # idempotent
    # The reversal overtakes its purchase (the purchase's answer timed out, the terminal sent
    # the reversal with its next counter, and then the lost purchase frame is retried).
    early = c.request(ocp.Reversal(5, 4, card["card_no"], 300))
    assert early.code == RC.ORIGINAL_NOT_FOUND
    late = c.request(ocp.Purchase(4, card["card_no"], 300, 0))
    assert late.code == RC.ALREADY_REVERSED
    assert c.request(ocp.BalanceInquiry(6, card["card_no"])).balance_fen == start
    c.close()


def test_a_reversal_never_lets_a_given_up_purchase_be_charged(site: Site) -> None:
    """Issue 9 item 1: a reversal naming a txn_seq above the terminal's highest was answered
    REVERSAL_MISMATCH and the late purchase then charged. A never-seen original below the
    reversal's own txn_seq is ORIGINAL_NOT_FOUND and blocks it; one not below its own names no
    purchase sent before it and is refused INVALID_FIELD: not journaled, txn_seq not used up."""
    card = site.card()
    c = site.client(FREE_CANTEEN_TERMINAL)
    start = c.request(ocp.BalanceInquiry(1, card["card_no"])).balance_fen
    early = c.request(ocp.Reversal(20, 12, card["card_no"], 0))    # 12: above the highest (1)
    assert (early.code, early.amount_fen) == (RC.ORIGINAL_NOT_FOUND, 0)
    late = c.request(ocp.Purchase(12, card["card_no"], 300, 0))
    assert (late.code, late.amount_fen) == (RC.ALREADY_REVERSED, 0)
    for txn_seq, original in ((21, 30), (22, 22)):
        refused = c.request(ocp.Reversal(txn_seq, original, card["card_no"], 0))
        assert isinstance(refused, ocp.Error), refused
        assert (refused.code, refused.txn_seq, refused.detail) == (
            RC.INVALID_FIELD, txn_seq, "invalid field $.original_txn_seq")
        assert site.journal(FREE_CANTEEN_TERMINAL, txn_seq) == []
    assert c.request(ocp.BalanceInquiry(21, card["card_no"])).balance_fen == start  # not used up
    c.close()


def test_a_purchase_older_than_the_window_can_be_reversed(site: Site) -> None:
    """Issue 9 item 2: the window applies to the reversal's own txn_seq. A terminal back after
    a long run of other requests reverses an old purchase: the switch decides it from the
    journal (before, Error TXN_SEQ_TOO_OLD and nothing journaled)."""
    card = site.card()
    c = site.client(FREE_CANTEEN_TERMINAL)
    start = c.request(ocp.BalanceInquiry(1, card["card_no"])).balance_fen
    assert c.request(ocp.Purchase(2, card["card_no"], 700, 0)).code == RC.APPROVED
    assert c.request(ocp.BalanceInquiry(258, card["card_no"])).code == RC.APPROVED  # 2's slot
    assert c.request(ocp.Purchase(600, card["card_no"], 5, 0)).code == RC.APPROVED
    rev = c.request(ocp.Reversal(601, 2, card["card_no"], 0))
    assert isinstance(rev, ocp.ReversalResult), rev
    assert (rev.code, rev.amount_fen, rev.balance_fen) == (RC.APPROVED, 700, start - 5)
    (row,) = site.journal(FREE_CANTEEN_TERMINAL, 601)
    assert (row["code"], row["ref_txn_seq"], row["merchant_delta_fen"]) == (0, 2, -700)
    assert c.request(ocp.Reversal(601, 2, card["card_no"], 0)) == rev       # a repeat
    assert c.request(ocp.Reversal(602, 2, card["card_no"], 0)).code == RC.ALREADY_REVERSED
    assert c.request(ocp.Reversal(603, 3, card["card_no"], 0)).code == RC.ORIGINAL_NOT_FOUND
    c.close()
    # After a restart (the ledger recovered from the journal) the original stays reversed once.
    site.stop()
    site.start()
    c = site.client(FREE_CANTEEN_TERMINAL, last_txn_seq=603)
    assert c.request(ocp.Reversal(604, 2, card["card_no"], 0)).code == RC.ALREADY_REVERSED
    assert c.request(ocp.BalanceInquiry(605, card["card_no"])).balance_fen == start - 5
    c.close()
    assert site.audit().conserved


def test_a_till_sees_no_balance_of_a_card_it_may_not_serve(site: Site) -> None:
    """Issue 9 item 5: an inquiry (a declined purchase, a reversal) at a till of another tenant
    without that tenant's consent answered CROSS_TENANT_NOT_ALLOWED with the card's balance."""
    assert site.stop() == 0
    (new_id,) = [r["n"] for r in site.fetch("SELECT max(id) + 1 AS n FROM accounts")]
    site.fetch("INSERT INTO accounts (id, tenant_id, class_id, opening_main_fen)"
               " VALUES ($1, 2, 2, 900)", new_id)
    site.fetch("INSERT INTO merchants (id, tenant_id, name, kind, opening_balance_fen)"
               " VALUES (100, 2, 'migrated balances', 'system', -900)")
    east_card = 77_000_000 + new_id           # East Park's: no consent to spend on the campus
    site.fetch("INSERT INTO cards (card_no, account_id) VALUES ($1, $2)", east_card, new_id)
    site.start()
    c = site.client(FREE_CANTEEN_TERMINAL)    # a campus (tenant 1) till
    inquiry = c.request(ocp.BalanceInquiry(1, east_card))
    assert isinstance(inquiry, ocp.BalanceResult)
    assert (inquiry.code, inquiry.balance_fen, inquiry.main_fen, inquiry.subsidy_fen) == (
        RC.CROSS_TENANT_NOT_ALLOWED, 0, 0, 0)
    purchase = c.request(ocp.Purchase(2, east_card, 100, 0))
    assert (purchase.code, purchase.balance_fen, purchase.main_fen) == (
        RC.CROSS_TENANT_NOT_ALLOWED, 0, 0)
    assert c.request(ocp.Reversal(3, 2, east_card, 0)).balance_fen == 0    # declined original
    assert c.request(ocp.Reversal(5, 4, east_card, 0)).balance_fen == 0    # ORIGINAL_NOT_FOUND
    # A repeat read back from the journal (older than the window) shows no more.
    assert c.request(ocp.BalanceInquiry(600, site.card()["card_no"])).code == RC.APPROVED
    assert c.request(ocp.BalanceInquiry(1, east_card)) == inquiry
    c.close()
    east = site.client(EAST_PARK_TERMINAL)    # its own tenant's till sees it
    own = east.request(ocp.BalanceInquiry(1, east_card))
    assert (own.code, own.balance_fen) == (RC.APPROVED, 900)
    campus_card = site.card()                  # campus cards may spend at East Park: shown
    shown = east.request(ocp.BalanceInquiry(2, campus_card["card_no"]))
    assert (shown.code, shown.balance_fen) == (
        RC.APPROVED, campus_card["main"] + campus_card["subsidy"])
    east.close()


def test_bad_mac_closes_the_connection_and_changes_nothing(site: Site) -> None:
    card = site.card()
    c = site.client(FREE_CANTEEN_TERMINAL)
    frame = bytearray(c.conn.send(ocp.Purchase(1, card["card_no"], 100, 0)))
    frame[-1] ^= 0x01
    c.send_raw(bytes(frame))
    answers = c.read_until_closed()
    assert [type(a) for a in answers] == [ocp.Error]
    assert answers[0].code == RC.BAD_MAC
    assert site.journal(FREE_CANTEEN_TERMINAL, 1) == []
    c.close()


def test_purchase_before_sign_on_is_refused(site: Site) -> None:
    c = site.client(FREE_CANTEEN_TERMINAL, sign_on=False)
    # A terminal that skips sign-on can only send plain frames; the switch refuses them.
    # Built from docs/protocol.md by hand: length, version 1, flags 0, sequence 0, body.
    body = msgspec.msgpack.encode([16, 1, 1, 100, 0])
    c.send_raw(struct.pack(">IBBI", 6 + len(body), 1, 0, 0) + body)
    raw = b""
    while chunk := c.sock.recv(4096):
        raw += chunk
    length, version, flags, sequence = struct.unpack_from(">IBBI", raw)
    assert (version, flags, sequence) == (1, 0, 0) and len(raw) == 4 + length
    tag, code, txn_seq, _detail = msgspec.msgpack.decode(raw[10:])
    assert (tag, code, txn_seq) == (31, RC.NOT_SIGNED_ON, 0)
    c.close()


def test_unknown_terminal_and_wrong_key_cannot_sign_on(site: Site) -> None:
    assert site.switch is not None
    from tests.ocp_client import OcpClient

    stranger = OcpClient(site.switch.host, site.switch.port, 999_999, b"k" * 32)
    stranger.send_raw(stranger.conn.start_sign_on(999_999, b"k" * 32, b"n" * 16))
    answers = stranger.read_until_closed()
    assert answers and answers[0].code == RC.UNKNOWN_TERMINAL
    stranger.close()
    impostor = OcpClient(site.switch.host, site.switch.port, FREE_CANTEEN_TERMINAL, b"x" * 32)
    with pytest.raises(ocp.OcpRemoteError):
        impostor.sign_on()  # the switch's challenge does not verify under the wrong key
    impostor.close()


def test_balances_survive_a_restart_to_the_fen(site: Site) -> None:
    card = site.card()
    c = site.client(FREE_CANTEEN_TERMINAL)
    for seq in range(1, 21):
        assert c.request(ocp.Purchase(seq, card["card_no"], 37, 0)).code == RC.APPROVED
    before = c.request(ocp.BalanceInquiry(21, card["card_no"])).balance_fen
    c.close()
    assert site.stop() == 0
    site.start()
    c = site.client(FREE_CANTEEN_TERMINAL, last_txn_seq=21)
    assert c.sign_on_result.last_txn_seq == 21
    assert c.request(ocp.BalanceInquiry(22, card["card_no"])).balance_fen == before
    assert c.request(ocp.Purchase(20, card["card_no"], 37, 0)).code == RC.APPROVED  # repeat
    assert c.request(ocp.BalanceInquiry(23, card["card_no"])).balance_fen == before
    c.close()


def test_master_data_changed_after_a_checkpoint_wins_at_restart(site: Site) -> None:
    """Recovery takes statuses from the database, not the checkpoint, and accepts accounts
    issued after the checkpoint (review finding: both broke restarts)."""
    card = site.card()
    c = site.client(FREE_CANTEEN_TERMINAL)
    assert c.request(ocp.Purchase(1, card["card_no"], 100, 0)).code == RC.APPROVED
    c.close()
    assert site.stop() == 0  # writes a checkpoint with the account active
    (new_id,) = [r["n"] for r in site.fetch("SELECT max(id) + 1 AS n FROM accounts")]
    site.fetch("UPDATE accounts SET status = 2 WHERE id = $1", card["account_id"])  # lost
    site.fetch(
        "INSERT INTO accounts (id, tenant_id, class_id, opening_main_fen) VALUES ($1, 1, 2, 900)",
        new_id,
    )
    # Its opening balance is migrated in against a new system account (double entry); an
    # existing account's opening balance is history the checkpoint already holds.
    site.fetch(
        "INSERT INTO merchants (id, tenant_id, name, kind, opening_balance_fen)"
        " VALUES (100, 1, 'migrated balances', 'system', -900)"
    )
    site.fetch("INSERT INTO cards (card_no, account_id) VALUES ($1, $2)", 77_000_000 + new_id,
               new_id)
    site.start()
    c = site.client(FREE_CANTEEN_TERMINAL, last_txn_seq=1)
    assert c.request(ocp.Purchase(2, card["card_no"], 100, 0)).code == RC.CARD_LOST
    fresh = c.request(ocp.Purchase(3, 77_000_000 + new_id, 100, 0))
    assert (fresh.code, fresh.balance_fen) == (RC.APPROVED, 800)
    c.close()


def test_the_audit_fails_when_the_books_do_not_balance(site: Site) -> None:
    card = site.card()
    c = site.client(FREE_CANTEEN_TERMINAL)
    for seq in range(1, 6):
        assert c.request(ocp.Purchase(seq, card["card_no"], 100, 0)).code == RC.APPROVED
    c.close()
    assert site.stop() == 0
    assert site.audit().conserved
    # One fen moved from the cardholder to the merchant behind the switch's back: each row
    # still balances (the CHECK holds), but the account no longer equals opening + journal.
    site.fetch(
        "UPDATE journal SET main_delta_fen = main_delta_fen - 1,"
        " merchant_delta_fen = merchant_delta_fen + 1"
        " WHERE lsn = (SELECT min(lsn) FROM journal WHERE code = 0)"
    )
    report = site.audit()
    assert not report.conserved and report.accounts_mismatched == 1
    site.start()  # (the fixture stops it)


def test_a_repeat_older_than_the_window_is_answered_from_the_journal(site: Site) -> None:
    card = site.card()
    c = site.client(FREE_CANTEEN_TERMINAL)
    first = c.request(ocp.Purchase(1, card["card_no"], 111, 0))
    assert first.code == RC.APPROVED
    assert c.request(ocp.Purchase(600, card["card_no"], 5, 0)).code == RC.APPROVED
    # txn_seq 1 is now more than 256 below the terminal's highest: the in-memory window has
    # forgotten it, the journal has not. Same answer, no second debit.
    again = c.request(ocp.Purchase(1, card["card_no"], 111, 0))
    assert (again.txn_seq, again.code, again.amount_fen, again.balance_fen) == (
        first.txn_seq, first.code, first.amount_fen, first.balance_fen)
    assert len(site.journal(FREE_CANTEEN_TERMINAL, 1)) == 1
    # A counter that old which was never used is refused, not decided.
    never = c.request(ocp.Purchase(2, card["card_no"], 111, 0))
    assert isinstance(never, ocp.Error) and never.code == RC.TXN_SEQ_TOO_OLD
    assert never.txn_seq == 2 and site.journal(FREE_CANTEEN_TERMINAL, 2) == []
    c.close()
