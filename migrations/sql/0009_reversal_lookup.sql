-- OneCard schema, version 9: the reversals of one original, found fast. A reversal whose
-- original is older than the idempotency window is decided from the journal (docs/protocol.md
-- section 9.2): the switch reads the original's row and whether a reversal of it is journaled.
-- Partial: only reversal rows (kind 2) are indexed.
CREATE INDEX journal_reversal_original ON journal (terminal_id, ref_txn_seq) WHERE kind = 2;
