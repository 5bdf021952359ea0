"""Prometheus metrics of the switch. Labels take values from closed sets only (message types,
response-code names), never card, account or terminal ids.

Hot-path counts are added once per group commit, not once per request.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from protocols.ocp import ResponseCode
from switch import limits

REQUEST_TYPES = {1: "purchase", 2: "reversal", 3: "inquiry", 4: "hold", 5: "capture",
                 6: "release", 7: "expiry", 8: "credit", 9: "debit",
                 10: "transfer", -1: "access"}
"""Outcome kinds; -1 is an access decision or door event (switch/_access.py ACCESS_ANSWER)."""
CODE_NAMES = {int(code): code.name.lower() for code in ResponseCode}

requests_total = Counter(
    "onecard_requests_total",
    "Terminal requests answered, by message type and response code.",
    ["type", "code"],
)
protocol_errors_total = Counter(
    "onecard_protocol_errors_total",
    "Frames or sessions refused for a protocol or security reason, by response code.",
    ["code"],
)
journal_batch_rows = Histogram(
    "onecard_journal_batch_rows",
    "Journal rows per group commit.",
    buckets=(1, 4, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384),
)
paused_outstanding_requests = Histogram(
    "onecard_session_paused_outstanding_requests",
    "Requests a connection had outstanding (decided, not yet answered) when it stopped being "
    "read, at the pipeline limit or behind a full journal batch; never above "
    "PIPELINE_REQUESTS_MAX.",
    buckets=(1, 4, 16, 64, 128, limits.PIPELINE_REQUESTS_MAX - 1, limits.PIPELINE_REQUESTS_MAX,
             1024, 4096),
)
journal_commit_seconds = Histogram(
    "onecard_journal_commit_duration_seconds",
    "Time to COPY and COMMIT one group-commit batch.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
)
# Latency of sampled requests (one in `latency_sample_every`, a setting): timing every request
# would cost more than a purchase's whole decision. Stages, each from the switch's clock:
#   decode        frame bytes -> message (MAC check included)
#   authorize     the decision in the balance cache
#   commit_wait   decided -> its group commit returned and the answer is written; the sum of
#     commit_queue  decided -> its batch's COPY sent (waiting for the commit before it)
#     commit        COPY sent -> PostgreSQL answered (COMMIT and WAL flush, and the loop
#                   noticing)
#     answer        PostgreSQL answered -> this answer written to its connection
# and end to end: the chunk of bytes arrived -> the answer is written.
_LATENCY_BUCKETS = (
    0.000002, 0.000005, 0.00001, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.0015,
    0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)
STAGES = ("decode", "authorize", "commit_wait", "commit_queue", "commit", "answer")
request_stage_seconds = Histogram(
    "onecard_request_stage_duration_seconds",
    "Time a sampled request spent in each stage of the switch (decode, authorize, commit_wait "
    "= commit_queue + commit + answer).",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
request_seconds = Histogram(
    "onecard_request_duration_seconds",
    "Sampled requests: bytes arrived at the switch -> answer written, by message type.",
    ["type"],
    buckets=_LATENCY_BUCKETS,
)
journal_batch_bytes = Histogram(
    "onecard_journal_batch_bytes",
    "Bytes of binary COPY data per group commit.",
    buckets=(256, 1024, 4096, 16384, 65536, 131072, 262144, 524288, 1048576, 2097152, 4194304),
)
# Where one group commit's time goes (issue 14): the switch's own code before the COPY is sent
# (joining the batch's records), COPY sent -> PostgreSQL's answer, and releasing the answers
# (building and writing them) after it.
COMMIT_STAGES = ("prepare", "postgres", "release")
journal_commit_stage_seconds = Histogram(
    "onecard_journal_commit_stage_duration_seconds",
    "Time of each stage of a group commit: prepare (switch), postgres (COPY sent -> answered), "
    "release (switch: answers built and written).",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
journal_rows_total = Counter("onecard_journal_rows_total", "Journal rows committed.")
journal_failures_total = Counter(
    "onecard_journal_failures_total", "Group commits that failed (the switch then recovered)."
)
terminals_connected = Gauge(
    "onecard_terminals_connected", "Terminals signed on, by terminal kind.", ["kind"]
)
# ocp.TerminalKind values -> label values; a kind outside the set counts as "other".
TERMINAL_KINDS = {1: "pos", 2: "kiosk", 3: "door", 4: "attendance", 5: "water", 6: "admin"}
connections_open = Gauge("onecard_connections_open", "TCP connections open on the listener.")
ledger_accounts = Gauge("onecard_ledger_accounts", "Accounts in the balance cache.")
ledger_cards = Gauge("onecard_ledger_cards", "Cards in the balance cache's card index.")
ledger_holds = Gauge("onecard_ledger_holds_outstanding", "Holds not yet captured, released or "
                     "expired.")
ledger_memory_bytes = Gauge("onecard_ledger_memory_bytes",
                            "C memory of the balance cache (accounts, merchants, card index).")
ledger_window_entries = Gauge("onecard_ledger_window_entries",
                              "Outcomes kept in the per-terminal idempotency windows.")
ledger_lsn = Gauge("onecard_ledger_lsn", "Journal sequence number last decided.")
durable_lsn = Gauge("onecard_journal_durable_lsn", "Journal sequence number last committed.")
checkpoint_seconds = Histogram(
    "onecard_checkpoint_duration_seconds",
    "Time to snapshot the balance cache and store the checkpoint.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30),
)
# How late the event loop runs a callback due now (a 10 ms probe, limits.LOOP_LAG_PROBE_SECONDS):
# the time something held the loop (a checkpoint's snapshot, a burst of frames, a GC pass).
event_loop_lag_seconds = Histogram(
    "onecard_event_loop_lag_seconds",
    "How late the event loop ran a callback scheduled for now (sampled every 10 ms).",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1,
             2, 5),
)
event_loop_lag_max_seconds = Gauge(
    "onecard_event_loop_lag_max_seconds",
    "The largest event-loop lag since the process started.",
)
recovery_seconds = Gauge(
    "onecard_recovery_duration_seconds", "Time the last start-up recovery took."
)
recovery_replayed_rows = Gauge(
    "onecard_recovery_replayed_rows", "Journal rows replayed by the last recovery."
)

# The change feed: admin-side changes (a card reported lost, a card issued) reaching the cache.
changefeed_lag_seconds = Histogram(
    "onecard_changefeed_lag_seconds",
    "Change events: written to the outbox (PostgreSQL's clock) -> applied in this switch.",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
changefeed_applied_id = Gauge(
    "onecard_changefeed_applied_id", "Last outbox id applied to this switch's caches."
)
CHANGEFEED_SOURCES = ("stream", "database")
changefeed_events_total = Counter(
    "onecard_changefeed_events_total",
    "Change events applied, by where they were read: the Redis stream or the outbox in "
    "PostgreSQL (gaps, polling while Redis is down).",
    ["source"],
)
changefeed_gaps_total = Counter(
    "onecard_changefeed_gaps_total",
    "Gaps in the stream (lost, trimmed or forged entries) caught up from PostgreSQL.",
)
changefeed_refused_total = Counter(
    "onecard_changefeed_events_refused_total",
    "Change events the balance cache could not take (logged as changefeed.event_refused).",
)
changefeed_redis_up = Gauge(
    "onecard_changefeed_redis_up", "1 while the change feed reads Redis, 0 while it polls "
    "PostgreSQL instead."
)
changefeed_published_total = Counter(
    "onecard_changefeed_published_total",
    "Outbox rows this process's relay added to the Redis stream.",
)
changefeed_relay_up = Gauge(
    "onecard_changefeed_relay_up",
    "1 while this process's relay is connected to PostgreSQL and Redis, else 0.",
)
for _source in CHANGEFEED_SOURCES:
    changefeed_events_total.labels(_source)

# The bank link (switch/_banklink.py; docs/bank-link.md). Field-39 labels come from the spec's
# table (anything else counts as "other"); message labels from BANK_MESSAGES.
BANK_MESSAGES = ("network", "topup", "reversal")
BANK_UNMATCHED_REASONS = ("late", "duplicate", "unsolicited")
bank_link_connections = Gauge(
    "onecard_bank_link_connections", "Connections to the bank host signed on (0: link down)."
)
bank_link_available = Gauge(
    "onecard_bank_link_available", "1 while top-ups can be sent to the bank (a connection "
    "signed on and a MAC key exchanged), else 0."
)
bank_roundtrip_seconds = Histogram(
    "onecard_bank_roundtrip_seconds",
    "Bank link: request written -> its answer matched, by message.",
    ["message"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
)
bank_timeouts_total = Counter(
    "onecard_bank_timeouts_total", "Bank requests not answered in time, by message.", ["message"]
)
bank_answers_total = Counter(
    "onecard_bank_answers_total", "Bank answers matched to a request, by message and field 39.",
    ["message", "field39"],
)
bank_unmatched_total = Counter(
    "onecard_bank_unmatched_answers_total",
    "Bank answers dropped: late (after the request timed out), duplicate (already answered), "
    "unsolicited (a STAN never sent).",
    ["reason"],
)
bank_bad_messages_total = Counter(
    "onecard_bank_bad_messages_total",
    "Messages from the bank refused by the codec (bad bitmap, field, MTI, MAC, frame size).",
    ["reason"],
)
bank_reconnects_total = Counter(
    "onecard_bank_reconnects_total", "Connections to the bank lost or refused (then retried)."
)
bank_key_exchanges_total = Counter(
    "onecard_bank_key_exchanges_total", "MAC keys installed by a key exchange with the bank."
)
bank_pending_advices = Gauge(
    "onecard_bank_pending_advices",
    "Reversal advices stored and not yet acknowledged by the bank (set by the top-up flow).",
)
for _message in BANK_MESSAGES:
    bank_timeouts_total.labels(_message)
for _reason in BANK_UNMATCHED_REASONS:
    bank_unmatched_total.labels(_reason)

# Kiosk top-ups (switch/_topup.py). outcome: approved, declined (by the bank), unknown (no
# answer: reversal advice stored), credit_failed (approved, not creditable: reversed),
# refused (declined by the switch's own checks: PIN, caps, no bound card, link down).
topups_total = Counter("onecard_topups_total", "Kiosk top-ups decided, by outcome.", ["outcome"])
topup_pin_failures_total = Counter("onecard_topup_pin_failures_total",
                                   "Top-ups with a wrong or unreadable cardholder PIN.")
bank_advices_sent_total = Counter("onecard_bank_advices_sent_total",
                                  "Reversal advices sent to the bank (first sends and repeats).")
