"""A door terminal's offline side: the access list it holds, the decision it takes alone, and the
records it uploads when the link is back (docs/protocol.md 4.6).

Plain data and pure functions over OCP messages: no socket, no clock (time comes in as
`now_ms`), so the simulator, the tests and a vendor reading the spec run the same rules.

    door = OfflineDoor()
    for msg in answers_to(ocp.AccessListRequest(door.version)):
        door.apply(msg)
    record = door.decide(card_no, now_ms=now, reader_no=1)   # journaled later
    upload = door.upload(txn_seq)                            # ocp.OfflineUpload or None
    door.uploaded(result)                                    # forget what the switch holds
"""

from __future__ import annotations

import datetime as dt
from typing import Final

from protocols import limits, ocp

# The codes of offline records: the switch's own access deny reasons (docs/access.md).
OPENED: Final = int(ocp.ResponseCode.APPROVED)
NO_PERMISSION: Final = int(ocp.ResponseCode.NO_PERMISSION)
"""No entry for the credential at this door (or its time zone is not in the list)."""
OUTSIDE_TIME_ZONE: Final = int(ocp.ResponseCode.OUTSIDE_TIME_ZONE)
"""The entry's time zone or validity window does not cover now."""
HOLIDAY: Final = int(ocp.ResponseCode.HOLIDAY)
"""Today is a holiday of the list and the time zone has no holiday interval now."""
DOOR_LOCKED: Final = int(ocp.ResponseCode.DOOR_LOCKED)
"""The door's offline mode is locked."""
RECORDS_HELD_MAX: Final = 100_000
"""Records a door keeps while offline; past it the oldest is dropped (and counted)."""


class OfflineDoor:
    """The list (entries by card number and rules), the record counter and pending records."""

    def __init__(self, *, next_record_no: int = 1) -> None:
        self.version = 0
        """The held list's version; 0: none (decide nothing, deny everyone)."""
        self.entries: dict[int, ocp.AccessEntry] = {}
        self.utc_offset_s = 28_800
        self.offline_mode = 0
        self.holidays: frozenset[int] = frozenset()
        self.time_zones: dict[int, list[ocp.TimeZoneInterval]] = {}
        self.next_record_no = next_record_no
        self.pending: list[ocp.OfflineRecord] = []
        self.dropped = 0
        self._parts: dict[int, ocp.AccessListSnapshot] = {}

    # --- the list ----------------------------------------------------------------------------

    def apply(self, msg: ocp.AccessListSnapshot | ocp.AccessListDelta) -> bool:
        """Take one part of a snapshot or a delta; True when the held list changed. A delta
        that does not start at the held version is ignored (ask again)."""
        if isinstance(msg, ocp.AccessListDelta):
            if msg.from_version != self.version or msg.to_version < msg.from_version:
                return False
            for card_no in msg.removals:
                self.entries.pop(card_no, None)
            for e in msg.upserts:
                self.entries[e.card_no] = e
            changed = msg.to_version != self.version
            self.version = msg.to_version
            return changed
        if any(p.version != msg.version for p in self._parts.values()):
            self._parts.clear()  # a newer snapshot started: drop the old parts
        self._parts[msg.part] = msg
        if len(self._parts) < msg.parts:
            return False
        parts = [self._parts[i] for i in range(msg.parts)]
        self._parts.clear()
        head = parts[0]
        self.entries = {e.card_no: e for p in parts for e in p.entries}
        self.utc_offset_s = head.utc_offset_s
        self.offline_mode = head.offline_mode
        self.holidays = frozenset(head.holidays)
        self.time_zones = {tz.time_zone_id: list(tz.intervals) for tz in head.time_zones}
        self.version = head.version
        return True

    # --- the decision --------------------------------------------------------------------------

    def code_for(self, card_no: int, now_ms: int) -> int:
        """0 (open) or the deny reason, from the held list alone."""
        if self.offline_mode == 2:
            return DOOR_LOCKED
        if self.offline_mode == 1:
            return OPENED
        entry = self.entries.get(card_no)
        if entry is None:
            return NO_PERMISSION
        now_s = now_ms // 1000
        if entry.valid_from_s and now_s < entry.valid_from_s:
            return OUTSIDE_TIME_ZONE
        if entry.valid_until_s and now_s >= entry.valid_until_s:
            return OUTSIDE_TIME_ZONE
        if entry.time_zone_id == 0:
            return OPENED
        intervals = self.time_zones.get(entry.time_zone_id)
        if intervals is None:
            return NO_PERMISSION  # a time zone the list does not hold: refuse, never guess
        local_s = now_s + self.utc_offset_s
        day_no = local_s // 86_400
        minute = (local_s % 86_400) // 60
        weekday = (dt.date(1970, 1, 1) + dt.timedelta(days=day_no)).weekday()
        day = 7 if day_no in self.holidays else weekday
        if any(i.day == day and i.start_minute <= minute < i.end_minute for i in intervals):
            return OPENED
        return HOLIDAY if day == 7 else OUTSIDE_TIME_ZONE

    def decide(self, card_no: int, *, now_ms: int, reader_no: int = 1, direction: int = 0
               ) -> ocp.OfflineRecord:
        """Decide alone and keep the record for the upload."""
        record = ocp.OfflineRecord(self.next_record_no, now_ms, reader_no, direction, card_no,
                                   self.code_for(card_no, now_ms))
        self.next_record_no += 1
        self.pending.append(record)
        if len(self.pending) > RECORDS_HELD_MAX:
            self.pending.pop(0)
            self.dropped += 1
        return record

    # --- the upload ----------------------------------------------------------------------------

    def upload(self, txn_seq: int) -> ocp.OfflineUpload | None:
        """The oldest pending records (at most a frame's worth), or None when none wait."""
        if not self.pending or self.version == 0:
            return None
        return ocp.OfflineUpload(txn_seq, self.version,
                                 self.pending[:limits.OFFLINE_RECORDS_PER_UPLOAD_MAX])

    def uploaded(self, result: ocp.OfflineUploadResult) -> None:
        """The switch holds every record up to result.last_record_no: forget them."""
        if result.code == ocp.ResponseCode.APPROVED:
            self.pending = [r for r in self.pending if r.record_no > result.last_record_no]
