-- OneCard schema, version 12: finance. The bank's daily top-up file and its reconciliation
-- with our top-ups (docs/finance.md), and the document type that resolves a difference.
--
-- Shared with the branch that adds bank top-ups (issue 11, section 2): `bank_topups` and the
-- system account purpose 'bank_clearing' are that branch's. Until it lands they are created
-- here, guarded, with exactly the columns agreed; the coordinator keeps one definition.

CREATE TABLE IF NOT EXISTS bank_topups (
    id            bigserial PRIMARY KEY,
    tenant_id     integer  NOT NULL REFERENCES tenants (id),
    terminal_id   integer  NOT NULL,
    txn_seq       bigint   NOT NULL,
    account_id    integer  NOT NULL,
    card_no       bigint   NOT NULL,
    bank_card_id  integer,
    amount_fen    bigint   NOT NULL CHECK (amount_fen > 0),
    stan          integer  NOT NULL,
    rrn           text     NOT NULL UNIQUE,
    state         text     NOT NULL CHECK (state IN ('sent', 'approved', 'declined', 'unknown',
                                                    'reversal_pending', 'reversed', 'exception')),
    field39       text,
    lsn           bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS bank_topups_tenant_created ON bank_topups (tenant_id, created_at);

-- Widen a CHECK of the form `col IN (...)` by one value, keeping whatever other migrations
-- (other branches) added: idempotent, never narrows (the settlement migration's function).
CREATE OR REPLACE FUNCTION pg_temp.widen_check(tbl regclass, cname text, col text, val text)
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

SELECT pg_temp.widen_check('system_accounts', 'system_accounts_purpose_check', 'purpose',
                           'bank_clearing');
-- A difference with the bank is resolved by a document of type 'reconciliation': one line
-- (credit from, or debit to, the tenant's bank clearing account) or none (a write-off).
SELECT pg_temp.widen_check('documents', 'documents_doc_type_check', 'doc_type',
                           'reconciliation');
SELECT pg_temp.widen_check('approval_policies', 'approval_policies_doc_type_check', 'doc_type',
                           'reconciliation');

-- One bank file per tenant and business day, as imported (its SHA-256: the same file again
-- answers the first import; another file for the day is refused). The counts are the result
-- of matching it, by RRN, against our top-ups of that day.
CREATE TABLE bank_files (
    id              serial   PRIMARY KEY,
    tenant_id       integer  NOT NULL REFERENCES tenants (id),
    business_date   date     NOT NULL,
    file_sha256     bytea    NOT NULL,
    lines_count     integer  NOT NULL,
    total_fen       bigint   NOT NULL,
    matched         integer  NOT NULL,
    ours_only       integer  NOT NULL,
    bank_only       integer  NOT NULL,
    amount_differs  integer  NOT NULL,
    imported_by     text     NOT NULL,
    imported_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, business_date)
);

CREATE TABLE bank_file_lines (
    file_id      integer  NOT NULL REFERENCES bank_files (id),
    line_no      integer  NOT NULL,
    rrn          text     NOT NULL,
    stan         integer  NOT NULL,
    terminal_id  bigint   NOT NULL,
    card_token   text     NOT NULL,
    amount_fen   bigint   NOT NULL,
    field39      text     NOT NULL,
    auth_code    text     NOT NULL,
    PRIMARY KEY (file_id, line_no),
    UNIQUE (file_id, rrn)
);

-- A difference: a top-up only we have (credited, not on the bank's file), only the bank has
-- (on its file, not credited here: an answer lost in transit), or both with other amounts.
-- One per RRN, ever: a second file naming the RRN finds the same exception. Its state is its
-- resolving document's (none, rejected or failed: open; pending: resolving; executed:
-- resolved), so money moves only through that document, once.
CREATE TABLE reconciliation_exceptions (
    id               serial   PRIMARY KEY,
    file_id          integer  NOT NULL REFERENCES bank_files (id),
    tenant_id        integer  NOT NULL REFERENCES tenants (id),
    node_path        integer[] NOT NULL,
    business_date    date     NOT NULL,
    kind             text     NOT NULL CHECK (kind IN ('ours_only', 'bank_only',
                                                       'amount_differs')),
    rrn              text     NOT NULL UNIQUE,
    topup_id         bigint,
    topup_state      text,
    account_id       integer,
    card_no          bigint,
    bank_amount_fen  bigint   NOT NULL,
    our_amount_fen   bigint   NOT NULL,
    document_id      integer  REFERENCES documents (id),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reconciliation_exceptions_tenant ON reconciliation_exceptions (tenant_id, id);
CREATE UNIQUE INDEX reconciliation_exceptions_document ON reconciliation_exceptions
    (document_id) WHERE document_id IS NOT NULL;
