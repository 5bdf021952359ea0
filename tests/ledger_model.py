"""LedgerModel: the executable spec of ledger_ext.Ledger, written for clarity, not speed.

Same public API and the same decisions as the Cython `Ledger`, field for field: the test suite
runs against both, and a hypothesis state machine runs them side by side and compares every
`journal_row()`. Where this file and `ledger_ext/` (`_decisions.pxi`) disagree, one of them is
wrong.

Decision rules in one place (precedence top to bottom):

* every call: argument ranges (a `LedgerError` for misuse, never a decline);
* admission of the key (terminal_id, txn_seq), one routine for every decision (`_admit`): the
  window is 256 slots, slot = txn_seq % 256. A slot holding this txn_seq returns its stored
  outcome as a repeat (nothing changes); a slot holding a tombstone for it (a reversal named it
  before it arrived) gives ALREADY_REVERSED; otherwise txn_seq <= highest - 256 gives
  TXN_SEQ_TOO_OLD (lsn 0, not stored, not journaled); otherwise the key is new;
* then the decision of the operation (see each method); every decision gets the next lsn and is
  stored in the window, declines included.
"""

from __future__ import annotations

import enum
import pickle
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

AMOUNT_FEN_MAX = 10_000_000
BALANCE_FEN_MAX = 10**12
MERCHANT_BALANCE_FEN_MAX = 10**13
ACCOUNTS_MAX = 1 << 21
MERCHANTS_MAX = 1 << 15
TENANTS_MAX = 4096
CLASSES_MAX = 255
MEAL_WINDOWS_MAX = 8
TERMINAL_WINDOW_MAX = 256
TERMINALS_MAX = 1 << 16
HOLDS_MAX = 1 << 16
CARDS_PER_ACCOUNT_MAX = 4
TERMINAL_ID_MAX = (1 << 31) - 1
TXN_SEQ_MAX = (1 << 32) - 1
CARD_NO_MAX = (1 << 63) - 1
NOW_S_MAX = 1 << 40
UTC_OFFSET_S_MAX = 14 * 3600
SNAPSHOT_VERSION = 1

assert ACCOUNTS_MAX * 2 * BALANCE_FEN_MAX + MERCHANTS_MAX * MERCHANT_BALANCE_FEN_MAX <= 1 << 62


class Code(enum.IntEnum):
    APPROVED = 0
    INVALID_MERCHANT = 12
    INVALID_AMOUNT = 13
    UNKNOWN_CARD = 14
    ORIGINAL_NOT_FOUND = 25
    ALREADY_REVERSED = 26
    REVERSAL_MISMATCH = 27
    HOLD_NOT_FOUND = 30
    CAPTURE_EXCEEDS_HOLD = 31
    HOLDS_LIMIT_EXCEEDED = 32
    CARD_LOST = 41
    CARD_CANCELLED = 43
    ACCOUNT_CLOSED = 46
    ACCOUNT_FROZEN = 47
    INSUFFICIENT_FUNDS = 51
    CROSS_TENANT_NOT_ALLOWED = 57
    TXN_LIMIT_EXCEEDED = 61
    DAILY_LIMIT_EXCEEDED = 62
    MEAL_AMOUNT_LIMIT_EXCEEDED = 63
    MEAL_COUNT_LIMIT_EXCEEDED = 64
    BALANCE_LIMIT_EXCEEDED = 65
    TXN_SEQ_TOO_OLD = 80


class Kind(enum.IntEnum):
    PURCHASE = 1
    REVERSAL = 2
    INQUIRY = 3
    HOLD = 4
    CAPTURE = 5
    RELEASE = 6
    EXPIRY = 7
    CREDIT = 8
    DEBIT = 9
    TRANSFER = 10


class AccountStatus(enum.IntEnum):
    ACTIVE = 0
    FROZEN = 1
    LOST = 2
    CLOSED = 3


class MerchantMode(enum.IntEnum):
    FREE = 0
    FIXED = 1


class SpendOrder(enum.IntEnum):
    SUBSIDY_FIRST = 0
    MAIN_FIRST = 1
    MAIN_ONLY = 2


class Wallet(enum.IntEnum):
    MAIN = 0
    SUBSIDY = 1


APPROVED = 0
INVALID_MERCHANT = 12
INVALID_AMOUNT = 13
UNKNOWN_CARD = 14
ORIGINAL_NOT_FOUND = 25
ALREADY_REVERSED = 26
REVERSAL_MISMATCH = 27
HOLD_NOT_FOUND = 30
CAPTURE_EXCEEDS_HOLD = 31
HOLDS_LIMIT_EXCEEDED = 32
CARD_LOST = 41
CARD_CANCELLED = 43
ACCOUNT_CLOSED = 46
ACCOUNT_FROZEN = 47
INSUFFICIENT_FUNDS = 51
CROSS_TENANT_NOT_ALLOWED = 57
TXN_LIMIT_EXCEEDED = 61
DAILY_LIMIT_EXCEEDED = 62
MEAL_AMOUNT_LIMIT_EXCEEDED = 63
MEAL_COUNT_LIMIT_EXCEEDED = 64
BALANCE_LIMIT_EXCEEDED = 65
TXN_SEQ_TOO_OLD = 80

PURCHASE = 1
REVERSAL = 2
INQUIRY = 3
HOLD = 4
CAPTURE = 5
RELEASE = 6
EXPIRY = 7
CREDIT = 8
DEBIT = 9
TRANSFER = 10

ACTIVE = 0
FROZEN = 1
LOST = 2
CLOSED = 3

FREE = 0
FIXED = 1

SUBSIDY_FIRST = 0
MAIN_FIRST = 1
MAIN_ONLY = 2

MAIN = 0
SUBSIDY = 1

JOURNAL_COLUMNS = (
    "lsn", "kind", "code", "terminal_id", "txn_seq", "ref_txn_seq", "card_no", "account_id",
    "merchant_id", "tenant_id", "merchant_tenant_id", "amount_fen", "main_delta_fen",
    "subsidy_delta_fen", "merchant_delta_fen", "held_delta_fen", "main_fen", "subsidy_fen",
    "expires_s", "now_s",
)
# Binary COPY of a journal row (Outcome.copy_record): each column's width in PostgreSQL.
JOURNAL_COLUMN_WIDTHS = (8, 2, 2, 4, 8, 8, 8, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8, 8, 8)
JOURNAL_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
JOURNAL_COPY_TRAILER = b"\xff\xff"
_COPY_FORMATS = {8: "q", 4: "i", 2: "h"}


class LedgerError(Exception):
    pass


class LedgerArgumentError(LedgerError, ValueError):
    pass


class LedgerStateError(LedgerError):
    pass


class LedgerCapacityError(LedgerError):
    pass


class SnapshotError(LedgerError):
    pass


class ReplayError(LedgerError):
    pass


class LedgerStatistics(msgspec.Struct, frozen=True):
    lsn: int
    accounts: int
    merchants: int
    cards: int
    cards_cancelled: int
    holds: int
    terminals: int
    window_entries: int
    tombstones: int
    memory_bytes: int


class AccountState(msgspec.Struct, frozen=True):
    account_id: int
    tenant_id: int
    class_id: int
    status: int
    main_fen: int
    subsidy_fen: int
    held_fen: int
    day: int
    day_spent_fen: int
    meal_period: int
    meal_count: int
    meal_spent_fen: int


class MerchantState(msgspec.Struct, frozen=True):
    merchant_id: int
    tenant_id: int
    mode: int
    fixed_amount_fen: int
    spend_order: int
    balance_fen: int


@dataclass(frozen=True)
class Outcome:
    lsn: int
    kind: int
    code: int
    terminal_id: int
    txn_seq: int
    ref_txn_seq: int
    card_no: int
    account_id: int
    merchant_id: int
    tenant_id: int
    merchant_tenant_id: int
    amount_fen: int
    main_delta_fen: int
    subsidy_delta_fen: int
    merchant_delta_fen: int
    held_delta_fen: int
    main_fen: int
    subsidy_fen: int
    expires_s: int
    now_s: int
    repeat: bool = False

    @property
    def balance_fen(self) -> int:
        return self.main_fen + self.subsidy_fen

    def journal_row(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in JOURNAL_COLUMNS)

    def copy_record(self) -> bytes:
        """The journal row as one tuple of PostgreSQL's binary COPY format."""
        parts = [struct.pack("!h", len(JOURNAL_COLUMNS))]
        for value, width in zip(self.journal_row(), JOURNAL_COLUMN_WIDTHS, strict=True):
            parts.append(struct.pack(f"!i{_COPY_FORMATS[width]}", width, value))
        return b"".join(parts)

    @classmethod
    def from_row(cls, row: Sequence[int]) -> Outcome:
        """The outcome a journal row (JOURNAL_COLUMNS order) records."""
        fields: dict[str, Any] = dict(zip(JOURNAL_COLUMNS, row, strict=True))
        return cls(**fields)


@dataclass
class Account:
    tenant_id: int
    class_id: int
    status: int
    main_fen: int
    subsidy_fen: int
    held_fen: int = 0
    day: int = -1                   # local day of day_spent_fen
    day_spent_fen: int = 0
    meal_period: int = -1           # local_day * 8 + window index
    meal_count: int = 0
    meal_spent_fen: int = 0


@dataclass
class Merchant:
    tenant_id: int
    mode: int
    fixed_amount_fen: int
    spend_order: int
    balance_fen: int


@dataclass
class IdentityClass:
    overdraft_fen: int = 0
    txn_limit_fen: int = 0          # 0 = no limit (all four)
    daily_limit_fen: int = 0
    meal_count_max: int = 0
    meal_amount_max_fen: int = 0


@dataclass
class Tenant:
    utc_offset_s: int = 0
    meal_windows: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Card:
    account_id: int
    cancelled: bool = False


@dataclass
class Slot:
    """One of the 256 window slots of a terminal."""

    txn_seq: int
    outcome: Outcome | None         # None: a tombstone
    reversed: bool = False


@dataclass
class Terminal:
    highest: int = 0
    slots: dict[int, Slot] = field(default_factory=dict)   # txn_seq % 256 -> Slot


@dataclass
class Hold:
    terminal_id: int
    txn_seq: int
    account_id: int
    card_no: int
    merchant_id: int
    amount_fen: int
    expires_s: int

    def as_tuple(self) -> tuple[int, ...]:
        return (self.terminal_id, self.txn_seq, self.account_id, self.card_no,
                self.merchant_id, self.amount_fen, self.expires_s)


def _in_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise LedgerArgumentError(f"{name} {value} out of {low}..{high}")


def _check_merchant_config(mode: int, fixed_amount_fen: int, spend_order: int) -> None:
    if mode == FIXED:
        _in_range("fixed_amount_fen", fixed_amount_fen, 1, AMOUNT_FEN_MAX)
    elif mode == FREE:
        _in_range("fixed_amount_fen", fixed_amount_fen, 0, 0)
    else:
        raise LedgerArgumentError(f"mode {mode}")
    _in_range("spend_order", spend_order, 0, 2)


class LedgerModel:
    def __init__(self, accounts_max: int, merchants_max: int, *, cards_max: int | None = None,
                 holds_max: int = HOLDS_MAX, terminals_max: int = TERMINALS_MAX) -> None:
        _in_range("accounts_max", accounts_max, 1, ACCOUNTS_MAX)
        _in_range("merchants_max", merchants_max, 1, MERCHANTS_MAX)
        if cards_max is None:
            cards_max = accounts_max * CARDS_PER_ACCOUNT_MAX
        _in_range("cards_max", cards_max, 1, ACCOUNTS_MAX * CARDS_PER_ACCOUNT_MAX)
        _in_range("holds_max", holds_max, 0, HOLDS_MAX)
        _in_range("terminals_max", terminals_max, 1, TERMINALS_MAX)
        self.accounts_max = accounts_max
        self.merchants_max = merchants_max
        self.cards_max = cards_max
        self.holds_max = holds_max
        self.terminals_max = terminals_max
        self.accounts: dict[int, Account] = {}
        self.merchants: dict[int, Merchant] = {}
        self.classes: dict[int, IdentityClass] = {}
        self.tenants: dict[int, Tenant] = {}
        self.cross_tenant: set[tuple[int, int]] = set()
        self.cards: dict[int, Card] = {}
        self.terminals: dict[int, Terminal] = {}
        self.holds_by_key: dict[tuple[int, int], Hold] = {}
        self._lsn = 0

    # -------------------------------------------------------------------- configuration

    def configure_tenant(self, tenant_id: int, utc_offset_s: int,
                         meal_windows: Iterable[tuple[int, int]] = ()) -> None:
        _in_range("tenant_id", tenant_id, 1, TENANTS_MAX)
        _in_range("utc_offset_s", utc_offset_s, -UTC_OFFSET_S_MAX, UTC_OFFSET_S_MAX)
        windows = [(int(s), int(e)) for s, e in meal_windows]
        if len(windows) > MEAL_WINDOWS_MAX:
            raise LedgerArgumentError("too many meal windows")
        for n, (s, e) in enumerate(windows):
            if not 0 <= s < e <= 1440:
                raise LedgerArgumentError(f"meal window {n} malformed")
            if any(s < e2 and s2 < e for s2, e2 in windows[:n]):
                raise LedgerArgumentError(f"meal window {n} overlaps another")
        self.tenants[tenant_id] = Tenant(utc_offset_s, windows)

    def allow_cross_tenant(self, card_tenant_id: int, merchant_tenant_id: int,
                           allowed: bool = True) -> None:
        _in_range("tenant_id", card_tenant_id, 1, TENANTS_MAX)
        _in_range("tenant_id", merchant_tenant_id, 1, TENANTS_MAX)
        if allowed:
            self.cross_tenant.add((card_tenant_id, merchant_tenant_id))
        else:
            self.cross_tenant.discard((card_tenant_id, merchant_tenant_id))

    def cross_tenant_allowed(self, card_tenant_id: int, merchant_tenant_id: int) -> bool:
        """The same tenant, or allowed; False for an id that is no tenant (0)."""
        if not (1 <= card_tenant_id <= TENANTS_MAX and 1 <= merchant_tenant_id <= TENANTS_MAX):
            return False
        return (card_tenant_id == merchant_tenant_id
                or (card_tenant_id, merchant_tenant_id) in self.cross_tenant)

    def configure_class(self, class_id: int, overdraft_fen: int, txn_limit_fen: int,
                        daily_limit_fen: int, meal_count_max: int,
                        meal_amount_max_fen: int) -> None:
        _in_range("class_id", class_id, 1, CLASSES_MAX)
        _in_range("overdraft_fen", overdraft_fen, 0, BALANCE_FEN_MAX)
        _in_range("txn_limit_fen", txn_limit_fen, 0, BALANCE_FEN_MAX)
        _in_range("daily_limit_fen", daily_limit_fen, 0, BALANCE_FEN_MAX)
        _in_range("meal_amount_max_fen", meal_amount_max_fen, 0, BALANCE_FEN_MAX)
        _in_range("meal_count_max", meal_count_max, 0, 1000)
        self.classes[class_id] = IdentityClass(overdraft_fen, txn_limit_fen, daily_limit_fen,
                                               meal_count_max, meal_amount_max_fen)

    def open_merchant(self, merchant_id: int, tenant_id: int, mode: int = FREE,
                      fixed_amount_fen: int = 0, spend_order: int = SUBSIDY_FIRST,
                      balance_fen: int = 0) -> None:
        _in_range("merchant_id", merchant_id, 1, self.merchants_max)
        _in_range("tenant_id", tenant_id, 1, TENANTS_MAX)
        _check_merchant_config(mode, fixed_amount_fen, spend_order)
        _in_range("balance_fen", balance_fen, -MERCHANT_BALANCE_FEN_MAX, MERCHANT_BALANCE_FEN_MAX)
        if merchant_id in self.merchants:
            raise LedgerStateError(f"merchant {merchant_id} already opened")
        self.merchants[merchant_id] = Merchant(tenant_id, mode, fixed_amount_fen, spend_order,
                                               balance_fen)

    def configure_merchant(self, merchant_id: int, mode: int, fixed_amount_fen: int,
                           spend_order: int) -> None:
        """Mode, fixed amount and spend order of an opened merchant; tenant and balance stay.
        Configuration: not journaled, not in the snapshot."""
        _in_range("merchant_id", merchant_id, 1, self.merchants_max)
        _check_merchant_config(mode, fixed_amount_fen, spend_order)
        if merchant_id not in self.merchants:
            raise LedgerStateError(f"merchant {merchant_id} not opened")
        merchant = self.merchants[merchant_id]
        merchant.mode, merchant.fixed_amount_fen, merchant.spend_order = (
            mode, fixed_amount_fen, spend_order)

    def open_account(self, account_id: int, tenant_id: int, class_id: int, status: int = ACTIVE,
                     main_fen: int = 0, subsidy_fen: int = 0) -> None:
        _in_range("account_id", account_id, 1, self.accounts_max)
        _in_range("tenant_id", tenant_id, 1, TENANTS_MAX)
        _in_range("class_id", class_id, 1, CLASSES_MAX)
        _in_range("status", status, 0, 3)
        _in_range("main_fen", main_fen, -BALANCE_FEN_MAX, BALANCE_FEN_MAX)
        _in_range("subsidy_fen", subsidy_fen, 0, BALANCE_FEN_MAX)
        if account_id in self.accounts:
            raise LedgerStateError(f"account {account_id} already opened")
        self.accounts[account_id] = Account(tenant_id, class_id, status, main_fen, subsidy_fen)

    def _opened_account(self, account_id: int) -> Account:
        _in_range("account_id", account_id, 1, self.accounts_max)
        if account_id not in self.accounts:
            raise LedgerStateError(f"account {account_id} not opened")
        return self.accounts[account_id]

    def set_account_status(self, account_id: int, status: int) -> None:
        account = self._opened_account(account_id)
        _in_range("status", status, 0, 3)
        account.status = status

    def set_account_class(self, account_id: int, class_id: int) -> None:
        """The account's identity class from now on; its day and meal counters stay.
        Configuration: not journaled, not in the snapshot."""
        account = self._opened_account(account_id)
        _in_range("class_id", class_id, 1, CLASSES_MAX)
        account.class_id = class_id

    def bind_card(self, card_no: int, account_id: int) -> None:
        _in_range("card_no", card_no, 1, CARD_NO_MAX)
        self._opened_account(account_id)
        if card_no in self.cards:
            raise LedgerStateError(f"card {card_no} already bound")
        if len(self.cards) >= self.cards_max:
            raise LedgerCapacityError("card index full")
        self.cards[card_no] = Card(account_id)

    def cancel_card(self, card_no: int) -> None:
        _in_range("card_no", card_no, 1, CARD_NO_MAX)
        if card_no not in self.cards:
            raise LedgerStateError(f"card {card_no} not bound")
        self.cards[card_no].cancelled = True

    def card_account(self, card_no: int) -> tuple[int, bool] | None:
        _in_range("card_no", card_no, 1, CARD_NO_MAX)
        card = self.cards.get(card_no)
        return None if card is None else (card.account_id, card.cancelled)

    def last_txn_seq(self, terminal_id: int) -> int:
        _in_range("terminal_id", terminal_id, 1, TERMINAL_ID_MAX)
        terminal = self.terminals.get(terminal_id)
        return 0 if terminal is None else terminal.highest

    # -------------------------------------------------------------------- internals

    def _terminal(self, terminal_id: int) -> Terminal:
        if terminal_id not in self.terminals:
            if len(self.terminals) >= self.terminals_max:
                raise LedgerCapacityError("too many terminals")
            self.terminals[terminal_id] = Terminal()
        return self.terminals[terminal_id]

    def _account_of_card(self, card_no: int) -> int:
        card = self.cards.get(card_no)
        return 0 if card is None else card.account_id

    def _emit(self, kind: int, code: int, terminal_id: int, txn_seq: int, ref_txn_seq: int,
              card_no: int, account_id: int, merchant_id: int, amount_fen: int, now_s: int,
              main_delta_fen: int = 0, subsidy_delta_fen: int = 0, held_delta_fen: int = 0,
              expires_s: int = 0, journaled: bool = True) -> Outcome:
        """An outcome; balances after are read from the account, tenants from both sides."""
        lsn = 0
        if journaled:
            self._lsn += 1
            lsn = self._lsn
        account = self.accounts.get(account_id)
        merchant = self.merchants.get(merchant_id)
        return Outcome(
            lsn=lsn, kind=kind, code=code, terminal_id=terminal_id, txn_seq=txn_seq,
            ref_txn_seq=ref_txn_seq, card_no=card_no, account_id=account_id,
            merchant_id=merchant_id,
            tenant_id=account.tenant_id if account else 0,
            merchant_tenant_id=merchant.tenant_id if merchant else 0,
            amount_fen=amount_fen, main_delta_fen=main_delta_fen,
            subsidy_delta_fen=subsidy_delta_fen,
            merchant_delta_fen=-(main_delta_fen + subsidy_delta_fen),
            held_delta_fen=held_delta_fen,
            main_fen=account.main_fen if account else 0,
            subsidy_fen=account.subsidy_fen if account else 0,
            expires_s=expires_s, now_s=now_s)

    def _window(self, terminal: Terminal, txn_seq: int) -> tuple[str, Slot | None]:
        """'repeat', 'tombstone', 'too_old' or 'new' for this key."""
        slot = terminal.slots.get(txn_seq % TERMINAL_WINDOW_MAX)
        if slot is not None and slot.txn_seq == txn_seq:
            return ("tombstone" if slot.outcome is None else "repeat"), slot
        if txn_seq + TERMINAL_WINDOW_MAX <= terminal.highest:
            return "too_old", None
        return "new", None

    def _admit(self, terminal: Terminal, kind: int, terminal_id: int, txn_seq: int,
               ref_txn_seq: int, card_no: int, account_id: int, merchant_id: int,
               amount_fen: int, now_s: int) -> tuple[Outcome | None, int]:
        """Admission of the key (terminal_id, txn_seq), the first step of every decision:
        (answer, None) for a repeat (its stored outcome) or a key too old (TXN_SEQ_TOO_OLD, not
        journaled); else (None, the code the decision starts from): ALREADY_REVERSED for a
        tombstone, APPROVED for a new key. The other arguments describe the request for the
        TXN_SEQ_TOO_OLD outcome."""
        state, slot = self._window(terminal, txn_seq)
        if state == "repeat":
            assert slot is not None and slot.outcome is not None
            return replace(slot.outcome, repeat=True), APPROVED
        if state == "too_old":
            return self._emit(kind, TXN_SEQ_TOO_OLD, terminal_id, txn_seq, ref_txn_seq, card_no,
                              account_id, merchant_id, amount_fen, now_s,
                              journaled=False), TXN_SEQ_TOO_OLD
        return None, ALREADY_REVERSED if state == "tombstone" else APPROVED

    def _store(self, terminal: Terminal, txn_seq: int, outcome: Outcome) -> None:
        index = txn_seq % TERMINAL_WINDOW_MAX
        old = terminal.slots.get(index)
        # The late original of an earlier reversal is born reversed.
        was_tombstone = old is not None and old.txn_seq == txn_seq and old.outcome is None
        terminal.slots[index] = Slot(txn_seq, outcome, reversed=was_tombstone)
        terminal.highest = max(terminal.highest, txn_seq)

    def _status_code(self, account_id: int, card_no: int, merchant_id: int,
                     credit: bool = False) -> int:
        merchant = self.merchants.get(merchant_id)
        if merchant is None:
            return INVALID_MERCHANT
        card = self.cards.get(card_no)
        if card is None:
            return UNKNOWN_CARD
        if card.cancelled:
            return CARD_CANCELLED
        account = self.accounts[account_id]
        if account.status == LOST and not credit:
            return CARD_LOST
        if account.status == CLOSED:
            return ACCOUNT_CLOSED
        if account.status == FROZEN and not credit:
            return ACCOUNT_FROZEN
        if not self.cross_tenant_allowed(account.tenant_id, merchant.tenant_id):
            return CROSS_TENANT_NOT_ALLOWED
        return APPROVED

    def _local_day_and_meal(self, account: Account, now_s: int) -> tuple[int, int]:
        """(local day, meal period id or -1) in the time zone of the account's tenant."""
        tenant = self.tenants.get(account.tenant_id, Tenant())
        local_s = now_s + tenant.utc_offset_s
        day = local_s // 86400
        minute = (local_s - day * 86400) // 60
        for index, (start, end) in enumerate(tenant.meal_windows):
            if start <= minute < end:
                return day, day * MEAL_WINDOWS_MAX + index
        return day, -1

    def _count_spend(self, account: Account, amount_fen: int, now_s: int) -> None:
        day, period = self._local_day_and_meal(account, now_s)
        if account.day != day:
            account.day, account.day_spent_fen = day, 0
        account.day_spent_fen += amount_fen
        if period >= 0:
            if account.meal_period != period:
                account.meal_period, account.meal_count, account.meal_spent_fen = period, 0, 0
            account.meal_count += 1
            account.meal_spent_fen += amount_fen

    @staticmethod
    def _check_key(terminal_id: int, txn_seq: int) -> None:
        _in_range("terminal_id", terminal_id, 1, TERMINAL_ID_MAX)
        _in_range("txn_seq", txn_seq, 1, TXN_SEQ_MAX)

    def _charge(self, merchant: Merchant, amount_fen: int) -> int | None:
        """The amount to charge by the merchant's mode, or None (INVALID_AMOUNT)."""
        if merchant.mode == FIXED:
            fixed = merchant.fixed_amount_fen
            return fixed if amount_fen in (0, fixed) else None
        return amount_fen if 1 <= amount_fen <= AMOUNT_FEN_MAX else None

    # -------------------------------------------------------------------- decisions

    def purchase(self, terminal_id: int, txn_seq: int, card_no: int, merchant_id: int,
                 amount_fen: int, now_s: int) -> Outcome:
        self._check_key(terminal_id, txn_seq)
        _in_range("card_no", card_no, 1, CARD_NO_MAX)
        _in_range("merchant_id", merchant_id, 1, self.merchants_max)
        _in_range("now_s", now_s, 0, NOW_S_MAX)
        terminal = self._terminal(terminal_id)
        account_id = self._account_of_card(card_no)
        answer, code = self._admit(terminal, PURCHASE, terminal_id, txn_seq, 0, card_no,
                                   account_id, merchant_id, amount_fen, now_s)
        if answer is not None:
            return answer
        if code == APPROVED:
            code = self._status_code(account_id, card_no, merchant_id)
        from_main = from_subsidy = 0
        charge = amount_fen
        if code == APPROVED:
            code, charge, from_main, from_subsidy = self._decide_purchase(
                self.accounts[account_id], self.merchants[merchant_id], amount_fen, now_s)
        if code == APPROVED:
            account = self.accounts[account_id]
            account.main_fen -= from_main
            account.subsidy_fen -= from_subsidy
            self.merchants[merchant_id].balance_fen += charge
            self._count_spend(account, charge, now_s)
        outcome = self._emit(PURCHASE, code, terminal_id, txn_seq, 0, card_no, account_id,
                             merchant_id, charge if code == APPROVED else amount_fen, now_s,
                             -from_main, -from_subsidy)
        self._store(terminal, txn_seq, outcome)
        return outcome

    def _decide_purchase(self, account: Account, merchant: Merchant, amount_fen: int,
                         now_s: int) -> tuple[int, int, int, int]:
        """(code, charge, from_main, from_subsidy) for an account that may spend here."""
        limits = self.classes.get(account.class_id, IdentityClass())
        charge = self._charge(merchant, amount_fen)
        if charge is None:
            return INVALID_AMOUNT, amount_fen, 0, 0
        if limits.txn_limit_fen and charge > limits.txn_limit_fen:
            return TXN_LIMIT_EXCEEDED, charge, 0, 0
        day, period = self._local_day_and_meal(account, now_s)
        day_spent = account.day_spent_fen if account.day == day else 0
        if limits.daily_limit_fen and day_spent + charge > limits.daily_limit_fen:
            return DAILY_LIMIT_EXCEEDED, charge, 0, 0
        if period >= 0:
            same = account.meal_period == period
            meal_count = account.meal_count if same else 0
            meal_spent = account.meal_spent_fen if same else 0
            if limits.meal_count_max and meal_count + 1 > limits.meal_count_max:
                return MEAL_COUNT_LIMIT_EXCEEDED, charge, 0, 0
            if limits.meal_amount_max_fen and meal_spent + charge > limits.meal_amount_max_fen:
                return MEAL_AMOUNT_LIMIT_EXCEEDED, charge, 0, 0
        available_main = account.main_fen - account.held_fen
        if merchant.spend_order == SUBSIDY_FIRST:
            from_subsidy = min(account.subsidy_fen, charge)
        elif merchant.spend_order == MAIN_FIRST:
            from_main_first = min(max(available_main, 0), charge)
            from_subsidy = min(account.subsidy_fen, charge - from_main_first)
        else:
            from_subsidy = 0
        from_main = charge - from_subsidy         # MAIN_FIRST: positive part, then overdraft
        if available_main - from_main < -limits.overdraft_fen:
            return INSUFFICIENT_FUNDS, charge, 0, 0
        if merchant.balance_fen + charge > MERCHANT_BALANCE_FEN_MAX:
            return BALANCE_LIMIT_EXCEEDED, charge, 0, 0
        return APPROVED, charge, from_main, from_subsidy

    def reverse(self, terminal_id: int, txn_seq: int, original_txn_seq: int, card_no: int,
                amount_fen: int, now_s: int) -> Outcome:
        return self._reverse(terminal_id, txn_seq, original_txn_seq, card_no, amount_fen, now_s,
                             None)

    def reverse_journaled(self, terminal_id: int, txn_seq: int, original_txn_seq: int,
                          card_no: int, amount_fen: int, now_s: int,
                          original: tuple[int, ...] | None,
                          original_reversed: bool) -> Outcome:
        """reverse(), told by the journal what the window no longer holds: the original's row
        (None: not journaled) and whether a reversal of it is journaled. Used only when the
        original is older than the window (reverse() answered TXN_SEQ_TOO_OLD for it)."""
        row = None
        if original is not None:
            if len(original) != len(JOURNAL_COLUMNS):
                raise LedgerArgumentError("original is not a journal row")
            row = Outcome.from_row(original)
            if (row.terminal_id, row.txn_seq) != (terminal_id, original_txn_seq):
                raise LedgerArgumentError("original is not the journal row of original_txn_seq")
            if row.kind == PURCHASE and row.code == APPROVED:
                self._opened_account(row.account_id)
                if row.merchant_id not in self.merchants:
                    raise LedgerArgumentError(f"original merchant {row.merchant_id} not opened")
        return self._reverse(terminal_id, txn_seq, original_txn_seq, card_no, amount_fen, now_s,
                             (row, original_reversed))

    def _reverse(self, terminal_id: int, txn_seq: int, original_txn_seq: int, card_no: int,
                 amount_fen: int, now_s: int,
                 journal: tuple[Outcome | None, bool] | None) -> Outcome:
        """Precedence: admission of the reversal's own key; then the original: in the window
        (reversed or tombstoned: ALREADY_REVERSED, else _decide_reversal); never seen (not below
        the window): ORIGINAL_NOT_FOUND and a tombstone; older than the window: TXN_SEQ_TOO_OLD
        (not journaled) unless `journal` says (original row, reversed) : ALREADY_REVERSED if a
        reversal of it is journaled, ORIGINAL_NOT_FOUND if it is not journaled (no tombstone:
        it is too old to be admitted), else _decide_reversal."""
        self._check_key(terminal_id, txn_seq)
        self._check_key(terminal_id, original_txn_seq)
        _in_range("card_no", card_no, 1, CARD_NO_MAX)
        _in_range("now_s", now_s, 0, NOW_S_MAX)
        if original_txn_seq >= txn_seq:
            raise LedgerArgumentError(
                f"original_txn_seq {original_txn_seq} is not below txn_seq {txn_seq}")
        terminal = self._terminal(terminal_id)
        account_id = self._account_of_card(card_no)
        answer, code = self._admit(terminal, REVERSAL, terminal_id, txn_seq, original_txn_seq,
                                   card_no, account_id, 0, amount_fen, now_s)
        if answer is not None:
            return answer
        merchant_id = 0
        amount = amount_fen
        main_delta = subsidy_delta = 0
        original_state, original_slot = self._window(terminal, original_txn_seq)
        if code != APPROVED:
            pass                                        # a tombstone: ALREADY_REVERSED
        elif original_state == "tombstone" or (
                original_state == "repeat" and original_slot and original_slot.reversed):
            code = ALREADY_REVERSED                     # an original is reversed at most once
        elif original_state == "repeat":
            assert original_slot is not None and original_slot.outcome is not None
            code, amount, main_delta, subsidy_delta = self._decide_reversal(
                original_slot.outcome, card_no, amount_fen)
            original_slot.reversed = code == APPROVED
            merchant_id = original_slot.outcome.merchant_id
        elif original_state == "new":
            code = ORIGINAL_NOT_FOUND
            terminal.slots[original_txn_seq % TERMINAL_WINDOW_MAX] = Slot(original_txn_seq, None)
        elif journal is None:
            return self._emit(REVERSAL, TXN_SEQ_TOO_OLD, terminal_id, txn_seq, original_txn_seq,
                              card_no, account_id, 0, amount_fen, now_s, journaled=False)
        elif journal[1]:
            code = ALREADY_REVERSED
        elif journal[0] is None:
            code = ORIGINAL_NOT_FOUND
        else:
            code, amount, main_delta, subsidy_delta = self._decide_reversal(
                journal[0], card_no, amount_fen)
            merchant_id = journal[0].merchant_id
        outcome = self._emit(REVERSAL, code, terminal_id, txn_seq, original_txn_seq, card_no,
                             account_id, merchant_id, amount if code == APPROVED else amount_fen,
                             now_s, main_delta, subsidy_delta)
        self._store(terminal, txn_seq, outcome)
        return outcome

    def _decide_reversal(self, original: Outcome, card_no: int,
                         amount_fen: int) -> tuple[int, int, int, int]:
        """(code, amount, main_delta, subsidy_delta) for an original found, not yet reversed."""
        if original.kind != PURCHASE or original.card_no != card_no:
            return REVERSAL_MISMATCH, amount_fen, 0, 0
        if original.code != APPROVED:
            return APPROVED, 0, 0, 0                # nothing was taken: nothing to return
        if amount_fen not in (0, original.amount_fen):
            return REVERSAL_MISMATCH, amount_fen, 0, 0
        account = self.accounts[original.account_id]
        merchant = self.merchants[original.merchant_id]
        if (account.main_fen - original.main_delta_fen > BALANCE_FEN_MAX
                or account.subsidy_fen - original.subsidy_delta_fen > BALANCE_FEN_MAX
                or merchant.balance_fen - original.amount_fen < -MERCHANT_BALANCE_FEN_MAX):
            return BALANCE_LIMIT_EXCEEDED, amount_fen, 0, 0
        # The money goes back to the wallets it came from; limit counters are kept.
        account.main_fen -= original.main_delta_fen
        account.subsidy_fen -= original.subsidy_delta_fen
        merchant.balance_fen -= original.amount_fen
        return APPROVED, original.amount_fen, -original.main_delta_fen, -original.subsidy_delta_fen

    def inquire(self, terminal_id: int, txn_seq: int, card_no: int, merchant_id: int,
                now_s: int) -> Outcome:
        self._check_key(terminal_id, txn_seq)
        _in_range("card_no", card_no, 1, CARD_NO_MAX)
        _in_range("merchant_id", merchant_id, 1, self.merchants_max)
        _in_range("now_s", now_s, 0, NOW_S_MAX)
        terminal = self._terminal(terminal_id)
        account_id = self._account_of_card(card_no)
        answer, code = self._admit(terminal, INQUIRY, terminal_id, txn_seq, 0, card_no,
                                   account_id, merchant_id, 0, now_s)
        if answer is not None:
            return answer
        if code == APPROVED:
            code = self._status_code(account_id, card_no, merchant_id)
        outcome = self._emit(INQUIRY, code, terminal_id, txn_seq, 0, card_no, account_id,
                             merchant_id, 0, now_s)
        self._store(terminal, txn_seq, outcome)
        return outcome

    def credit(self, terminal_id: int, txn_seq: int, card_no: int, from_merchant_id: int,
               wallet: int, amount_fen: int, now_s: int) -> Outcome:
        self._check_key(terminal_id, txn_seq)
        _in_range("card_no", card_no, 1, CARD_NO_MAX)
        _in_range("merchant_id", from_merchant_id, 1, self.merchants_max)
        _in_range("wallet", wallet, MAIN, SUBSIDY)
        _in_range("now_s", now_s, 0, NOW_S_MAX)
        terminal = self._terminal(terminal_id)
        account_id = self._account_of_card(card_no)
        answer, code = self._admit(terminal, CREDIT, terminal_id, txn_seq, 0, card_no,
                                   account_id, from_merchant_id, amount_fen, now_s)
        if answer is not None:
            return answer
        if code == APPROVED:
            code = self._status_code(account_id, card_no, from_merchant_id, credit=True)
        main_delta = subsidy_delta = 0
        if code == APPROVED:
            account = self.accounts[account_id]
            merchant = self.merchants[from_merchant_id]
            wallet_fen = account.main_fen if wallet == MAIN else account.subsidy_fen
            if not 1 <= amount_fen <= AMOUNT_FEN_MAX:
                code = INVALID_AMOUNT
            elif (wallet_fen + amount_fen > BALANCE_FEN_MAX
                  or merchant.balance_fen - amount_fen < -MERCHANT_BALANCE_FEN_MAX):
                code = BALANCE_LIMIT_EXCEEDED
            else:
                if wallet == MAIN:
                    main_delta = amount_fen
                    account.main_fen += amount_fen
                else:
                    subsidy_delta = amount_fen
                    account.subsidy_fen += amount_fen
                merchant.balance_fen -= amount_fen
        outcome = self._emit(CREDIT, code, terminal_id, txn_seq, 0, card_no, account_id,
                             from_merchant_id, amount_fen, now_s, main_delta, subsidy_delta)
        self._store(terminal, txn_seq, outcome)
        return outcome

    def debit(self, terminal_id: int, txn_seq: int, card_no: int, to_merchant_id: int,
              wallet: int, amount_fen: int, now_s: int) -> Outcome:
        """The mirror of credit: the wallet pays to_merchant_id (a system account).

        Checks as credit (LOST and FROZEN accounts allowed, CLOSED declines), then
        INVALID_AMOUNT (1..AMOUNT_FEN_MAX), then INSUFFICIENT_FUNDS: the wallet may not go
        below its floor, which is 0 for SUBSIDY and -overdraft for MAIN's available balance
        (main - held), as for a purchase; then BALANCE_LIMIT_EXCEEDED (the merchant would pass
        MERCHANT_BALANCE_FEN_MAX). No class limit applies and no counter changes.
        """
        self._check_key(terminal_id, txn_seq)
        _in_range("card_no", card_no, 1, CARD_NO_MAX)
        _in_range("merchant_id", to_merchant_id, 1, self.merchants_max)
        _in_range("wallet", wallet, MAIN, SUBSIDY)
        _in_range("now_s", now_s, 0, NOW_S_MAX)
        terminal = self._terminal(terminal_id)
        account_id = self._account_of_card(card_no)
        answer, code = self._admit(terminal, DEBIT, terminal_id, txn_seq, 0, card_no,
                                   account_id, to_merchant_id, amount_fen, now_s)
        if answer is not None:
            return answer
        if code == APPROVED:
            code = self._status_code(account_id, card_no, to_merchant_id, credit=True)
        main_delta = subsidy_delta = 0
        if code == APPROVED:
            account = self.accounts[account_id]
            merchant = self.merchants[to_merchant_id]
            overdraft = self.classes.get(account.class_id, IdentityClass()).overdraft_fen
            if wallet == MAIN:
                left, floor = account.main_fen - account.held_fen - amount_fen, -overdraft
            else:
                left, floor = account.subsidy_fen - amount_fen, 0
            if not 1 <= amount_fen <= AMOUNT_FEN_MAX:
                code = INVALID_AMOUNT
            elif left < floor:
                code = INSUFFICIENT_FUNDS
            elif merchant.balance_fen + amount_fen > MERCHANT_BALANCE_FEN_MAX:
                code = BALANCE_LIMIT_EXCEEDED
            else:
                if wallet == MAIN:
                    main_delta = -amount_fen
                    account.main_fen -= amount_fen
                else:
                    subsidy_delta = -amount_fen
                    account.subsidy_fen -= amount_fen
                merchant.balance_fen += amount_fen
        outcome = self._emit(DEBIT, code, terminal_id, txn_seq, 0, card_no, account_id,
                             to_merchant_id, amount_fen, now_s, main_delta, subsidy_delta)
        self._store(terminal, txn_seq, outcome)
        return outcome

    def transfer(self, terminal_id: int, txn_seq: int, card_no: int, merchant_id: int,
                 from_wallet: int, amount_fen: int, now_s: int) -> Outcome:
        """Between the card's own wallets: from_wallet pays the other one. One journal row:
        main_delta = -subsidy_delta, merchant_delta 0 (merchant_id is the counter's, for the
        record; no cross-tenant check: no merchant balance moves).

        Checks as debit (merchant_id as the request's merchant), then INVALID_AMOUNT, then
        INSUFFICIENT_FUNDS at from_wallet's floor (debit's), then BALANCE_LIMIT_EXCEEDED if
        the receiving wallet would pass BALANCE_FEN_MAX.
        """
        self._check_key(terminal_id, txn_seq)
        _in_range("card_no", card_no, 1, CARD_NO_MAX)
        _in_range("merchant_id", merchant_id, 1, self.merchants_max)
        _in_range("wallet", from_wallet, MAIN, SUBSIDY)
        _in_range("now_s", now_s, 0, NOW_S_MAX)
        terminal = self._terminal(terminal_id)
        account_id = self._account_of_card(card_no)
        answer, code = self._admit(terminal, TRANSFER, terminal_id, txn_seq, 0, card_no,
                                   account_id, merchant_id, amount_fen, now_s)
        if answer is not None:
            return answer
        if code == APPROVED:
            code = self._status_code(account_id, card_no, merchant_id, credit=True)
        if code == CROSS_TENANT_NOT_ALLOWED:
            code = APPROVED  # no merchant balance moves: no tenant's consent is needed
        main_delta = subsidy_delta = 0
        if code == APPROVED:
            account = self.accounts[account_id]
            overdraft = self.classes.get(account.class_id, IdentityClass()).overdraft_fen
            if from_wallet == MAIN:
                left, floor = account.main_fen - account.held_fen - amount_fen, -overdraft
                receiving = account.subsidy_fen
            else:
                left, floor = account.subsidy_fen - amount_fen, 0
                receiving = account.main_fen
            if not 1 <= amount_fen <= AMOUNT_FEN_MAX:
                code = INVALID_AMOUNT
            elif left < floor:
                code = INSUFFICIENT_FUNDS
            elif receiving + amount_fen > BALANCE_FEN_MAX:
                code = BALANCE_LIMIT_EXCEEDED
            else:
                main_delta = -amount_fen if from_wallet == MAIN else amount_fen
                subsidy_delta = -main_delta
                account.main_fen += main_delta
                account.subsidy_fen += subsidy_delta
        outcome = self._emit(TRANSFER, code, terminal_id, txn_seq, 0, card_no, account_id,
                             merchant_id, amount_fen, now_s, main_delta, subsidy_delta)
        self._store(terminal, txn_seq, outcome)
        return outcome

    # -------------------------------------------------------------------- holds

    def hold(self, terminal_id: int, txn_seq: int, card_no: int, merchant_id: int,
             amount_fen: int, expires_s: int, now_s: int) -> Outcome:
        self._check_key(terminal_id, txn_seq)
        _in_range("card_no", card_no, 1, CARD_NO_MAX)
        _in_range("merchant_id", merchant_id, 1, self.merchants_max)
        _in_range("expires_s", expires_s, 0, NOW_S_MAX)
        _in_range("now_s", now_s, 0, NOW_S_MAX)
        terminal = self._terminal(terminal_id)
        account_id = self._account_of_card(card_no)
        answer, code = self._admit(terminal, HOLD, terminal_id, txn_seq, 0, card_no,
                                   account_id, merchant_id, amount_fen, now_s)
        if answer is not None:
            return answer
        if code == APPROVED:
            code = self._status_code(account_id, card_no, merchant_id)
        amount = amount_fen
        if code == APPROVED:
            account = self.accounts[account_id]
            limits = self.classes.get(account.class_id, IdentityClass())
            charge = self._charge(self.merchants[merchant_id], amount_fen)
            if charge is None:
                code = INVALID_AMOUNT
            elif account.main_fen - account.held_fen - charge < -limits.overdraft_fen:
                code = INSUFFICIENT_FUNDS
            elif len(self.holds_by_key) >= self.holds_max:
                code = HOLDS_LIMIT_EXCEEDED
            else:
                amount = charge
                account.held_fen += charge
                self.holds_by_key[(terminal_id, txn_seq)] = Hold(
                    terminal_id, txn_seq, account_id, card_no, merchant_id, charge, expires_s)
        approved = code == APPROVED
        outcome = self._emit(HOLD, code, terminal_id, txn_seq, 0, card_no, account_id,
                             merchant_id, amount, now_s, held_delta_fen=amount if approved else 0,
                             expires_s=expires_s if approved else 0)
        self._store(terminal, txn_seq, outcome)
        return outcome

    def _finish_hold(self, kind: int, terminal_id: int, txn_seq: int, hold_txn_seq: int,
                     amount_fen: int, now_s: int) -> Outcome:
        terminal = self._terminal(terminal_id)
        hold = self.holds_by_key.get((terminal_id, hold_txn_seq))
        card_no = hold.card_no if hold else 0
        account_id = hold.account_id if hold else 0
        merchant_id = hold.merchant_id if hold else 0
        answer, code = self._admit(terminal, kind, terminal_id, txn_seq, hold_txn_seq, card_no,
                                   account_id, merchant_id, amount_fen, now_s)
        if answer is not None:
            return answer
        if code == APPROVED and hold is None:
            code = HOLD_NOT_FOUND
        elif code == APPROVED and kind == CAPTURE:
            assert hold is not None
            if amount_fen < 0:
                code = INVALID_AMOUNT
            elif amount_fen > hold.amount_fen:
                code = CAPTURE_EXCEEDS_HOLD
            elif (self.merchants[hold.merchant_id].balance_fen + amount_fen
                  > MERCHANT_BALANCE_FEN_MAX):
                code = BALANCE_LIMIT_EXCEEDED
        amount, main_delta, held_delta = amount_fen, 0, 0
        if code == APPROVED:
            assert hold is not None
            account = self.accounts[hold.account_id]
            held_delta = -hold.amount_fen
            account.held_fen -= hold.amount_fen
            if kind == CAPTURE:
                main_delta = -amount_fen
                account.main_fen -= amount_fen
                self.merchants[hold.merchant_id].balance_fen += amount_fen
            else:
                amount = hold.amount_fen
            del self.holds_by_key[(terminal_id, hold_txn_seq)]
        outcome = self._emit(kind, code, terminal_id, txn_seq, hold_txn_seq, card_no, account_id,
                             merchant_id, amount, now_s, main_delta, 0, held_delta)
        self._store(terminal, txn_seq, outcome)
        return outcome

    def capture(self, terminal_id: int, txn_seq: int, hold_txn_seq: int, amount_fen: int,
                now_s: int) -> Outcome:
        self._check_key(terminal_id, txn_seq)
        self._check_key(terminal_id, hold_txn_seq)
        _in_range("now_s", now_s, 0, NOW_S_MAX)
        return self._finish_hold(CAPTURE, terminal_id, txn_seq, hold_txn_seq, amount_fen, now_s)

    def release(self, terminal_id: int, txn_seq: int, hold_txn_seq: int, now_s: int) -> Outcome:
        self._check_key(terminal_id, txn_seq)
        self._check_key(terminal_id, hold_txn_seq)
        _in_range("now_s", now_s, 0, NOW_S_MAX)
        return self._finish_hold(RELEASE, terminal_id, txn_seq, hold_txn_seq, 0, now_s)

    def expire_holds(self, now_s: int) -> list[Outcome]:
        _in_range("now_s", now_s, 0, NOW_S_MAX)
        due = sorted((h for h in self.holds_by_key.values() if h.expires_s <= now_s),
                     key=lambda h: (h.expires_s, h.terminal_id, h.txn_seq))
        outcomes = []
        for hold in due:
            self.accounts[hold.account_id].held_fen -= hold.amount_fen
            del self.holds_by_key[(hold.terminal_id, hold.txn_seq)]
            outcomes.append(self._emit(
                EXPIRY, APPROVED, 0, self._lsn + 1, hold.txn_seq, hold.card_no, hold.account_id,
                hold.merchant_id, hold.amount_fen, now_s, held_delta_fen=-hold.amount_fen,
                expires_s=hold.expires_s))
        return outcomes

    def holds(self) -> list[tuple[int, ...]]:
        return sorted(h.as_tuple() for h in self.holds_by_key.values())

    # -------------------------------------------------------------------- replay

    def replay(self, row: tuple[int, ...]) -> None:
        if len(row) != len(JOURNAL_COLUMNS):
            raise ReplayError("journal row has the wrong number of fields")
        if not all(type(v) is int for v in row):
            raise ReplayError("journal row has a non-int field")
        o = Outcome.from_row(row)
        if o.lsn <= self._lsn:
            raise ReplayError(f"row lsn {o.lsn} is not after {self._lsn}")
        if not PURCHASE <= o.kind <= TRANSFER:
            raise ReplayError("unknown kind")
        if o.code == TXN_SEQ_TOO_OLD:
            raise ReplayError("TXN_SEQ_TOO_OLD is never journaled")
        if (o.account_id and o.account_id not in self.accounts) or not (
                0 <= o.account_id <= self.accounts_max):
            raise ReplayError(f"account {o.account_id} not opened")
        if not 0 <= o.merchant_id <= self.merchants_max or (
                o.merchant_delta_fen and o.merchant_id not in self.merchants):
            raise ReplayError(f"merchant {o.merchant_id} not opened")
        if o.merchant_delta_fen != -(o.main_delta_fen + o.subsidy_delta_fen):
            raise ReplayError("deltas do not sum to zero")
        moves = o.main_delta_fen or o.subsidy_delta_fen
        if o.code == APPROVED and (moves or o.held_delta_fen) and (
                o.account_id == 0 or (moves and o.merchant_id == 0)):
            raise ReplayError("a transfer without its account or merchant")
        terminal = None
        if o.kind != EXPIRY:
            try:
                self._check_key(o.terminal_id, o.txn_seq)
            except LedgerArgumentError as exc:
                raise ReplayError(str(exc)) from None
            terminal = self._terminal(o.terminal_id)
        if o.code == APPROVED:
            if o.kind == HOLD:
                if len(self.holds_by_key) >= self.holds_max:
                    raise ReplayError("too many holds")
                self.holds_by_key[(o.terminal_id, o.txn_seq)] = Hold(
                    o.terminal_id, o.txn_seq, o.account_id, o.card_no, o.merchant_id,
                    o.amount_fen, o.expires_s)
            elif o.kind in (CAPTURE, RELEASE):
                if self.holds_by_key.pop((o.terminal_id, o.ref_txn_seq), None) is None:
                    raise ReplayError("hold not outstanding")
            elif o.kind == EXPIRY:
                # EXPIRY rows carry terminal_id 0: find the hold by what the row says of it;
                # live expiry releases ties in terminal order, so the lowest terminal is it.
                matches = [h for h in self.holds_by_key.values()
                           if (h.txn_seq, h.account_id, h.merchant_id, h.amount_fen, h.expires_s)
                           == (o.ref_txn_seq, o.account_id, o.merchant_id, o.amount_fen,
                               o.expires_s) and h.expires_s <= o.now_s]
                if not matches:
                    raise ReplayError("no outstanding hold matches the expiry")
                hold = min(matches, key=lambda h: h.terminal_id)
                del self.holds_by_key[(hold.terminal_id, hold.txn_seq)]
            elif o.kind == REVERSAL:
                assert terminal is not None
                slot = terminal.slots.get(o.ref_txn_seq % TERMINAL_WINDOW_MAX)
                if slot is not None and slot.txn_seq == o.ref_txn_seq:
                    slot.reversed = True
            if o.account_id:
                account = self.accounts[o.account_id]
                account.main_fen += o.main_delta_fen
                account.subsidy_fen += o.subsidy_delta_fen
                account.held_fen += o.held_delta_fen
                if o.kind == PURCHASE:
                    self._count_spend(account, o.amount_fen, o.now_s)
            if o.merchant_id:
                self.merchants[o.merchant_id].balance_fen += o.merchant_delta_fen
        elif (o.kind == REVERSAL and o.code == ORIGINAL_NOT_FOUND and terminal is not None
              and o.ref_txn_seq + TERMINAL_WINDOW_MAX > terminal.highest):
            terminal.slots[o.ref_txn_seq % TERMINAL_WINDOW_MAX] = Slot(o.ref_txn_seq, None)
        if terminal is not None:
            self._store(terminal, o.txn_seq, o)
        self._lsn = o.lsn
        if o.account_id:
            account = self.accounts[o.account_id]
            if (account.main_fen, account.subsidy_fen) != (o.main_fen, o.subsidy_fen):
                raise ReplayError("balances after replay differ from the journal")

    # -------------------------------------------------------------------- snapshot

    def snapshot(self) -> bytes:
        state = {
            "accounts_max": self.accounts_max,
            "merchants_max": self.merchants_max,
            "lsn": self._lsn,
            "accounts": {i: [a.status, a.main_fen, a.subsidy_fen, a.held_fen, a.day,
                             a.day_spent_fen, a.meal_period, a.meal_count, a.meal_spent_fen]
                         for i, a in sorted(self.accounts.items())},
            "merchants": {i: m.balance_fen for i, m in sorted(self.merchants.items())},
            "terminals": {
                tid: (t.highest, {k: (s.txn_seq, s.reversed,
                                      None if s.outcome is None else s.outcome.journal_row())
                                  for k, s in sorted(t.slots.items())})
                for tid, t in sorted(self.terminals.items())},
            "holds": [h.as_tuple() for h in self.holds_by_key.values()],
        }
        payload = pickle.dumps(state, protocol=5)
        header = b"OCLM" + SNAPSHOT_VERSION.to_bytes(4, "little")
        return header + payload + zlib.crc32(header + payload).to_bytes(8, "little")

    def restore(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SnapshotError("snapshot must be bytes")
        data = bytes(data)
        if len(data) < 16 or data[:4] != b"OCLM":
            raise SnapshotError("not a ledger snapshot")
        if int.from_bytes(data[4:8], "little") != SNAPSHOT_VERSION:
            raise SnapshotError("snapshot version mismatch")
        if zlib.crc32(data[:-8]) != int.from_bytes(data[-8:], "little"):
            raise SnapshotError("snapshot checksum mismatch")
        try:
            state = pickle.loads(data[8:-8])
        except Exception as exc:
            raise SnapshotError(f"snapshot payload unreadable: {exc}") from None
        if (state["accounts_max"], state["merchants_max"]) != (self.accounts_max,
                                                               self.merchants_max):
            raise SnapshotError("snapshot of a ledger of other size")
        # Accounts and merchants opened since the snapshot keep their opening balances.
        if not set(state["accounts"]) <= set(self.accounts):
            raise SnapshotError("snapshot has accounts not opened here")
        if not set(state["merchants"]) <= set(self.merchants):
            raise SnapshotError("snapshot has merchants not opened here")
        for i, values in state["accounts"].items():
            a = self.accounts[i]
            (a.status, a.main_fen, a.subsidy_fen, a.held_fen, a.day, a.day_spent_fen,
             a.meal_period, a.meal_count, a.meal_spent_fen) = values
        for i, balance in state["merchants"].items():
            self.merchants[i].balance_fen = balance
        self.terminals = {}
        for tid, (highest, slots) in state["terminals"].items():
            terminal = Terminal(highest)
            for k, (seq, was_reversed, row) in slots.items():
                terminal.slots[k] = Slot(seq, None if row is None else Outcome.from_row(row),
                                         was_reversed)
            self.terminals[tid] = terminal
        self.holds_by_key = {(h[0], h[1]): Hold(*h) for h in state["holds"]}
        self._lsn = state["lsn"]

    # -------------------------------------------------------------------- reading

    @property
    def lsn(self) -> int:
        return self._lsn

    def account(self, account_id: int) -> AccountState:
        a = self._opened_account(account_id)
        return AccountState(account_id, a.tenant_id, a.class_id, a.status, a.main_fen,
                            a.subsidy_fen, a.held_fen, a.day, a.day_spent_fen, a.meal_period,
                            a.meal_count, a.meal_spent_fen)

    def merchant(self, merchant_id: int) -> MerchantState:
        _in_range("merchant_id", merchant_id, 1, self.merchants_max)
        if merchant_id not in self.merchants:
            raise LedgerStateError(f"merchant {merchant_id} not opened")
        m = self.merchants[merchant_id]
        return MerchantState(merchant_id, m.tenant_id, m.mode, m.fixed_amount_fen,
                             m.spend_order, m.balance_fen)

    def account_balances(self) -> list[tuple[int, int, int]]:
        return [(i, a.main_fen, a.subsidy_fen) for i, a in sorted(self.accounts.items())]

    def balance_columns(self) -> tuple[list[int], list[int], list[int]]:
        rows = self.account_balances()
        return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]

    def merchant_balances(self) -> list[tuple[int, int]]:
        return [(i, m.balance_fen) for i, m in sorted(self.merchants.items())]

    def total_fen(self) -> int:
        return (sum(a.main_fen + a.subsidy_fen for a in self.accounts.values())
                + sum(m.balance_fen for m in self.merchants.values()))

    def statistics(self) -> LedgerStatistics:
        slots = [s for t in self.terminals.values() for s in t.slots.values()]
        return LedgerStatistics(
            lsn=self._lsn, accounts=len(self.accounts), merchants=len(self.merchants),
            cards=len(self.cards), cards_cancelled=sum(c.cancelled for c in self.cards.values()),
            holds=len(self.holds_by_key), terminals=len(self.terminals),
            window_entries=sum(s.outcome is not None for s in slots),
            tombstones=sum(s.outcome is None for s in slots), memory_bytes=0)


Ledger = LedgerModel
