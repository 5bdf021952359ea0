"""Limits of the terminal simulator. Every table, queue and retry loop has a maximum.

Wire limits are in `protocols/limits.py`; these bound what one simulator process holds.
"""

from typing import Final

TERMINALS_MAX: Final = 20_000
"""Simulated terminals in one process (one trio task and one TCP connection each)."""
ACCOUNTS_MAX: Final = 5_000_000
"""Cardholders a scenario may seed."""
TERMINAL_GROUPS_MAX: Final = 256
MERCHANTS_MAX: Final = 1_000
CLASSES_MAX: Final = 255
MEAL_WINDOWS_MAX: Final = 8
PHASES_MAX: Final = 64
VISITS_MAX: Final = 64
PRICES_MAX: Final = 1_000
"""Entries of one `prices_fen` list."""
PHASE_SECONDS_MAX: Final = 7 * 24 * 3600
ARRIVALS_PER_S_MAX: Final = 200_000
TILL_QUEUE_MAX: Final = 10_000
"""Customers waiting at one till; past `[pos] queue_max` a new arrival walks away (balks)."""
RETRIES_MAX: Final = 100
"""Resends of one request (same txn_seq) before the terminal gives up."""
TIMEOUT_SECONDS_MAX: Final = 600.0
BACKOFF_SECONDS_MAX: Final = 600.0
SIGN_ON_CONCURRENCY_MAX: Final = 10_000
ANSWERS_COMPARED_MAX: Final = 16
"""Answers one terminal keeps to compare a repeat's answer with the first one (the terminal
has at most a purchase, its reversal and an inquiry in flight, so 16 is plenty)."""
RECORDED_MAX: Final = 2_000_000
"""Requests and answers kept when a run records them (tests, audits): about 400 MB at most."""
RECEIVE_BYTES_MAX: Final = 65_536
"""Bytes read from a socket at once."""
LATENCY_SECONDS_MAX: Final = 1_000.0
"""Largest latency the histogram tells apart; slower answers count in its last bucket."""

assert TILL_QUEUE_MAX * TERMINALS_MAX <= 200_000_000, "queued customers fit in memory"
assert ANSWERS_COMPARED_MAX >= 3
