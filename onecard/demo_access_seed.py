"""The doors of `onecard demo --serve`: a building with floors and a library on the demo campus.

`seed_demo_access` gives tenant 1 (under its org node, so the security desk sees everything)
three areas (the main building, its first floor below it, the library), ten doors with an
inward and an outward reader each on a door controller of its own (terminals of kind 3, keys
derived from the site's master secret like the tills'), a time zone that is always open, a
door group of every door but the server room granted to every identity class and one of the
server room granted to staff only (students are refused there: the demo's denials), and a
floor plan per area, drawn here as a PNG (`floor_plan`), with the doors placed on it. The
other park gets nothing. Tests seed the same with it (tests/test_demo_serve_walk.py).
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import Final

import asyncpg
import msgspec

from onecard.seed import CANTEEN_FREE

DOOR_TERMINAL_BASE: Final = 2_000_000
"""Door controllers get ids DOOR_TERMINAL_BASE + 1 .. (POS terminals are below 1,000,000)."""
STAFF_CLASS: Final = 2
"""The identity class let into the server room (the seed's classes: student, staff, visitor)."""


class Room(msgspec.Struct, frozen=True):
    label: str
    """Written on the plan (upper case letters, digits, space, comma, full stop, hyphen)."""
    door: str | None = None
    """The door from the corridor into the room (None: an opening without a door)."""
    door_kind: str = "door"
    restricted: bool = False
    """Staff only (the server room)."""


class Floor(msgspec.Struct, frozen=True):
    area: str
    title: str
    top: list[Room]
    bottom: list[Room]
    west: str | None = None
    """A door in the west wall at the corridor's end (an entrance), or None."""
    east: str | None = None
    parent: str | None = None


CAMPUS: Final = [
    Floor("Main building", "MAIN BUILDING, GROUND FLOOR",
          top=[Room("CANTEEN", "Canteen door"), Room("POST ROOM", "Post room"),
               Room("STAIRS, LIFTS")],
          bottom=[Room("LOBBY"), Room("CARD OFFICE", "Card office")],
          west="Main entrance", east="Side door"),
    Floor("First floor", "MAIN BUILDING, FIRST FLOOR",
          top=[Room("LAB 101", "Lab 101"), Room("LAB 102", "Lab 102"),
               Room("STAIRS, LIFTS")],
          bottom=[Room("SERVER ROOM", "Server room", restricted=True),
                  Room("STAFF OFFICE", "Staff office")],
          parent="Main building"),
    Floor("Library", "LIBRARY",
          top=[Room("READING ROOM", "Reading room"), Room("STACKS")],
          bottom=[Room("DESK"), Room("GROUP STUDY")],
          west="Library gate"),
]
"""Ten doors in three areas; the west doors are turnstiles."""


class DemoDoor(msgspec.Struct, frozen=True):
    door_id: int
    name: str
    area: str
    terminal_id: int
    """Its controller: reader 1 reads inwards, reader 2 outwards."""
    restricted: bool


class DemoAccess(msgspec.Struct, frozen=True):
    areas: dict[str, int]
    """Area name -> id."""
    doors: list[DemoDoor]


# -- the floor plan image ----------------------------------------------------------------------

WIDTH: Final = 800
HEIGHT: Final = 480
_MARGIN: Final = 40
_WALL: Final = 6
_TITLE_H: Final = 34
_PALETTE: Final = bytes.fromhex("f4f1e8" "3c444f" "dfe6ee" "fbfaf6" "2b3038" "8a96a3")
_PAPER, _WALL_C, _CORRIDOR, _ROOM, _INK, _FAINT = range(6)

# A 5x7 font: each glyph seven rows of five pixels, "#" set.
_GLYPHS: Final = {
    "A": ".###.#...##...#######...##...##...#", "B": "####.#...##...#####.#...##...#####.",
    "C": ".###.#...##....#....#....#...#.###.", "D": "####.#...##...##...##...##...#####.",
    "E": "######....#....####.#....#....#####", "F": "######....#....####.#....#....#....",
    "G": ".###.#...##....#.####...##...#.####", "H": "#...##...##...#######...##...##...#",
    "I": ".###...#....#....#....#....#...###.", "J": "..###...#....#....#....#.#..#..##..",
    "K": "#...##..#.#.#..##...#.#..#..#.#...#", "L": "#....#....#....#....#....#....#####",
    "M": "#...###.###.#.##...##...##...##...#", "N": "#...##...###..##.#.##..###...##...#",
    "O": ".###.#...##...##...##...##...#.###.", "P": "####.#...##...#####.#....#....#....",
    "Q": ".###.#...##...##...##.#.##..#..##.#", "R": "####.#...##...#####.#.#..#..#.#...#",
    "S": ".#####....#.....###.....#....#####.",
    "T": "#####..#....#....#....#....#....#..", "U": "#...##...##...##...##...##...#.###.",
    "V": "#...##...##...##...##...#.#.#...#..", "W": "#...##...##...##.#.##.#.##.#.#.#.#.",
    "X": "#...##...#.#.#...#...#.#.#...##...#", "Y": "#...##...#.#.#...#....#....#....#..",
    "Z": "#####....#...#...#...#...#....#####", "0": ".###.#...##..###.#.###..##...#.###.",
    "1": "..#...##....#....#....#....#...###.", "2": ".###.#...#....#...#...#...#...#####",
    "3": "#####...#...#.....#.....##...#.###.", "4": "...#...##..#.#.#..#######...#....#.",
    "5": "######....####.....#....##...#.###.", "6": "..##..#...#....####.#...##...#.###.",
    "7": "#####....#...#...#...#....#....#...", "8": ".###.#...##...#.###.#...##...#.###.",
    "9": ".###.#...##...#.####....#...#..##..", " ": "." * 35,
    ",": "." * 25 + ".##...#...", ".": "." * 25 + ".##...##..", "-": "." * 15 + ".###." + "." * 15,
}


def _glyph(ch: str) -> str:
    rows = _GLYPHS.get(ch, _GLYPHS[" "])
    return (rows + "." * 35)[:35]


class _Canvas:
    def __init__(self, width: int, height: int, colour: int) -> None:
        self.width, self.height = width, height
        self.rows = [bytearray([colour]) * width for _ in range(height)]

    def rect(self, x0: int, y0: int, x1: int, y1: int, colour: int) -> None:
        x0, x1 = max(0, x0), min(self.width, x1)
        for y in range(max(0, y0), min(self.height, y1)):
            self.rows[y][x0:x1] = bytes([colour]) * (x1 - x0)

    def text(self, x: int, y: int, words: str, colour: int, scale: int = 2) -> None:
        for n, ch in enumerate(words):
            bits = _glyph(ch)
            for row in range(7):
                for col in range(5):
                    if bits[row * 5 + col] == "#":
                        px = x + n * 6 * scale + col * scale
                        self.rect(px, y + row * scale, px + scale, y + (row + 1) * scale, colour)

    def text_centred(self, cx: int, cy: int, words: str, colour: int, scale: int = 2) -> None:
        width = len(words) * 6 * scale - scale
        self.text(cx - width // 2, cy - 7 * scale // 2, words, colour, scale)

    def png(self) -> bytes:
        raw = b"".join(b"\0" + bytes(r) for r in self.rows)

        def chunk(kind: bytes, data: bytes) -> bytes:
            return (struct.pack(">I", len(data)) + kind + data
                    + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

        return (b"\x89PNG\r\n\x1a\n"
                + chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, 8, 3, 0, 0, 0))
                + chunk(b"PLTE", _PALETTE) + chunk(b"IDAT", zlib.compress(raw, 9))
                + chunk(b"IEND", b""))


def floor_plan(floor: Floor) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """The floor's plan as a PNG (WIDTH x HEIGHT, a few kB): outer walls, a corridor from west
    to east, rooms above and below it with their names, doorways where the doors are; and each
    door's place on it in hundredths of a percent of the width and height (the e-map's unit)."""
    c = _Canvas(WIDTH, HEIGHT, _PAPER)
    c.text(_MARGIN, 10, floor.title, _INK)
    x0, y0, x1, y1 = _MARGIN, _MARGIN + _TITLE_H // 2, WIDTH - _MARGIN, HEIGHT - _MARGIN
    c.rect(x0, y0, x1, y1, _WALL_C)
    c.rect(x0 + _WALL, y0 + _WALL, x1 - _WALL, y1 - _WALL, _ROOM)
    cor0 = y0 + (y1 - y0) * 2 // 5
    cor1 = y0 + (y1 - y0) * 3 // 5
    c.rect(x0 + _WALL, cor0, x1 - _WALL, cor1, _CORRIDOR)
    c.rect(x0, cor0 - _WALL // 2, x1, cor0 + _WALL // 2, _WALL_C)
    c.rect(x0, cor1 - _WALL // 2, x1, cor1 + _WALL // 2, _WALL_C)
    c.text_centred((x0 + x1) // 2, (cor0 + cor1) // 2, "CORRIDOR", _FAINT)
    places: dict[str, tuple[int, int]] = {}

    def place(name: str, x: int, y: int) -> None:
        places[name] = (x * 10_000 // WIDTH, y * 10_000 // HEIGHT)

    gap = 36
    for rooms, top in ((floor.top, True), (floor.bottom, False)):
        span = (x1 - x0) // len(rooms)
        for i, room in enumerate(rooms):
            rx0, rx1 = x0 + i * span, x0 + (i + 1) * span if i < len(rooms) - 1 else x1
            if i:
                c.rect(rx0 - _WALL // 2, y0 if top else cor1, rx0 + _WALL // 2,
                       cor0 if top else y1, _WALL_C)
            wall_y = cor0 if top else cor1
            cx = (rx0 + rx1) // 2
            if room.door is not None or room.label.startswith("STAIRS") or room.label == "LOBBY":
                c.rect(cx - gap // 2, wall_y - _WALL, cx + gap // 2, wall_y + _WALL,
                       _CORRIDOR if room.door is None else _PAPER)
            if room.door is not None:
                place(room.door, cx, wall_y)
            c.text_centred(cx, (y0 + cor0) // 2 if top else (cor1 + y1) // 2, room.label, _INK)
    mid = (cor0 + cor1) // 2
    for name, x in ((floor.west, x0), (floor.east, x1)):
        if name is not None:
            c.rect(x - _WALL, mid - gap // 2, x + _WALL, mid + gap // 2, _PAPER)
            place(name, x, mid)
    return c.png(), places


# -- seeding -----------------------------------------------------------------------------------


def _doors_of(floor: Floor) -> list[tuple[str, str, bool]]:
    """(name, kind, restricted) of the floor's doors, in the order they are made."""
    out = [(name, "turnstile" if name == floor.west else "door", False)
           for name in (floor.west, floor.east) if name is not None]
    out += [(r.door, r.door_kind, r.restricted) for r in (*floor.top, *floor.bottom)
            if r.door is not None]
    return out


async def seed_demo_access(conn: asyncpg.Connection, tenant_id: int = 1) -> DemoAccess:
    """The campus's areas, doors, controllers, grants and floor plans (see the module's text).
    Needs the tenant's org node (admin_api._bootstrap) and its identity classes."""
    node = await conn.fetchval(
        "SELECT id FROM org_nodes WHERE kind = 'tenant' AND tenant_id = $1", tenant_id)
    assert node is not None, "bootstrap the admin side first: the doors hang under its node"
    areas: dict[str, int] = {}
    doors: list[DemoDoor] = []
    async with conn.transaction():
        tid = DOOR_TERMINAL_BASE
        for floor in CAMPUS:
            area = await conn.fetchval(
                "INSERT INTO access_areas (tenant_id, node_id, parent_id, name)"
                " VALUES ($1, $2, $3, $4) RETURNING id", tenant_id, node,
                areas.get(floor.parent) if floor.parent else None, floor.area)
            areas[floor.area] = area
            image, places = floor_plan(floor)
            await conn.execute(
                "INSERT INTO access_area_plans (area_id, tenant_id, content_type, image, sha256)"
                " VALUES ($1, $2, 'image/png', $3, $4)", area, tenant_id, image,
                hashlib.sha256(image).hexdigest())
            for name, kind, restricted in _doors_of(floor):
                tid += 1
                await conn.execute(
                    "INSERT INTO terminals (id, merchant_id, kind, name) VALUES ($1, $2, 3, $3)",
                    tid, CANTEEN_FREE, f"{name} controller")
                x, y = places[name]
                door = await conn.fetchval(
                    "INSERT INTO doors (tenant_id, node_id, area_id, name, kind, map_x, map_y)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    tenant_id, node, area, name, kind, x, y)
                await conn.execute("INSERT INTO access_door_states (door_id, tenant_id)"
                                   " VALUES ($1, $2)", door, tenant_id)
                await conn.executemany(
                    "INSERT INTO access_readers (tenant_id, terminal_id, reader_no, door_id,"
                    " direction) VALUES ($1, $2, $3, $4, $5)",
                    [(tenant_id, tid, r, door, r - 1) for r in (1, 2)])
                doors.append(DemoDoor(door_id=door, name=name, area=floor.area,
                                      terminal_id=tid, restricted=restricted))
        zone = await conn.fetchval(
            "INSERT INTO access_time_zones (tenant_id, node_id, name) VALUES ($1, $2, 'Always')"
            " RETURNING id", tenant_id, node)
        await conn.execute(
            "INSERT INTO access_time_zone_intervals SELECT $1, d, 0, 1440"
            " FROM generate_series(0, 7) d", zone)
        for name, members, subject_classes in (
                ("Every door but the server room", [d for d in doors if not d.restricted],
                 "SELECT id FROM identity_classes"),
                ("Server room", [d for d in doors if d.restricted],
                 f"SELECT id FROM identity_classes WHERE id = {STAFF_CLASS}")):
            group = await conn.fetchval(
                "INSERT INTO access_door_groups (tenant_id, node_id, name) VALUES ($1, $2, $3)"
                " RETURNING id", tenant_id, node, name)
            await conn.executemany(
                "INSERT INTO access_door_group_doors (door_group_id, door_id) VALUES ($1, $2)",
                [(group, d.door_id) for d in members])
            await conn.execute(
                "INSERT INTO access_grants (tenant_id, subject, class_id, door_group_id,"
                " time_zone_id) SELECT $1, 'class', id, $2, $3"
                f" FROM ({subject_classes}) c", tenant_id, group, zone)
    return DemoAccess(areas=areas, doors=doors)
