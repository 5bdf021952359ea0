"""Terminal presence: which terminals are signed on, in `terminal_presence` (and, for door
terminals, `access_door_states.online`).

A session confirmed at sign-on, and the end of a terminal's current session, add one entry
to the journal's next batch (`Journal.presence_changed`); the journal writer writes every
entry of a batch in one statement on its own connection, after the batch's answers went out
(switch/_journal.py). A sign-on burst of a thousand terminals is one or a few statements,
nothing is written per sign-on on a connection of its own, and the purchase path never waits
on it. The switch is the only writer: before it accepts terminals and when it stops cleanly it
marks every row offline (`mark_all_offline`), so a switch killed with terminals connected
leaves no terminal online once it runs again (docs/operations.md, "Terminals online").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg

PEER_CHARS_MAX = 100
"""A peer longer than this (it never is: ip:port) is cut (the column's CHECK)."""

# One statement: the terminals' rows, then the doors their readers serve. Within a batch the
# last entry of a terminal wins (ordinality); `since` moves only when `online` changes (a
# session replacing another keeps its terminal online since the first); `sessions` counts the
# batch's sign-ons.
_WRITE = """
WITH o AS (
    SELECT DISTINCT ON (e.terminal_id) e.terminal_id, e.online, e.peer, e.door,
           count(*) FILTER (WHERE e.online) OVER (PARTITION BY e.terminal_id) AS sign_ons
    FROM unnest($1::int[], $2::bool[], $3::text[], $4::bool[]) WITH ORDINALITY
         AS e(terminal_id, online, peer, door, n)
    ORDER BY e.terminal_id, e.n DESC
), p AS (
    INSERT INTO terminal_presence AS p (terminal_id, tenant_id, online, since, signed_on_at,
                                        peer, sessions)
    SELECT o.terminal_id, m.tenant_id, o.online, now(),
           CASE WHEN o.sign_ons > 0 THEN now() END, o.peer, o.sign_ons
    FROM o JOIN terminals t ON t.id = o.terminal_id JOIN merchants m ON m.id = t.merchant_id
    ON CONFLICT (terminal_id) DO UPDATE SET
        online = excluded.online,
        since = CASE WHEN p.online = excluded.online THEN p.since ELSE excluded.since END,
        signed_on_at = coalesce(excluded.signed_on_at, p.signed_on_at),
        peer = CASE WHEN excluded.sessions > 0 THEN excluded.peer ELSE p.peer END,
        sessions = p.sessions + excluded.sessions
)
INSERT INTO access_door_states AS s (door_id, tenant_id, online)
SELECT DISTINCT ON (r.door_id) r.door_id, r.tenant_id, o.online
FROM o JOIN access_readers r ON r.terminal_id = o.terminal_id
WHERE o.door
ORDER BY r.door_id, o.online DESC
ON CONFLICT (door_id) DO UPDATE SET online = excluded.online, changed_at = now()
"""

_ALL_OFFLINE = """
WITH p AS (
    UPDATE terminal_presence SET online = false, since = now() WHERE online
)
UPDATE access_door_states SET online = false, changed_at = now() WHERE online
"""


class PresenceBatch:
    """The presence entries of one commit, in the order they happened."""

    __slots__ = ("doors", "onlines", "peers", "terminal_ids")

    def __init__(self) -> None:
        self.terminal_ids: list[int] = []
        self.onlines: list[bool] = []
        self.peers: list[str] = []
        self.doors: list[bool] = []

    def add(self, terminal_id: int, online: bool, peer: str, door: bool) -> None:
        self.terminal_ids.append(terminal_id)
        self.onlines.append(online)
        self.peers.append(peer[:PEER_CHARS_MAX])
        self.doors.append(door)

    def split(self, n: int) -> tuple[PresenceBatch, PresenceBatch]:
        """The first `n` entries, and the rest (in their order)."""
        first, rest = PresenceBatch(), PresenceBatch()
        first.terminal_ids, rest.terminal_ids = self.terminal_ids[:n], self.terminal_ids[n:]
        first.onlines, rest.onlines = self.onlines[:n], self.onlines[n:]
        first.peers, rest.peers = self.peers[:n], self.peers[n:]
        first.doors, rest.doors = self.doors[:n], self.doors[n:]
        return first, rest

    def __len__(self) -> int:
        return len(self.terminal_ids)

    async def write(self, conn: asyncpg.Connection) -> None:
        """One statement in a transaction of its own that does not wait for its WAL flush
        (synchronous_commit off for it alone): presence need not survive a crash, since the
        next start marks every terminal offline, and the flush (about 4 ms here) would hold
        the journal writer. Three round trips; a failure ends the journal's connection
        (JournalError), so no ROLLBACK is needed. The caller sets the deadline."""
        await conn.execute("BEGIN; SET LOCAL synchronous_commit TO off")
        await conn.execute(_WRITE, self.terminal_ids, self.onlines, self.peers, self.doors)
        await conn.execute("COMMIT")


async def mark_all_offline(conn: asyncpg.Connection | asyncpg.Pool) -> None:
    """Every terminal and door offline: at start, before terminals are accepted, and after a
    clean stop's last commit. The caller sets the deadline."""
    await conn.execute(_ALL_OFFLINE)
