-- OneCard schema, version 6: money at the counter and documents with multi-level approval.
-- The admin API never writes a balance: it asks the switch, as the site's admin terminal, and
-- keeps here only what it asked (txn_seq) and what it was told (the answer).

-- Each tenant's system accounts (merchants of kind 'system') that pay or receive counter money:
-- the cash desk (cash top-ups in, refunds out), the subsidy fund (subsidy batches), and
-- adjustments (manual corrections, both ways).
CREATE TABLE system_accounts (
    tenant_id    integer NOT NULL REFERENCES tenants (id),
    purpose      text    NOT NULL CHECK (purpose IN ('cash_desk', 'subsidy_fund', 'adjustments')),
    merchant_id  integer NOT NULL UNIQUE REFERENCES merchants (id),
    PRIMARY KEY (tenant_id, purpose)
);

-- txn_seq of the admin terminal's requests, drawn here so that no two are ever the same, even
-- across admin API processes and restarts; kept above what the switch journaled (at start-up).
CREATE SEQUENCE admin_txn_seq AS bigint MINVALUE 1;

-- A money request's idempotency: the key a client sent, what the request was, which txn_seq
-- carries it to the switch (stored BEFORE the switch is asked, so a retry reuses it), and the
-- answer once there is one.
ALTER TABLE idempotency_keys
    ADD COLUMN terminal_id integer,
    ADD COLUMN txn_seq     bigint;

-- Documents (单据): refunds, manual adjustments, subsidy batches and cancellations with refund.
-- status: draft -> submitted -> (approved -> executed | failed) | rejected -> (revised) draft.
CREATE TABLE documents (
    id            serial   PRIMARY KEY,
    tenant_id     integer  NOT NULL REFERENCES tenants (id),
    node_id       integer  NOT NULL REFERENCES org_nodes (id),
    node_path     integer[] NOT NULL,
    doc_type      text     NOT NULL CHECK (doc_type IN ('refund', 'adjustment', 'subsidy_batch',
                                                        'cancellation')),
    title         text     NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    reason        text     NOT NULL DEFAULT '',
    status        text     NOT NULL DEFAULT 'draft' CHECK (status IN (
                      'draft', 'submitted', 'rejected', 'approved', 'executed', 'failed')),
    version       integer  NOT NULL DEFAULT 1,
    levels        smallint NOT NULL CHECK (levels BETWEEN 1 AND 5),
    approved_levels smallint NOT NULL DEFAULT 0,
    total_fen     bigint   NOT NULL,
    lines_count   integer  NOT NULL,
    created_by    integer  NOT NULL REFERENCES admin_users (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    submitted_at  timestamptz,
    decided_at    timestamptz,
    executed_at   timestamptz,
    froze_account boolean  NOT NULL DEFAULT false,
    failure       text     NOT NULL DEFAULT ''
);
CREATE INDEX documents_node_path ON documents USING gin (node_path);

-- One line: a person, a wallet and an amount (signed for adjustments: + credit, - debit). The
-- line's txn_seq is drawn when the document is fully approved, in that transaction, so that
-- executing (and re-executing after a failure) moves the money exactly once.
CREATE TABLE document_lines (
    document_id   integer NOT NULL REFERENCES documents (id),
    line_no       integer NOT NULL,
    person_id     integer NOT NULL REFERENCES people (id),
    wallet        smallint NOT NULL CHECK (wallet IN (0, 1)),
    amount_fen    bigint  NOT NULL,
    note          text    NOT NULL DEFAULT '',
    terminal_id   integer,
    txn_seq       bigint,
    result_code   smallint,
    done_fen      bigint,
    PRIMARY KEY (document_id, line_no)
);

-- Every step of every round of approval. An approver never approves their own document, nor
-- two levels of one round.
CREATE TABLE approval_steps (
    id            serial  PRIMARY KEY,
    document_id   integer NOT NULL REFERENCES documents (id),
    version       integer NOT NULL,
    level         smallint NOT NULL,
    user_id       integer NOT NULL REFERENCES admin_users (id),
    decision      text    NOT NULL CHECK (decision IN ('submit', 'approve', 'reject', 'revise',
                                                       'execute')),
    comment       text    NOT NULL DEFAULT '',
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX approval_steps_document ON approval_steps (document_id, id);

-- How many levels of approval a document type needs, per tenant (defaults in the admin API).
CREATE TABLE approval_policies (
    tenant_id  integer  NOT NULL REFERENCES tenants (id),
    doc_type   text     NOT NULL CHECK (doc_type IN ('refund', 'adjustment', 'subsidy_batch',
                                                     'cancellation')),
    levels     smallint NOT NULL CHECK (levels BETWEEN 1 AND 5),
    PRIMARY KEY (tenant_id, doc_type)
);
