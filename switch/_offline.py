"""Offline operation of door terminals (docs/protocol.md 4.6): access lists out, records in.

A door terminal asks for its list (AccessListRequest); the switch computes it from the access
rules in memory (switch/_access.py) and the tenant's active cards, versions it, and sends a
whole snapshot or the delta from the version the door holds. Offline, the door decides from
that list (terminals_sim/_door_offline.py is the reference); back online it uploads its
records (OfflineUpload), which are written to access_decisions as source 1 (offline), each
(terminal, record_no) once: the table's unique key refuses a replay, which is counted as a
duplicate and changes nothing.

Both need PostgreSQL (the card list; the records' commit), so a worker task owned by the
supervisor serves them from a bounded queue, like the journal look-ups: a session hands a
request over and goes on deciding. The list is the one of the terminal's first reader's door.
What the list holds is conservative: a credential whose deciding grants the list cannot
express (a deny limited in time, several allows of different time zones) is decided online
only, so offline it is refused rather than wrongly let in.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

import asyncpg

from protocols import limits, ocp
from switch._access import FREE, LOCKED, SECURITY, AccessEngine, Door, Grant, TimeZone

if TYPE_CHECKING:
    from switch._session import TerminalSession

QUEUE_MAX: Final = 256
"""List requests and uploads waiting for the worker; past it they are refused BUSY."""
VERSIONS_KEPT: Final = 4
"""Lists kept per door terminal to send deltas from."""
TERMINALS_CACHED_MAX: Final = 20_000
CARDS_PER_SLICE: Final = 2_000
"""Cards looked at between two yields to the event loop (about 2 ms of work)."""
CARDS_CACHE_SECONDS: Final = 2.0
"""A tenant's card list is read once for the doors that ask within this long (a site's doors
all reconnect at once after an outage)."""
_RC = ocp.ResponseCode
_EPOCH_MAX = limits.EPOCH_SECONDS_MAX

_CARDS_SQL = (
    "SELECT c.card_no, c.account_id FROM cards c JOIN accounts a ON a.id = c.account_id"
    " WHERE a.tenant_id = $1 AND c.status = 0 AND a.status = 0 ORDER BY c.card_no"
)
_INSERT_SQL = (
    "INSERT INTO access_decisions (terminal_id, source, txn_seq, tenant_id, door_id, area_id,"
    " reader_no, direction, credential_kind, card_no, account_id, code, decided_ms)"
    " SELECT $1, 1, r.no, $2, r.door, r.area, r.reader, r.dir, 1, r.card, r.account, r.code,"
    " r.ms FROM unnest($3::bigint[], $4::int[], $5::int[], $6::smallint[], $7::smallint[],"
    " $8::bigint[], $9::int[], $10::smallint[], $11::bigint[])"
    " AS r(no, door, area, reader, dir, card, account, code, ms)"
    " ON CONFLICT ON CONSTRAINT access_decision_once DO NOTHING RETURNING txn_seq"
)


class DoorList:
    """One version of a door terminal's list."""

    __slots__ = ("entries", "rules", "version")

    def __init__(self, version: int, entries: dict[int, ocp.AccessEntry],
                 rules: tuple[Any, ...]) -> None:
        self.version = version
        self.entries = entries
        self.rules = rules
        """(utc_offset_s, offline_mode, holidays, time zones): a change needs a snapshot."""


def _entry_for(door: Door, grants_by_level: list[tuple[Grant, ...]], card_no: int,
               zone_ids: dict[TimeZone, int], valid_until_day: int | None
               ) -> ocp.AccessEntry | None:
    """The entry of a card at the door, or None (not let in offline)."""
    for level in grants_by_level:
        if any(g.deny for g in level):
            # A deny decides at this level (at least sometimes): offline cannot weigh it.
            return None
        allows = [g for g in level if not g.deny]
        if not allows:
            continue
        zones = {g.time_zone for g in allows}
        if None in zones:
            best = next(g for g in allows if g.time_zone is None)
        elif len(zones) == 1:
            best = allows[0]
        else:
            return None  # several time zones: decided online only
        tz_id = 0 if best.time_zone is None else zone_ids.setdefault(best.time_zone,
                                                                    len(zone_ids) + 1)
        until = best.valid_until_s if best.valid_until_s <= _EPOCH_MAX else 0
        if valid_until_day is not None:
            card_end = (valid_until_day + 1) * 86_400
            until = min(until, card_end) if until else card_end
        floors = door.all_floors if best.floors is None else best.floors
        return ocp.AccessEntry(card_no, tz_id, min(best.valid_from_s, _EPOCH_MAX),
                               min(until, _EPOCH_MAX), floors if door.elevator else 0)
    return None


async def compute_list(engine: AccessEngine, door: Door, cards: list[tuple[int, int]]
                       ) -> tuple[dict[int, ocp.AccessEntry], tuple[Any, ...]]:
    """(entries by card number, rules) of the door now, from the rules in memory. It yields
    to the event loop every CARDS_PER_SLICE cards, so a site's 150,000 cards never hold the
    loop (the sessions' deciding) for more than a few milliseconds."""
    rules = engine.tenants[door.tenant_id]
    ledger = engine.ledger
    if door.mode == LOCKED or rules.site_lockdown or (
            rules.locked_areas and not rules.locked_areas.isdisjoint(door.areas)) or (
            door.mode == SECURITY and door.factor):
        # A card + face (fingerprint) door cannot check the biometric alone: fail secure.
        mode = 2
    elif door.mode == FREE:
        mode = 1
    else:
        mode = 0
    zone_ids: dict[TimeZone, int] = {}
    entries: dict[int, ocp.AccessEntry] = {}
    if mode == 0:
        for i, (card_no, account_id) in enumerate(cards):
            if i and i % CARDS_PER_SLICE == 0:
                await asyncio.sleep(0)
            bound = ledger.card_account(card_no)
            if bound is None or bound[1] or bound[0] != account_id:
                continue
            account = ledger.account(account_id)
            if account.status != 0 or account.tenant_id != door.tenant_id:
                continue
            person = engine.people.get(account_id)
            levels: list[tuple[Grant, ...]] = []
            if person is not None:
                if (g := door.by_person.get(person.person_id)):
                    levels.append(g)
                for node in reversed(person.path):
                    if (g := door.by_node.get(node)):
                        levels.append(g)
            if (g := door.by_class.get(account.class_id)):
                levels.append(g)
            entry = _entry_for(door, levels, card_no, zone_ids,
                               engine.card_valid_until_day.get(card_no))
            if entry is not None:
                entries[card_no] = entry
    zones = sorted(zone_ids.items(), key=lambda kv: kv[1])[:limits.TIME_ZONES_MAX]
    holidays: set[int] = set()
    offline_zones = []
    for tz, tz_id in zones:
        holidays |= tz.holidays
        intervals = [ocp.TimeZoneInterval(day, start, end)
                     for day, spans in enumerate(tz.days) for start, end in spans]
        offline_zones.append(ocp.OfflineTimeZone(tz_id, intervals[:limits.INTERVALS_MAX]))
    rule_part = (rules.utc_offset_s, mode, tuple(sorted(holidays)[-limits.HOLIDAYS_MAX:]),
                 tuple(offline_zones))
    return entries, rule_part


def snapshot_parts(lst: DoorList) -> list[ocp.AccessListSnapshot]:
    entries = [lst.entries[c] for c in sorted(lst.entries)]
    size = limits.ACCESS_ENTRIES_PER_FRAME_MAX
    chunks = [entries[i:i + size] for i in range(0, len(entries), size)] or [[]]
    offset, mode, holidays, zones = lst.rules
    return [ocp.AccessListSnapshot(lst.version, i, len(chunks), chunk,
                                   *((offset, mode, list(holidays), list(zones)) if i == 0
                                     else (offset, mode)))
            for i, chunk in enumerate(chunks)]


def delta_messages(old: DoorList, new: DoorList) -> list[ocp.AccessListDelta]:
    upserts = [e for c, e in sorted(new.entries.items()) if old.entries.get(c) != e]
    removals = sorted(old.entries.keys() - new.entries.keys())
    size = limits.ACCESS_ENTRIES_PER_FRAME_MAX
    out = []
    version = old.version
    while True:
        up, upserts = upserts[:size], upserts[size:]
        rm, removals = removals[:size], removals[size:]
        last = not upserts and not removals
        # Intermediate steps reuse the old version number: only the last reaches the new one.
        out.append(ocp.AccessListDelta(version, new.version if last else version, up, rm))
        if last:
            return out


class OfflineLists:
    """The worker, the lists sent per door terminal, and the high-water marks."""

    def __init__(self, engine_of: Any) -> None:
        self._engine_of = engine_of  # () -> the current AccessEngine (it is swapped on reload)
        self._queue: asyncio.Queue[tuple[TerminalSession, Any]] = asyncio.Queue(QUEUE_MAX)
        self.lists: OrderedDict[int, list[DoorList]] = OrderedDict()
        self._cards: dict[int, tuple[float, list[tuple[int, int]]]] = {}
        self.snapshots_sent = self.deltas_sent = self.stale = 0
        self.records_accepted = self.records_duplicate = 0

    def submit(self, session: TerminalSession, ev: Any) -> bool:
        """Queue a request; False when the queue is full (answer BUSY)."""
        try:
            self._queue.put_nowait((session, ev))
        except asyncio.QueueFull:
            return False
        return True

    async def run(self, pool: asyncpg.Pool) -> None:
        while True:
            session, ev = await self._queue.get()
            try:
                async with asyncio.timeout(10):
                    if isinstance(ev, ocp.AccessListRequest):
                        messages = await self._list(pool, session.terminal_id, ev)
                    else:
                        messages = [await self._upload(pool, session.terminal_id, ev)]
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                session.log.warning("offline.failed", terminal_id=session.terminal_id,
                                    error=str(exc))
                messages = [ocp.Error(_RC.SYSTEM_ERROR, ev.txn_seq, "retry later")]
            session.send_offline(ev.txn_seq, messages)

    def _door_of(self, terminal_id: int) -> Door | None:
        engine = self._engine_of()
        readers = sorted((k[1], r) for k, r in engine.readers.items() if k[0] == terminal_id)
        return readers[0][1].door if readers else None

    async def _list(self, pool: asyncpg.Pool, terminal_id: int, ev: ocp.AccessListRequest
                    ) -> list[ocp.Message]:
        door = self._door_of(terminal_id)
        if door is None:
            return [ocp.Error(_RC.UNKNOWN_READER, ev.txn_seq, "the terminal has no reader")]
        cached = self._cards.get(door.tenant_id)
        if cached is not None and time.monotonic() - cached[0] < CARDS_CACHE_SECONDS:
            cards = cached[1]
        else:
            cards = [(r["card_no"], r["account_id"])
                     for r in await pool.fetch(_CARDS_SQL, door.tenant_id)]
            self._cards = {door.tenant_id: (time.monotonic(), cards)}  # one tenant at a time
        entries, rules = await compute_list(self._engine_of(), door, cards)
        history = self.lists.get(terminal_id, [])
        latest = history[-1] if history else None
        if latest is None or latest.entries != entries or latest.rules != rules:
            version = max((latest.version + 1) if latest else 1, int(time.time() * 1000))
            latest = DoorList(version, entries, rules)
            history = [*history, latest][-VERSIONS_KEPT:]
            self.lists[terminal_id] = history
            self.lists.move_to_end(terminal_id)
            while len(self.lists) > TERMINALS_CACHED_MAX:
                self.lists.popitem(last=False)
        if ev.have_version == 0:
            self.snapshots_sent += 1
            return list(snapshot_parts(latest))
        held = next((x for x in history if x.version == ev.have_version), None)
        if held is None:
            self.stale += 1
            return [ocp.Error(_RC.SNAPSHOT_STALE, ev.txn_seq,
                              "cannot send deltas from that version: ask with have_version 0")]
        if held.rules != latest.rules:
            self.snapshots_sent += 1
            return list(snapshot_parts(latest))
        self.deltas_sent += 1
        return list(delta_messages(held, latest))

    async def _upload(self, pool: asyncpg.Pool, terminal_id: int, ev: ocp.OfflineUpload
                      ) -> ocp.Message:
        history = self.lists.get(terminal_id)
        issued_max = max(history[-1].version if history else 0, int(time.time() * 1000))
        if ev.snapshot_version > issued_max:
            self.stale += 1
            return ocp.Error(_RC.SNAPSHOT_STALE, ev.txn_seq,
                             "snapshot_version was never issued: ask for the list")
        engine = self._engine_of()
        columns: list[list[Any]] = [[] for _ in range(9)]
        tenant_id = 0
        for rec in ev.records:
            reader = engine.readers.get((terminal_id, rec.reader_no))
            if reader is None:
                return ocp.Error(_RC.UNKNOWN_READER, ev.txn_seq,
                                 f"terminal {terminal_id} has no reader {rec.reader_no}")
            door = reader.door
            tenant_id = door.tenant_id
            bound = engine.ledger.card_account(rec.card_no)
            account_id = 0
            if bound is not None and engine.ledger.account(bound[0]).tenant_id == tenant_id:
                account_id = bound[0]  # another tenant's card is recorded as unknown
            for col, value in zip(columns, (rec.record_no, door.door_id, door.area_id or 0,
                                            rec.reader_no, rec.direction, rec.card_no,
                                            account_id, rec.code, rec.time_ms), strict=True):
                col.append(value)
        async with pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetch(_INSERT_SQL, terminal_id, tenant_id, *columns)
            last = await conn.fetchval(
                "SELECT max(txn_seq) FROM access_decisions WHERE terminal_id = $1"
                " AND source = 1", terminal_id)
        self.records_accepted += len(inserted)
        self.records_duplicate += len(ev.records) - len(inserted)
        return ocp.OfflineUploadResult(ev.txn_seq, 0, len(inserted),
                                       len(ev.records) - len(inserted), int(last or 0))

