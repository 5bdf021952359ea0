-- OneCard schema: biometric template sync for ZKTeco ADMS push devices (issue 12, section 5;
-- docs/adms.md "Templates"). A person's fingerprint and face templates are kept here as opaque
-- bytes (never decoded, never logged, never in an audit row); `onecard adms` pushes them to the
-- devices whose doors the person may open and removes them when the grant or the template goes.
--
-- Who writes what:
--   * biometric_templates: the admin API (enrol, delete) and `onecard adms` (a template enrolled
--     at a device and uploaded by it, for a person of that device's subtree only).
--   * adms_device_templates: `onecard adms` only: what each device was told to hold.
--   * adms_commands (extended): queued by `onecard adms`; attempts and 'failed' for retries.

-- One template per (person, ADMS bio type, number, index):
--   bio_type: the ADMS `Type`: 1 fingerprint, 2 face (near-infrared), 9 visible-light face;
--             and 0 (ours) a comparison photo (BIOPHOTO, a JPEG for visible-light faces).
--   no:       the finger (0..9) for a fingerprint; 0 for a face.
--   idx:      the template's index within that finger or face (near-infrared faces have up to
--             12: the old FACE table's FID).
--   major_ver, minor_ver, format: the algorithm version and format the device reported or the
--             enrolment named (`MajorVer`, `MinorVer`, `Format`); passed on unchanged.
--   data:     the template itself, opaque; at most 64 KiB (protocols/adms.py TEMPLATE_BYTES_MAX).
--   source_serial_no: the device it was enrolled at (NULL: enrolled through the admin API).
CREATE TABLE biometric_templates (
    id                bigserial PRIMARY KEY,
    tenant_id         integer  NOT NULL REFERENCES tenants (id),
    person_id         integer  NOT NULL REFERENCES people (id),
    bio_type          smallint NOT NULL CHECK (bio_type IN (0, 1, 2, 9)),
    no                smallint NOT NULL DEFAULT 0 CHECK (no BETWEEN 0 AND 9),
    idx               smallint NOT NULL DEFAULT 0 CHECK (idx BETWEEN 0 AND 15),
    major_ver         smallint NOT NULL DEFAULT 0 CHECK (major_ver BETWEEN 0 AND 999),
    minor_ver         smallint NOT NULL DEFAULT 0 CHECK (minor_ver BETWEEN 0 AND 999),
    format            smallint NOT NULL DEFAULT 0 CHECK (format BETWEEN 0 AND 99),
    data              bytea    NOT NULL CHECK (octet_length(data) BETWEEN 1 AND 65536),
    source_serial_no  text     REFERENCES adms_devices (serial_no),
    created_by        integer  REFERENCES admin_users (id),
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (person_id, bio_type, no, idx)
);
CREATE INDEX biometric_templates_tenant ON biometric_templates (tenant_id);

-- The templates a device was told to hold (what its queued commands make it hold), by slot:
-- `onecard adms` compares them with the templates of the people the device should hold and
-- queues the difference. template_id has no foreign key on purpose: a deleted template is
-- found here and deleted from the device.
CREATE TABLE adms_device_templates (
    serial_no    text     NOT NULL REFERENCES adms_devices (serial_no),
    pin          text     NOT NULL,
    bio_type     smallint NOT NULL,
    no           smallint NOT NULL,
    idx          smallint NOT NULL,
    template_id  bigint   NOT NULL,
    PRIMARY KEY (serial_no, pin, bio_type, no, idx)
);

-- How a device takes templates: 'legacy' (FINGERTMP for fingerprints, FACE for near-infrared
-- faces) or 'biodata' (the unified BIODATA table; also visible-light faces). Learnt from the
-- device: push protocol version 3 or more at registration, or a BIODATA line it uploaded.
ALTER TABLE adms_devices
    ADD COLUMN bio_dialect text NOT NULL DEFAULT 'legacy'
        CHECK (bio_dialect IN ('legacy', 'biodata'));

-- Commands: a template command is long (a 64 KiB template is 87,384 base64 characters);
-- `summary` is the command without its template (what the admin API shows, and all that is
-- kept once the device acknowledged it); `attempts` counts hand-outs; 'failed' after
-- protocols/adms.py COMMAND_ATTEMPTS_MAX refusals (Return other than 0).
ALTER TABLE adms_commands
    DROP CONSTRAINT adms_commands_command_check,
    ADD CONSTRAINT adms_commands_command_check CHECK (length(command) BETWEEN 1 AND 90000),
    DROP CONSTRAINT adms_commands_status_check,
    ADD CONSTRAINT adms_commands_status_check
        CHECK (status IN ('pending', 'sent', 'done', 'failed')),
    ADD COLUMN summary text NOT NULL DEFAULT '' CHECK (length(summary) <= 512),
    ADD COLUMN attempts smallint NOT NULL DEFAULT 0;
-- Commands queued before this version are user commands: their summary is themselves.
UPDATE adms_commands SET summary = left(command, 512);
DROP INDEX adms_commands_pending;
CREATE INDEX adms_commands_pending ON adms_commands (serial_no, id)
    WHERE status IN ('pending', 'sent');
