"""Kiosk top-up from a bound bank card (圈存): the switch's side of docs/protocol.md 4.7.

A kiosk's Topup leaves the hot path at once: `TopupService.submit_nowait` queues it (or refuses
BUSY) and a small pool of worker tasks carries it through

    repeat?  -> the stored answer (never a second bank request)
    checks   -> card, account, tenant enabled, bank card bound, PIN (argon2id, off the event
                loop; a try counter locks it), single and daily caps (per card, per account)
    record   -> STAN/RRN drawn and a bank_topups row 'sent' committed BEFORE the bank is asked
    ask      -> BankLink.authorize_topup
    approved -> Ledger.credit from the tenant's bank_clearing account, journaled like any
                credit; answered once durable
    declined -> the mapped code; nothing moves
    unknown  -> (timeout, broken link, unreadable answer) nothing credited; the top-up marked
                reversal_pending and its reversal advice stored in ONE transaction BEFORE the
                kiosk hears "unknown, not credited"

The advice repeater (`run_advices`) sends every pending advice with exponential back-off until
the bank acknowledges it, across restarts (it reads bank_advices), and after
bank_advice_tries_max tries hands it to a person as a 'bank_exception' document. A bank answer
that arrives after its request was given up is matched by the link (by STAN) and never reaches
here: only the awaited answer credits. `recover` settles rows left 'sent' by a crash: credited
(the journal holds the row) -> approved, else -> reversal_pending with an advice.

Purchases never wait on any of this: nothing here runs on a session's data_received path but
the queueing, and a dead bank link only makes Topup decline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg

from ledger_ext import APPROVED, CREDIT, PURCHASE, TXN_SEQ_TOO_OLD, LedgerError
from protocols import ocp
from switch import _metrics as metrics
from switch import limits
from switch._errors import DATABASE_FAILURES

if TYPE_CHECKING:
    from switch._server import Runtime
    from switch._session import TerminalSession

AUTO_TOPUP_TERMINAL = 99_999_999
"""The terminal id of automatic top-ups (自动圈存) in the journal and bank_topups: reserved, never
registered, so no kiosk can send as it. The bank link's field 41 holds 8 digits, so it is the
largest id a bank request can carry (docs/bank-link.md)."""
_RC = ocp.ResponseCode
_OUT = ocp.TopupOutcome
MAIN_WALLET = 0

FIELD39_CODES: dict[str, int] = {
    "00": _RC.APPROVED,
    "51": _RC.BANK_INSUFFICIENT_FUNDS,
    "55": _RC.PIN_INCORRECT,
    "61": _RC.TOPUP_DAILY_LIMIT_EXCEEDED,
    "91": _RC.TOPUP_NOT_AVAILABLE,
    "96": _RC.TOPUP_NOT_AVAILABLE,
}
"""The bank's field 39 -> our code (docs/bank-link.md has the bank's table); any other decline
is BANK_DECLINED with the bank's code in TopupResult.bank_code."""


def code_of_field39(field39: str) -> int:
    return FIELD39_CODES.get(field39, _RC.BANK_DECLINED)


class BankPort(Protocol):
    """What the top-up needs of the bank link (switch/_banklink.py: BankLink)."""

    @property
    def available(self) -> bool: ...
    async def authorize_topup(self, request: Any) -> Any: ...
    async def send_reversal_advice(self, advice: Any, *, repeat: bool) -> bool: ...


@dataclass(frozen=True, slots=True)
class TopupRecord:
    """One top-up as the bank link is told of it (and its reversal advice)."""

    topup_id: int
    tenant_id: int
    terminal_id: int
    txn_seq: int
    card_no: int
    account_id: int
    amount_fen: int
    stan: int
    rrn: str
    pan: str
    """The bank's token for the bound card (card_token of the 0200): never logged."""
    pan_masked: str
    created_s: float
    """When the top-up was recorded (the 0200's local date and time, the advice's too)."""
    bank_terminal_id: int = 0
    """Field 41: the kiosk's name at the bank (`bank_terminal_id`; 0: terminal_id)."""


class PinVerifier:
    """argon2id checks of cardholder PINs, in threads (at most `parallel` at once, each takes
    tens of ms and 19 MiB). A PIN that verified is remembered as an HMAC under a per-process
    key next to the hash it matched, so the next top-up of that card with the same PIN costs a
    microsecond, not an argon2 run; a wrong PIN always costs the full check (and counts)."""

    def __init__(self, parallel: int = 2) -> None:
        from argon2 import PasswordHasher

        self._hasher = PasswordHasher()
        self._key = os.urandom(32)
        self._ok: dict[int, tuple[str, bytes]] = {}
        self._gate = asyncio.Semaphore(parallel)

    def _tag(self, account_id: int, pin: str) -> bytes:
        return hmac.digest(self._key, f"{account_id}:{pin}".encode(), hashlib.sha256)

    async def verify(self, account_id: int, pin_hash: str, pin: str) -> bool:
        known = self._ok.get(account_id)
        tag = self._tag(account_id, pin)
        if known is not None and known[0] == pin_hash and hmac.compare_digest(known[1], tag):
            return True

        def check() -> bool:
            from argon2.exceptions import InvalidHashError, VerificationError

            try:
                return bool(self._hasher.verify(pin_hash, pin))
            except (VerificationError, InvalidHashError):
                return False

        async with self._gate:
            ok = await asyncio.get_running_loop().run_in_executor(None, check)
        if ok:
            if len(self._ok) >= limits.PIN_CACHE_ENTRIES_MAX:
                self._ok.clear()
            self._ok[account_id] = (pin_hash, tag)
        return ok


def hash_pin(pin: str) -> str:
    """The argon2id hash stored in cardholder_pins (the admin API and the seeds call this)."""
    from argon2 import PasswordHasher

    return PasswordHasher().hash(pin)


class StanRrnBlocks:
    """STANs and RRNs for bank requests, drawn from the bank link's counters (migration 0011:
    bank_stan_days, bank_rrn_seq) a block at a time. One draw per top-up would hold the day's
    counter row locked until each commit: every top-up of the site would wait for the one
    before it to reach the disk (measured: 139 top-ups/s). A block's STANs belong to the UTC
    day it was drawn on and are dropped when the day changes; numbers left unused by a
    restart are gaps, which the spec allows (unique, not dense)."""

    def __init__(self, size: int) -> None:
        import collections

        self._size = size
        self._day: Any = None
        self._next = 0
        self._end = -1
        self._rrns: collections.deque[str] = collections.deque()
        self._lock = asyncio.Lock()

    def _ready(self, today: Any) -> bool:
        return self._day == today and self._next <= self._end and bool(self._rrns)

    async def draw(self, pool: asyncpg.Pool) -> tuple[int, str]:
        import datetime as dt

        while True:
            today = dt.datetime.now(dt.UTC).date()
            if self._ready(today):
                stan = self._next
                self._next += 1
                return stan, self._rrns.popleft()
            async with self._lock:
                if not self._ready(today):
                    await self._refill(pool, today)

    async def _refill(self, pool: asyncpg.Pool, today: Any) -> None:
        n = self._size
        async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS), pool.acquire() as conn:
            last = await conn.fetchval(
                "INSERT INTO bank_stan_days (day, last_stan) VALUES ($1, $2)"
                " ON CONFLICT ON CONSTRAINT bank_stan_days_pkey"
                " DO UPDATE SET last_stan = bank_stan_days.last_stan + $2"
                " RETURNING last_stan", today, n)
            rrns = await conn.fetch("SELECT lpad(nextval('bank_rrn_seq')::text, 12, '0') AS r"
                                    " FROM generate_series(1, $1)", n)
        self._day, self._next, self._end = today, int(last) - n + 1, int(last)
        self._rrns.clear()
        self._rrns.extend(r["r"] for r in rrns)


_BATCH_INSERT_SQL = """
INSERT INTO bank_topups (tenant_id, terminal_id, txn_seq, account_id, card_no, bank_card_id,
                         amount_fen, auto, stan, rrn)
SELECT * FROM unnest($1::int[], $2::int[], $3::bigint[], $4::int[], $5::bigint[], $6::int[],
                     $7::bigint[], $8::bool[], $9::int[], $10::text[])
ON CONFLICT (terminal_id, txn_seq) DO NOTHING
RETURNING id, terminal_id, txn_seq
"""
_BATCH_REFUSED_SQL = """
INSERT INTO bank_topup_refusals (tenant_id, terminal_id, txn_seq, account_id, card_no,
                                 amount_fen, auto, code)
SELECT * FROM unnest($1::int[], $2::int[], $3::bigint[], $4::int[], $5::bigint[], $6::bigint[],
                     $7::bool[], $8::smallint[])
"""
_BATCH_APPROVED_SQL = """
UPDATE bank_topups t SET state = 'approved', code = 0, field39 = u.field39, lsn = u.lsn,
       updated_at = now()
FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS u (id, field39, lsn)
WHERE t.id = u.id
"""


class TopupWriter:
    """Group commit for the 'sent' row every top-up writes before the bank is asked (and the
    rare 'approved' update the journal's commit did not carry: a repeated credit), and for
    the rows of refused attempts. Whatever the workers hand in while one statement commits
    goes into the next (one INSERT ... unnest each), so a commit's fsync is shared by every
    top-up of the batch, as the journal shares one among purchases. Each caller's future
    resolves once its row is committed; a refusal is not waited for (no money, no bank)."""

    def __init__(self, log: Any = None) -> None:
        self._inserts: list[tuple[tuple[Any, ...], asyncio.Future[int | None]]] = []
        self._approvals: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._refusals: list[tuple[Any, ...]] = []
        self._wakeup = asyncio.Event()
        self._log = log
        self.idle = asyncio.Event()
        """Set while nothing handed in waits to be written (a graceful stop waits for it)."""
        self.idle.set()

    def refused(self, row: tuple[Any, ...]) -> None:
        """Record a refused attempt (tenant, terminal, txn_seq, account, card, amount, auto,
        code) with the next batch; nobody waits for it."""
        if len(self._refusals) < limits.TOPUP_QUEUE_MAX * 4:  # a stuck database drops them
            self._refusals.append(row)
            self.idle.clear()
            self._wakeup.set()

    async def record(self, row: tuple[Any, ...]) -> int | None:
        """The new row's id, or None if (terminal_id, txn_seq) was recorded already."""
        fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._inserts.append((row, fut))
        self._wakeup.set()
        return await fut

    async def approved(self, topup_id: int, field39: str, lsn: int) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._approvals.append(((topup_id, field39, lsn), fut))
        self._wakeup.set()
        await fut

    async def run(self, pool: asyncpg.Pool) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            inserts, self._inserts = self._inserts[:limits.TOPUP_BATCH_MAX], \
                self._inserts[limits.TOPUP_BATCH_MAX:]
            approvals, self._approvals = self._approvals[:limits.TOPUP_BATCH_MAX], \
                self._approvals[limits.TOPUP_BATCH_MAX:]
            refusals, self._refusals = self._refusals[:limits.TOPUP_BATCH_MAX], \
                self._refusals[limits.TOPUP_BATCH_MAX:]
            if self._inserts or self._approvals or self._refusals:
                self._wakeup.set()
            await asyncio.gather(self._insert(pool, inserts), self._approve(pool, approvals),
                                 self._refuse(pool, refusals))
            if not (self._inserts or self._approvals or self._refusals):
                self.idle.set()

    async def _refuse(self, pool: asyncpg.Pool, batch: list[tuple[Any, ...]]) -> None:
        if not batch:
            return
        try:
            columns = list(zip(*batch, strict=True))
            async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
                await pool.execute(_BATCH_REFUSED_SQL, *columns)
        except DATABASE_FAILURES as exc:  # a record of what did not happen: logged, dropped
            if self._log is not None:
                self._log.warning("topup.refusals_unrecorded", rows=len(batch),
                                  error=str(exc) or type(exc).__name__)

    async def _insert(self, pool: asyncpg.Pool,
                      batch: list[tuple[tuple[Any, ...], asyncio.Future[int | None]]]) -> None:
        if not batch:
            return
        try:
            columns = list(zip(*(row for row, _ in batch), strict=True))
            async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
                got = await pool.fetch(_BATCH_INSERT_SQL, *columns)
        except Exception as exc:  # each caller gets the failure
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        ids = {(r["terminal_id"], r["txn_seq"]): r["id"] for r in got}
        for row, fut in batch:
            if not fut.done():
                fut.set_result(ids.get((row[1], row[2])))

    async def _approve(self, pool: asyncpg.Pool,
                       batch: list[tuple[tuple[Any, ...], asyncio.Future[None]]]) -> None:
        if not batch:
            return
        try:
            columns = list(zip(*(row for row, _ in batch), strict=True))
            async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
                await pool.execute(_BATCH_APPROVED_SQL, *columns)
        except Exception as exc:  # each caller gets the failure
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for _, fut in batch:
            if not fut.done():
                fut.set_result(None)


class _Durable:
    """Answerable for the journal: resolves a future when the credit row is committed."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def answer_nowait(self, outcome: Any) -> None:
        if not self.future.done():
            self.future.set_result(outcome)

    def flush(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


_CONTEXT_SQL = """
SELECT a.id AS account_id, a.tenant_id, a.status, t.utc_offset_s,
       b.id AS bank_card_id, b.pan_masked, b.pan_encrypted, b.bank_token,
       p.pin_hash, p.failed_tries, p.locked,
       coalesce(s.enabled, true) AS enabled,
       coalesce(s.single_max_fen, 100000) AS single_max_fen,
       coalesce(s.daily_card_max_fen, 200000) AS daily_card_max_fen,
       coalesce(s.daily_account_max_fen, 300000) AS daily_account_max_fen,
       sa.merchant_id AS clearing
FROM accounts a
JOIN tenants t ON t.id = a.tenant_id
LEFT JOIN bank_cards b ON b.account_id = a.id AND b.unbound_at IS NULL
LEFT JOIN cardholder_pins p ON p.account_id = a.id
LEFT JOIN tenant_bank_settings s ON s.tenant_id = a.tenant_id
LEFT JOIN system_accounts sa ON sa.tenant_id = a.tenant_id AND sa.purpose = 'bank_clearing'
WHERE a.id = $1
"""
# Today's top-ups of the account, per card, that may have moved money (the tenant's local
# day); declined ones do not count.
_DAY_SUMS_SQL = """
SELECT card_no, sum(amount_fen)::bigint AS fen
FROM bank_topups
WHERE account_id = $1 AND state <> 'declined' AND created_at >= $2
GROUP BY card_no
"""
_HIGHEST_SEQ_SQL = "SELECT max(txn_seq) FROM bank_topups WHERE terminal_id = $1"
_BANK_TERMINAL_SQL = """
WITH given AS (UPDATE terminals SET bank_terminal_id = nextval('bank_terminal_id_seq')
               WHERE id = $1 AND bank_terminal_id IS NULL RETURNING bank_terminal_id)
SELECT bank_terminal_id FROM given
UNION ALL SELECT bank_terminal_id FROM terminals WHERE id = $1 AND bank_terminal_id IS NOT NULL
"""
BANK_TERMINAL_DIRECT_MAX = 89_999_999
"""A kiosk with an id up to this is field 41 itself; any other is given a number of
90,000,000-99,999,998 once (terminals.bank_terminal_id, docs/bank-link.md "Field 41")."""


class _DaySums:
    """An account's top-ups of one local day that may have moved money, per card."""

    __slots__ = ("cards", "day_start")

    def __init__(self, day_start: Any, cards: dict[int, int]) -> None:
        self.day_start = day_start
        self.cards = cards


class TopupContexts:
    """What a kiosk top-up is decided on, held in memory so that a top-up reads nothing from
    PostgreSQL: per account its row of _CONTEXT_SQL (bound bank card, PIN hash and tries,
    tenant settings and caps, clearing account), per account today's sums per card, per kiosk
    the highest txn_seq recorded (a higher one cannot be a repeat) and its bank terminal id.

    Each is read from the database the first time it is needed (so at every start and
    recovery, when the service is made anew, everything is read again) and then kept current
    by this switch, the one writer of top-ups (a sum grows when a 'sent' row is recorded and
    shrinks when the bank declines it, as the database's sum does), and by the change feed
    for what others write: a bound or unbound bank card, a PIN set, an account's status, a
    tenant's bank settings or offset drop what they touch (`changed`). A read that started
    before such an event is not kept (the generation counter). Without the change feed
    nothing is kept but the sums and the sequence numbers, which only this switch writes."""

    def __init__(self, keep: bool) -> None:
        self._keep = keep
        self._rows: dict[int, dict[str, Any]] = {}
        self._generation = 0
        self._sums: dict[int, _DaySums] = {}
        self.highest_seq: dict[int, int] = {}
        self._bank_terminals: dict[int, int] = {}

    def changed(self, event: Any) -> None:
        """A change event that alters a context (switch/_change_events.py _TOPUP_EVENTS)."""
        self._generation += 1
        account_id = getattr(event, "account_id", None)
        if account_id is not None:
            self._rows.pop(account_id, None)
        else:  # a tenant's settings or offset: rare, drop them all
            self._rows.clear()

    async def context(self, pool: asyncpg.Pool, account_id: int) -> dict[str, Any] | None:
        row = self._rows.get(account_id)
        if row is not None:
            return row
        generation = self._generation
        async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
            got = await pool.fetchrow(_CONTEXT_SQL, account_id)
        if got is None:
            return None
        row = dict(got)
        # A clearing account appears without an event: not kept until there is one.
        if self._keep and generation == self._generation and row["clearing"] is not None:
            if len(self._rows) >= limits.TOPUP_CONTEXTS_MAX:
                self._rows.clear()
            self._rows[account_id] = row
        return row

    async def day_sums(self, pool: asyncpg.Pool, account_id: int, card_no: int,
                       day_start: Any) -> tuple[int, int]:
        """(the card's, the account's) fen of the local day starting at day_start; the caller
        holds the account's lock."""
        sums = self._sums.get(account_id)
        if sums is None or sums.day_start != day_start:
            async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
                rows = await pool.fetch(_DAY_SUMS_SQL, account_id, day_start)
            sums = self._sums[account_id] = _DaySums(day_start,
                                                     {r["card_no"]: r["fen"] for r in rows})
        return sums.cards.get(card_no, 0), sum(sums.cards.values())

    def add(self, account_id: int, card_no: int, fen: int) -> None:
        """A 'sent' row recorded (fen > 0) or one declined by the bank (fen < 0)."""
        sums = self._sums.get(account_id)
        if sums is not None:
            sums.cards[card_no] = sums.cards.get(card_no, 0) + fen

    def may_be_recorded(self, terminal_id: int, txn_seq: int) -> bool | None:
        """False when (terminal, txn_seq) cannot be in bank_topups (above the kiosk's highest
        recorded one); True when it may; None when the kiosk's highest is not known yet."""
        highest = self.highest_seq.get(terminal_id)
        return None if highest is None else txn_seq <= highest

    async def load_highest(self, pool: asyncpg.Pool, terminal_id: int) -> None:
        async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
            got = await pool.fetchval(_HIGHEST_SEQ_SQL, terminal_id)
        highest = self.highest_seq.get(terminal_id, 0)
        self.highest_seq[terminal_id] = max(highest, int(got or 0))

    def recorded(self, terminal_id: int, txn_seq: int) -> None:
        if terminal_id in self.highest_seq:
            self.highest_seq[terminal_id] = max(self.highest_seq[terminal_id], txn_seq)

    async def bank_terminal_id(self, pool: asyncpg.Pool, terminal_id: int) -> int:
        """Field 41 of a kiosk's requests (docs/bank-link.md "Field 41")."""
        if terminal_id <= BANK_TERMINAL_DIRECT_MAX or terminal_id == AUTO_TOPUP_TERMINAL:
            return terminal_id
        known = self._bank_terminals.get(terminal_id)
        if known is None:
            async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
                known = await pool.fetchval(_BANK_TERMINAL_SQL, terminal_id)
            if known is None:
                raise LookupError(f"terminal {terminal_id} is not registered")
            self._bank_terminals[terminal_id] = int(known)
        return int(known)
_ROW_SQL = "SELECT * FROM bank_topups WHERE terminal_id = $1 AND txn_seq = $2"
_BALANCES_SQL = "SELECT main_fen, subsidy_fen FROM journal WHERE lsn = $1"
_ADVICE_SQL = """
WITH t AS (UPDATE bank_topups SET state = 'reversal_pending', code = $2, field39 = $3,
           updated_at = now() WHERE id = $1 RETURNING id, tenant_id)
INSERT INTO bank_advices (topup_id, tenant_id, reason) SELECT id, tenant_id, $4 FROM t
ON CONFLICT (topup_id) DO NOTHING
"""
_DUE_SQL = """
SELECT v.id AS advice_id, v.tries, v.reason, t.id AS topup_id, t.tenant_id, t.terminal_id,
       t.txn_seq, t.card_no, t.account_id, t.amount_fen, t.stan, t.rrn, t.created_at,
       b.pan_masked, b.pan_encrypted, b.bank_token,
       coalesce(k.bank_terminal_id, t.terminal_id) AS bank_terminal_id
FROM bank_advices v JOIN bank_topups t ON t.id = v.topup_id
JOIN bank_cards b ON b.id = t.bank_card_id
LEFT JOIN terminals k ON k.id = t.terminal_id
WHERE v.state = 'pending' AND v.next_at <= now()
ORDER BY v.next_at LIMIT $1
"""


_WORKER_FAILURES: tuple[type[Exception], ...] = (*DATABASE_FAILURES, LookupError)
"""What a top-up worker answers SYSTEM_ERROR for (LookupError: a kiosk without a bank
terminal id, TopupContexts.bank_terminal_id)."""


class TopupService:
    """Kiosk top-ups of one switch: a bounded queue, worker tasks, the advice repeater."""

    def __init__(self, runtime: Runtime, link: BankPort,
                 bank_request: Callable[[TopupRecord], Any],
                 bank_advice: Callable[[TopupRecord], Any],
                 open_pan: Callable[[int, bytes | None, str | None], str]) -> None:
        self._rt = runtime
        self.link = link
        self._bank_request = bank_request
        self._bank_advice = bank_advice
        self._open_pan = open_pan
        s = runtime.settings
        self._settings = s
        self._queue: asyncio.Queue[tuple[int, Any, bytes]] = asyncio.Queue(
            limits.TOPUP_QUEUE_MAX)
        # (terminal_id, txn_seq) being worked on -> the sessions that asked (the first and any
        # repeat that came meanwhile): each gets the one answer.
        self._inflight: dict[tuple[int, int], list[TerminalSession]] = {}
        self._account_locks: dict[int, asyncio.Lock] = {}
        self._pins = PinVerifier()
        self._advices_wakeup = asyncio.Event()
        self._auto_asked: set[tuple[int, int]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._numbers = StanRrnBlocks(limits.STAN_BLOCK_MAX)
        self._writer = TopupWriter(runtime.log)
        self.contexts = TopupContexts(keep=bool(getattr(s, "changefeed", False)))
        runtime.master.topup_listeners.append(self.contexts.changed)
        self.pool: asyncpg.Pool | None = None

    # -- hot path (a session's data_received) ------------------------------------------------

    def submit_nowait(self, session: TerminalSession, ev: ocp.Topup) -> None:
        key = (session.terminal_id, ev.txn_seq)
        waiting = self._inflight.get(key)
        if waiting is not None:  # a repeat while the first is at the bank: one answer for both
            waiting.append(session)
            return
        try:
            self._queue.put_nowait((session.terminal_id, ev, session.pin_key))
            self._idle.clear()
        except asyncio.QueueFull:
            session.refuse_topup(_RC.BUSY, ev.txn_seq, "too many top-ups in progress: retry "
                                 "later with the same txn_seq")
            return
        self._inflight[key] = [session]

    def after_commit(self, replies: list[tuple[Any, Any]], auto: dict[int, tuple[int, int]]
                     ) -> None:
        """Automatic top-up (自动圈存): called after a batch's answers went out (the purchase
        never waits), with the accounts that chose it. A purchase that left the balance
        below the threshold queues one top-up of the account, at most one a day."""
        for _, o in replies:
            if o.kind != PURCHASE or o.code != APPROVED or o.repeat:
                continue
            chosen = auto.get(o.account_id)
            if chosen is None or o.main_fen + o.subsidy_fen >= chosen[0]:
                continue
            day = _local_day_start(time.time(), 0).date()  # per UTC day in memory; the
            key = (o.account_id, day.toordinal())          # database keeps the local day
            if key in self._auto_asked:
                continue
            if len(self._auto_asked) >= limits.TOPUP_QUEUE_MAX * 16:
                self._auto_asked.clear()
            self._auto_asked.add(key)
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait((AUTO_TOPUP_TERMINAL, (o.account_id, o.card_no,
                                                              chosen[1]), b""))

    async def drain(self) -> None:
        """Wait until every kiosk top-up taken in has its answer (at a graceful stop: the
        sessions no longer read, so none comes in). The caller sets the deadline; one cut
        short is settled at the next start (recover); refusals not yet written are written."""
        await self._idle.wait()
        await self._writer.idle.wait()

    # -- workers ------------------------------------------------------------------------------

    async def run_workers(self, pool: asyncpg.Pool) -> None:
        """The workers, on a pool of their own (topup_pool_max connections): a top-up waits
        on several commits, and the switch's small pool serves its other tasks."""
        s = self._settings
        own = await asyncpg.create_pool(
            s.dsn, min_size=1, max_size=s.topup_pool_max, reset=_no_reset,
            server_settings={"application_name": "onecard-switch-topups"})
        self.pool = own
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._writer.run(own), name="topup-writer")
                for n in range(s.topup_workers):
                    tg.create_task(self._worker(own), name=f"topup-{n}")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(own.close(), 5)

    async def _worker(self, pool: asyncpg.Pool) -> None:
        while True:
            tid, ev, pin_key = await self._queue.get()
            if tid == AUTO_TOPUP_TERMINAL:
                try:
                    await self._auto_topup(pool, *ev)
                except DATABASE_FAILURES as exc:
                    self._rt.log.warning("topup.auto_failed", account_id=ev[0],
                                         error=str(exc) or type(exc).__name__)
                continue
            key = (tid, ev.txn_seq)
            try:
                msg = await self._decide(pool, tid, ev, pin_key)
            except _WORKER_FAILURES as exc:
                self._rt.log.warning("topup.database_failed", terminal_id=tid,
                                     txn_seq=ev.txn_seq, error=str(exc) or type(exc).__name__)
                msg = ocp.Error(_RC.SYSTEM_ERROR, ev.txn_seq, "retry later with the same "
                                "txn_seq")
            for session in self._inflight.pop(key, ()):
                session.send_topup_answer(msg)
            if not self._inflight:
                self._idle.set()

    async def _decide(self, pool: asyncpg.Pool, tid: int, ev: ocp.Topup, pin_key: bytes
                      ) -> ocp.Message:
        seq = ev.txn_seq
        contexts = self.contexts
        maybe = contexts.may_be_recorded(tid, seq)
        if maybe is None:  # the kiosk's first top-up since the start
            await contexts.load_highest(pool, tid)
            maybe = contexts.may_be_recorded(tid, seq)
        if maybe:  # at or below the kiosk's highest recorded txn_seq: maybe a repeat
            row = await self._fetchrow(pool, _ROW_SQL, tid, seq)
            if row is not None:
                return await self._stored_answer(pool, row)
        ledger = self._rt.ledger
        if seq <= ledger.last_txn_seq(tid) - ocp_limits_window():
            return ocp.Error(TXN_SEQ_TOO_OLD, seq, "txn_seq is too old and not a top-up of "
                             "this kiosk")
        bound = ledger.card_account(ev.card_no)
        if bound is None:  # bad input: no row
            return self._declined(seq, _RC.UNKNOWN_CARD)
        account_id, cancelled = bound
        if cancelled:
            return self._refused(tid, ev, account_id, _RC.CARD_CANCELLED)
        lock = self._account_locks.setdefault(account_id, asyncio.Lock())
        try:
            async with lock:  # one top-up of an account at a time: the daily caps hold
                return await self._decide_account(pool, tid, ev, pin_key, account_id)
        finally:
            if not lock.locked() and len(self._account_locks) > limits.TOPUP_QUEUE_MAX:
                self._account_locks.pop(account_id, None)

    async def _decide_account(self, pool: asyncpg.Pool, tid: int, ev: ocp.Topup,
                              pin_key: bytes, account_id: int) -> ocp.Message:
        seq = ev.txn_seq
        c = await self.contexts.context(pool, account_id)
        if c is None:
            return self._declined(seq, _RC.UNKNOWN_CARD)
        if c["status"] == 3:
            return self._refused(tid, ev, account_id, _RC.ACCOUNT_CLOSED, c["tenant_id"])
        if not c["enabled"] or c["clearing"] is None or not self.link.available:
            return self._refused(tid, ev, account_id, _RC.TOPUP_NOT_AVAILABLE, c["tenant_id"])
        if c["bank_card_id"] is None:
            return self._refused(tid, ev, account_id, _RC.NO_BANK_CARD, c["tenant_id"])
        code = await self._check_pin(pool, c, tid, ev, pin_key)
        if code:
            return self._refused(tid, ev, account_id, code, c["tenant_id"])
        if c["single_max_fen"] and ev.amount_fen > c["single_max_fen"]:
            return self._refused(tid, ev, account_id, _RC.TOPUP_LIMIT_EXCEEDED, c["tenant_id"])
        day_start = _local_day_start(time.time(), c["utc_offset_s"])
        card_fen, account_fen = await self.contexts.day_sums(pool, account_id, ev.card_no,
                                                             day_start)
        if ((c["daily_card_max_fen"] and card_fen + ev.amount_fen > c["daily_card_max_fen"])
                or (c["daily_account_max_fen"] and account_fen + ev.amount_fen
                    > c["daily_account_max_fen"])):
            return self._refused(tid, ev, account_id, _RC.TOPUP_DAILY_LIMIT_EXCEEDED,
                                 c["tenant_id"])
        rec = await self._record(pool, c, tid, seq, ev.card_no, ev.amount_fen, auto=False)
        if rec is None:  # another switch process recorded it meanwhile: its answer
            row = await self._fetchrow(pool, _ROW_SQL, tid, seq)
            assert row is not None
            return await self._stored_answer(pool, row)
        return await self._ask_bank(pool, rec, c["clearing"])

    async def _auto_topup(self, pool: asyncpg.Pool, account_id: int, card_no: int,
                          amount_fen: int) -> None:
        """One automatic top-up: the cardholder authorised it when choosing it (no PIN); the
        tenant's switch and caps apply as at a kiosk; once per account and local day."""
        log = self._rt.log
        async with self._account_locks.setdefault(account_id, asyncio.Lock()):
            c = await self.contexts.context(pool, account_id)
            if (c is None or c["status"] == 3 or not c["enabled"] or c["clearing"] is None
                    or c["bank_card_id"] is None or not self.link.available):
                log.info("topup.auto_skipped", account_id=account_id)
                return
            day_start = _local_day_start(time.time(), c["utc_offset_s"])
            first = await self._fetchval(
                pool, "INSERT INTO bank_auto_topups (account_id, local_day) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING true", account_id,
                (day_start + _dt_offset(c["utc_offset_s"])).date())
            if not first:
                return  # today's automatic top-up happened already (or another switch's)
            card_fen, account_fen = await self.contexts.day_sums(pool, account_id, card_no,
                                                                 day_start)
            over = 0
            if c["single_max_fen"] and amount_fen > c["single_max_fen"]:
                over = _RC.TOPUP_LIMIT_EXCEEDED
            elif ((c["daily_card_max_fen"] and card_fen + amount_fen > c["daily_card_max_fen"])
                  or (c["daily_account_max_fen"] and account_fen + amount_fen
                      > c["daily_account_max_fen"])):
                over = _RC.TOPUP_DAILY_LIMIT_EXCEEDED
            seq = await self._fetchval(pool, "SELECT nextval('bank_auto_txn_seq')")
            if over:  # refused like a kiosk's: a row finance sees, the bank never asked
                log.info("topup.auto_over_cap", account_id=account_id, amount_fen=amount_fen)
                self._writer.refused((c["tenant_id"], AUTO_TOPUP_TERMINAL, seq, account_id,
                                      card_no, amount_fen, True, int(over)))
                return
            rec = await self._record(pool, c, AUTO_TOPUP_TERMINAL, seq, card_no, amount_fen,
                                     auto=True)
            if rec is None:
                return
            await self._execute(pool, "UPDATE bank_auto_topups SET topup_id = $3"
                                " WHERE account_id = $1 AND local_day = $2", account_id,
                                (day_start + _dt_offset(c["utc_offset_s"])).date(),
                                rec.topup_id)
            answer = await self._ask_bank(pool, rec, c["clearing"])
        log.info("topup.auto", account_id=account_id, topup_id=rec.topup_id,
                 code=int(getattr(answer, "code", -1)))

    async def _check_pin(self, pool: asyncpg.Pool, c: Any, tid: int, ev: ocp.Topup,
                         pin_key: bytes) -> int:
        """0 if the PIN is right; else PIN_INCORRECT or PIN_TRIES_EXCEEDED (tries counted)."""
        if c["pin_hash"] is None:
            return _RC.PIN_INCORRECT
        if c["locked"]:
            return _RC.PIN_TRIES_EXCEEDED
        try:
            pin = ocp.open_pin(pin_key, ev.pin_block, terminal_id=tid, txn_seq=ev.txn_seq,
                               card_no=ev.card_no, amount_fen=ev.amount_fen)
            ok = await self._pins.verify(c["account_id"], c["pin_hash"], pin)
        except ocp.PinBlockInvalid as exc:
            self._rt.log.warning("ocp.security_violation", reason="pin_block_invalid",
                                 terminal_id=tid, txn_seq=ev.txn_seq, detail=str(exc))
            ok = False
        if ok:
            if c["failed_tries"]:
                await self._execute(pool, "UPDATE cardholder_pins SET failed_tries = 0"
                                    " WHERE account_id = $1", c["account_id"])
                c["failed_tries"] = 0
            return 0
        tries = await self._fetchval(
            pool, "UPDATE cardholder_pins SET failed_tries = failed_tries + 1,"
            " locked = failed_tries + 1 >= $2, updated_at = now() WHERE account_id = $1"
            " RETURNING failed_tries", c["account_id"], self._settings.pin_tries_max)
        metrics.topup_pin_failures_total.inc()
        if tries is not None:  # the context held in memory follows the database
            c["failed_tries"] = tries
            c["locked"] = tries >= self._settings.pin_tries_max
        if tries is not None and tries >= self._settings.pin_tries_max:
            self._rt.log.warning("topup.pin_locked", account_id=c["account_id"],
                                 terminal_id=tid)
            return _RC.PIN_TRIES_EXCEEDED
        return _RC.PIN_INCORRECT

    async def _record(self, pool: asyncpg.Pool, c: Any, tid: int, seq: int, card_no: int,
                      amount_fen: int, *, auto: bool) -> TopupRecord | None:
        """Draw STAN/RRN and commit the 'sent' row: None if (tid, seq) is recorded already."""
        bank_tid = await self.contexts.bank_terminal_id(pool, tid)
        stan, rrn = await self._numbers.draw(pool)
        topup_id = await self._writer.record((c["tenant_id"], tid, seq, c["account_id"], card_no,
                                              c["bank_card_id"], amount_fen, auto, stan, rrn))
        if topup_id is None:
            return None
        self.contexts.recorded(tid, seq)
        self.contexts.add(c["account_id"], card_no, amount_fen)
        pan = self._open_pan(c["account_id"], c["pan_encrypted"], c["bank_token"])
        return TopupRecord(topup_id, c["tenant_id"], tid, seq, card_no, c["account_id"],
                           amount_fen, stan, rrn, pan, c["pan_masked"], time.time(), bank_tid)

    async def _ask_bank(self, pool: asyncpg.Pool, rec: TopupRecord, clearing: int
                        ) -> ocp.Message:
        log = self._rt.log
        field39 = ""
        try:
            async with asyncio.timeout(self._settings.topup_deadline_seconds):
                answer = await self.link.authorize_topup(self._bank_request(rec))
            outcome = str(getattr(answer, "outcome", "unknown"))
            field39 = str(getattr(answer, "field39", "") or "")
            reason = str(getattr(answer, "reason", "") or "timeout")
        except TimeoutError:
            outcome, reason = "unknown", "timeout"
        except (OSError, ConnectionError, EOFError) as exc:
            outcome, reason = "unknown", "link_down"
            log.warning("topup.link_failed", topup_id=rec.topup_id, error=str(exc))
        if outcome == "approved":
            return await self._credit(pool, rec, clearing, field39)
        if outcome == "declined":
            code = code_of_field39(field39)
            if code == _RC.APPROVED:
                code = _RC.BANK_DECLINED
            await self._execute(pool, "UPDATE bank_topups SET state = 'declined', code = $2,"
                                " field39 = $3, updated_at = now() WHERE id = $1",
                                rec.topup_id, code, field39)
            self.contexts.add(rec.account_id, rec.card_no, -rec.amount_fen)
            metrics.topups_total.labels("declined").inc()
            log.info("topup.declined", topup_id=rec.topup_id, terminal_id=rec.terminal_id,
                     txn_seq=rec.txn_seq, code=int(code), field39=field39,
                     card=rec.pan_masked)
            return self._result(rec.txn_seq, code, _OUT.DECLINED, bank_code=field39)
        # The link's reasons (switch/_banklink.py BankAnswer.reason) in the advice's words.
        if "match" in reason or "field 39" in reason:
            reason = "unparseable"
        elif "link" in reason or "connection" in reason:
            reason = "link_down"
        elif reason not in ("timeout", "link_down", "unparseable"):
            reason = "timeout"
        await self._store_advice(pool, rec.topup_id, _RC.BANK_NO_ANSWER, field39, reason)
        metrics.topups_total.labels("unknown").inc()
        log.warning("topup.unknown", topup_id=rec.topup_id, terminal_id=rec.terminal_id,
                    txn_seq=rec.txn_seq, reason=reason, card=rec.pan_masked)
        return self._result(rec.txn_seq, _RC.BANK_NO_ANSWER, _OUT.UNKNOWN)

    async def _credit(self, pool: asyncpg.Pool, rec: TopupRecord, clearing: int,
                      field39: str) -> ocp.Message:
        rt = self._rt
        o = rt.ledger.credit(rec.terminal_id, rec.txn_seq, rec.card_no, clearing, MAIN_WALLET,
                             rec.amount_fen, int(time.time()))
        approved = o.code == APPROVED and o.kind == CREDIT and o.lsn
        if o.lsn and not o.repeat:
            done = _Durable()
            if approved:  # the credit's row and the 'approved' state: one commit
                rt.journal.submit_topup(done, o, (rec.topup_id, field39 or None, o.lsn))
            else:
                rt.journal.submit(done, o)
            await done.future
        elif o.repeat:
            await rt.journal.wait_durable(o.lsn)
            if approved:
                await self._writer.approved(rec.topup_id, field39, o.lsn)
        if approved:
            metrics.topups_total.labels("approved").inc()
            return self._result(rec.txn_seq, APPROVED, _OUT.APPROVED, o.amount_fen, o.main_fen,
                                o.subsidy_fen, field39)
        # Approved by the bank, refused by the ledger (or the txn_seq named something else):
        # nothing credited; the bank gives the money back on our reversal advice.
        code = o.code if o.code and o.kind == CREDIT else _RC.BANK_DECLINED
        await self._store_advice(pool, rec.topup_id, code, field39, "credit_failed")
        metrics.topups_total.labels("credit_failed").inc()
        rt.log.warning("topup.credit_failed", topup_id=rec.topup_id, code=int(o.code),
                       kind=int(o.kind), repeat=bool(o.repeat))
        return self._result(rec.txn_seq, code, _OUT.DECLINED)

    async def _store_advice(self, pool: asyncpg.Pool, topup_id: int, code: int, field39: str,
                            reason: str) -> None:
        """Durable BEFORE the kiosk hears: top-up reversal_pending and its advice, one tx."""
        await self._execute(pool, _ADVICE_SQL, topup_id, code, field39 or None, reason)
        self._advices_wakeup.set()

    async def _stored_answer(self, pool: asyncpg.Pool, row: Any) -> ocp.Message:
        """The answer a recorded top-up got (a repeat of the kiosk request)."""
        seq = row["txn_seq"]
        state = row["state"]
        field39 = row["field39"] or ""
        if state == "approved":
            bal = await self._fetchrow(pool, _BALANCES_SQL, row["lsn"])
            main, subsidy = (bal["main_fen"], bal["subsidy_fen"]) if bal else (0, 0)
            return self._result(seq, APPROVED, _OUT.APPROVED, row["amount_fen"], main, subsidy,
                                field39)
        if state == "declined":
            return self._result(seq, row["code"], _OUT.DECLINED, bank_code=field39)
        if state == "sent":  # at the bank now in another process, or left by a crash
            return ocp.Error(_RC.BUSY, seq, "the top-up is in progress: retry later with the "
                             "same txn_seq")
        code = row["code"] or _RC.BANK_NO_ANSWER
        outcome = _OUT.UNKNOWN if code == _RC.BANK_NO_ANSWER else _OUT.DECLINED
        return self._result(seq, code, outcome, bank_code=field39)

    def _declined(self, seq: int, code: int) -> ocp.Message:
        metrics.topups_total.labels("refused").inc()
        return self._result(seq, code, _OUT.DECLINED)

    def _refused(self, tid: int, ev: ocp.Topup, account_id: int, code: int,
                 tenant_id: int | None = None) -> ocp.Message:
        """Refused by the switch before the bank was asked: answered now, its row in
        bank_topup_refusals with the next group commit (migration 0017)."""
        if tenant_id is None:
            try:
                tenant_id = self._rt.ledger.account(account_id).tenant_id
            except LedgerError:  # no account in the ledger: no row
                tenant_id = None
        if tenant_id is not None:
            self._writer.refused((tenant_id, tid, ev.txn_seq, account_id, ev.card_no,
                                  ev.amount_fen, False, int(code)))
        return self._declined(ev.txn_seq, code)

    @staticmethod
    def _result(seq: int, code: int, outcome: int, amount_fen: int = 0, main_fen: int = 0,
                subsidy_fen: int = 0, bank_code: str = "") -> ocp.TopupResult:
        return ocp.TopupResult(seq, int(code), int(outcome), amount_fen if code == 0 else 0,
                               main_fen + subsidy_fen, main_fen, subsidy_fen, bank_code[:4])

    # -- crash recovery and the advice repeater -----------------------------------------------

    async def recover(self, pool: asyncpg.Pool) -> int:
        """Settle top-ups left 'sent' by a crash (none is in flight before the workers run):
        credited -> approved (the journal row is the truth), else reversal_pending + advice."""
        rows = await self._fetch(
            pool, "SELECT t.id, j.lsn, j.code FROM bank_topups t LEFT JOIN journal j"
            " ON j.terminal_id = t.terminal_id AND j.txn_seq = t.txn_seq AND j.kind = 8"
            " WHERE t.state = 'sent'")
        for r in rows:
            if r["lsn"] is not None and r["code"] == APPROVED:
                await self._execute(pool, "UPDATE bank_topups SET state = 'approved', code = 0,"
                                    " lsn = $2, updated_at = now() WHERE id = $1", r["id"],
                                    r["lsn"])
            else:
                await self._store_advice(pool, r["id"], _RC.BANK_NO_ANSWER, "", "restart")
        if rows:
            self._rt.log.info("topup.recovered", settled=len(rows))
        return len(rows)

    async def run_advices(self, pool: asyncpg.Pool) -> None:
        s = self._settings
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(s.bank_advice_poll_seconds):
                    await self._advices_wakeup.wait()
            self._advices_wakeup.clear()
            try:
                due = await self._fetch(pool, _DUE_SQL, limits.ADVICE_BATCH_MAX)
                pending = await self._fetchval(
                    pool, "SELECT count(*) FROM bank_advices WHERE state = 'pending'")
                metrics.bank_pending_advices.set(pending or 0)
            except DATABASE_FAILURES as exc:
                self._rt.log.warning("topup.advices_unreadable", error=str(exc))
                continue
            if not due or not self.link.available:
                continue
            async with asyncio.TaskGroup() as tg:
                for r in due:
                    tg.create_task(self._send_advice(pool, r))

    async def _send_advice(self, pool: asyncpg.Pool, r: Any) -> None:
        s = self._settings
        rec = TopupRecord(r["topup_id"], r["tenant_id"], r["terminal_id"], r["txn_seq"],
                          r["card_no"], r["account_id"], r["amount_fen"], r["stan"], r["rrn"],
                          self._open_pan(r["account_id"], r["pan_encrypted"], r["bank_token"]),
                          r["pan_masked"], r["created_at"].timestamp(), r["bank_terminal_id"])
        error = ""
        try:
            async with asyncio.timeout(s.topup_deadline_seconds):
                acked = await self.link.send_reversal_advice(self._bank_advice(rec),
                                                             repeat=r["tries"] > 0)
        except (TimeoutError, OSError, ConnectionError, EOFError) as exc:
            acked, error = False, type(exc).__name__
        metrics.bank_advices_sent_total.inc()
        try:
            if acked:
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute("UPDATE bank_advices SET state = 'acknowledged',"
                                       " tries = tries + 1, updated_at = now() WHERE id = $1",
                                       r["advice_id"])
                    await conn.execute("UPDATE bank_topups SET state = 'reversed',"
                                       " updated_at = now() WHERE id = $1", r["topup_id"])
                self._rt.log.info("topup.reversed", topup_id=r["topup_id"], tries=r["tries"] + 1)
                return
            tries = r["tries"] + 1
            if tries >= s.bank_advice_tries_max:
                await self._hand_to_person(pool, r, error or "not acknowledged")
                return
            backoff = min(s.bank_advice_backoff_seconds * 2 ** (tries - 1),
                          limits.ADVICE_BACKOFF_SECONDS_MAX)
            backoff *= 0.5 + random.random() / 2  # jitter: advices do not stampede the bank
            await self._execute(pool, "UPDATE bank_advices SET tries = $2, last_error = $3,"
                                " next_at = now() + make_interval(secs => $4),"
                                " updated_at = now() WHERE id = $1", r["advice_id"], tries,
                                error or "not acknowledged", backoff)
        except DATABASE_FAILURES as exc:  # tried again at the next round
            self._rt.log.warning("topup.advice_unrecorded", advice_id=r["advice_id"],
                                 error=str(exc))

    async def _hand_to_person(self, pool: asyncpg.Pool, r: Any, error: str) -> None:
        """The advice failed bank_advice_tries_max times: a 'bank_exception' document for the
        tenant's card office / finance (when the tenant has an org node), state exception."""
        async with pool.acquire() as conn, conn.transaction():
            node = await conn.fetchrow("SELECT id, path FROM org_nodes WHERE kind = 'tenant'"
                                       " AND tenant_id = $1", r["tenant_id"])
            doc = None
            if node is not None:
                doc = await conn.fetchval(
                    "INSERT INTO documents (tenant_id, node_id, node_path, doc_type, title,"
                    " reason, status, levels, total_fen, lines_count, created_by,"
                    " submitted_at, bank_topup_id) VALUES ($1, $2, $3, 'bank_exception', $4,"
                    " $5, 'submitted', 1, $6, 0, NULL, now(), $7) RETURNING id",
                    r["tenant_id"], node["id"], node["path"],
                    f"Bank reversal not acknowledged: RRN {r['rrn']}",
                    f"reversal advice of top-up {r['topup_id']} (STAN {r['stan']}) failed "
                    f"{r['tries'] + 1} times: {error}", r["amount_fen"], r["topup_id"])
            await conn.execute("UPDATE bank_advices SET state = 'exception', tries = tries + 1,"
                               " last_error = $2, document_id = $3, updated_at = now()"
                               " WHERE id = $1", r["advice_id"], error, doc)
            await conn.execute("UPDATE bank_topups SET state = 'exception', updated_at = now()"
                               " WHERE id = $1", r["topup_id"])
        self._rt.log.error("topup.advice_exception", topup_id=r["topup_id"], document_id=doc,
                           rrn=r["rrn"])

    # -- database, each call under its deadline ---------------------------------------------

    @staticmethod
    async def _fetchrow(pool: asyncpg.Pool, sql: str, *args: Any) -> Any:
        async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
            return await pool.fetchrow(sql, *args)

    @staticmethod
    async def _fetch(pool: asyncpg.Pool, sql: str, *args: Any) -> list[Any]:
        async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
            return list(await pool.fetch(sql, *args))

    @staticmethod
    async def _fetchval(pool: asyncpg.Pool, sql: str, *args: Any) -> Any:
        async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
            return await pool.fetchval(sql, *args)

    @staticmethod
    async def _execute(pool: asyncpg.Pool, sql: str, *args: Any) -> None:
        async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
            await pool.execute(sql, *args)


async def _no_reset(conn: asyncpg.Connection) -> None:
    """The top-up pool's connections keep no session state (no LISTEN, advisory lock, SET or
    cursor), so a release skips asyncpg's reset query: a round trip per use (measured: a
    sixth of the switch's time under kiosk load). asyncpg still ends an open transaction."""


def ocp_limits_window() -> int:
    from protocols import limits as wire

    return wire.TXN_SEQ_WINDOW


def _dt_offset(utc_offset_s: int) -> Any:
    import datetime as dt

    return dt.timedelta(seconds=utc_offset_s)


def _local_day_start(now_s: float, utc_offset_s: int) -> Any:
    """The start of the tenant's local day containing now, as an aware datetime."""
    import datetime as dt

    local = now_s + utc_offset_s
    start = local - local % 86_400 - utc_offset_s
    return dt.datetime.fromtimestamp(start, dt.UTC)



class NoBankLink:
    """No bank configured (bank_host unset): every top-up declines TOPUP_NOT_AVAILABLE;
    stored advices wait for a link."""

    available = False

    async def authorize_topup(self, request: Any) -> Any:
        raise ConnectionError("no bank link")

    async def send_reversal_advice(self, advice: Any, *, repeat: bool) -> bool:
        return False


def topup_adapters(settings: Any) -> tuple[Callable[[TopupRecord], Any],
                                          Callable[[TopupRecord], Any],
                                          Callable[[int, bytes | None, str | None], str]]:
    """What TopupService needs besides the link: the 0200 of a top-up, the 0420 of its
    reversal (docs/bank-link.md) and the bank's name for a bound card (its token)."""
    import datetime as dt

    from protocols import iso8583
    from protocols.bank_card import bank_card_key
    from protocols.bank_card import open_pan as _open

    key = bank_card_key(settings.master_secret_bytes, settings.bank_card_key)

    def request(rec: TopupRecord) -> Any:
        return iso8583.TopupRequest(
            terminal_id=rec.bank_terminal_id or rec.terminal_id, stan=rec.stan, rrn=rec.rrn,
            amount_fen=rec.amount_fen, card_token=rec.pan, account_ref=str(rec.account_id),
            local_datetime=dt.datetime.fromtimestamp(rec.created_s).replace(microsecond=0),
            tenant_id=rec.tenant_id)

    def advice(rec: TopupRecord) -> Any:
        return iso8583.ReversalAdvice.of(request(rec))

    def open_pan(account_id: int, sealed: bytes | None, token: str | None) -> str:
        if token:
            return token
        return _open(key, account_id, sealed or b"")

    return request, advice, open_pan
