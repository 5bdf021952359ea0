-- OneCard schema, version 11: access control (doors, elevators), its rules, the decision
-- records the switch journals and the alarms it raises. docs/access.md describes every table
-- and the order in which the rules apply.
--
-- Who writes what:
--   * configuration (areas .. overrides below): the admin API, in one transaction with an
--     outbox row of kind 'access_changed' ({"tenant_id": t, "people": [person ids]}); every
--     switch then reloads that tenant's access rules (and the listed people's PINs) from here,
--     within about a second (docs/access.md "Keeping the switch current").
--   * access_decisions, access_door_events: the switch only, in the group commit that also
--     COPYs the money journal (switch/_access_journal.py). A door hears "open" only after its
--     decision row is committed.
--   * access_alarms, access_door_states: the switch raises, clears and updates them in that
--     same commit; the admin API acknowledges alarms (state, note, who) and reads states.
--
-- Ids are serial integers. `tenant_id` is on every row so that a switch can load one tenant's
-- rules with one query per table; `node_id` (an org node of the tenant: its own node or a
-- department; NULL = the tenant's node) scopes a row for the admin API's subtree checks.

-- Areas: a site is divided into areas (a building, a floor, a lab). Anti-passback is per area:
-- 'hard' refuses a second entry until the person has left through a door of the area;
-- 'timed' refuses a second entry within apb_seconds of the last one, whatever the exits.
CREATE TABLE access_areas (
    id           serial   PRIMARY KEY,
    tenant_id    integer  NOT NULL REFERENCES tenants (id),
    node_id      integer  REFERENCES org_nodes (id),
    parent_id    integer  REFERENCES access_areas (id),
    name         text     NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    apb          text     NOT NULL DEFAULT 'off' CHECK (apb IN ('off', 'hard', 'timed')),
    apb_seconds  integer  NOT NULL DEFAULT 0 CHECK (apb_seconds BETWEEN 0 AND 86400),
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (apb <> 'timed' OR apb_seconds > 0)
);
CREATE INDEX access_areas_tenant ON access_areas (tenant_id);

-- Holiday calendars: dates on which a time zone uses its holiday intervals (day 7) instead of
-- the weekday's.
CREATE TABLE access_holiday_calendars (
    id          serial   PRIMARY KEY,
    tenant_id   integer  NOT NULL REFERENCES tenants (id),
    node_id     integer  REFERENCES org_nodes (id),
    name        text     NOT NULL CHECK (length(name) BETWEEN 1 AND 200)
);
CREATE INDEX access_holiday_calendars_tenant ON access_holiday_calendars (tenant_id);

CREATE TABLE access_holidays (
    calendar_id  integer  NOT NULL REFERENCES access_holiday_calendars (id) ON DELETE CASCADE,
    day          date     NOT NULL,
    name         text     NOT NULL DEFAULT '',
    PRIMARY KEY (calendar_id, day)
);

-- Time zones (时段): a weekly schedule of intervals, in minutes of the tenant's local day
-- (tenants.utc_offset_s), [start_minute, end_minute). day: 0 Monday .. 6 Sunday, 7 holiday.
CREATE TABLE access_time_zones (
    id                   serial   PRIMARY KEY,
    tenant_id            integer  NOT NULL REFERENCES tenants (id),
    node_id              integer  REFERENCES org_nodes (id),
    name                 text     NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    holiday_calendar_id  integer  REFERENCES access_holiday_calendars (id)
);
CREATE INDEX access_time_zones_tenant ON access_time_zones (tenant_id);

CREATE TABLE access_time_zone_intervals (
    time_zone_id  integer  NOT NULL REFERENCES access_time_zones (id) ON DELETE CASCADE,
    day           smallint NOT NULL CHECK (day BETWEEN 0 AND 7),
    start_minute  smallint NOT NULL CHECK (start_minute BETWEEN 0 AND 1439),
    end_minute    smallint NOT NULL CHECK (end_minute BETWEEN 1 AND 1440),
    PRIMARY KEY (time_zone_id, day, start_minute),
    CHECK (start_minute < end_minute)
);

-- Doors (and turnstiles, gates, elevator cars). `area_id` is the area a person is in after
-- passing the door inwards (direction 'in'); passing it outwards leaves that area.
-- mode:
--   'normal'      a permitted credential opens;
--   'office'      held open (no credential needed) inside mode_time_zone_id, else normal;
--   'security'    a permitted credential plus the person's PIN (security_factor 'pin');
--   'multi_card'  opens on the multi_card_count-th different permitted person within
--                 multi_card_window_s of the first;
--   'first_card'  normal until a permitted person passes inside mode_time_zone_id; from then
--                 held open until that window ends;
--   'free'        free passage: always open, every pass still recorded;
--   'locked'      forbidden: nobody passes (lockdown override holders neither).
-- open_ms: how long the lock is released; held_open_s: after that long open, 'held_open'.
CREATE TABLE doors (
    id                   serial   PRIMARY KEY,
    tenant_id            integer  NOT NULL REFERENCES tenants (id),
    node_id              integer  REFERENCES org_nodes (id),
    area_id              integer  REFERENCES access_areas (id),
    name                 text     NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind                 text     NOT NULL DEFAULT 'door'
                                  CHECK (kind IN ('door', 'turnstile', 'gate', 'elevator')),
    mode                 text     NOT NULL DEFAULT 'normal' CHECK (mode IN (
                             'normal', 'office', 'security', 'multi_card', 'first_card', 'free',
                             'locked')),
    mode_time_zone_id    integer  REFERENCES access_time_zones (id),
    security_factor      text     NOT NULL DEFAULT 'pin' CHECK (security_factor IN ('pin')),
    multi_card_count     smallint NOT NULL DEFAULT 2 CHECK (multi_card_count BETWEEN 2 AND 8),
    multi_card_window_s  integer  NOT NULL DEFAULT 30 CHECK (multi_card_window_s BETWEEN 1 AND 600),
    open_ms              integer  NOT NULL DEFAULT 3000 CHECK (open_ms BETWEEN 100 AND 60000),
    held_open_s          integer  NOT NULL DEFAULT 30 CHECK (held_open_s BETWEEN 1 AND 3600),
    created_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (mode NOT IN ('office', 'first_card') OR mode_time_zone_id IS NOT NULL)
);
CREATE INDEX doors_tenant ON doors (tenant_id);

-- Elevator floors (梯控): floor_no is the bit of the floor in a grant's and an answer's floor
-- mask (0..63).
CREATE TABLE access_floors (
    door_id   integer  NOT NULL REFERENCES doors (id) ON DELETE CASCADE,
    floor_no  smallint NOT NULL CHECK (floor_no BETWEEN 0 AND 63),
    name      text     NOT NULL DEFAULT '',
    PRIMARY KEY (door_id, floor_no)
);

-- Readers: one reader of one door terminal (terminals.kind 3). A controller has up to 16
-- readers (reader_no); an access request names its reader, so the switch knows the door and
-- the direction. direction: 0 in, 1 out, 2 the request says. purpose: 'access' decides;
-- 'patrol' readers are guard-patrol checkpoints (records, no decision).
CREATE TABLE access_readers (
    id           serial   PRIMARY KEY,
    tenant_id    integer  NOT NULL REFERENCES tenants (id),
    terminal_id  integer  NOT NULL REFERENCES terminals (id),
    reader_no    smallint NOT NULL CHECK (reader_no BETWEEN 1 AND 16),
    door_id      integer  NOT NULL REFERENCES doors (id),
    direction    smallint NOT NULL DEFAULT 0 CHECK (direction BETWEEN 0 AND 2),
    purpose      text     NOT NULL DEFAULT 'access' CHECK (purpose IN ('access', 'patrol')),
    UNIQUE (terminal_id, reader_no)
);
CREATE INDEX access_readers_tenant ON access_readers (tenant_id);
CREATE INDEX access_readers_door ON access_readers (door_id);

-- Door groups: what a grant names.
CREATE TABLE access_door_groups (
    id         serial   PRIMARY KEY,
    tenant_id  integer  NOT NULL REFERENCES tenants (id),
    node_id    integer  REFERENCES org_nodes (id),
    name       text     NOT NULL CHECK (length(name) BETWEEN 1 AND 200)
);
CREATE INDEX access_door_groups_tenant ON access_door_groups (tenant_id);

CREATE TABLE access_door_group_doors (
    door_group_id  integer NOT NULL REFERENCES access_door_groups (id) ON DELETE CASCADE,
    door_id        integer NOT NULL REFERENCES doors (id) ON DELETE CASCADE,
    PRIMARY KEY (door_group_id, door_id)
);

-- Permission grants (and explicit denials) on a door group, within a time zone (NULL: at any
-- time), for floors (elevators; NULL: every floor), to one of: a person, a department (an org
-- node and everything under it), an identity class. valid_from/valid_until bound it in time.
-- Precedence (docs/access.md): person > department (deeper node first) > class; at the same
-- level a 'deny' beats an 'allow'.
CREATE TABLE access_grants (
    id             serial   PRIMARY KEY,
    tenant_id      integer  NOT NULL REFERENCES tenants (id),
    subject        text     NOT NULL CHECK (subject IN ('person', 'department', 'class')),
    person_id      integer  REFERENCES people (id),
    node_id        integer  REFERENCES org_nodes (id),
    class_id       smallint REFERENCES identity_classes (id),
    door_group_id  integer  NOT NULL REFERENCES access_door_groups (id),
    time_zone_id   integer  REFERENCES access_time_zones (id),
    floors         bigint,
    effect         text     NOT NULL DEFAULT 'allow' CHECK (effect IN ('allow', 'deny')),
    valid_from     timestamptz,
    valid_until    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((subject = 'person') = (person_id IS NOT NULL)),
    CHECK ((subject = 'department') = (node_id IS NOT NULL)),
    CHECK ((subject = 'class') = (class_id IS NOT NULL)),
    CHECK (valid_from IS NULL OR valid_until IS NULL OR valid_from < valid_until)
);
CREATE INDEX access_grants_tenant ON access_grants (tenant_id);
CREATE INDEX access_grants_person ON access_grants (person_id) WHERE person_id IS NOT NULL;

-- Interlocks (互锁): a door of an interlock opens only while every other door of it is closed.
CREATE TABLE access_interlocks (
    id         serial   PRIMARY KEY,
    tenant_id  integer  NOT NULL REFERENCES tenants (id),
    node_id    integer  REFERENCES org_nodes (id),
    name       text     NOT NULL CHECK (length(name) BETWEEN 1 AND 200)
);

CREATE TABLE access_interlock_doors (
    interlock_id  integer NOT NULL REFERENCES access_interlocks (id) ON DELETE CASCADE,
    door_id       integer NOT NULL REFERENCES doors (id) ON DELETE CASCADE,
    PRIMARY KEY (interlock_id, door_id)
);

-- A person's PINs: the PIN of security-mode doors and the duress PIN (opens, and raises a
-- silent 'duress' alarm). argon2id hashes (argon2-cffi's PasswordHasher format); never the PIN.
CREATE TABLE access_person_pins (
    person_id        integer PRIMARY KEY REFERENCES people (id),
    pin_hash         text,
    duress_pin_hash  text,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Emergency lockdown of a whole site (area_id NULL) or of an area and the areas under it.
-- Active while ended_at IS NULL. Only holders of an override pass get through.
CREATE TABLE access_lockdowns (
    id          serial   PRIMARY KEY,
    tenant_id   integer  NOT NULL REFERENCES tenants (id),
    area_id     integer  REFERENCES access_areas (id),
    reason      text     NOT NULL DEFAULT '',
    started_at  timestamptz NOT NULL DEFAULT now(),
    started_by  integer  REFERENCES admin_users (id),
    ended_at    timestamptz,
    ended_by    integer  REFERENCES admin_users (id)
);
CREATE INDEX access_lockdowns_active ON access_lockdowns (tenant_id) WHERE ended_at IS NULL;

-- Holders of a lockdown override pass (security staff, fire brigade cards).
CREATE TABLE access_override_holders (
    tenant_id   integer NOT NULL REFERENCES tenants (id),
    person_id   integer NOT NULL REFERENCES people (id),
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, person_id)
);

-- Decision records: one row per access request decided (opened or denied), written by the
-- switch's group commit before the door hears the answer. (terminal_id, source, txn_seq) names
-- one request forever. source: 0 online (OCP), 1 uploaded by a door that decided offline,
-- 2 pushed by an ADMS device. code: 0 open, else the deny reason (docs/protocol.md, access
-- deny reasons). credential_kind: 1 card, 2 face, 3 fingerprint, 4 QR; card_no is 0 unless a
-- card was shown, credential the template id or QR text's id otherwise. direction 0 in, 1 out.
-- grant_id: the grant that decided (0: none; e.g. free passage, lockdown). area_id: the door's
-- area (anti-passback and the "who is inside" view read it).
CREATE TABLE access_decisions (
    id               bigserial PRIMARY KEY,
    terminal_id      integer  NOT NULL,
    source           smallint NOT NULL DEFAULT 0 CHECK (source BETWEEN 0 AND 2),
    txn_seq          bigint   NOT NULL,
    tenant_id        integer  NOT NULL,
    door_id          integer  NOT NULL,
    area_id          integer  NOT NULL DEFAULT 0,
    reader_no        smallint NOT NULL,
    direction        smallint NOT NULL CHECK (direction BETWEEN 0 AND 1),
    credential_kind  smallint NOT NULL CHECK (credential_kind BETWEEN 1 AND 4),
    card_no          bigint   NOT NULL DEFAULT 0,
    credential       text     NOT NULL DEFAULT '',
    account_id       integer  NOT NULL DEFAULT 0,
    code             smallint NOT NULL,
    open_ms          integer  NOT NULL DEFAULT 0,
    floors           bigint   NOT NULL DEFAULT 0,
    duress           boolean  NOT NULL DEFAULT false,
    grant_id         integer  NOT NULL DEFAULT 0,
    decided_ms       bigint   NOT NULL,
    committed_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT access_decision_once UNIQUE (terminal_id, source, txn_seq)
);
CREATE INDEX access_decisions_account ON access_decisions (account_id, id);
CREATE INDEX access_decisions_door ON access_decisions (door_id, id);
CREATE INDEX access_decisions_committed_at ON access_decisions USING brin (committed_at)
    WITH (autosummarize = on);

-- Door state events a door terminal reports (sensor and lock), journaled like decisions.
-- event: 1 opened, 2 closed, 3 held_open, 4 forced_open, 5 tamper, 6 duress (a duress button
-- or PIN at the terminal), 7 lock_fault, 8 tamper_cleared, 9 lock_ok.
CREATE TABLE access_door_events (
    id           bigserial PRIMARY KEY,
    terminal_id  integer  NOT NULL,
    source       smallint NOT NULL DEFAULT 0 CHECK (source BETWEEN 0 AND 2),
    txn_seq      bigint   NOT NULL,
    tenant_id    integer  NOT NULL,
    door_id      integer  NOT NULL,
    event        smallint NOT NULL CHECK (event BETWEEN 1 AND 9),
    at_ms        bigint   NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT access_door_event_once UNIQUE (terminal_id, source, txn_seq)
);
CREATE INDEX access_door_events_door ON access_door_events (door_id, id);

-- Alarms. Raised by the switch (in the commit of the decision or event that raises it), cleared
-- by the event that ends it ('forced_open' and 'held_open' by the door's 'closed', 'tamper' by
-- 'tamper_cleared', 'lock_fault' by 'lock_ok'); momentary alarms (illegal_card, apb_violation,
-- duress, patrol_missed) have no ending event and stay until acknowledged. Acknowledging
-- (admin API) sets state 'acknowledged', the note and who; an acknowledged alarm whose ending
-- event comes later is 'cleared'. (terminal_id, source, txn_seq) is the record that raised it.
CREATE TABLE access_alarms (
    id                bigserial PRIMARY KEY,
    tenant_id         integer  NOT NULL,
    kind              text     NOT NULL CHECK (kind IN (
                          'illegal_card', 'forced_open', 'held_open', 'duress', 'tamper',
                          'apb_violation', 'lock_fault', 'patrol_missed')),
    state             text     NOT NULL DEFAULT 'open'
                               CHECK (state IN ('open', 'acknowledged', 'cleared')),
    door_id           integer,
    area_id           integer,
    account_id        integer,
    card_no           bigint,
    terminal_id       integer,
    source            smallint,
    txn_seq           bigint,
    detail            text     NOT NULL DEFAULT '',
    raised_at         timestamptz NOT NULL DEFAULT now(),
    note              text     NOT NULL DEFAULT '',
    acknowledged_by   integer  REFERENCES admin_users (id),
    acknowledged_at   timestamptz,
    cleared_at        timestamptz,
    cleared_by_event  bigint
);
CREATE INDEX access_alarms_unresolved ON access_alarms (tenant_id, id) WHERE state <> 'cleared';
CREATE INDEX access_alarms_door ON access_alarms (door_id, kind) WHERE cleared_at IS NULL;

-- The live state of each door, for the e-map: kept by the switch in the commit of each event
-- or opening decision. state: 'closed', 'open', 'held_open', 'forced_open', 'locked' (mode
-- locked or lockdown), 'unknown' (never reported). `online` is whether its terminal is signed
-- on (the switch sets it on sign-on and when the session ends). alarm: an alarm of the door is
-- not cleared.
CREATE TABLE access_door_states (
    door_id     integer PRIMARY KEY REFERENCES doors (id) ON DELETE CASCADE,
    tenant_id   integer NOT NULL,
    state       text    NOT NULL DEFAULT 'unknown' CHECK (state IN (
                    'closed', 'open', 'held_open', 'forced_open', 'locked', 'unknown')),
    tamper      boolean NOT NULL DEFAULT false,
    lock_fault  boolean NOT NULL DEFAULT false,
    online      boolean NOT NULL DEFAULT false,
    alarm       boolean NOT NULL DEFAULT false,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

-- The change feed learns one more kind of event (protocols/changes.py):
-- 'access_changed': an access rule of tenant_id changed (any table above from access_areas to
-- access_override_holders); `people` lists persons whose PINs changed. Every switch reloads.
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
        'access_changed'
    ));
