# Constants of the balance cache: limits, money bounds, codes, kinds and the other enumerations.
# Included by _ledger.pyx. Each number is written once: in a C enum (what the decisions test)
# or as a Python int (a limit); the Python enums and module constants are made from the tables.

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

# The code table: every enum class below and its members as module constants (APPROVED, ...).
_TABLES = {
    "Code": (
        ("APPROVED", C_APPROVED), ("INVALID_MERCHANT", C_INVALID_MERCHANT),
        ("INVALID_AMOUNT", C_INVALID_AMOUNT), ("UNKNOWN_CARD", C_UNKNOWN_CARD),
        ("ORIGINAL_NOT_FOUND", C_ORIGINAL_NOT_FOUND), ("ALREADY_REVERSED", C_ALREADY_REVERSED),
        ("REVERSAL_MISMATCH", C_REVERSAL_MISMATCH), ("HOLD_NOT_FOUND", C_HOLD_NOT_FOUND),
        ("CAPTURE_EXCEEDS_HOLD", C_CAPTURE_EXCEEDS_HOLD),
        ("HOLDS_LIMIT_EXCEEDED", C_HOLDS_LIMIT_EXCEEDED), ("CARD_LOST", C_CARD_LOST),
        ("CARD_CANCELLED", C_CARD_CANCELLED), ("ACCOUNT_CLOSED", C_ACCOUNT_CLOSED),
        ("ACCOUNT_FROZEN", C_ACCOUNT_FROZEN), ("INSUFFICIENT_FUNDS", C_INSUFFICIENT_FUNDS),
        ("CROSS_TENANT_NOT_ALLOWED", C_CROSS_TENANT_NOT_ALLOWED),
        ("TXN_LIMIT_EXCEEDED", C_TXN_LIMIT_EXCEEDED),
        ("DAILY_LIMIT_EXCEEDED", C_DAILY_LIMIT_EXCEEDED),
        ("MEAL_AMOUNT_LIMIT_EXCEEDED", C_MEAL_AMOUNT_LIMIT_EXCEEDED),
        ("MEAL_COUNT_LIMIT_EXCEEDED", C_MEAL_COUNT_LIMIT_EXCEEDED),
        ("BALANCE_LIMIT_EXCEEDED", C_BALANCE_LIMIT_EXCEEDED),
        ("TXN_SEQ_TOO_OLD", C_TXN_SEQ_TOO_OLD),
    ),
    "Kind": (
        ("PURCHASE", K_PURCHASE), ("REVERSAL", K_REVERSAL), ("INQUIRY", K_INQUIRY),
        ("HOLD", K_HOLD), ("CAPTURE", K_CAPTURE), ("RELEASE", K_RELEASE), ("EXPIRY", K_EXPIRY),
        ("CREDIT", K_CREDIT), ("DEBIT", K_DEBIT), ("TRANSFER", K_TRANSFER),
    ),
    "AccountStatus": (
        ("ACTIVE", S_ACTIVE), ("FROZEN", S_FROZEN), ("LOST", S_LOST), ("CLOSED", S_CLOSED),
    ),
    "MerchantMode": (("FREE", M_FREE), ("FIXED", M_FIXED)),
    "SpendOrder": (
        ("SUBSIDY_FIRST", O_SUBSIDY_FIRST), ("MAIN_FIRST", O_MAIN_FIRST),
        ("MAIN_ONLY", O_MAIN_ONLY),
    ),
    "Wallet": (("MAIN", W_MAIN), ("SUBSIDY", W_SUBSIDY)),
}
_DOCS = {
    "Code": "Decision codes; the numbers are the protocol's response codes.",
    "Kind": "What an Outcome records (the journal's `kind` column).",
}
for _name, _members in _TABLES.items():
    globals()[_name] = enum.IntEnum(_name, _members, module=__name__)
    if _name in _DOCS:
        globals()[_name].__doc__ = _DOCS[_name]
    globals().update(_members)

JOURNAL_COLUMNS = (
    "lsn", "kind", "code", "terminal_id", "txn_seq", "ref_txn_seq", "card_no", "account_id",
    "merchant_id", "tenant_id", "merchant_tenant_id", "amount_fen", "main_delta_fen",
    "subsidy_delta_fen", "merchant_delta_fen", "held_delta_fen", "main_fen", "subsidy_fen",
    "expires_s", "now_s",
)
# The width in bytes of each journal column in PostgreSQL (bigint 8, integer 4, smallint 2):
# the binary COPY record of `Outcome.copy_record()` and migrations/sql/0001_initial.sql agree
# on it (tests/test_journal_copy.py checks the table's types against it).
JOURNAL_COLUMN_WIDTHS = (8, 2, 2, 4, 8, 8, 8, 4, 4, 4, 4, 8, 8, 8, 8, 8, 8, 8, 8, 8)
JOURNAL_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)   # signature, flags 0, no extension
JOURNAL_COPY_TRAILER = b"\xff\xff"                            # field count -1: end of data

cdef enum:
    COPY_RECORD_BYTES = 210   # field count (2) + 20 x length (4) + the widths (128)
cdef int _COPY_WIDTHS[20]
_COPY_WIDTHS[:] = JOURNAL_COLUMN_WIDTHS
assert len(JOURNAL_COLUMN_WIDTHS) == len(JOURNAL_COLUMNS) == 20
assert 2 + 4 * 20 + sum(JOURNAL_COLUMN_WIDTHS) == COPY_RECORD_BYTES

SNAPSHOT_MAGIC = b"OCLG"
SNAPSHOT_VERSION = 1
cdef int64_t SNAPSHOT_ENDIAN = 0x0102030405060708
cdef int ROW_FIELDS = 20
