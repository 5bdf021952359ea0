-- OneCard schema: the edges of access control that the admin API owns (issue 12, sections 4-6).
-- Visitor passes, guard patrol (routes, checkpoints, schedules, rounds and their records), and
-- the ZKTeco ADMS ("iclock") push devices with their command queue and the records they
-- uploaded. Doors, grants, decision records and alarms are the access schema's (the migration before this one).
-- Two log-in roles join: `security_desk` (alarms, lockdown, door states, patrol) and
-- `reception` (visitor passes).

ALTER TABLE admin_users
    DROP CONSTRAINT admin_users_role_check,
    ADD CONSTRAINT admin_users_role_check CHECK (role IN (
        'platform_admin', 'tenant_admin', 'card_office', 'cashier', 'finance', 'auditor',
        'merchant_viewer', 'cardholder', 'parent', 'security_desk', 'reception'));

-- A visitor pass: a temporary person (identity class "visitor") under the host's node, holding
-- one temporary card (the card number is what a QR pass encodes), granted the pass's doors for
-- the validity window. The expiry task (admin_api/access/_tasks.py) ends it at valid_until:
-- the card is cancelled and goes out on the change feed. `status` only moves away from
-- 'active'.
CREATE TABLE visitor_passes (
    id                serial   PRIMARY KEY,
    tenant_id         integer  NOT NULL REFERENCES tenants (id),
    node_id           integer  NOT NULL REFERENCES org_nodes (id),
    host_person_id    integer  NOT NULL REFERENCES people (id),
    visitor_person_id integer  NOT NULL UNIQUE REFERENCES people (id),
    visitor_name      text     NOT NULL CHECK (length(visitor_name) BETWEEN 1 AND 200),
    visitor_phone     text     NOT NULL DEFAULT '' CHECK (length(visitor_phone) <= 32),
    purpose           text     NOT NULL DEFAULT '' CHECK (length(purpose) <= 200),
    credential        text     NOT NULL CHECK (credential IN ('card', 'qr')),
    card_no           bigint   NOT NULL UNIQUE REFERENCES cards (card_no),
    door_ids          integer[] NOT NULL CHECK (cardinality(door_ids) BETWEEN 1 AND 64),
    valid_from        timestamptz NOT NULL,
    valid_until       timestamptz NOT NULL,
    status            text     NOT NULL DEFAULT 'active'
                               CHECK (status IN ('active', 'expired', 'revoked')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    ended_at          timestamptz,
    CHECK (valid_until > valid_from),
    CHECK ((status = 'active') = (ended_at IS NULL))
);
CREATE INDEX visitor_passes_active ON visitor_passes (valid_until) WHERE status = 'active';
CREATE INDEX visitor_passes_node ON visitor_passes (node_id);

-- Guard patrol (巡更). A route is an ordered list of checkpoints, each a door's reader, due
-- `offset_s` after the round starts, read on time within `tolerance_s` either side.
CREATE TABLE patrol_routes (
    id          serial   PRIMARY KEY,
    tenant_id   integer  NOT NULL REFERENCES tenants (id),
    node_id     integer  NOT NULL REFERENCES org_nodes (id),
    name        text     NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    enabled     boolean  NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX patrol_routes_node ON patrol_routes (node_id);

CREATE TABLE patrol_checkpoints (
    route_id     integer  NOT NULL REFERENCES patrol_routes (id),
    seq          smallint NOT NULL CHECK (seq BETWEEN 1 AND 64),
    door_id      integer  NOT NULL REFERENCES doors (id),
    offset_s     integer  NOT NULL CHECK (offset_s BETWEEN 0 AND 86400),
    tolerance_s  integer  NOT NULL CHECK (tolerance_s BETWEEN 1 AND 3600),
    PRIMARY KEY (route_id, seq)
);

-- Who walks a route when: a guard (a person) on the weekdays of `weekdays` (bit 0 Monday ..
-- bit 6 Sunday) starting at `start_minute` of the tenant's local day.
CREATE TABLE patrol_schedules (
    id               serial   PRIMARY KEY,
    route_id         integer  NOT NULL REFERENCES patrol_routes (id),
    guard_person_id  integer  NOT NULL REFERENCES people (id),
    weekdays         smallint NOT NULL CHECK (weekdays BETWEEN 1 AND 127),
    start_minute     smallint NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    enabled          boolean  NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX patrol_schedules_route ON patrol_schedules (route_id);

-- One walk of a route by its guard, made by the patrol checker when it comes due (or by
-- POST /patrol/routes/{id}/rounds for an unscheduled one). Its records are the checkpoints'
-- outcomes, written by the checker: 'on_time' (read within the tolerance), 'missed' (not read
-- by due + tolerance: an alarm is raised), 'late' (read after being counted missed, before the
-- round's end).
CREATE TABLE patrol_rounds (
    id               bigserial PRIMARY KEY,
    route_id         integer  NOT NULL REFERENCES patrol_routes (id),
    schedule_id      integer  REFERENCES patrol_schedules (id),
    guard_person_id  integer  NOT NULL REFERENCES people (id),
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    status           text     NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (schedule_id, starts_at)
);
CREATE INDEX patrol_rounds_open ON patrol_rounds (ends_at) WHERE status = 'open';

CREATE TABLE patrol_records (
    round_id   bigint   NOT NULL REFERENCES patrol_rounds (id),
    seq        smallint NOT NULL,
    door_id    integer  NOT NULL REFERENCES doors (id),
    due_at     timestamptz NOT NULL,
    read_at    timestamptz,
    status     text     NOT NULL CHECK (status IN ('on_time', 'late', 'missed')),
    PRIMARY KEY (round_id, seq),
    CHECK ((status = 'missed') = (read_at IS NULL))
);

-- ZKTeco ADMS push devices (docs/adms.md). A device is known by its serial number (SN), which
-- an operator registers; an unknown SN is refused. With a door (and the door terminal whose id
-- its records carry), its records also become access decisions (source 2) of that door. `attlog_stamp`/`operlog_stamp` are the
-- stamps the device last reported, handed back so it resumes after them.
CREATE TABLE adms_devices (
    serial_no      text     PRIMARY KEY CHECK (serial_no ~ '^[A-Za-z0-9_-]{1,32}$'),
    tenant_id      integer  NOT NULL REFERENCES tenants (id),
    node_id        integer  NOT NULL REFERENCES org_nodes (id),
    terminal_id    integer  REFERENCES terminals (id),
    door_id        integer  REFERENCES doors (id),
    name           text     NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    enabled        boolean  NOT NULL DEFAULT true,
    attlog_stamp   bigint   NOT NULL DEFAULT 0,
    operlog_stamp  bigint   NOT NULL DEFAULT 0,
    last_seen_at   timestamptz,
    firmware       text     NOT NULL DEFAULT '',
    synced_at      timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Commands queued for a device (user and template sync): handed out oldest first by
-- /iclock/getrequest, marked done by /iclock/devicecmd with the device's return code.
CREATE TABLE adms_commands (
    id           bigserial PRIMARY KEY,
    serial_no    text     NOT NULL REFERENCES adms_devices (serial_no),
    command      text     NOT NULL CHECK (length(command) BETWEEN 1 AND 4096),
    status       text     NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'done')),
    return_code  integer,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz,
    done_at      timestamptz
);
CREATE INDEX adms_commands_pending ON adms_commands (serial_no, id) WHERE status <> 'done';

-- What the devices uploaded (ATTLOG rows): one row per (device, user PIN, local time), so an
-- upload sent twice has one effect. `person_id` is the person the PIN names (NULL: unknown
-- PIN, kept and counted, not mapped).
CREATE TABLE adms_records (
    id           bigserial PRIMARY KEY,
    serial_no    text     NOT NULL REFERENCES adms_devices (serial_no),
    pin          text     NOT NULL CHECK (length(pin) BETWEEN 1 AND 24),
    local_time   timestamp NOT NULL,
    at           timestamptz NOT NULL,
    status       smallint NOT NULL DEFAULT 0,
    verify       smallint NOT NULL DEFAULT 0,
    person_id    integer  REFERENCES people (id),
    received_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (serial_no, pin, local_time)
);

-- The users a device was told to hold (what the queued commands make it hold): the ADMS app
-- compares it with the people who should be there and queues the difference.
CREATE TABLE adms_device_users (
    serial_no  text     NOT NULL REFERENCES adms_devices (serial_no),
    pin        text     NOT NULL,
    card_no    bigint,
    name       text     NOT NULL,
    PRIMARY KEY (serial_no, pin)
);
