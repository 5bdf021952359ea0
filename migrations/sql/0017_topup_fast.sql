-- OneCard schema, version 17: kiosk top-ups at the bank's pace (issue 11, docs/benchmarks.md
-- "Bank top-up"): refused attempts recorded, bank-side terminal ids, PIN changes on the feed.

-- Top-ups the switch refused itself, before asking the bank (wrong PIN, PIN locked, no bound
-- bank card, caps, top-up switched off or the link down, card cancelled, account closed), one
-- row per attempt with its OCP response code. Never a STAN or an RRN: the bank never heard of
-- them, so they stay out of bank_topups (whose rows reconciliation and settlement match with
-- the bank). Written by the switch in group commits (a refusal's answer does not wait for its
-- row). A card number nobody issued is bad input and leaves no row.
CREATE TABLE bank_topup_refusals (
    id           bigserial PRIMARY KEY,
    tenant_id    integer  NOT NULL REFERENCES tenants (id),
    terminal_id  integer  NOT NULL,
    txn_seq      bigint   NOT NULL,
    account_id   integer  NOT NULL,
    card_no      bigint   NOT NULL,
    amount_fen   bigint   NOT NULL,
    auto         boolean  NOT NULL DEFAULT false,
    code         smallint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bank_topup_refusals_tenant_day ON bank_topup_refusals (tenant_id, created_at);

-- The bank's name for a kiosk (ISO 8583 field 41 holds 8 digits, docs/bank-link.md "Field
-- 41"): a kiosk whose id is below 90,000,000 is known to the bank by its own id; any other is
-- given one number of 90,000,000-99,999,998 here, once, the first time it tops up, and keeps
-- it. 99,999,999 is the automatic top-up's (switch/_topup.py AUTO_TOPUP_TERMINAL).
CREATE SEQUENCE bank_terminal_id_seq AS integer MINVALUE 90000000 MAXVALUE 99999998 NO CYCLE;
ALTER TABLE terminals ADD COLUMN bank_terminal_id integer UNIQUE
    CHECK (bank_terminal_id BETWEEN 90000000 AND 99999998);

-- The change feed learns one more kind of event (protocols/changes.py): 'pin_changed', a
-- cardholder's query/spending PIN was set or reset (the switch keeps PIN hashes in memory).
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
        'bank_settings_changed',
        'access_changed',
        'pin_changed'
    ));
