-- OneCard schema, version 2: the change outbox, the source of truth of the change feed.
--
-- Every admin-side change of master data (an account opened, a card reported lost, a terminal
-- disabled...) writes its table change AND one outbox row, through outbox_append(), in the same
-- transaction. A relay publishes the rows to a Redis Stream; every switch applies them to its
-- balance cache. Redis may lose the stream at any time: the outbox here is the truth.
--
-- Ordering: outbox_append() takes a transaction-scoped advisory lock before it draws the next
-- id, and the lock is held until COMMIT or ROLLBACK. So ids are drawn in commit order: whoever
-- sees row N committed also sees every committed row below N, and a hole below N is a rolled
-- back transaction, never one still in flight. A reader that has everything up to N never has
-- to wait for a smaller id. Call outbox_append() last, just before COMMIT: the lock serialises
-- admin writers from that call to their commit.
--
-- `payload` is the new state (ids and fields) as a JSON object, decoded by the switch with
-- msgspec Structs (switch/_change_events.py); `kind` names its shape.

CREATE SEQUENCE change_outbox_id_seq AS bigint;

CREATE TABLE change_outbox (
    id          bigint      PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN (
                    'account_opened',
                    'account_status_changed',
                    'card_bound',
                    'card_cancelled',
                    'terminal_upserted',
                    'merchant_opened',
                    'class_configured',
                    'tenant_configured',
                    'cross_tenant_changed'
                )),
    payload     jsonb       NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
ALTER SEQUENCE change_outbox_id_seq OWNED BY change_outbox.id;

CREATE FUNCTION outbox_append(p_kind text, p_payload jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    -- The key is constant; migrations use 0x0CA2D0001, the outbox 0x0CA2D0002.
    PERFORM pg_advisory_xact_lock(3391946754);
    new_id := nextval('change_outbox_id_seq');
    INSERT INTO change_outbox (id, kind, payload) VALUES (new_id, p_kind, p_payload);
    PERFORM pg_notify('onecard_outbox', new_id::text);
    RETURN new_id;
END
$$;
