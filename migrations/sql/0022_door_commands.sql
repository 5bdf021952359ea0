-- OneCard schema: door commands from the security desk (issue 13; docs/access-admin.md, "Door
-- commands"; docs/protocol.md 4.5, DoorCommand).
--
-- An operator asks a door to open once, hold open, hold locked or go back to normal. The admin
-- API inserts the command ('pending') and, in the same transaction, appends a 'door_command'
-- change event; the switch that holds the door terminal's session sends DoorCommand (tag 36)
-- and records what became of it through its group commit: 'sent', then 'done' or 'failed'
-- (DoorCommandAck, ack_code), 'unsupported' (the terminal answered UNKNOWN_MESSAGE), 'offline'
-- (no session of a door terminal of the door) or 'expired' (no ack in time, or the command
-- reached the switch too late to be sent).
--
-- At most once: a command is sent once, on the session open when it arrives, and never again
-- (not after a reconnect or a switch restart): a door that opens minutes late is worse than
-- one that does not open. An expired or offline command stays so; the operator asks again.
-- The id is the wire's command_id (uint32), hence its upper bound.
CREATE TABLE door_commands (
    id            bigserial   PRIMARY KEY CHECK (id BETWEEN 1 AND 4294967295),
    tenant_id     integer     NOT NULL REFERENCES tenants (id),
    door_id       integer     NOT NULL REFERENCES doors (id) ON DELETE CASCADE,
    action        text        NOT NULL CHECK (action IN (
                                  'open_once', 'hold_open', 'hold_locked', 'normal')),
    open_ms       integer     NOT NULL DEFAULT 0 CHECK (open_ms BETWEEN 0 AND 60000),
    requested_by  integer     REFERENCES admin_users (id),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    note          text        NOT NULL DEFAULT '' CHECK (length(note) <= 500),
    state         text        NOT NULL DEFAULT 'pending' CHECK (state IN (
                                  'pending', 'sent', 'done', 'failed', 'offline', 'unsupported',
                                  'expired')),
    state_at      timestamptz NOT NULL DEFAULT now(),
    ack_code      smallint    CHECK (ack_code BETWEEN 0 AND 255),
    terminal_id   integer,
    reader_no     smallint
);
CREATE INDEX door_commands_door ON door_commands (door_id, id DESC);

-- The change feed learns one more kind of event (protocols/changes.py): 'door_command', a
-- command for the switch holding the door's terminal.
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
        'pin_changed',
        'door_command'
    ));
