-- OneCard schema, version 11: business days, cutover and settlement (docs/settlement.md).
--
-- A tenant's business day ends at its cutover time (`tenants.cutover_s`, seconds after local
-- midnight; local = UTC + utc_offset_s). A journal row belongs to the business day that holds
-- its `committed_at`. A day's settlement is computed from the journal alone
-- (admin_api/settlement); confirming it is an approved document (doc_type 'settlement'), which
-- freezes the figures stored here and pays each merchant's net through the switch.

ALTER TABLE tenants
    ADD COLUMN cutover_s integer NOT NULL DEFAULT 0 CHECK (cutover_s BETWEEN 0 AND 86399);

-- Widen a CHECK of the form `col = ANY (ARRAY[...])` / `col IN (...)` by one value, keeping
-- whatever other migrations (other branches) added: idempotent, never narrows.
CREATE FUNCTION pg_temp.widen_check(tbl regclass, cname text, col text, val text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    def text;
    vals text[];
BEGIN
    SELECT pg_get_constraintdef(oid) INTO def FROM pg_constraint
        WHERE conrelid = tbl AND conname = cname;
    IF def IS NULL THEN
        RAISE EXCEPTION 'no constraint % on %', cname, tbl;
    END IF;
    IF position(quote_literal(val) IN def) > 0 THEN
        RETURN;
    END IF;
    SELECT array_agg(m[1] ORDER BY n) INTO vals
        FROM regexp_matches(def, '''([a-z_]+)''', 'g') WITH ORDINALITY AS t(m, n);
    vals := vals || val;
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', tbl, cname);
    EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I CHECK (%I IN (%s))', tbl, cname, col,
                   (SELECT string_agg(quote_literal(v), ', ') FROM unnest(vals) AS v));
END
$$;

-- The bank clearing account (the topup branch adds the same purpose; whichever runs second
-- finds it there). Settlement pays merchants out to it.
SELECT pg_temp.widen_check('system_accounts', 'system_accounts_purpose_check', 'purpose',
                           'bank_clearing');
SELECT pg_temp.widen_check('documents', 'documents_doc_type_check', 'doc_type', 'settlement');
SELECT pg_temp.widen_check('approval_policies', 'approval_policies_doc_type_check', 'doc_type',
                           'settlement');

-- What a payout moves through, per tenant. The switch moves money only between a card's
-- wallets and a merchant account, so merchant -> bank clearing is two requests of the admin
-- terminal through a transit account (a card of the tenant's, no person): credit it from the
-- merchant, then debit it to the bank clearing account. Its balance is 0 between payouts.
-- fee_merchant_id: the system account that receives the fees (fee_rate_bp) taken from sales.
CREATE TABLE settlement_accounts (
    tenant_id          integer PRIMARY KEY REFERENCES tenants (id),
    transit_account_id integer NOT NULL UNIQUE REFERENCES accounts (id),
    transit_card_no    bigint  NOT NULL UNIQUE REFERENCES cards (card_no),
    fee_merchant_id    integer NOT NULL UNIQUE REFERENCES merchants (id)
);

-- One settlement per tenant and business day. `figures` is the canonical JSON of the
-- computation (admin_api/settlement `Settlement`, byte for byte what the API and
-- `onecard settle` return), `figures_sha256` its SHA-256. status: 'pending' while its
-- confirmation document waits for approval; 'confirmed' once approved: frozen (the trigger
-- below refuses any change or removal).
CREATE TABLE settlements (
    tenant_id       integer NOT NULL REFERENCES tenants (id),
    business_day    date    NOT NULL,
    start_at        timestamptz NOT NULL,
    end_at          timestamptz NOT NULL,
    status          text    NOT NULL CHECK (status IN ('pending', 'confirmed')),
    document_id     integer NOT NULL REFERENCES documents (id),
    figures         text    NOT NULL,
    figures_sha256  bytea   NOT NULL,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    confirmed_at    timestamptz,
    PRIMARY KEY (tenant_id, business_day),
    CHECK (start_at < end_at),
    CHECK ((status = 'confirmed') = (confirmed_at IS NOT NULL))
);
CREATE UNIQUE INDEX settlements_document ON settlements (document_id);

CREATE FUNCTION settlements_frozen() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'confirmed' THEN
        RAISE EXCEPTION 'the settlement of tenant % for % is confirmed: frozen',
            OLD.tenant_id, OLD.business_day USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
CREATE TRIGGER settlements_frozen BEFORE UPDATE OR DELETE ON settlements
    FOR EACH ROW EXECUTE FUNCTION settlements_frozen();

-- Per merchant and day, as settled (copied from `figures` for SQL readers: finance pages,
-- exports). net_fen is payable on due_on (the merchant's settlement_cycle: daily = the day,
-- weekly = the Sunday of its ISO week, monthly = the month's last day); paid_by the document
-- whose payout carried it (NULL: not yet paid; a merchant whose due nets are <= 0 in total
-- carries them forward).
CREATE TABLE settlement_merchants (
    tenant_id        integer NOT NULL,
    business_day     date    NOT NULL,
    merchant_id      integer NOT NULL REFERENCES merchants (id),
    count            integer NOT NULL,
    gross_fen        bigint  NOT NULL,
    reversal_count   integer NOT NULL,
    reversals_fen    bigint  NOT NULL,
    fee_rate_bp      integer NOT NULL,
    fee_fen          bigint  NOT NULL,
    net_fen          bigint  NOT NULL,
    settlement_cycle text    NOT NULL,
    due_on           date    NOT NULL,
    paid_by          integer REFERENCES documents (id),
    PRIMARY KEY (tenant_id, business_day, merchant_id),
    FOREIGN KEY (tenant_id, business_day) REFERENCES settlements (tenant_id, business_day)
        ON DELETE CASCADE
);
CREATE INDEX settlement_merchants_unpaid ON settlement_merchants (tenant_id, due_on)
    WHERE paid_by IS NULL;

-- Clearing between tenants in one tenant's day: cards of card_tenant_id spent amount_fen
-- (purchases + captures - reversals) at merchants of merchant_tenant_id.
CREATE TABLE settlement_clearing (
    tenant_id           integer NOT NULL,
    business_day        date    NOT NULL,
    card_tenant_id      integer NOT NULL,
    merchant_tenant_id  integer NOT NULL,
    count               integer NOT NULL,
    amount_fen          bigint  NOT NULL,
    PRIMARY KEY (tenant_id, business_day, card_tenant_id, merchant_tenant_id),
    FOREIGN KEY (tenant_id, business_day) REFERENCES settlements (tenant_id, business_day)
        ON DELETE CASCADE
);

-- The payout movements of a confirmed settlement's document: each chunk (at most
-- AMOUNT_FEN_MAX) is two requests of the admin terminal, leg 1 (credit the transit card from
-- the merchant) then leg 2 (debit it to the target: bank clearing for the net, the fee account
-- for the fee). txn_seqs are drawn when the document is approved, so executing again moves
-- nothing twice.
CREATE TABLE settlement_payouts (
    document_id   integer  NOT NULL REFERENCES documents (id),
    line_no       integer  NOT NULL,
    merchant_id   integer  NOT NULL REFERENCES merchants (id),
    leg           smallint NOT NULL CHECK (leg IN (1, 2)),
    target        text     NOT NULL CHECK (target IN ('bank_clearing', 'fee')),
    counter_merchant_id integer NOT NULL REFERENCES merchants (id),
    amount_fen    bigint   NOT NULL CHECK (amount_fen > 0),
    terminal_id   integer  NOT NULL,
    txn_seq       bigint   NOT NULL,
    result_code   smallint,
    PRIMARY KEY (document_id, line_no)
);
