"""The access decision's precedence (docs/access.md, "The decision, step by step"), in memory:
the real balance cache for cards and accounts, rules built as a reload builds them. Fast; the
end-to-end behaviour over TCP is tests/test_access_e2e.py."""

from __future__ import annotations

import msgspec
import pytest

from ledger_ext import Ledger
from protocols import ocp
from switch._access import (
    APB_HARD,
    APB_OFF,
    APB_RESTORE_SECONDS,
    FACTORS,
    FREE,
    LOCKED,
    NORMAL,
    SECURITY,
    AccessEngine,
    Door,
    Grant,
    Person,
    Reader,
    TenantRules,
    TimeZone,
)

RC = ocp.ResponseCode
NOW_MS = 1_767_225_600_000 + 10 * 3_600_000  # a Thursday, 10:00 UTC = 18:00 at +8
ALWAYS = TimeZone(tuple(((0, 1440),) for _ in range(8)), frozenset())
NEVER = TimeZone(tuple(() for _ in range(8)), frozenset())
TODAY = (NOW_MS // 1000 + 28_800) // 86_400
HOLIDAY_TODAY = TimeZone(tuple(((0, 1440),) if d < 7 else () for d in range(8)),
                         frozenset({TODAY}))


def allow(gid: int, tz: TimeZone | None = None, floors: int | None = None) -> Grant:
    return Grant(gid, False, tz, floors, 0, 2**62)


def deny(gid: int, tz: TimeZone | None = None) -> Grant:
    return Grant(gid, True, tz, None, 0, 2**62)


def door(*, mode: int = NORMAL, person: dict | None = None, node: dict | None = None,
         cls: dict | None = None, elevator: bool = False) -> Door:
    return Door(1, 1, 10, (10, 1), APB_OFF, 0, elevator, 0b1111 if elevator else 0, mode, None,
                2, 30, 3000, (), person or {}, node or {}, cls or {})


@pytest.fixture
def engine() -> AccessEngine:
    ledger = Ledger(100, 10)
    ledger.configure_tenant(1, 28_800)
    ledger.configure_tenant(2, 28_800)
    ledger.configure_class(1, 0, 0, 0, 0, 0)
    ledger.configure_class(2, 0, 0, 0, 0, 0)
    for account, tenant, cls in ((1, 1, 1), (2, 1, 2), (3, 2, 1), (4, 1, 1)):
        ledger.open_account(account, tenant, cls)
        ledger.bind_card(1000 + account, account)
    ledger.set_account_status(4, 2)  # lost
    e = AccessEngine(ledger, b"k" * 32)
    e.people[1] = Person(501, 1, (1, 2, 3))  # node 3 under 2
    e.people[2] = Person(502, 1, (1, 2))
    return e


def decide(e: AccessEngine, d: Door, card: int, **rules: object) -> int:
    e.install(TenantRules(1, 28_800, {1: d}, {(9, 1): Reader(d, 0, False)},
                          bool(rules.get("site_lockdown")), frozenset(), frozenset()))
    ev = ocp.AccessRequest(1, 1, 0, 1, card)
    return e.decide(e.readers[(9, 1)], ev, NOW_MS).code


def test_person_beats_department_beats_class(engine: AccessEngine) -> None:
    d = door(person={501: (allow(1),)}, node={3: (deny(2),)}, cls={1: (allow(3),)})
    assert decide(engine, d, 1001) == RC.APPROVED  # person allow over department deny
    d = door(node={3: (deny(2),)}, cls={1: (allow(3),)})
    assert decide(engine, d, 1001) == RC.NO_PERMISSION  # department deny over class allow
    d = door(node={2: (deny(2),), 3: (allow(4),)})
    assert decide(engine, d, 1001) == RC.APPROVED  # the deeper node is more specific


def test_deny_beats_allow_at_the_same_level(engine: AccessEngine) -> None:
    d = door(person={501: (allow(1), deny(2))})
    assert decide(engine, d, 1001) == RC.NO_PERMISSION
    d = door(cls={1: (deny(2), allow(1))})
    assert decide(engine, d, 1001) == RC.NO_PERMISSION


def test_a_level_outside_its_time_zone_is_skipped(engine: AccessEngine) -> None:
    assert decide(engine, door(person={501: (allow(1, NEVER),)}), 1001) == RC.OUTSIDE_TIME_ZONE
    assert decide(engine, door(person={501: (allow(1, HOLIDAY_TODAY),)}), 1001) == RC.HOLIDAY
    d = door(person={501: (allow(1, NEVER),)}, cls={1: (allow(3, ALWAYS),)})
    assert decide(engine, d, 1001) == RC.APPROVED
    assert decide(engine, door(), 1001) == RC.NO_PERMISSION


def test_credentials_and_site_state_come_first(engine: AccessEngine) -> None:
    everyone = {1: (allow(1),), 2: (allow(1),)}
    assert decide(engine, door(cls=everyone), 1004) == RC.CARD_LOST
    assert decide(engine, door(cls=everyone), 1003) == RC.UNKNOWN_CARD  # another tenant's
    assert decide(engine, door(cls=everyone), 5555) == RC.UNKNOWN_CARD
    assert decide(engine, door(mode=LOCKED, cls=everyone), 1001) == RC.DOOR_LOCKED
    assert decide(engine, door(mode=FREE), 1001) == RC.APPROVED  # no grant needed
    assert decide(engine, door(mode=FREE), 1004) == RC.CARD_LOST
    assert decide(engine, door(cls=everyone), 1001, site_lockdown=True) == RC.LOCKDOWN


def test_elevator_floors_are_the_deciding_levels(engine: AccessEngine) -> None:
    d = door(elevator=True, cls={1: (allow(1, floors=0b0110), allow(2, floors=0b1000))})
    engine.install(TenantRules(1, 28_800, {1: d}, {(9, 1): Reader(d, 0, False)}, False,
                               frozenset(), frozenset()))
    decision = engine.decide(engine.readers[(9, 1)], ocp.AccessRequest(1, 1, 0, 1, 1001),
                             NOW_MS)
    assert (decision.code, decision.floors) == (0, 0b1110)
    decision = engine.decide(engine.readers[(9, 1)],
                             ocp.AccessRequest(2, 1, 0, 1, 1001, floor=0), NOW_MS)
    assert decision.code == RC.FLOOR_NOT_PERMITTED


def test_a_second_factor_counts_only_within_the_window(engine: AccessEngine) -> None:
    """Card + face or fingerprint, window 10 s: the first factor waits 10 s (whole seconds);
    the same factor again restarts the window; a different factor inside it opens."""
    d = msgspec.structs.replace(door(mode=SECURITY, cls={1: (allow(1),)}),
                                factor=FACTORS["face_or_fingerprint"], factor_window_s=10)
    engine.install(TenantRules(1, 28_800, {1: d}, {(9, 1): Reader(d, 0, False)}, False,
                               frozenset(), frozenset()))
    engine.templates[(2, "face-1")] = 1
    engine.templates[(3, "fp-1")] = 1
    reader = engine.readers[(9, 1)]

    def show(kind: int, at_s: float, card: int = 0, credential: str = "") -> int:
        ev = ocp.AccessRequest(1, 1, 0, kind, card, credential)
        return engine.decide(reader, ev, NOW_MS + int(at_s * 1000)).code

    assert show(1, 0, 1001) == RC.SECOND_FACTOR_REQUIRED
    assert show(2, 10, credential="face-1") == RC.SECOND_FACTOR_REQUIRED  # too late: a new one
    assert show(2, 11, credential="face-1") == RC.SECOND_FACTOR_REQUIRED  # same factor again
    assert show(1, 20.9, 1001) == RC.APPROVED  # the card, 9.9 s after the last face
    assert show(3, 30, credential="fp-1") == RC.SECOND_FACTOR_REQUIRED
    assert show(1, 31, 1002) == RC.NO_PERMISSION  # another person's card: no grant
    assert show(1, 32, 1001) == RC.APPROVED
    assert show(3, 40, 1001, "fp-1") == RC.APPROVED  # both in one request
    assert show(3, 41, 1002, "fp-1") == RC.NO_PERMISSION
    assert show(1, 42, 1004) == RC.CARD_LOST
    # The duress flag opens at once (a duress finger), with its silent alarm.
    duress = engine.decide(reader, ocp.AccessRequest(1, 1, 0, 1, 1001, duress=True),
                           NOW_MS + 50_000)
    assert (duress.code, duress.alarm) == (RC.APPROVED, "duress")


def test_a_biometric_security_door_is_locked_offline(engine: AccessEngine) -> None:
    """Its access list cannot check a face: offline_mode 2 (docs/protocol.md 4.6)."""
    import asyncio

    from switch._offline import compute_list

    pin_door = door(mode=SECURITY, cls={1: (allow(1),)})
    face_door = msgspec.structs.replace(pin_door, factor=FACTORS["face"])
    for d, mode in ((pin_door, 0), (face_door, 2)):
        engine.install(TenantRules(1, 28_800, {1: d}, {(9, 1): Reader(d, 0, False)}, False,
                                   frozenset(), frozenset()))
        entries, rules = asyncio.run(compute_list(engine, d, [(1001, 1)]))
        assert rules[1] == mode
        assert bool(entries) == (mode == 0)


def test_a_hard_anti_passback_position_lasts_a_day(engine: AccessEngine) -> None:
    """As long as a restart keeps it (rebuilt from a day of records): no decision differs."""
    d = msgspec.structs.replace(door(cls={1: (allow(1),)}), apb=APB_HARD)
    engine.apb[(1, 10)] = (0, NOW_MS - APB_RESTORE_SECONDS * 1000 + 1000)
    assert decide(engine, d, 1001) == RC.APB_VIOLATION
    engine.apb[(1, 10)] = (0, NOW_MS - APB_RESTORE_SECONDS * 1000)
    assert decide(engine, d, 1001) == RC.APPROVED
