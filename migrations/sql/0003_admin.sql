-- OneCard schema, version 3: what the admin API keeps. The organisation tree, admin log-ins and
-- their tokens, people (the cardholders behind the accounts), more card fields, the audit log
-- and idempotency keys. The switch reads none of it; money stays in the journal.

-- The organisation: a platform (headquarters) at depth 0, agents, tenants and departments below,
-- at most seven levels under the platform. `path` lists the ids from the root to the node, the
-- node included: "is X in the subtree of N" is `N = ANY(X.path)`. A tenant node and every node
-- below it carry the tenant's id (`tenants`, which the switch knows); nodes above tenants carry
-- none. Nodes are never moved (a move would rewrite paths and the audit trail's meaning).
CREATE TABLE org_nodes (
    id          serial   PRIMARY KEY,
    parent_id   integer  REFERENCES org_nodes (id),
    kind        text     NOT NULL CHECK (kind IN ('platform', 'agent', 'tenant', 'department')),
    name        text     NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    tenant_id   integer  REFERENCES tenants (id),
    path        integer[] NOT NULL,
    depth       smallint NOT NULL CHECK (depth BETWEEN 0 AND 7),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((parent_id IS NULL) = (depth = 0)),
    CHECK ((kind = 'platform') = (depth = 0)),
    CHECK (cardinality(path) = depth + 1 AND path[depth + 1] = id),
    CHECK (kind NOT IN ('tenant', 'department') OR tenant_id IS NOT NULL)
);
CREATE UNIQUE INDEX org_nodes_one_root ON org_nodes ((true)) WHERE parent_id IS NULL;
CREATE UNIQUE INDEX org_nodes_one_per_tenant ON org_nodes (tenant_id) WHERE kind = 'tenant';
CREATE INDEX org_nodes_path ON org_nodes USING gin (path);

-- People: the cardholders. One account each (accounts.id; the switch's balance cache index).
-- `external_id` is the id of the person in the HR or academic system (bulk sync key).
CREATE TABLE people (
    id           serial   PRIMARY KEY,
    node_id      integer  NOT NULL REFERENCES org_nodes (id),
    tenant_id    integer  NOT NULL REFERENCES tenants (id),
    external_id  text     CHECK (external_id IS NULL OR length(external_id) BETWEEN 1 AND 64),
    name         text     NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    class_id     smallint NOT NULL REFERENCES identity_classes (id),
    account_id   integer  NOT NULL UNIQUE REFERENCES accounts (id),
    phone        text     NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, external_id)
);
CREATE INDEX people_node ON people (node_id);

-- More of a card: what is printed on it, the chip's UID, its type and validity.
ALTER TABLE cards
    ADD COLUMN printed_no  text NOT NULL DEFAULT '',
    ADD COLUMN chip_uid    text,
    ADD COLUMN card_type   text NOT NULL DEFAULT 'standard'
                           CHECK (card_type IN ('standard', 'special_shaped', 'electronic_student_id',
                                                'temporary')),
    ADD COLUMN valid_until date,
    ADD COLUMN cancelled_at timestamptz,
    ADD COLUMN cancel_reason text;
CREATE UNIQUE INDEX cards_chip_uid ON cards (chip_uid) WHERE chip_uid IS NOT NULL;

-- Other credentials of a person: a face or fingerprint template id (kept by the biometric
-- system; we keep only its id).
CREATE TABLE credentials (
    id           serial  PRIMARY KEY,
    person_id    integer NOT NULL REFERENCES people (id),
    kind         text    NOT NULL CHECK (kind IN ('face', 'fingerprint')),
    template_id  text    NOT NULL CHECK (length(template_id) BETWEEN 1 AND 128),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, template_id)
);

-- Admin log-ins. Each is bound to one org node and sees and changes only its subtree.
-- A cardholder log-in is bound to its person; a parent's children are in parent_links.
CREATE TABLE admin_users (
    id             serial  PRIMARY KEY,
    username       text    NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9][a-z0-9._@-]{2,63}$'),
    node_id        integer NOT NULL REFERENCES org_nodes (id),
    role           text    NOT NULL CHECK (role IN (
                       'platform_admin', 'tenant_admin', 'card_office', 'cashier', 'finance',
                       'auditor', 'merchant_viewer', 'cardholder', 'parent')),
    password_hash  text    NOT NULL,
    person_id      integer REFERENCES people (id),
    disabled       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'cardholder') = (person_id IS NOT NULL))
);

CREATE TABLE parent_links (
    user_id    integer NOT NULL REFERENCES admin_users (id),
    person_id  integer NOT NULL REFERENCES people (id),
    PRIMARY KEY (user_id, person_id)
);

-- Access tokens: only a SHA-256 of the token is kept. Short-lived; revoked at log-out, when
-- the user is disabled, or by an admin.
CREATE TABLE admin_tokens (
    token_sha256  bytea   PRIMARY KEY,
    user_id       integer NOT NULL REFERENCES admin_users (id),
    issued_at     timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
CREATE INDEX admin_tokens_user ON admin_tokens (user_id);

-- The audit log: every change made through the API, who, when, from where, before and after.
-- `node_path` is the path of the node the change belongs to, so an auditor sees their subtree.
-- Rows can be added, never changed or removed (the trigger refuses both).
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    user_id     integer,
    username    text    NOT NULL,
    role        text    NOT NULL,
    client_ip   text    NOT NULL DEFAULT '',
    action      text    NOT NULL,
    entity      text    NOT NULL,
    entity_id   text    NOT NULL,
    node_path   integer[] NOT NULL,
    before      jsonb,
    after       jsonb
);
CREATE INDEX audit_log_node_path ON audit_log USING gin (node_path);
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log rows cannot be changed or removed' USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();

-- Idempotency keys of money requests: the first answer is kept and returned to every repeat
-- of the same key by the same user; the same key with another request body is refused.
CREATE TABLE idempotency_keys (
    user_id       integer NOT NULL REFERENCES admin_users (id),
    key           text    NOT NULL CHECK (length(key) BETWEEN 1 AND 128),
    request_sha256 bytea  NOT NULL,
    status_code   integer,
    response      jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

-- Statements and card histories read the journal by account; daily reports by time. The
-- account index costs the switch's group commit some work per row (docs/benchmarks.md); the
-- BRIN index on commit time next to nothing (rows arrive in time order).
CREATE INDEX journal_account ON journal (account_id, lsn);
CREATE INDEX journal_committed_at ON journal USING brin (committed_at);
