# Declarations of the balance cache: the fixed-width C records and the cdef classes.
# The layout of these structs is private; the snapshot format is defined in _snapshot.pxi.
cimport cython
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef enum:
    WINDOW_SLOTS = 256          # TERMINAL_WINDOW_MAX; a power of two (slot = txn_seq & 255)
    MEAL_WINDOW_SLOTS = 8       # MEAL_WINDOWS_MAX

# One cardholder: 64 bytes. Holds reserve the MAIN wallet only (available = main - held).
ctypedef struct Account:
    int64_t main_fen
    int64_t subsidy_fen
    int64_t held_fen
    int64_t day_spent_fen       # spent on local day `day`
    int64_t meal_spent_fen      # spent in meal period `meal_period`
    int32_t day                 # local day of day_spent_fen, -1 = none
    int32_t meal_period         # local_day * 8 + window index, -1 = none
    int32_t meal_count
    uint16_t tenant_id
    uint8_t status
    uint8_t class_id
    uint8_t opened
    uint8_t pad0
    uint16_t pad1

ctypedef struct Merchant:
    int64_t balance_fen
    int64_t fixed_amount_fen
    uint16_t tenant_id
    uint8_t mode
    uint8_t spend_order
    uint8_t opened

ctypedef struct IdentityClass:
    int64_t overdraft_fen
    int64_t txn_limit_fen
    int64_t daily_limit_fen
    int64_t meal_amount_max_fen
    int64_t meal_count_max

ctypedef struct Tenant:
    int32_t utc_offset_s
    int32_t meal_window_count
    int16_t meal_start_minute[MEAL_WINDOW_SLOTS]
    int16_t meal_end_minute[MEAL_WINDOW_SLOTS]

# Open-addressing (linear probing) card index: card_no 0 marks an empty slot. Cards are never
# deleted (a cancelled card stays, state CARD_STATE_CANCELLED), so no tombstones are needed.
ctypedef struct CardSlot:
    uint64_t card_no
    int32_t account_id
    int32_t state


cdef class Outcome:
    cdef readonly int64_t lsn
    cdef readonly int64_t kind
    cdef readonly int64_t code
    cdef readonly bint repeat
    cdef readonly int64_t terminal_id
    cdef readonly int64_t txn_seq
    cdef readonly int64_t ref_txn_seq
    cdef readonly int64_t card_no
    cdef readonly int64_t account_id
    cdef readonly int64_t merchant_id
    cdef readonly int64_t tenant_id
    cdef readonly int64_t merchant_tenant_id
    cdef readonly int64_t amount_fen
    cdef readonly int64_t main_delta_fen
    cdef readonly int64_t subsidy_delta_fen
    cdef readonly int64_t merchant_delta_fen
    cdef readonly int64_t held_delta_fen
    cdef readonly int64_t main_fen
    cdef readonly int64_t subsidy_fen
    cdef readonly int64_t expires_s
    cdef readonly int64_t now_s


# Idempotency window of one terminal: slot = txn_seq & 255.
cdef class _Terminal:
    cdef int64_t terminal_id
    cdef int64_t highest
    cdef uint32_t seqs[WINDOW_SLOTS]
    cdef uint8_t flags[WINDOW_SLOTS]
    cdef list outcomes


cdef class _Hold:
    cdef int64_t terminal_id
    cdef int64_t txn_seq
    cdef int64_t account_id
    cdef int64_t card_no
    cdef int64_t merchant_id
    cdef int64_t amount_fen
    cdef int64_t expires_s


# The balance cache is one class built up in three, one file each (see _ledger.pyx).
cdef class _Tables:
    cdef Account* _accounts
    cdef Merchant* _merchants
    cdef CardSlot* _cards
    cdef IdentityClass _classes[256]
    cdef Tenant* _tenants
    cdef int64_t _accounts_max
    cdef int64_t _merchants_max
    cdef int64_t _cards_max
    cdef int64_t _holds_max
    cdef int64_t _terminals_max
    cdef uint64_t _card_mask
    cdef int64_t _card_count
    cdef int64_t _cards_cancelled
    cdef int64_t _accounts_opened
    cdef int64_t _merchants_opened
    cdef int64_t _lsn
    cdef dict _terminals
    cdef dict _holds
    cdef uint8_t* _cross_tenant      # bitset over (card tenant, merchant tenant), lazily allocated

    @cython.final
    cdef CardSlot* _card_find(self, uint64_t card_no) noexcept
    @cython.final
    cdef int _card_grow(self) except -1
    @cython.final
    cdef Account* _opened_account(self, int64_t account_id) except NULL
    @cython.final
    cdef bint _serves(self, uint16_t card_tenant_id, uint16_t merchant_tenant_id) noexcept


cdef class _Decisions(_Tables):
    @cython.final
    cdef _Terminal _terminal(self, int64_t terminal_id)
    @cython.final
    cdef Outcome _admit(self, _Terminal term, int64_t kind, int64_t txn_seq, int64_t ref_txn_seq,
                        int64_t card_no, int64_t account_id, int64_t merchant_id,
                        int64_t amount_fen, int64_t now_s, int64_t* code)
    @cython.final
    cdef Outcome _emit(self, int64_t kind, int64_t code, int64_t terminal_id, int64_t txn_seq,
                       int64_t ref_txn_seq, int64_t card_no, int64_t account_id,
                       int64_t merchant_id, int64_t amount_fen, int64_t main_delta_fen,
                       int64_t subsidy_delta_fen, int64_t held_delta_fen, int64_t expires_s,
                       int64_t now_s, bint journaled)
    @cython.final
    cdef void _store(self, _Terminal term, int64_t txn_seq, Outcome outcome) noexcept
    @cython.final
    cdef int _status_code(self, int32_t account_id, CardSlot* card, int64_t merchant_id,
                          bint credit) noexcept
    @cython.final
    cdef void _count_spend(self, Account* acc, int64_t amount_fen, int64_t now_s) noexcept
    @cython.final
    cdef Outcome _reverse(self, int64_t terminal_id, int64_t txn_seq, int64_t original_txn_seq,
                          int64_t card_no, int64_t amount_fen, int64_t now_s, bint looked_up,
                          Outcome journal_original, bint journal_reversed)
    @cython.final
    cdef int64_t _undo(self, Outcome orig, int64_t card_no, int64_t amount_fen, int64_t* amount,
                       int64_t* md, int64_t* sd) noexcept
    @cython.final
    cdef Outcome _finish_hold(self, int64_t kind, int64_t terminal_id, int64_t txn_seq,
                              int64_t hold_txn_seq, int64_t amount_fen, int64_t now_s)


cdef class Ledger(_Decisions):
    pass
