-- OneCard schema, version 5: the Web Service interface for integrators (HR, access control,
-- the school's own systems). API keys, and an audit log whose ids are drawn in commit order so
-- that the events endpoint can hand out a durable cursor.

-- API keys: bound to one org node (the key sees and changes only its subtree) and to a set of
-- scopes (the permissions of the "integration" role it may use). Only a SHA-256 of the key is
-- kept; `key_prefix` (the first characters) lets an admin tell keys apart in a list. Revoked
-- keys stay (the audit trail names them); a revoked or expired key is refused at once.
CREATE TABLE api_keys (
    id           serial   PRIMARY KEY,
    node_id      integer  NOT NULL REFERENCES org_nodes (id),
    name         text     NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    scopes       text[]   NOT NULL CHECK (cardinality(scopes) BETWEEN 1 AND 16),
    key_sha256   bytea    NOT NULL UNIQUE,
    key_prefix   text     NOT NULL,
    created_by   integer  REFERENCES admin_users (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_node ON api_keys (node_id);

-- The events endpoint reads the audit log by id after a client's cursor. A bigserial id is
-- drawn at INSERT, not at COMMIT: two writers could commit ids 11 then 10, and a reader that
-- had seen 11 would never see 10. So every INSERT into audit_log first takes the same
-- transaction-scoped advisory lock as outbox_append() (0002), held to COMMIT or ROLLBACK: ids
-- are drawn in commit order, a hole below a visible id is a rolled-back transaction, never one
-- still in flight, and within one snapshot everything up to max(id) is final.
-- The price: admin writers are serialised from their first audit row to their commit. Write
-- audit rows last, as admin_api/_store.py `change()` does (with the outbox rows, under the one
-- lock), never early in a long transaction.
CREATE FUNCTION audit_log_in_commit_order() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(3391946754);
    RETURN NULL;
END
$$;
CREATE TRIGGER audit_log_commit_order BEFORE INSERT ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_in_commit_order();

-- The events endpoint's journal half: a key's transactions are its people's accounts'
-- (journal_account, 0003); a key at a tenant or above reads by lsn (the primary key).

-- Bulk people sync looks people up by (tenant_id, external_id): the UNIQUE of 0003 serves it.
