"""Access decisions: doors, elevators, their rules in memory, and the decision itself.

The rules (migrations/sql/0015_access.sql; docs/access.md) are loaded at start-up and reloaded
per tenant when the change feed brings an `access_changed` event; each reload builds new
objects and swaps them in whole, so a decision never sees half a change. Deciding is a few dict
look-ups and comparisons: no database round trip, no await.

The engine also keeps what the rules act on: anti-passback positions, which doors are open,
multi-card windows in progress, security-mode first factors waiting for their second,
first-card doors held open, phone QR codes used at doors, open anti-passback alarms, and the
recent answers of each door terminal (a repeat of a txn_seq gets its original answer). All of
it but which doors are open is rebuilt at start from the journal (`load_access`): every
decision that changed it was committed before its answer (docs/access.md, "After a restart").
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from protocols import limits as ocp_limits
from protocols import ocp, qr

if TYPE_CHECKING:
    import asyncpg

    from ledger_ext import Ledger
    from switch._qr import QrGate

_RC = ocp.ResponseCode

# Door modes.
NORMAL, OFFICE, SECURITY, MULTI_CARD, FIRST_CARD, FREE, LOCKED = range(7)
MODES = {"normal": NORMAL, "office": OFFICE, "security": SECURITY, "multi_card": MULTI_CARD,
         "first_card": FIRST_CARD, "free": FREE, "locked": LOCKED}
# Security mode's second factor (doors.security_factor): 0 the PIN, else a bit mask of the
# biometric credential kinds that count (bit 2 face, bit 3 fingerprint).
FACTORS = {"pin": 0, "face": 1 << 2, "fingerprint": 1 << 3,
           "face_or_fingerprint": 1 << 2 | 1 << 3}
_CARD_PART, _BIO_PART = 1, 2
"""The two factors of a biometric security door: the card (or phone QR code), the biometric."""
QR_COUNTED = frozenset({0, ocp.ResponseCode.MULTI_CARD_PENDING,
                        ocp.ResponseCode.SECOND_FACTOR_REQUIRED})
"""Decisions that use up the phone QR code they were made on: it opened, or it counted."""
APB_OFF, APB_HARD, APB_TIMED = 0, 1, 2
_APB = {"off": APB_OFF, "hard": APB_HARD, "timed": APB_TIMED}

# Grant subject levels, most specific first (docs/access.md, step 6).
_PERSON, _DEPARTMENT, _CLASS = 0, 1, 2

# Account statuses (accounts.status) and their deny codes at a door.
_ILLEGAL_STATUS = {1: _RC.ACCOUNT_FROZEN, 2: _RC.CARD_LOST, 3: _RC.ACCOUNT_CLOSED}
ILLEGAL_CODES = frozenset({_RC.ACCOUNT_FROZEN, _RC.CARD_LOST, _RC.ACCOUNT_CLOSED,
                           _RC.CARD_CANCELLED, _RC.CARD_EXPIRED})

ANSWERS_KEPT = 512
"""Recent answers kept per door terminal for repeats (twice the txn_seq window)."""
APB_RESTORE_SECONDS = 86_400
"""An anti-passback position lasts this long (a person who left without showing a card is not
held out for ever), and at start-up positions are rebuilt from this much of the decision
records: a restart changes no anti-passback decision."""
MULTI_CARD_DOORS_MAX = 100_000
FACTORS_PENDING_MAX = 100_000
APB_ENTRIES_MAX = 2_000_000
"""Bounds on the in-memory state (style: limits on everything); past them the oldest go."""

# Door events (DoorEventCode) and the alarms they raise or clear.
EV = ocp.DoorEventCode
EVENT_RAISES = {EV.HELD_OPEN: "held_open", EV.FORCED_OPEN: "forced_open", EV.TAMPER: "tamper",
                EV.DURESS: "duress", EV.LOCK_FAULT: "lock_fault"}
EVENT_CLEARS = {EV.CLOSED: ("forced_open", "held_open"), EV.TAMPER_CLEARED: ("tamper",),
                EV.LOCK_OK: ("lock_fault",)}
EVENT_STATE = {EV.OPENED: "open", EV.CLOSED: "closed", EV.HELD_OPEN: "held_open",
               EV.FORCED_OPEN: "forced_open"}


class TimeZone(msgspec.Struct, frozen=True):
    """Weekly intervals: days[d] for d 0 Monday .. 6 Sunday, 7 holiday; holidays as local day
    numbers (days since 1970-01-01)."""

    days: tuple[tuple[tuple[int, int], ...], ...]
    holidays: frozenset[int]

    def check(self, day: int, weekday: int, minute: int) -> int:
        """0 inside now, else the deny code: OUTSIDE_TIME_ZONE or HOLIDAY."""
        if day in self.holidays:
            intervals = self.days[7]
            for start, end in intervals:
                if start <= minute < end:
                    return 0
            return _RC.HOLIDAY
        for start, end in self.days[weekday]:
            if start <= minute < end:
                return 0
        return _RC.OUTSIDE_TIME_ZONE

    def window_end(self, day: int, weekday: int, minute: int) -> int:
        """The minute the interval holding `minute` ends (0 when none holds it)."""
        intervals = self.days[7] if day in self.holidays else self.days[weekday]
        for start, end in intervals:
            if start <= minute < end:
                return end
        return 0


class Grant(msgspec.Struct, frozen=True):
    grant_id: int
    deny: bool
    time_zone: TimeZone | None
    floors: int | None
    valid_from_s: int
    valid_until_s: int


class Door(msgspec.Struct, frozen=True):
    door_id: int
    tenant_id: int
    area_id: int
    areas: tuple[int, ...]
    """The door's area and every area above it (lockdowns of any of them hold the door)."""
    apb: int
    apb_seconds: int
    elevator: bool
    all_floors: int
    mode: int
    mode_time_zone: TimeZone | None
    multi_card_count: int
    multi_card_window_s: int
    open_ms: int
    interlocked: tuple[int, ...]
    # Grants on the door, by subject: person id / org node id / class id -> grants.
    by_person: dict[int, tuple[Grant, ...]]
    by_node: dict[int, tuple[Grant, ...]]
    by_class: dict[int, tuple[Grant, ...]]
    factor: int = 0
    """Security mode's second factor: 0 the PIN, else FACTORS' mask of biometric kinds."""
    factor_window_s: int = 10


class Reader(msgspec.Struct, frozen=True):
    door: Door
    direction: int
    patrol: bool


class TenantRules(msgspec.Struct, frozen=True):
    tenant_id: int
    utc_offset_s: int
    doors: dict[int, Door]
    readers: dict[tuple[int, int], Reader]
    site_lockdown: bool
    locked_areas: frozenset[int]
    override_people: frozenset[int]


class Person(msgspec.Struct, frozen=True):
    person_id: int
    tenant_id: int
    path: tuple[int, ...]
    """Org node ids from the root to the person's node."""


class Decision(msgspec.Struct):
    """One decided access request: the answer, its record and the alarm it raises."""

    code: int
    open_ms: int = 0
    floors: int = 0
    account_id: int = 0
    grant_id: int = 0
    duress: bool = False
    alarm: str = ""
    qr: qr.QrToken | None = None
    """The phone QR code decided on (authentic): journaled by its nonce, used up if QR_COUNTED."""
    cleared_apb: bool = False
    """This pass ends the person's open anti-passback alarm of the door's area."""


class AccessAnswer:
    """What the journal hands back to the session after the commit (switch/_session.py)."""

    __slots__ = ("code", "message", "repeat", "txn_seq")
    kind = -1  # ACCESS_ANSWER: not a ledger outcome kind
    terminal_id = lsn = amount_fen = 0

    def __init__(self, txn_seq: int, message: ocp.Message, code: int,
                 repeat: bool = False) -> None:
        self.txn_seq = txn_seq
        self.message = message
        self.code = code
        self.repeat = repeat


ACCESS_ANSWER = AccessAnswer.kind


def _local(now_s: int, utc_offset_s: int) -> tuple[int, int, int]:
    """(local day number, weekday 0 Monday, minute of the day)."""
    local = now_s + utc_offset_s
    day = local // 86_400
    return day, (day + 3) % 7, (local % 86_400) // 60


class PinCheck:
    """A person's PIN and duress PIN (argon2id hashes). Verifying argon2 takes milliseconds, so
    a PIN that verified once is remembered as a keyed hash, in memory only."""

    __slots__ = ("_duress_hash", "_known", "_pin_hash")

    def __init__(self, pin_hash: str | None, duress_hash: str | None) -> None:
        self._pin_hash = pin_hash
        self._duress_hash = duress_hash
        self._known: dict[bytes, int] = {}

    def check(self, pin: str, key: bytes) -> int:
        """1 the PIN, 2 the duress PIN, 0 neither."""
        tag = hmac.new(key, pin.encode(), hashlib.sha256).digest()
        found = self._known.get(tag)
        if found is not None:
            return found
        result = 0
        if self._duress_hash and _verify(self._duress_hash, pin):
            result = 2
        elif self._pin_hash and _verify(self._pin_hash, pin):
            result = 1
        if len(self._known) < 16:
            self._known[tag] = result
        return result


def _verify(hashed: str, pin: str) -> bool:
    from argon2 import PasswordHasher
    from argon2.exceptions import Argon2Error, InvalidHashError

    try:
        return PasswordHasher().verify(hashed, pin)
    except (Argon2Error, InvalidHashError):
        return False


def hash_pin(pin: str) -> str:
    """The argon2id hash stored in access_person_pins (for tools, tests and the demo)."""
    from argon2 import PasswordHasher

    return PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1).hash(pin)


class AccessStatistics(msgspec.Struct, frozen=True):
    decisions: int
    opened: int
    denied: int
    alarms: int
    events: int
    tenants: int
    doors: int
    reloads: int


class AccessEngine:
    """The rules and the state they act on, and `decide`."""

    def __init__(self, ledger: Ledger, pin_key: bytes, qr_gate: QrGate | None = None) -> None:
        self.ledger = ledger
        self.tenants: dict[int, TenantRules] = {}
        self.readers: dict[tuple[int, int], Reader] = {}
        self.people: dict[int, Person] = {}  # account id -> person
        self.pins: dict[int, PinCheck] = {}  # account id -> PINs
        self.templates: dict[tuple[int, str], int] = {}  # (kind, template id) -> account id
        self.card_valid_until_day: dict[int, int] = {}  # card_no -> last valid local day
        self.qr_gate = qr_gate
        self._pin_key = pin_key
        # State the rules act on.
        self.apb: dict[tuple[int, int], tuple[int, int]] = {}  # (account, area) -> (dir, ms)
        self.open_until_ms: dict[int, int] = {}  # door -> open until (ms); sensors too
        self.multi: dict[int, tuple[int, set[int]]] = {}  # door -> (first s, accounts)
        self.held_open_until_s: dict[int, int] = {}  # first-card doors held open
        # (door, account) -> (first factor's s, _CARD_PART or _BIO_PART): security doors.
        self.factors: dict[tuple[int, int], tuple[int, int]] = {}
        self.apb_alarms: set[tuple[int, int]] = set()  # (account, area): open APB alarms
        # Exactly once: per door terminal, recent answers by txn_seq, and the highest decided.
        self.answers: dict[int, dict[int, ocp.AccessResult | ocp.DoorEventAck]] = {}
        self.last_txn_seq: dict[int, int] = {}
        self._decisions = self._opened = self._alarms = self._events = self._reloads = 0

    # -- the rules ----------------------------------------------------------------------

    def install(self, rules: TenantRules) -> None:
        """Swap in a tenant's rules whole (start-up and every reload)."""
        self.tenants[rules.tenant_id] = rules
        readers = {k: r for k, r in self.readers.items() if r.door.tenant_id != rules.tenant_id}
        readers.update(rules.readers)
        self.readers = readers
        self._reloads += 1

    def statistics(self) -> AccessStatistics:
        return AccessStatistics(self._decisions, self._opened, self._decisions - self._opened,
                                self._alarms, self._events, len(self.tenants),
                                sum(len(t.doors) for t in self.tenants.values()), self._reloads)

    # -- exactly once ---------------------------------------------------------------------

    def repeat_of(self, terminal_id: int, txn_seq: int
                  ) -> ocp.AccessResult | ocp.DoorEventAck | None:
        answers = self.answers.get(terminal_id)
        return None if answers is None else answers.get(txn_seq)

    def remember(self, terminal_id: int, txn_seq: int,
                 answer: ocp.AccessResult | ocp.DoorEventAck) -> None:
        answers = self.answers.get(terminal_id)
        if answers is None:
            answers = self.answers[terminal_id] = {}
        answers[txn_seq] = answer
        if txn_seq > self.last_txn_seq.get(terminal_id, 0):
            self.last_txn_seq[terminal_id] = txn_seq
        if len(answers) > ANSWERS_KEPT:
            floor = self.last_txn_seq[terminal_id] - ANSWERS_KEPT // 2
            for seq in [s for s in answers if s < floor]:
                del answers[seq]

    # -- the decision ---------------------------------------------------------------------

    def card_account(self, card_no: int, now_s: int) -> tuple[int, int]:
        """(account id, 0) or (0 or account id, deny code) of a card number."""
        bound = self.ledger.card_account(card_no) if card_no else None
        if bound is None:
            return 0, _RC.UNKNOWN_CARD
        account_id, cancelled = bound
        if cancelled:
            return account_id, _RC.CARD_CANCELLED
        until = self.card_valid_until_day.get(card_no)
        if until is not None and now_s // 86_400 > until:
            return account_id, _RC.CARD_EXPIRED
        return account_id, 0

    def credential_account(self, ev: ocp.AccessRequest, now_s: int
                           ) -> tuple[int, int, qr.QrToken | None]:
        """(account id, 0, QR token) or (0 or account id, deny code, QR token) of the
        request's credential; the token is that of an authentic phone QR code, else None."""
        kind = ev.credential_kind
        if kind == 1:
            account_id, code = self.card_account(ev.card_no, now_s)
            return account_id, code, None
        if kind == 4:
            gate = self.qr_gate
            if gate is None:
                return 0, _RC.UNKNOWN_CARD, None
            try:
                token = qr.authenticate(gate.key, ev.credential)
            except qr.QrError:
                return 0, _RC.UNKNOWN_CARD, None
            # Used (here or at a till) first: a replay is QR_USED, even after a restart.
            if gate.paid_by(token, now_s) is not None:
                return 0, _RC.QR_USED, token
            if gate.time_problem(token, now_s) is not None:
                return 0, _RC.QR_EXPIRED, token
            bound = self.ledger.card_account(token.card_no)
            if bound is None:
                return 0, _RC.UNKNOWN_CARD, token
            return bound[0], _RC.CARD_CANCELLED if bound[1] else 0, token
        account_id = self.templates.get((kind, ev.credential), 0)
        return account_id, 0 if account_id else _RC.UNKNOWN_CARD, None

    def decide(self, reader: Reader, ev: ocp.AccessRequest, now_ms: int) -> Decision:
        """Decide one request (docs/access.md, "The decision, step by step"). Updates the
        state the rules act on; the caller journals the decision and answers after commit, and
        uses up a phone QR code whose decision is in QR_COUNTED."""
        self._decisions += 1
        now_s = now_ms // 1000
        door = reader.door
        token = None
        if ev.credential_kind == 1:
            account_id, code = self.card_account(ev.card_no, now_s)
        else:
            account_id, code, token = self.credential_account(ev, now_s)
        ledger = self.ledger
        account: Any = None
        if account_id:
            account = ledger.account(account_id)
            if account.tenant_id != door.tenant_id:
                return Decision(_RC.UNKNOWN_CARD)  # another tenant's: not told apart
        if code:
            if code in (_RC.UNKNOWN_CARD, _RC.QR_USED, _RC.QR_EXPIRED):
                return Decision(code, qr=token)
            self._alarms += 1
            return Decision(code, account_id=account_id, alarm="illegal_card", qr=token)
        # A card read with a face or fingerprint (one request, both factors): the same person's.
        two_factor = False
        if ev.card_no and ev.credential_kind in (2, 3):
            card_account, card_code = self.card_account(ev.card_no, now_s)
            if card_code and card_code != _RC.UNKNOWN_CARD:
                self._alarms += 1
                return Decision(card_code, account_id=card_account, alarm="illegal_card")
            if card_account != account_id:
                return Decision(_RC.NO_PERMISSION, account_id=account_id)
            two_factor = True
        decision = self._decide_person(reader, ev, now_ms, account_id, account, two_factor)
        if token is not None:
            decision.qr = token
        return decision

    def _decide_person(self, reader: Reader, ev: ocp.AccessRequest, now_ms: int,
                       account_id: int, account: Any, two_factor: bool) -> Decision:
        now_s = now_ms // 1000
        door = reader.door
        status = account.status
        if status:
            self._alarms += 1
            return Decision(_ILLEGAL_STATUS.get(status, _RC.ACCOUNT_CLOSED),
                            account_id=account_id, alarm="illegal_card")
        mode = door.mode
        if mode == LOCKED:
            return Decision(_RC.DOOR_LOCKED, account_id=account_id)
        rules = self.tenants[door.tenant_id]
        person = self.people.get(account_id)
        direction = reader.direction if reader.direction < 2 else ev.pass_direction
        if rules.site_lockdown or (rules.locked_areas
                                   and not rules.locked_areas.isdisjoint(door.areas)):
            if person is not None and person.person_id in rules.override_people:
                return self._open(door, account_id, direction, now_ms, 0, door.all_floors)
            return Decision(_RC.LOCKDOWN, account_id=account_id)
        day, weekday, minute = _local(now_s, rules.utc_offset_s)
        if mode == FREE:
            return self._open(door, account_id, direction, now_ms, 0, door.all_floors)
        if mode == OFFICE:
            tz = door.mode_time_zone
            if tz is not None and not tz.check(day, weekday, minute):
                return self._open(door, account_id, direction, now_ms, 0, door.all_floors)
        elif mode == FIRST_CARD and self.held_open_until_s.get(door.door_id, 0) > now_s:
            return self._open(door, account_id, direction, now_ms, 0, door.all_floors)
        # Grants: the most specific level that applies decides; deny beats allow there.
        code, grant_id, floors = self._grants(door, person, account.class_id, now_s, day,
                                              weekday, minute)
        if code:
            return Decision(code, account_id=account_id)
        if door.elevator:
            if ev.floor >= 0 and not (floors >> ev.floor) & 1:
                return Decision(_RC.FLOOR_NOT_PERMITTED, account_id=account_id,
                                grant_id=grant_id)
            if not floors:
                return Decision(_RC.FLOOR_NOT_PERMITTED, account_id=account_id,
                                grant_id=grant_id)
        # Anti-passback of the door's area.
        if door.apb:
            last = self.apb.get((account_id, door.area_id))
            if last is not None:
                last_dir, last_ms = last
                if (door.apb == APB_HARD and last_dir == direction
                        and now_ms - last_ms < APB_RESTORE_SECONDS * 1000) or (
                        door.apb == APB_TIMED and direction == 0 and last_dir == 0
                        and now_ms - last_ms < door.apb_seconds * 1000):
                    self._alarms += 1
                    if len(self.apb_alarms) >= APB_ENTRIES_MAX:
                        self.apb_alarms.clear()
                    self.apb_alarms.add((account_id, door.area_id))
                    return Decision(_RC.APB_VIOLATION, account_id=account_id,
                                    grant_id=grant_id, alarm="apb_violation")
        # Interlock: every other door of the door's interlocks must be closed.
        for other in door.interlocked:
            if self.open_until_ms.get(other, 0) > now_ms:
                return Decision(_RC.INTERLOCK, account_id=account_id, grant_id=grant_id)
        # PINs: a duress PIN (or flag) opens with a silent alarm; security mode needs the PIN.
        duress = ev.duress
        pin_door = mode == SECURITY and not door.factor
        if ev.pin:
            pins = self.pins.get(account_id)
            found = pins.check(ev.pin, self._pin_key) if pins is not None else 0
            if found == 2:
                duress = True
            elif found == 0 and pin_door:
                return Decision(_RC.PIN_WRONG, account_id=account_id, grant_id=grant_id)
        elif pin_door and not duress:
            return Decision(_RC.PIN_REQUIRED, account_id=account_id, grant_id=grant_id)
        if mode == SECURITY and door.factor and not duress:
            # Card + face / fingerprint: both factors of this person, in one request or two.
            kind = ev.credential_kind
            if two_factor:
                if not (door.factor >> kind) & 1:
                    return Decision(_RC.NO_PERMISSION, account_id=account_id,
                                    grant_id=grant_id)
            elif kind in (2, 3) and not (door.factor >> kind) & 1:
                return Decision(_RC.NO_PERMISSION, account_id=account_id, grant_id=grant_id)
            elif not self.factor_step(door, account_id,
                                      _BIO_PART if kind in (2, 3) else _CARD_PART, now_s):
                return Decision(_RC.SECOND_FACTOR_REQUIRED, account_id=account_id,
                                grant_id=grant_id)
        if mode == MULTI_CARD:
            if not self.multi_step(door, account_id, now_s):
                return Decision(_RC.MULTI_CARD_PENDING, account_id=account_id,
                                grant_id=grant_id)
        elif mode == FIRST_CARD:
            self.first_card_step(door, rules.utc_offset_s, now_s)
        decision = self._open(door, account_id, direction, now_ms, grant_id, floors)
        if duress:
            decision.duress = True
            decision.alarm = "duress"
            self._alarms += 1
        return decision

    # -- the state of the door modes (shared by `decide` and the rebuild at start) ---------

    def multi_step(self, door: Door, account_id: int, now_s: int) -> bool:
        """Count a permitted person at a multi-card door: True when the door opens now."""
        window = self.multi.get(door.door_id)
        if window is None or now_s - window[0] >= door.multi_card_window_s:
            if len(self.multi) >= MULTI_CARD_DOORS_MAX:
                self.multi.clear()
            window = self.multi[door.door_id] = (now_s, set())
        window[1].add(account_id)
        if len(window[1]) < door.multi_card_count:
            return False
        del self.multi[door.door_id]
        return True

    def factor_step(self, door: Door, account_id: int, part: int, now_s: int) -> bool:
        """Count one factor (_CARD_PART or _BIO_PART) of a person at a biometric security door:
        True when it completes the pair within the window (the door opens now). The same
        factor again restarts the window."""
        key = (door.door_id, account_id)
        pending = self.factors.get(key)
        if pending is not None and now_s - pending[0] < door.factor_window_s \
                and pending[1] != part:
            del self.factors[key]
            return True
        if len(self.factors) >= FACTORS_PENDING_MAX:
            self.factors.clear()
        self.factors[key] = (now_s, part)
        return False

    def first_card_step(self, door: Door, utc_offset_s: int, now_s: int) -> None:
        """A permitted person passed a first-card door: hold it open to its interval's end."""
        tz = door.mode_time_zone
        if tz is None:
            return
        day, weekday, minute = _local(now_s, utc_offset_s)
        end = tz.window_end(day, weekday, minute)
        if end:
            day_start_s = now_s - (now_s + utc_offset_s) % 86_400
            self.held_open_until_s[door.door_id] = day_start_s + end * 60

    def _open(self, door: Door, account_id: int, direction: int, now_ms: int, grant_id: int,
              floors: int) -> Decision:
        self._opened += 1
        decision = Decision(0, door.open_ms, floors if door.elevator else 0, account_id,
                            grant_id)
        if door.apb:
            key = (account_id, door.area_id)
            if len(self.apb) >= APB_ENTRIES_MAX:
                self.apb.clear()
            self.apb[key] = (direction, now_ms)
            if key in self.apb_alarms:
                self.apb_alarms.discard(key)
                decision.cleared_apb = True
        if door.interlocked or door.door_id in self.open_until_ms:
            self.open_until_ms[door.door_id] = now_ms + door.open_ms
        return decision

    def _grants(self, door: Door, person: Person | None, class_id: int, now_s: int, day: int,
                weekday: int, minute: int) -> tuple[int, int, int]:
        """(0, grant id, floors) or (deny code, grant id, 0)."""
        near = 0
        levels: list[tuple[Grant, ...]] = []
        if person is not None:
            grants = door.by_person.get(person.person_id)
            if grants:
                levels.append(grants)
            by_node = door.by_node
            if by_node:
                for node in reversed(person.path):
                    grants = by_node.get(node)
                    if grants:
                        levels.append(grants)
        grants = door.by_class.get(class_id)
        if grants:
            levels.append(grants)
        for level in levels:
            allow: Grant | None = None
            floors = 0
            denied: Grant | None = None
            deny_floors = 0
            for g in level:
                if not g.valid_from_s <= now_s < g.valid_until_s:
                    continue
                tz = g.time_zone
                if tz is not None:
                    miss = tz.check(day, weekday, minute)
                    if miss:
                        if not g.deny and near != _RC.OUTSIDE_TIME_ZONE:
                            near = miss
                        continue
                if g.deny:
                    if g.floors is None or not door.elevator:
                        return _RC.NO_PERMISSION, g.grant_id, 0
                    denied = g
                    deny_floors |= g.floors
                else:
                    allow = allow or g
                    floors |= door.all_floors if g.floors is None else g.floors
            if allow is not None:
                return 0, allow.grant_id, floors & ~deny_floors
            if denied is not None:
                return _RC.NO_PERMISSION, denied.grant_id, 0
        return near or _RC.NO_PERMISSION, 0, 0

    # -- door events ----------------------------------------------------------------------

    def door_event(self, door: Door, event: int, now_ms: int) -> None:
        self._events += 1
        if event == EV.OPENED or event == EV.FORCED_OPEN or event == EV.HELD_OPEN:
            self.open_until_ms[door.door_id] = 2**62  # open until it reports closed
        elif event == EV.CLOSED:
            self.open_until_ms[door.door_id] = 0
        if event in EVENT_RAISES:
            self._alarms += 1


# -- loading ---------------------------------------------------------------------------------


def _epoch_s(value: Any, default: int) -> int:
    return default if value is None else int(value.timestamp())


async def load_tenant_rules(conn: asyncpg.Connection, tenant_id: int) -> TenantRules:
    """One tenant's access rules, read in one snapshot (call inside a transaction)."""
    offset = await conn.fetchval("SELECT utc_offset_s FROM tenants WHERE id = $1", tenant_id)
    holidays: dict[int, set[int]] = {}
    for r in await conn.fetch(
        "SELECT h.calendar_id, h.day - date '1970-01-01' AS n FROM access_holidays h"
        " JOIN access_holiday_calendars c ON c.id = h.calendar_id WHERE c.tenant_id = $1",
        tenant_id,
    ):
        holidays.setdefault(r["calendar_id"], set()).add(r["n"])
    intervals: dict[int, list[list[tuple[int, int]]]] = {}
    zones_rows = await conn.fetch(
        "SELECT id, holiday_calendar_id FROM access_time_zones WHERE tenant_id = $1", tenant_id)
    for z in zones_rows:
        intervals[z["id"]] = [[] for _ in range(8)]
    for r in await conn.fetch(
        "SELECT i.time_zone_id, i.day, i.start_minute, i.end_minute"
        " FROM access_time_zone_intervals i JOIN access_time_zones z ON z.id = i.time_zone_id"
        " WHERE z.tenant_id = $1 ORDER BY i.time_zone_id, i.day, i.start_minute", tenant_id,
    ):
        intervals[r["time_zone_id"]][r["day"]].append((r["start_minute"], r["end_minute"]))
    zones = {
        z["id"]: TimeZone(tuple(tuple(d) for d in intervals[z["id"]]),
                          frozenset(holidays.get(z["holiday_calendar_id"], ())))
        for z in zones_rows
    }
    areas = {r["id"]: r for r in await conn.fetch(
        "SELECT id, parent_id, apb, apb_seconds FROM access_areas WHERE tenant_id = $1",
        tenant_id)}

    def area_chain(area_id: int | None) -> tuple[int, ...]:
        chain: list[int] = []
        while area_id is not None and area_id in areas and area_id not in chain:
            chain.append(area_id)
            area_id = areas[area_id]["parent_id"]
        return tuple(chain)

    floors: dict[int, int] = {}
    for r in await conn.fetch(
        "SELECT f.door_id, f.floor_no FROM access_floors f JOIN doors d ON d.id = f.door_id"
        " WHERE d.tenant_id = $1 AND f.floor_no <= 62", tenant_id,
    ):
        floors[r["door_id"]] = floors.get(r["door_id"], 0) | (1 << r["floor_no"])
    interlocked: dict[int, set[int]] = {}
    members: dict[int, list[int]] = {}
    for r in await conn.fetch(
        "SELECT i.interlock_id, i.door_id FROM access_interlock_doors i"
        " JOIN access_interlocks l ON l.id = i.interlock_id WHERE l.tenant_id = $1", tenant_id,
    ):
        members.setdefault(r["interlock_id"], []).append(r["door_id"])
    for doors_of in members.values():
        for d in doors_of:
            interlocked.setdefault(d, set()).update(x for x in doors_of if x != d)
    group_doors: dict[int, list[int]] = {}
    for r in await conn.fetch(
        "SELECT m.door_group_id, m.door_id FROM access_door_group_doors m"
        " JOIN access_door_groups g ON g.id = m.door_group_id WHERE g.tenant_id = $1", tenant_id,
    ):
        group_doors.setdefault(r["door_group_id"], []).append(r["door_id"])
    # door -> level dict -> subject -> grants
    grants: dict[int, tuple[dict[int, list[Grant]], ...]] = {}
    for r in await conn.fetch(
        "SELECT id, subject, person_id, node_id, class_id, door_group_id, time_zone_id, floors,"
        " effect, valid_from, valid_until FROM access_grants WHERE tenant_id = $1 ORDER BY id",
        tenant_id,
    ):
        g = Grant(r["id"], r["effect"] == "deny",
                  zones.get(r["time_zone_id"]) if r["time_zone_id"] is not None else None,
                  r["floors"] if r["floors"] is None else r["floors"] & (2**63 - 1),
                  _epoch_s(r["valid_from"], 0), _epoch_s(r["valid_until"], 2**62))
        if r["time_zone_id"] is not None and r["time_zone_id"] not in zones:
            continue  # another tenant's zone: never applies
        level, key = {"person": (_PERSON, r["person_id"]),
                      "department": (_DEPARTMENT, r["node_id"]),
                      "class": (_CLASS, r["class_id"])}[r["subject"]]
        for door_id in group_doors.get(r["door_group_id"], ()):
            per = grants.setdefault(door_id, ({}, {}, {}))
            per[level].setdefault(key, []).append(g)
    doors: dict[int, Door] = {}
    for r in await conn.fetch(
        "SELECT id, area_id, kind, mode, mode_time_zone_id, multi_card_count,"
        " multi_card_window_s, open_ms, security_factor, security_window_s FROM doors"
        " WHERE tenant_id = $1", tenant_id,
    ):
        area = areas.get(r["area_id"])
        per = grants.get(r["id"], ({}, {}, {}))
        doors[r["id"]] = Door(
            r["id"], tenant_id, r["area_id"] or 0, area_chain(r["area_id"]),
            _APB[area["apb"]] if area is not None else APB_OFF,
            area["apb_seconds"] if area is not None else 0,
            r["kind"] == "elevator", floors.get(r["id"], 0), MODES[r["mode"]],
            zones.get(r["mode_time_zone_id"]), r["multi_card_count"],
            r["multi_card_window_s"], r["open_ms"], tuple(sorted(interlocked.get(r["id"], ()))),
            {k: tuple(v) for k, v in per[_PERSON].items()},
            {k: tuple(v) for k, v in per[_DEPARTMENT].items()},
            {k: tuple(v) for k, v in per[_CLASS].items()},
            FACTORS[r["security_factor"]], r["security_window_s"],
        )
    readers = {
        (r["terminal_id"], r["reader_no"]): Reader(doors[r["door_id"]], r["direction"],
                                                   r["purpose"] == "patrol")
        for r in await conn.fetch(
            "SELECT terminal_id, reader_no, door_id, direction, purpose FROM access_readers"
            " WHERE tenant_id = $1", tenant_id)
        if r["door_id"] in doors
    }
    site_lockdown = False
    locked: set[int] = set()
    for r in await conn.fetch(
        "SELECT area_id FROM access_lockdowns WHERE tenant_id = $1 AND ended_at IS NULL",
        tenant_id,
    ):
        if r["area_id"] is None:
            site_lockdown = True
        else:
            locked.add(r["area_id"])
    overrides = frozenset(r["person_id"] for r in await conn.fetch(
        "SELECT person_id FROM access_override_holders WHERE tenant_id = $1", tenant_id))
    return TenantRules(tenant_id, offset or 0, doors, readers, site_lockdown, frozenset(locked),
                       overrides)


_PEOPLE_SQL = (
    "SELECT p.account_id, p.id, p.tenant_id, n.path FROM people p"
    " JOIN org_nodes n ON n.id = p.node_id"
)
_PINS_SQL = (
    "SELECT p.account_id, k.pin_hash, k.duress_pin_hash FROM access_person_pins k"
    " JOIN people p ON p.id = k.person_id"
)
_TEMPLATES_SQL = (
    "SELECT c.kind, c.template_id, p.account_id FROM credentials c"
    " JOIN people p ON p.id = c.person_id"
)
_TEMPLATE_KIND = {"face": 2, "fingerprint": 3}


async def load_people(engine: AccessEngine, conn: asyncpg.Connection,
                      account_ids: Iterable[int] | None = None,
                      person_ids: Iterable[int] | None = None) -> None:
    """Everyone's (None, None), or some accounts' or people's org path, PINs and templates."""
    args: tuple[list[int], ...]
    if account_ids is None and person_ids is None:
        where, args = "", ()
    elif account_ids is not None:
        where, args = " WHERE p.account_id = ANY($1::int[])", (list(account_ids),)
    else:
        where, args = " WHERE p.id = ANY($1::int[])", (list(person_ids or ()),)
    for r in await conn.fetch(_PEOPLE_SQL + where, *args):
        engine.people[r["account_id"]] = Person(r["id"], r["tenant_id"], tuple(r["path"]))
    accounts = {r["account_id"] for r in await conn.fetch(
        "SELECT p.account_id FROM people p" + where, *args)}
    if where:
        for a in accounts:
            engine.pins.pop(a, None)
        engine.templates = {k: v for k, v in engine.templates.items() if v not in accounts}
    for r in await conn.fetch(_PINS_SQL + where, *args):
        engine.pins[r["account_id"]] = PinCheck(r["pin_hash"], r["duress_pin_hash"])
    for r in await conn.fetch(_TEMPLATES_SQL + where, *args):
        engine.templates[(_TEMPLATE_KIND[r["kind"]], r["template_id"])] = r["account_id"]


async def load_card_validity(engine: AccessEngine, conn: asyncpg.Connection,
                             card_nos: Iterable[int] | None = None) -> None:
    sql = ("SELECT card_no, valid_until - date '1970-01-01' AS n FROM cards"
           " WHERE valid_until IS NOT NULL")
    rows = (await conn.fetch(sql) if card_nos is None
            else await conn.fetch(sql + " AND card_no = ANY($1::bigint[])", list(card_nos)))
    for r in rows:
        engine.card_valid_until_day[r["card_no"]] = r["n"]


async def load_access(engine: AccessEngine, conn: asyncpg.Connection) -> None:
    """Everything at start-up (inside the recovery snapshot)."""
    for t in await conn.fetch("SELECT id FROM tenants ORDER BY id"):
        engine.install(await load_tenant_rules(conn, t["id"]))
    await load_people(engine, conn)
    await load_card_validity(engine, conn)
    # Exactly once across restarts: the recent answers of every door terminal.
    for r in await conn.fetch(
        "SELECT terminal_id, txn_seq, code, open_ms, floors, false AS event FROM ("
        "  SELECT *, max(txn_seq) OVER (PARTITION BY terminal_id) AS top"
        "  FROM access_decisions WHERE source = 0) d WHERE txn_seq > top - $1"
        " UNION ALL "
        "SELECT terminal_id, txn_seq, 0, 0, 0, true FROM ("
        "  SELECT *, max(txn_seq) OVER (PARTITION BY terminal_id) AS top"
        "  FROM access_door_events WHERE source = 0) e WHERE txn_seq > top - $1",
        ANSWERS_KEPT // 2,
    ):
        answer: ocp.AccessResult | ocp.DoorEventAck = (
            ocp.DoorEventAck(r["txn_seq"], 0) if r["event"]
            else ocp.AccessResult(r["txn_seq"], r["code"], r["open_ms"], r["floors"]))
        engine.remember(r["terminal_id"], r["txn_seq"], answer)
    # Anti-passback positions: each person's last pass per area, of the last day.
    for r in await conn.fetch(
        "SELECT DISTINCT ON (account_id, area_id) account_id, area_id, direction,"
        " decided_ms FROM access_decisions"
        " WHERE code = 0 AND area_id <> 0 AND account_id <> 0"
        " AND committed_at > now() - make_interval(secs => $1)"
        " ORDER BY account_id, area_id, id DESC", APB_RESTORE_SECONDS,
    ):
        engine.apb[(r["account_id"], r["area_id"])] = (r["direction"], r["decided_ms"])
    await restore_door_state(engine, conn)


_RESTORE_MARGIN_S = 60
"""Read this much more of the journal than the longest window, for clock steps and commits."""


async def restore_door_state(engine: AccessEngine, conn: asyncpg.Connection) -> None:
    """What the door modes act on, rebuilt at start from the decision records (docs/access.md,
    "After a restart"). Each decision that changed it was committed before its answer, so the
    rebuilt state is what the doors were told: a first-card door held open stays held to the
    end of its interval; a multi-card window or a security door's first factor in progress is
    kept, its window still timed from its first credential; phone QR codes used at doors stay
    used; open anti-passback alarms can still be cleared by the person's next pass."""
    now_s = int(time.time())
    doors = {d.door_id: d for t in engine.tenants.values() for d in t.doors.values()}
    first = [d.door_id for d in doors.values()
             if d.mode == FIRST_CARD and d.mode_time_zone is not None]
    if first:
        for r in await conn.fetch(
            "SELECT DISTINCT ON (door_id) door_id, decided_ms FROM access_decisions"
            " WHERE door_id = ANY($1::int[]) AND source = 0 AND code = 0 AND grant_id <> 0"
            " AND committed_at > now() - interval '25 hours' ORDER BY door_id, id DESC", first,
        ):
            door = doors[r["door_id"]]
            engine.first_card_step(door, engine.tenants[door.tenant_id].utc_offset_s,
                                   r["decided_ms"] // 1000)
            if engine.held_open_until_s.get(door.door_id, 0) <= now_s:
                engine.held_open_until_s.pop(door.door_id, None)
    windowed = {d.door_id: d for d in doors.values()
                if d.mode == MULTI_CARD or (d.mode == SECURITY and d.factor)}
    if windowed:
        longest = max(max(d.multi_card_window_s, d.factor_window_s) for d in windowed.values())
        for r in await conn.fetch(
            "SELECT door_id, account_id, credential_kind, code, grant_id, decided_ms"
            " FROM access_decisions WHERE door_id = ANY($1::int[]) AND source = 0"
            " AND code IN (0, $2, $3) AND account_id <> 0"
            " AND committed_at > now() - make_interval(secs => $4) ORDER BY id",
            list(windowed), int(_RC.MULTI_CARD_PENDING), int(_RC.SECOND_FACTOR_REQUIRED),
            longest + _RESTORE_MARGIN_S,
        ):
            door = windowed[r["door_id"]]
            at_s = r["decided_ms"] // 1000
            if door.mode == MULTI_CARD:
                if r["code"] == _RC.MULTI_CARD_PENDING:
                    engine.multi_step(door, r["account_id"], at_s)
                elif r["grant_id"]:
                    engine.multi.pop(door.door_id, None)
            elif r["code"] == _RC.SECOND_FACTOR_REQUIRED:
                engine.factor_step(door, r["account_id"], _BIO_PART if r["credential_kind"]
                                   in (2, 3) else _CARD_PART, at_s)
            elif r["grant_id"]:
                engine.factors.pop((door.door_id, r["account_id"]), None)
    gate = engine.qr_gate
    if gate is not None:
        from switch._qr import parse_door_credential

        for r in await conn.fetch(
            "SELECT card_no, credential, terminal_id, txn_seq FROM access_decisions"
            " WHERE credential_kind = 4 AND code IN (0, 76, 79)"
            " AND committed_at > now() - make_interval(secs => $1)",
            ocp_limits.QR_LIFETIME_SECONDS_MAX + ocp_limits.QR_CLOCK_SKEW_SECONDS
            + _RESTORE_MARGIN_S,
        ):
            parsed = parse_door_credential(r["credential"])
            if parsed is not None and parsed[1] >= now_s:
                gate.restore(r["card_no"], parsed[0], parsed[1], r["terminal_id"],
                             r["txn_seq"])
    for r in await conn.fetch(
        "SELECT DISTINCT account_id, area_id FROM access_alarms WHERE kind = 'apb_violation'"
        " AND cleared_at IS NULL AND account_id IS NOT NULL AND area_id IS NOT NULL LIMIT $1",
        APB_ENTRIES_MAX,
    ):
        engine.apb_alarms.add((r["account_id"], r["area_id"]))
