-- OneCard schema, version 1: master data, the journal and balance checkpoints.
-- Money is bigint fen everywhere. Ids are dense integers: the switch's balance cache uses an
-- account's or merchant's id as its index, so ids stay below the configured *_MAX.

CREATE TABLE tenants (
    id            integer PRIMARY KEY CHECK (id BETWEEN 1 AND 4096),
    name          text    NOT NULL,
    utc_offset_s  integer NOT NULL DEFAULT 28800 CHECK (utc_offset_s BETWEEN -50400 AND 50400),
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Meal periods of a tenant ("breakfast 06:30-09:00"): per-meal count and amount limits apply
-- inside a window. At most 8 per tenant, minutes of the tenant's local day, [start, end).
CREATE TABLE tenant_meal_windows (
    tenant_id     integer  NOT NULL REFERENCES tenants (id),
    idx           smallint NOT NULL CHECK (idx BETWEEN 0 AND 7),
    name          text     NOT NULL,
    start_minute  smallint NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    end_minute    smallint NOT NULL CHECK (end_minute BETWEEN 1 AND 1440),
    PRIMARY KEY (tenant_id, idx),
    CHECK (start_minute < end_minute)
);

-- A card of card_tenant may spend at a merchant of merchant_tenant only when both sides agree.
CREATE TABLE tenant_cross_spend (
    card_tenant_id      integer NOT NULL REFERENCES tenants (id),
    merchant_tenant_id  integer NOT NULL REFERENCES tenants (id),
    card_side_allows    boolean NOT NULL DEFAULT false,
    merchant_side_allows boolean NOT NULL DEFAULT false,
    PRIMARY KEY (card_tenant_id, merchant_tenant_id),
    CHECK (card_tenant_id <> merchant_tenant_id)
);

-- Identity classes (student, staff, visitor...): overdraft and limits. 0 means "no limit".
CREATE TABLE identity_classes (
    id                  smallint PRIMARY KEY CHECK (id BETWEEN 1 AND 255),
    name                text   NOT NULL,
    overdraft_fen       bigint NOT NULL DEFAULT 0 CHECK (overdraft_fen >= 0),
    txn_limit_fen       bigint NOT NULL DEFAULT 0 CHECK (txn_limit_fen >= 0),
    daily_limit_fen     bigint NOT NULL DEFAULT 0 CHECK (daily_limit_fen >= 0),
    meal_count_max      integer NOT NULL DEFAULT 0 CHECK (meal_count_max >= 0),
    meal_amount_max_fen bigint NOT NULL DEFAULT 0 CHECK (meal_amount_max_fen >= 0)
);

-- Cardholder accounts. status: 0 active, 1 frozen, 2 lost, 3 closed.
-- opening_*_fen is the balance the account started with (its migration-in balance); the
-- balance now is opening plus the journal, which is what the conservation check proves.
CREATE TABLE accounts (
    id                   integer  PRIMARY KEY CHECK (id >= 1),
    tenant_id            integer  NOT NULL REFERENCES tenants (id),
    class_id             smallint NOT NULL REFERENCES identity_classes (id),
    holder_name          text     NOT NULL DEFAULT '',
    status               smallint NOT NULL DEFAULT 0 CHECK (status BETWEEN 0 AND 3),
    opening_main_fen     bigint   NOT NULL DEFAULT 0,
    opening_subsidy_fen  bigint   NOT NULL DEFAULT 0 CHECK (opening_subsidy_fen >= 0),
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_tenant ON accounts (tenant_id);

-- Cards (and other credentials later). status: 0 active, 1 cancelled (replaced or cancelled;
-- dead forever). Losing a card is an account state (accounts.status = 2).
CREATE TABLE cards (
    card_no     bigint   PRIMARY KEY CHECK (card_no >= 1),
    account_id  integer  NOT NULL REFERENCES accounts (id),
    status      smallint NOT NULL DEFAULT 0 CHECK (status BETWEEN 0 AND 1),
    issued_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cards_account ON cards (account_id);

-- Every counterparty of a cardholder wallet is a merchant account: canteens and shops, and the
-- system accounts (cash desk, bank clearing, subsidy fund, opening balances).
-- kind: 'canteen', 'shop', 'service', 'system'. mode: 0 free amount, 1 fixed amount.
-- spend_order: 0 subsidy first, 1 main first, 2 main only.
CREATE TABLE merchants (
    id                   integer  PRIMARY KEY CHECK (id >= 1),
    tenant_id            integer  NOT NULL REFERENCES tenants (id),
    name                 text     NOT NULL,
    kind                 text     NOT NULL DEFAULT 'canteen'
                                  CHECK (kind IN ('canteen', 'shop', 'service', 'system')),
    mode                 smallint NOT NULL DEFAULT 0 CHECK (mode BETWEEN 0 AND 1),
    fixed_amount_fen     bigint   NOT NULL DEFAULT 0 CHECK (fixed_amount_fen >= 0),
    spend_order          smallint NOT NULL DEFAULT 0 CHECK (spend_order BETWEEN 0 AND 2),
    opening_balance_fen  bigint   NOT NULL DEFAULT 0,
    CHECK (mode = 0 OR fixed_amount_fen > 0)
);

-- Terminals. The per-terminal OCP key is derived from the site master secret, the terminal id
-- and key_version (docs/protocol.md); bumping key_version revokes the old key. No key is stored.
-- kind: 1 POS, 2 kiosk, 3 door, 4 attendance, 5 water, 6 admin. status: 0 enabled, 1 disabled.
CREATE TABLE terminals (
    id           integer  PRIMARY KEY CHECK (id >= 1),
    merchant_id  integer  NOT NULL REFERENCES merchants (id),
    kind         smallint NOT NULL DEFAULT 1 CHECK (kind BETWEEN 1 AND 6),
    name         text     NOT NULL DEFAULT '',
    key_version  integer  NOT NULL DEFAULT 1 CHECK (key_version >= 1),
    status       smallint NOT NULL DEFAULT 0 CHECK (status BETWEEN 0 AND 1)
);

-- The journal: one row per decided request (approved or declined), written by the switch's
-- group commit, in lsn order. (terminal_id, txn_seq) names one request forever. Each row is one
-- transfer between the cardholder's wallets and one merchant account:
-- main_delta_fen + subsidy_delta_fen + merchant_delta_fen = 0.
-- kind: 1 purchase, 2 reversal, 3 inquiry, 4 hold, 5 capture, 6 release, 7 expiry, 8 credit.
CREATE TABLE journal (
    lsn                 bigint   PRIMARY KEY,
    kind                smallint NOT NULL,
    code                smallint NOT NULL,
    terminal_id         integer  NOT NULL,
    txn_seq             bigint   NOT NULL,
    ref_txn_seq         bigint   NOT NULL,
    card_no             bigint   NOT NULL,
    account_id          integer  NOT NULL,
    merchant_id         integer  NOT NULL,
    tenant_id           integer  NOT NULL,
    merchant_tenant_id  integer  NOT NULL,
    amount_fen          bigint   NOT NULL,
    main_delta_fen      bigint   NOT NULL,
    subsidy_delta_fen   bigint   NOT NULL,
    merchant_delta_fen  bigint   NOT NULL,
    held_delta_fen      bigint   NOT NULL,
    main_fen            bigint   NOT NULL,
    subsidy_fen         bigint   NOT NULL,
    expires_s           bigint   NOT NULL,
    now_s               bigint   NOT NULL,
    committed_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT journal_request_once UNIQUE (terminal_id, txn_seq),
    CONSTRAINT journal_double_entry CHECK (main_delta_fen + subsidy_delta_fen + merchant_delta_fen = 0)
);

-- Balance checkpoints: the ledger state after every journal row up to lsn. `state` is the
-- balance cache's own snapshot (restored at start-up); the arrays repeat the balances in a form
-- SQL can check (unnest) without the switch.
CREATE TABLE checkpoints (
    id                    bigserial PRIMARY KEY,
    lsn                   bigint    NOT NULL,
    taken_at              timestamptz NOT NULL DEFAULT now(),
    state                 bytea     NOT NULL,
    account_ids           integer[] NOT NULL,
    main_fen              bigint[]  NOT NULL,
    subsidy_fen           bigint[]  NOT NULL,
    merchant_ids          integer[] NOT NULL,
    merchant_balance_fen  bigint[]  NOT NULL,
    total_fen             bigint    NOT NULL
);
CREATE INDEX checkpoints_lsn ON checkpoints (lsn);
