-- OneCard schema, version 12: bank top-up at the self-service kiosk (圈存).
--
-- A cardholder binds a bank card (salary card) in advance and sets a query/spending PIN; at a
-- kiosk they put their campus card down, type the PIN and an amount; the switch asks the bank
-- (ISO 8583, docs/bank-link.md) and, on approval, credits the wallet from the tenant's bank
-- clearing account. Everything the switch needs to do that exactly once and to undo what the
-- bank may have done (reversal advices, store-and-forward) is kept here.

-- The bank clearing account of every tenant: the system account a bank top-up is paid from.
-- A credited bank top-up is a journal row of kind 8 (credit) whose merchant_id is this account.
ALTER TABLE system_accounts
    DROP CONSTRAINT system_accounts_purpose_check,
    ADD CONSTRAINT system_accounts_purpose_check CHECK (purpose IN (
        'cash_desk', 'subsidy_fund', 'adjustments', 'bank_clearing'));

-- A reversal advice the bank never acknowledged is handed to a person as a document.
ALTER TABLE documents
    DROP CONSTRAINT documents_doc_type_check,
    ADD CONSTRAINT documents_doc_type_check CHECK (doc_type IN (
        'refund', 'adjustment', 'subsidy_batch', 'cancellation', 'bank_exception'));
ALTER TABLE approval_policies
    DROP CONSTRAINT approval_policies_doc_type_check,
    ADD CONSTRAINT approval_policies_doc_type_check CHECK (doc_type IN (
        'refund', 'adjustment', 'subsidy_batch', 'cancellation', 'bank_exception'));
-- The switch makes bank exception documents: nobody logged in created them.
ALTER TABLE documents ALTER COLUMN created_by DROP NOT NULL;
-- A bank exception document has no lines (no money moves by it): it names its top-up.
ALTER TABLE documents ADD COLUMN bank_topup_id bigint;

-- The bank-link settings of a tenant (admin API, audited). No row: enabled, default caps.
-- Caps in fen; 0 means "no cap of this kind".
CREATE TABLE tenant_bank_settings (
    tenant_id            integer PRIMARY KEY REFERENCES tenants (id),
    enabled              boolean NOT NULL DEFAULT true,
    single_max_fen       bigint  NOT NULL DEFAULT 100000 CHECK (single_max_fen >= 0),
    daily_card_max_fen   bigint  NOT NULL DEFAULT 200000 CHECK (daily_card_max_fen >= 0),
    daily_account_max_fen bigint NOT NULL DEFAULT 300000 CHECK (daily_account_max_fen >= 0),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- The cardholder's query/spending PIN (查询/消费密码): an argon2id hash, never the PIN. A
-- wrong PIN counts; at pin_tries_max (switch setting) the PIN is locked until a card office
-- (or the cardholder) sets a new one.
CREATE TABLE cardholder_pins (
    account_id    integer PRIMARY KEY REFERENCES accounts (id),
    pin_hash      text    NOT NULL,
    failed_tries  integer NOT NULL DEFAULT 0 CHECK (failed_tries >= 0),
    locked        boolean NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Bank cards bound to a person's account. Only the masked number is ever shown or logged;
-- the full number is kept encrypted (AES-256-GCM under the configured bank-card key, the
-- account id as associated data; NULL when the bank gave only its token). What the switch
-- sends to the bank is the bank's token (docs/bank-link.md: never a full card number). At most one bound card per account
-- (快速圈存 uses it without the card being shown). Unbinding keeps the row (unbound_at).
-- Automatic top-up (自动圈存): when a purchase leaves the balance below auto_threshold_fen,
-- auto_amount_fen is topped up from this card, at most once per local day.
CREATE TABLE bank_cards (
    id                 serial  PRIMARY KEY,
    tenant_id          integer NOT NULL REFERENCES tenants (id),
    account_id         integer NOT NULL REFERENCES accounts (id),
    person_id          integer REFERENCES people (id),
    pan_masked         text    NOT NULL CHECK (pan_masked ~ '^[0-9]{6}\*+[0-9]{4}$'),
    pan_encrypted      bytea,
    bank_token         text    NOT NULL CHECK (length(bank_token) BETWEEN 1 AND 64),
    auto_threshold_fen bigint  NOT NULL DEFAULT 0 CHECK (auto_threshold_fen >= 0),
    auto_amount_fen    bigint  NOT NULL DEFAULT 0 CHECK (auto_amount_fen >= 0),
    bound_at           timestamptz NOT NULL DEFAULT now(),
    unbound_at         timestamptz
);
CREATE UNIQUE INDEX bank_cards_one_bound ON bank_cards (account_id) WHERE unbound_at IS NULL;

-- STAN (unique per request and business day) and RRN (unique forever) of bank requests are
-- drawn by the bank link (switch/_banklink.py); the state of each top-up is here. The row is
-- written BEFORE the bank is asked, so a crash never leaves a bank request we do not know of.
-- state: sent -> approved | declined | unknown -> reversal_pending -> reversed | exception;
-- approved -> reversal_pending when the credit itself could not be made after the approval.
-- lsn: the journal row of the credit (kind 8, merchant_id = the tenant's bank_clearing
-- account, terminal_id / txn_seq of the kiosk request) once credited.
CREATE TABLE bank_topups (
    id            bigserial PRIMARY KEY,
    tenant_id     integer  NOT NULL REFERENCES tenants (id),
    terminal_id   integer  NOT NULL,
    txn_seq       bigint   NOT NULL,
    account_id    integer  NOT NULL,
    card_no       bigint   NOT NULL,
    bank_card_id  integer  NOT NULL REFERENCES bank_cards (id),
    amount_fen    bigint   NOT NULL CHECK (amount_fen > 0),
    auto          boolean  NOT NULL DEFAULT false,
    stan          integer  NOT NULL,
    rrn           text     NOT NULL UNIQUE,
    state         text     NOT NULL DEFAULT 'sent' CHECK (state IN (
                      'sent', 'approved', 'declined', 'unknown', 'reversal_pending', 'reversed',
                      'exception')),
    field39       text,
    code          smallint,
    lsn           bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT bank_topups_request_once UNIQUE (terminal_id, txn_seq)
);
CREATE INDEX bank_topups_card_day ON bank_topups (card_no, created_at);
CREATE INDEX bank_topups_account_day ON bank_topups (account_id, created_at);
CREATE INDEX bank_topups_open ON bank_topups (state) WHERE state IN ('sent', 'reversal_pending');

-- Reversal advices (store-and-forward): written in the same transaction that marks the top-up
-- reversal_pending, BEFORE the kiosk hears "unknown, not credited"; repeated with back-off
-- until the bank acknowledges (state acknowledged), or after advice_tries_max handed to a
-- person (state exception, document_id).
CREATE TABLE bank_advices (
    id            bigserial PRIMARY KEY,
    topup_id      bigint   NOT NULL UNIQUE REFERENCES bank_topups (id),
    tenant_id     integer  NOT NULL REFERENCES tenants (id),
    reason        text     NOT NULL CHECK (reason IN ('timeout', 'link_down', 'unparseable',
                                                       'credit_failed', 'restart')),
    state         text     NOT NULL DEFAULT 'pending' CHECK (state IN (
                      'pending', 'acknowledged', 'exception')),
    tries         integer  NOT NULL DEFAULT 0,
    next_at       timestamptz NOT NULL DEFAULT now(),
    last_error    text     NOT NULL DEFAULT '',
    document_id   integer  REFERENCES documents (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bank_advices_due ON bank_advices (next_at) WHERE state = 'pending';

-- Automatic top-ups: at most one per account and local day (the key makes it so). They are
-- journaled as requests of the reserved terminal id 99999999 (no kiosk asked), each with
-- its own txn_seq from this sequence.
CREATE SEQUENCE bank_auto_txn_seq AS bigint MINVALUE 1 MAXVALUE 4294967295 NO CYCLE;
CREATE TABLE bank_auto_topups (
    account_id  integer NOT NULL REFERENCES accounts (id),
    local_day   date    NOT NULL,
    topup_id    bigint  REFERENCES bank_topups (id),
    PRIMARY KEY (account_id, local_day)
);

ALTER TABLE change_outbox
    DROP CONSTRAINT change_outbox_kind_check,
    ADD CONSTRAINT change_outbox_kind_check CHECK (kind IN (
        'account_opened',
        'account_status_changed',
        'card_bound',
        'card_cancelled',
        'terminal_upserted',
        'merchant_opened',
        'class_configured',
        'tenant_configured',
        'cross_tenant_changed',
        'account_class_changed',
        'merchant_configured',
        'bank_card_changed',
        'bank_settings_changed'
    ));
