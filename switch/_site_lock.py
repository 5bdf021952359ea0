"""The site lock: one switch at a time owns a database's journal.

A PostgreSQL session-level advisory lock, taken at start on a connection of its own and held for
the life of the process. A second switch on the same database waits SITE_LOCK_WAIT_SECONDS (a
switch killed a moment ago may still hold it) and is then refused with one line naming the
holder.

The lock lives exactly as long as its connection. When that connection is lost, PostgreSQL has
released the lock and another switch may take it at once, so `wait_lost` raises SiteLockLost:
the supervisor stops answering (every connection dropped, as after a failed commit), takes the
lock again and recovers from PostgreSQL, or exits if another switch owns the journal now.
Whoever takes the lock ends every other journal backend before it reads the journal
(`Runtime._end_other_journal_backends`), so a late commit of the previous owner cannot land
after recovery. The hot-standby work turns this into leases with epochs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import asyncpg

from switch import limits
from switch._errors import SiteLockLost, StartupError

# One bigint key per database (advisory locks are per database). Taken already: 0x0C_A2D_0001
# (migrations), 0x0C_A2D_0002 (the change outbox, migrations/sql/0002_change_feed.sql),
# (0x0CA2D010, document id) in the two-key space (admin_api document execution).
SITE_LOCK_KEY = 0x0C_A2D_0003
_HOLDER_SQL = """
SELECT a.pid, a.application_name, host(a.client_addr) AS client, a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND (l.classid::bigint << 32) | l.objid::bigint = $1
"""


class SiteLock:
    """The site lock, held on its own connection (`take`); `wait_lost` watches it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: self._lost.set())

    @classmethod
    async def take(cls, dsn: str) -> SiteLock:
        """Take the lock, or raise StartupError naming the switch that holds it."""
        conn = await asyncpg.connect(
            dsn, server_settings={"application_name": f"onecard-switch-lock pid {os.getpid()}"}
        )
        try:
            await conn.execute(
                f"SET lock_timeout = {int(limits.SITE_LOCK_WAIT_SECONDS * 1000)}"
            )
            try:
                await conn.execute("SELECT pg_advisory_lock($1)", SITE_LOCK_KEY)
            except asyncpg.LockNotAvailableError:
                holder = await conn.fetchrow(_HOLDER_SQL, SITE_LOCK_KEY)
                raise StartupError(
                    "another switch owns this database's journal (site lock held by "
                    f"{_describe(holder)}): stop it first; two switches never share one database"
                ) from None
            await conn.execute("RESET lock_timeout")
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)
            raise
        return cls(conn)

    async def wait_lost(self) -> None:
        """Return never; raise SiteLockLost once the lock's connection is gone. A dropped
        connection is seen at once; one that stops answering (a network cut) within
        2 x SITE_LOCK_CHECK_SECONDS."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(limits.SITE_LOCK_CHECK_SECONDS):
                    await self._lost.wait()
            if self._lost.is_set():
                raise SiteLockLost("the connection holding the site lock was lost")
            try:
                async with asyncio.timeout(limits.SITE_LOCK_CHECK_SECONDS):
                    await self._conn.execute("SELECT 1")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise SiteLockLost(f"the connection holding the site lock failed: {exc!r}"
                                   ) from exc

    async def close(self) -> None:
        """Release the lock (by closing its connection)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._conn.close(), 5)


def _describe(holder: asyncpg.Record | None) -> str:
    if holder is None:  # released in between: the next start will take it
        return "a switch that has just stopped"
    since = holder["backend_start"].strftime("%Y-%m-%d %H:%M:%S %Z")
    return (f"{holder['application_name'] or 'an unnamed session'} from "
            f"{holder['client'] or 'a local socket'}, backend {holder['pid']}, since {since}")
