-- OneCard schema: resolving a bank exception (issue 11, section 2; docs/finance.md section 3a).
--
-- A reversal advice the bank never acknowledged is handed to a person by the switch as a
-- document of type 'bank_exception' (status 'submitted', no lines, bank_topup_id set; the
-- advice and the top-up in state 'exception'). A finance log-in chooses how it ends, with a
-- note (POST /bank-exceptions/{id}/resolve): the choice is a new version of that document,
-- submitted again (approval step 'resolve'), and another person approves it; its last approval
-- carries it out once:
--   retry     - the bank link is back: the advice goes back to 'pending' (tries 1, so its next
--               send is a repeat, 0421) and the top-up to 'reversal_pending'; the switch's
--               advice repeater sends it again and the bank's acknowledgement ends it 'reversed'.
--   credit    - the bank confirms it debited the salary card: the document's one line credits
--               the wallet from the tenant's bank clearing account at the switch (admin
--               terminal); the top-up ends 'approved' with `lsn` the credit's journal row, the
--               advice 'resolved'.
--   write_off - the bank confirms nothing was debited: nothing moves; the top-up ends
--               'reversed' (as when the bank answers 25 to an advice), the advice 'resolved'.

-- One row per version of the document that carried a choice (a rejected or failed choice is
-- followed by another, in a new version): the history of who proposed what.
CREATE TABLE bank_exception_resolutions (
    document_id  integer     NOT NULL REFERENCES documents (id),
    version      integer     NOT NULL,
    action       text        NOT NULL CHECK (action IN ('retry', 'credit', 'write_off')),
    note         text        NOT NULL DEFAULT '' CHECK (length(note) <= 2000),
    proposed_by  integer     NOT NULL REFERENCES admin_users (id),
    proposed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (document_id, version)
);

-- Widen a CHECK of the form `col IN (...)` by one value, keeping whatever other migrations
-- added: idempotent, never narrows (the function of the finance migration, 0014).
CREATE OR REPLACE FUNCTION pg_temp.widen_check(tbl regclass, cname text, col text, val text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    def text;
    vals text[];
BEGIN
    SELECT pg_get_constraintdef(oid) INTO def FROM pg_constraint
        WHERE conrelid = tbl AND conname = cname;
    IF def IS NULL THEN
        RAISE EXCEPTION 'no constraint % on %', cname, tbl;
    END IF;
    IF position(quote_literal(val) IN def) > 0 THEN
        RETURN;
    END IF;
    SELECT array_agg(m[1] ORDER BY n) INTO vals
        FROM regexp_matches(def, '''([a-z_]+)''', 'g') WITH ORDINALITY AS t(m, n);
    vals := vals || val;
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', tbl, cname);
    EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I CHECK (%I IN (%s))', tbl, cname, col,
                   (SELECT string_agg(quote_literal(v), ', ') FROM unnest(vals) AS v));
END
$$;

-- The step that records the choice (the document's new version, submitted again).
SELECT pg_temp.widen_check('approval_steps', 'approval_steps_decision_check', 'decision',
                           'resolve');
-- An advice a person closed (credit or write-off): never sent again.
SELECT pg_temp.widen_check('bank_advices', 'bank_advices_state_check', 'state', 'resolved');

-- A tenant's bank exception documents, for its list.
CREATE INDEX documents_bank_exceptions ON documents (tenant_id, id)
    WHERE doc_type = 'bank_exception';
