-- OneCard schema, version 4: what the admin API keeps about merchants beyond what the switch
-- needs. Where a merchant sits in the organisation (its tenant's node or a department of it;
-- NULL for merchants made before the admin API: they belong to their tenant's node), its fee
-- rate and its settlement cycle. The switch reads none of these columns.
ALTER TABLE merchants
    ADD COLUMN node_id           integer  REFERENCES org_nodes (id),
    ADD COLUMN fee_rate_bp       integer  NOT NULL DEFAULT 0 CHECK (fee_rate_bp BETWEEN 0 AND 10000),
    ADD COLUMN settlement_cycle  text     NOT NULL DEFAULT 'daily'
                                          CHECK (settlement_cycle IN ('daily', 'weekly', 'monthly'));

-- A merchant's terminals, for the admin API's lists (not on the switch's path: terminals are
-- read once at start-up and then changed through the change feed).
CREATE INDEX terminals_merchant ON terminals (merchant_id, id);

-- Reports add no index to the journal: they read it by commit time (the BRIN index of 0003)
-- and by terminal (journal_request_once), so the switch's journal COPY pays nothing more. The
-- BRIN index summarises each block range as soon as it is full (an autovacuum work item)
-- instead of at the next VACUUM: an unsummarised range matches every query, and on an
-- insert-only journal the next VACUUM may be millions of rows away, so "today" would read them.
ALTER INDEX journal_committed_at SET (autosummarize = on);
