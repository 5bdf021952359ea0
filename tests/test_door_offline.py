"""The door's offline decision (terminals_sim.OfflineDoor, docs/protocol.md 4.6), alone.

Pure: a list in, a code out. The switch side (the list it sends, the upload it takes) is
tests/test_access_admin_e2e.py.
"""

from __future__ import annotations

import datetime as dt

from protocols import ocp
from terminals_sim import OfflineDoor

RC = ocp.ResponseCode
UTC8 = 28_800
# 2026-12-02 is a Wednesday; 10:00 local (UTC+8) is 02:00 UTC.
WED_10_LOCAL_MS = int(dt.datetime(2026, 12, 2, 2, 0, tzinfo=dt.UTC).timestamp() * 1000)
WED_DAY_NO = (dt.date(2026, 12, 2) - dt.date(1970, 1, 1)).days
WORKDAYS = ocp.OfflineTimeZone(1, [ocp.TimeZoneInterval(d, 480, 1080) for d in range(5)])
NIGHTS = ocp.OfflineTimeZone(2, [ocp.TimeZoneInterval(d, 0, 360) for d in range(7)]
                             + [ocp.TimeZoneInterval(7, 540, 720)])


def _door(*entries: ocp.AccessEntry, holidays: list[int] | None = None,
          mode: int = 0) -> OfflineDoor:
    door = OfflineDoor()
    assert door.apply(ocp.AccessListSnapshot(7, 0, 1, list(entries), UTC8, mode,
                                             holidays or [], [WORKDAYS, NIGHTS]))
    return door


def test_entries_time_zones_and_validity() -> None:
    door = _door(ocp.AccessEntry(1, 0), ocp.AccessEntry(2, 1), ocp.AccessEntry(3, 2),
                 ocp.AccessEntry(4, 0, 0, WED_10_LOCAL_MS // 1000), ocp.AccessEntry(5, 9))
    now = WED_10_LOCAL_MS
    assert door.code_for(1, now) == RC.APPROVED  # any time
    assert door.code_for(2, now) == RC.APPROVED  # working hours
    assert door.code_for(2, now + 9 * 3_600_000) == RC.OUTSIDE_TIME_ZONE  # 19:00 local
    assert door.code_for(3, now) == RC.OUTSIDE_TIME_ZONE  # nights only
    assert door.code_for(4, now) == RC.OUTSIDE_TIME_ZONE  # valid until now: ended
    assert door.code_for(4, now - 1000) == RC.APPROVED
    assert door.code_for(5, now) == RC.NO_PERMISSION, "a time zone the list lacks: refuse"
    assert door.code_for(6, now) == RC.NO_PERMISSION


def test_holidays_use_day_seven() -> None:
    door = _door(ocp.AccessEntry(2, 1), ocp.AccessEntry(3, 2), holidays=[WED_DAY_NO])
    assert door.code_for(2, WED_10_LOCAL_MS) == RC.HOLIDAY
    assert door.code_for(3, WED_10_LOCAL_MS) == RC.APPROVED  # 09:00-12:00 on holidays


def test_modes() -> None:
    assert _door(mode=1).code_for(99, WED_10_LOCAL_MS) == RC.APPROVED
    assert _door(ocp.AccessEntry(1), mode=2).code_for(1, WED_10_LOCAL_MS) == RC.DOOR_LOCKED
    assert OfflineDoor().code_for(1, WED_10_LOCAL_MS) == RC.NO_PERMISSION, "no list: nobody"


def test_parts_deltas_records_and_upload() -> None:
    door = OfflineDoor()
    part1 = ocp.AccessListSnapshot(7, 1, 2, [ocp.AccessEntry(2)])
    part0 = ocp.AccessListSnapshot(7, 0, 2, [ocp.AccessEntry(1)], UTC8, 0, [], [])
    assert not door.apply(part1) and door.version == 0
    assert door.apply(part0) and door.version == 7 and set(door.entries) == {1, 2}
    # A delta from another version is ignored; from the held one it applies.
    assert not door.apply(ocp.AccessListDelta(6, 8, [ocp.AccessEntry(3)], []))
    assert door.apply(ocp.AccessListDelta(7, 8, [ocp.AccessEntry(3)], [1]))
    assert (door.version, set(door.entries)) == (8, {2, 3})
    first = door.decide(3, now_ms=WED_10_LOCAL_MS)
    second = door.decide(1, now_ms=WED_10_LOCAL_MS + 1, reader_no=2, direction=1)
    assert (first.record_no, first.code, second.record_no, second.code) == (
        1, RC.APPROVED, 2, RC.NO_PERMISSION)
    upload = door.upload(41)
    assert upload == ocp.OfflineUpload(41, 8, [first, second])
    door.uploaded(ocp.OfflineUploadResult(41, 0, 1, 0, 1))
    assert door.pending == [second]
    door.uploaded(ocp.OfflineUploadResult(42, RC.SYSTEM_ERROR, 0, 0, 0))
    assert door.pending == [second], "a failed upload forgets nothing"
    door.uploaded(ocp.OfflineUploadResult(43, 0, 1, 0, 2))
    assert door.pending == [] and door.upload(44) is None
