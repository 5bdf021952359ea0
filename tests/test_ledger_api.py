"""One suite over both implementations: the Cython ledger_ext and the Python LedgerModel.

Like aiohttp's tests/test_http_parser.py runs over its C and Python parsers, every test here takes
`impl` (the module) and must pass for both.
"""

from __future__ import annotations

import types

import pytest

import ledger_ext
from tests import ledger_model

T0 = 1_700_006_400                  # 2023-11-15 00:00 UTC
CARD = 6_228_480_000_000_000_001
CARD2 = 6_228_480_000_000_000_002
SHOP, CANTEEN, FIXED_SHOP, CASH_DESK, OTHER_SITE = 1, 2, 3, 4, 5


@pytest.fixture(params=["cython", "model"])
def impl(request: pytest.FixtureRequest) -> types.ModuleType:
    return ledger_ext if request.param == "cython" else ledger_model


def make(impl: types.ModuleType, *, main: int = 10_000, subsidy: int = 2_000,
         limits: tuple[int, ...] = (0, 0, 0, 0, 0), **kwargs: int) -> object:
    ledger = impl.Ledger(10, 8, **kwargs)
    ledger.configure_tenant(1, 8 * 3600, [(420, 540), (660, 780)])    # 07-09, 11-13 local
    ledger.configure_tenant(2, 0)
    ledger.configure_class(1, *limits)
    ledger.open_merchant(SHOP, 1, impl.FREE, 0, impl.SUBSIDY_FIRST)
    ledger.open_merchant(CANTEEN, 1, impl.FREE, 0, impl.MAIN_FIRST)
    ledger.open_merchant(FIXED_SHOP, 1, impl.FIXED, 450, impl.MAIN_ONLY)
    ledger.open_merchant(CASH_DESK, 1)
    ledger.open_merchant(OTHER_SITE, 2)
    ledger.open_account(1, 1, 1)
    ledger.open_account(2, 1, 1)
    ledger.bind_card(CARD, 1)
    ledger.bind_card(CARD2, 2)
    if main:
        assert ledger.credit(99, 1, CARD, CASH_DESK, impl.MAIN, main, T0).code == 0
    if subsidy:
        assert ledger.credit(99, 2, CARD, CASH_DESK, impl.SUBSIDY, subsidy, T0).code == 0
    return ledger


def at_local(hour: int, minute: int = 0, day: int = 0) -> int:
    """now_s for a local time of tenant 1 (UTC+8)."""
    return T0 - 8 * 3600 + day * 86400 + hour * 3600 + minute * 60


# ---------------------------------------------------------------------------------- exports


def test_exports_pinned() -> None:
    assert sorted(ledger_ext.__all__) == sorted(set(ledger_ext.__all__))
    for name in ledger_ext.__all__:
        assert hasattr(ledger_ext, name), name
    assert len(ledger_ext.JOURNAL_COLUMNS) == 20
    assert set(ledger_ext.__all__) >= {"Ledger", "Outcome", "Code", "Kind", "LedgerError",
                                       "JOURNAL_COLUMNS", "LedgerStatistics"}


def test_model_and_extension_agree_on_constants() -> None:
    assert {c.name: int(c) for c in ledger_ext.Code} == {c.name: int(c) for c in ledger_model.Code}
    assert {k.name: int(k) for k in ledger_ext.Kind} == {k.name: int(k) for k in ledger_model.Kind}
    for name in ledger_ext.__all__:
        value = getattr(ledger_ext, name)
        if isinstance(value, int | tuple):
            assert getattr(ledger_model, name) == value, name
    for code in ledger_ext.Code:
        assert getattr(ledger_ext, code.name) == code
    assert ledger_ext.ACCOUNTS_MAX * 2 * ledger_ext.BALANCE_FEN_MAX < 2**63 // 2


def test_errors_are_one_tree(impl: types.ModuleType) -> None:
    for name in ("LedgerArgumentError", "LedgerStateError", "LedgerCapacityError",
                 "SnapshotError", "ReplayError"):
        assert issubclass(getattr(impl, name), impl.LedgerError)


# ---------------------------------------------------------------------------------- purchase


@pytest.mark.parametrize(("merchant", "amount", "main_delta", "subsidy_delta"), [
    (SHOP, 500, 0, -500),              # subsidy first, covered by subsidy
    (SHOP, 2_500, -500, -2_000),       # subsidy first, the rest from main
    (CANTEEN, 2_500, -2_500, 0),       # main first
    (FIXED_SHOP, 0, -450, 0),          # fixed amount, main only
    (FIXED_SHOP, 450, -450, 0),
])
def test_purchase_spend_order(impl: types.ModuleType, merchant: int, amount: int,
                              main_delta: int, subsidy_delta: int) -> None:
    ledger = make(impl)
    o = ledger.purchase(1, 1, CARD, merchant, amount, T0)
    assert o.code == impl.APPROVED and not o.repeat
    assert (o.main_delta_fen, o.subsidy_delta_fen) == (main_delta, subsidy_delta)
    assert o.merchant_delta_fen == -(main_delta + subsidy_delta) == o.amount_fen
    assert (o.main_fen, o.subsidy_fen) == (10_000 + main_delta, 2_000 + subsidy_delta)
    assert o.balance_fen == o.main_fen + o.subsidy_fen
    assert (o.lsn, o.kind, o.account_id, o.tenant_id, o.merchant_tenant_id) == (3, 1, 1, 1, 1)
    assert ledger.total_fen() == 0
    assert dict(ledger.merchant_balances())[merchant] == o.amount_fen


def test_main_first_runs_into_subsidy_then_overdraft(impl: types.ModuleType) -> None:
    ledger = make(impl, main=1_000, subsidy=500, limits=(300, 0, 0, 0, 0))
    o = ledger.purchase(1, 1, CARD, CANTEEN, 1_700, T0)
    assert o.code == 0 and (o.main_delta_fen, o.subsidy_delta_fen) == (-1_200, -500)
    assert o.main_fen == -200
    assert ledger.purchase(1, 2, CARD, CANTEEN, 101, T0).code == impl.INSUFFICIENT_FUNDS
    assert ledger.purchase(1, 3, CARD, CANTEEN, 100, T0).main_fen == -300


def test_fixed_merchant_rejects_other_amounts(impl: types.ModuleType) -> None:
    ledger = make(impl)
    o = ledger.purchase(1, 1, CARD, FIXED_SHOP, 400, T0)
    assert (o.code, o.amount_fen, o.main_delta_fen) == (impl.INVALID_AMOUNT, 400, 0)
    for amount in (0, -1, impl.AMOUNT_FEN_MAX + 1):
        assert ledger.purchase(1, 2 + amount % 7, CARD, SHOP, amount, T0).code == 13


def test_decline_precedence(impl: types.ModuleType) -> None:
    ledger = make(impl)
    assert ledger.purchase(1, 1, CARD, 6, 100, T0).code == impl.INVALID_MERCHANT
    assert ledger.purchase(1, 2, 555, SHOP, 100, T0).code == impl.UNKNOWN_CARD
    assert ledger.purchase(1, 3, CARD, OTHER_SITE, 100, T0).code == impl.CROSS_TENANT_NOT_ALLOWED
    for status, code in ((impl.FROZEN, 47), (impl.CLOSED, 46), (impl.LOST, 41)):
        ledger.set_account_status(1, status)
        o = ledger.purchase(1, 10 + status, CARD, SHOP, 100, T0)
        assert o.code == code and o.main_delta_fen == 0
    ledger.cancel_card(CARD)
    assert ledger.purchase(1, 20, CARD, SHOP, 100, T0).code == impl.CARD_CANCELLED
    # merchant beats card, card beats status
    assert ledger.purchase(1, 21, 555, 6, 100, T0).code == impl.INVALID_MERCHANT
    o = ledger.purchase(1, 22, 555, SHOP, 100, T0)
    assert (o.account_id, o.tenant_id, o.main_fen) == (0, 0, 0)
    assert ledger.total_fen() == 0


def test_cross_tenant_consent_is_ordered(impl: types.ModuleType) -> None:
    ledger = make(impl)
    ledger.allow_cross_tenant(1, 2)
    o = ledger.purchase(1, 1, CARD, OTHER_SITE, 100, T0)
    assert (o.code, o.tenant_id, o.merchant_tenant_id) == (0, 1, 2)
    ledger.allow_cross_tenant(1, 2, False)
    assert ledger.purchase(1, 2, CARD, OTHER_SITE, 100, T0).code == 57


def test_cross_tenant_allowed_is_the_purchase_rule(impl: types.ModuleType) -> None:
    """What the switch asks before it shows a card's balances to a till (issue 9 item 5)."""
    ledger = make(impl)
    assert ledger.cross_tenant_allowed(1, 1) and not ledger.cross_tenant_allowed(1, 2)
    ledger.allow_cross_tenant(1, 2)
    assert ledger.cross_tenant_allowed(1, 2) and not ledger.cross_tenant_allowed(2, 1)
    assert not ledger.cross_tenant_allowed(0, 1) and not ledger.cross_tenant_allowed(1, 0)
    assert not ledger.cross_tenant_allowed(1, impl.TENANTS_MAX + 1)
    ledger.allow_cross_tenant(1, 2, False)
    o = ledger.inquire(1, 1, CARD, OTHER_SITE, T0)          # same checks as a purchase
    assert (o.code, o.tenant_id, o.merchant_tenant_id) == (57, 1, 2)
    assert not ledger.cross_tenant_allowed(o.tenant_id, o.merchant_tenant_id)


def test_txn_and_daily_limits_reset_at_local_midnight(impl: types.ModuleType) -> None:
    ledger = make(impl, main=50_000, limits=(0, 3_000, 5_000, 0, 0))
    assert ledger.purchase(1, 1, CARD, CANTEEN, 3_001, at_local(15)).code == 61
    assert ledger.purchase(1, 2, CARD, CANTEEN, 3_000, at_local(15)).code == 0
    assert ledger.purchase(1, 3, CARD, CANTEEN, 2_001, at_local(23, 59)).code == 62
    assert ledger.purchase(1, 4, CARD, CANTEEN, 2_000, at_local(23, 59)).code == 0
    # 00:00 local is 16:00 UTC: a new local day
    assert ledger.purchase(1, 5, CARD, CANTEEN, 3_000, at_local(0, 0, day=1)).code == 0
    state = ledger.account(1)
    assert state.day_spent_fen == 3_000 and state.day == (at_local(0, 0, 1) + 8 * 3600) // 86400


def test_meal_limits_per_window(impl: types.ModuleType) -> None:
    ledger = make(impl, main=50_000, limits=(0, 0, 0, 2, 1_000))
    assert ledger.purchase(1, 1, CARD, CANTEEN, 600, at_local(7, 30)).code == 0
    assert ledger.purchase(1, 2, CARD, CANTEEN, 401, at_local(8)).code == 63
    assert ledger.purchase(1, 3, CARD, CANTEEN, 400, at_local(8)).code == 0
    assert ledger.purchase(1, 4, CARD, CANTEEN, 1, at_local(8, 59)).code == 64
    assert ledger.purchase(1, 5, CARD, CANTEEN, 900, at_local(9)).code == 0        # no window
    assert ledger.purchase(1, 6, CARD, CANTEEN, 900, at_local(11)).code == 0       # new period
    state = ledger.account(1)
    day = (at_local(11) + 8 * 3600) // 86400
    assert (state.meal_period, state.meal_count, state.meal_spent_fen) == (day * 8 + 1, 1, 900)
    assert state.day_spent_fen == 2_800


# ---------------------------------------------------------------------------------- reconfiguration


def test_set_account_class_applies_the_new_limits_from_the_next_decision(
        impl: types.ModuleType) -> None:
    ledger = make(impl, main=50_000)
    ledger.configure_class(2, 0, 1_000, 3_000, 0, 0)    # txn 1,000, daily 3,000
    ledger.configure_class(3, 5_000, 0, 0, 0, 0)        # overdraft 5,000, no limits
    assert ledger.purchase(1, 1, CARD, CANTEEN, 2_500, at_local(15)).code == 0
    lsn = ledger.lsn
    ledger.set_account_class(1, 2)
    assert ledger.lsn == lsn, "configuration, not a decision"
    assert ledger.account(1).class_id == 2 and ledger.account(2).class_id == 1
    o = ledger.purchase(1, 2, CARD, CANTEEN, 1_001, at_local(15))
    assert (o.code, o.main_delta_fen) == (impl.TXN_LIMIT_EXCEEDED, 0)
    # Today's 2,500 spent under class 1 counts against class 2's daily limit.
    assert ledger.purchase(1, 3, CARD, CANTEEN, 600, at_local(15)).code == (
        impl.DAILY_LIMIT_EXCEEDED)
    assert ledger.purchase(1, 4, CARD, CANTEEN, 500, at_local(15)).code == 0
    ledger.set_account_class(1, 2)                      # idempotent
    assert ledger.account(1).class_id == 2 and ledger.lsn == lsn + 3
    # Another class's overdraft: main may go down to -5,000 now, not further.
    ledger.set_account_class(1, 3)
    have = ledger.account(1).main_fen + ledger.account(1).subsidy_fen   # main first, subsidy
    assert ledger.purchase(1, 5, CARD, CANTEEN, have + 5_001, at_local(16)).code == (
        impl.INSUFFICIENT_FUNDS)
    assert ledger.purchase(1, 6, CARD, CANTEEN, have + 5_000, at_local(16)).main_fen == -5_000
    # Back to a class without overdraft: the balance stays, new spending from main is refused.
    ledger.set_account_class(1, 1)
    assert ledger.account(1).main_fen == -5_000
    assert ledger.purchase(1, 7, CARD, CANTEEN, 1, at_local(16)).code == impl.INSUFFICIENT_FUNDS
    assert ledger.total_fen() == 0


def test_configure_merchant_changes_price_and_spend_order_not_the_past(
        impl: types.ModuleType) -> None:
    ledger = make(impl)
    before = ledger.purchase(1, 1, CARD, SHOP, 700, T0)            # subsidy first, free amount
    assert (before.code, before.subsidy_delta_fen) == (0, -700)
    hold = ledger.hold(1, 2, CARD, SHOP, 300, T0 + 600, T0)
    assert hold.code == 0
    lsn, balance = ledger.lsn, ledger.merchant(SHOP).balance_fen
    ledger.configure_merchant(SHOP, impl.FIXED, 250, impl.MAIN_ONLY)
    assert ledger.lsn == lsn
    assert ledger.merchant(SHOP) == impl.MerchantState(SHOP, 1, impl.FIXED, 250, impl.MAIN_ONLY,
                                                       balance)
    assert ledger.purchase(1, 3, CARD, SHOP, 700, T0).code == impl.INVALID_AMOUNT
    fixed = ledger.purchase(1, 4, CARD, SHOP, 0, T0)
    assert (fixed.code, fixed.amount_fen, fixed.main_delta_fen, fixed.subsidy_delta_fen) == (
        0, 250, -250, 0)
    # What was decided before stays decided: the reversal gives back 700 to the subsidy
    # wallet, the hold is captured at its own amount.
    back = ledger.reverse(1, 5, 1, CARD, 700, T0)
    assert (back.code, back.amount_fen, back.subsidy_delta_fen) == (0, 700, 700)
    captured = ledger.capture(1, 6, 2, 300, T0)
    assert (captured.code, captured.amount_fen) == (0, 300)
    # And back to a free till, main first.
    ledger.configure_merchant(SHOP, impl.FREE, 0, impl.MAIN_FIRST)
    ledger.configure_merchant(SHOP, impl.FREE, 0, impl.MAIN_FIRST)  # idempotent
    o = ledger.purchase(1, 7, CARD, SHOP, 700, T0)
    assert (o.code, o.amount_fen, o.main_delta_fen) == (0, 700, -700)
    assert ledger.merchant(SHOP).tenant_id == 1 and ledger.total_fen() == 0


def test_reconfiguration_misuse_raises_and_changes_nothing(impl: types.ModuleType) -> None:
    ledger = make(impl)
    state = (ledger.merchant(FIXED_SHOP), ledger.account(1))
    for args in ((FIXED_SHOP, impl.FIXED, 0, 0), (FIXED_SHOP, impl.FIXED,
                                                   impl.AMOUNT_FEN_MAX + 1, 0),
                 (FIXED_SHOP, impl.FREE, 5, 0), (FIXED_SHOP, 2, 0, 0),
                 (FIXED_SHOP, impl.FREE, 0, 3), (0, impl.FREE, 0, 0), (9, impl.FREE, 0, 0)):
        with pytest.raises(impl.LedgerArgumentError):
            ledger.configure_merchant(*args)
    with pytest.raises(impl.LedgerStateError):
        ledger.configure_merchant(6, impl.FREE, 0, 0)               # never opened
    for class_id in (0, 256, -1):
        with pytest.raises(impl.LedgerArgumentError):
            ledger.set_account_class(1, class_id)
    with pytest.raises(impl.LedgerArgumentError):
        ledger.set_account_class(11, 1)                             # beyond accounts_max
    with pytest.raises(impl.LedgerStateError):
        ledger.set_account_class(3, 1)                              # never opened
    with pytest.raises(impl.LedgerStateError):
        ledger.merchant(6)
    with pytest.raises(impl.LedgerArgumentError):
        ledger.merchant(0)
    assert (ledger.merchant(FIXED_SHOP), ledger.account(1)) == state


def test_class_and_merchant_configuration_are_not_in_the_snapshot(
        impl: types.ModuleType) -> None:
    """Like the switch: master data (the class, the price) from the database, then the
    checkpoint, then the journal. The checkpoint neither carries nor undoes them."""
    ledger = make(impl, main=50_000)
    ledger.configure_class(2, 0, 1_000, 0, 0, 0)
    base = ledger.snapshot()
    ledger.set_account_class(1, 2)
    ledger.configure_merchant(SHOP, impl.FIXED, 800, impl.MAIN_ONLY)
    assert ledger.snapshot() == base, "configuration is not dynamic state"
    rows = [ledger.purchase(1, 1, CARD, SHOP, 0, T0).journal_row(),
            ledger.purchase(1, 2, CARD, CANTEEN, 1_200, T0).journal_row()]
    assert [(r[2], r[11]) for r in rows] == [(0, 800), (impl.TXN_LIMIT_EXCEEDED, 1_200)]
    replica = twin(impl)
    replica.bind_card(CARD, 1)
    replica.configure_class(2, 0, 1_000, 0, 0, 0)
    replica.set_account_class(1, 2)                                 # as the database says now
    replica.configure_merchant(SHOP, impl.FIXED, 800, impl.MAIN_ONLY)
    replica.restore(base)
    for row in rows:
        replica.replay(row)
    assert replica.snapshot() == ledger.snapshot()
    assert replica.account(1) == ledger.account(1) and replica.account(1).class_id == 2
    assert replica.merchant(SHOP) == ledger.merchant(SHOP)
    probe = (1, 3, CARD, SHOP, 0, T0)
    assert replica.purchase(*probe).journal_row() == ledger.purchase(*probe).journal_row()
    # A ledger restored from its own snapshot keeps the configuration it has.
    ledger.restore(base)
    assert ledger.account(1).class_id == 2 and ledger.merchant(SHOP).fixed_amount_fen == 800


# ---------------------------------------------------------------------------------- idempotency


def test_repeat_returns_stored_outcome_and_changes_nothing(impl: types.ModuleType) -> None:
    ledger = make(impl)
    first = ledger.purchase(7, 1, CARD, SHOP, 100, T0)
    lsn = ledger.lsn
    again = ledger.purchase(7, 1, CARD2, CANTEEN, 999, T0 + 50)      # fields ignored
    assert again.repeat and not first.repeat
    assert again.journal_row() == first.journal_row()
    assert ledger.lsn == lsn and ledger.account(1).subsidy_fen == 1_900
    # a declined request is stored too
    declined = ledger.purchase(7, 2, 555, SHOP, 100, T0)
    assert ledger.purchase(7, 2, CARD, SHOP, 100, T0).journal_row() == declined.journal_row()


def test_last_txn_seq_survives_snapshot_and_replay(impl: types.ModuleType) -> None:
    ledger = make(impl)
    assert ledger.last_txn_seq(7) == 0
    rows = [ledger.purchase(7, seq, CARD, SHOP, 10, T0).journal_row() for seq in (5, 9, 6)]
    assert ledger.last_txn_seq(7) == 9
    fresh = make(impl)
    for row in rows:
        fresh.replay(row)
    assert fresh.last_txn_seq(7) == 9
    other = make(impl)
    other.restore(fresh.snapshot())
    assert other.last_txn_seq(7) == 9
    with pytest.raises(impl.LedgerArgumentError):
        ledger.last_txn_seq(0)


def test_window_and_too_old(impl: types.ModuleType) -> None:
    ledger = make(impl, main=1_000_000)
    ledger.purchase(7, 5, CARD, SHOP, 1, T0)
    ledger.purchase(7, 300, CARD, SHOP, 1, T0)        # highest 300: 44 and below are too old
    lsn = ledger.lsn
    old = ledger.purchase(7, 44, CARD, SHOP, 1, T0)
    assert (old.code, old.lsn, old.repeat) == (impl.TXN_SEQ_TOO_OLD, 0, False)
    assert ledger.lsn == lsn
    assert ledger.purchase(7, 5, CARD, SHOP, 1, T0).repeat           # still in its slot
    assert ledger.purchase(7, 45, CARD, SHOP, 1, T0).code == 0        # new, inside the window
    ledger.purchase(7, 261, CARD, SHOP, 1, T0)                         # evicts 5 (261 % 256)
    assert ledger.purchase(7, 5, CARD, SHOP, 1, T0).code == impl.TXN_SEQ_TOO_OLD
    assert ledger.purchase(8, 5, CARD, SHOP, 1, T0).code == 0          # other terminal


# ---------------------------------------------------------------------------------- reversal


def test_reversal_returns_money_to_its_wallets_not_the_counters(impl: types.ModuleType) -> None:
    ledger = make(impl, limits=(0, 0, 2_500, 0, 0))
    p = ledger.purchase(1, 1, CARD, SHOP, 2_500, T0)
    r = ledger.reverse(1, 2, 1, CARD, 0, T0)
    assert (r.code, r.kind, r.ref_txn_seq, r.amount_fen) == (0, impl.REVERSAL, 1, 2_500)
    assert (r.main_delta_fen, r.subsidy_delta_fen) == (-p.main_delta_fen, -p.subsidy_delta_fen)
    assert (r.main_fen, r.subsidy_fen, r.merchant_id) == (10_000, 2_000, SHOP)
    assert ledger.account(1).day_spent_fen == 2_500                    # not given back
    assert ledger.purchase(1, 3, CARD, SHOP, 1, T0).code == impl.DAILY_LIMIT_EXCEEDED
    assert ledger.reverse(1, 4, 1, CARD, 2_500, T0).code == impl.ALREADY_REVERSED
    assert ledger.reverse(1, 2, 1, CARD, 0, T0).repeat
    assert ledger.total_fen() == 0


def test_reversal_mismatches(impl: types.ModuleType) -> None:
    ledger = make(impl)
    ledger.purchase(1, 1, CARD, SHOP, 300, T0)
    assert ledger.reverse(1, 2, 1, CARD, 299, T0).code == impl.REVERSAL_MISMATCH
    assert ledger.reverse(1, 3, 1, CARD2, 0, T0).code == impl.REVERSAL_MISMATCH
    ledger.inquire(1, 4, CARD, SHOP, T0)
    assert ledger.reverse(1, 5, 4, CARD, 0, T0).code == impl.REVERSAL_MISMATCH   # not a purchase
    assert ledger.reverse(1, 7, 1, CARD, 300, T0).code == 0


@pytest.mark.parametrize("original", [8, 9, 500])
def test_reversal_naming_itself_or_a_later_txn_seq_is_refused(impl: types.ModuleType,
                                                             original: int) -> None:
    """It names no purchase sent before it (txn_seqs only grow): the switch refuses it
    INVALID_FIELD before the ledger, which takes it for misuse; nothing changes, and the
    purchase later sent with that txn_seq is a new one (issue 9 item 1)."""
    ledger = make(impl)
    ledger.purchase(1, 7, CARD, SHOP, 300, T0)
    lsn, snapshot = ledger.lsn, ledger.snapshot()
    with pytest.raises(impl.LedgerArgumentError, match="not below txn_seq"):
        ledger.reverse(1, 8, original, CARD, 0, T0)
    assert (ledger.lsn, ledger.snapshot()) == (lsn, snapshot)
    assert ledger.reverse(1, 8, 7, CARD, 0, T0).code == 0              # txn_seq 8 not used up


def test_reversal_of_a_never_seen_original_above_the_highest_txn_seq(
        impl: types.ModuleType) -> None:
    """Before the fix a reversal naming a txn_seq above the terminal's highest was answered
    REVERSAL_MISMATCH and the late purchase was then charged (issue 9 item 1)."""
    ledger = make(impl)
    ledger.purchase(1, 5, CARD, SHOP, 100, T0)
    r = ledger.reverse(1, 20, 12, CARD, 0, T0)          # 12: above the highest (5), never seen
    assert (r.code, r.lsn) == (impl.ORIGINAL_NOT_FOUND, ledger.lsn)
    late = ledger.purchase(1, 12, CARD, SHOP, 100, T0)
    assert (late.code, late.main_delta_fen, late.subsidy_delta_fen) == (
        impl.ALREADY_REVERSED, 0, 0)
    # Below the window: declined while its tombstone holds the slot; once another txn_seq
    # takes the slot, TXN_SEQ_TOO_OLD (not in the journal, so the switch refuses it).
    assert ledger.reverse(1, 400, 300, CARD, 0, T0).code == impl.ORIGINAL_NOT_FOUND
    ledger.purchase(1, 700, CARD, SHOP, 100, T0)
    assert ledger.purchase(1, 300, CARD, SHOP, 100, T0).code == impl.ALREADY_REVERSED
    assert ledger.reverse(1, 701, 301, CARD, 0, T0).code == impl.TXN_SEQ_TOO_OLD
    assert ledger.reverse(1, 702, 650, CARD, 0, T0).code == impl.ORIGINAL_NOT_FOUND
    ledger.purchase(1, 1000, CARD, SHOP, 100, T0)
    ledger.purchase(1, 906, CARD, SHOP, 100, T0)                        # takes 650's slot
    assert ledger.purchase(1, 650, CARD, SHOP, 100, T0).code == impl.TXN_SEQ_TOO_OLD
    assert ledger.account(1).subsidy_fen == 2_000 - 400                 # 5, 700, 1000, 906


def test_reversal_of_declined_original_is_approved_with_nothing(impl: types.ModuleType) -> None:
    ledger = make(impl)
    ledger.purchase(1, 1, CARD, SHOP, 99_999, T0)
    r = ledger.reverse(1, 2, 1, CARD, 0, T0)
    assert (r.code, r.amount_fen, r.main_delta_fen, r.subsidy_delta_fen) == (0, 0, 0, 0)
    assert ledger.reverse(1, 3, 1, CARD, 0, T0).code == impl.ALREADY_REVERSED


def test_reversal_before_original_leaves_a_tombstone(impl: types.ModuleType) -> None:
    ledger = make(impl)
    r = ledger.reverse(1, 10, 9, CARD, 0, T0)
    assert (r.code, r.merchant_id, r.account_id) == (impl.ORIGINAL_NOT_FOUND, 0, 1)
    assert ledger.statistics().tombstones == 1
    late = ledger.purchase(1, 9, CARD, SHOP, 100, T0)
    assert late.code == impl.ALREADY_REVERSED and late.lsn == ledger.lsn
    assert ledger.purchase(1, 9, CARD, SHOP, 100, T0).repeat
    assert ledger.reverse(1, 11, 9, CARD, 0, T0).code == impl.ALREADY_REVERSED
    assert ledger.account(1).subsidy_fen == 2_000


def test_reversal_of_too_old_original(impl: types.ModuleType) -> None:
    ledger = make(impl)
    ledger.purchase(1, 1, CARD, SHOP, 100, T0)
    ledger.purchase(1, 200, CARD, SHOP, 100, T0)
    assert ledger.reverse(1, 201, 1, CARD, 0, T0).code == 0      # still in its slot
    ledger.purchase(1, 2, CARD, SHOP, 100, T0)
    ledger.purchase(1, 258, CARD, SHOP, 100, T0)                 # evicts 2 (258 % 256)
    lsn = ledger.lsn
    r = ledger.reverse(1, 401, 2, CARD, 0, T0)
    assert (r.code, r.lsn) == (impl.TXN_SEQ_TOO_OLD, 0) and ledger.lsn == lsn
    assert ledger.reverse(1, 401, 300, CARD, 0, T0).code == impl.ORIGINAL_NOT_FOUND


def test_reversal_of_too_old_original_decided_from_the_journal(impl: types.ModuleType) -> None:
    """The window applies to the reversal's own txn_seq: an original older than the window is
    looked up in the journal by the switch and reverse_journaled decides (issue 9 item 2)."""
    ledger = make(impl)
    p = ledger.purchase(1, 1, CARD, SHOP, 300, T0)
    declined = ledger.purchase(1, 2, CARD, SHOP, 99_999, T0)
    for seq in (257, 258, 600):                                        # 1 and 2 evicted
        ledger.purchase(1, seq, CARD, SHOP, 100, T0)
    assert ledger.reverse(1, 601, 1, CARD, 0, T0).code == impl.TXN_SEQ_TOO_OLD
    subsidy = ledger.account(1).subsidy_fen
    row = p.journal_row()
    assert ledger.reverse_journaled(1, 601, 1, CARD2, 0, T0, row, False).code == (
        impl.REVERSAL_MISMATCH)                                        # another card
    r = ledger.reverse_journaled(1, 602, 1, CARD, 0, T0, row, False)
    assert (r.code, r.amount_fen, r.merchant_id, r.ref_txn_seq) == (0, 300, SHOP, 1)
    assert (r.main_delta_fen, r.subsidy_delta_fen) == (-p.main_delta_fen, -p.subsidy_delta_fen)
    assert ledger.account(1).subsidy_fen == subsidy + 300
    assert ledger.reverse_journaled(1, 602, 1, CARD, 0, T0, row, False).repeat
    assert ledger.reverse_journaled(1, 603, 1, CARD, 0, T0, row, True).code == (
        impl.ALREADY_REVERSED)
    assert ledger.reverse_journaled(1, 604, 3, CARD, 0, T0, None, False).code == (
        impl.ORIGINAL_NOT_FOUND)
    assert ledger.statistics().tombstones == 0                         # 3 can never be admitted
    r = ledger.reverse_journaled(1, 605, 2, CARD, 0, T0, declined.journal_row(), False)
    assert (r.code, r.amount_fen) == (0, 0)                            # nothing was taken
    with pytest.raises(impl.LedgerArgumentError):
        ledger.reverse_journaled(1, 606, 5, CARD, 0, T0, row, False)  # not the row of 5
    assert ledger.total_fen() == 0


# ---------------------------------------------------------------------------------- credit


def test_credit_wallets_and_statuses(impl: types.ModuleType) -> None:
    ledger = make(impl, main=0, subsidy=0)
    o = ledger.credit(5, 1, CARD, CASH_DESK, impl.SUBSIDY, 700, T0)
    assert (o.code, o.kind, o.subsidy_delta_fen, o.merchant_delta_fen) == (0, 8, 700, -700)
    ledger.set_account_status(1, impl.LOST)
    assert ledger.credit(5, 2, CARD, CASH_DESK, impl.MAIN, 1, T0).code == 0
    ledger.set_account_status(1, impl.FROZEN)
    assert ledger.credit(5, 3, CARD, CASH_DESK, impl.MAIN, 1, T0).code == 0
    ledger.set_account_status(1, impl.CLOSED)
    assert ledger.credit(5, 4, CARD, CASH_DESK, impl.MAIN, 1, T0).code == impl.ACCOUNT_CLOSED
    assert ledger.credit(5, 5, CARD2, CASH_DESK, impl.MAIN, 0, T0).code == impl.INVALID_AMOUNT
    assert ledger.credit(5, 6, CARD2, OTHER_SITE, impl.MAIN, 1, T0).code == 57
    assert dict(ledger.merchant_balances())[CASH_DESK] == -702
    assert ledger.total_fen() == 0
    with pytest.raises(impl.LedgerArgumentError):
        ledger.credit(5, 7, CARD2, CASH_DESK, 2, 1, T0)


def test_balance_limit(impl: types.ModuleType) -> None:
    ledger = make(impl, main=0, subsidy=0)
    ledger.set_account_status(1, impl.ACTIVE)
    big = impl.AMOUNT_FEN_MAX
    ledger.open_account(3, 1, 1, impl.ACTIVE, impl.BALANCE_FEN_MAX - big + 1, 0)
    ledger.bind_card(77, 3)
    assert ledger.credit(5, 1, 77, CASH_DESK, impl.MAIN, big, T0).code == 65
    assert ledger.credit(5, 2, 77, CASH_DESK, impl.MAIN, big - 1, T0).code == 0


# ---------------------------------------------------------------------------------- debit


def test_debit_is_the_mirror_of_credit(impl: types.ModuleType) -> None:
    ledger = make(impl)                                     # main 10_000, subsidy 2_000
    o = ledger.debit(5, 1, CARD, CASH_DESK, impl.MAIN, 3_000, T0)
    assert (o.code, o.kind, o.merchant_id, o.amount_fen) == (0, impl.DEBIT, CASH_DESK, 3_000)
    assert (o.main_delta_fen, o.subsidy_delta_fen, o.merchant_delta_fen) == (-3_000, 0, 3_000)
    assert (o.main_fen, o.subsidy_fen) == (7_000, 2_000)
    s = ledger.debit(5, 2, CARD, CASH_DESK, impl.SUBSIDY, 500, T0)
    assert (s.subsidy_delta_fen, s.merchant_delta_fen, s.subsidy_fen) == (-500, 500, 1_500)
    assert dict(ledger.merchant_balances())[CASH_DESK] == -12_000 + 3_500
    assert ledger.total_fen() == 0
    assert ledger.debit(5, 1, CARD2, SHOP, impl.SUBSIDY, 1, T0).repeat      # fields ignored
    with pytest.raises(impl.LedgerArgumentError):
        ledger.debit(5, 3, CARD, CASH_DESK, 2, 1, T0)
    with pytest.raises(impl.LedgerArgumentError):
        ledger.debit(5, 3, CARD, 9, impl.MAIN, 1, T0)                     # merchant beyond max


def test_debit_statuses_and_declines(impl: types.ModuleType) -> None:
    ledger = make(impl)
    for n, status in enumerate((impl.LOST, impl.FROZEN), start=1):          # counter refunds
        ledger.set_account_status(1, status)
        assert ledger.debit(5, n, CARD, CASH_DESK, impl.MAIN, 1, T0).code == 0
    ledger.set_account_status(1, impl.CLOSED)
    closed = ledger.debit(5, 3, CARD, CASH_DESK, impl.MAIN, 1, T0)
    assert (closed.code, closed.main_delta_fen, closed.main_fen) == (46, 0, 9_998)
    ledger.set_account_status(1, impl.ACTIVE)
    assert ledger.debit(5, 4, 555, CASH_DESK, impl.MAIN, 1, T0).code == impl.UNKNOWN_CARD
    assert ledger.debit(5, 5, CARD, 6, impl.MAIN, 1, T0).code == impl.INVALID_MERCHANT
    assert ledger.debit(5, 6, CARD, OTHER_SITE, impl.MAIN, 1, T0).code == 57
    for n, amount in enumerate((0, -1, impl.AMOUNT_FEN_MAX + 1), start=7):
        assert ledger.debit(5, n, CARD, CASH_DESK, impl.MAIN, amount, T0).code == 13
    ledger.cancel_card(CARD)
    assert ledger.debit(5, 10, CARD, CASH_DESK, impl.MAIN, 1, T0).code == impl.CARD_CANCELLED
    assert ledger.account(1).main_fen == 9_998 and ledger.total_fen() == 0


def test_debit_floor_subsidy_zero_main_overdraft_less_held(impl: types.ModuleType) -> None:
    ledger = make(impl, main=1_000, subsidy=300, limits=(500, 0, 0, 0, 0))  # overdraft 500
    assert ledger.debit(5, 1, CARD, CASH_DESK, impl.SUBSIDY, 301, T0).code == 51
    assert ledger.debit(5, 2, CARD, CASH_DESK, impl.SUBSIDY, 300, T0).subsidy_fen == 0
    assert ledger.hold(5, 3, CARD, SHOP, 200, T0 + 60, T0).code == 0        # held 200
    # available main = 1_000 - 200 = 800; it may go down to -500: at most 1_300 more
    assert ledger.debit(5, 4, CARD, CASH_DESK, impl.MAIN, 1_301, T0).code == 51
    o = ledger.debit(5, 5, CARD, CASH_DESK, impl.MAIN, 1_300, T0)
    assert (o.code, o.main_fen, ledger.account(1).held_fen) == (0, -300, 200)
    assert ledger.debit(5, 6, CARD, CASH_DESK, impl.MAIN, 1, T0).code == 51
    assert ledger.total_fen() == 0


def test_debit_applies_no_class_limit_and_counts_nothing(impl: types.ModuleType) -> None:
    ledger = make(impl, main=50_000, limits=(0, 1_000, 2_000, 1, 500))
    o = ledger.debit(5, 1, CARD, CASH_DESK, impl.MAIN, 30_000, at_local(12))  # in a meal
    assert o.code == 0
    state = ledger.account(1)
    assert (state.day, state.day_spent_fen, state.meal_period, state.meal_count) == (-1, 0, -1, 0)
    assert ledger.purchase(1, 1, CARD, CANTEEN, 400, at_local(12)).code == 0


def test_debit_merchant_bound(impl: types.ModuleType) -> None:
    ledger = impl.Ledger(4, 4)
    ledger.open_merchant(1, 1, balance_fen=impl.MERCHANT_BALANCE_FEN_MAX - 5)
    ledger.open_merchant(2, 1)
    ledger.open_account(1, 1, 1)
    ledger.bind_card(CARD, 1)
    assert ledger.credit(5, 1, CARD, 2, impl.MAIN, 100, T0).code == 0
    assert ledger.debit(5, 2, CARD, 1, impl.MAIN, 6, T0).code == impl.BALANCE_LIMIT_EXCEEDED
    assert ledger.debit(5, 3, CARD, 1, impl.MAIN, 5, T0).code == 0


def test_debit_is_not_reversible_and_replays(impl: types.ModuleType) -> None:
    ledger = make(impl)
    base = ledger.snapshot()
    rows = [ledger.debit(5, 1, CARD, CASH_DESK, impl.MAIN, 700, T0).journal_row(),
            ledger.debit(5, 2, CARD, CASH_DESK, impl.SUBSIDY, 9_999, T0).journal_row(),
            ledger.reverse(5, 3, 1, CARD, 0, T0).journal_row()]
    assert rows[1][2] == impl.INSUFFICIENT_FUNDS
    assert rows[2][2] == impl.REVERSAL_MISMATCH and ledger.account(1).main_fen == 9_300
    replica = twin(impl)
    replica.restore(base)
    for row in rows:
        replica.replay(row)
    assert replica.snapshot() == ledger.snapshot()
    assert replica.debit(5, 1, CARD, CASH_DESK, impl.MAIN, 700, T0).repeat


# ---------------------------------------------------------------------------------- transfer


def test_transfer_between_own_wallets_is_one_balanced_row(impl: types.ModuleType) -> None:
    ledger = make(impl)                                     # main 10_000, subsidy 2_000
    merchants = ledger.merchant_balances()
    o = ledger.transfer(5, 1, CARD, CASH_DESK, impl.SUBSIDY, 1_500, T0)
    assert (o.code, o.kind, o.merchant_id, o.amount_fen) == (0, impl.TRANSFER, CASH_DESK, 1_500)
    assert (o.main_delta_fen, o.subsidy_delta_fen, o.merchant_delta_fen) == (1_500, -1_500, 0)
    assert (o.main_fen, o.subsidy_fen, o.merchant_tenant_id) == (11_500, 500, 1)
    back = ledger.transfer(5, 2, CARD, CASH_DESK, impl.MAIN, 4_000, T0)
    assert (back.main_delta_fen, back.subsidy_delta_fen, back.subsidy_fen) == (-4_000, 4_000,
                                                                               4_500)
    assert ledger.merchant_balances() == merchants and ledger.total_fen() == 0
    assert ledger.transfer(5, 1, CARD2, SHOP, impl.MAIN, 1, T0).repeat
    with pytest.raises(impl.LedgerArgumentError):
        ledger.transfer(5, 3, CARD, CASH_DESK, 2, 1, T0)


def test_transfer_declines(impl: types.ModuleType) -> None:
    ledger = make(impl, main=1_000, subsidy=300, limits=(500, 1, 1, 1, 1))  # overdraft 500
    assert ledger.transfer(5, 1, CARD, CASH_DESK, impl.SUBSIDY, 301, T0).code == 51
    assert ledger.transfer(5, 2, CARD, CASH_DESK, impl.MAIN, 1_501, T0).code == 51
    o = ledger.transfer(5, 3, CARD, CASH_DESK, impl.MAIN, 1_500, T0)         # limits ignored
    assert (o.code, o.main_fen, o.subsidy_fen) == (0, -500, 1_800)
    assert ledger.transfer(5, 4, CARD, CASH_DESK, impl.MAIN, 0, T0).code == 13
    assert ledger.transfer(5, 5, CARD, 6, impl.MAIN, 1, T0).code == impl.INVALID_MERCHANT
    # Another tenant's counter: no merchant balance moves, so no cross-tenant consent needed
    # (the main wallet is at its floor here, hence INSUFFICIENT_FUNDS, not CROSS_TENANT).
    assert ledger.transfer(5, 6, CARD, OTHER_SITE, impl.MAIN, 1, T0).code == 51
    assert ledger.transfer(5, 13, CARD, OTHER_SITE, impl.SUBSIDY, 1, T0).code == 0
    assert ledger.transfer(5, 7, 555, CASH_DESK, impl.MAIN, 1, T0).code == impl.UNKNOWN_CARD
    for n, status in enumerate((impl.LOST, impl.FROZEN), start=8):
        ledger.set_account_status(1, status)
        assert ledger.transfer(5, n, CARD, CASH_DESK, impl.SUBSIDY, 1, T0).code == 0
    ledger.set_account_status(1, impl.CLOSED)
    assert ledger.transfer(5, 10, CARD, CASH_DESK, impl.SUBSIDY, 1, T0).code == 46
    ledger.set_account_status(1, impl.ACTIVE)
    ledger.open_account(3, 1, 1, impl.ACTIVE, 0, impl.BALANCE_FEN_MAX)
    ledger.bind_card(77, 3)
    assert ledger.transfer(5, 11, 77, CASH_DESK, impl.SUBSIDY, 1, T0).code == 0
    assert ledger.transfer(5, 12, 77, CASH_DESK, impl.MAIN, 2, T0).code == 65
    state = ledger.account(1)
    assert (state.main_fen, state.subsidy_fen, state.day_spent_fen) == (-497, 1_797, 0)


def test_transfer_replays_and_is_not_reversible(impl: types.ModuleType) -> None:
    ledger = make(impl)
    base = ledger.snapshot()
    rows = [ledger.transfer(5, 1, CARD, CASH_DESK, impl.MAIN, 700, T0).journal_row(),
            ledger.transfer(5, 2, CARD, CASH_DESK, impl.SUBSIDY, 9_999, T0).journal_row(),
            ledger.reverse(5, 3, 1, CARD, 0, T0).journal_row()]
    assert rows[1][2] == impl.INSUFFICIENT_FUNDS and rows[2][2] == impl.REVERSAL_MISMATCH
    replica = twin(impl)
    replica.restore(base)
    for row in rows:
        replica.replay(row)
    assert replica.snapshot() == ledger.snapshot()
    assert (replica.account(1).main_fen, replica.account(1).subsidy_fen) == (9_300, 2_700)


def test_inquiry(impl: types.ModuleType) -> None:
    ledger = make(impl)
    o = ledger.inquire(1, 1, CARD, SHOP, T0)
    assert (o.code, o.kind, o.balance_fen, o.amount_fen) == (0, impl.INQUIRY, 12_000, 0)
    ledger.set_account_status(1, impl.FROZEN)
    assert ledger.inquire(1, 2, CARD, SHOP, T0).code == impl.ACCOUNT_FROZEN


# ---------------------------------------------------------------------------------- holds


def test_hold_capture_release_expire(impl: types.ModuleType) -> None:
    ledger = make(impl, subsidy=0)
    h = ledger.hold(3, 1, CARD, SHOP, 4_000, T0 + 600, T0)
    assert (h.code, h.held_delta_fen, h.expires_s, h.main_delta_fen) == (0, 4_000, T0 + 600, 0)
    assert ledger.account(1).held_fen == 4_000
    assert ledger.purchase(3, 2, CARD, CANTEEN, 6_001, T0).code == impl.INSUFFICIENT_FUNDS
    assert ledger.capture(3, 3, 1, 4_001, T0).code == impl.CAPTURE_EXCEEDS_HOLD
    c = ledger.capture(3, 4, 1, 1_500, T0)
    assert (c.code, c.amount_fen, c.main_delta_fen, c.held_delta_fen) == (0, 1_500, -1_500, -4_000)
    assert (c.merchant_id, c.merchant_delta_fen, c.ref_txn_seq) == (SHOP, 1_500, 1)
    assert ledger.capture(3, 5, 1, 1, T0).code == impl.HOLD_NOT_FOUND
    assert ledger.account(1).held_fen == 0
    ledger.hold(3, 6, CARD, SHOP, 1_000, T0 + 600, T0)
    r = ledger.release(3, 7, 6, T0)
    assert (r.code, r.amount_fen, r.held_delta_fen) == (0, 1_000, -1_000)
    ledger.hold(3, 8, CARD, SHOP, 1_000, T0 + 60, T0)
    ledger.hold(4, 8, CARD, SHOP, 2_000, T0 + 60, T0)
    assert ledger.expire_holds(T0 + 59) == []
    expired = ledger.expire_holds(T0 + 60)
    assert [(e.kind, e.terminal_id, e.ref_txn_seq, e.amount_fen) for e in expired] == [
        (impl.EXPIRY, 0, 8, 1_000), (impl.EXPIRY, 0, 8, 2_000)]
    assert all(e.txn_seq == e.lsn for e in expired) and ledger.holds() == []
    assert ledger.account(1).held_fen == 0 and ledger.total_fen() == 0


def test_holds_limit(impl: types.ModuleType) -> None:
    ledger = make(impl, holds_max=1)
    assert ledger.hold(3, 1, CARD, SHOP, 100, T0 + 60, T0).code == 0
    assert ledger.hold(3, 2, CARD, SHOP, 100, T0 + 60, T0).code == impl.HOLDS_LIMIT_EXCEEDED


# ---------------------------------------------------------------------------------- recovery


def twin(impl: types.ModuleType, **kwargs: int) -> object:
    ledger = impl.Ledger(10, 8, **kwargs)
    ledger.configure_tenant(1, 8 * 3600, [(420, 540), (660, 780)])
    ledger.configure_tenant(2, 0)
    ledger.configure_class(1, 0, 0, 0, 0, 0)
    for m, t in ((SHOP, 1), (CANTEEN, 1), (FIXED_SHOP, 1), (CASH_DESK, 1), (OTHER_SITE, 2)):
        ledger.open_merchant(m, t, impl.FIXED if m == FIXED_SHOP else impl.FREE,
                             450 if m == FIXED_SHOP else 0)
    ledger.open_account(1, 1, 1)
    ledger.open_account(2, 1, 1)
    return ledger


def test_snapshot_round_trip_and_replay(impl: types.ModuleType) -> None:
    ledger = make(impl)
    base = ledger.snapshot()
    rows = [ledger.purchase(1, 1, CARD, SHOP, 100, at_local(8)).journal_row(),
            ledger.reverse(1, 3, 2, CARD, 0, T0).journal_row(),
            ledger.hold(1, 4, CARD, SHOP, 700, T0 + 5, T0).journal_row(),
            ledger.hold(1, 5, CARD, SHOP, 300, T0 + 500, T0).journal_row(),
            ledger.capture(1, 6, 5, 200, T0).journal_row(),
            *[e.journal_row() for e in ledger.expire_holds(T0 + 10)]]
    replica = twin(impl)
    replica.restore(base)
    for row in rows:
        replica.replay(row)
    assert replica.snapshot() == ledger.snapshot()
    assert replica.account(1) == ledger.account(1)
    assert replica.purchase(1, 2, CARD, SHOP, 5, T0).code == impl.ALREADY_REVERSED
    assert replica.purchase(1, 1, CARD, SHOP, 5, T0).repeat
    with pytest.raises(impl.ReplayError):
        replica.replay(rows[-1])                                  # lsn not after the ledger's
    copy = twin(impl)
    copy.restore(ledger.snapshot())
    assert copy.snapshot() == ledger.snapshot()


def test_restore_refuses_corrupt_or_mismatched(impl: types.ModuleType) -> None:
    ledger = make(impl)
    data = ledger.snapshot()
    replica = twin(impl)
    before = replica.snapshot()
    for bad in (data[:-1], data[:10], b"", data[:20] + bytes([data[20] ^ 1]) + data[21:],
                b"XXXX" + data[4:]):
        with pytest.raises(impl.SnapshotError):
            replica.restore(bad)
    assert replica.snapshot() == before
    other = impl.Ledger(10, 8)
    with pytest.raises(impl.SnapshotError):
        other.restore(data)


def test_balance_columns_are_account_balances_by_column(impl: types.ModuleType) -> None:
    ledger = make(impl)
    ledger.purchase(1, 1, CARD, SHOP, 100, T0)
    rows = ledger.account_balances()
    assert ledger.balance_columns() == tuple(list(c) for c in zip(*rows, strict=True))


def test_restore_into_a_ledger_with_accounts_opened_since(impl: types.ModuleType) -> None:
    ledger = make(impl)
    ledger.purchase(1, 1, CARD, SHOP, 100, T0)
    data = ledger.snapshot()
    grown = twin(impl)
    grown.open_account(3, 1, 1, impl.ACTIVE, 777, 5)  # issued after the checkpoint
    grown.open_merchant(6, 1)
    grown.restore(data)
    assert grown.account(1) == ledger.account(1)
    assert (grown.account(3).main_fen, grown.account(3).subsidy_fen) == (777, 5)
    assert grown.lsn == ledger.lsn


def test_replay_refuses_malformed_rows(impl: types.ModuleType) -> None:
    ledger = make(impl)
    row = ledger.purchase(1, 1, CARD, SHOP, 100, T0).journal_row()
    replica = twin(impl)
    for bad in (row[:-1], (*row[:12], row[12] - 1, *row[13:]), (row[0], 99, *row[2:]),
                (row[0], 0, *row[2:])):
        with pytest.raises(impl.ReplayError):
            replica.replay(bad)


# ---------------------------------------------------------------------------------- misuse


def test_misuse_raises(impl: types.ModuleType) -> None:
    ledger = make(impl)
    with pytest.raises(impl.LedgerArgumentError):
        ledger.purchase(1, 1, CARD, 9, 100, T0)                    # merchant beyond max
    with pytest.raises(impl.LedgerArgumentError):
        ledger.purchase(0, 1, CARD, SHOP, 100, T0)
    with pytest.raises(impl.LedgerArgumentError):
        ledger.purchase(1, 2**32, CARD, SHOP, 100, T0)
    with pytest.raises(impl.LedgerArgumentError):
        ledger.open_account(11, 1, 1)
    with pytest.raises(impl.LedgerStateError):
        ledger.open_account(1, 1, 1)
    with pytest.raises(impl.LedgerStateError):
        ledger.bind_card(CARD, 2)
    with pytest.raises(impl.LedgerStateError):
        ledger.bind_card(5, 3)                                      # account not opened
    with pytest.raises(impl.LedgerArgumentError):
        ledger.configure_tenant(1, 0, [(0, 10)] * 9)
    with pytest.raises(impl.LedgerArgumentError):
        ledger.configure_tenant(1, 0, [(0, 100), (50, 200)])
    with pytest.raises(impl.LedgerArgumentError):
        impl.Ledger(0, 1)


def test_card_index_grows_then_refuses(impl: types.ModuleType) -> None:
    ledger = impl.Ledger(100, 1, cards_max=300)
    ledger.open_account(1, 1, 1)
    for n in range(300):
        ledger.bind_card(2**63 - 1 - n * 977, 1)
    with pytest.raises(impl.LedgerCapacityError):
        ledger.bind_card(1, 1)
    assert all(ledger.card_account(2**63 - 1 - n * 977) == (1, False) for n in range(300))
    assert ledger.card_account(2) is None
    assert ledger.statistics().cards == 300
