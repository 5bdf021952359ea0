"""Doors for `onecard demo` and `onecard bench`: a site's access rules, door traffic, figures.

`seed_doors` gives a seeded campus door controllers (terminals of kind 3), one door per
controller with an inward and an outward reader, areas (one with hard anti-passback), a door
group holding every door, an always-open time zone and a grant to every identity class
(docs/access.md). `door_scenario` plays the events a demo must show on one controller: a lost
card at a door, an anti-passback violation and a forced-open door. `access_figures` reads what
happened from the database.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncpg
import msgspec

from onecard.seed import CANTEEN_FREE
from protocols import ocp

DOOR_TERMINAL_BASE = 2_000_000
"""Door controllers get ids DOOR_TERMINAL_BASE + 1 .. (POS terminals are below 1,000,000)."""
READERS_PER_DOOR = 2
"""Reader 1 reads inwards, reader 2 outwards, both for the controller's door."""
APB_DOOR_SHARE = 4
"""Every APB_DOOR_SHARE-th door is a library turnstile: hard anti-passback (the demo's)."""


class AccessFigures(msgspec.Struct):
    decisions: int
    """Access answers the door controllers received."""
    opened: int
    denied: int
    denied_by_reason: dict[str, int]
    door_events: int
    alarms_raised: int
    alarms_open: int
    alarms_by_kind: dict[str, int]
    records_journaled: int
    """Decision records in the database: equal to `decisions` (every answer was durable)."""
    doors: int


async def seed_doors(conn: asyncpg.Connection, doors: int, *, tenant_id: int = 1,
                     apb: bool = True) -> list[int]:
    """`doors` door controllers with their doors, areas, group, time zone and grants; returns
    the controllers' terminal ids."""
    tids = [DOOR_TERMINAL_BASE + i for i in range(1, doors + 1)]
    async with conn.transaction():
        await conn.copy_records_to_table(
            "terminals", records=[(t, CANTEEN_FREE, 3, f"door {t}") for t in tids],
            columns=["id", "merchant_id", "kind", "name"])
        campus = await conn.fetchval(
            "INSERT INTO access_areas (tenant_id, name) VALUES ($1, 'campus') RETURNING id",
            tenant_id)
        library = await conn.fetchval(
            "INSERT INTO access_areas (tenant_id, parent_id, name, apb) VALUES"
            " ($1, $2, 'library', $3) RETURNING id", tenant_id, campus,
            "hard" if apb else "off")
        door_ids = [await conn.fetchval(
            "INSERT INTO doors (tenant_id, area_id, name, kind) VALUES ($1, $2, $3, $4)"
            " RETURNING id", tenant_id,
            library if apb and i % APB_DOOR_SHARE == 0 else campus,
            f"door {i}", "turnstile" if apb and i % APB_DOOR_SHARE == 0 else "door")
            for i in range(doors)]
        await conn.copy_records_to_table(
            "access_readers",
            records=[(tenant_id, t, r, d, r - 1) for t, d in zip(tids, door_ids, strict=True)
                     for r in range(1, READERS_PER_DOOR + 1)],
            columns=["tenant_id", "terminal_id", "reader_no", "door_id", "direction"])
        group = await conn.fetchval(
            "INSERT INTO access_door_groups (tenant_id, name) VALUES ($1, 'every door')"
            " RETURNING id", tenant_id)
        await conn.copy_records_to_table(
            "access_door_group_doors", records=[(group, d) for d in door_ids],
            columns=["door_group_id", "door_id"])
        zone = await conn.fetchval(
            "INSERT INTO access_time_zones (tenant_id, name) VALUES ($1, 'always') RETURNING id",
            tenant_id)
        await conn.execute(
            "INSERT INTO access_time_zone_intervals SELECT $1, d, 0, 1440"
            " FROM generate_series(0, 7) d", zone)
        await conn.execute(
            "INSERT INTO access_grants (tenant_id, subject, class_id, door_group_id,"
            " time_zone_id) SELECT $1, 'class', id, $2, $3 FROM identity_classes",
            tenant_id, group, zone)
    return tids


class _Door(asyncio.Protocol):
    """One door controller's connection, request by request (the scenario, not the load)."""

    def __init__(self, terminal_id: int, key: bytes) -> None:
        self.terminal_id = terminal_id
        self.key = key
        self.conn = ocp.Connection(ocp.Role.TERMINAL)
        self.transport: Any = None
        self.messages: asyncio.Queue[Any] = asyncio.Queue()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.conn.start_sign_on(self.terminal_id, self.key, os.urandom(16)))

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        while (ev := self.conn.next_event()) is not ocp.NEED_DATA:
            if isinstance(ev, ocp.SignOnChallenge):
                self.transport.write(self.conn.send(ocp.SignOnConfirm(0, 3, "demo")))
            else:
                self.messages.put_nowait(ev)
            if ev is ocp.CLOSED:
                break

    async def request(self, msg: ocp.Message) -> Any:
        self.transport.write(self.conn.send(msg))
        async with asyncio.timeout(30):
            return await self.messages.get()


async def door_scenario(host: str, port: int, terminal_id: int, key: bytes, *, lost_card: int,
                        card: int) -> list[str]:
    """On controller `terminal_id` (a hard anti-passback door): a lost card, the same card in
    twice, a forced-open door and its closing. Returns one line per step."""
    loop = asyncio.get_running_loop()
    _, door = await loop.create_connection(lambda: _Door(terminal_id, key), host, port)
    try:
        async with asyncio.timeout(30):
            result = await door.messages.get()
        assert isinstance(result, ocp.SignOnResult) and result.code == 0, result
        seq = result.last_txn_seq
        lines = []

        async def ask(reader: int, card_no: int, what: str) -> None:
            nonlocal seq
            seq += 1
            a = await door.request(ocp.AccessRequest(seq, reader, 0, 1, card_no))
            lines.append(f"{what}: {_name(a.code)}")

        await ask(1, lost_card, "a lost card at the library gate")
        await ask(2, card, "a card leaving the library")
        await ask(1, card, "the same card entering")
        await ask(1, card, "and entering again without leaving")
        seq += 1
        await door.request(ocp.DoorEvent(seq, 1, int(ocp.DoorEventCode.FORCED_OPEN)))
        lines.append("the gate forced open: alarm raised")
        return lines
    finally:
        door.transport.close()


def _name(code: int) -> str:
    try:
        return "OPEN" if code == 0 else ocp.ResponseCode(code).name
    except ValueError:
        return str(code)


async def access_figures(conn: asyncpg.Connection, answered: int) -> AccessFigures:
    """What the database holds after `answered` access answers (all of them durable)."""
    rows = await conn.fetch("SELECT code, count(*) AS n FROM access_decisions GROUP BY code")
    alarms = await conn.fetch(
        "SELECT kind, count(*) AS n, count(*) FILTER (WHERE state = 'open') AS open"
        " FROM access_alarms GROUP BY kind")
    recorded = sum(r["n"] for r in rows)
    opened = sum(r["n"] for r in rows if r["code"] == 0)
    return AccessFigures(
        decisions=answered,
        opened=opened,
        denied=recorded - opened,
        denied_by_reason={_name(r["code"]): r["n"] for r in rows if r["code"]},
        door_events=await conn.fetchval("SELECT count(*) FROM access_door_events"),
        alarms_raised=sum(r["n"] for r in alarms),
        alarms_open=sum(r["open"] for r in alarms),
        alarms_by_kind={r["kind"]: r["n"] for r in alarms},
        records_journaled=await conn.fetchval(
            "SELECT count(DISTINCT (terminal_id, source, txn_seq)) FROM access_decisions"),
        doors=await conn.fetchval("SELECT count(*) FROM doors"),
    )
