# cython: language_level=3
"""The OneCard balance cache: every balance, limit counter, hold and idempotency window.

Pure: no I/O, no clock, no threads. The caller passes `now_s`; every decision returns an
`Outcome` with a fresh lsn that the caller journals. The executable spec is
`tests/ledger_model.py`; the contract the switch reads is `_ledger.pyi`.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

import enum
import zlib

import msgspec

# ---------------------------------------------------------------------------------------------
# Limits (style 8) and money bounds (style 9)

AMOUNT_FEN_MAX = 10_000_000                 # one request: 100,000 yuan
BALANCE_FEN_MAX = 10 ** 12                  # one wallet
MERCHANT_BALANCE_FEN_MAX = 10 ** 13         # one merchant / system account, both signs
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

# Every balance is bounded, so the sum of all of them (total_fen) fits int64 with room to spare.
assert (ACCOUNTS_MAX * 2 * BALANCE_FEN_MAX
        + MERCHANTS_MAX * MERCHANT_BALANCE_FEN_MAX) <= (1 << 62), "balances may overflow int64"
assert AMOUNT_FEN_MAX * 1000 < BALANCE_FEN_MAX
assert TERMINAL_WINDOW_MAX == WINDOW_SLOTS and MEAL_WINDOWS_MAX == MEAL_WINDOW_SLOTS

cdef int64_t C_AMOUNT_FEN_MAX = AMOUNT_FEN_MAX
cdef int64_t C_BALANCE_FEN_MAX = BALANCE_FEN_MAX
cdef int64_t C_MERCHANT_BALANCE_FEN_MAX = MERCHANT_BALANCE_FEN_MAX
cdef int64_t C_NOW_S_MAX = NOW_S_MAX
cdef int64_t C_TERMINAL_ID_MAX = TERMINAL_ID_MAX
cdef int64_t C_TXN_SEQ_MAX = TXN_SEQ_MAX

# ---------------------------------------------------------------------------------------------
# Codes, kinds and enumerations (numbers shared with protocols.ocp.ResponseCode)

cdef enum:
    C_APPROVED = 0
    C_INVALID_MERCHANT = 12
    C_INVALID_AMOUNT = 13
    C_UNKNOWN_CARD = 14
    C_ORIGINAL_NOT_FOUND = 25
    C_ALREADY_REVERSED = 26
    C_REVERSAL_MISMATCH = 27
    C_HOLD_NOT_FOUND = 30
    C_CAPTURE_EXCEEDS_HOLD = 31
    C_HOLDS_LIMIT_EXCEEDED = 32
    C_CARD_LOST = 41
    C_CARD_CANCELLED = 43
    C_ACCOUNT_CLOSED = 46
    C_ACCOUNT_FROZEN = 47
    C_INSUFFICIENT_FUNDS = 51
    C_CROSS_TENANT_NOT_ALLOWED = 57
    C_TXN_LIMIT_EXCEEDED = 61
    C_DAILY_LIMIT_EXCEEDED = 62
    C_MEAL_AMOUNT_LIMIT_EXCEEDED = 63
    C_MEAL_COUNT_LIMIT_EXCEEDED = 64
    C_BALANCE_LIMIT_EXCEEDED = 65
    C_TXN_SEQ_TOO_OLD = 80

cdef enum:
    K_PURCHASE = 1
    K_REVERSAL = 2
    K_INQUIRY = 3
    K_HOLD = 4
    K_CAPTURE = 5
    K_RELEASE = 6
    K_EXPIRY = 7
    K_CREDIT = 8
    K_DEBIT = 9
    K_TRANSFER = 10

cdef enum:
    S_ACTIVE = 0
    S_FROZEN = 1
    S_LOST = 2
    S_CLOSED = 3

cdef enum:
    M_FREE = 0
    M_FIXED = 1
    O_SUBSIDY_FIRST = 0
    O_MAIN_FIRST = 1
    O_MAIN_ONLY = 2
    W_MAIN = 0
    W_SUBSIDY = 1
    CARD_STATE_ACTIVE = 1
    CARD_STATE_CANCELLED = 2
    F_TOMBSTONE = 1             # a reversal named this txn_seq before it was seen
    F_REVERSED = 2              # the outcome in this slot has been reversed
    F_HAS_OUTCOME = 128         # snapshot only: an outcome row follows

_CODES = [
    ("APPROVED", 0), ("INVALID_MERCHANT", 12), ("INVALID_AMOUNT", 13), ("UNKNOWN_CARD", 14),
    ("ORIGINAL_NOT_FOUND", 25), ("ALREADY_REVERSED", 26), ("REVERSAL_MISMATCH", 27),
    ("HOLD_NOT_FOUND", 30), ("CAPTURE_EXCEEDS_HOLD", 31), ("HOLDS_LIMIT_EXCEEDED", 32),
    ("CARD_LOST", 41), ("CARD_CANCELLED", 43), ("ACCOUNT_CLOSED", 46), ("ACCOUNT_FROZEN", 47),
    ("INSUFFICIENT_FUNDS", 51), ("CROSS_TENANT_NOT_ALLOWED", 57), ("TXN_LIMIT_EXCEEDED", 61),
    ("DAILY_LIMIT_EXCEEDED", 62), ("MEAL_AMOUNT_LIMIT_EXCEEDED", 63),
    ("MEAL_COUNT_LIMIT_EXCEEDED", 64), ("BALANCE_LIMIT_EXCEEDED", 65), ("TXN_SEQ_TOO_OLD", 80),
]
_KINDS = [("PURCHASE", 1), ("REVERSAL", 2), ("INQUIRY", 3), ("HOLD", 4), ("CAPTURE", 5),
          ("RELEASE", 6), ("EXPIRY", 7), ("CREDIT", 8), ("DEBIT", 9),
          ("TRANSFER", 10)]

Code = enum.IntEnum("Code", _CODES, module=__name__)
Code.__doc__ = "Decision codes; the numbers are the protocol's response codes."
Kind = enum.IntEnum("Kind", _KINDS, module=__name__)
Kind.__doc__ = "What an Outcome records (the journal's `kind` column)."
AccountStatus = enum.IntEnum(
    "AccountStatus", [("ACTIVE", 0), ("FROZEN", 1), ("LOST", 2), ("CLOSED", 3)], module=__name__)
MerchantMode = enum.IntEnum("MerchantMode", [("FREE", 0), ("FIXED", 1)], module=__name__)
SpendOrder = enum.IntEnum(
    "SpendOrder", [("SUBSIDY_FIRST", 0), ("MAIN_FIRST", 1), ("MAIN_ONLY", 2)], module=__name__)
Wallet = enum.IntEnum("Wallet", [("MAIN", 0), ("SUBSIDY", 1)], module=__name__)

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

SNAPSHOT_MAGIC = b"OCLG"
SNAPSHOT_VERSION = 1
cdef int64_t SNAPSHOT_ENDIAN = 0x0102030405060708
cdef int ROW_FIELDS = 20

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


# ---------------------------------------------------------------------------------------------
# Snapshot helpers: native int64 fields, bounds-checked reads.

cdef inline void _put(char* buf, Py_ssize_t* pos, int64_t v) noexcept:
    memcpy(buf + pos[0], &v, 8)
    pos[0] += 8


cdef inline void _put_row(char* buf, Py_ssize_t* pos, Outcome o) noexcept:
    """An outcome's journal row (JOURNAL_COLUMNS order) straight from its fields: a snapshot
    holds up to 256 per terminal, and a Python tuple each made checkpoints hold the event loop
    for hundreds of ms at a thousand terminals."""
    cdef int64_t row[20]
    row[:] = [o.lsn, o.kind, o.code, o.terminal_id, o.txn_seq, o.ref_txn_seq, o.card_no,
              o.account_id, o.merchant_id, o.tenant_id, o.merchant_tenant_id, o.amount_fen,
              o.main_delta_fen, o.subsidy_delta_fen, o.merchant_delta_fen, o.held_delta_fen,
              o.main_fen, o.subsidy_fen, o.expires_s, o.now_s]
    memcpy(buf + pos[0], row, sizeof(row))
    pos[0] += sizeof(row)


cdef inline int64_t _get(const char* buf, Py_ssize_t end, Py_ssize_t* pos) except? -1:
    cdef int64_t v
    if pos[0] + 8 > end:
        raise SnapshotError("snapshot truncated")
    memcpy(&v, buf + pos[0], 8)
    pos[0] += 8
    return v


cdef inline int _need(bint ok, str what) except -1:
    if not ok:
        raise SnapshotError(what)
    return 0


@cython.final
cdef class Ledger:
    """The balance cache. See _ledger.pyi for the contract."""

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

    def open_merchant(self, int64_t merchant_id, int64_t tenant_id, int64_t mode=FREE,
                      int64_t fixed_amount_fen=0, int64_t spend_order=SUBSIDY_FIRST,
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
                     int64_t status=ACTIVE, int64_t main_fen=0, int64_t subsidy_fen=0):
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

    # ----------------------------------------------------------------------------- internals

    cdef _Terminal _terminal(self, int64_t terminal_id):
        cdef object found = self._terminals.get(terminal_id)
        cdef _Terminal term
        if found is not None:
            return <_Terminal>found
        if len(self._terminals) >= self._terminals_max:
            raise LedgerCapacityError(f"more than {self._terminals_max} terminals")
        term = _Terminal.__new__(_Terminal)
        term.terminal_id = terminal_id
        self._terminals[terminal_id] = term
        return term

    cdef Outcome _emit(self, int64_t kind, int64_t code, int64_t terminal_id, int64_t txn_seq,
                       int64_t ref_txn_seq, int64_t card_no, int64_t account_id,
                       int64_t merchant_id, int64_t amount_fen, int64_t main_delta_fen,
                       int64_t subsidy_delta_fen, int64_t held_delta_fen, int64_t expires_s,
                       int64_t now_s, bint journaled):
        cdef Outcome o = Outcome.__new__(Outcome)
        cdef Account* a
        if journaled:
            self._lsn += 1
            o.lsn = self._lsn
        else:
            o.lsn = 0
        o.kind = kind
        o.code = code
        o.repeat = False
        o.terminal_id = terminal_id
        o.txn_seq = txn_seq
        o.ref_txn_seq = ref_txn_seq
        o.card_no = card_no
        o.account_id = account_id
        o.merchant_id = merchant_id
        if account_id > 0:
            a = &self._accounts[account_id]
            o.tenant_id = a.tenant_id
            o.main_fen = a.main_fen
            o.subsidy_fen = a.subsidy_fen
        else:
            o.tenant_id = 0
            o.main_fen = 0
            o.subsidy_fen = 0
        if merchant_id > 0 and self._merchants[merchant_id].opened:
            o.merchant_tenant_id = self._merchants[merchant_id].tenant_id
        else:
            o.merchant_tenant_id = 0
        o.amount_fen = amount_fen
        o.main_delta_fen = main_delta_fen
        o.subsidy_delta_fen = subsidy_delta_fen
        o.merchant_delta_fen = -(main_delta_fen + subsidy_delta_fen)
        o.held_delta_fen = held_delta_fen
        o.expires_s = expires_s
        o.now_s = now_s
        return o

    cdef void _store(self, _Terminal term, int64_t txn_seq, Outcome outcome) noexcept:
        cdef int slot = txn_seq & (WINDOW_SLOTS - 1)
        cdef uint8_t flags = 0
        if term.seqs[slot] == txn_seq and (term.flags[slot] & F_TOMBSTONE):
            flags = F_REVERSED          # the late original of an earlier reversal
        term.seqs[slot] = <uint32_t>txn_seq
        term.flags[slot] = flags
        term.outcomes[slot] = outcome
        if txn_seq > term.highest:
            term.highest = txn_seq

    cdef int _status_code(self, int32_t account_id, CardSlot* card, int64_t merchant_id,
                          bint credit) noexcept:
        cdef Merchant* m = &self._merchants[merchant_id]
        cdef Account* a
        cdef int64_t bit
        if not m.opened:
            return C_INVALID_MERCHANT
        if card == NULL:
            return C_UNKNOWN_CARD
        if card.state == CARD_STATE_CANCELLED:
            return C_CARD_CANCELLED
        a = &self._accounts[account_id]
        if a.status == S_LOST and not credit:
            return C_CARD_LOST
        if a.status == S_CLOSED:
            return C_ACCOUNT_CLOSED
        if a.status == S_FROZEN and not credit:
            return C_ACCOUNT_FROZEN
        if a.tenant_id != m.tenant_id:
            bit = <int64_t>a.tenant_id * (TENANTS_MAX + 1) + m.tenant_id
            if self._cross_tenant == NULL or not (self._cross_tenant[bit >> 3] >> (bit & 7)) & 1:
                return C_CROSS_TENANT_NOT_ALLOWED
        return C_APPROVED

    cdef void _count_spend(self, Account* acc, int64_t amount_fen, int64_t now_s) noexcept:
        cdef Tenant* tenant = &self._tenants[acc.tenant_id]
        cdef int64_t local_s = now_s + tenant.utc_offset_s
        cdef int64_t day = _floordiv(local_s, 86400)
        cdef int64_t period = _meal_period(tenant, day, local_s)
        if acc.day != day:
            acc.day = <int>day
            acc.day_spent_fen = 0
        acc.day_spent_fen += amount_fen
        if period >= 0:
            if acc.meal_period != period:
                acc.meal_period = <int>period
                acc.meal_count = 0
                acc.meal_spent_fen = 0
            acc.meal_count += 1
            acc.meal_spent_fen += amount_fen

    # ----------------------------------------------------------------------------- decisions

    def purchase(self, int64_t terminal_id, int64_t txn_seq, int64_t card_no,
                 int64_t merchant_id, int64_t amount_fen, int64_t now_s):
        cdef _Terminal term
        cdef int slot
        cdef int64_t code = C_APPROVED
        cdef CardSlot* card
        cdef int32_t account_id = 0
        cdef Account* acc
        cdef Merchant* m
        cdef IdentityClass* cls
        cdef Tenant* tenant
        cdef int64_t charge = amount_fen, local_s, day, period, spent, count
        cdef int64_t avail, first, rest, from_sub = 0, from_main = 0
        cdef Outcome o
        _check_key(terminal_id, txn_seq)
        _check_card_no(card_no)
        if merchant_id < 1 or merchant_id > self._merchants_max:
            raise LedgerArgumentError(f"merchant_id {merchant_id} out of 1..{self._merchants_max}")
        _check_time(now_s, "now_s")

        term = self._terminal(terminal_id)
        slot = txn_seq & (WINDOW_SLOTS - 1)
        card = self._card_find(<uint64_t>card_no)
        if card != NULL:
            account_id = card.account_id
        if term.seqs[slot] == txn_seq:
            if not (term.flags[slot] & F_TOMBSTONE):
                return _copy_repeat(<Outcome>term.outcomes[slot])
            code = C_ALREADY_REVERSED
        elif txn_seq + WINDOW_SLOTS <= term.highest:
            return self._emit(K_PURCHASE, C_TXN_SEQ_TOO_OLD, terminal_id, txn_seq, 0, card_no,
                              account_id, merchant_id, amount_fen, 0, 0, 0, 0, now_s, False)
        else:
            code = self._status_code(account_id, card, merchant_id, False)

        if code == C_APPROVED:
            m = &self._merchants[merchant_id]
            acc = &self._accounts[account_id]
            cls = &self._classes[acc.class_id]
            if m.mode == M_FIXED:
                if amount_fen == 0 or amount_fen == m.fixed_amount_fen:
                    charge = m.fixed_amount_fen
                else:
                    code = C_INVALID_AMOUNT
            elif amount_fen < 1 or amount_fen > C_AMOUNT_FEN_MAX:
                code = C_INVALID_AMOUNT
            if code == C_APPROVED and cls.txn_limit_fen > 0 and charge > cls.txn_limit_fen:
                code = C_TXN_LIMIT_EXCEEDED
            if code == C_APPROVED:
                tenant = &self._tenants[acc.tenant_id]
                local_s = now_s + tenant.utc_offset_s
                day = _floordiv(local_s, 86400)
                spent = acc.day_spent_fen if acc.day == day else 0
                if cls.daily_limit_fen > 0 and spent + charge > cls.daily_limit_fen:
                    code = C_DAILY_LIMIT_EXCEEDED
                else:
                    period = _meal_period(tenant, day, local_s)
                    if period >= 0:
                        count = acc.meal_count if acc.meal_period == period else 0
                        spent = acc.meal_spent_fen if acc.meal_period == period else 0
                        if cls.meal_count_max > 0 and count + 1 > cls.meal_count_max:
                            code = C_MEAL_COUNT_LIMIT_EXCEEDED
                        elif cls.meal_amount_max_fen > 0 and spent + charge > cls.meal_amount_max_fen:
                            code = C_MEAL_AMOUNT_LIMIT_EXCEEDED
            if code == C_APPROVED:
                avail = acc.main_fen - acc.held_fen
                if m.spend_order == O_SUBSIDY_FIRST:
                    from_sub = acc.subsidy_fen if acc.subsidy_fen < charge else charge
                    from_main = charge - from_sub
                elif m.spend_order == O_MAIN_FIRST:
                    first = avail if avail > 0 else 0
                    if first > charge:
                        first = charge
                    rest = charge - first
                    from_sub = acc.subsidy_fen if acc.subsidy_fen < rest else rest
                    from_main = charge - from_sub
                else:
                    from_main = charge
                if avail - from_main < -cls.overdraft_fen:
                    code = C_INSUFFICIENT_FUNDS
                    from_main = 0
                    from_sub = 0
                elif m.balance_fen + charge > C_MERCHANT_BALANCE_FEN_MAX:
                    code = C_BALANCE_LIMIT_EXCEEDED
                    from_main = 0
                    from_sub = 0
            if code == C_APPROVED:
                acc.main_fen -= from_main
                acc.subsidy_fen -= from_sub
                m.balance_fen += charge
                self._count_spend(acc, charge, now_s)
        o = self._emit(K_PURCHASE, code, terminal_id, txn_seq, 0, card_no, account_id,
                       merchant_id, charge if code == C_APPROVED else amount_fen,
                       -from_main, -from_sub, 0, 0, now_s, True)
        self._store(term, txn_seq, o)
        return o

    def reverse(self, int64_t terminal_id, int64_t txn_seq, int64_t original_txn_seq,
                int64_t card_no, int64_t amount_fen, int64_t now_s):
        cdef _Terminal term
        cdef int slot, oslot
        cdef int64_t code = C_APPROVED
        cdef CardSlot* card
        cdef int32_t account_id = 0
        cdef int64_t merchant_id = 0, amount = amount_fen, md = 0, sd = 0
        cdef Outcome orig, o
        cdef Account* acc
        cdef Merchant* m
        _check_key(terminal_id, txn_seq)
        _check_key(terminal_id, original_txn_seq)
        _check_card_no(card_no)
        _check_time(now_s, "now_s")

        term = self._terminal(terminal_id)
        slot = txn_seq & (WINDOW_SLOTS - 1)
        card = self._card_find(<uint64_t>card_no)
        if card != NULL:
            account_id = card.account_id
        if term.seqs[slot] == txn_seq:
            if not (term.flags[slot] & F_TOMBSTONE):
                return _copy_repeat(<Outcome>term.outcomes[slot])
            code = C_ALREADY_REVERSED
        elif txn_seq + WINDOW_SLOTS <= term.highest:
            return self._emit(K_REVERSAL, C_TXN_SEQ_TOO_OLD, terminal_id, txn_seq,
                              original_txn_seq, card_no, account_id, 0, amount_fen, 0, 0, 0, 0,
                              now_s, False)
        elif original_txn_seq >= txn_seq:
            code = C_REVERSAL_MISMATCH
        else:
            oslot = original_txn_seq & (WINDOW_SLOTS - 1)
            if term.seqs[oslot] == original_txn_seq:
                if term.flags[oslot] & (F_TOMBSTONE | F_REVERSED):
                    code = C_ALREADY_REVERSED
                else:
                    orig = <Outcome>term.outcomes[oslot]
                    merchant_id = orig.merchant_id
                    if orig.kind != K_PURCHASE or orig.card_no != card_no:
                        code = C_REVERSAL_MISMATCH
                    elif orig.code != C_APPROVED:
                        amount = 0
                        term.flags[oslot] |= F_REVERSED
                    elif amount_fen != 0 and amount_fen != orig.amount_fen:
                        code = C_REVERSAL_MISMATCH
                    else:
                        acc = &self._accounts[orig.account_id]
                        m = &self._merchants[orig.merchant_id]
                        if (acc.main_fen - orig.main_delta_fen > C_BALANCE_FEN_MAX
                                or acc.subsidy_fen - orig.subsidy_delta_fen > C_BALANCE_FEN_MAX
                                or m.balance_fen - orig.amount_fen < -C_MERCHANT_BALANCE_FEN_MAX):
                            code = C_BALANCE_LIMIT_EXCEEDED
                        else:
                            md = -orig.main_delta_fen
                            sd = -orig.subsidy_delta_fen
                            amount = orig.amount_fen
                            acc.main_fen += md
                            acc.subsidy_fen += sd
                            m.balance_fen -= orig.amount_fen
                            term.flags[oslot] |= F_REVERSED
            elif original_txn_seq + WINDOW_SLOTS <= term.highest:
                return self._emit(K_REVERSAL, C_TXN_SEQ_TOO_OLD, terminal_id, txn_seq,
                                  original_txn_seq, card_no, account_id, 0, amount_fen, 0, 0, 0,
                                  0, now_s, False)
            else:
                code = C_ORIGINAL_NOT_FOUND
                term.seqs[oslot] = <uint32_t>original_txn_seq
                term.flags[oslot] = F_TOMBSTONE
                term.outcomes[oslot] = None
        o = self._emit(K_REVERSAL, code, terminal_id, txn_seq, original_txn_seq, card_no,
                       account_id, merchant_id, amount if code == C_APPROVED else amount_fen,
                       md, sd, 0, 0, now_s, True)
        self._store(term, txn_seq, o)
        return o

    def inquire(self, int64_t terminal_id, int64_t txn_seq, int64_t card_no,
                int64_t merchant_id, int64_t now_s):
        cdef _Terminal term
        cdef int slot
        cdef int64_t code
        cdef CardSlot* card
        cdef int32_t account_id = 0
        cdef Outcome o
        _check_key(terminal_id, txn_seq)
        _check_card_no(card_no)
        if merchant_id < 1 or merchant_id > self._merchants_max:
            raise LedgerArgumentError(f"merchant_id {merchant_id} out of 1..{self._merchants_max}")
        _check_time(now_s, "now_s")
        term = self._terminal(terminal_id)
        slot = txn_seq & (WINDOW_SLOTS - 1)
        card = self._card_find(<uint64_t>card_no)
        if card != NULL:
            account_id = card.account_id
        if term.seqs[slot] == txn_seq:
            if not (term.flags[slot] & F_TOMBSTONE):
                return _copy_repeat(<Outcome>term.outcomes[slot])
            code = C_ALREADY_REVERSED
        elif txn_seq + WINDOW_SLOTS <= term.highest:
            return self._emit(K_INQUIRY, C_TXN_SEQ_TOO_OLD, terminal_id, txn_seq, 0, card_no,
                              account_id, merchant_id, 0, 0, 0, 0, 0, now_s, False)
        else:
            code = self._status_code(account_id, card, merchant_id, False)
        o = self._emit(K_INQUIRY, code, terminal_id, txn_seq, 0, card_no, account_id,
                       merchant_id, 0, 0, 0, 0, 0, now_s, True)
        self._store(term, txn_seq, o)
        return o

    def credit(self, int64_t terminal_id, int64_t txn_seq, int64_t card_no,
               int64_t from_merchant_id, int64_t wallet, int64_t amount_fen, int64_t now_s):
        cdef _Terminal term
        cdef int slot
        cdef int64_t code
        cdef CardSlot* card
        cdef int32_t account_id = 0
        cdef Account* acc
        cdef Merchant* m
        cdef int64_t md = 0, sd = 0
        cdef Outcome o
        _check_key(terminal_id, txn_seq)
        _check_card_no(card_no)
        if from_merchant_id < 1 or from_merchant_id > self._merchants_max:
            raise LedgerArgumentError(
                f"merchant_id {from_merchant_id} out of 1..{self._merchants_max}")
        if wallet != W_MAIN and wallet != W_SUBSIDY:
            raise LedgerArgumentError(f"wallet {wallet} is not MAIN (0) or SUBSIDY (1)")
        _check_time(now_s, "now_s")
        term = self._terminal(terminal_id)
        slot = txn_seq & (WINDOW_SLOTS - 1)
        card = self._card_find(<uint64_t>card_no)
        if card != NULL:
            account_id = card.account_id
        if term.seqs[slot] == txn_seq:
            if not (term.flags[slot] & F_TOMBSTONE):
                return _copy_repeat(<Outcome>term.outcomes[slot])
            code = C_ALREADY_REVERSED
        elif txn_seq + WINDOW_SLOTS <= term.highest:
            return self._emit(K_CREDIT, C_TXN_SEQ_TOO_OLD, terminal_id, txn_seq, 0, card_no,
                              account_id, from_merchant_id, amount_fen, 0, 0, 0, 0, now_s, False)
        else:
            code = self._status_code(account_id, card, from_merchant_id, True)
        if code == C_APPROVED:
            acc = &self._accounts[account_id]
            m = &self._merchants[from_merchant_id]
            if amount_fen < 1 or amount_fen > C_AMOUNT_FEN_MAX:
                code = C_INVALID_AMOUNT
            elif (wallet == W_MAIN and acc.main_fen + amount_fen > C_BALANCE_FEN_MAX
                  or wallet == W_SUBSIDY and acc.subsidy_fen + amount_fen > C_BALANCE_FEN_MAX
                  or m.balance_fen - amount_fen < -C_MERCHANT_BALANCE_FEN_MAX):
                code = C_BALANCE_LIMIT_EXCEEDED
            else:
                if wallet == W_MAIN:
                    md = amount_fen
                    acc.main_fen += amount_fen
                else:
                    sd = amount_fen
                    acc.subsidy_fen += amount_fen
                m.balance_fen -= amount_fen
        o = self._emit(K_CREDIT, code, terminal_id, txn_seq, 0, card_no, account_id,
                       from_merchant_id, amount_fen, md, sd, 0, 0, now_s, True)
        self._store(term, txn_seq, o)
        return o

    def debit(self, int64_t terminal_id, int64_t txn_seq, int64_t card_no,
              int64_t to_merchant_id, int64_t wallet, int64_t amount_fen, int64_t now_s):
        """Refund paid out at the counter, cancellation with refund, downward adjustment: the
        MAIN or SUBSIDY wallet pays to_merchant_id (a system account). The mirror of credit."""
        cdef _Terminal term
        cdef int slot
        cdef int64_t code
        cdef CardSlot* card
        cdef int32_t account_id = 0
        cdef Account* acc
        cdef Merchant* m
        cdef int64_t md = 0, sd = 0
        cdef Outcome o
        _check_key(terminal_id, txn_seq)
        _check_card_no(card_no)
        if to_merchant_id < 1 or to_merchant_id > self._merchants_max:
            raise LedgerArgumentError(
                f"merchant_id {to_merchant_id} out of 1..{self._merchants_max}")
        if wallet != W_MAIN and wallet != W_SUBSIDY:
            raise LedgerArgumentError(f"wallet {wallet} is not MAIN (0) or SUBSIDY (1)")
        _check_time(now_s, "now_s")
        term = self._terminal(terminal_id)
        slot = txn_seq & (WINDOW_SLOTS - 1)
        card = self._card_find(<uint64_t>card_no)
        if card != NULL:
            account_id = card.account_id
        if term.seqs[slot] == txn_seq:
            if not (term.flags[slot] & F_TOMBSTONE):
                return _copy_repeat(<Outcome>term.outcomes[slot])
            code = C_ALREADY_REVERSED
        elif txn_seq + WINDOW_SLOTS <= term.highest:
            return self._emit(K_DEBIT, C_TXN_SEQ_TOO_OLD, terminal_id, txn_seq, 0, card_no,
                              account_id, to_merchant_id, amount_fen, 0, 0, 0, 0, now_s, False)
        else:
            code = self._status_code(account_id, card, to_merchant_id, True)
        if code == C_APPROVED:
            acc = &self._accounts[account_id]
            m = &self._merchants[to_merchant_id]
            if amount_fen < 1 or amount_fen > C_AMOUNT_FEN_MAX:
                code = C_INVALID_AMOUNT
            elif (wallet == W_MAIN and acc.main_fen - acc.held_fen - amount_fen
                  < -self._classes[acc.class_id].overdraft_fen
                  or wallet == W_SUBSIDY and acc.subsidy_fen - amount_fen < 0):
                code = C_INSUFFICIENT_FUNDS
            elif m.balance_fen + amount_fen > C_MERCHANT_BALANCE_FEN_MAX:
                code = C_BALANCE_LIMIT_EXCEEDED
            else:
                if wallet == W_MAIN:
                    md = -amount_fen
                    acc.main_fen -= amount_fen
                else:
                    sd = -amount_fen
                    acc.subsidy_fen -= amount_fen
                m.balance_fen += amount_fen
        o = self._emit(K_DEBIT, code, terminal_id, txn_seq, 0, card_no, account_id,
                       to_merchant_id, amount_fen, md, sd, 0, 0, now_s, True)
        self._store(term, txn_seq, o)
        return o

    def transfer(self, int64_t terminal_id, int64_t txn_seq, int64_t card_no,
                 int64_t merchant_id, int64_t from_wallet, int64_t amount_fen, int64_t now_s):
        """Move amount_fen between the card's own wallets, from_wallet to the other one: one
        journal row whose wallet deltas cancel out; merchant_id (the terminal's) only names
        the counter, its balance does not change."""
        cdef _Terminal term
        cdef int slot
        cdef int64_t code
        cdef CardSlot* card
        cdef int32_t account_id = 0
        cdef Account* acc
        cdef int64_t md = 0, sd = 0
        cdef Outcome o
        _check_key(terminal_id, txn_seq)
        _check_card_no(card_no)
        if merchant_id < 1 or merchant_id > self._merchants_max:
            raise LedgerArgumentError(f"merchant_id {merchant_id} out of 1..{self._merchants_max}")
        if from_wallet != W_MAIN and from_wallet != W_SUBSIDY:
            raise LedgerArgumentError(f"wallet {from_wallet} is not MAIN (0) or SUBSIDY (1)")
        _check_time(now_s, "now_s")
        term = self._terminal(terminal_id)
        slot = txn_seq & (WINDOW_SLOTS - 1)
        card = self._card_find(<uint64_t>card_no)
        if card != NULL:
            account_id = card.account_id
        if term.seqs[slot] == txn_seq:
            if not (term.flags[slot] & F_TOMBSTONE):
                return _copy_repeat(<Outcome>term.outcomes[slot])
            code = C_ALREADY_REVERSED
        elif txn_seq + WINDOW_SLOTS <= term.highest:
            return self._emit(K_TRANSFER, C_TXN_SEQ_TOO_OLD, terminal_id, txn_seq, 0, card_no,
                              account_id, merchant_id, amount_fen, 0, 0, 0, 0, now_s, False)
        else:
            code = self._status_code(account_id, card, merchant_id, True)
            if code == C_CROSS_TENANT_NOT_ALLOWED:
                # No merchant balance moves: the counter's tenant needs no consent of the
                # card's (the site's one admin terminal serves every tenant's cardholders).
                code = C_APPROVED
        if code == C_APPROVED:
            acc = &self._accounts[account_id]
            if amount_fen < 1 or amount_fen > C_AMOUNT_FEN_MAX:
                code = C_INVALID_AMOUNT
            elif from_wallet == W_MAIN:
                if (acc.main_fen - acc.held_fen - amount_fen
                        < -self._classes[acc.class_id].overdraft_fen):
                    code = C_INSUFFICIENT_FUNDS
                elif acc.subsidy_fen + amount_fen > C_BALANCE_FEN_MAX:
                    code = C_BALANCE_LIMIT_EXCEEDED
                else:
                    md = -amount_fen
                    sd = amount_fen
            else:
                if acc.subsidy_fen - amount_fen < 0:
                    code = C_INSUFFICIENT_FUNDS
                elif acc.main_fen + amount_fen > C_BALANCE_FEN_MAX:
                    code = C_BALANCE_LIMIT_EXCEEDED
                else:
                    md = amount_fen
                    sd = -amount_fen
            acc.main_fen += md
            acc.subsidy_fen += sd
        o = self._emit(K_TRANSFER, code, terminal_id, txn_seq, 0, card_no, account_id,
                       merchant_id, amount_fen, md, sd, 0, 0, now_s, True)
        self._store(term, txn_seq, o)
        return o

    # ----------------------------------------------------------------------------- holds

    def hold(self, int64_t terminal_id, int64_t txn_seq, int64_t card_no, int64_t merchant_id,
             int64_t amount_fen, int64_t expires_s, int64_t now_s):
        cdef _Terminal term
        cdef int slot
        cdef int64_t code
        cdef CardSlot* card
        cdef int32_t account_id = 0
        cdef Account* acc
        cdef Merchant* m
        cdef int64_t amount = amount_fen, hd = 0
        cdef _Hold h
        cdef Outcome o
        _check_key(terminal_id, txn_seq)
        _check_card_no(card_no)
        if merchant_id < 1 or merchant_id > self._merchants_max:
            raise LedgerArgumentError(f"merchant_id {merchant_id} out of 1..{self._merchants_max}")
        _check_time(expires_s, "expires_s")
        _check_time(now_s, "now_s")
        term = self._terminal(terminal_id)
        slot = txn_seq & (WINDOW_SLOTS - 1)
        card = self._card_find(<uint64_t>card_no)
        if card != NULL:
            account_id = card.account_id
        if term.seqs[slot] == txn_seq:
            if not (term.flags[slot] & F_TOMBSTONE):
                return _copy_repeat(<Outcome>term.outcomes[slot])
            code = C_ALREADY_REVERSED
        elif txn_seq + WINDOW_SLOTS <= term.highest:
            return self._emit(K_HOLD, C_TXN_SEQ_TOO_OLD, terminal_id, txn_seq, 0, card_no,
                              account_id, merchant_id, amount_fen, 0, 0, 0, 0, now_s, False)
        else:
            code = self._status_code(account_id, card, merchant_id, False)
        if code == C_APPROVED:
            acc = &self._accounts[account_id]
            m = &self._merchants[merchant_id]
            if m.mode == M_FIXED:
                if amount_fen == 0 or amount_fen == m.fixed_amount_fen:
                    amount = m.fixed_amount_fen
                else:
                    code = C_INVALID_AMOUNT
            elif amount_fen < 1 or amount_fen > C_AMOUNT_FEN_MAX:
                code = C_INVALID_AMOUNT
            if code == C_APPROVED:
                if (acc.main_fen - acc.held_fen - amount
                        < -self._classes[acc.class_id].overdraft_fen):
                    code = C_INSUFFICIENT_FUNDS
                elif len(self._holds) >= self._holds_max:
                    code = C_HOLDS_LIMIT_EXCEEDED
            if code == C_APPROVED:
                hd = amount
                acc.held_fen += amount
                h = _Hold.__new__(_Hold)
                h.terminal_id = terminal_id
                h.txn_seq = txn_seq
                h.account_id = account_id
                h.card_no = card_no
                h.merchant_id = merchant_id
                h.amount_fen = amount
                h.expires_s = expires_s
                self._holds[_hold_key(terminal_id, txn_seq)] = h
        o = self._emit(K_HOLD, code, terminal_id, txn_seq, 0, card_no, account_id, merchant_id,
                       amount if code == C_APPROVED else amount_fen, 0, 0, hd,
                       expires_s if code == C_APPROVED else 0, now_s, True)
        self._store(term, txn_seq, o)
        return o

    cdef Outcome _finish_hold(self, int64_t kind, int64_t terminal_id, int64_t txn_seq,
                              int64_t hold_txn_seq, int64_t amount_fen, int64_t now_s):
        """capture (kind CAPTURE, amount_fen >= 0) or release (kind RELEASE) of one hold."""
        cdef _Terminal term = self._terminal(terminal_id)
        cdef int slot = txn_seq & (WINDOW_SLOTS - 1)
        cdef int64_t code = C_APPROVED, card_no = 0, account_id = 0, merchant_id = 0
        cdef int64_t amount = amount_fen, md = 0, hd = 0
        cdef _Hold h = None
        cdef Account* acc
        cdef Merchant* m
        cdef Outcome o
        cdef object key = _hold_key(terminal_id, hold_txn_seq)
        found = self._holds.get(key)
        if found is not None:
            h = <_Hold>found
            card_no = h.card_no
            account_id = h.account_id
            merchant_id = h.merchant_id
        if term.seqs[slot] == txn_seq:
            if not (term.flags[slot] & F_TOMBSTONE):
                return _copy_repeat(<Outcome>term.outcomes[slot])
            code = C_ALREADY_REVERSED
        elif txn_seq + WINDOW_SLOTS <= term.highest:
            return self._emit(kind, C_TXN_SEQ_TOO_OLD, terminal_id, txn_seq, hold_txn_seq,
                              card_no, account_id, merchant_id, amount_fen, 0, 0, 0, 0, now_s,
                              False)
        elif h is None:
            code = C_HOLD_NOT_FOUND
        elif kind == K_CAPTURE:
            m = &self._merchants[h.merchant_id]
            if amount_fen < 0:
                code = C_INVALID_AMOUNT
            elif amount_fen > h.amount_fen:
                code = C_CAPTURE_EXCEEDS_HOLD
            elif m.balance_fen + amount_fen > C_MERCHANT_BALANCE_FEN_MAX:
                code = C_BALANCE_LIMIT_EXCEEDED
        if code == C_APPROVED:
            acc = &self._accounts[h.account_id]
            hd = -h.amount_fen
            acc.held_fen -= h.amount_fen
            if kind == K_CAPTURE:
                md = -amount_fen
                acc.main_fen -= amount_fen
                self._merchants[h.merchant_id].balance_fen += amount_fen
            else:
                amount = h.amount_fen
            del self._holds[key]
        o = self._emit(kind, code, terminal_id, txn_seq, hold_txn_seq, card_no, account_id,
                       merchant_id, amount, md, 0, hd, 0, now_s, True)
        self._store(term, txn_seq, o)
        return o

    def capture(self, int64_t terminal_id, int64_t txn_seq, int64_t hold_txn_seq,
                int64_t amount_fen, int64_t now_s):
        _check_key(terminal_id, txn_seq)
        _check_key(terminal_id, hold_txn_seq)
        _check_time(now_s, "now_s")
        return self._finish_hold(K_CAPTURE, terminal_id, txn_seq, hold_txn_seq, amount_fen, now_s)

    def release(self, int64_t terminal_id, int64_t txn_seq, int64_t hold_txn_seq, int64_t now_s):
        _check_key(terminal_id, txn_seq)
        _check_key(terminal_id, hold_txn_seq)
        _check_time(now_s, "now_s")
        return self._finish_hold(K_RELEASE, terminal_id, txn_seq, hold_txn_seq, 0, now_s)

    def expire_holds(self, int64_t now_s):
        cdef _Hold h
        cdef list out = []
        _check_time(now_s, "now_s")
        due = sorted([h for h in self._holds.values() if (<_Hold>h).expires_s <= now_s],
                     key=_Hold.key)
        for h in due:
            self._accounts[h.account_id].held_fen -= h.amount_fen
            del self._holds[_hold_key(h.terminal_id, h.txn_seq)]
            out.append(self._emit(K_EXPIRY, C_APPROVED, 0, self._lsn + 1, h.txn_seq, h.card_no,
                                  h.account_id, h.merchant_id, h.amount_fen, 0, 0,
                                  -h.amount_fen, h.expires_s, now_s, True))
        return out

    def holds(self):
        return sorted([(<_Hold>h).as_tuple() for h in self._holds.values()])

    # ----------------------------------------------------------------------------- replay

    def replay(self, tuple row not None):
        cdef int64_t lsn, kind, code, terminal_id, txn_seq, ref, account_id, merchant_id
        cdef int64_t amount, md, sd, mdelta, hd
        cdef Account* acc = NULL
        cdef _Terminal term = None
        cdef _Hold h
        cdef Outcome o
        cdef int oslot
        if len(row) != ROW_FIELDS:
            raise ReplayError(f"journal row has {len(row)} fields, not {ROW_FIELDS}")
        try:
            o = _outcome_from_row(row)
        except (TypeError, OverflowError) as exc:
            raise ReplayError(f"journal row has a non-int64 field: {exc}") from None
        lsn = o.lsn
        kind = o.kind
        code = o.code
        terminal_id = o.terminal_id
        txn_seq = o.txn_seq
        ref = o.ref_txn_seq
        account_id = o.account_id
        merchant_id = o.merchant_id
        amount = o.amount_fen
        md = o.main_delta_fen
        sd = o.subsidy_delta_fen
        mdelta = o.merchant_delta_fen
        hd = o.held_delta_fen
        if lsn <= self._lsn:
            raise ReplayError(f"row lsn {lsn} is not after the ledger's lsn {self._lsn}")
        if kind < K_PURCHASE or kind > K_TRANSFER:
            raise ReplayError(f"row lsn {lsn}: unknown kind {kind}")
        if code == C_TXN_SEQ_TOO_OLD:
            raise ReplayError(f"row lsn {lsn}: TXN_SEQ_TOO_OLD is never journaled")
        if account_id < 0 or account_id > self._accounts_max or (
                account_id > 0 and not self._accounts[account_id].opened):
            raise ReplayError(f"row lsn {lsn}: account {account_id} not opened")
        if merchant_id < 0 or merchant_id > self._merchants_max or (
                mdelta != 0 and not self._merchants[merchant_id].opened):
            raise ReplayError(f"row lsn {lsn}: merchant {merchant_id} not opened")
        if mdelta != -(md + sd):
            raise ReplayError(f"row lsn {lsn}: deltas do not sum to zero")
        if code == C_APPROVED and (md != 0 or sd != 0 or hd != 0) and (
                account_id == 0 or ((md != 0 or sd != 0) and merchant_id == 0)):
            raise ReplayError(f"row lsn {lsn}: a transfer without its account or merchant")
        if kind != K_EXPIRY:
            try:
                _check_key(terminal_id, txn_seq)
            except LedgerArgumentError as exc:
                raise ReplayError(f"row lsn {lsn}: {exc}") from None
            term = self._terminal(terminal_id)
        if code == C_APPROVED:
            if kind == K_HOLD:
                if len(self._holds) >= self._holds_max:
                    raise ReplayError(f"row lsn {lsn}: more than {self._holds_max} holds")
                h = _Hold.__new__(_Hold)
                h.terminal_id = terminal_id
                h.txn_seq = txn_seq
                h.account_id = account_id
                h.card_no = o.card_no
                h.merchant_id = merchant_id
                h.amount_fen = amount
                h.expires_s = o.expires_s
                self._holds[_hold_key(terminal_id, txn_seq)] = h
            elif kind == K_CAPTURE or kind == K_RELEASE:
                if self._holds.pop(_hold_key(terminal_id, ref), None) is None:
                    raise ReplayError(f"row lsn {lsn}: hold {terminal_id}/{ref} not outstanding")
            elif kind == K_EXPIRY:
                found = None
                for candidate in self._holds.values():
                    h = <_Hold>candidate
                    if (h.txn_seq == ref and h.account_id == account_id
                            and h.merchant_id == merchant_id and h.amount_fen == amount
                            and h.expires_s == o.expires_s and h.expires_s <= o.now_s
                            and (found is None or h.terminal_id < (<_Hold>found).terminal_id)):
                        found = h
                if found is None:
                    raise ReplayError(f"row lsn {lsn}: no outstanding hold matches the expiry")
                h = <_Hold>found
                del self._holds[_hold_key(h.terminal_id, h.txn_seq)]
            elif kind == K_REVERSAL:
                oslot = ref & (WINDOW_SLOTS - 1)
                if term.seqs[oslot] == ref:
                    term.flags[oslot] |= F_REVERSED
            if account_id > 0:
                acc = &self._accounts[account_id]
                acc.main_fen += md
                acc.subsidy_fen += sd
                acc.held_fen += hd
                if kind == K_PURCHASE:
                    self._count_spend(acc, amount, o.now_s)
            if merchant_id > 0:
                self._merchants[merchant_id].balance_fen += mdelta
        elif kind == K_REVERSAL and code == C_ORIGINAL_NOT_FOUND:
            oslot = ref & (WINDOW_SLOTS - 1)
            term.seqs[oslot] = <uint32_t>ref
            term.flags[oslot] = F_TOMBSTONE
            term.outcomes[oslot] = None
        if term is not None:
            self._store(term, txn_seq, o)
        self._lsn = lsn
        if account_id > 0:
            acc = &self._accounts[account_id]
            if acc.main_fen != o.main_fen or acc.subsidy_fen != o.subsidy_fen:
                raise ReplayError(
                    f"row lsn {lsn}: balances after replay ({acc.main_fen}, {acc.subsidy_fen}) "
                    f"differ from the journal ({o.main_fen}, {o.subsidy_fen})")

    # ----------------------------------------------------------------------------- snapshot

    def snapshot(self):
        cdef Py_ssize_t size, pos = 0
        cdef int64_t i, n_terminal_slots = 0, n_outcomes = 0
        cdef int j, k
        cdef Account* a
        cdef _Terminal term
        cdef Outcome o
        cdef _Hold h
        cdef bytes data
        cdef char* buf
        terminals = sorted(self._terminals.items())
        holds = sorted(self._holds.values(), key=_Hold.key)
        for _, t in terminals:
            term = <_Terminal>t
            for j in range(WINDOW_SLOTS):
                if term.seqs[j] != 0:
                    n_terminal_slots += 1
                    if term.outcomes[j] is not None:
                        n_outcomes += 1
        size = (4 + 4 + 8 * 8 + self._accounts_opened * 10 * 8 + self._merchants_opened * 2 * 8
                + len(terminals) * 3 * 8 + n_terminal_slots * 2 * 8
                + n_outcomes * ROW_FIELDS * 8 + len(holds) * 7 * 8 + 8)
        data = PyBytes_FromStringAndSize(NULL, size)
        buf = PyBytes_AS_STRING(data)
        memcpy(buf, b"OCLG", 4)
        k = SNAPSHOT_VERSION
        memcpy(buf + 4, &k, 4)
        pos = 8
        for v in (SNAPSHOT_ENDIAN, self._accounts_max, self._merchants_max, self._lsn,
                  self._accounts_opened, self._merchants_opened, len(terminals), len(holds)):
            _put(buf, &pos, v)
        for i in range(1, self._accounts_max + 1):
            a = &self._accounts[i]
            if a.opened:
                _put(buf, &pos, i)
                _put(buf, &pos, a.status)
                _put(buf, &pos, a.main_fen)
                _put(buf, &pos, a.subsidy_fen)
                _put(buf, &pos, a.held_fen)
                _put(buf, &pos, a.day)
                _put(buf, &pos, a.day_spent_fen)
                _put(buf, &pos, a.meal_period)
                _put(buf, &pos, a.meal_count)
                _put(buf, &pos, a.meal_spent_fen)
        for i in range(1, self._merchants_max + 1):
            if self._merchants[i].opened:
                _put(buf, &pos, i)
                _put(buf, &pos, self._merchants[i].balance_fen)
        for _, t in terminals:
            term = <_Terminal>t
            k = 0
            for j in range(WINDOW_SLOTS):
                if term.seqs[j] != 0:
                    k += 1
            _put(buf, &pos, term.terminal_id)
            _put(buf, &pos, term.highest)
            _put(buf, &pos, k)
            for j in range(WINDOW_SLOTS):
                if term.seqs[j] == 0:
                    continue
                _put(buf, &pos, term.seqs[j])
                if term.outcomes[j] is None:
                    _put(buf, &pos, term.flags[j])
                else:
                    _put(buf, &pos, term.flags[j] | F_HAS_OUTCOME)
                    _put_row(buf, &pos, <Outcome>term.outcomes[j])
        for x in holds:
            h = <_Hold>x
            for v in h.as_tuple():
                _put(buf, &pos, v)
        _put(buf, &pos, zlib.crc32(memoryview(data)[:pos]))
        assert pos == size
        return data

    def restore(self, data):
        cdef const char* buf
        cdef Py_ssize_t end, pos, accounts_pos, merchants_pos
        cdef int64_t i, n, n_accounts, n_merchants, n_terminals, n_holds, lsn, v, seq, flags
        cdef int64_t previous
        cdef int version, k
        cdef Account* a
        cdef _Terminal term
        cdef _Hold h
        cdef int64_t crc
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SnapshotError("snapshot must be bytes")
        data = bytes(data)
        end = len(data)
        if end < 8 + 8 * 8 + 8:
            raise SnapshotError("snapshot truncated")
        buf = PyBytes_AS_STRING(data)
        _need(data[:4] == SNAPSHOT_MAGIC, "not a ledger snapshot (bad magic)")
        memcpy(&version, buf + 4, 4)
        _need(version == SNAPSHOT_VERSION, f"snapshot version {version}, expected {SNAPSHOT_VERSION}")
        pos = end - 8
        crc = _get(buf, end, &pos)
        _need(crc == zlib.crc32(memoryview(data)[:end - 8]), "snapshot checksum mismatch")
        end -= 8
        pos = 8
        _need(_get(buf, end, &pos) == SNAPSHOT_ENDIAN, "snapshot from a host of other byte order")
        _need(_get(buf, end, &pos) == self._accounts_max, "snapshot accounts_max differs")
        _need(_get(buf, end, &pos) == self._merchants_max, "snapshot merchants_max differs")
        lsn = _get(buf, end, &pos)
        n_accounts = _get(buf, end, &pos)
        n_merchants = _get(buf, end, &pos)
        n_terminals = _get(buf, end, &pos)
        n_holds = _get(buf, end, &pos)
        _need(lsn >= 0, "negative lsn")
        # Accounts and merchants opened since the snapshot was taken are allowed: they had no
        # journal rows before it, so their opening balances are their balances at its lsn.
        _need(n_accounts <= self._accounts_opened, "snapshot has accounts not opened here")
        _need(n_merchants <= self._merchants_opened, "snapshot has merchants not opened here")
        _need(0 <= n_terminals <= self._terminals_max, "too many terminals")
        _need(0 <= n_holds <= self._holds_max, "too many holds")
        # Pass 1: validate everything; nothing changes until the whole snapshot is known good.
        accounts_pos = pos
        previous = 0
        for n in range(n_accounts):
            i = _get(buf, end, &pos)
            if not (previous < i <= self._accounts_max and self._accounts[i].opened):
                raise SnapshotError(f"snapshot account {i} is not opened here")
            previous = i
            v = _get(buf, end, &pos)
            if not S_ACTIVE <= v <= S_CLOSED:
                raise SnapshotError(f"account {i}: bad status {v}")
            for k in range(8):
                _get(buf, end, &pos)
        merchants_pos = pos
        previous = 0
        for n in range(n_merchants):
            i = _get(buf, end, &pos)
            if not (previous < i <= self._merchants_max and self._merchants[i].opened):
                raise SnapshotError(f"snapshot merchant {i} is not opened here")
            previous = i
            _get(buf, end, &pos)
        terminals = {}
        for n in range(n_terminals):
            term = _Terminal.__new__(_Terminal)
            term.terminal_id = _get(buf, end, &pos)
            term.highest = _get(buf, end, &pos)
            _need(1 <= term.terminal_id <= C_TERMINAL_ID_MAX and term.terminal_id not in terminals,
                  "bad terminal id")
            _need(0 <= term.highest <= C_TXN_SEQ_MAX, "bad highest txn_seq")
            i = _get(buf, end, &pos)
            _need(0 <= i <= WINDOW_SLOTS, "bad window size")
            for k in range(i):
                seq = _get(buf, end, &pos)
                flags = _get(buf, end, &pos)
                _need(1 <= seq <= C_TXN_SEQ_MAX and term.seqs[seq & (WINDOW_SLOTS - 1)] == 0,
                      "bad window entry")
                _need(flags in (F_TOMBSTONE, F_HAS_OUTCOME, F_HAS_OUTCOME | F_REVERSED),
                      "bad window flags")
                term.seqs[seq & (WINDOW_SLOTS - 1)] = <uint32_t>seq
                term.flags[seq & (WINDOW_SLOTS - 1)] = <uint8_t>(flags & ~F_HAS_OUTCOME)
                if flags & F_HAS_OUTCOME:
                    row = tuple([_get(buf, end, &pos) for _ in range(ROW_FIELDS)])
                    term.outcomes[seq & (WINDOW_SLOTS - 1)] = _outcome_from_row(row)
            terminals[term.terminal_id] = term
        holds = {}
        for n in range(n_holds):
            h = _Hold.__new__(_Hold)
            h.terminal_id = _get(buf, end, &pos)
            h.txn_seq = _get(buf, end, &pos)
            h.account_id = _get(buf, end, &pos)
            h.card_no = _get(buf, end, &pos)
            h.merchant_id = _get(buf, end, &pos)
            h.amount_fen = _get(buf, end, &pos)
            h.expires_s = _get(buf, end, &pos)
            _need(1 <= h.account_id <= self._accounts_max
                  and self._accounts[h.account_id].opened, "hold of an account not opened")
            _need(1 <= h.merchant_id <= self._merchants_max
                  and self._merchants[h.merchant_id].opened, "hold of a merchant not opened")
            holds[_hold_key(h.terminal_id, h.txn_seq)] = h
        _need(pos == end, "trailing bytes in snapshot")
        # Pass 2: apply.
        pos = accounts_pos
        for n in range(n_accounts):
            a = &self._accounts[_get(buf, end, &pos)]
            a.status = <uint8_t>_get(buf, end, &pos)
            a.main_fen = _get(buf, end, &pos)
            a.subsidy_fen = _get(buf, end, &pos)
            a.held_fen = _get(buf, end, &pos)
            a.day = <int>_get(buf, end, &pos)
            a.day_spent_fen = _get(buf, end, &pos)
            a.meal_period = <int>_get(buf, end, &pos)
            a.meal_count = <int>_get(buf, end, &pos)
            a.meal_spent_fen = _get(buf, end, &pos)
        pos = merchants_pos
        for n in range(n_merchants):
            i = _get(buf, end, &pos)
            self._merchants[i].balance_fen = _get(buf, end, &pos)
        self._terminals = terminals
        self._holds = holds
        self._lsn = lsn

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
