"""Phone QR codes end to end: a POS over real TCP, the switch as a real process, the journal in a
real PostgreSQL (docs/protocol.md section 4.4).

A code pays once; a repeat of a decided (terminal, txn_seq) gets its original answer whatever
the code has become since (spent, expired, or issued before a restart); forged, malformed,
expired and spent codes are refused with an Error before the balance cache and journal nothing.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from protocols import limits, ocp, qr
from tests.switch_site import FREE_CANTEEN_TERMINAL, SUPERMARKET_TERMINAL, Site

RC = ocp.ResponseCode


def issue(site: Site, card_no: int, *, lifetime: int = 60, issued_s: int | None = None,
          key: bytes | None = None) -> str:
    now = int(time.time()) if issued_s is None else issued_s
    return qr.issue(key or qr.derive_qr_key(site.master), card_no, now + lifetime,
                    os.urandom(limits.QR_NONCE_BYTES), issued_s=now)


def log_events(site: Site, event: str) -> list[dict[str, Any]]:
    assert site.switch is not None
    return [json.loads(line) for line in site.switch.log_tail(400).splitlines()
            if f'"{event}"' in line]


def refused(answer: Any, code: int, txn_seq: int) -> bool:
    return isinstance(answer, ocp.Error) and (answer.code, answer.txn_seq) == (code, txn_seq)


def test_a_code_pays_once_and_a_repeat_gets_the_original_answer(site: Site) -> None:
    card = site.card()
    start = card["main"] + card["subsidy"]
    text = issue(site, card["card_no"])
    c = site.client(FREE_CANTEEN_TERMINAL)
    paid = c.request(ocp.QrPurchase(1, text, 500))
    assert isinstance(paid, ocp.PurchaseResult)
    assert (paid.txn_seq, paid.code, paid.amount_fen, paid.balance_fen) == (
        1, RC.APPROVED, 500, start - 500)
    (row,) = site.journal(FREE_CANTEEN_TERMINAL, 1)  # durable the moment the answer is
    assert (row["card_no"], row["code"], row["amount_fen"]) == (card["card_no"], 0, 500)
    # The same request again (its answer was lost): the original answer, journaled once.
    assert c.request(ocp.QrPurchase(1, text, 500)) == paid
    # The same code in a new request, here or at another till: spent.
    assert refused(c.request(ocp.QrPurchase(2, text, 500)), RC.QR_USED, 2)
    other = site.client(SUPERMARKET_TERMINAL)
    assert refused(other.request(ocp.QrPurchase(1, text, 500)), RC.QR_USED, 1)
    assert site.journal(FREE_CANTEEN_TERMINAL, 2) == []
    assert site.journal(SUPERMARKET_TERMINAL, 1) == []
    # The refusal used nothing up: the till's counter and the card are as they were.
    again = site.client(FREE_CANTEEN_TERMINAL, last_txn_seq=2)
    assert again.sign_on_result.last_txn_seq == 1
    assert again.request(ocp.QrPurchase(1, text, 999)) == paid  # repeat, from a new session
    fresh = again.request(ocp.QrPurchase(3, issue(site, card["card_no"]), 250))
    assert (fresh.code, fresh.balance_fen) == (RC.APPROVED, start - 750)
    assert len(site.journal(FREE_CANTEEN_TERMINAL, 1)) == 1
    # A reuse is a security event, naming the request it tried and the one that paid.
    (reuse, *_) = log_events(site, "ocp.security_violation")
    assert (reuse["reason"], reuse["code"], reuse["txn_seq"], reuse["paid_by"]) == (
        "qr_reused", RC.QR_USED, 2, f"{FREE_CANTEEN_TERMINAL}:1")
    for client in (c, other, again):
        client.close()


def test_a_spent_code_with_an_older_txn_seq_is_looked_up_then_refused(site: Site) -> None:
    """A txn_seq at or below the till's highest may be a repeat: the journal decides. Not
    there: refused; there (a card purchase with that txn_seq): its original answer."""
    card = site.card()
    text = issue(site, card["card_no"])
    c = site.client(FREE_CANTEEN_TERMINAL)
    assert c.request(ocp.QrPurchase(5, text, 100)).code == RC.APPROVED
    by_card = c.request(ocp.Purchase(7, card["card_no"], 100))
    assert by_card.code == RC.APPROVED
    assert refused(c.request(ocp.QrPurchase(6, text, 100)), RC.QR_USED, 6)
    assert site.journal(FREE_CANTEEN_TERMINAL, 6) == []
    # txn_seq 7 was a card purchase: the spent code cannot pay, but 7 is answered as decided.
    assert c.request(ocp.QrPurchase(7, text, 100)) == by_card
    c.close()


def test_forged_malformed_and_overlong_codes_are_refused_and_journal_nothing(
        site: Site) -> None:
    card = site.card()
    c = site.client(FREE_CANTEEN_TERMINAL)
    forged = issue(site, card["card_no"], key=qr.derive_qr_key(os.urandom(32)))
    r = c.request(ocp.QrPurchase(1, forged, 500))
    assert refused(r, RC.QR_INVALID, 1) and "MAC" in r.detail
    assert refused(c.request(ocp.QrPurchase(2, "hello, till", 500)), RC.QR_INVALID, 2)
    good = issue(site, card["card_no"])
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    assert refused(c.request(ocp.QrPurchase(3, tampered, 500)), RC.QR_INVALID, 3)
    too_long = c.request(ocp.QrPurchase(4, "OC" + "A" * limits.QR_CHARS_MAX, 500))
    assert refused(too_long, RC.INVALID_FIELD, 4) and too_long.detail.endswith("$.qr")
    # The connection stays open and the terminal's counter is untouched.
    paid = c.request(ocp.QrPurchase(5, good, 500))
    assert paid.code == RC.APPROVED and paid.balance_fen == card["main"] + card["subsidy"] - 500
    # A forged text under a decided txn_seq is refused too: a true repeat carries the same text.
    assert refused(c.request(ocp.QrPurchase(5, forged, 500)), RC.QR_INVALID, 5)
    for seq in (1, 2, 3, 4):
        assert site.journal(FREE_CANTEEN_TERMINAL, seq) == []
    events = log_events(site, "ocp.security_violation")
    assert [(e["reason"], e["txn_seq"]) for e in events] == [
        ("qr_bad_mac", 1), ("qr_malformed", 2), ("qr_bad_mac", 3), ("qr_bad_mac", 5)]
    assert all(e["code"] == RC.QR_INVALID and e["terminal_id"] == FREE_CANTEEN_TERMINAL
               for e in events)
    c.close()


def test_declines_are_journaled_and_leave_the_code_usable(site: Site) -> None:
    c = site.client(SUPERMARKET_TERMINAL)  # main wallet only
    poor = site.card(min_main=0)
    text = issue(site, poor["card_no"])
    declined = c.request(ocp.QrPurchase(1, text, poor["main"] + 5_001))
    assert (declined.code, declined.amount_fen) == (RC.INSUFFICIENT_FUNDS, 0)
    (row,) = site.journal(SUPERMARKET_TERMINAL, 1)
    assert row["code"] == RC.INSUFFICIENT_FUNDS and row["main_delta_fen"] == 0
    assert c.request(ocp.QrPurchase(1, text, 1)) == declined  # a repeat: the same decline
    assert c.request(ocp.QrPurchase(2, text, 1)).code == RC.APPROVED  # not spent by a decline
    lost = issue(site, site.seed.lost_cards[0])
    assert c.request(ocp.QrPurchase(3, lost, 100)).code == RC.CARD_LOST
    assert site.journal(SUPERMARKET_TERMINAL, 3)[0]["code"] == RC.CARD_LOST
    c.close()


def test_a_qr_purchase_is_reversed_with_the_card_number_read_from_the_code(site: Site) -> None:
    card = site.card()
    text = issue(site, card["card_no"])
    c = site.client(FREE_CANTEEN_TERMINAL)
    paid = c.request(ocp.QrPurchase(1, text, 700))
    card_no = qr.parse(text).card_no  # no key needed
    back = c.request(ocp.Reversal(2, 1, card_no, 0))
    assert isinstance(back, ocp.ReversalResult)
    assert (back.code, back.amount_fen, back.balance_fen) == (
        RC.APPROVED, 700, paid.balance_fen + 700)
    # Reversed, the code stays spent.
    assert refused(c.request(ocp.QrPurchase(3, text, 700)), RC.QR_USED, 3)
    c.close()


def test_codes_not_valid_now_are_refused_but_repeats_are_answered(site: Site) -> None:
    """Expired, not yet valid, and issued before a restart: refused QR_EXPIRED, journaled
    nothing; a request decided while its code was valid still gets its original answer."""
    card = site.card()
    c = site.client(FREE_CANTEEN_TERMINAL)
    skew = limits.QR_CLOCK_SKEW_SECONDS
    short = issue(site, card["card_no"], lifetime=1)
    paid = c.request(ocp.QrPurchase(1, short, 100))
    assert paid.code == RC.APPROVED
    kept = issue(site, card["card_no"], lifetime=limits.QR_LIFETIME_SECONDS_MAX)
    kept_paid = c.request(ocp.QrPurchase(2, kept, 100))
    assert kept_paid.code == RC.APPROVED
    future = issue(site, card["card_no"], issued_s=int(time.time()) + skew + 30)
    assert refused(c.request(ocp.QrPurchase(3, future, 100)), RC.QR_EXPIRED, 3)
    unused = issue(site, card["card_no"], lifetime=1)
    time.sleep(1 + skew + 1.5)  # both short codes are now expired, past the skew
    late = c.request(ocp.QrPurchase(4, unused, 100))
    assert refused(late, RC.QR_EXPIRED, 4) and "expired" in late.detail
    assert refused(c.request(ocp.QrPurchase(5, short, 100)), RC.QR_EXPIRED, 5)
    assert c.request(ocp.QrPurchase(1, short, 100)) == paid  # repeat of a decided request
    for seq in (3, 4, 5):
        assert site.journal(FREE_CANTEEN_TERMINAL, seq) == []
    c.close()

    # A restart forgets which codes paid: codes issued before it are refused from then on,
    # except in repeats of requests the journal holds.
    assert site.stop() == 0
    site.start()
    c = site.client(FREE_CANTEEN_TERMINAL)
    assert c.sign_on_result.last_txn_seq == 2
    assert c.request(ocp.QrPurchase(2, kept, 100)) == kept_paid
    assert c.request(ocp.QrPurchase(1, short, 100)) == paid
    r = c.request(ocp.QrPurchase(6, kept, 100))
    assert refused(r, RC.QR_EXPIRED, 6) and "before the switch started" in r.detail
    assert site.journal(FREE_CANTEEN_TERMINAL, 6) == []
    fresh = c.request(ocp.QrPurchase(6, issue(site, card["card_no"]), 100))
    assert fresh.code == RC.APPROVED
    assert fresh.balance_fen == card["main"] + card["subsidy"] - 300
    c.close()
    assert site.stop() == 0
    assert site.audit().conserved  # every balance is its opening plus its journal
