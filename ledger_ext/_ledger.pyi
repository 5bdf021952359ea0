"""ledger_ext: the OneCard balance cache. The contract the switch reads.

`Ledger` is the one writer of every balance. It is pure: no I/O, no clock, no threads; the
caller passes `now_s` (epoch seconds from its own clock). Every call that decides returns an
`Outcome` with a fresh, strictly increasing `lsn`; the switch journals every Outcome whose
`repeat` is false and whose `lsn` is not 0, in lsn order, and answers the terminal only after
the journal commit. `restore(snapshot)` + `replay(row)` of every later journal row reproduces
the state exactly. The executable spec is `tests/ledger_model.py`.

Money is int64 fen. Declines are Outcomes, never exceptions; `LedgerError` subclasses are raised
only for caller misuse. Integer arguments are C int64: a value outside int64 raises
OverflowError before any range check.

Idempotency: (terminal_id, txn_seq) is the key, forever. Each terminal keeps its highest txn_seq
and a window of TERMINAL_WINDOW_MAX = 256 slots, slot = txn_seq % 256:

* the slot holds this txn_seq: the stored Outcome comes back as a copy with `repeat=True` and
  nothing changes (do not journal it);
* the slot holds a tombstone for this txn_seq (a reversal named it before it arrived): the
  request is decided ALREADY_REVERSED (a new, journaled Outcome);
* else txn_seq <= highest - 256: TXN_SEQ_TOO_OLD with lsn 0, nothing changes, not journaled (look
  the key up in the database journal);
* else it is new: decided, given the next lsn, stored in its slot (evicting the older txn_seq
  that shared the slot, which is then <= highest - 256).

Declines are stored and journaled like approvals. For every Outcome, account_id / tenant_id /
main_fen / subsidy_fen describe the account the card is bound to (0 when the card is unknown),
even when the request was declined.
"""

import enum
from collections.abc import Iterable
from typing import Final, final

import msgspec

AMOUNT_FEN_MAX: Final[int]            # 10_000_000: one request
BALANCE_FEN_MAX: Final[int]           # 10**12: one wallet; a credit beyond it declines 65
MERCHANT_BALANCE_FEN_MAX: Final[int]  # 10**13: one merchant or system account, either sign
ACCOUNTS_MAX: Final[int]              # 2**21 (asserted: all balances together fit in 2**62)
MERCHANTS_MAX: Final[int]             # 2**15
TENANTS_MAX: Final[int]               # 4096
CLASSES_MAX: Final[int]               # 255
MEAL_WINDOWS_MAX: Final[int]          # 8
TERMINAL_WINDOW_MAX: Final[int]       # 256
TERMINALS_MAX: Final[int]             # 65536: default and maximum terminals_max
HOLDS_MAX: Final[int]                 # 65536: default and maximum holds_max
CARDS_PER_ACCOUNT_MAX: Final[int]     # 4: cards_max defaults to accounts_max * 4
TERMINAL_ID_MAX: Final[int]           # 2**31 - 1
TXN_SEQ_MAX: Final[int]               # 2**32 - 1
CARD_NO_MAX: Final[int]               # 2**63 - 1
NOW_S_MAX: Final[int]                 # 2**40: now_s and expires_s are in 0..NOW_S_MAX
UTC_OFFSET_S_MAX: Final[int]          # 14 h
SNAPSHOT_VERSION: Final[int]
JOURNAL_COLUMNS: Final[tuple[str, ...]]
"""The 20 column names of `Outcome.journal_row()`, in order (use them for COPY)."""
JOURNAL_COLUMN_WIDTHS: Final[tuple[int, ...]]
"""Each journal column's width in bytes in PostgreSQL (bigint 8, integer 4, smallint 2)."""
JOURNAL_COPY_HEADER: Final[bytes]
"""The header of PostgreSQL's binary COPY format (signature, flags 0, no extension)."""
JOURNAL_COPY_TRAILER: Final[bytes]
"""The end of binary COPY data (a field count of -1)."""

class Code(enum.IntEnum):
    """Decision codes; the numbers are the protocol's response codes."""

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
    """Proposed: the hold table (holds_max) is full. protocols.ocp must add it."""
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
    """What an Outcome records (the journal's `kind` column)."""

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
    """The terminal sends the amount (1..AMOUNT_FEN_MAX)."""
    FIXED = 1
    """Amount 0 or fixed_amount_fen charges fixed_amount_fen; any other is INVALID_AMOUNT."""

class SpendOrder(enum.IntEnum):
    SUBSIDY_FIRST = 0
    """min(subsidy, amount) from subsidy, the rest from main (overdraft allowed)."""
    MAIN_FIRST = 1
    """Available main down to 0, then subsidy, then main into overdraft."""
    MAIN_ONLY = 2

class Wallet(enum.IntEnum):
    MAIN = 0
    SUBSIDY = 1

APPROVED: Final = 0
INVALID_MERCHANT: Final = 12
INVALID_AMOUNT: Final = 13
UNKNOWN_CARD: Final = 14
ORIGINAL_NOT_FOUND: Final = 25
ALREADY_REVERSED: Final = 26
REVERSAL_MISMATCH: Final = 27
HOLD_NOT_FOUND: Final = 30
CAPTURE_EXCEEDS_HOLD: Final = 31
HOLDS_LIMIT_EXCEEDED: Final = 32
CARD_LOST: Final = 41
CARD_CANCELLED: Final = 43
ACCOUNT_CLOSED: Final = 46
ACCOUNT_FROZEN: Final = 47
INSUFFICIENT_FUNDS: Final = 51
CROSS_TENANT_NOT_ALLOWED: Final = 57
TXN_LIMIT_EXCEEDED: Final = 61
DAILY_LIMIT_EXCEEDED: Final = 62
MEAL_AMOUNT_LIMIT_EXCEEDED: Final = 63
MEAL_COUNT_LIMIT_EXCEEDED: Final = 64
BALANCE_LIMIT_EXCEEDED: Final = 65
TXN_SEQ_TOO_OLD: Final = 80

PURCHASE: Final = 1
REVERSAL: Final = 2
INQUIRY: Final = 3
HOLD: Final = 4
CAPTURE: Final = 5
RELEASE: Final = 6
EXPIRY: Final = 7
CREDIT: Final = 8
DEBIT: Final = 9
TRANSFER: Final = 10

ACTIVE: Final = 0
FROZEN: Final = 1
LOST: Final = 2
CLOSED: Final = 3
FREE: Final = 0
FIXED: Final = 1
SUBSIDY_FIRST: Final = 0
MAIN_FIRST: Final = 1
MAIN_ONLY: Final = 2
MAIN: Final = 0
SUBSIDY: Final = 1

class LedgerError(Exception):
    """Root of every error raised by ledger_ext (caller misuse, never a decline)."""

class LedgerArgumentError(LedgerError, ValueError):
    """An argument is out of its range (id, txn_seq, time, configuration value)."""

class LedgerStateError(LedgerError):
    """Not valid in the current state: opened twice, not opened, card bound twice."""

class LedgerCapacityError(LedgerError):
    """A table is full: cards (cards_max) or terminals (terminals_max)."""

class SnapshotError(LedgerError):
    """A snapshot is corrupt, of another version or byte order, or names other accounts."""

class ReplayError(LedgerError):
    """A journal row is malformed, out of lsn order, or disagrees with the state it lands on."""

class LedgerStatistics(msgspec.Struct, frozen=True):
    lsn: int
    accounts: int
    merchants: int
    cards: int
    cards_cancelled: int
    holds: int
    """Holds outstanding."""
    terminals: int
    window_entries: int
    """Outcomes kept in the idempotency windows of all terminals."""
    tombstones: int
    memory_bytes: int
    """C allocations (accounts, merchants, card index, tenants); not the Python objects."""

class AccountState(msgspec.Struct, frozen=True):
    account_id: int
    tenant_id: int
    class_id: int
    status: int
    main_fen: int
    subsidy_fen: int
    held_fen: int
    day: int
    """Local day (of the account's tenant) of day_spent_fen; -1 before the first purchase."""
    day_spent_fen: int
    meal_period: int
    """local_day * MEAL_WINDOWS_MAX + window index of meal_count/meal_spent_fen; -1 = none."""
    meal_count: int
    meal_spent_fen: int

class MerchantState(msgspec.Struct, frozen=True):
    merchant_id: int
    tenant_id: int
    mode: int
    fixed_amount_fen: int
    spend_order: int
    balance_fen: int

@final
class Outcome:
    """One decision, or one replayed journal row. Read-only; made by Ledger only.

    `amount_fen` is the charged / reversed / held / captured / released / credited amount of an
    approval (for FIXED merchants the fixed amount), and the requested amount of a decline.
    Deltas are what happened to the account's wallets, its held amount and the merchant;
    `merchant_delta_fen == -(main_delta_fen + subsidy_delta_fen)` always (double entry).
    `main_fen` / `subsidy_fen` are the account's balances after the decision.
    """

    @property
    def lsn(self) -> int:
        """Journal sequence number; 0 for TXN_SEQ_TOO_OLD (not journaled)."""
    @property
    def kind(self) -> int: ...
    @property
    def code(self) -> int: ...
    @property
    def repeat(self) -> bool:
        """True when this is the stored answer to a repeated key: do not journal it again."""
    @property
    def terminal_id(self) -> int:
        """0 for EXPIRY."""
    @property
    def txn_seq(self) -> int:
        """The terminal's txn_seq; for EXPIRY the outcome's own lsn."""
    @property
    def ref_txn_seq(self) -> int:
        """Original txn_seq (REVERSAL) or hold txn_seq (CAPTURE, RELEASE, EXPIRY), else 0."""
    @property
    def card_no(self) -> int: ...
    @property
    def account_id(self) -> int: ...
    @property
    def merchant_id(self) -> int:
        """The request's merchant; for REVERSAL the original's (0 if not found); for
        CAPTURE / RELEASE / EXPIRY the hold's (0 if not found)."""
    @property
    def tenant_id(self) -> int:
        """The card's tenant, 0 if the card is unknown."""
    @property
    def merchant_tenant_id(self) -> int:
        """The merchant's tenant, 0 if not opened."""
    @property
    def amount_fen(self) -> int: ...
    @property
    def main_delta_fen(self) -> int: ...
    @property
    def subsidy_delta_fen(self) -> int: ...
    @property
    def merchant_delta_fen(self) -> int: ...
    @property
    def held_delta_fen(self) -> int: ...
    @property
    def main_fen(self) -> int: ...
    @property
    def subsidy_fen(self) -> int: ...
    @property
    def expires_s(self) -> int:
        """Approved HOLD and EXPIRY: the hold's expiry; else 0."""
    @property
    def now_s(self) -> int: ...
    @property
    def balance_fen(self) -> int:
        """main_fen + subsidy_fen."""
    def journal_row(self) -> tuple[int, ...]:
        """The 20 values named by JOURNAL_COLUMNS, in that order; `replay` takes it back."""
    def copy_record(self) -> bytes:
        """The journal row as one tuple of PostgreSQL's binary COPY format (210 bytes)."""
    def __eq__(self, other: object) -> bool: ...

@final
class Ledger:
    """The balance cache: accounts, merchants and cards in preallocated C arrays.

    Configuration (tenants, classes, cross-tenant consent, merchants, accounts, cards, account
    status, an account's class, a merchant's mode, price and spend order) is owned by the
    database and loaded by the switch; it is not journaled and not in the snapshot, except
    account status which is. `restore` leaves the rest alone, so a class or merchant
    configuration set before it holds after it. Tenant configuration (time zone, meal windows)
    must be the same when replaying as when deciding: replay derives the local day and meal
    period of an approved purchase from its now_s.
    """

    def __init__(self, accounts_max: int, merchants_max: int, *, cards_max: int | None = None,
                 holds_max: int = ..., terminals_max: int = ...) -> None:
        """Preallocate accounts 1..accounts_max (64 B each, pages touched when opened),
        merchants 1..merchants_max, and a card index of 2 * accounts_max slots (16 B) that
        doubles at 3/4 load up to cards_max cards (default accounts_max * 4), then refuses
        with LedgerCapacityError."""

    # configuration
    def configure_tenant(self, tenant_id: int, utc_offset_s: int,
                         meal_windows: Iterable[tuple[int, int]] = ()) -> None:
        """At most 8 non-overlapping (start_minute, end_minute) local windows [start, end),
        0 <= start < end <= 1440. Local day = (now_s + utc_offset_s) // 86400; meal period =
        local_day * 8 + window index. An unconfigured tenant has offset 0 and no windows."""
    def allow_cross_tenant(self, card_tenant_id: int, merchant_tenant_id: int,
                           allowed: bool = True) -> None:
        """Let cards of card_tenant_id spend at (and be credited by) merchants of
        merchant_tenant_id; the switch combines both tenants' consent first. Ordered pair."""
    def cross_tenant_allowed(self, card_tenant_id: int, merchant_tenant_id: int) -> bool:
        """Whether a merchant of merchant_tenant_id may serve a card of card_tenant_id (the
        purchase's CROSS_TENANT_NOT_ALLOWED rule): the same tenant, or allowed. False for an id
        that is no tenant, such as the 0 of an unknown card or merchant. The switch shows a
        card's balances in a till's answer only when this holds."""
    def configure_class(self, class_id: int, overdraft_fen: int, txn_limit_fen: int,
                        daily_limit_fen: int, meal_count_max: int,
                        meal_amount_max_fen: int) -> None:
        """Limits of an identity class; 0 = no limit. overdraft_fen lets MAIN go down to
        -overdraft_fen. Limits apply to PURCHASE only (not holds, captures or credits). An
        unconfigured class has no limits and no overdraft. May be changed at any time."""
    def open_merchant(self, merchant_id: int, tenant_id: int, mode: int = ...,
                      fixed_amount_fen: int = ..., spend_order: int = ...,
                      balance_fen: int = ...) -> None:
        """Every counterparty (canteen, shop, cash desk, bank clearing, subsidy fund) is a
        merchant with a balance. fixed_amount_fen is 1..AMOUNT_FEN_MAX for FIXED, 0 for FREE."""
    def configure_merchant(self, merchant_id: int, mode: int, fixed_amount_fen: int,
                           spend_order: int) -> None:
        """Change an opened merchant's mode, fixed amount and spend order (the rules of
        open_merchant; LedgerStateError if not opened). Tenant and balance stay. Not journaled,
        not in the snapshot: the next decision uses it; earlier outcomes (a reversal's
        original, a hold's amount) keep the amounts they were decided with. Idempotent."""
    def open_account(self, account_id: int, tenant_id: int, class_id: int, status: int = ...,
                     main_fen: int = ..., subsidy_fen: int = ...) -> None: ...
    def set_account_status(self, account_id: int, status: int) -> None:
        """ACTIVE, FROZEN, LOST or CLOSED. Not journaled: after a recovery the switch sets the
        statuses from the database again (the snapshot's may be older)."""
    def set_account_class(self, account_id: int, class_id: int) -> None:
        """Move an opened account to identity class 1..CLASSES_MAX: the next decision applies
        that class's limits and overdraft. The day and meal counters stay (what was spent today
        counts against the new class's limits too); a balance already below the new overdraft
        floor stays, only new spending is refused. Not journaled, not in the snapshot (the
        switch loads the class from the database). Idempotent."""
    def bind_card(self, card_no: int, account_id: int) -> None:
        """card_no 1..2**63-1, bound forever (a second bind is LedgerStateError). To replace a
        card bind the new one and cancel_card the old one."""
    def cancel_card(self, card_no: int) -> None:
        """The card declines CARD_CANCELLED forever (idempotent)."""
    def card_account(self, card_no: int) -> tuple[int, bool] | None:
        """(account_id, cancelled) of a bound card, or None."""
    def last_txn_seq(self, terminal_id: int) -> int:
        """The highest txn_seq this terminal has had decided (0 if none): told at sign-on."""

    # decisions
    def purchase(self, terminal_id: int, txn_seq: int, card_no: int, merchant_id: int,
                 amount_fen: int, now_s: int) -> Outcome:
        """Precedence: repeat; tombstone -> ALREADY_REVERSED; TXN_SEQ_TOO_OLD; merchant not
        opened -> INVALID_MERCHANT; UNKNOWN_CARD; CARD_CANCELLED; status LOST -> CARD_LOST,
        CLOSED -> ACCOUNT_CLOSED, FROZEN -> ACCOUNT_FROZEN; CROSS_TENANT_NOT_ALLOWED;
        INVALID_AMOUNT (by mode); TXN_LIMIT_EXCEEDED; DAILY_LIMIT_EXCEEDED; in a meal window
        MEAL_COUNT_LIMIT_EXCEEDED then MEAL_AMOUNT_LIMIT_EXCEEDED; INSUFFICIENT_FUNDS (by spend
        order, available main = main - held, floor -overdraft); BALANCE_LIMIT_EXCEEDED (the
        merchant would pass MERCHANT_BALANCE_FEN_MAX). Approved: wallets debited by spend
        order, the merchant credited the same total, day and meal counters added to (each
        reset first when its local day / meal period changed). Counters use the time zone and
        meal windows of the account's tenant."""
    def reverse(self, terminal_id: int, txn_seq: int, original_txn_seq: int, card_no: int,
                amount_fen: int, now_s: int) -> Outcome:
        """Reverse the PURCHASE (terminal_id, original_txn_seq); an original of any other kind
        (CREDIT, DEBIT, an inquiry, a hold...) is REVERSAL_MISMATCH. original_txn_seq must be
        below txn_seq (LedgerArgumentError otherwise: such a reversal names no purchase sent
        before it; the protocol refuses it INVALID_FIELD). Precedence: repeat; tombstone;
        TXN_SEQ_TOO_OLD (this key); original in the window: already reversed (or tombstoned)
        -> ALREADY_REVERSED, not a PURCHASE or another card -> REVERSAL_MISMATCH, declined ->
        APPROVED with amount 0 (nothing to return; it counts as its reversal), amount_fen not 0
        and not the charged amount -> REVERSAL_MISMATCH, a wallet or the merchant would pass
        its bound -> BALANCE_LIMIT_EXCEEDED, else APPROVED: the money goes back to the wallets
        it came from and the merchant is debited. Limit counters are NOT given back (a
        reversed meal still counts). Account status and card cancellation do not matter.
        Never seen and not below the window (above the highest txn_seq too) ->
        ORIGINAL_NOT_FOUND and a tombstone, so the late original declines ALREADY_REVERSED
        (or, once its slot is taken, is TXN_SEQ_TOO_OLD and not journaled): never charged.
        Original below the window -> TXN_SEQ_TOO_OLD (lsn 0, not journaled): the caller looks
        the original up in the journal and calls reverse_journaled."""
    def reverse_journaled(self, terminal_id: int, txn_seq: int, original_txn_seq: int,
                          card_no: int, amount_fen: int, now_s: int,
                          original: tuple[int, ...] | None, original_reversed: bool) -> Outcome:
        """reverse() of an original below the window, told what the journal holds: `original`
        is its journal row (None: not journaled) and `original_reversed` whether a reversal of
        it was journaled APPROVED or ORIGINAL_NOT_FOUND. The reversal's own key is admitted
        again (a repeat or TXN_SEQ_TOO_OLD comes back as from reverse()); then reversed ->
        ALREADY_REVERSED, not journaled -> ORIGINAL_NOT_FOUND (no tombstone: it can never be
        admitted), else the rules of an original in the window. An original still in the
        window is decided from the window (the journal's word is not needed)."""
    def inquire(self, terminal_id: int, txn_seq: int, card_no: int, merchant_id: int,
                now_s: int) -> Outcome:
        """Balances, or the merchant / card / status / cross-tenant decline of purchase."""
    def credit(self, terminal_id: int, txn_seq: int, card_no: int, from_merchant_id: int,
               wallet: int, amount_fen: int, now_s: int) -> Outcome:
        """Cash top-up or subsidy issue: from_merchant_id (a system account, may go negative)
        pays the MAIN or SUBSIDY wallet. Like purchase for merchant, card, cancellation and
        cross tenant, but LOST and FROZEN accounts accept credit (CLOSED declines). Then
        INVALID_AMOUNT (1..AMOUNT_FEN_MAX), BALANCE_LIMIT_EXCEEDED (wallet above
        BALANCE_FEN_MAX or merchant below -MERCHANT_BALANCE_FEN_MAX). No class limits."""
    def debit(self, terminal_id: int, txn_seq: int, card_no: int, to_merchant_id: int,
              wallet: int, amount_fen: int, now_s: int) -> Outcome:
        """Refund paid out at the counter, cancellation with refund, downward adjustment: the
        MAIN or SUBSIDY wallet pays to_merchant_id (a system account). The mirror of credit,
        journal kind DEBIT (9). Precedence: repeat; tombstone -> ALREADY_REVERSED;
        TXN_SEQ_TOO_OLD; INVALID_MERCHANT; UNKNOWN_CARD; CARD_CANCELLED; CLOSED ->
        ACCOUNT_CLOSED (LOST and FROZEN accounts may be debited); CROSS_TENANT_NOT_ALLOWED;
        INVALID_AMOUNT (1..AMOUNT_FEN_MAX); INSUFFICIENT_FUNDS: the wallet's floor, SUBSIDY
        never below 0, MAIN's available balance (main - held) never below -overdraft_fen of
        the account's class (the purchase rule); BALANCE_LIMIT_EXCEEDED (the merchant would
        pass MERCHANT_BALANCE_FEN_MAX). No class limits (txn, daily, meal) apply and no limit
        counter changes. Replayed like credit (deltas only); reverse() does not undo it."""
    def transfer(self, terminal_id: int, txn_seq: int, card_no: int, merchant_id: int,
                 from_wallet: int, amount_fen: int, now_s: int) -> Outcome:
        """Move amount_fen between the card's own wallets, from_wallet (MAIN or SUBSIDY) to the
        other: one journal row, kind TRANSFER (10), main_delta_fen = -subsidy_delta_fen and
        merchant_delta_fen 0, so the row balances and no merchant moves. merchant_id is the
        counter's (the admin terminal's merchant): it is checked like a debit's (opened; no
        cross-tenant check: no merchant balance moves) and recorded, its balance does not
        change. Precedence as debit, then
        INVALID_AMOUNT (1..AMOUNT_FEN_MAX), INSUFFICIENT_FUNDS at from_wallet's floor
        (debit's rule), BALANCE_LIMIT_EXCEEDED (the receiving wallet above BALANCE_FEN_MAX).
        No class limits, no counters; reverse() does not undo it (transfer back instead)."""

    # two-phase holds (water controllers, showers)
    def hold(self, terminal_id: int, txn_seq: int, card_no: int, merchant_id: int,
             amount_fen: int, expires_s: int, now_s: int) -> Outcome:
        """Reserve amount_fen of available MAIN (held_fen += amount; no money moves). Checks
        of purchase up to INVALID_AMOUNT (mode rule included), then INSUFFICIENT_FUNDS
        (main - held - amount >= -overdraft), then HOLDS_LIMIT_EXCEEDED (holds_max). Class
        limits are not applied to holds or captures. The hold outlives the window."""
    def capture(self, terminal_id: int, txn_seq: int, hold_txn_seq: int, amount_fen: int,
                now_s: int) -> Outcome:
        """Take amount_fen (0..held) of the hold (terminal_id, hold_txn_seq) from MAIN to the
        hold's merchant and release the rest: HOLD_NOT_FOUND (not outstanding),
        INVALID_AMOUNT (< 0), CAPTURE_EXCEEDS_HOLD, BALANCE_LIMIT_EXCEEDED. Status ignored."""
    def release(self, terminal_id: int, txn_seq: int, hold_txn_seq: int, now_s: int) -> Outcome:
        """Release the whole hold (amount_fen = the hold's amount) or HOLD_NOT_FOUND."""
    def expire_holds(self, now_s: int) -> list[Outcome]:
        """Release every hold with expires_s <= now_s, in (expires_s, terminal_id, txn_seq)
        order: kind EXPIRY, terminal_id 0, txn_seq = its lsn, ref_txn_seq = the hold's
        txn_seq, expires_s = the hold's. Journal them all. O(holds outstanding)."""
    def holds(self) -> list[tuple[int, int, int, int, int, int, int]]:
        """Outstanding holds: (terminal_id, txn_seq, account_id, card_no, merchant_id,
        amount_fen, expires_s), sorted."""

    # recovery
    def replay(self, row: tuple[int, ...]) -> None:
        """Apply one journal row (journal_row()) without deciding again: deltas of approved
        rows, limit counters of approved purchases, holds, tombstones and reversed marks, the
        window and highest txn_seq, and lsn = the row's. Rows must come in increasing lsn
        order. Raises ReplayError for a malformed row, an lsn not after the ledger's, or
        balances after the row that differ from the row's main_fen / subsidy_fen."""
    def snapshot(self) -> bytes:
        """Everything dynamic: lsn, per-account status, balances, held and counters, merchant
        balances, windows (with tombstones and reversed marks), holds. Versioned binary with
        a CRC-32; native int64 fields (the header records the byte order)."""
    def restore(self, data: bytes) -> None:
        """Replace the dynamic state with a snapshot of a ledger with the same accounts_max and
        merchants_max. Every account and merchant in the snapshot must be opened here; ones
        opened since the snapshot was taken keep their opening balances (they can have had no
        journal rows before it). Account statuses come from the snapshot: a caller whose master
        data changed since must set them again. Validates everything first; a corrupt or
        mismatched snapshot raises SnapshotError and changes nothing."""

    # reading
    @property
    def lsn(self) -> int: ...
    @property
    def accounts_max(self) -> int: ...
    @property
    def merchants_max(self) -> int: ...
    def account(self, account_id: int) -> AccountState: ...
    def merchant(self, merchant_id: int) -> MerchantState:
        """An opened merchant's configuration and balance (LedgerStateError if not opened)."""
    def account_balances(self) -> list[tuple[int, int, int]]:
        """(account_id, main_fen, subsidy_fen) of every opened account, by id."""
    def balance_columns(self) -> tuple[list[int], list[int], list[int]]:
        """(account_ids, main_fen, subsidy_fen) of every opened account, by id, as three lists
        (what a checkpoint stores), built in one pass."""
    def merchant_balances(self) -> list[tuple[int, int]]:
        """(merchant_id, balance_fen) of every opened merchant, by id."""
    def total_fen(self) -> int:
        """Sum of every balance: constant under every decision (transfers only)."""
    def statistics(self) -> LedgerStatistics: ...
