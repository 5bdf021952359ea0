-- OneCard schema: door security modes with a biometric second factor, phone QR codes used up at
-- doors, and the alarm lifecycle of momentary alarms (issue 12; docs/access.md).
--
-- Security mode (doors.mode = 'security') asks for a second factor besides the card (or phone
-- QR code): 'pin' (the person's PIN, as before), 'face', 'fingerprint' or 'face_or_fingerprint'
-- (a biometric verification of the same person, ZKTeco's "RF&FACE" / "FP&RF" verify modes).
-- The factors come in one AccessRequest (a face or fingerprint template id with the card number
-- read with it) or in two, on readers of the same door within security_window_s of each other.
ALTER TABLE doors
    DROP CONSTRAINT doors_security_factor_check,
    ADD CONSTRAINT doors_security_factor_check CHECK (security_factor IN (
        'pin', 'face', 'fingerprint', 'face_or_fingerprint')),
    ADD COLUMN security_window_s integer NOT NULL DEFAULT 10
        CHECK (security_window_s BETWEEN 1 AND 120);

-- A door decision on a phone QR code records the card number the code names and, in
-- `credential`, 'qr:<nonce hex>:<forget after, Unix s>' (never the code itself, which could be
-- replayed at a till while valid). At start the switch reads back the codes used by the
-- decisions whose code could still pass the clock, so a replay after a restart is refused
-- QR_USED. This index keeps that read to the recent QR decisions.
CREATE INDEX access_decisions_qr ON access_decisions (committed_at)
    WHERE credential_kind = 4 AND code IN (0, 76, 79);

-- Momentary alarms (illegal_card, apb_violation, duress, patrol_missed) have no ending door
-- event. An operator's acknowledgement ends them ('cleared', cleared_at = the
-- acknowledgement); an apb_violation also ends, unacknowledged, when the same person next
-- passes a door of the same area (the situation that raised it is over): the switch clears it
-- in the commit of that pass. `cleared_reason` says which ended an alarm: 'event' (the door
-- event of cleared_by_event), 'acknowledged' or 'passed'.
ALTER TABLE access_alarms
    ADD COLUMN cleared_reason text CHECK (cleared_reason IN ('event', 'acknowledged', 'passed'));
UPDATE access_alarms SET cleared_reason = 'event' WHERE cleared_by_event IS NOT NULL;
CREATE INDEX access_alarms_apb_open ON access_alarms (account_id, area_id)
    WHERE kind = 'apb_violation' AND cleared_at IS NULL;
