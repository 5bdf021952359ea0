"""The supervisor: one TaskGroup owns every long-lived task of the switch.

Start-up: check the schema, recover (master data, checkpoint, journal replay), then listen.
Tasks: the journal writer (group commit), the checkpointer, the old-request look-up worker and
the idle-session sweeper. Nothing else creates tasks. A failed commit ends the TaskGroup with
JournalError: every connection is dropped (nothing unacknowledged was promised), and the
supervisor recovers from PostgreSQL and listens again. SIGTERM/SIGINT drain gracefully: stop
accepting, stop reading, let in-flight requests reach their commit, answer, checkpoint, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any

import asyncpg

from ledger_ext import (
    APPROVED,
    JOURNAL_COLUMNS,
    ORIGINAL_NOT_FOUND,
    REVERSAL,
    Ledger,
)
from migrations import MigrationError, check_schema
from protocols import ocp
from switch import _metrics as metrics
from switch import _snapshot, limits
from switch._access import AccessEngine, load_access
from switch._access_journal import ALARMS_STREAM_PREFIX, AlarmPublisher
from switch._answer import REFUSAL, Answer
from switch._banklink import BankLink, BankLinkConfig
from switch._change_events import feed_mac_key
from switch._change_feed import ChangeFeed
from switch._door_commands import DoorCommands
from switch._errors import (
    DATABASE_FAILURES,
    JournalError,
    RecoveryError,
    SiteLockLost,
    StartupError,
    is_transient,
    listen_failure,
)
from switch._journal import Journal
from switch._logging import get_logger, log_loop_exception
from switch._masterdata import MasterData, TerminalInfo
from switch._offline import OfflineLists
from switch._outbox import stream_key
from switch._presence import mark_all_offline
from switch._qr import QrGate
from switch._recovery import recover
from switch._relay import OutboxRelay
from switch._session import TerminalSession, request_id
from switch._settings import SwitchSettings, redacted_url
from switch._site_lock import SiteLock
from switch._topup import NoBankLink, TopupService, topup_adapters

JOURNAL_APPLICATION_NAME = "onecard-switch-journal"
_OLD_ANSWER_SQL = (
    "SELECT kind, code, txn_seq, amount_fen, main_fen, subsidy_fen, tenant_id,"
    " merchant_tenant_id FROM journal WHERE terminal_id = $1 AND txn_seq = $2"
)
_OLD_ROW_SQL = (
    f"SELECT {', '.join(JOURNAL_COLUMNS)} FROM journal WHERE terminal_id = $1 AND txn_seq = $2"
)
# Is a reversal of (terminal_id, original) journaled that took effect (APPROVED) or left a
# tombstone (ORIGINAL_NOT_FOUND)? Either way the original counts as reversed.
_REVERSED_SQL = (
    "SELECT EXISTS (SELECT 1 FROM journal WHERE terminal_id = $1 AND ref_txn_seq = $2"
    f" AND kind = {REVERSAL} AND code IN ({APPROVED}, {ORIGINAL_NOT_FOUND}))"
)

# A checkpoint (tens of MB of snapshot at thousands of terminals, their idempotency windows; a
# million accounts' balances) is COPYed in pieces into these tables, the event loop running in
# between, and PostgreSQL builds the checkpoint row from them.
_CHECKPOINT_TABLES_SQL = """
CREATE TEMP TABLE IF NOT EXISTS checkpoint_chunks (seq integer, chunk bytea)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS checkpoint_balances (account_id integer, main_fen bigint,
    subsidy_fen bigint) ON COMMIT DELETE ROWS;
"""
_CHECKPOINT_SQL = (
    "INSERT INTO checkpoints (lsn, state, account_ids, main_fen, subsidy_fen, merchant_ids,"
    " merchant_balance_fen, total_fen)"
    " SELECT $1, (SELECT string_agg(chunk, ''::bytea ORDER BY seq) FROM checkpoint_chunks),"
    " coalesce(array_agg(account_id ORDER BY account_id), '{}'),"
    " coalesce(array_agg(main_fen ORDER BY account_id), '{}'),"
    " coalesce(array_agg(subsidy_fen ORDER BY account_id), '{}'), $2, $3, $4"
    " FROM checkpoint_balances"
)


async def _in_pieces(rows: Iterable[Any], rows_per_piece: int) -> AsyncIterator[Any]:
    """`rows`, letting the event loop run after every `rows_per_piece`. Passed as query
    parameters, a 47 MB snapshot or a million accounts' balances were encoded and copied in
    one go by asyncpg: up to 370 ms (snapshot) and 700 ms (balances) of held event loop."""
    for n, row in enumerate(rows, 1):
        yield row
        if n % rows_per_piece == 0:
            await asyncio.sleep(0)


class _Stop(Exception):
    """Raised inside the TaskGroup to end it after a graceful drain."""


SYSTEM_ERROR = int(ocp.ResponseCode.SYSTEM_ERROR)
BUSY = int(ocp.ResponseCode.BUSY)
SHUTTING_DOWN = int(ocp.ResponseCode.SHUTTING_DOWN)
IDLE_TIMEOUT = int(ocp.ResponseCode.IDLE_TIMEOUT)


# What ends one round of serve_once short of a stop: each is then logged and retried, or turned
# into the one line of a permanent failure (Runtime._after_failure).
_observe_prepare = metrics.journal_commit_stage_seconds.labels("prepare").observe
_observe_postgres = metrics.journal_commit_stage_seconds.labels("postgres").observe
_observe_release = metrics.journal_commit_stage_seconds.labels("release").observe

_SERVE_FAILURES: tuple[type[Exception], ...] = (
    JournalError, SiteLockLost, RecoveryError, StartupError, MigrationError, *DATABASE_FAILURES)


class Runtime:
    """State shared by the sessions of one switch process."""

    ledger: Ledger
    master: MasterData
    journal: Journal
    access: AccessEngine

    def __init__(self, settings: SwitchSettings) -> None:
        self.settings = settings
        self.log = get_logger()
        self.connections: set[TerminalSession] = set()
        self.sessions: dict[int, TerminalSession] = {}
        self.stopping = False
        # True only while the listener serves terminals on a recovered ledger.
        self.ready = False
        self.phase = "starting"
        self.address: tuple[str, int] | None = None
        self._keys: dict[tuple[int, int], bytes] = {}
        # Held from the first start to the end of the process (switch/_site_lock.py).
        self._site_lock: SiteLock | None = None
        self._retry_seconds = 1.0
        self._old_lookups: asyncio.Queue[tuple[TerminalSession, Any, int]] = asyncio.Queue(
            limits.OLD_LOOKUP_QUEUE_MAX
        )
        # The bank link (docs/bank-link.md) when configured: its connections run in the
        # supervisor's TaskGroup; nothing on the purchase path waits on it.
        self.bank: BankLink | None = bank_link(settings, self.log)
        self._stop_event = asyncio.Event()
        self.offline = OfflineLists(lambda: self.access)  # OFFLINE (switch/_offline.py)
        # The security desk's door commands, kept across recoveries: at most once.
        self.door_commands = DoorCommands(self)
        self._closing_after_answers: set[TerminalSession] = set()
        self.rows_at_last_checkpoint = 0
        # Declines by response code since the last requests.declined line.
        self._declines: dict[int, int] = {}
        self.loop_lag_max = 0.0
        # Phone QR codes: the site's QR key and the codes that have paid. Per process, kept
        # across recoveries; codes issued before this moment are not accepted (switch/_qr.py).
        self.qr = QrGate(settings.master_secret_bytes, int(time.time()))
        # The bank link (kept across recoveries) and the kiosk top-ups (switch/_topup.py).
        self._bank_factories = topup_adapters(settings)
        self.topups: TopupService

    # -- used by sessions ------------------------------------------------------------------

    def terminal_key(self, info: TerminalInfo) -> bytes:
        k = (info.terminal_id, info.key_version)
        key = self._keys.get(k)
        if key is None:
            key = ocp.derive_terminal_key(
                self.settings.master_secret_bytes, info.terminal_id, info.key_version
            )
            self._keys[k] = key
        return key

    def look_up_old(self, session: TerminalSession, outcome: Any) -> None:
        """Answer a request too old for the idempotency window from the journal: its original
        answer if the journal holds it, else `outcome` (Error TXN_SEQ_TOO_OLD, or the refusal
        of a QR purchase whose code may not pay).

        Its original may still be in an uncommitted batch (a burst of pipelined frames can push
        it out of the window before it commits), so the look-up waits until everything decided
        so far is durable before it reads the journal.
        """
        try:
            self._old_lookups.put_nowait((session, outcome, self.ledger.lsn))
        except asyncio.QueueFull:
            session.answer_nowait(Answer.refusal(outcome.txn_seq, BUSY))
            session.flush()

    def close_after_answers(self, session: TerminalSession) -> None:
        self._closing_after_answers.add(session)
        if session._outstanding == 0:
            session.close()

    def retire_terminal(self, terminal_id: int) -> None:
        """A terminal was disabled, re-keyed or moved to another merchant: its live session
        takes no new request, gets the answers it is owed, and is closed."""
        session = self.sessions.get(terminal_id)
        if session is None or session.closed:
            return
        self.log.info("ocp.session_retired", terminal_id=terminal_id, peer=session.peer)
        session.retire()
        self.close_after_answers(session)

    def readiness(self) -> dict[str, object]:
        """What /readyz reports (read from another thread: plain attribute reads only)."""
        state: dict[str, object] = {"ready": self.ready, "phase": self.phase}
        # Top-ups need the bank; purchases never do, so this is beside "ready", not in it.
        state["topups_available"] = self.ready and self.bank is not None and self.bank.available
        state["bank"] = "disabled" if self.bank is None else self.bank.state()
        if self.ready:
            state["terminals"] = len(self.sessions)
            state["lsn"] = self.ledger.lsn
            state["durable_lsn"] = self.journal.durable_lsn
        return state

    def request_stop(self) -> None:
        self._stop_event.set()

    # -- tasks -----------------------------------------------------------------------------

    async def _old_lookup_worker(self, pool: asyncpg.Pool) -> None:
        while True:
            session, outcome, lsn = await self._old_lookups.get()
            answer: Any = outcome
            try:
                await self.journal.wait_durable(lsn)
                async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
                    row = await pool.fetchrow(
                        _OLD_ANSWER_SQL, session.terminal_id, outcome.txn_seq
                    )
                if row is not None:
                    answer = Answer.from_journal(row)
                elif outcome.kind == REVERSAL:
                    # Not a repeat: its original is older than the window. Decided now.
                    await self._reverse_from_journal(pool, session, outcome)
                    continue
                elif isinstance(outcome, Answer) and outcome.kind == REFUSAL:
                    # Not a repeat after all (a QR purchase whose code may not pay): refused.
                    session.log_refusal(outcome.code, outcome.txn_seq, outcome.detail,
                                        outcome.reason)
            except DATABASE_FAILURES as exc:
                self.log.warning("journal.lookup_failed",
                                 request_id=request_id(session.terminal_id, outcome.txn_seq),
                                 terminal_id=session.terminal_id,
                                 txn_seq=outcome.txn_seq, error=str(exc))
                answer = Answer.refusal(outcome.txn_seq, SYSTEM_ERROR)
            session.answer_nowait(answer)
            session.flush()
            session.resume_if_drained()

    async def _reverse_from_journal(self, pool: asyncpg.Pool, session: TerminalSession,
                                    outcome: Any) -> None:
        """Decide a reversal whose original is older than the window from what the journal
        holds of the original (docs/protocol.md section 9.2). This one worker decides every
        such reversal, and it first waits until everything decided so far is durable, so the
        journal shows every earlier reversal of the same original."""
        tid = session.terminal_id
        await self.journal.wait_durable(self.ledger.lsn)
        async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
            original = await pool.fetchrow(_OLD_ROW_SQL, tid, outcome.ref_txn_seq)
            reversed_ = await pool.fetchval(_REVERSED_SQL, tid, outcome.ref_txn_seq)
        o = self.ledger.reverse_journaled(
            tid, outcome.txn_seq, outcome.ref_txn_seq, outcome.card_no, outcome.amount_fen,
            int(time.time()), None if original is None else tuple(original), reversed_,
        )
        if o.lsn and not o.repeat:
            self.journal.submit(session, o)  # answered once committed, as any decision
            return
        if o.repeat:
            self.journal.answer_when_durable(session, o)
        else:  # TXN_SEQ_TOO_OLD: its own txn_seq left the window while it waited
            session.answer_nowait(o)
        session.flush()
        session.resume_if_drained()

    async def _sweeper(self) -> None:
        idle_max = 3 * self.settings.heartbeat_interval_seconds
        ticks = 0
        while True:
            await asyncio.sleep(1.0)
            ticks += 1
            now = time.monotonic()
            self.door_commands.expire(now)
            for session in list(self.connections):
                if now - session.last_seen > idle_max and not session.closed:
                    self.log.info("ocp.idle_timeout", terminal_id=session.terminal_id,
                                  peer=session.peer)
                    session.end(IDLE_TIMEOUT, "nothing received for 3 heartbeat intervals")
            for session in list(self._closing_after_answers):
                if session.closed or session._outstanding == 0:
                    session.close()
                    self._closing_after_answers.discard(session)
            metrics.ledger_lsn.set(self.ledger.lsn)
            metrics.durable_lsn.set(self.journal.durable_lsn)
            if ticks % limits.LEDGER_GAUGES_EVERY_SECONDS == 1:
                self.update_ledger_gauges()
            if ticks % limits.DECLINE_SUMMARY_SECONDS == 0:
                self._log_declines()

    def _log_declines(self) -> None:
        """One line for the declines since the last one (none when there were none)."""
        if self._declines:
            declines, self._declines = self._declines, {}
            self.log.info("requests.declined", total=sum(declines.values()),
                          codes={metrics.CODE_NAMES.get(c, str(c)): n
                                 for c, n in sorted(declines.items())})

    async def _loop_lag_probe(self) -> None:
        """How late the loop runs a callback that is due: the time it was held by something.
        Timed with perf_counter: uvloop's loop.time() has millisecond steps, which hid every
        hold under a millisecond (issue 14)."""
        period = limits.LOOP_LAG_PROBE_SECONDS
        perf = time.perf_counter
        while True:
            due = perf() + period
            await asyncio.sleep(period)
            lag = max(0.0, perf() - due)
            metrics.event_loop_lag_seconds.observe(lag)
            if lag > self.loop_lag_max:
                self.loop_lag_max = lag
                metrics.event_loop_lag_max_seconds.set(lag)

    def update_ledger_gauges(self) -> None:
        """Balance-cache gauges. statistics() walks every idempotency window (a few ms at
        thousands of terminals), so this runs every few seconds, not per request."""
        st = self.ledger.statistics()
        metrics.ledger_accounts.set(st.accounts)
        metrics.ledger_cards.set(st.cards)
        metrics.ledger_holds.set(st.holds)
        metrics.ledger_memory_bytes.set(st.memory_bytes)
        metrics.ledger_window_entries.set(st.window_entries)

    async def _checkpointer(self, pool: asyncpg.Pool) -> None:
        settings = self.settings
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            rows_since = self.journal.stats.rows - self.rows_at_last_checkpoint
            due = time.monotonic() - last >= settings.checkpoint_interval_seconds
            if rows_since and (due or rows_since >= settings.checkpoint_rows):
                with contextlib.suppress(*DATABASE_FAILURES, _snapshot.SnapshotError):
                    await self.write_checkpoint(pool)  # logged; tried again next round
                last = time.monotonic()

    async def write_checkpoint(self, pool: asyncpg.Pool, *, forked: bool = True) -> int:
        """Snapshot the cache; store it once every row it includes is durable.

        The snapshot and the balance columns describe one state. Taken in-process they held
        the event loop for 50-340 ms (logged as loop_ms); with `forked` (and the setting
        checkpoint_fork, the default) a forked child takes them from a copy-on-write image
        of the cache while the loop goes on serving (switch/_snapshot.py), and loop_ms is
        the fork. They are sent in pieces (_in_pieces), terminals served in between.
        """
        started = time.perf_counter()
        ledger = self.ledger
        lsn = ledger.lsn  # the state the snapshot will hold: nothing awaits before the fork
        rows_now = self.journal.stats.rows
        child = _snapshot.fork(ledger) if forked and self.settings.checkpoint_fork else None
        loop_seconds = time.perf_counter() - started
        if child is not None:
            try:
                snap = await _snapshot.receive(child)
            except _snapshot.SnapshotError as exc:
                self.log.warning("checkpoint.failed", lsn=lsn, error=str(exc))
                raise
        else:
            snap = _snapshot.take_in_process(ledger)
            loop_seconds = time.perf_counter() - started
        state, account_ids, main, subsidy = (snap.state, snap.account_ids, snap.main_fen,
                                             snap.subsidy_fen)
        merchants, total = snap.merchants, snap.total_fen
        await self.journal.wait_durable(lsn)
        try:
            async with asyncio.timeout(120), pool.acquire() as conn, conn.transaction():
                # In pieces that let terminals in between (_in_pieces); PostgreSQL joins them.
                await conn.execute(_CHECKPOINT_TABLES_SQL)
                step = limits.CHECKPOINT_CHUNK_BYTES
                view = memoryview(state)
                await conn.copy_records_to_table("checkpoint_chunks", records=_in_pieces(
                    ((seq, view[at:at + step])
                     for seq, at in enumerate(range(0, len(view), step))), 1))
                await conn.copy_records_to_table("checkpoint_balances", records=_in_pieces(
                    zip(account_ids, main, subsidy, strict=True),
                    limits.CHECKPOINT_BALANCE_ROWS_PER_PIECE))
                await conn.execute(
                    _CHECKPOINT_SQL,
                    lsn,
                    [m[0] for m in merchants],
                    [m[1] for m in merchants],
                    total,
                )
                await conn.execute(
                    "DELETE FROM checkpoints WHERE id NOT IN"
                    " (SELECT id FROM checkpoints ORDER BY lsn DESC, id DESC LIMIT $1)",
                    limits.CHECKPOINTS_KEPT_MAX,
                )
        except DATABASE_FAILURES as exc:
            # Nothing depends on a checkpoint but the length of the next replay: the journal
            # holds every row. The pool replaces a connection the server ended.
            self.log.warning("checkpoint.failed", lsn=lsn, error=str(exc) or type(exc).__name__)
            raise
        self.rows_at_last_checkpoint = rows_now
        seconds = time.perf_counter() - started
        metrics.checkpoint_seconds.observe(seconds)
        self.log.info("checkpoint.written", lsn=lsn, accounts=len(account_ids),
                      seconds=round(seconds, 3), loop_ms=round(loop_seconds * 1000, 1))
        return lsn

    def _on_commit(self, replies: list[tuple[Any, Any]], rows: int, seconds: float) -> None:
        if rows:
            stats = self.journal.stats
            metrics.journal_batch_rows.observe(rows)
            metrics.journal_batch_bytes.observe(stats.last_batch_bytes)
            metrics.journal_commit_seconds.observe(seconds)
            _observe_prepare(stats.last_prepare_seconds)
            _observe_postgres(stats.last_postgres_seconds)
            _observe_release(stats.last_release_seconds)
            metrics.journal_rows_total.inc(rows)
        counts: dict[tuple[int, int], int] = {}
        declines = self._declines
        log = self.log
        trace = self.settings.log_level == "debug"
        for _, o in replies:
            key = (o.kind, o.code)
            counts[key] = counts.get(key, 0) + 1
            if o.code and not o.repeat:
                # A decline is a result, not an error: its details are in its journal row
                # (request id, lsn, account, merchant), and here it is only counted. A line
                # each cost nine times the answer (issue 9, item 18); _log_declines sums up.
                declines[o.code] = declines.get(o.code, 0) + 1
            elif trace:
                # Approved requests are logged only at debug level (tracing one terminal).
                log.debug("request.approved", request_id=request_id(o.terminal_id, o.txn_seq),
                          lsn=o.lsn, type=metrics.REQUEST_TYPES.get(o.kind, "other"),
                          amount_fen=o.amount_fen, repeat=bool(o.repeat))
        for (kind, code), n in counts.items():
            metrics.requests_total.labels(
                metrics.REQUEST_TYPES.get(kind, "other"), metrics.CODE_NAMES.get(code, "other")
            ).inc(n)
        auto = self.master.auto_topups
        if auto:  # automatic top-ups (自动圈存), after the answers went out
            self.topups.after_commit(replies, auto)
        closing = self._closing_after_answers
        if closing:
            for session in [s for s in closing if s._outstanding == 0]:
                session.close()
                closing.discard(session)

    async def _wait_stop(self, server: asyncio.Server, pool: asyncpg.Pool) -> None:
        await self._stop_event.wait()
        self.stopping = True
        self.ready, self.phase = False, "draining"
        self.log.info("switch.draining", connections=len(self.connections))
        server.close()
        for session in list(self.connections):
            if session._transport is not None and not session.closed:
                session._transport.pause_reading()
        try:
            async with asyncio.timeout(self.settings.drain_deadline_seconds):
                await self.topups.drain()  # top-ups at the bank get their answer first
                await self.journal.drain()
                if self.journal.stats.rows > self.rows_at_last_checkpoint:
                    with contextlib.suppress(*DATABASE_FAILURES):  # logged; replayed at start
                        await self.write_checkpoint(pool, forked=False)  # nothing to serve
        except TimeoutError:
            self.log.error("switch.drain_deadline", pending_rows=self.journal.pending_rows)
        # The switch is the only writer of terminal presence: once the last commit is in, no
        # terminal is online (connection ends after this only repeat it). Best effort: the
        # next start does it anyway, before it accepts terminals.
        try:
            async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
                await mark_all_offline(pool)
        except DATABASE_FAILURES as exc:  # TimeoutError is an OSError
            self.log.warning("switch.presence_not_cleared", error=str(exc) or
                             type(exc).__name__)
        if self.bank is not None:  # after the drain: top-ups in flight had their answers
            await self.bank.sign_off()
        for session in list(self.connections):
            session.end(SHUTTING_DOWN, "switch is shutting down")
        self._log_declines()
        raise _Stop

    # -- the supervisor --------------------------------------------------------------------

    async def serve_once(self, on_ready: Callable[[tuple[str, int]], None] | None) -> None:
        settings = self.settings
        # Bound (not yet listening) before anything else, so a port in use is said at once.
        # After a recovery, listen where terminals already know to find us (port 0 means
        # "pick one" only the first time).
        host, port = self.address if self.address is not None else (settings.host, settings.port)
        try:
            server = await asyncio.get_running_loop().create_server(
                lambda: TerminalSession(self), host, port, backlog=4096, reuse_address=True,
                start_serving=False,
            )
        except OSError as exc:
            raise listen_failure(exc, "port", host, port) from None
        journal_conn: asyncpg.Connection | None = None
        try:
            if self._site_lock is None:
                self._site_lock = await SiteLock.take(settings.dsn)
            journal_conn = await asyncpg.connect(
                settings.dsn, server_settings={"application_name": JOURNAL_APPLICATION_NAME}
            )
            pool = await asyncpg.create_pool(
                settings.dsn, min_size=1, max_size=3,
                server_settings={"application_name": "onecard-switch"},
            )
        except BaseException:
            server.close()
            if journal_conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(journal_conn.close(), 5)
            raise
        try:
            await self._end_other_journal_backends(journal_conn)
            await check_schema(journal_conn)
            self.ledger, self.master, report = await recover(
                journal_conn, settings.accounts_max, settings.merchants_max
            )
            metrics.recovery_seconds.set(report.seconds)
            metrics.recovery_replayed_rows.set(report.replayed_rows)
            self.update_ledger_gauges()
            self.log.info("switch.recovered", **{
                f: getattr(report, f) for f in report.__struct_fields__
            })
            self.journal = Journal(
                journal_conn,
                batch_max=settings.journal_batch_max,
                window_seconds=settings.group_commit_window_seconds,
                on_commit=self._on_commit,
                log=self.log,
                slow_seconds=settings.commit_slow_seconds,
            )
            self.journal.durable_lsn = self.ledger.lsn
            await self._load_access(journal_conn)  # ACCESS (docs/access.md)
            await self.door_commands.settle_unfinished(journal_conn)  # at most once
            self.door_commands.modes_reloaded()  # the doors' modes as they are now
            self.rows_at_last_checkpoint = 0
            feed_tasks = await self._change_feed_tasks(journal_conn, pool, report.changes_applied)
            self.topups = TopupService(self, self.bank or NoBankLink(), *self._bank_factories)
            await self.topups.recover(pool)
            # Rows a killed switch (or the round before a recovery) left online: nobody is
            # signed on to this one yet (switch/_presence.py).
            async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
                await mark_all_offline(journal_conn)
            try:
                await server.start_serving()
            except OSError as exc:
                raise listen_failure(exc, "port", host, port) from None
            sock = server.sockets[0].getsockname()
            self.address = (sock[0], sock[1])
            self.ready, self.phase = True, "serving"
            self._retry_seconds = 1.0
            self.log.info("switch.listening", host=sock[0], port=sock[1])
            if on_ready is not None:
                on_ready(self.address)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.journal.run(), name="journal")
                tg.create_task(self._checkpointer(pool), name="checkpointer")
                tg.create_task(self._old_lookup_worker(pool), name="old-lookups")
                tg.create_task(self.offline.run(pool), name="offline-lists")  # OFFLINE
                tg.create_task(self._sweeper(), name="sweeper")
                tg.create_task(self._loop_lag_probe(), name="loop-lag")
                tg.create_task(self._wait_stop(server, pool), name="stop")
                tg.create_task(self._site_lock.wait_lost(), name="site-lock")
                for name, task in feed_tasks:
                    tg.create_task(task(), name=name)
                tg.create_task(self.topups.run_workers(pool), name="topups")
                tg.create_task(self.topups.run_advices(pool), name="bank-advices")
                if self.bank is not None:
                    tg.create_task(self.bank.run(), name="bank-link")
        finally:
            self.ready = False
            if self.phase == "serving":
                self.phase = "recovering"
            server.close()
            for session in list(self.connections):
                session.close()
            if hasattr(self, "journal"):
                self.journal.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(journal_conn.close(), 5)

    async def _change_feed_tasks(self, conn: asyncpg.Connection, pool: asyncpg.Pool,
                                 applied: int
                                 ) -> list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]:
        """The change feed consumer and, unless turned off, an outbox relay."""
        settings = self.settings
        if not settings.changefeed:
            return []
        database = await conn.fetchval("SELECT current_database()")
        key = stream_key(settings.changefeed_stream, database)
        mac_key = feed_mac_key(settings.master_secret_bytes)
        feed = ChangeFeed(
            self.ledger, self.master, pool, applied=applied, redis_url=settings.redis_url,
            key=key, mac_key=mac_key, log=self.log, retire_terminal=self.retire_terminal,
            poll_seconds=settings.changefeed_poll_seconds, access=self.access,
            door_command=self.door_commands.requested,
            access_reloaded=self.door_commands.modes_reloaded,
        )
        tasks: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = [
            ("change-feed", feed.run)
        ]
        # ACCESS: alarms raised and cleared, live on a stream the console follows.
        publisher = AlarmPublisher(settings.redis_url, ALARMS_STREAM_PREFIX + database, self.log)
        self.journal.on_access_commit = publisher.committed
        tasks.append(("access-alarms", publisher.run))
        if settings.changefeed_relay:
            relay = OutboxRelay(settings.dsn, settings.redis_url, key, mac_key, self.log,
                                poll_seconds=settings.changefeed_poll_seconds)
            tasks.append(("outbox-relay", relay.run))
        return tasks

    async def _load_access(self, conn: asyncpg.Connection) -> None:
        """ACCESS: the access rules, people and recent door answers, read after the recovery
        snapshot (a change in between is in this read and comes again from the change feed:
        reloading is idempotent)."""
        pin_key = hmac.new(self.settings.master_secret_bytes, b"onecard access pins v1",
                           hashlib.sha256).digest()
        engine = AccessEngine(self.ledger, pin_key, self.qr)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await load_access(engine, conn)
        self.access = engine
        stats = engine.statistics()
        self.log.info("access.loaded", tenants=stats.tenants, doors=stats.doors,
                      readers=len(engine.readers), people=len(engine.people))

    async def _end_other_journal_backends(self, conn: asyncpg.Connection) -> None:
        """Another journal backend on this database (ours, before a failed commit, or that of
        a switch which has lost the site lock to us) could still commit a batch after recovery
        has read the journal. End every one, and wait until they are gone, before reading."""
        async with asyncio.timeout(30):
            pids = await conn.fetchval(
                "SELECT array_agg(pid) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = $1 AND pid <> pg_backend_pid()",
                JOURNAL_APPLICATION_NAME,
            )
            if not pids:
                return
            await conn.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid",
                               pids)
            # Nothing to wait on but the server's own view: poll it, under the deadline above.
            gone = "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = ANY($1::int[])"
            while not await conn.fetchval(gone, pids):  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    async def run(self, on_ready: Callable[[tuple[str, int]], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(log_loop_exception)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        try:
            while True:
                stopped = False
                failure: Exception | None = None
                try:
                    await self.serve_once(on_ready)
                except* _Stop:
                    stopped = True
                except* _SERVE_FAILURES as group:
                    failure = group.exceptions[0]
                if stopped or self._stop_event.is_set():
                    self.log.info("switch.stopped")
                    return
                # Stop answering, then recover from PostgreSQL rather than guess; a permanent
                # cause ends the process with one line instead (StartupError).
                delay = self._retry_seconds
                self._retry_seconds = min(2 * delay, limits.RETRY_SECONDS_MAX)
                await self._after_failure(failure, delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stop_event.wait()
                if self._stop_event.is_set():
                    self.log.info("switch.stopped")
                    return
                self.log.info("switch.recovering")
        finally:
            if self._site_lock is not None:
                await self._site_lock.close()

    async def _after_failure(self, failure: Exception | None, retry_in_seconds: float) -> None:
        """Log a failure that retrying can fix; raise the one line of one that it cannot."""
        if isinstance(failure, JournalError):
            metrics.journal_failures_total.inc()
            self.log.error("journal.commit_failed", error=str(failure),
                           retry_in_seconds=retry_in_seconds)
        elif isinstance(failure, SiteLockLost):
            # PostgreSQL has released the lock: take it again (or learn who has) before serving.
            self.log.error("switch.site_lock_lost", error=str(failure),
                           retry_in_seconds=retry_in_seconds)
            lock, self._site_lock = self._site_lock, None
            if lock is not None:
                await lock.close()
        elif isinstance(failure, (RecoveryError, StartupError)):
            raise failure
        elif failure is not None and (isinstance(failure, MigrationError)
                                      or not is_transient(failure)):
            cause = " ".join(str(failure).split()) or type(failure).__name__
            raise StartupError(f"database {redacted_url(self.settings.dsn)}: {cause}") from None
        elif failure is not None:
            self.log.error("switch.database_unavailable", error=str(failure),
                           retry_in_seconds=retry_in_seconds)


def bank_link(settings: SwitchSettings, log: Any) -> BankLink | None:
    """The bank link the settings ask for, or None (bank_host unset)."""
    if not settings.bank_host or settings.bank_kek is None:
        return None
    config = BankLinkConfig(
        host=settings.bank_host, port=settings.bank_port,
        kek=bytes.fromhex(settings.bank_kek), connections=settings.bank_connections,
        response_timeout_seconds=settings.bank_response_timeout_seconds,
        echo_interval_seconds=settings.bank_echo_interval_seconds,
        key_exchange_interval_seconds=settings.bank_key_exchange_interval_seconds,
    )
    return BankLink(config, log=log)


def run_switch(settings: SwitchSettings,
               on_ready: Callable[[tuple[str, int]], None] | None = None) -> None:
    """Run a switch until SIGTERM/SIGINT (blocking). Uses uvloop when it is installed."""
    from switch._logging import configure_logging

    configure_logging(settings.log_level)
    runtime = Runtime(settings)
    if settings.metrics_port is not None:
        from switch._health import start_health_server

        try:
            start_health_server(settings.host, settings.metrics_port, runtime)
        except OSError as exc:
            raise listen_failure(exc, "metrics_port", settings.host, settings.metrics_port
                                 ) from None
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every platform we ship
        asyncio.run(runtime.run(on_ready))
    else:
        uvloop.run(runtime.run(on_ready))
