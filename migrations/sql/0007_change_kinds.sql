-- OneCard schema, version 7: two more kinds of change event (protocols/changes.py).
--
-- 'account_class_changed': a person moved to another identity class (student, staff, visitor),
-- so a running switch applies the new overdraft and limits at once; before this a switch
-- learned an account's class only when the account was opened.
-- 'merchant_configured': a merchant's mode, fixed price and spend order changed; before this a
-- running switch applied such a change only at its next start.
--
-- The CHECK lists every kind of EVENT_TYPES in protocols/changes.py (a test compares them).
-- The new list holds the old one, so every existing row passes it; the ALTER holds the
-- outbox's table lock for that one check of the rows, then admin writes go on.

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
        'merchant_configured'
    ));
