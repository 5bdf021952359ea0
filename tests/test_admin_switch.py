"""The privileged (admin) terminal end to end: a real switch process, real TCP, real PostgreSQL.

The admin API moves money only through the switch, as a terminal registered with kind 6
(onecard.seed registers one at the cash desk): counter top-ups, subsidies, refunds and wallet
transfers are decided in the balance cache, journaled by group commit, answered after COMMIT,
idempotent per (terminal, txn_seq), and replayed at recovery like purchases.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import pytest

from onecard.seed import ADMIN_TERMINAL, CASH_DESK_MERCHANT, SUBSIDY_FUND, SeedPlan
from protocols import ocp
from tests.switch_site import FREE_CANTEEN_TERMINAL, Site

RC = ocp.ResponseCode
MAIN, SUBSIDY = 0, 1
ACTIVE, FROZEN, LOST, CLOSED = 0, 1, 2, 3
CREDIT_KIND, DEBIT_KIND, TRANSFER_KIND = 8, 9, 10


class Holder(msgspec.Struct, frozen=True):
    card_no: int
    account_id: int
    main: int
    subsidy: int


class AdminSite(Site):
    """A seeded site whose first accounts have known statuses, its switch running."""

    holders: dict[str, Holder]


@pytest.fixture
def site(db_dsn: str) -> Iterator[AdminSite]:
    s = AdminSite(db_dsn, SeedPlan(accounts=200, terminals=5, lost_share=0, frozen_share=0,
                                   closed_share=0, replaced_share=0, main_fen_max=20_000))
    rows = s.fetch(
        "SELECT c.card_no, a.id AS account_id, a.opening_main_fen AS main,"
        " a.opening_subsidy_fen AS subsidy FROM accounts a JOIN cards c ON c.account_id = a.id"
        " WHERE a.class_id = 1 AND a.opening_main_fen >= 5000 ORDER BY a.id LIMIT 6"
    )
    names = ["active", "other", "lost", "frozen", "closed", "spare"]
    s.holders = {n: Holder(r["card_no"], r["account_id"], r["main"], r["subsidy"])
                 for n, r in zip(names, rows, strict=True)}
    for name, status in (("lost", LOST), ("frozen", FROZEN), ("closed", CLOSED)):
        s.fetch("UPDATE accounts SET status = $1 WHERE id = $2", status,
                s.holders[name].account_id)
    s.start()
    try:
        yield s
    finally:
        if s.switch is not None:
            s.switch.stop()


def balances(site: Site, card_no: int, txn_seq: int) -> tuple[int, int]:
    """(main, subsidy) as a POS terminal's inquiry sees them now."""
    c = site.client(FREE_CANTEEN_TERMINAL, last_txn_seq=txn_seq - 1)
    r = c.request(ocp.BalanceInquiry(txn_seq, card_no))
    c.close()
    assert isinstance(r, ocp.BalanceResult) and r.code == RC.APPROVED, r
    return r.main_fen, r.subsidy_fen


def test_credit_is_journaled_answered_after_commit_and_repeated_identically(
        site: AdminSite) -> None:
    h = site.holders["active"]
    admin = site.client(ADMIN_TERMINAL)
    top_up = admin.request(ocp.Credit(1, h.card_no, MAIN, 5_000, CASH_DESK_MERCHANT))
    assert top_up == ocp.CreditResult(1, RC.APPROVED, 5_000, h.main + 5_000 + h.subsidy,
                                      h.main + 5_000, h.subsidy)
    (row,) = site.journal(ADMIN_TERMINAL, 1)  # durable the moment the answer is
    assert (row["kind"], row["code"], row["merchant_id"], row["account_id"]) == (
        CREDIT_KIND, 0, CASH_DESK_MERCHANT, h.account_id)
    assert (row["main_delta_fen"], row["subsidy_delta_fen"], row["merchant_delta_fen"]) == (
        5_000, 0, -5_000)
    subsidy = admin.request(ocp.Credit(2, h.card_no, SUBSIDY, 300, SUBSIDY_FUND))
    assert (subsidy.code, subsidy.amount_fen, subsidy.subsidy_fen) == (0, 300, h.subsidy + 300)
    # A repeat gets the original answer, whatever its fields say, in this session or the next.
    assert admin.request(ocp.Credit(1, h.card_no, MAIN, 5_000, CASH_DESK_MERCHANT)) == top_up
    admin.close()
    admin = site.client(ADMIN_TERMINAL, last_txn_seq=2)
    assert admin.sign_on_result.last_txn_seq == 2
    assert admin.request(ocp.Credit(1, h.card_no, SUBSIDY, 9, SUBSIDY_FUND)) == top_up
    admin.close()
    assert len(site.journal(ADMIN_TERMINAL, 1)) == 1
    assert balances(site, h.card_no, 1) == (h.main + 5_000, h.subsidy + 300)


@pytest.mark.parametrize("request_type", [ocp.Credit, ocp.Debit, ocp.Transfer])
def test_a_non_admin_terminal_is_refused_not_permitted_and_nothing_changes(
        site: AdminSite, request_type: type[ocp.Message]) -> None:
    h = site.holders["active"]
    pos = site.client(FREE_CANTEEN_TERMINAL)
    fields = (1, h.card_no, MAIN, 1_000, CASH_DESK_MERCHANT)
    refused = pos.request(request_type(*fields[:len(request_type.__struct_fields__)]))
    assert isinstance(refused, ocp.Error)
    assert (refused.code, refused.txn_seq) == (RC.NOT_PERMITTED, 1)
    # As in docs/protocol.md, Appendix A.4 (admin-refused/02-not-permitted).
    name = request_type.__name__
    assert refused.detail == f"{name} is accepted from admin terminals (kind 6) only"
    assert site.journal(FREE_CANTEEN_TERMINAL, 1) == []
    # The connection stays open and txn_seq 1 was not used up: nothing was decided.
    inquiry = pos.request(ocp.BalanceInquiry(1, h.card_no))
    assert isinstance(inquiry, ocp.BalanceResult)
    assert (inquiry.code, inquiry.main_fen, inquiry.subsidy_fen) == (0, h.main, h.subsidy)
    pos.close()
    assert site.switch is not None
    log = site.switch.log_tail(100)
    assert '"ocp.security_violation"' in log and '"not_permitted"' in log


def test_admin_declines_are_journaled_and_move_no_money(site: AdminSite) -> None:
    hs = site.holders
    admin = site.client(ADMIN_TERMINAL)
    # LOST and FROZEN accounts take money at the counter; CLOSED ones do not.
    for seq, name in ((1, "lost"), (2, "frozen")):
        r = admin.request(ocp.Credit(seq, hs[name].card_no, MAIN, 100, CASH_DESK_MERCHANT))
        assert (r.code, r.main_fen) == (RC.APPROVED, hs[name].main + 100), name
    cases = [
        (ocp.Credit(3, hs["closed"].card_no, MAIN, 100, CASH_DESK_MERCHANT), RC.ACCOUNT_CLOSED),
        (ocp.Credit(4, 1, MAIN, 100, CASH_DESK_MERCHANT), RC.UNKNOWN_CARD),
        (ocp.Credit(5, hs["active"].card_no, MAIN, 0, CASH_DESK_MERCHANT), RC.INVALID_AMOUNT),
        (ocp.Credit(6, hs["active"].card_no, MAIN, 100, 99), RC.INVALID_MERCHANT),
    ]
    for request, code in cases:
        answer = admin.request(request)
        assert (type(answer), answer.code, answer.amount_fen) == (ocp.CreditResult, code, 0)
        (row,) = site.journal(ADMIN_TERMINAL, request.txn_seq)
        assert row["code"] == code
        assert row["main_delta_fen"] == row["subsidy_delta_fen"] == row["merchant_delta_fen"] == 0
    closed = admin.request(ocp.Credit(3, hs["closed"].card_no, MAIN, 100, CASH_DESK_MERCHANT))
    assert closed.main_fen == hs["closed"].main  # a decline shows the balances as they are
    # A merchant id the wire allows but this switch cannot hold (merchants_max 4096): refused
    # like a field out of range, not decided, txn_seq not used.
    beyond = admin.request(ocp.Credit(7, hs["active"].card_no, MAIN, 100, 5_000))
    assert isinstance(beyond, ocp.Error)
    assert (beyond.code, beyond.txn_seq, beyond.detail) == (
        RC.INVALID_FIELD, 7, "invalid field $.from_merchant_id")
    assert site.journal(ADMIN_TERMINAL, 7) == []
    admin.close()


def test_debit_pays_out_of_a_wallet_down_to_its_floor_without_class_limits(
        site: AdminSite) -> None:
    h = site.holders["active"]  # a student: txn limit 100 yuan, daily 300, no overdraft
    admin = site.client(ADMIN_TERMINAL)
    assert admin.request(ocp.Credit(1, h.card_no, MAIN, 8_000, CASH_DESK_MERCHANT)).code == 0
    main = h.main + 8_000  # above the 10_000 fen per-transaction limit of a purchase
    refund = admin.request(ocp.Debit(2, h.card_no, MAIN, main, CASH_DESK_MERCHANT))
    assert refund == ocp.DebitResult(2, RC.APPROVED, main, h.subsidy, 0, h.subsidy)
    (row,) = site.journal(ADMIN_TERMINAL, 2)
    assert (row["kind"], row["code"], row["merchant_id"]) == (DEBIT_KIND, 0, CASH_DESK_MERCHANT)
    assert (row["main_delta_fen"], row["subsidy_delta_fen"], row["merchant_delta_fen"]) == (
        -main, 0, main)
    # Main stops at 0 (no overdraft for this class); subsidy always stops at 0.
    short = admin.request(ocp.Debit(3, h.card_no, MAIN, 1, CASH_DESK_MERCHANT))
    assert short == ocp.DebitResult(3, RC.INSUFFICIENT_FUNDS, 0, h.subsidy, 0, h.subsidy)
    assert admin.request(ocp.Debit(4, h.card_no, SUBSIDY, h.subsidy + 1,
                                   SUBSIDY_FUND)).code == RC.INSUFFICIENT_FUNDS
    back = admin.request(ocp.Debit(5, h.card_no, SUBSIDY, h.subsidy, SUBSIDY_FUND))
    assert (back.code, back.amount_fen, back.balance_fen) == (RC.APPROVED, h.subsidy, 0)
    assert admin.request(ocp.Debit(2, h.card_no, MAIN, 1, SUBSIDY_FUND)) == refund  # repeat
    # LOST and FROZEN accounts can be refunded at the counter; CLOSED ones are final.
    for seq, name in ((6, "lost"), (7, "frozen")):
        r = admin.request(ocp.Debit(seq, site.holders[name].card_no, MAIN, 100,
                                    CASH_DESK_MERCHANT))
        assert (r.code, r.main_fen) == (RC.APPROVED, site.holders[name].main - 100), name
    closed = admin.request(ocp.Debit(8, site.holders["closed"].card_no, MAIN, 100,
                                     CASH_DESK_MERCHANT))
    assert (closed.code, closed.amount_fen) == (RC.ACCOUNT_CLOSED, 0)
    admin.close()
    assert balances(site, h.card_no, 1) == (0, 0)
    assert len(site.journal(ADMIN_TERMINAL, 2)) == 1


def test_transfer_moves_money_between_the_wallets_of_one_card_in_one_balanced_row(
        site: AdminSite) -> None:
    h = site.holders["active"]
    admin = site.client(ADMIN_TERMINAL)
    moved = admin.request(ocp.Transfer(1, h.card_no, MAIN, 1_200))
    assert moved == ocp.TransferResult(1, RC.APPROVED, 1_200, h.main + h.subsidy,
                                       h.main - 1_200, h.subsidy + 1_200)
    (row,) = site.journal(ADMIN_TERMINAL, 1)
    # The admin terminal's own merchant (the cash desk) names the counter; it gets nothing.
    assert (row["kind"], row["code"], row["merchant_id"]) == (
        TRANSFER_KIND, 0, CASH_DESK_MERCHANT)
    assert (row["main_delta_fen"], row["subsidy_delta_fen"], row["merchant_delta_fen"]) == (
        -1_200, 1_200, 0)
    back = admin.request(ocp.Transfer(2, h.card_no, SUBSIDY, h.subsidy + 1_200))
    assert (back.code, back.main_fen, back.subsidy_fen) == (RC.APPROVED, h.main + h.subsidy, 0)
    short = admin.request(ocp.Transfer(3, h.card_no, SUBSIDY, 1))
    assert (short.code, short.amount_fen) == (RC.INSUFFICIENT_FUNDS, 0)
    too_much = admin.request(ocp.Transfer(4, h.card_no, MAIN, h.main + h.subsidy + 1))
    assert too_much.code == RC.INSUFFICIENT_FUNDS  # no overdraft for a student
    assert admin.request(ocp.Transfer(1, h.card_no, SUBSIDY, 5)) == moved  # repeat
    closed = admin.request(ocp.Transfer(5, site.holders["closed"].card_no, MAIN, 1))
    assert closed.code == RC.ACCOUNT_CLOSED
    admin.close()
    assert balances(site, h.card_no, 1) == (h.main + h.subsidy, 0)


def test_an_admin_terminal_may_not_send_a_reversal_and_corrects_with_a_debit(
        site: AdminSite) -> None:
    """Reversal undoes purchases, which only POS terminals make: from an admin terminal it is
    refused NOT_PERMITTED (docs/protocol.md 4.1), nothing decided or journaled. An admin
    corrects a credit with a debit."""
    h = site.holders["active"]
    admin = site.client(ADMIN_TERMINAL)
    assert admin.request(ocp.Credit(1, h.card_no, MAIN, 700, CASH_DESK_MERCHANT)).code == 0
    rev = admin.request(ocp.Reversal(2, 1, h.card_no, 0))
    assert rev == ocp.Error(RC.NOT_PERMITTED, 2,
                            "Reversal is accepted from POS terminals (kind 1) only")
    assert site.journal(ADMIN_TERMINAL, 2) == []
    assert admin.request(ocp.Debit(2, h.card_no, MAIN, 300, CASH_DESK_MERCHANT)).code == 0
    admin.close()
    assert balances(site, h.card_no, 1) == (h.main + 400, h.subsidy)


def test_an_admin_repeat_older_than_the_window_is_answered_from_the_journal(
        site: AdminSite) -> None:
    h = site.holders["active"]
    admin = site.client(ADMIN_TERMINAL)
    first = admin.request(ocp.Credit(1, h.card_no, SUBSIDY, 250, SUBSIDY_FUND))
    assert first.code == RC.APPROVED
    assert admin.request(ocp.Credit(600, h.card_no, MAIN, 1, CASH_DESK_MERCHANT)).code == 0
    assert admin.request(ocp.Credit(1, h.card_no, SUBSIDY, 250, SUBSIDY_FUND)) == first
    assert len(site.journal(ADMIN_TERMINAL, 1)) == 1
    admin.close()
