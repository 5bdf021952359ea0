"""Runtime limits of the switch. Wire limits live in protocols/limits.py.

Every queue, batch and table has a maximum; going over one gives a response code and a counter,
never a crash and never unbounded memory.
"""

# Terminal connections open at once; the listener refuses more.
CONNECTIONS_MAX = 20_000
# Requests of one connection decided but not yet answered (pipelining depth). Past it the
# connection stops being read until answers go out. Equal to the ledger's per-terminal
# idempotency window, so every outstanding request can still be recognised as a repeat.
PIPELINE_REQUESTS_MAX = 256
# Journal rows in one group commit. While the open batch is this full, connections stop being
# read, so backpressure reaches the terminals instead of memory.
JOURNAL_BATCH_MAX = 8192
# How long the journal writer waits for more rows after the first arrives. 0 means "commit as
# soon as the previous commit is done": batches then grow with load by themselves.
GROUP_COMMIT_WINDOW_SECONDS = 0.0
# Deadline for one group commit (COPY + COMMIT). Past it the commit counts as failed.
COMMIT_DEADLINE_SECONDS = 10.0
# Terminal presence entries (sign-ons, sessions ended) written after one group commit
# (switch/_presence.py); the rest go after the next. A sign-on burst of a thousand terminals
# then holds the journal writer a few ms at a time, not tens of ms at once.
PRESENCE_BATCH_MAX = 200
# A group commit slower than this is logged (journal.slow_commit) with its size.
COMMIT_SLOW_SECONDS = 0.05
# Graceful shutdown: in-flight requests get this long to reach their commit.
DRAIN_DEADLINE_SECONDS = 10.0
# Requests whose txn_seq is too old for the in-memory window wait here for a journal look-up.
OLD_LOOKUP_QUEUE_MAX = 1024
# Journal rows fetched per round trip while replaying at start-up.
REPLAY_FETCH_ROWS_MAX = 20_000
# Checkpoints kept in the database (older ones are deleted).
CHECKPOINTS_KEPT_MAX = 3
# A checkpoint's snapshot and balances are sent in pieces of this size, the event loop running
# in between.
CHECKPOINT_CHUNK_BYTES = 1 << 20
CHECKPOINT_BALANCE_ROWS_PER_PIECE = 10_000
# One request in this many is timed per stage for the latency histograms (setting
# latency_sample_every). At 50,000 requests/s that is ~3,000 samples a second.
LATENCY_SAMPLE_EVERY = 16
# Seconds between updates of the balance-cache gauges (cards, holds, windows, memory).
LEDGER_GAUGES_EVERY_SECONDS = 5
# The event-loop lag probe's period (metric onecard_event_loop_lag_seconds).
LOOP_LAG_PROBE_SECONDS = 0.01
# Declines are counted, and summed up in one log line (requests.declined) this often.
DECLINE_SUMMARY_SECONDS = 10
# Phone QR codes that paid and are remembered until they expire (single use; switch/_qr.py).
# Past it new QR purchases are refused BUSY. About 300 bytes each: 60 MB at the maximum, which
# holds 3,000 QR purchases a second with 60 s codes.
QR_NONCES_MAX = 200_000
# Bytes buffered for writing to one terminal before it counts as too slow and is closed.
WRITE_BUFFER_BYTES_MAX = 1 << 20
# The change feed. Outbox rows per PostgreSQL fetch, entries per XREAD and per XADD pipeline.
CHANGEFEED_BATCH_MAX = 500
# Entries a stream keeps (XADD MAXLEN ~): a switch further behind catches up from PostgreSQL.
CHANGEFEED_STREAM_ENTRIES_MAX = 100_000
# Rows the relay republishes into an empty stream (Redis restarted or the key was deleted).
CHANGEFEED_BACKFILL_ROWS_MAX = 1_000
# Without news from Redis the switch reads the outbox this often (setting
# changefeed_poll_seconds); while Redis is down this is how fresh the caches are.
CHANGEFEED_POLL_SECONDS = 0.5
# Deadline of one Redis command (a blocking XREAD gets its block time on top) and of one
# outbox query.
REDIS_DEADLINE_SECONDS = 2.0
CHANGEFEED_QUERY_DEADLINE_SECONDS = 10.0
# After Redis failed, or its stream proved not to be this database's, try it again after this.
CHANGEFEED_REDIS_RETRY_SECONDS = 2.0
# The site lock (switch/_site_lock.py): how long a starting switch waits for it (a switch killed
# a moment ago may still hold it), and how often its connection is checked.
SITE_LOCK_WAIT_SECONDS = 5.0
SITE_LOCK_CHECK_SECONDS = 2.0
# After a transient failure (database unreachable, commit failed, site lock lost) the switch
# tries again after 1 s, doubling up to this, and back to 1 s once it has served again.
RETRY_SECONDS_MAX = 30.0

assert PIPELINE_REQUESTS_MAX <= JOURNAL_BATCH_MAX
assert GROUP_COMMIT_WINDOW_SECONDS < COMMIT_DEADLINE_SECONDS
assert CONNECTIONS_MAX * PIPELINE_REQUESTS_MAX < 50_000_000
assert CHANGEFEED_BACKFILL_ROWS_MAX <= CHANGEFEED_STREAM_ENTRIES_MAX

# Kiosk top-ups waiting for a worker (switch/_topup.py); more are refused BUSY.
TOPUP_QUEUE_MAX = 4096
# Accounts whose last right PIN is remembered (an HMAC, not the PIN): a wrong one is always
# checked with argon2.
PIN_CACHE_ENTRIES_MAX = 1_000_000
# Reversal advices sent in one round of the repeater, and the longest wait between tries.
ADVICE_BATCH_MAX = 100
ADVICE_BACKOFF_SECONDS_MAX = 600.0
# STANs and RRNs a switch reserves at once for bank top-ups (switch/_topup.py StanRrnBlocks).
STAN_BLOCK_MAX = 1000
# Top-up rows written in one statement by the top-up writer (switch/_topup.py TopupWriter).
TOPUP_BATCH_MAX = 1000
# Accounts whose top-up context (bank card, PIN hash, caps) a switch holds in memory
# (switch/_topup.py TopupContexts); past it they are all dropped and read again.
TOPUP_CONTEXTS_MAX = 1_000_000

# Door commands (switch/_door_commands.py; docs/access-admin.md, "Door commands").
DOOR_COMMAND_ACK_SECONDS = 5.0
"""A DoorCommand without its DoorCommandAck this long after it was sent ends 'expired'."""
DOOR_COMMAND_FRESH_SECONDS = 10.0
"""A command that reaches the switch later than this after it was requested (a change feed
catching up after an outage) is not sent: 'expired'. A door opening late is worse than none."""
DOOR_COMMANDS_SEEN_MAX = 10_000
"""Command ids this process has handled, remembered so that a replay of the change feed (a
recovery within the process) never sends one again."""
DOOR_MODE_SYNC_ID_TOP = 2**32 - 1
DOOR_MODE_SYNC_ID_BOTTOM = 2**32 - 1_000_000
"""command_ids of the mode holds the switch pushes by itself (no door_commands row): the top
million of the uint32 range, reused in a cycle; door_commands ids stay far below. Each switch
process starts at a random place in the range (a command_id is unique within one session only,
protocol.md 4.5, but a terminal that wrongly keeps ids across sessions still does not meet
its last session's ids in practice)."""
