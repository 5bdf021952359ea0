-- OneCard schema, version 11: finance. The bank's daily top-up file and its reconciliation
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

ALTER TABLE system_accounts
    DROP CONSTRAINT IF EXISTS system_accounts_purpose_check,
    ADD CONSTRAINT system_accounts_purpose_check CHECK (purpose IN (
        'cash_desk', 'subsidy_fund', 'adjustments', 'bank_clearing'));

-- A difference with the bank is resolved by a document of type 'reconciliation': one line
-- (credit from, or debit to, the tenant's bank clearing account) or none (a write-off).
ALTER TABLE documents
    DROP CONSTRAINT documents_doc_type_check,
    ADD CONSTRAINT documents_doc_type_check CHECK (doc_type IN (
        'refund', 'adjustment', 'subsidy_batch', 'cancellation', 'reconciliation'));
ALTER TABLE approval_policies
    DROP CONSTRAINT approval_policies_doc_type_check,
    ADD CONSTRAINT approval_policies_doc_type_check CHECK (doc_type IN (
        'refund', 'adjustment', 'subsidy_batch', 'cancellation', 'reconciliation'));

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
