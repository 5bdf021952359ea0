"""The journal writer: group commit, and answers only after COMMIT.

Handlers decide a request in the balance cache and hand the Outcome to `Journal.submit`. The
writer task takes everything submitted since its last commit, COPYs those rows into `journal` in
one transaction, and only when COMMIT has returned releases the answers to their connections.
While one batch commits the next one fills, so under load batches grow by themselves and the
cost of an fsync is shared by hundreds of purchases.

A repeat of a request whose row is still in an uncommitted batch is answered with that batch's
successor, so nobody ever hears about a state that is not yet durable. If a commit fails, the
writer raises JournalError: the supervisor drops every connection (nothing of the failed batch
was acknowledged) and recovers from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ledger_ext import JOURNAL_COLUMNS, JOURNAL_COPY_HEADER, JOURNAL_COPY_TRAILER
from switch import limits
from switch._access_journal import AccessBatch
from switch._errors import JournalError
from switch._presence import PresenceBatch

if TYPE_CHECKING:
    import asyncpg

    from ledger_ext import Outcome


def _topups_approved_sql(topups: list[tuple[int, str | None, int]]) -> str:
    """BEGIN, and the approved state of these top-ups (id, field 39, lsn): one simple query,
    so its values are literals, each an int() or a field 39 of two letters or digits (the
    bank link passes only codes of its table as approvals; anything else is NULL)."""
    values = ",".join(
        f"({int(i)},{_field39_literal(f)},{int(lsn)})" for i, f, lsn in topups)
    return ("BEGIN; UPDATE bank_topups t SET state = 'approved', code = 0, field39 = u.f,"
            " lsn = u.l, updated_at = now()"
            f" FROM (VALUES {values}) AS u (id, f, l) WHERE t.id = u.id")


def _field39_literal(field39: str | None) -> str:
    if field39 is not None and len(field39) == 2 and field39.isascii() and field39.isalnum():
        return f"'{field39}'"
    return "NULL::text"


class Answerable(Protocol):
    """What the journal needs of a terminal session."""

    def answer_nowait(self, outcome: Outcome) -> None: ...
    def flush(self) -> None: ...
    def resume_reading(self) -> None: ...


class JournalStatistics:
    __slots__ = ("batches", "commit_seconds_total", "last_batch_bytes", "last_batch_rows",
                 "last_postgres_seconds", "last_prepare_seconds", "last_release_seconds", "rows")

    def __init__(self) -> None:
        self.batches = 0
        self.rows = 0
        self.last_batch_rows = 0
        self.last_batch_bytes = 0
        self.commit_seconds_total = 0.0
        # The last commit's stages (issue 14): joining the batch's COPY data (the switch's
        # own code), COPY sent -> PostgreSQL's answer (its COMMIT and WAL flush, plus the time
        # this loop took to notice), and releasing the answers (the switch's own code again).
        self.last_prepare_seconds = 0.0
        self.last_postgres_seconds = 0.0
        self.last_release_seconds = 0.0


class Journal:
    def __init__(
        self,
        conn: asyncpg.Connection,
        *,
        batch_max: int = limits.JOURNAL_BATCH_MAX,
        window_seconds: float = limits.GROUP_COMMIT_WINDOW_SECONDS,
        on_commit: Callable[[list[tuple[Answerable, Outcome]], int, float], None] | None = None,
        log: Any = None,
        slow_seconds: float = limits.COMMIT_SLOW_SECONDS,
    ) -> None:
        self._log = log
        self._slow_seconds = slow_seconds
        self._conn = conn
        self._batch_max = batch_max
        self._window_seconds = window_seconds
        self._on_commit = on_commit
        self._rows: list[bytes] = []      # binary COPY records, made when decided
        self._lsns: list[int] = []        # their lsns, to split a batch at batch_max
        self._replies: list[tuple[Answerable, Outcome]] = []
        self._wakeup = asyncio.Event()
        self._committed = asyncio.Event()
        self._paused: set[Answerable] = set()
        self._closed = False
        self._in_flight = False
        self.durable_lsn = 0
        self.stats = JournalStatistics()
        # perf_counter() when the batch being committed (or last committed) was sent, and
        # when PostgreSQL answered it: sampled requests split their commit wait with them.
        self.batch_sent_at = 0.0
        self.batch_acked_at = 0.0
        # ACCESS (issue 12, docs/access.md): access rows and their answers, committed with
        # the money rows of the same batch (switch/_access_journal.py).
        self._access = AccessBatch()
        self._access_replies: list[tuple[Answerable, Any]] = []
        self.on_access_commit: Callable[[AccessBatch], None] | None = None
        # Kiosk top-ups (switch/_topup.py): (bank_topups id, field 39, lsn) of credits whose
        # 'approved' state is written in the same transaction as their journal row.
        self._topups: list[tuple[int, str | None, int]] = []
        # Terminals signed on or gone (switch/_presence.py): written after each batch's
        # answers, in one statement, never in the money rows' commit.
        self._presence = PresenceBatch()

    def presence_changed(self, terminal_id: int, online: bool, peer: str, door: bool) -> None:
        """Record in the next batch that a terminal signed on (True) or that its current
        session ended (False); `door`: its doors' online state changes with it."""
        self._presence.add(terminal_id, online, peer, door)
        self._wakeup.set()

    def wake_access(self) -> None:
        """ACCESS: commit the access rows added without an answer (a door command's state)."""
        self._wakeup.set()

    def submit_access(self, session: Answerable, answer: Any) -> None:
        """ACCESS: answer `session` with `answer` after the next commit, which carries the
        access rows added to `access_batch` before this call."""
        self._access_replies.append((session, answer))
        self._wakeup.set()

    @property
    def access_batch(self) -> AccessBatch:
        """ACCESS: the access rows of the next commit."""
        return self._access

    # -- hot path -------------------------------------------------------------------------

    def submit(self, session: Answerable, outcome: Outcome) -> None:
        """Journal a new outcome; answer `session` once it is committed."""
        self._rows.append(outcome.copy_record())
        self._lsns.append(outcome.lsn)
        self._replies.append((session, outcome))
        self._wakeup.set()

    def submit_topup(self, session: Answerable, outcome: Outcome,
                     approval: tuple[int, str | None, int]) -> None:
        """Journal a bank top-up's credit; its bank_topups row becomes 'approved' in the same
        commit (approval: the row's id, field 39, the credit's lsn)."""
        self._topups.append(approval)
        self.submit(session, outcome)

    def answer_when_durable(self, session: Answerable, outcome: Outcome) -> None:
        """Answer a repeat: now if its row is committed (the caller, a session's data_received,
        flushes once for the whole chunk), else right after its batch commits."""
        if outcome.lsn <= self.durable_lsn:
            session.answer_nowait(outcome)  # written with the rest when data_received ends
        else:
            self._replies.append((session, outcome))
            self._wakeup.set()

    @property
    def congested(self) -> bool:
        # ACCESS: one reply per access row (repeats aside), and len() of a list is cheap here.
        return len(self._rows) + len(self._access_replies) >= self._batch_max

    def pause_until_commit(self, session: Answerable) -> None:
        """Remember a session that stopped reading because the open batch is full."""
        self._paused.add(session)

    @property
    def pending_rows(self) -> int:
        return len(self._rows)

    # -- writer task -----------------------------------------------------------------------

    async def wait_durable(self, lsn: int) -> None:
        while self.durable_lsn < lsn:
            if self._closed:
                raise JournalError("journal closed before lsn was committed")
            await self._committed.wait()

    async def run(self) -> None:
        conn = self._conn
        copy = conn.copy_to_table
        columns = list(JOURNAL_COLUMNS)
        stats = self.stats
        perf = time.perf_counter
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._window_seconds:
                await asyncio.sleep(self._window_seconds)
            started = perf()
            rows, last_lsn, replies = self._take_batch()
            topups: list[tuple[int, str | None, int]] = []
            if self._topups:  # the approvals whose credit rows are in this batch
                topups = [t for t in self._topups if t[2] <= last_lsn]
                self._topups = [t for t in self._topups if t[2] > last_lsn]
            # ACCESS: every access row submitted so far goes with this batch.
            access, self._access = self._access, AccessBatch()
            if self._access_replies:
                replies = replies + self._access_replies
                self._access_replies = []
            self._in_flight = True
            nbytes = 0
            sent = acked = started
            if rows or access:
                data = b"".join((JOURNAL_COPY_HEADER, b"".join(rows), JOURNAL_COPY_TRAILER))
                nbytes = len(data) if rows else 0
                sent = self.batch_sent_at = perf()
                try:
                    # One round trip: a COPY outside a transaction block is its own atomic
                    # transaction, and PostgreSQL answers it only after COMMIT (with
                    # synchronous_commit on, after the WAL flush). BEGIN/COPY/COMMIT would
                    # cost three round trips for the same guarantee. The rows are binary
                    # COPY records made when each request was decided (Outcome.copy_record),
                    # so the commit itself only joins and sends bytes.
                    async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
                        # (a memoryview: asyncpg would take bytes for a file name)
                        if topups:  # kiosk top-ups: credits and their state, one commit
                            # BEGIN and the UPDATE in one simple query: three round trips
                            # (a failure ends this connection: JournalError, recovery).
                            await conn.execute(_topups_approved_sql(topups))
                            await copy("journal", source=memoryview(data), columns=columns,
                                       format="binary")
                            if access:
                                await access.write(conn)
                            await conn.execute("COMMIT")
                        elif not access:
                            await copy("journal", source=memoryview(data), columns=columns,
                                       format="binary")
                        elif not rows and access.single_copy:  # ACCESS: decisions alone
                            await access.write(conn)
                        else:  # ACCESS: money and access rows in one transaction
                            async with conn.transaction():
                                if rows:
                                    await copy("journal", source=memoryview(data),
                                               columns=columns, format="binary")
                                await access.write(conn)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._closed = True
                    self._committed.set()
                    raise JournalError(
                        f"group commit of {len(rows)} rows failed: {type(exc).__name__}: {exc}"
                    ) from exc
                acked = self.batch_acked_at = perf()
                if rows:
                    self.durable_lsn = last_lsn
                stats.batches += 1
                stats.rows += len(rows)
                stats.last_batch_rows = len(rows)
            stats.last_batch_bytes = nbytes
            stats.last_prepare_seconds = sent - started
            stats.last_postgres_seconds = acked - sent
            commit_seconds = acked - started
            stats.commit_seconds_total += commit_seconds
            if commit_seconds > self._slow_seconds and self._log is not None:
                self._log.warning("journal.slow_commit", rows=len(rows),
                                  seconds=round(commit_seconds, 4))
            self._release(replies)
            stats.last_release_seconds = perf() - acked
            if access and self.on_access_commit is not None:  # ACCESS: alarms to the stream
                self.on_access_commit(access)
            if self._on_commit is not None:
                self._on_commit(replies, len(rows), commit_seconds)
            if self._presence:  # after the answers: a sign-on burst never delays them
                await self._write_presence(conn)
            self._in_flight = False
            committed, self._committed = self._committed, asyncio.Event()
            committed.set()

    async def _write_presence(self, conn: Any) -> None:
        """Who is signed on (switch/_presence.py), best effort: a failure is logged and its
        entries dropped, never a reason to stop the journal; the next start marks every
        terminal offline anyway. A statement left half done is rolled back; a connection that
        broke fails the next commit, which recovers as any commit failure does."""
        presence, self._presence = self._presence.split(limits.PRESENCE_BATCH_MAX)
        if self._presence:
            self._wakeup.set()  # the rest after the next commit
        try:
            async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
                await presence.write(conn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._log is not None:
                self._log.warning("presence.write_failed", terminals=len(presence),
                                  error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                async with asyncio.timeout(limits.COMMIT_DEADLINE_SECONDS):
                    await conn.execute("ROLLBACK")

    def _take_batch(self) -> tuple[list[bytes], int, list[tuple[Answerable, Outcome]]]:
        """The rows of the next commit, at most batch_max, the lsn of the last, and the
        answers they make durable. Rows left over (submitted past a session's own checks) go
        in the next commit."""
        rows, lsns, replies = self._rows, self._lsns, self._replies
        if len(rows) <= self._batch_max:
            self._rows, self._lsns, self._replies = [], [], []
            return rows, (lsns[-1] if lsns else self.durable_lsn), replies
        n = self._batch_max
        self._rows, self._lsns = rows[n:], lsns[n:]
        last = lsns[n - 1]
        self._replies = [r for r in replies if r[1].lsn > last]
        self._wakeup.set()
        return rows[:n], last, [r for r in replies if r[1].lsn <= last]

    def _release(self, replies: list[tuple[Answerable, Outcome]]) -> None:
        touched: dict[Answerable, None] = {}
        for session, outcome in replies:
            session.answer_nowait(outcome)
            touched[session] = None
        for session in touched:
            session.flush()
        if self._paused and not self.congested:
            paused, self._paused = self._paused, set()
            for session in paused:
                session.resume_reading()

    async def drain(self) -> None:
        """Wait until everything submitted so far is committed and answered."""
        while (self._rows or self._replies or self._access_replies or self._presence
               or self._in_flight):
            if self._closed:
                raise JournalError("journal closed while draining")
            await self._committed.wait()

    def close(self) -> None:
        self._closed = True
        self._committed.set()
