"""Kiosk top-up (圈存) end to end: the switch as a real process, the trio bank host simulator
over real TCP, a real PostgreSQL. docs/protocol.md 4.7.

Approved (credited from the tenant's bank clearing account, journaled, answered once durable),
a repeat of the same kiosk request (the original answer, no second bank request), declined by
the bank, a wrong PIN and its lock-out, the caps, a POS sending a top-up, no answer in time
(not credited, the reversal advice stored before the answer, a late approval never credits,
the advice acknowledged), the link broken before the bank's answer (the same, reason
link_down), an answer that cannot be parsed (the same), the switch SIGKILLed while an advice
is pending (it survives and completes after the restart), the bank restarting mid-day, and
purchases unaffected by a dead bank link.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from onecard.harness import free_port
from onecard.seed import BANK_CLEARING, DEMO_PIN, KIOSK_BASE, demo_token
from protocols import changes, iso8583, ocp
from switch._topup import hash_pin
from terminals_sim.bank_host import BankHostThread
from tests.ocp_client import OcpClient
from tests.switch_site import FREE_CANTEEN_TERMINAL, Site

KEK = bytes(range(0x40, 0x60))
DEADLINE = 30.0
KIOSK = KIOSK_BASE + 1
RC = ocp.ResponseCode
OUT = ocp.TopupOutcome
PIN_TRIES_MAX = 3


def until(cond: Callable[[], Any], what: str = "condition") -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not met in {DEADLINE} s"
        time.sleep(0.02)


class Kiosk:
    """A kiosk terminal: seals the cardholder's PIN under its session's PIN key."""

    def __init__(self, site: Site, terminal_id: int = KIOSK) -> None:
        self.client: OcpClient = site.client(terminal_id)
        self.terminal_id = terminal_id
        # A kiosk keeps its own counter (top-ups that credited nothing do not advance
        # last_txn_seq at sign-on): never below one this kiosk has used.
        [used] = site.fetch("SELECT coalesce(max(txn_seq), 0) AS n FROM bank_topups"
                            " WHERE terminal_id = $1", terminal_id)
        self.seq = max(self.client.sign_on_result.last_txn_seq, int(time.time() * 10) % 10**9,
                       used["n"])

    def topup_msg(self, card_no: int, amount_fen: int, pin: str = DEMO_PIN,
                  txn_seq: int | None = None) -> ocp.Topup:
        if txn_seq is None:
            self.seq += 1
            txn_seq = self.seq
        block = ocp.seal_pin(self.client.conn.pin_key, pin, terminal_id=self.terminal_id,
                             txn_seq=txn_seq, card_no=card_no, amount_fen=amount_fen,
                             nonce=os.urandom(12))
        return ocp.Topup(txn_seq, card_no, amount_fen, block)

    def topup(self, card_no: int, amount_fen: int, pin: str = DEMO_PIN,
              txn_seq: int | None = None) -> Any:
        return self.client.request(self.topup_msg(card_no, amount_fen, pin, txn_seq))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Kiosk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture(scope="module")
def bank() -> Iterator[BankHostThread]:
    sim = BankHostThread(KEK, default_balance_fen=10_000_000, late_seconds=2.0).start()
    try:
        yield sim
    finally:
        sim.stop()


def switch_env(bank: BankHostThread, metrics_port: int | None = None) -> dict[str, str]:
    return {**({"ONECARD_METRICS_PORT": str(metrics_port)} if metrics_port else {}),
            "ONECARD_BANK_HOST": "127.0.0.1", "ONECARD_BANK_PORT": str(bank.port),
            "ONECARD_BANK_KEK": KEK.hex(), "ONECARD_BANK_RESPONSE_TIMEOUT_SECONDS": "1",
            "ONECARD_BANK_ECHO_INTERVAL_SECONDS": "1",
            "ONECARD_PIN_TRIES_MAX": str(PIN_TRIES_MAX),
            "ONECARD_BANK_ADVICE_BACKOFF_SECONDS": "0.2",
            "ONECARD_BANK_ADVICE_POLL_SECONDS": "0.1"}


def restart(site: Site, bank: BankHostThread) -> None:
    """Start the module's switch (again), with its metrics port (applied_id reads it), and
    wait until its /readyz says top-ups are available (signed on to the bank)."""
    port = site.metrics_port  # type: ignore[attr-defined]
    site.start(extra_env={**switch_env(bank), "ONECARD_METRICS_PORT": str(port)})

    def available() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as r:
                return json.loads(r.read()).get("topups_available") is True
        except urllib.error.HTTPError:
            return False

    until(available, "top-ups available after the start")


@pytest.fixture
def kiosk(site: Site) -> Iterator[Kiosk]:
    """Kiosk KIOSK of the module's site, signed on for one test."""
    with Kiosk(site) as k:
        yield k


@contextlib.contextmanager
def misbehaving(bank: BankHostThread, token: str, behaviour: str, **how: Any) -> Iterator[None]:
    """The bank host answers the bank card `token` so (decline, late, garbage, drop, ...)
    until the block ends."""
    bank.host.set_behaviour(behaviour, card=token, **how)
    try:
        yield
    finally:
        bank.host.per_card.pop(token, None)


@pytest.fixture(scope="module")
def site(pg_server: Any, migrated_template: str, bank: BankHostThread) -> Iterator[Site]:
    s = Site(pg_server.new_database(template=migrated_template))
    s.metrics_port = free_port()  # type: ignore[attr-defined]
    restart(s, bank)
    until(lambda: bank.host.signed_on_connections >= 1, "the switch signs on to the bank")
    try:
        yield s
    finally:
        if s.switch is not None:
            s.stop()


_used: set[int] = set()


def applied_id(site: Site) -> float:
    port = site.metrics_port  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("onecard_changefeed_applied_id "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def change(site: Site, event: Any, sql: str, *args: Any) -> None:
    """A change the way the admin API makes it: the table's row and the change event in one
    transaction; then wait until the switch applied it (it holds top-up contexts in memory)."""
    kind, payload = changes.encode_event(event)
    n = len(args)
    [row] = site.fetch(f"WITH c AS ({sql}) SELECT outbox_append(${n + 1}, ${n + 2}::jsonb) AS id",
                       *args, kind, payload.decode())
    until(lambda: applied_id(site) >= row["id"], f"the switch applies {kind}")


def bound_card(site: Site, *, meals_unlimited: bool = False) -> tuple[int, int, str]:
    """(card_no, account_id, bank token) of a seeded bound card no other test used;
    `meals_unlimited`: of an identity class without meal limits, for a test that buys several
    times (in a meal window, e.g. breakfast from 22:30 UTC, a limited class is refused)."""
    for card_no in site.seed.bank_card_cards:
        if card_no in _used:
            continue
        [row] = site.fetch("SELECT c.account_id, k.meal_count_max + k.meal_amount_max_fen AS m"
                           " FROM cards c JOIN accounts a ON a.id = c.account_id"
                           " JOIN identity_classes k ON k.id = a.class_id"
                           " WHERE c.card_no = $1", card_no)
        if meals_unlimited and row["m"]:
            continue
        _used.add(card_no)
        return card_no, row["account_id"], demo_token(row["account_id"])
    raise AssertionError("no seeded bound card left")


def balance(site: Site, card_no: int) -> int:
    c = site.client(FREE_CANTEEN_TERMINAL + 5)  # a POS of the campus: sees the balance
    seq = c.sign_on_result.last_txn_seq + 1
    r = c.request(ocp.BalanceInquiry(seq, card_no))
    c.close()
    return int(r.balance_fen)


def _late_answers(site: Site) -> float:
    """onecard_bank_unmatched_answers_total{reason="late"} of the site's switch."""
    url = f"http://127.0.0.1:{site.metrics_port}/metrics"  # type: ignore[attr-defined]
    text = urllib.request.urlopen(url, timeout=30).read().decode()
    for line in text.splitlines():
        if line.startswith('onecard_bank_unmatched_answers_total{reason="late"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def topup_row(site: Site, terminal_id: int, txn_seq: int) -> Any:
    rows = site.fetch("SELECT * FROM bank_topups WHERE terminal_id = $1 AND txn_seq = $2",
                      terminal_id, txn_seq)
    return rows[0] if rows else None


def test_approved_credits_from_bank_clearing_and_a_repeat_gets_the_same_answer(
        site: Site, bank: BankHostThread, kiosk: Kiosk) -> None:
    card, account, token = bound_card(site)
    before = balance(site, card)
    bank_before = bank.host.balances.get(token, 10_000_000)
    msg = kiosk.topup_msg(card, 5_000)
    answer = kiosk.client.request(msg)
    assert isinstance(answer, ocp.TopupResult), answer
    assert (answer.code, answer.outcome, answer.amount_fen) == (0, OUT.APPROVED, 5_000)
    assert answer.balance_fen == before + 5_000 and answer.bank_code == "00"
    [row] = site.journal(KIOSK, msg.txn_seq)
    assert (row["kind"], row["code"], row["merchant_id"], row["amount_fen"]) == (
        8, 0, BANK_CLEARING, 5_000)
    assert row["main_delta_fen"] == 5_000 and row["merchant_delta_fen"] == -5_000
    t = topup_row(site, KIOSK, msg.txn_seq)
    assert (t["state"], t["lsn"], t["account_id"]) == ("approved", row["lsn"], account)
    assert bank.host.balances[token] == bank_before - 5_000
    # The same kiosk request again (the answer was lost, say): the original answer, and the
    # bank never hears of it again.
    sent = len(bank.host.received_of(iso8583.TopupRequest))
    assert kiosk.client.request(msg) == answer
    again = Kiosk(site)  # and from a new session of the same kiosk
    assert again.client.request(msg) == answer
    assert len(bank.host.received_of(iso8583.TopupRequest)) == sent
    assert len(site.journal(KIOSK, msg.txn_seq)) == 1
    again.close()
    assert balance(site, card) == before + 5_000


def test_a_kiosk_above_eight_digits_tops_up_under_its_bank_terminal_id(
        site: Site, bank: BankHostThread) -> None:
    """Field 41 holds 8 digits: kiosk 123456789 is given a bank terminal id of
    90,000,000-99,999,998 once (docs/bank-link.md "Field 41") and keeps it."""
    big = 123_456_789
    change(site, changes.TerminalUpserted(big, BANK_CLEARING, 2, 1, True),
           "INSERT INTO terminals (id, merchant_id, kind, name) VALUES ($1, $2, 2, 'kiosk big')",
           big, BANK_CLEARING)
    card, _, _ = bound_card(site)
    with Kiosk(site, big) as kiosk:
        first = kiosk.topup_msg(card, 1_000)
        assert kiosk.client.request(first).code == RC.APPROVED
        [given] = site.fetch("SELECT bank_terminal_id FROM terminals WHERE id = $1", big)
        bank_tid = given["bank_terminal_id"]
        assert 90_000_000 <= bank_tid <= 99_999_998
        second = kiosk.topup_msg(card, 1_000)
        assert kiosk.client.request(second).code == RC.APPROVED
        stans = {topup_row(site, big, m.txn_seq)["stan"] for m in (first, second)}
        asked = [m for m in bank.host.received_of(iso8583.TopupRequest) if m.stan in stans]
        assert [m.terminal_id for m in asked] == [bank_tid, bank_tid]
        assert topup_row(site, big, second.txn_seq)["state"] == "approved"


def test_refusals_are_recorded_and_the_daily_sums_follow_bank_declines(
        site: Site, bank: BankHostThread, kiosk: Kiosk) -> None:
    """What the switch refuses itself leaves a row in bank_topup_refusals (the code, no
    STAN); a bank decline gives its amount back to the day's sums held in memory."""
    card, account, token = bound_card(site)
    try:
        change(site, changes.BankSettingsChanged(1, True, 10_000, 10_000, 0),
               "INSERT INTO tenant_bank_settings (tenant_id, single_max_fen,"
               " daily_card_max_fen, daily_account_max_fen) VALUES (1, 10000, 10000, 0)"
               " ON CONFLICT (tenant_id) DO UPDATE SET single_max_fen = 10000,"
               " daily_card_max_fen = 10000, daily_account_max_fen = 0, enabled = true")
        wrong = kiosk.topup_msg(card, 1_000, pin="000000")
        assert kiosk.client.request(wrong).code == RC.PIN_INCORRECT
        bank.host.set_behaviour("decline", card=token, field39="51")
        assert kiosk.topup(card, 10_000).code == RC.BANK_INSUFFICIENT_FUNDS
        bank.host.per_card.pop(token, None)
        # The declined 100.00 does not count against the day's 100.00 of this card.
        assert kiosk.topup(card, 10_000).code == RC.APPROVED
        over = kiosk.topup_msg(card, 1)
        assert kiosk.client.request(over).code == RC.TOPUP_DAILY_LIMIT_EXCEEDED
        rows = until(lambda: (r := site.fetch(
            "SELECT terminal_id, txn_seq, code, amount_fen FROM bank_topup_refusals"
            " WHERE account_id = $1 ORDER BY id", account)) and len(r) == 2 and r,
            "the refusals are recorded")
        assert [(r["terminal_id"], r["txn_seq"], r["code"], r["amount_fen"]) for r in rows] == [
            (KIOSK, wrong.txn_seq, RC.PIN_INCORRECT, 1_000),
            (KIOSK, over.txn_seq, RC.TOPUP_DAILY_LIMIT_EXCEEDED, 1)]
        assert topup_row(site, KIOSK, over.txn_seq) is None  # never a bank_topups row
    finally:
        change(site, changes.BankSettingsChanged(1, True, 100000, 200000, 300000),
               "DELETE FROM tenant_bank_settings")


def test_bank_decline_moves_nothing(site: Site, bank: BankHostThread, kiosk: Kiosk) -> None:
    card, _, token = bound_card(site)
    before = balance(site, card)
    with misbehaving(bank, token, "decline", field39="51"):
        msg = kiosk.topup_msg(card, 3_000)
        answer = kiosk.client.request(msg)
        assert (answer.code, answer.outcome, answer.amount_fen, answer.bank_code) == (
            RC.BANK_INSUFFICIENT_FUNDS, OUT.DECLINED, 0, "51")
        assert site.journal(KIOSK, msg.txn_seq) == []
        assert topup_row(site, KIOSK, msg.txn_seq)["state"] == "declined"
        assert kiosk.client.request(msg) == answer  # a repeat: the same decline
    assert balance(site, card) == before


def test_wrong_pin_counts_and_locks(site: Site, bank: BankHostThread, kiosk: Kiosk) -> None:
    card, account, _ = bound_card(site)
    sent = len(bank.host.received_of(iso8583.TopupRequest))
    codes = [kiosk.topup(card, 1_000, pin="000000").code for _ in range(PIN_TRIES_MAX)]
    assert codes == [RC.PIN_INCORRECT] * (PIN_TRIES_MAX - 1) + [RC.PIN_TRIES_EXCEEDED]
    # Locked: even the right PIN is refused until a new one is set.
    assert kiosk.topup(card, 1_000).code == RC.PIN_TRIES_EXCEEDED
    # A PIN block sealed for another amount does not open (nor for another session).
    bad = kiosk.topup_msg(card, 1_000)
    forged = ocp.Topup(bad.txn_seq, card, 2_000, bad.pin_block)
    change(site, changes.PinChanged(account), "UPDATE cardholder_pins SET locked = false,"
           " failed_tries = 0 WHERE account_id = $1", account)
    assert kiosk.client.request(forged).code == RC.PIN_INCORRECT
    assert len(bank.host.received_of(iso8583.TopupRequest)) == sent  # the bank never asked
    assert site.fetch("SELECT count(*) AS n FROM bank_topups WHERE account_id = $1",
                      account)[0]["n"] == 0


def test_caps_and_tenant_switch(site: Site, kiosk: Kiosk) -> None:
    card, _, _ = bound_card(site)
    try:
        change(site, changes.BankSettingsChanged(1, True, 10000, 15000, 0),
               "INSERT INTO tenant_bank_settings (tenant_id, single_max_fen,"
               " daily_card_max_fen, daily_account_max_fen) VALUES (1, 10000, 15000, 0)"
               " ON CONFLICT (tenant_id) DO UPDATE SET single_max_fen = 10000,"
               " daily_card_max_fen = 15000, daily_account_max_fen = 0, enabled = true")
        assert kiosk.topup(card, 10_001).code == RC.TOPUP_LIMIT_EXCEEDED
        assert kiosk.topup(card, 10_000).code == RC.APPROVED
        assert kiosk.topup(card, 5_001).code == RC.TOPUP_DAILY_LIMIT_EXCEEDED
        assert kiosk.topup(card, 5_000).code == RC.APPROVED
        change(site, changes.BankSettingsChanged(1, False, 10000, 0, 0),
               "UPDATE tenant_bank_settings SET enabled = false, daily_card_max_fen = 0")
        assert kiosk.topup(card, 100).code == RC.TOPUP_NOT_AVAILABLE
    finally:
        change(site, changes.BankSettingsChanged(1, True, 100000, 200000, 300000),
               "DELETE FROM tenant_bank_settings")


def test_a_pos_may_not_top_up(site: Site) -> None:
    card, _, _ = bound_card(site)
    pos = site.client(FREE_CANTEEN_TERMINAL)
    seq = pos.sign_on_result.last_txn_seq + 1
    answer = pos.request(ocp.Topup(seq, card, 1_000, bytes(40)))
    assert answer == ocp.Error(RC.NOT_PERMITTED, seq,
                               "Topup is accepted from kiosk terminals (kind 2) only")
    pos.close()


def test_no_answer_in_time_is_not_credited_and_is_reversed(
        site: Site, bank: BankHostThread, kiosk: Kiosk) -> None:
    card, _, token = bound_card(site)
    before = balance(site, card)
    bank_before = bank.host.balances.get(token, 10_000_000)
    late_before = _late_answers(site)
    with misbehaving(bank, token, "late", delay_seconds=2.0):  # after our 1 s timeout
        msg = kiosk.topup_msg(card, 4_000)
        answer = kiosk.client.request(msg)
        assert (answer.code, answer.outcome, answer.amount_fen) == (
            RC.BANK_NO_ANSWER, OUT.UNKNOWN, 0)
        # Stored before the kiosk heard: the advice is there the moment the answer is.
        t = topup_row(site, KIOSK, msg.txn_seq)
        [advice] = site.fetch("SELECT * FROM bank_advices WHERE topup_id = $1", t["id"])
        assert advice["reason"] == "timeout"
        until(lambda: topup_row(site, KIOSK, msg.txn_seq)["state"] == "reversed",
              "the advice is acknowledged")
        # The bank's late approval arrives after that (2 s after the request): matched by
        # (terminal, STAN) to nothing pending, counted, dropped, never credited.
        until(lambda: any(r.rrn == t["rrn"] for r in bank.host.received_of(
            iso8583.ReversalAdvice)), "the bank got the advice")
        until(lambda: _late_answers(site) > late_before, "the late approval arrives")
        assert site.journal(KIOSK, msg.txn_seq) == []
        assert bank.host.balances[token] == bank_before  # the bank gave it back
        assert kiosk.client.request(msg) == answer  # a repeat: the same "not credited"
    assert balance(site, card) == before


def _metric(site: Site, prefix: str) -> float:
    """A sample of the site's switch's /metrics, by the start of its line (0 when absent)."""
    url = f"http://127.0.0.1:{site.metrics_port}/metrics"  # type: ignore[attr-defined]
    text = urllib.request.urlopen(url, timeout=30).read().decode()
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_an_unparseable_answer_is_not_credited_and_is_reversed(
        site: Site, bank: BankHostThread, kiosk: Kiosk) -> None:
    """The bank approves (and debits the bank card), then answers with a message nobody can
    parse (a byte after its last field): the switch counts it, drops it, keeps the link up,
    answers the kiosk "unknown, not credited" with the reversal advice stored before that
    answer, and the bank gives the money back on the advice."""
    card, _, token = bound_card(site)
    before = balance(site, card)
    bank_before = bank.host.balances.get(token, 10_000_000)
    bad_before = _metric(site, 'onecard_bank_bad_messages_total{reason="malformed"}')
    connections = bank.host.connections_accepted
    with misbehaving(bank, token, "garbage"):
        msg = kiosk.topup_msg(card, 2_700)
        answer = kiosk.client.request(msg)
        assert (answer.code, answer.outcome, answer.amount_fen) == (
            RC.BANK_NO_ANSWER, OUT.UNKNOWN, 0)
        t = topup_row(site, KIOSK, msg.txn_seq)
        [advice] = site.fetch("SELECT * FROM bank_advices WHERE topup_id = $1", t["id"])
        assert advice["reason"] == "timeout"  # the unreadable answer matched nothing
        assert _metric(site, 'onecard_bank_bad_messages_total{reason="malformed"}') > bad_before
        assert bank.host.topups[t["rrn"]].field39 == "00"  # the bank approved (and debited)
        until(lambda: topup_row(site, KIOSK, msg.txn_seq)["state"] == "reversed",
              "the advice is acknowledged")
        assert bank.host.topups[t["rrn"]].reversed
        assert site.journal(KIOSK, msg.txn_seq) == []
        assert bank.host.balances[token] == bank_before  # given back on the advice
        assert bank.host.connections_accepted == connections  # the link stayed up
        assert kiosk.client.request(msg) == answer  # a repeat: the same "not credited"
    assert balance(site, card) == before


def test_advice_pending_survives_a_sigkill(site: Site, bank: BankHostThread) -> None:
    card, _, token = bound_card(site)
    bank_before = bank.host.balances.get(token, 10_000_000)
    bank.host.set_behaviour("late", card=token, delay_seconds=1.5)
    bank.host.set_advice_action("silent")  # the bank does not acknowledge: it stays pending
    kiosk = Kiosk(site)
    msg = kiosk.topup_msg(card, 2_500)
    try:
        assert kiosk.client.request(msg).outcome == OUT.UNKNOWN
        t = topup_row(site, KIOSK, msg.txn_seq)
        until(lambda: site.fetch("SELECT tries FROM bank_advices WHERE topup_id = $1",
                                 t["id"])[0]["tries"] >= 1, "the advice is tried")
        kiosk.close()
        assert site.switch is not None
        site.switch.kill()
        bank.host.set_advice_action("ack")
        bank.host.per_card.pop(token, None)
        restart(site, bank)
        until(lambda: topup_row(site, KIOSK, msg.txn_seq)["state"] == "reversed",
              "the advice completes after the restart")
        [advice] = site.fetch("SELECT * FROM bank_advices WHERE topup_id = $1", t["id"])
        assert advice["state"] == "acknowledged"
        assert site.journal(KIOSK, msg.txn_seq) == []
        assert bank.host.balances[token] == bank_before
        again = Kiosk(site)
        assert again.client.request(msg).outcome == OUT.UNKNOWN  # the stored answer
        again.close()
    finally:
        bank.host.set_advice_action("ack")
        bank.host.per_card.pop(token, None)


def test_the_day_sums_and_the_pin_survive_a_sigkill_and_follow_the_feed(
        site: Site, bank: BankHostThread) -> None:
    """What the switch holds in memory is read again after a crash (today's sums: the cap
    still holds), and follows the change feed (a new PIN: the old one, verified before and
    remembered, no longer opens; an unbound bank card: NO_BANK_CARD)."""
    card, account, _ = bound_card(site)
    kiosk = Kiosk(site)
    try:
        change(site, changes.BankSettingsChanged(1, True, 0, 5_000, 0),
               "INSERT INTO tenant_bank_settings (tenant_id, single_max_fen,"
               " daily_card_max_fen, daily_account_max_fen) VALUES (1, 0, 5000, 0)"
               " ON CONFLICT (tenant_id) DO UPDATE SET single_max_fen = 0,"
               " daily_card_max_fen = 5000, daily_account_max_fen = 0, enabled = true")
        assert kiosk.topup(card, 4_000).code == RC.APPROVED
        kiosk.close()
        assert site.switch is not None
        site.switch.kill()
        restart(site, bank)
        until(lambda: bank.host.signed_on_connections >= 1, "the switch signs on again")
        kiosk = Kiosk(site)
        assert kiosk.topup(card, 1_001).code == RC.TOPUP_DAILY_LIMIT_EXCEEDED
        assert kiosk.topup(card, 1_000).code == RC.APPROVED
        change(site, changes.PinChanged(account), "UPDATE cardholder_pins SET pin_hash = $2"
               " WHERE account_id = $1", account, hash_pin("654321"))
        change(site, changes.BankSettingsChanged(1, True, 0, 0, 0),
               "UPDATE tenant_bank_settings SET daily_card_max_fen = 0")
        assert kiosk.topup(card, 100).code == RC.PIN_INCORRECT  # the old PIN
        assert kiosk.topup(card, 100, pin="654321").code == RC.APPROVED
        change(site, changes.BankCardChanged(account, False),
               "UPDATE bank_cards SET unbound_at = now() WHERE account_id = $1"
               " AND unbound_at IS NULL", account)
        assert kiosk.topup(card, 100, pin="654321").code == RC.NO_BANK_CARD
    finally:
        change(site, changes.BankSettingsChanged(1, True, 100000, 200000, 300000),
               "DELETE FROM tenant_bank_settings")
        kiosk.close()


def test_a_sigkill_amid_top_ups_never_credits_twice_nor_loses_a_credit(
        site: Site, bank: BankHostThread) -> None:
    """Two kiosks top up as fast as they are answered while the switch is SIGKILLed: every
    approval a kiosk heard has its journal credit and its row 'approved' (one commit), no
    row is 'approved' without its credit nor credited without being 'approved' after the
    restart, and what was at the bank unanswered is reversed, never credited."""
    import threading

    cards = [bound_card(site)[0] for _ in range(4)]
    heard: list[tuple[int, int, int]] = []  # (terminal, txn_seq, code)
    stop = threading.Event()

    def loop(terminal_id: int, mine: list[int]) -> None:
        kiosk = Kiosk(site, terminal_id)
        n = 0
        try:
            while not stop.is_set():
                msg = kiosk.topup_msg(mine[n % len(mine)], 100)
                n += 1
                answer = kiosk.client.request(msg)
                if not isinstance(answer, ocp.TopupResult | ocp.Error):
                    return  # the connection ended (the switch died under it)
                heard.append((terminal_id, msg.txn_seq, answer.code))
        except (OSError, EOFError, AssertionError):
            pass  # the switch died under it
        finally:
            kiosk.close()

    threads = [threading.Thread(target=loop, args=(KIOSK + k, cards[2 * k:2 * k + 2]))
               for k in range(2)]
    for t in threads:
        t.start()
    until(lambda: len(heard) >= 30, "top-ups under way")
    assert site.switch is not None
    site.switch.kill()
    stop.set()
    for t in threads:
        t.join(DEADLINE)
    restart(site, bank)
    kiosks = [KIOSK, KIOSK + 1]
    until(lambda: not site.fetch("SELECT 1 FROM bank_topups WHERE terminal_id = ANY($1)"
                                 " AND state IN ('sent', 'reversal_pending')", kiosks),
          "every top-up cut short is settled and its advice acknowledged")
    rows = site.fetch(
        "SELECT t.terminal_id, t.txn_seq, t.state, t.lsn, j.lsn AS credit, j.code"
        " FROM bank_topups t LEFT JOIN journal j ON j.terminal_id = t.terminal_id"
        " AND j.txn_seq = t.txn_seq AND j.kind = 8 WHERE t.terminal_id = ANY($1)", kiosks)
    by_key = {(r["terminal_id"], r["txn_seq"]): r for r in rows}
    for r in rows:
        credited = r["credit"] is not None and r["code"] == 0
        assert (r["state"] == "approved") == credited, dict(r)
        assert r["state"] in ("approved", "declined", "reversed"), dict(r)
        if credited:
            assert r["lsn"] == r["credit"]
    approved = [(t, q) for t, q, code in heard if code == RC.APPROVED]
    assert len(approved) >= 30 - 2
    for key in approved:
        assert by_key[key]["state"] == "approved"


def test_bank_restart_mid_day(site: Site, bank: BankHostThread, kiosk: Kiosk) -> None:
    card, _, _ = bound_card(site)
    assert kiosk.topup(card, 1_000).code == RC.APPROVED
    connections = bank.host.connections_accepted
    bank.call(bank.host.restart)
    until(lambda: bank.host.connections_accepted > connections
          and bank.host.signed_on_connections >= 1 and bank.host.keys.current is not None,
          "the switch signs on again")

    def approved() -> bool:
        answer = kiosk.topup(card, 1_000)
        assert answer.code in (RC.APPROVED, RC.TOPUP_NOT_AVAILABLE), answer
        return bool(answer.code == RC.APPROVED)

    until(approved, "top-ups work again")


def test_a_broken_link_is_not_credited_and_is_reversed(
        site: Site, bank: BankHostThread, kiosk: Kiosk) -> None:
    """The bank approves (and debits the bank card), then the connection drops before its
    answer: "unknown, not credited", the advice stored (reason link_down) before the kiosk
    hears, and acknowledged once the switch is signed on again: the bank gives the money back
    and the wallet never moved."""
    card, _, token = bound_card(site)
    before = balance(site, card)
    bank_before = bank.host.balances.get(token, 10_000_000)
    with misbehaving(bank, token, "drop"):
        msg = kiosk.topup_msg(card, 3_000)
        answer = kiosk.client.request(msg)
        assert (answer.code, answer.outcome, answer.amount_fen) == (
            RC.BANK_NO_ANSWER, OUT.UNKNOWN, 0)
        t = topup_row(site, KIOSK, msg.txn_seq)
        [advice] = site.fetch("SELECT * FROM bank_advices WHERE topup_id = $1", t["id"])
        assert advice["reason"] == "link_down"
        bank.host.per_card.pop(token, None)
        until(lambda: topup_row(site, KIOSK, msg.txn_seq)["state"] == "reversed",
              "the advice is acknowledged after the reconnect")
        assert site.journal(KIOSK, msg.txn_seq) == []
        assert bank.host.balances[token] == bank_before  # debited, then given back
    assert balance(site, card) == before


def test_dead_bank_link_costs_purchases_nothing(pg_server: Any, migrated_template: str
                                                ) -> None:
    sim = BankHostThread(KEK, default_balance_fen=10_000_000).start()
    s = Site(pg_server.new_database(template=migrated_template))
    s.start(extra_env=switch_env(sim))
    try:
        until(lambda: sim.host.signed_on_connections >= 1, "signed on")
        sim.stop()
        card = s.seed.bank_card_cards[0]
        kiosk = Kiosk(s)
        started = time.monotonic()
        assert kiosk.topup(card, 1_000).code == RC.TOPUP_NOT_AVAILABLE
        assert time.monotonic() - started < 1.0  # refused at once, not after a timeout
        pos = s.client(FREE_CANTEEN_TERMINAL)
        seq = pos.sign_on_result.last_txn_seq
        for n in range(1, 51):
            assert pos.request(ocp.Purchase(seq + n, s.card()["card_no"], 10, 0)).code == 0
        pos.close()
        kiosk.close()
    finally:
        s.stop()
        sim.stop()


def test_automatic_topup_once_a_day_never_delaying_the_purchase(site: Site,
                                                                bank: BankHostThread) -> None:
    card, account, _ = bound_card(site, meals_unlimited=True)
    # The cardholder chose 自动圈存 (the admin API does this; here its row and its change event):
    # below 1,000,000.00 yuan (always), top up 20.00.
    site.fetch("UPDATE bank_cards SET auto_threshold_fen = 100000000, auto_amount_fen = 2000"
               " WHERE account_id = $1 AND unbound_at IS NULL", account)
    site.fetch("SELECT outbox_append('bank_card_changed', $1::jsonb)",
               f'{{"account_id": {account}, "bound": true, "pan_masked": "622202******0000",'
               f' "auto_threshold_fen": 100000000, "auto_amount_fen": 2000}}')
    pos = site.client(FREE_CANTEEN_TERMINAL)
    seq = pos.sign_on_result.last_txn_seq

    def auto_rows() -> list[Any]:
        return site.fetch("SELECT * FROM bank_topups WHERE account_id = $1 AND auto",
                          account)

    def buy_and_look() -> list[Any]:
        nonlocal seq
        seq += 1
        started = time.monotonic()
        assert pos.request(ocp.Purchase(seq, card, 10, 0)).code == 0
        assert time.monotonic() - started < 1.0  # the purchase's own answer never waits
        return [r for r in auto_rows() if r["state"] == "approved"]

    try:
        [row] = until(buy_and_look, "an automatic top-up after a purchase below the threshold")
    except AssertionError:
        assert site.switch is not None
        print(site.switch.log_tail(60))
        raise
    for _ in range(5):  # more purchases below the threshold: no second one today
        buy_and_look()
    pos.close()
    assert len(auto_rows()) == 1
    [j] = site.journal(row["terminal_id"], row["txn_seq"])
    assert (j["kind"], j["code"], j["merchant_id"], j["amount_fen"]) == (8, 0, BANK_CLEARING,
                                                                         2000)


def test_an_automatic_topup_over_the_cap_is_recorded_as_refused(site: Site,
                                                                bank: BankHostThread) -> None:
    """An automatic top-up the tenant's caps forbid asks no bank and leaves a refusal row
    (auto, terminal AUTO_TOPUP_TERMINAL) that finance sees like a kiosk's."""
    from switch._topup import AUTO_TOPUP_TERMINAL

    card, account, _ = bound_card(site, meals_unlimited=True)
    site.fetch("UPDATE bank_cards SET auto_threshold_fen = 100000000, auto_amount_fen = 2000"
               " WHERE account_id = $1 AND unbound_at IS NULL", account)
    site.fetch("SELECT outbox_append('bank_card_changed', $1::jsonb)",
               f'{{"account_id": {account}, "bound": true, "pan_masked": "622202******0000",'
               f' "auto_threshold_fen": 100000000, "auto_amount_fen": 2000}}')
    pos = site.client(FREE_CANTEEN_TERMINAL)
    seq = pos.sign_on_result.last_txn_seq
    try:
        change(site, changes.BankSettingsChanged(1, True, 1_000, 100_000, 0),
               "INSERT INTO tenant_bank_settings (tenant_id, single_max_fen,"
               " daily_card_max_fen, daily_account_max_fen) VALUES (1, 1000, 100000, 0)"
               " ON CONFLICT (tenant_id) DO UPDATE SET single_max_fen = 1000,"
               " daily_card_max_fen = 100000, daily_account_max_fen = 0, enabled = true")

        def refused() -> list[Any]:
            nonlocal seq
            seq += 1
            assert pos.request(ocp.Purchase(seq, card, 10, 0)).code == 0
            return site.fetch("SELECT terminal_id, code, amount_fen, auto FROM"
                              " bank_topup_refusals WHERE account_id = $1", account)

        [row] = until(refused, "the automatic top-up over the cap is recorded as refused")
        assert (row["terminal_id"], row["code"], row["amount_fen"], row["auto"]) == (
            AUTO_TOPUP_TERMINAL, RC.TOPUP_LIMIT_EXCEEDED, 2000, True)
        assert site.fetch("SELECT id FROM bank_topups WHERE account_id = $1 AND auto",
                          account) == []
    finally:
        pos.close()
        change(site, changes.BankSettingsChanged(1, True, 100000, 200000, 300000),
               "DELETE FROM tenant_bank_settings")


def test_a_graceful_stop_answers_the_topup_at_the_bank(site: Site,
                                                      bank: BankHostThread) -> None:
    card, _, token = bound_card(site)
    bank.host.set_behaviour("delay", card=token, delay_seconds=0.5)
    kiosk = Kiosk(site)
    msg = kiosk.topup_msg(card, 1_200)
    try:
        kiosk.client.send(msg)
        until(lambda: topup_row(site, KIOSK, msg.txn_seq) is not None, "at the bank")
        assert site.stop() == 0  # SIGTERM: drains
        answer = kiosk.client.next_message()
        assert isinstance(answer, ocp.TopupResult) and answer.code == RC.APPROVED, answer
        assert topup_row(site, KIOSK, msg.txn_seq)["state"] == "approved"
    finally:
        bank.host.per_card.pop(token, None)
        kiosk.close()
        restart(site, bank)
        until(lambda: bank.host.signed_on_connections >= 1, "signed on again")


def test_an_advice_never_acknowledged_becomes_a_document(pg_server: Any,
                                                        migrated_template: str) -> None:
    from tests.admin_site import AdminSite

    sim = BankHostThread(KEK, default_balance_fen=10_000_000).start()
    s = AdminSite(pg_server.new_database(template=migrated_template))
    s.start(extra_env={**switch_env(sim), "ONECARD_BANK_ADVICE_TRIES_MAX": "2"})
    try:
        until(lambda: sim.host.signed_on_connections >= 1, "signed on")
        card = s.seed.bank_card_cards[0]
        sim.host.set_behaviour("silent")
        sim.host.set_advice_action("silent")
        kiosk = Kiosk(s)
        msg = kiosk.topup_msg(card, 1_500)
        assert kiosk.client.request(msg).outcome == OUT.UNKNOWN
        kiosk.close()
        t = until(lambda: (r := topup_row(s, KIOSK, msg.txn_seq)) is not None
                  and r["state"] == "exception" and r, "handed to a person")
        [advice] = s.fetch("SELECT * FROM bank_advices WHERE topup_id = $1", t["id"])
        assert (advice["state"], advice["tries"]) == ("exception", 2)
        [doc] = s.fetch("SELECT * FROM documents WHERE id = $1", advice["document_id"])
        assert (doc["doc_type"], doc["status"], doc["bank_topup_id"], doc["total_fen"]) == (
            "bank_exception", "submitted", t["id"], 1_500)
        assert t["rrn"] in doc["title"]
        assert s.journal(KIOSK, msg.txn_seq) == []
    finally:
        s.stop()
        sim.stop()


def test_books_balance_after_all_of_it(site: Site, bank: BankHostThread) -> None:
    """Last of the module: every top-up above, credited or not, left the books conserved;
    the bank clearing account paid exactly what was credited; nothing is left pending."""
    until(lambda: not site.fetch("SELECT 1 FROM bank_advices WHERE state = 'pending'"),
          "no advice pending")
    assert site.stop() == 0
    site.switch = None
    audit = site.audit()
    assert audit.conserved, audit
    credited = site.fetch("SELECT coalesce(sum(amount_fen), 0) AS s FROM bank_topups"
                          " WHERE state = 'approved'")[0]["s"]
    paid = site.fetch("SELECT coalesce(-sum(merchant_delta_fen), 0) AS s FROM journal"
                      " WHERE merchant_id = $1", BANK_CLEARING)[0]["s"]
    assert credited == paid > 0
