# Snapshot, restore and journal replay of the balance cache. Included by _ledger.pyx.


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
cdef class Ledger(_Decisions):
    """The balance cache. See _ledger.pyi for the contract."""

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
        elif (kind == K_REVERSAL and code == C_ORIGINAL_NOT_FOUND
                and ref + WINDOW_SLOTS > term.highest):   # live, an older one left no tombstone
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

