# Decisions of the balance cache: admission of a request key, then one method per request type.
# Included by _ledger.pyx.


cdef class _Decisions(_Tables):
    """Every decision; see _ledger.pyi for the contract and tests/ledger_model.py for the spec."""

    # ----------------------------------------------------------------------------- internals

    @cython.final
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

    @cython.final
    cdef Outcome _admit(self, _Terminal term, int64_t kind, int64_t txn_seq, int64_t ref_txn_seq,
                        int64_t card_no, int64_t account_id, int64_t merchant_id,
                        int64_t amount_fen, int64_t now_s, int64_t* code):
        """Admission of the key (terminal, txn_seq), the first step of every decision.

        repeat (the slot holds this txn_seq): a copy of its stored Outcome, repeat=True;
        too old (txn_seq <= highest - 256, not in the window): TXN_SEQ_TOO_OLD, lsn 0, nothing
        stored or journaled. Either is the answer and is returned. Otherwise None, and `code`
        is what the decision starts from: ALREADY_REVERSED for a tombstone (a reversal named
        this txn_seq before it arrived), APPROVED for a new key. The other arguments describe
        the request for the TXN_SEQ_TOO_OLD Outcome.
        """
        cdef int slot = txn_seq & (WINDOW_SLOTS - 1)
        if term.seqs[slot] == txn_seq:
            if not (term.flags[slot] & F_TOMBSTONE):
                return _copy_repeat(<Outcome>term.outcomes[slot])
            code[0] = C_ALREADY_REVERSED
            return None
        if txn_seq + WINDOW_SLOTS <= term.highest:
            return self._emit(kind, C_TXN_SEQ_TOO_OLD, term.terminal_id, txn_seq, ref_txn_seq,
                              card_no, account_id, merchant_id, amount_fen, 0, 0, 0, 0, now_s,
                              False)
        code[0] = C_APPROVED
        return None

    @cython.final
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

    @cython.final
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

    @cython.final
    cdef int _status_code(self, int32_t account_id, CardSlot* card, int64_t merchant_id,
                          bint credit) noexcept:
        cdef Merchant* m = &self._merchants[merchant_id]
        cdef Account* a
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
        if not self._serves(a.tenant_id, m.tenant_id):
            return C_CROSS_TENANT_NOT_ALLOWED
        return C_APPROVED

    @cython.final
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
        card = self._card_find(<uint64_t>card_no)
        if card != NULL:
            account_id = card.account_id
        o = self._admit(term, K_PURCHASE, txn_seq, 0, card_no, account_id, merchant_id,
                        amount_fen, now_s, &code)
        if o is not None:
            return o
        if code == C_APPROVED:
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
        return self._reverse(terminal_id, txn_seq, original_txn_seq, card_no, amount_fen, now_s,
                             False, None, False)

    def reverse_journaled(self, int64_t terminal_id, int64_t txn_seq, int64_t original_txn_seq,
                          int64_t card_no, int64_t amount_fen, int64_t now_s, original,
                          bint original_reversed):
        """reverse(), told by the journal what the window no longer holds: the original's
        journal row (None if the journal has none) and whether a reversal of it is journaled."""
        cdef Outcome orig = None
        if original is not None:
            if len(original) != ROW_FIELDS:
                raise LedgerArgumentError(f"original has {len(original)} fields, not {ROW_FIELDS}")
            orig = _outcome_from_row(tuple(original))
            if orig.terminal_id != terminal_id or orig.txn_seq != original_txn_seq:
                raise LedgerArgumentError("original is not the journal row of original_txn_seq")
            if orig.kind == K_PURCHASE and orig.code == C_APPROVED:
                self._opened_account(orig.account_id)
                if not (1 <= orig.merchant_id <= self._merchants_max
                        and self._merchants[orig.merchant_id].opened):
                    raise LedgerArgumentError(f"original merchant {orig.merchant_id} not opened")
        return self._reverse(terminal_id, txn_seq, original_txn_seq, card_no, amount_fen, now_s,
                             True, orig, original_reversed)

    @cython.final
    cdef Outcome _reverse(self, int64_t terminal_id, int64_t txn_seq, int64_t original_txn_seq,
                          int64_t card_no, int64_t amount_fen, int64_t now_s, bint looked_up,
                          Outcome journal_original, bint journal_reversed):
        """Both reversals. An original older than the window is TXN_SEQ_TOO_OLD (not journaled)
        unless `looked_up`: then the journal's word decides it."""
        cdef _Terminal term
        cdef int oslot
        cdef int64_t code
        cdef CardSlot* card
        cdef int32_t account_id = 0
        cdef int64_t merchant_id = 0, amount = amount_fen, md = 0, sd = 0
        cdef Outcome orig, o
        _check_key(terminal_id, txn_seq)
        _check_key(terminal_id, original_txn_seq)
        _check_card_no(card_no)
        _check_time(now_s, "now_s")
        if original_txn_seq >= txn_seq:
            raise LedgerArgumentError(
                f"original_txn_seq {original_txn_seq} is not below txn_seq {txn_seq}")

        term = self._terminal(terminal_id)
        card = self._card_find(<uint64_t>card_no)
        if card != NULL:
            account_id = card.account_id
        o = self._admit(term, K_REVERSAL, txn_seq, original_txn_seq, card_no, account_id, 0,
                        amount_fen, now_s, &code)
        if o is not None:
            return o
        oslot = original_txn_seq & (WINDOW_SLOTS - 1)
        if code != C_APPROVED:
            pass                                        # a tombstone: ALREADY_REVERSED
        elif term.seqs[oslot] == original_txn_seq:      # in the window
            if term.flags[oslot] & (F_TOMBSTONE | F_REVERSED):
                code = C_ALREADY_REVERSED
            else:
                orig = <Outcome>term.outcomes[oslot]
                merchant_id = orig.merchant_id
                code = self._undo(orig, card_no, amount_fen, &amount, &md, &sd)
                if code == C_APPROVED:
                    term.flags[oslot] |= F_REVERSED
        elif original_txn_seq + WINDOW_SLOTS > term.highest:
            # Never seen: a tombstone, so the late original declines ALREADY_REVERSED (or, once
            # below the window, is TXN_SEQ_TOO_OLD and not in the journal): never charged.
            code = C_ORIGINAL_NOT_FOUND
            term.seqs[oslot] = <uint32_t>original_txn_seq
            term.flags[oslot] = F_TOMBSTONE
            term.outcomes[oslot] = None
        elif not looked_up:
            return self._emit(K_REVERSAL, C_TXN_SEQ_TOO_OLD, terminal_id, txn_seq,
                              original_txn_seq, card_no, account_id, 0, amount_fen, 0, 0, 0, 0,
                              now_s, False)
        elif journal_reversed:
            code = C_ALREADY_REVERSED
        elif journal_original is None:
            code = C_ORIGINAL_NOT_FOUND     # too old to be admitted now: no tombstone needed
        else:
            merchant_id = journal_original.merchant_id
            code = self._undo(journal_original, card_no, amount_fen, &amount, &md, &sd)
        o = self._emit(K_REVERSAL, code, terminal_id, txn_seq, original_txn_seq, card_no,
                       account_id, merchant_id, amount if code == C_APPROVED else amount_fen,
                       md, sd, 0, 0, now_s, True)
        self._store(term, txn_seq, o)
        return o

    @cython.final
    cdef int64_t _undo(self, Outcome orig, int64_t card_no, int64_t amount_fen, int64_t* amount,
                       int64_t* md, int64_t* sd) noexcept:
        """The decision on reversing `orig`, found and not yet reversed; APPROVED gives its
        money back to the wallets it came from (the amount and deltas are set)."""
        cdef Account* acc
        cdef Merchant* m
        if orig.kind != K_PURCHASE or orig.card_no != card_no:
            return C_REVERSAL_MISMATCH
        if orig.code != C_APPROVED:
            amount[0] = 0                   # nothing was taken: nothing to return
            return C_APPROVED
        if amount_fen != 0 and amount_fen != orig.amount_fen:
            return C_REVERSAL_MISMATCH
        acc = &self._accounts[orig.account_id]
        m = &self._merchants[orig.merchant_id]
        if (acc.main_fen - orig.main_delta_fen > C_BALANCE_FEN_MAX
                or acc.subsidy_fen - orig.subsidy_delta_fen > C_BALANCE_FEN_MAX
                or m.balance_fen - orig.amount_fen < -C_MERCHANT_BALANCE_FEN_MAX):
            return C_BALANCE_LIMIT_EXCEEDED
        md[0] = -orig.main_delta_fen
        sd[0] = -orig.subsidy_delta_fen
        amount[0] = orig.amount_fen
        acc.main_fen += md[0]
        acc.subsidy_fen += sd[0]
        m.balance_fen -= orig.amount_fen
        return C_APPROVED

    def inquire(self, int64_t terminal_id, int64_t txn_seq, int64_t card_no,
                int64_t merchant_id, int64_t now_s):
        cdef _Terminal term
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
        card = self._card_find(<uint64_t>card_no)
        if card != NULL:
            account_id = card.account_id
        o = self._admit(term, K_INQUIRY, txn_seq, 0, card_no, account_id, merchant_id, 0, now_s,
                        &code)
        if o is not None:
            return o
        if code == C_APPROVED:
            code = self._status_code(account_id, card, merchant_id, False)
        o = self._emit(K_INQUIRY, code, terminal_id, txn_seq, 0, card_no, account_id,
                       merchant_id, 0, 0, 0, 0, 0, now_s, True)
        self._store(term, txn_seq, o)
        return o

    def credit(self, int64_t terminal_id, int64_t txn_seq, int64_t card_no,
               int64_t from_merchant_id, int64_t wallet, int64_t amount_fen, int64_t now_s):
        cdef _Terminal term
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
        card = self._card_find(<uint64_t>card_no)
        if card != NULL:
            account_id = card.account_id
        o = self._admit(term, K_CREDIT, txn_seq, 0, card_no, account_id, from_merchant_id, amount_fen,
                        now_s, &code)
        if o is not None:
            return o
        if code == C_APPROVED:
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
        card = self._card_find(<uint64_t>card_no)
        if card != NULL:
            account_id = card.account_id
        o = self._admit(term, K_DEBIT, txn_seq, 0, card_no, account_id, to_merchant_id, amount_fen,
                        now_s, &code)
        if o is not None:
            return o
        if code == C_APPROVED:
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
        card = self._card_find(<uint64_t>card_no)
        if card != NULL:
            account_id = card.account_id
        o = self._admit(term, K_TRANSFER, txn_seq, 0, card_no, account_id, merchant_id, amount_fen,
                        now_s, &code)
        if o is not None:
            return o
        if code == C_APPROVED:
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
        card = self._card_find(<uint64_t>card_no)
        if card != NULL:
            account_id = card.account_id
        o = self._admit(term, K_HOLD, txn_seq, 0, card_no, account_id, merchant_id, amount_fen,
                        now_s, &code)
        if o is not None:
            return o
        if code == C_APPROVED:
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

    @cython.final
    cdef Outcome _finish_hold(self, int64_t kind, int64_t terminal_id, int64_t txn_seq,
                              int64_t hold_txn_seq, int64_t amount_fen, int64_t now_s):
        """capture (kind CAPTURE, amount_fen >= 0) or release (kind RELEASE) of one hold."""
        cdef _Terminal term = self._terminal(terminal_id)
        cdef int64_t code, card_no = 0, account_id = 0, merchant_id = 0
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
        o = self._admit(term, kind, txn_seq, hold_txn_seq, card_no, account_id, merchant_id,
                        amount_fen, now_s, &code)
        if o is not None:
            return o
        if code == C_APPROVED:
            if h is None:
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

