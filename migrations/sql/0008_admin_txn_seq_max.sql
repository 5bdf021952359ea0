-- OneCard schema, version 8: the admin terminal's txn_seq never passes what OCP carries
-- (TXN_SEQ_MAX = 2^32 - 1, protocols/limits.py): past it the sequence refuses, loudly, instead
-- of drawing a number the switch would refuse.
ALTER SEQUENCE admin_txn_seq MAXVALUE 4294967295;
