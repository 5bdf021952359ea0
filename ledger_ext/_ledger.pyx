# cython: language_level=3
"""The OneCard balance cache: every balance, limit counter, hold and idempotency window.

Pure: no I/O, no clock, no threads. The caller passes `now_s`; every decision returns an
`Outcome` with a fresh lsn that the caller journals. The executable spec is
`tests/ledger_model.py`; the contract the switch reads is `_ledger.pyi`.

One module, in files by concern; `Ledger` is built up in three classes, each in its own file:

* `_constants.pxi`: limits, money bounds, the code table and the other enumerations;
* this file: errors, records, `Outcome`, and `_Tables`: construction, configuration (tenants,
  classes, merchants, accounts, cards) and reading;
* `_decisions.pxi`: `_Decisions(_Tables)`: admission of a request key and every decision;
* `_snapshot.pxi`: `Ledger(_Decisions)`: snapshot, restore and journal replay.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

import enum
import zlib

import msgspec

include "_constants.pxi"

# ---------------------------------------------------------------------------------------------
# Errors: caller misuse only. Declines are Outcomes.


class LedgerError(Exception):
    """Root of every error raised by ledger_ext (caller misuse, never a decline)."""


class LedgerArgumentError(LedgerError, ValueError):
    """An argument is out of its range (id, txn_seq, amount, time, configuration value)."""


class LedgerStateError(LedgerError):
    """The call is not valid in the current state (already opened, not opened, already bound)."""


class LedgerCapacityError(LedgerError):
    """A preallocated table is full (cards, terminals)."""


class SnapshotError(LedgerError):
    """A snapshot is corrupt, of another version, or does not match the opened accounts."""


class ReplayError(LedgerError):
    """A journal row is malformed, out of lsn order, or disagrees with the state it lands on."""


LedgerStatistics = msgspec.defstruct(
    "LedgerStatistics",
    [("lsn", int), ("accounts", int), ("merchants", int), ("cards", int),
     ("cards_cancelled", int), ("holds", int), ("terminals", int), ("window_entries", int),
     ("tombstones", int), ("memory_bytes", int)],
    frozen=True, module=__name__,
)

AccountState = msgspec.defstruct(
    "AccountState",
    [("account_id", int), ("tenant_id", int), ("class_id", int), ("status", int),
     ("main_fen", int), ("subsidy_fen", int), ("held_fen", int), ("day", int),
     ("day_spent_fen", int), ("meal_period", int), ("meal_count", int),
     ("meal_spent_fen", int)],
    frozen=True, module=__name__,
)

MerchantState = msgspec.defstruct(
    "MerchantState",
    [("merchant_id", int), ("tenant_id", int), ("mode", int), ("fixed_amount_fen", int),
     ("spend_order", int), ("balance_fen", int)],
    frozen=True, module=__name__,
)


cdef inline int64_t _floordiv(int64_t a, int64_t b) noexcept:
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef inline int64_t _meal_period(Tenant* tenant, int64_t day, int64_t local_s) noexcept:
    """Meal period id of local time `local_s`, or -1 outside every window."""
    cdef int64_t minute = (local_s - day * 86400) // 60
    cdef int i
    for i in range(tenant.meal_window_count):
        if tenant.meal_start_minute[i] <= minute < tenant.meal_end_minute[i]:
            return day * MEAL_WINDOW_SLOTS + i
    return -1


cdef inline uint64_t _card_hash(uint64_t x) noexcept:
    # splitmix64 finaliser: card numbers are often sequential; spread them.
    x ^= x >> 30
    x *= <uint64_t>0xbf58476d1ce4e5b9
    x ^= x >> 27
    x *= <uint64_t>0x94d049bb133111eb
    x ^= x >> 31
    return x


cdef inline int _check_key(int64_t terminal_id, int64_t txn_seq) except -1:
    if terminal_id < 1 or terminal_id > C_TERMINAL_ID_MAX:
        raise LedgerArgumentError(f"terminal_id {terminal_id} out of 1..{TERMINAL_ID_MAX}")
    if txn_seq < 1 or txn_seq > C_TXN_SEQ_MAX:
        raise LedgerArgumentError(f"txn_seq {txn_seq} out of 1..{TXN_SEQ_MAX}")
    return 0


cdef inline int _check_card_no(int64_t card_no) except -1:
    if card_no < 1:
        raise LedgerArgumentError(f"card_no {card_no} out of 1..2**63-1")
    return 0


cdef inline int _check_time(int64_t now_s, str name) except -1:
    if now_s < 0 or now_s > C_NOW_S_MAX:
        raise LedgerArgumentError(f"{name} {now_s} out of 0..2**40")
    return 0


cdef int _check_merchant_config(int64_t mode, int64_t fixed_amount_fen,
                                int64_t spend_order) except -1:
    if mode == M_FIXED:
        if fixed_amount_fen < 1 or fixed_amount_fen > C_AMOUNT_FEN_MAX:
            raise LedgerArgumentError(f"fixed_amount_fen {fixed_amount_fen} out of range")
    elif mode == M_FREE:
        if fixed_amount_fen != 0:
            raise LedgerArgumentError("fixed_amount_fen must be 0 for a FREE merchant")
    else:
        raise LedgerArgumentError(f"mode {mode} is not FREE or FIXED")
    if spend_order < O_SUBSIDY_FIRST or spend_order > O_MAIN_ONLY:
        raise LedgerArgumentError(f"spend_order {spend_order} out of 0..2")
    return 0


# ---------------------------------------------------------------------------------------------


@cython.freelist(512)
@cython.final
cdef class Outcome:
    """One decision (or one replayed journal row). Read-only."""

    def __init__(self):
        raise TypeError("Outcome objects are made by Ledger only")

    @property
    def balance_fen(self):
        return self.main_fen + self.subsidy_fen

    def journal_row(self):
        return (self.lsn, self.kind, self.code, self.terminal_id, self.txn_seq,
                self.ref_txn_seq, self.card_no, self.account_id, self.merchant_id,
                self.tenant_id, self.merchant_tenant_id, self.amount_fen, self.main_delta_fen,
                self.subsidy_delta_fen, self.merchant_delta_fen, self.held_delta_fen,
                self.main_fen, self.subsidy_fen, self.expires_s, self.now_s)

    def copy_record(self):
        """The journal row as one tuple of PostgreSQL's binary COPY format (JOURNAL_COLUMNS,
        widths JOURNAL_COLUMN_WIDTHS): made when the request is decided, so a group commit
        only joins bytes and sends them (issue 14: encoding hundreds of rows at commit time
        held the loop while answers waited)."""
        cdef int64_t row[20]
        cdef char buf[COPY_RECORD_BYTES]
        cdef Py_ssize_t pos = 2
        cdef int i, w
        cdef uint64_t v
        row[:] = [self.lsn, self.kind, self.code, self.terminal_id, self.txn_seq,
                  self.ref_txn_seq, self.card_no, self.account_id, self.merchant_id,
                  self.tenant_id, self.merchant_tenant_id, self.amount_fen,
                  self.main_delta_fen, self.subsidy_delta_fen, self.merchant_delta_fen,
                  self.held_delta_fen, self.main_fen, self.subsidy_fen, self.expires_s,
                  self.now_s]
        buf[0] = 0
        buf[1] = 20
        for i in range(20):
            w = _COPY_WIDTHS[i]
            buf[pos] = 0
            buf[pos + 1] = 0
            buf[pos + 2] = 0
            buf[pos + 3] = <char>w
            pos += 4
            v = <uint64_t>row[i]
            while w:  # big-endian, two's complement in the column's width
                w -= 1
                buf[pos + w] = <char>(v & 0xff)
                v >>= 8
            pos += _COPY_WIDTHS[i]
        return PyBytes_FromStringAndSize(buf, COPY_RECORD_BYTES)

    def __eq__(self, other):
        if not isinstance(other, Outcome):
            return NotImplemented
        return (self.repeat == (<Outcome>other).repeat
                and self.journal_row() == (<Outcome>other).journal_row())

    def __repr__(self):
        fields = ", ".join(f"{n}={v}" for n, v in zip(JOURNAL_COLUMNS, self.journal_row()))
        return f"Outcome({fields}, repeat={bool(self.repeat)})"


cdef Outcome _copy_repeat(Outcome src):
    cdef Outcome o = Outcome.__new__(Outcome)
    o.lsn = src.lsn
    o.kind = src.kind
    o.code = src.code
    o.repeat = True
    o.terminal_id = src.terminal_id
    o.txn_seq = src.txn_seq
    o.ref_txn_seq = src.ref_txn_seq
    o.card_no = src.card_no
    o.account_id = src.account_id
    o.merchant_id = src.merchant_id
    o.tenant_id = src.tenant_id
    o.merchant_tenant_id = src.merchant_tenant_id
    o.amount_fen = src.amount_fen
    o.main_delta_fen = src.main_delta_fen
    o.subsidy_delta_fen = src.subsidy_delta_fen
    o.merchant_delta_fen = src.merchant_delta_fen
    o.held_delta_fen = src.held_delta_fen
    o.main_fen = src.main_fen
    o.subsidy_fen = src.subsidy_fen
    o.expires_s = src.expires_s
    o.now_s = src.now_s
    return o


cdef Outcome _outcome_from_row(tuple row):
    cdef Outcome o = Outcome.__new__(Outcome)
    (o.lsn, o.kind, o.code, o.terminal_id, o.txn_seq, o.ref_txn_seq, o.card_no, o.account_id,
     o.merchant_id, o.tenant_id, o.merchant_tenant_id, o.amount_fen, o.main_delta_fen,
     o.subsidy_delta_fen, o.merchant_delta_fen, o.held_delta_fen, o.main_fen, o.subsidy_fen,
     o.expires_s, o.now_s) = row
    o.repeat = False
    return o


@cython.final
cdef class _Terminal:
    def __cinit__(self):
        memset(self.seqs, 0, sizeof(self.seqs))
        memset(self.flags, 0, sizeof(self.flags))
        self.outcomes = [None] * WINDOW_SLOTS
        self.highest = 0


@cython.final
cdef class _Hold:
    def key(self):
        return (self.expires_s, self.terminal_id, self.txn_seq)

    def as_tuple(self):
        return (self.terminal_id, self.txn_seq, self.account_id, self.card_no,
                self.merchant_id, self.amount_fen, self.expires_s)


cdef inline object _hold_key(int64_t terminal_id, int64_t txn_seq):
    return (terminal_id << 32) | txn_seq


cdef class _Tables:
    """The state of the balance cache, its configuration and its reading. See _ledger.pyi."""

    def __cinit__(self, int64_t accounts_max, int64_t merchants_max, *, cards_max=None,
                  int64_t holds_max=HOLDS_MAX, int64_t terminals_max=TERMINALS_MAX):
        cdef uint64_t capacity = 16
        cdef int64_t cards_limit
        if accounts_max < 1 or accounts_max > ACCOUNTS_MAX:
            raise LedgerArgumentError(f"accounts_max {accounts_max} out of 1..{ACCOUNTS_MAX}")
        if merchants_max < 1 or merchants_max > MERCHANTS_MAX:
            raise LedgerArgumentError(f"merchants_max {merchants_max} out of 1..{MERCHANTS_MAX}")
        cards_limit = accounts_max * CARDS_PER_ACCOUNT_MAX if cards_max is None else cards_max
        if cards_limit < 1 or cards_limit > ACCOUNTS_MAX * CARDS_PER_ACCOUNT_MAX:
            raise LedgerArgumentError(f"cards_max {cards_limit} out of range")
        if holds_max < 0 or holds_max > HOLDS_MAX:
            raise LedgerArgumentError(f"holds_max {holds_max} out of 0..{HOLDS_MAX}")
        if terminals_max < 1 or terminals_max > TERMINALS_MAX:
            raise LedgerArgumentError(f"terminals_max {terminals_max} out of 1..{TERMINALS_MAX}")
        self._accounts_max = accounts_max
        self._merchants_max = merchants_max
        self._cards_max = cards_limit
        self._holds_max = holds_max
        self._terminals_max = terminals_max
        # Card index: load factor <= 1/2 at one card per account, grown (x2) at 3/4.
        while capacity < <uint64_t>(2 * accounts_max):
            capacity <<= 1
        self._card_mask = capacity - 1
        # calloc: pages of never-opened ids are never touched, so cost no RSS.
        self._accounts = <Account*>calloc(accounts_max + 1, sizeof(Account))
        self._merchants = <Merchant*>calloc(merchants_max + 1, sizeof(Merchant))
        self._cards = <CardSlot*>calloc(capacity, sizeof(CardSlot))
        self._tenants = <Tenant*>calloc(TENANTS_MAX + 1, sizeof(Tenant))
        self._cross_tenant = NULL
        if (self._accounts == NULL or self._merchants == NULL or self._cards == NULL
                or self._tenants == NULL):
            raise MemoryError()
        memset(self._classes, 0, sizeof(self._classes))
        self._terminals = {}
        self._holds = {}

    def __dealloc__(self):
        free(self._accounts)
        free(self._merchants)
        free(self._cards)
        free(self._tenants)
        free(self._cross_tenant)
        self._accounts = NULL
        self._merchants = NULL
        self._cards = NULL
        self._tenants = NULL
        self._cross_tenant = NULL

    # ----------------------------------------------------------------------------- configuration

    def configure_tenant(self, int64_t tenant_id, int64_t utc_offset_s, meal_windows=()):
        cdef Tenant* t
        cdef int i
        if tenant_id < 1 or tenant_id > TENANTS_MAX:
            raise LedgerArgumentError(f"tenant_id {tenant_id} out of 1..{TENANTS_MAX}")
        if utc_offset_s < -UTC_OFFSET_S_MAX or utc_offset_s > UTC_OFFSET_S_MAX:
            raise LedgerArgumentError(f"utc_offset_s {utc_offset_s} out of +-{UTC_OFFSET_S_MAX}")
        windows = [(int(s), int(e)) for s, e in meal_windows]
        if len(windows) > MEAL_WINDOWS_MAX:
            raise LedgerArgumentError(f"more than {MEAL_WINDOWS_MAX} meal windows")
        for n, (s, e) in enumerate(windows):
            if not 0 <= s < e <= 1440:
                raise LedgerArgumentError(f"meal window {n} ({s}, {e}) not 0 <= start < end <= 1440")
            for s2, e2 in windows[:n]:
                if s < e2 and s2 < e:
                    raise LedgerArgumentError(f"meal window {n} ({s}, {e}) overlaps another")
        t = &self._tenants[tenant_id]
        t.utc_offset_s = <int>utc_offset_s
        t.meal_window_count = len(windows)
        for i in range(MEAL_WINDOW_SLOTS):
            t.meal_start_minute[i] = windows[i][0] if i < len(windows) else 0
            t.meal_end_minute[i] = windows[i][1] if i < len(windows) else 0

    def allow_cross_tenant(self, int64_t card_tenant_id, int64_t merchant_tenant_id,
                           bint allowed=True):
        cdef int64_t bit
        for tid in (card_tenant_id, merchant_tenant_id):
            if tid < 1 or tid > TENANTS_MAX:
                raise LedgerArgumentError(f"tenant_id {tid} out of 1..{TENANTS_MAX}")
        if self._cross_tenant == NULL:
            self._cross_tenant = <uint8_t*>calloc(
                ((TENANTS_MAX + 1) * (TENANTS_MAX + 1)) // 8 + 1, 1)
            if self._cross_tenant == NULL:
                raise MemoryError()
        bit = card_tenant_id * (TENANTS_MAX + 1) + merchant_tenant_id
        if allowed:
            self._cross_tenant[bit >> 3] |= <uint8_t>(1 << (bit & 7))
        else:
            self._cross_tenant[bit >> 3] &= <uint8_t>~(1 << (bit & 7))

    def cross_tenant_allowed(self, int64_t card_tenant_id, int64_t merchant_tenant_id):
        """Whether a merchant of merchant_tenant_id may serve a card of card_tenant_id: the
        same tenant, or allowed (the purchase's cross-tenant rule). False for an id that is no
        tenant (0: an unknown card or merchant)."""
        if not (1 <= card_tenant_id <= TENANTS_MAX and 1 <= merchant_tenant_id <= TENANTS_MAX):
            return False
        return self._serves(<uint16_t>card_tenant_id, <uint16_t>merchant_tenant_id)

    @cython.final
    cdef bint _serves(self, uint16_t card_tenant_id, uint16_t merchant_tenant_id) noexcept:
        cdef int64_t bit
        if card_tenant_id == merchant_tenant_id:
            return True
        bit = <int64_t>card_tenant_id * (TENANTS_MAX + 1) + merchant_tenant_id
        return self._cross_tenant != NULL and (self._cross_tenant[bit >> 3] >> (bit & 7)) & 1

    def configure_class(self, int64_t class_id, int64_t overdraft_fen, int64_t txn_limit_fen,
                        int64_t daily_limit_fen, int64_t meal_count_max,
                        int64_t meal_amount_max_fen):
        cdef IdentityClass* c
        if class_id < 1 or class_id > CLASSES_MAX:
            raise LedgerArgumentError(f"class_id {class_id} out of 1..{CLASSES_MAX}")
        if overdraft_fen < 0 or overdraft_fen > C_BALANCE_FEN_MAX:
            raise LedgerArgumentError(f"overdraft_fen {overdraft_fen} out of 0..{BALANCE_FEN_MAX}")
        for name, v in (("txn_limit_fen", txn_limit_fen), ("daily_limit_fen", daily_limit_fen),
                        ("meal_amount_max_fen", meal_amount_max_fen)):
            if v < 0 or v > C_BALANCE_FEN_MAX:
                raise LedgerArgumentError(f"{name} {v} out of 0..{BALANCE_FEN_MAX}")
        if meal_count_max < 0 or meal_count_max > 1000:
            raise LedgerArgumentError(f"meal_count_max {meal_count_max} out of 0..1000")
        c = &self._classes[class_id]
        c.overdraft_fen = overdraft_fen
        c.txn_limit_fen = txn_limit_fen
        c.daily_limit_fen = daily_limit_fen
        c.meal_count_max = meal_count_max
        c.meal_amount_max_fen = meal_amount_max_fen

    def open_merchant(self, int64_t merchant_id, int64_t tenant_id, int64_t mode=M_FREE,
                      int64_t fixed_amount_fen=0, int64_t spend_order=O_SUBSIDY_FIRST,
                      int64_t balance_fen=0):
        cdef Merchant* m
        if merchant_id < 1 or merchant_id > self._merchants_max:
            raise LedgerArgumentError(f"merchant_id {merchant_id} out of 1..{self._merchants_max}")
        if tenant_id < 1 or tenant_id > TENANTS_MAX:
            raise LedgerArgumentError(f"tenant_id {tenant_id} out of 1..{TENANTS_MAX}")
        _check_merchant_config(mode, fixed_amount_fen, spend_order)
        if balance_fen < -C_MERCHANT_BALANCE_FEN_MAX or balance_fen > C_MERCHANT_BALANCE_FEN_MAX:
            raise LedgerArgumentError(f"balance_fen {balance_fen} out of range")
        m = &self._merchants[merchant_id]
        if m.opened:
            raise LedgerStateError(f"merchant {merchant_id} already opened")
        m.opened = 1
        m.tenant_id = <uint16_t>tenant_id
        m.mode = <uint8_t>mode
        m.fixed_amount_fen = fixed_amount_fen
        m.spend_order = <uint8_t>spend_order
        m.balance_fen = balance_fen
        self._merchants_opened += 1

    def configure_merchant(self, int64_t merchant_id, int64_t mode, int64_t fixed_amount_fen,
                           int64_t spend_order):
        cdef Merchant* m
        if merchant_id < 1 or merchant_id > self._merchants_max:
            raise LedgerArgumentError(f"merchant_id {merchant_id} out of 1..{self._merchants_max}")
        _check_merchant_config(mode, fixed_amount_fen, spend_order)
        m = &self._merchants[merchant_id]
        if not m.opened:
            raise LedgerStateError(f"merchant {merchant_id} not opened")
        m.mode = <uint8_t>mode
        m.fixed_amount_fen = fixed_amount_fen
        m.spend_order = <uint8_t>spend_order

    def open_account(self, int64_t account_id, int64_t tenant_id, int64_t class_id,
                     int64_t status=S_ACTIVE, int64_t main_fen=0, int64_t subsidy_fen=0):
        cdef Account* a
        if account_id < 1 or account_id > self._accounts_max:
            raise LedgerArgumentError(f"account_id {account_id} out of 1..{self._accounts_max}")
        if tenant_id < 1 or tenant_id > TENANTS_MAX:
            raise LedgerArgumentError(f"tenant_id {tenant_id} out of 1..{TENANTS_MAX}")
        if class_id < 1 or class_id > CLASSES_MAX:
            raise LedgerArgumentError(f"class_id {class_id} out of 1..{CLASSES_MAX}")
        if status < S_ACTIVE or status > S_CLOSED:
            raise LedgerArgumentError(f"status {status} out of 0..3")
        if main_fen < -C_BALANCE_FEN_MAX or main_fen > C_BALANCE_FEN_MAX:
            raise LedgerArgumentError(f"main_fen {main_fen} out of range")
        if subsidy_fen < 0 or subsidy_fen > C_BALANCE_FEN_MAX:
            raise LedgerArgumentError(f"subsidy_fen {subsidy_fen} out of range")
        a = &self._accounts[account_id]
        if a.opened:
            raise LedgerStateError(f"account {account_id} already opened")
        memset(a, 0, sizeof(Account))
        a.opened = 1
        a.tenant_id = <uint16_t>tenant_id
        a.class_id = <uint8_t>class_id
        a.status = <uint8_t>status
        a.main_fen = main_fen
        a.subsidy_fen = subsidy_fen
        a.day = -1
        a.meal_period = -1
        self._accounts_opened += 1

    @cython.final
    cdef Account* _opened_account(self, int64_t account_id) except NULL:
        if account_id < 1 or account_id > self._accounts_max:
            raise LedgerArgumentError(f"account_id {account_id} out of 1..{self._accounts_max}")
        if not self._accounts[account_id].opened:
            raise LedgerStateError(f"account {account_id} not opened")
        return &self._accounts[account_id]

    def set_account_status(self, int64_t account_id, int64_t status):
        cdef Account* a = self._opened_account(account_id)
        if status < S_ACTIVE or status > S_CLOSED:
            raise LedgerArgumentError(f"status {status} out of 0..3")
        a.status = <uint8_t>status

    def set_account_class(self, int64_t account_id, int64_t class_id):
        cdef Account* a = self._opened_account(account_id)
        if class_id < 1 or class_id > CLASSES_MAX:
            raise LedgerArgumentError(f"class_id {class_id} out of 1..{CLASSES_MAX}")
        a.class_id = <uint8_t>class_id

    # ----------------------------------------------------------------------------- card index

    @cython.final
    cdef CardSlot* _card_find(self, uint64_t card_no) noexcept:
        cdef uint64_t i = _card_hash(card_no) & self._card_mask
        cdef CardSlot* slot
        while True:
            slot = &self._cards[i]
            if slot.card_no == card_no:
                return slot
            if slot.card_no == 0:
                return NULL
            i = (i + 1) & self._card_mask

    @cython.final
    cdef int _card_grow(self) except -1:
        cdef uint64_t old_capacity = self._card_mask + 1
        cdef uint64_t capacity = old_capacity * 2
        cdef CardSlot* old = self._cards
        cdef CardSlot* new = <CardSlot*>calloc(capacity, sizeof(CardSlot))
        cdef uint64_t i, j
        if new == NULL:
            raise MemoryError()
        for i in range(old_capacity):
            if old[i].card_no != 0:
                j = _card_hash(old[i].card_no) & (capacity - 1)
                while new[j].card_no != 0:
                    j = (j + 1) & (capacity - 1)
                new[j] = old[i]
        self._cards = new
        self._card_mask = capacity - 1
        free(old)
        return 0

    def bind_card(self, int64_t card_no, int64_t account_id):
        cdef uint64_t i
        _check_card_no(card_no)
        self._opened_account(account_id)
        if self._card_find(<uint64_t>card_no) != NULL:
            raise LedgerStateError(f"card {card_no} already bound")
        if self._card_count >= self._cards_max:
            raise LedgerCapacityError(f"card index full ({self._cards_max} cards)")
        if (self._card_count + 1) * 4 > <int64_t>(self._card_mask + 1) * 3:
            self._card_grow()
        i = _card_hash(<uint64_t>card_no) & self._card_mask
        while self._cards[i].card_no != 0:
            i = (i + 1) & self._card_mask
        self._cards[i].card_no = <uint64_t>card_no
        self._cards[i].account_id = <int>account_id
        self._cards[i].state = CARD_STATE_ACTIVE
        self._card_count += 1

    def cancel_card(self, int64_t card_no):
        cdef CardSlot* slot
        _check_card_no(card_no)
        slot = self._card_find(<uint64_t>card_no)
        if slot == NULL:
            raise LedgerStateError(f"card {card_no} not bound")
        if slot.state != CARD_STATE_CANCELLED:
            slot.state = CARD_STATE_CANCELLED
            self._cards_cancelled += 1

    def card_account(self, int64_t card_no):
        """(account_id, cancelled) of a bound card, or None."""
        cdef CardSlot* slot
        _check_card_no(card_no)
        slot = self._card_find(<uint64_t>card_no)
        if slot == NULL:
            return None
        return (slot.account_id, slot.state == CARD_STATE_CANCELLED)

    def last_txn_seq(self, int64_t terminal_id):
        """The highest txn_seq this terminal has had decided (0 if none): told at sign-on."""
        cdef object found
        if terminal_id < 1 or terminal_id > C_TERMINAL_ID_MAX:
            raise LedgerArgumentError(f"terminal_id {terminal_id} out of 1..{TERMINAL_ID_MAX}")
        found = self._terminals.get(terminal_id)
        if found is None:
            return 0
        return (<_Terminal>found).highest

    # ----------------------------------------------------------------------------- reading

    @property
    def lsn(self):
        return self._lsn

    @property
    def accounts_max(self):
        return self._accounts_max

    @property
    def merchants_max(self):
        return self._merchants_max

    def account(self, int64_t account_id):
        cdef Account* a = self._opened_account(account_id)
        return AccountState(account_id, a.tenant_id, a.class_id, a.status, a.main_fen,
                            a.subsidy_fen, a.held_fen, a.day, a.day_spent_fen, a.meal_period,
                            a.meal_count, a.meal_spent_fen)

    def merchant(self, int64_t merchant_id):
        cdef Merchant* m
        if merchant_id < 1 or merchant_id > self._merchants_max:
            raise LedgerArgumentError(f"merchant_id {merchant_id} out of 1..{self._merchants_max}")
        m = &self._merchants[merchant_id]
        if not m.opened:
            raise LedgerStateError(f"merchant {merchant_id} not opened")
        return MerchantState(merchant_id, m.tenant_id, m.mode, m.fixed_amount_fen,
                             m.spend_order, m.balance_fen)

    def account_balances(self):
        cdef int64_t i
        cdef list out = []
        for i in range(1, self._accounts_max + 1):
            if self._accounts[i].opened:
                out.append((i, self._accounts[i].main_fen, self._accounts[i].subsidy_fen))
        return out

    def balance_columns(self):
        """(account_ids, main_fen, subsidy_fen) of every opened account, by id, as three lists:
        the shape a checkpoint stores, built in one pass without a tuple per account."""
        cdef int64_t i
        cdef list ids = []
        cdef list main = []
        cdef list subsidy = []
        for i in range(1, self._accounts_max + 1):
            if self._accounts[i].opened:
                ids.append(i)
                main.append(self._accounts[i].main_fen)
                subsidy.append(self._accounts[i].subsidy_fen)
        return ids, main, subsidy

    def merchant_balances(self):
        cdef int64_t i
        cdef list out = []
        for i in range(1, self._merchants_max + 1):
            if self._merchants[i].opened:
                out.append((i, self._merchants[i].balance_fen))
        return out

    def total_fen(self):
        cdef int64_t i, total = 0
        for i in range(1, self._accounts_max + 1):
            if self._accounts[i].opened:
                total += self._accounts[i].main_fen + self._accounts[i].subsidy_fen
        for i in range(1, self._merchants_max + 1):
            if self._merchants[i].opened:
                total += self._merchants[i].balance_fen
        return total

    def statistics(self):
        cdef _Terminal term
        cdef int j
        cdef int64_t entries = 0, tombstones = 0
        for t in self._terminals.values():
            term = <_Terminal>t
            for j in range(WINDOW_SLOTS):
                if term.seqs[j] != 0:
                    if term.outcomes[j] is None:
                        tombstones += 1
                    else:
                        entries += 1
        memory = ((self._accounts_max + 1) * sizeof(Account)
                  + (self._merchants_max + 1) * sizeof(Merchant)
                  + (self._card_mask + 1) * sizeof(CardSlot)
                  + (TENANTS_MAX + 1) * sizeof(Tenant))
        if self._cross_tenant != NULL:
            memory += ((TENANTS_MAX + 1) * (TENANTS_MAX + 1)) // 8 + 1
        return LedgerStatistics(
            lsn=self._lsn, accounts=self._accounts_opened, merchants=self._merchants_opened,
            cards=self._card_count, cards_cancelled=self._cards_cancelled,
            holds=len(self._holds), terminals=len(self._terminals), window_entries=entries,
            tombstones=tombstones, memory_bytes=memory)



include "_decisions.pxi"
include "_snapshot.pxi"
