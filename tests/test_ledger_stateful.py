"""The Cython Ledger and the Python LedgerModel side by side on long random operation sequences.

After every step: identical Outcomes (journal_row and repeat), identical balances, held amounts,
limit counters, holds, classes, merchant configurations and statistics, and conservation (every
opening balance is zero, so the sum of all balances stays zero). At the end, and at random
points, a fresh ledger fed the snapshot taken earlier plus every later journal row equals the
live one byte for byte, and the next decision on both agrees.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

# A plain import: an extension that was not built fails this module, it does not skip it.
import ledger_ext
from tests import ledger_model

ACCOUNTS = 8
MERCHANTS_MAX = 8
T0 = 1_700_000_000 - 1_700_000_000 % 86400          # a UTC midnight
TERMINALS = (1, 2, 3)
CARD_BASE = 6_200_000_000_000_000_000               # near 2**63: the full uint64 range is used


def card_of(account_id: int) -> int:
    return CARD_BASE + account_id * 7919


class LedgerPair(RuleBasedStateMachine):
    """Drives ledger_ext.Ledger (`fast`) and LedgerModel (`model`) with the same calls."""

    def __init__(self) -> None:
        super().__init__()
        self.fast = ledger_ext.Ledger(ACCOUNTS, MERCHANTS_MAX)
        self.model = ledger_model.LedgerModel(ACCOUNTS, MERCHANTS_MAX)
        self.now_s = T0
        self.seqs = dict.fromkeys((*TERMINALS, 9), 0)
        self.journal: list[tuple[int, ...]] = []
        self.checkpoint: tuple[bytes, int] = (b"", 0)
        self.cards = [card_of(a) for a in range(1, ACCOUNTS + 1)] + [12345]  # 12345 unknown
        self.card_ops: list[tuple[str, int, int]] = []
        self.holds_seen: list[tuple[int, int]] = []
        self.purchases_seen: list[tuple[int, int, int, int]] = []
        self.admin_seen: list[tuple[int, int, int, int]] = []

    def both(self, method: str, *args: int) -> object:
        a = getattr(self.fast, method)(*args)
        b = getattr(self.model, method)(*args)
        return a, b

    def configure(self, target: object, classes: list[tuple[int, ...]],
                  windows: list[tuple[int, int]], offset_s: int) -> None:
        target.configure_tenant(1, offset_s, windows)                       # type: ignore
        target.configure_tenant(2, 0, [(0, 600), (660, 720)])              # type: ignore
        target.allow_cross_tenant(1, 2)                                    # type: ignore
        for class_id, limits in enumerate(classes, start=1):
            target.configure_class(class_id, *limits)                      # type: ignore

    def open_all(self, target: object) -> None:
        target.open_merchant(1, 1)                                         # type: ignore
        target.open_merchant(2, 1, ledger_ext.FIXED, 450, ledger_ext.MAIN_FIRST)  # type: ignore
        target.open_merchant(3, 2, ledger_ext.FREE, 0, ledger_ext.MAIN_ONLY)      # type: ignore
        target.open_merchant(4, 1)         # cash desk                     # type: ignore
        target.open_merchant(5, 2)         # subsidy fund of tenant 2      # type: ignore
        for a in range(1, ACCOUNTS + 1):
            target.open_account(a, 1 if a <= 5 else 2, 1 + a % 3)          # type: ignore
            target.bind_card(card_of(a), a)                                # type: ignore

    @initialize(
        classes=st.lists(
            st.tuples(st.sampled_from([0, 0, 500, 5000]),          # overdraft
                      st.sampled_from([0, 0, 2000]),               # txn limit
                      st.sampled_from([0, 0, 6000]),               # daily limit
                      st.sampled_from([0, 0, 2]),                  # meals per period
                      st.sampled_from([0, 0, 1500])),              # fen per meal period
            min_size=3, max_size=3),
        windows=st.sampled_from([[], [(420, 540), (660, 780), (1020, 1140)], [(0, 1440)]]),
        offset_s=st.sampled_from([0, 8 * 3600, -5 * 3600]),
    )
    def setup(self, classes: list[tuple[int, ...]], windows: list[tuple[int, int]],
              offset_s: int) -> None:
        self.config = (classes, windows, offset_s)
        for target in (self.fast, self.model):
            self.configure(target, classes, windows, offset_s)
            self.open_all(target)
        self.checkpoint = (self.fast.snapshot(), 0)
        self.start = self.checkpoint
        # Opening balances are zero (conservation); money arrives as journaled credits.
        for a in range(1, ACCOUNTS + 1):
            system = 4 if a <= 5 else 5
            for wallet, amount in ((ledger_ext.MAIN, 6000), (ledger_ext.SUBSIDY, 1000)):
                fast, model = self.both("credit", 9, self.seq_for(9, 1), card_of(a), system,
                                        wallet, amount, self.now_s)
                assert fast.code == ledger_ext.APPROVED
                self.record(fast, model)

    # ------------------------------------------------------------------ helpers

    def record(self, fast: object, model: object) -> None:
        assert isinstance(fast, ledger_ext.Outcome)
        assert fast.journal_row() == model.journal_row(), (fast, model)     # type: ignore
        assert fast.repeat == model.repeat                                # type: ignore
        assert fast.merchant_delta_fen == -(fast.main_delta_fen + fast.subsidy_delta_fen)
        if fast.code == ledger_ext.TXN_SEQ_TOO_OLD:
            assert fast.lsn == 0 and not fast.repeat
        if not fast.repeat and fast.lsn:
            assert fast.lsn <= self.fast.lsn
            assert not self.journal or fast.lsn == self.journal[-1][0] + 1
            self.journal.append(fast.journal_row())
        if fast.repeat:
            assert fast.lsn <= self.fast.lsn

    def seq_for(self, terminal_id: int, offset: int) -> int:
        """offset 1: the next txn_seq; <= 0: an earlier one (repeat or too old); > 1: a gap."""
        seq = max(1, self.seqs[terminal_id] + offset)
        self.seqs[terminal_id] = max(self.seqs[terminal_id], seq)
        return seq

    # ------------------------------------------------------------------ rules

    @rule(delta=st.sampled_from([0, 0, 7, 61, 1800, 3 * 3600, 86400, 86400 + 600]))
    def advance_time(self, delta: int) -> None:
        self.now_s += delta

    @rule(terminal=st.sampled_from(TERMINALS),
          offset=st.sampled_from([1, 1, 1, 0, -3, -300, 40, 300]),
          card=st.integers(0, ACCOUNTS), merchant=st.sampled_from([1, 1, 2, 3, 6]),
          amount=st.sampled_from([0, 1, 350, 450, 999, 1600, 2500, 10_000_001]))
    def purchase(self, terminal: int, offset: int, card: int, merchant: int, amount: int) -> None:
        seq = self.seq_for(terminal, offset)
        fast, model = self.both("purchase", terminal, seq, self.cards[card], merchant, amount,
                                self.now_s)
        self.record(fast, model)
        self.purchases_seen.append((terminal, seq, self.cards[card], fast.amount_fen))

    @rule(data=st.data(), terminal=st.sampled_from(TERMINALS),
          offset=st.sampled_from([1, 1, 0, 30]), back=st.sampled_from([0, 1, 2, 5, 299]),
          amount_choice=st.sampled_from(["zero", "same", "other"]))
    def reverse(self, data: st.DataObject, terminal: int, offset: int, back: int,
                amount_choice: str) -> None:
        seq = self.seq_for(terminal, offset)
        # Credits and debits too: reverse() undoes purchases only (REVERSAL_MISMATCH).
        mine = [p for p in self.purchases_seen + self.admin_seen if p[0] == terminal]
        if mine and data.draw(st.booleans()):
            _, original, card_no, amount = data.draw(st.sampled_from(mine))
        else:   # a reversal before (or without) its original
            original, card_no, amount = max(1, seq - back), self.cards[data.draw(
                st.integers(0, ACCOUNTS))], 450
        amount = {"zero": 0, "same": amount, "other": amount + 1}[amount_choice]
        if original >= seq and data.draw(st.booleans()):
            original = max(1, seq - 1)
        if original >= seq:     # names no purchase sent before it: refused, nothing changes
            self.both_or_raise("reverse", terminal, seq, original, card_no, amount, self.now_s)
            return
        fast, model = self.both("reverse", terminal, seq, original, card_no, amount, self.now_s)
        self.record(fast, model)
        if (fast.code == ledger_ext.TXN_SEQ_TOO_OLD                       # type: ignore
                and seq + ledger_ext.TERMINAL_WINDOW_MAX > self.fast.last_txn_seq(terminal)):
            # The original is older than the window: the switch asks the journal.
            row = next((r for r in self.journal if (r[3], r[4]) == (terminal, original)), None)
            undone = any(r[1] == ledger_ext.REVERSAL and (r[3], r[5]) == (terminal, original)
                         and r[2] in (ledger_ext.APPROVED, ledger_ext.ORIGINAL_NOT_FOUND)
                         for r in self.journal)
            fast, model = self.both("reverse_journaled", terminal, seq, original, card_no,
                                    amount, self.now_s, row, undone)  # type: ignore[arg-type]
            self.record(fast, model)

    @rule(terminal=st.sampled_from(TERMINALS), offset=st.sampled_from([1, 0, -2]),
          card=st.integers(0, ACCOUNTS), merchant=st.sampled_from([1, 3, 7]))
    def inquire(self, terminal: int, offset: int, card: int, merchant: int) -> None:
        seq = self.seq_for(terminal, offset)
        fast, model = self.both("inquire", terminal, seq, self.cards[card], merchant, self.now_s)
        self.record(fast, model)

    @rule(terminal=st.sampled_from(TERMINALS), offset=st.sampled_from([1, 1, 0]),
          card=st.integers(0, ACCOUNTS), merchant=st.sampled_from([4, 4, 5, 8]),
          wallet=st.sampled_from([ledger_ext.MAIN, ledger_ext.SUBSIDY]),
          amount=st.sampled_from([0, 100, 2000, 5000, 10_000_000]))
    def credit(self, terminal: int, offset: int, card: int, merchant: int, wallet: int,
               amount: int) -> None:
        seq = self.seq_for(terminal, offset)
        fast, model = self.both("credit", terminal, seq, self.cards[card], merchant, wallet,
                                amount, self.now_s)
        self.record(fast, model)
        self.admin_seen.append((terminal, seq, self.cards[card], fast.amount_fen))

    @rule(terminal=st.sampled_from(TERMINALS), offset=st.sampled_from([1, 1, 0]),
          card=st.integers(0, ACCOUNTS), merchant=st.sampled_from([4, 4, 5, 8]),
          wallet=st.sampled_from([ledger_ext.MAIN, ledger_ext.SUBSIDY]),
          amount=st.sampled_from([0, 1, 100, 1000, 7000, 10_000_001, "floor", "floor+1"]))
    def debit(self, terminal: int, offset: int, card: int, merchant: int, wallet: int,
              amount: int | str) -> None:
        if isinstance(amount, str):  # to the wallet's floor exactly, or one fen past it
            amount = self.room(card, wallet, past=amount == "floor+1")
        seq = self.seq_for(terminal, offset)
        fast, model = self.both("debit", terminal, seq, self.cards[card], merchant, wallet,
                                amount, self.now_s)
        self.record(fast, model)
        self.admin_seen.append((terminal, seq, self.cards[card], fast.amount_fen))

    @rule(terminal=st.sampled_from(TERMINALS), offset=st.sampled_from([1, 1, 0]),
          card=st.integers(0, ACCOUNTS), merchant=st.sampled_from([4, 4, 5, 8]),
          wallet=st.sampled_from([ledger_ext.MAIN, ledger_ext.SUBSIDY]),
          amount=st.sampled_from([0, 1, 300, 1000, 7000, 10_000_001, "floor", "floor+1"]))
    def transfer(self, terminal: int, offset: int, card: int, merchant: int, wallet: int,
                 amount: int | str) -> None:
        if isinstance(amount, str):
            amount = self.room(card, wallet, past=amount == "floor+1")
        seq = self.seq_for(terminal, offset)
        fast, model = self.both("transfer", terminal, seq, self.cards[card], merchant, wallet,
                                amount, self.now_s)
        self.record(fast, model)
        self.admin_seen.append((terminal, seq, self.cards[card], fast.amount_fen))

    def room(self, card: int, wallet: int, *, past: bool) -> int:
        """What `wallet` of the card's account can give up to its floor (+1 fen if `past`)."""
        a = self.fast.account(min(card + 1, ACCOUNTS))
        if wallet == ledger_ext.SUBSIDY:
            room = a.subsidy_fen
        else:  # available main down to the class's overdraft
            room = a.main_fen - a.held_fen + self.config[0][a.class_id - 1][0]
        return max(0, room + past)

    @precondition(lambda self: bool(self.fast.holds()))
    @rule(data=st.data(), terminal=st.sampled_from(TERMINALS), past=st.booleans())
    def debit_held_main_to_its_floor(self, data: st.DataObject, terminal: int,
                                     past: bool) -> None:
        """Holds reserve MAIN: a debit may take main - held down to -overdraft, not a fen
        further (the boundary where forgetting the held amount would show)."""
        _, _, account_id, card_no, _, _, _ = data.draw(st.sampled_from(self.fast.holds()))
        a = self.fast.account(account_id)
        room = a.main_fen - a.held_fen + self.config[0][a.class_id - 1][0]
        system = 4 if a.tenant_id == 1 else 5
        seq = self.seq_for(terminal, 1)
        fast, model = self.both("debit", terminal, seq, card_no, system, ledger_ext.MAIN,
                                max(0, room + past), self.now_s)
        self.record(fast, model)

    @rule(terminal=st.sampled_from(TERMINALS), offset=st.sampled_from([1, 1, 0]),
          card=st.integers(0, ACCOUNTS), merchant=st.sampled_from([1, 2, 3]),
          amount=st.sampled_from([0, 200, 450, 3000]), ttl=st.sampled_from([0, 60, 3600]))
    def hold(self, terminal: int, offset: int, card: int, merchant: int, amount: int,
             ttl: int) -> None:
        seq = self.seq_for(terminal, offset)
        fast, model = self.both("hold", terminal, seq, self.cards[card], merchant, amount,
                                self.now_s + ttl, self.now_s)
        self.record(fast, model)
        self.holds_seen.append((terminal, seq))

    @precondition(lambda self: bool(self.holds_seen))
    @rule(data=st.data(), offset=st.sampled_from([1, 1, 0]),
          amount=st.sampled_from([0, 100, 200, 450, 3001, -1]), release=st.booleans())
    def finish_hold(self, data: st.DataObject, offset: int, amount: int, release: bool) -> None:
        terminal, hold_seq = data.draw(st.sampled_from(self.holds_seen))
        seq = self.seq_for(terminal, offset)
        if release:
            fast, model = self.both("release", terminal, seq, hold_seq, self.now_s)
        else:
            fast, model = self.both("capture", terminal, seq, hold_seq, amount, self.now_s)
        self.record(fast, model)

    @rule()
    def expire_holds(self) -> None:
        fast, model = self.both("expire_holds", self.now_s)
        assert len(fast) == len(model)                                    # type: ignore
        for f, m in zip(fast, model, strict=True):                        # type: ignore
            assert f.kind == ledger_ext.EXPIRY and f.txn_seq == f.lsn and f.terminal_id == 0
            self.record(f, m)

    @rule(account=st.integers(1, ACCOUNTS), status=st.sampled_from([0, 0, 1, 2, 3]))
    def set_status(self, account: int, status: int) -> None:
        self.both("set_account_status", account, status)

    @rule(account=st.sampled_from([*range(1, ACCOUNTS + 1), ACCOUNTS + 1, 0]),
          class_id=st.sampled_from([1, 2, 3, 3, 0, 256]))
    def set_class(self, account: int, class_id: int) -> None:
        """An account moved to another identity class (AccountClassChanged): configuration,
        not journaled; the next decision applies the new class's limits."""
        self.both_or_raise("set_account_class", account, class_id)

    @rule(merchant=st.sampled_from([1, 2, 3, 3, 6, 9]),
          config=st.sampled_from([(ledger_ext.FREE, 0), (ledger_ext.FIXED, 450),
                                  (ledger_ext.FIXED, 1600), (ledger_ext.FIXED, 0),
                                  (ledger_ext.FREE, 300)]),
          order=st.sampled_from([ledger_ext.SUBSIDY_FIRST, ledger_ext.MAIN_FIRST,
                                 ledger_ext.MAIN_ONLY]))
    def configure_merchant(self, merchant: int, config: tuple[int, int], order: int) -> None:
        """A merchant's mode, price and spend order changed (MerchantConfigured); merchant 6
        was never opened, 9 is beyond merchants_max, (FIXED, 0) and (FREE, 300) are not
        configurations."""
        self.both_or_raise("configure_merchant", merchant, *config, order)

    def both_or_raise(self, method: str, *args: int) -> None:
        """Both succeed, or both raise the same LedgerError subclass."""
        errors = []
        for target, module in ((self.fast, ledger_ext), (self.model, ledger_model)):
            try:
                getattr(target, method)(*args)
            except module.LedgerError as exc:
                errors.append(type(exc).__name__)
            else:
                errors.append(None)
        assert errors[0] == errors[1], (method, args, errors)

    @precondition(lambda self: len(self.cards) < ACCOUNTS * ledger_ext.CARDS_PER_ACCOUNT_MAX)
    @rule(account=st.integers(1, ACCOUNTS), cancel_old=st.booleans())
    def replace_card(self, account: int, cancel_old: bool) -> None:
        new = card_of(account) + len(self.card_ops) * 1_000_003 + 1
        self.both("bind_card", new, account)
        self.card_ops.append(("bind", new, account))
        if cancel_old:
            old = self.cards[account - 1]
            self.both("cancel_card", old)
            self.card_ops.append(("cancel", old, 0))
        self.cards.append(new)

    @rule()
    def take_checkpoint(self) -> None:
        self.checkpoint = (self.fast.snapshot(), len(self.journal))

    @rule()
    def check_replay_from_checkpoint(self) -> None:
        self.assert_replay(*self.checkpoint)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def same_state(self) -> None:
        assert self.fast.lsn == self.model.lsn
        assert self.fast.total_fen() == self.model.total_fen() == 0          # conservation
        assert self.fast.account_balances() == self.model.account_balances()
        assert self.fast.merchant_balances() == self.model.merchant_balances()
        for a in range(1, ACCOUNTS + 1):
            fast = self.fast.account(a)
            assert _fields(fast) == _fields(self.model.account(a)), a
            assert fast.subsidy_fen >= 0 and fast.held_fen >= 0
        assert self.fast.holds() == self.model.holds()
        for m in range(1, 6):
            assert _fields(self.fast.merchant(m)) == _fields(self.model.merchant(m)), m
        fs, ms = self.fast.statistics(), self.model.statistics()
        assert _fields(fs)[:-1] == _fields(ms)[:-1]                       # all but memory_bytes

    def assert_replay(self, snapshot: bytes, position: int) -> None:
        classes, windows, offset_s = self.config
        replica = ledger_ext.Ledger(ACCOUNTS, MERCHANTS_MAX)
        self.configure(replica, classes, windows, offset_s)
        self.open_all(replica)
        # Master data as the database has it now (the switch loads it before the checkpoint):
        # classes and merchant prices are not in the snapshot, and restore leaves them alone.
        for a in range(1, ACCOUNTS + 1):
            replica.set_account_class(a, self.fast.account(a).class_id)
        for m in range(1, 6):
            live = self.fast.merchant(m)
            replica.configure_merchant(m, live.mode, live.fixed_amount_fen, live.spend_order)
        replica.restore(snapshot)
        for row in self.journal[position:]:
            replica.replay(row)
        # Configuration owned by the database (cards, statuses) is applied as the switch would.
        for op, card_no, account in self.card_ops:
            if op == "bind":
                replica.bind_card(card_no, account)
            else:
                replica.cancel_card(card_no)
        for a in range(1, ACCOUNTS + 1):
            replica.set_account_status(a, self.fast.account(a).status)
        assert replica.snapshot() == self.fast.snapshot()
        assert replica.statistics() == self.fast.statistics()
        assert [replica.account(a) for a in range(1, ACCOUNTS + 1)] == [
            self.fast.account(a) for a in range(1, ACCOUNTS + 1)]
        assert [replica.merchant(m) for m in range(1, 6)] == [
            self.fast.merchant(m) for m in range(1, 6)]
        # ... and both decide the next request alike (then the live one is rolled back).
        probe = (3, self.seqs[3] + 1, self.cards[0], 1, 350, self.now_s)
        live_snapshot = self.fast.snapshot()
        assert replica.purchase(*probe).journal_row() == self.fast.purchase(*probe).journal_row()
        self.fast.restore(live_snapshot)

    def teardown(self) -> None:
        if hasattr(self, "config"):
            self.assert_replay(*self.start)
            self.assert_replay(*self.checkpoint)
            # the model's own snapshot round trip
            model = ledger_model.LedgerModel(ACCOUNTS, MERCHANTS_MAX)
            self.configure(model, *self.config)
            self.open_all(model)
            model.restore(self.model.snapshot())
            assert model.snapshot() == self.model.snapshot()


def _fields(struct: object) -> tuple[object, ...]:
    return tuple(getattr(struct, f) for f in struct.__struct_fields__)  # type: ignore


SETTINGS = settings(stateful_step_count=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


class TestLedgerPair(LedgerPair.TestCase):
    """The default suite's campaign: 50 sequences of up to 100 steps."""

    settings = settings(SETTINGS, max_examples=50)


@pytest.mark.slow
class TestLedgerPairLong(LedgerPair.TestCase):
    """The long campaign (`python -m pytest -m slow`): 400 sequences."""

    settings = settings(SETTINGS, max_examples=400)
