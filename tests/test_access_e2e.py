"""Door access end to end: a real switch process, real TCP, real PostgreSQL (docs/access.md).

One site: the seeded campus plus an org tree, people, door terminals, areas, doors in every
mode, door groups, time zones, a holiday calendar and grants (`_configure`). Each test drives
a door terminal and checks the answer, the decision record (durable before the answer) and the
alarms.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import time
from collections.abc import Iterator

import pytest
import redis

from onecard.demo import configured_redis_url
from onecard.seed import CANTEEN_FREE
from protocols import limits as ocp_limits
from protocols import ocp, qr
from switch._access import hash_pin
from switch._access_journal import ALARMS_STREAM_PREFIX
from tests.switch_site import Site

RC = ocp.ResponseCode
DOOR_TERMINAL = 201
OTHER_DOOR_TERMINAL = 202
# Readers of DOOR_TERMINAL (reader_no) and their doors (doors.id).
R_PLAIN, R_APB_IN, R_APB_OUT, R_TIMED, R_LOCK_A, R_LOCK_B, R_MULTI, R_OFFICE, R_LOCKDOWN, \
    R_SECURE, R_LIFT, R_FORCED = range(1, 13)
DOOR_OF = {r: r for r in range(1, 13)}
DOOR_OF[R_APB_OUT] = R_APB_IN  # one door, two readers
PIN, DURESS_PIN = "1234", "9999"

_seq = itertools.count(1)


def _configure(site: Site) -> dict[str, int]:
    """Everything access needs, in SQL, before the switch starts. Returns names -> ids."""
    staff = site.fetch(
        "SELECT a.id, c.card_no FROM accounts a JOIN cards c ON c.account_id = a.id"
        " WHERE a.status = 0 AND c.status = 0 AND a.class_id = 2 ORDER BY a.id LIMIT 6")
    students = site.fetch(
        "SELECT a.id, c.card_no FROM accounts a JOIN cards c ON c.account_id = a.id"
        " WHERE a.status = 0 AND c.status = 0 AND a.class_id = 1 ORDER BY a.id LIMIT 4")
    lost = site.fetch(
        "SELECT c.card_no FROM cards c JOIN accounts a ON a.id = c.account_id"
        " WHERE a.status = 2 AND c.status = 0 LIMIT 1")[0]["card_no"]
    ids = {f"staff{i}": r["card_no"] for i, r in enumerate(staff)}
    ids.update({f"student{i}": r["card_no"] for i, r in enumerate(students)})
    ids["lost"] = lost
    sql = [
        "INSERT INTO org_nodes (id, parent_id, kind, name, tenant_id, path, depth) VALUES"
        " (1, NULL, 'platform', 'HQ', NULL, '{1}', 0),"
        " (2, 1, 'tenant', 'Campus', 1, '{1,2}', 1),"
        " (3, 2, 'department', 'Science', 1, '{1,2,3}', 2),"
        " (4, 1, 'tenant', 'East', 2, '{1,4}', 1)",
        # Another tenant's card: accounts of tenant 2.
        "INSERT INTO accounts (id, tenant_id, class_id, status) VALUES (90001, 2, 2, 0)",
        "INSERT INTO cards (card_no, account_id) VALUES (7700000001, 90001)",
        f"INSERT INTO terminals (id, merchant_id, kind, name) VALUES"
        f" ({DOOR_TERMINAL}, {CANTEEN_FREE}, 3, 'door controller'),"
        f" ({OTHER_DOOR_TERMINAL}, {CANTEEN_FREE}, 3, 'door controller 2')",
        "INSERT INTO access_areas (id, tenant_id, name, apb, apb_seconds) VALUES"
        " (1, 1, 'campus', 'off', 0), (2, 1, 'library', 'hard', 0),"
        " (3, 1, 'gym', 'timed', 1), (4, 1, 'lab wing', 'off', 0)",
        "INSERT INTO access_holiday_calendars (id, tenant_id, name) VALUES (1, 1, 'holidays')",
        "INSERT INTO access_time_zones (id, tenant_id, name, holiday_calendar_id) VALUES"
        " (1, 1, 'always', NULL), (2, 1, 'holidays only', NULL), (3, 1, 'working days', 1)",
    ]
    local_today = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)).date()
    days = [local_today + dt.timedelta(days=d) for d in (-1, 0, 1)]
    sql += [f"INSERT INTO access_holidays (calendar_id, day) VALUES (1, '{d}')" for d in days]
    sql.append(
        "INSERT INTO access_time_zone_intervals (time_zone_id, day, start_minute, end_minute)"
        " SELECT 1, d, 0, 1440 FROM generate_series(0, 7) d"
        " UNION ALL SELECT 2, 7, 0, 1440"
        " UNION ALL SELECT 3, d, 0, 1440 FROM generate_series(0, 6) d")
    sql.append(
        "INSERT INTO doors (id, tenant_id, area_id, name, kind, mode, mode_time_zone_id) VALUES"
        " (1, 1, 1, 'main gate', 'door', 'normal', NULL),"
        " (2, 1, 2, 'library gate', 'turnstile', 'normal', NULL),"
        " (4, 1, 3, 'gym gate', 'door', 'normal', NULL),"
        " (5, 1, 4, 'airlock outer', 'door', 'normal', NULL),"
        " (6, 1, 4, 'airlock inner', 'door', 'normal', NULL),"
        " (7, 1, 4, 'vault', 'door', 'multi_card', NULL),"
        " (8, 1, 1, 'office', 'door', 'office', 1),"
        " (9, 1, 4, 'lab', 'door', 'normal', NULL),"
        " (10, 1, 4, 'server room', 'door', 'security', NULL),"
        " (11, 1, 1, 'lift A', 'elevator', 'normal', NULL),"
        " (12, 1, 1, 'back door', 'door', 'normal', NULL)")
    sql.append("INSERT INTO access_floors (door_id, floor_no) VALUES (11, 0), (11, 1), (11, 2),"
               " (11, 3)")
    readers = [(r, DOOR_OF[r], 1 if r == R_APB_OUT else 0) for r in DOOR_OF]
    sql.append("INSERT INTO access_readers (tenant_id, terminal_id, reader_no, door_id,"
               " direction) VALUES " + ", ".join(
                   f"(1, {DOOR_TERMINAL}, {r}, {d}, {direction})" for r, d, direction in readers)
               + f", (1, {OTHER_DOOR_TERMINAL}, 1, 1, 0)")
    sql.append("INSERT INTO access_interlocks (id, tenant_id, name) VALUES (1, 1, 'airlock')")
    sql.append("INSERT INTO access_interlock_doors VALUES (1, 5), (1, 6)")
    sql.append("INSERT INTO access_door_groups (id, tenant_id, name) VALUES (1, 1, 'all'),"
               " (2, 1, 'main gate')")
    sql.append("INSERT INTO access_door_group_doors SELECT 1, id FROM doors WHERE tenant_id = 1")
    sql.append("INSERT INTO access_door_group_doors VALUES (2, 1)")
    for s in sql:
        site.fetch(s)
    # People: staff0..5 in Science (node 3), students 0..3 at the tenant's node.
    for i, r in enumerate(staff):
        pid = site.fetch("INSERT INTO people (node_id, tenant_id, name, class_id, account_id)"
                         " VALUES (3, 1, $1, 2, $2) RETURNING id", f"staff {i}", r["id"])[0]["id"]
        ids[f"person_staff{i}"] = pid
    for i, r in enumerate(students):
        pid = site.fetch("INSERT INTO people (node_id, tenant_id, name, class_id, account_id)"
                         " VALUES (2, 1, $1, 1, $2) RETURNING id", f"student {i}",
                         r["id"])[0]["id"]
        ids[f"person_student{i}"] = pid
    site.fetch("INSERT INTO access_door_groups (id, tenant_id, name) VALUES (3, 1, 'back')")
    site.fetch("INSERT INTO access_door_group_doors VALUES (3, 12)")
    grants = [
        # Staff (class 2) everywhere, always; floors 1 and 2 of the lift.
        "('class', NULL, NULL, 2, 1, 1, 6, 'allow')",
        # The Science department is denied the back door, except staff1 (a person grant is
        # more specific); the class grant above is less specific and is not asked.
        "('department', NULL, 3, NULL, 3, 1, NULL, 'deny')",
        f"('person', {ids['person_staff1']}, NULL, NULL, 1, 1, NULL, 'allow')",
        # student0: the main gate on holidays only (never now); student1: on working days,
        # but today is a holiday.
        f"('person', {ids['person_student0']}, NULL, NULL, 2, 2, NULL, 'allow')",
        f"('person', {ids['person_student1']}, NULL, NULL, 2, 3, NULL, 'allow')",
    ]
    site.fetch("INSERT INTO access_grants (subject, person_id, node_id, class_id, door_group_id,"
               " time_zone_id, floors, effect, tenant_id) SELECT s, p, n, c, g, z, f, e, 1 FROM"
               " (VALUES " + ", ".join(grants) + ") AS v(s, p, n, c, g, z, f, e)")
    site.fetch("INSERT INTO credentials (person_id, kind, template_id) VALUES ($1, 'face',"
               " 'face-0001'), ($2, 'fingerprint', 'fp-0001')", ids["person_staff0"],
               ids["person_student2"])
    # PINs of staff2; staff3 holds a lockdown override pass.
    site.fetch("INSERT INTO access_person_pins (person_id, pin_hash, duress_pin_hash)"
               " VALUES ($1, $2, $3)", ids["person_staff2"], hash_pin(PIN), hash_pin(DURESS_PIN))
    site.fetch("INSERT INTO access_override_holders (tenant_id, person_id) VALUES (1, $1)",
               ids["person_staff3"])
    return ids


@pytest.fixture(scope="module")
def site(pg_server, migrated_template) -> Iterator[tuple[Site, dict[str, int]]]:  # type: ignore[no-untyped-def]
    s = Site(pg_server.new_database(template=migrated_template))
    ids = _configure(s)
    s.start()
    try:
        yield s, ids
    finally:
        s.stop()


@pytest.fixture
def door(site: tuple[Site, dict[str, int]]) -> Iterator[object]:
    client = site[0].client(DOOR_TERMINAL)
    try:
        yield client
    finally:
        client.close()


def ask(client: object, reader: int, card_no: int, *, direction: int = 0, pin: str = "",
        floor: int = -1, seq: int | None = None) -> ocp.AccessResult:
    msg = ocp.AccessRequest(seq or next(_seq) + 1000, reader, direction, 1, card_no, "", pin,
                            False, floor)
    answer = client.request(msg)  # type: ignore[attr-defined]
    assert isinstance(answer, ocp.AccessResult), answer
    assert answer.txn_seq == msg.txn_seq
    return answer


def record(site: Site, txn_seq: int, terminal_id: int = DOOR_TERMINAL) -> list[object]:
    return site.fetch("SELECT * FROM access_decisions WHERE terminal_id = $1 AND txn_seq = $2",
                      terminal_id, txn_seq)


def alarms(site: Site, kind: str) -> list[object]:
    return site.fetch("SELECT * FROM access_alarms WHERE kind = $1 ORDER BY id", kind)


def test_an_authorized_entry_is_durable_before_the_answer(site, door) -> None:  # type: ignore[no-untyped-def]
    s, ids = site
    answer = ask(door, R_PLAIN, ids["staff0"])
    assert (answer.code, answer.open_ms) == (RC.APPROVED, 3000)
    rows = record(s, answer.txn_seq)  # read after the answer: already committed
    assert len(rows) == 1 and rows[0]["code"] == 0 and rows[0]["door_id"] == 1
    # A repeat gets the original answer and adds nothing.
    again = ask(door, R_PLAIN, ids["staff0"], seq=answer.txn_seq)
    assert again == answer
    assert len(record(s, answer.txn_seq)) == 1


def test_time_zones_and_holidays(site, door) -> None:  # type: ignore[no-untyped-def]
    _s, ids = site
    assert ask(door, R_PLAIN, ids["student0"]).code == RC.OUTSIDE_TIME_ZONE
    assert ask(door, R_PLAIN, ids["student1"]).code == RC.HOLIDAY
    assert ask(door, R_PLAIN, ids["student2"]).code == RC.NO_PERMISSION


def test_most_specific_level_wins_and_deny_beats_allow(site, door) -> None:  # type: ignore[no-untyped-def]
    _s, ids = site
    # Back door: Science (department) denied; class staff allowed (less specific: not asked);
    # staff1 allowed by a person grant (more specific).
    assert ask(door, R_FORCED, ids["staff0"]).code == RC.NO_PERMISSION
    assert ask(door, R_FORCED, ids["staff1"]).code == RC.APPROVED


def test_lost_card_raises_an_illegal_card_alarm(site, door) -> None:  # type: ignore[no-untyped-def]
    s, ids = site
    answer = ask(door, R_PLAIN, ids["lost"])
    assert answer.code == RC.CARD_LOST
    raised = [a for a in alarms(s, "illegal_card") if a["txn_seq"] == answer.txn_seq]
    assert len(raised) == 1 and raised[0]["state"] == "open" and raised[0]["door_id"] == 1


def test_alarms_are_pushed_live_on_a_stream(site, door) -> None:  # type: ignore[no-untyped-def]
    """The console follows `onecard:access:alarms:<database>` (docs/access.md)."""
    s, ids = site
    client = redis.Redis.from_url(configured_redis_url())
    key = ALARMS_STREAM_PREFIX + s.dsn.rsplit("/", 1)[1]
    try:
        answer = ask(door, R_PLAIN, ids["lost"])
        [alarm] = [a for a in alarms(s, "illegal_card") if a["txn_seq"] == answer.txn_seq]
        deadline = time.monotonic() + 10
        while not any(int(f[b"id"]) == alarm["id"] for _, f in client.xrange(key)):
            assert time.monotonic() < deadline, "the alarm never reached the stream"
            time.sleep(0.05)
        [(_, fields)] = [e for e in client.xrange(key) if int(e[1][b"id"]) == alarm["id"]]
        assert fields[b"kind"] == b"illegal_card" and fields[b"state"] == b"open"
        assert int(fields[b"door_id"]) == 1 and int(fields[b"tenant_id"]) == 1
    finally:
        client.close()


def test_face_fingerprint_and_qr_credentials(site, door) -> None:  # type: ignore[no-untyped-def]
    s, ids = site

    def show(kind: int, credential: str) -> ocp.AccessResult:
        seq = next(_seq) + 1000
        answer = door.request(ocp.AccessRequest(seq, R_PLAIN, 0, kind, 0, credential))
        assert isinstance(answer, ocp.AccessResult) and answer.txn_seq == seq, answer
        return answer

    K = ocp.CredentialKindCode
    face = show(K.FACE, "face-0001")
    assert face.code == RC.APPROVED
    row = record(s, face.txn_seq)[0]
    assert (row["credential_kind"], row["credential"], row["card_no"]) == (2, "face-0001", 0)
    assert show(K.FINGERPRINT, "fp-0001").code == RC.NO_PERMISSION  # student2: no grant
    assert show(K.FACE, "fp-0001").code == RC.UNKNOWN_CARD  # a fingerprint id is no face
    now = int(time.time())
    code = qr.issue(qr.derive_qr_key(s.master), ids["staff1"], now + 60,
                    os.urandom(ocp_limits.QR_NONCE_BYTES), issued_s=now)
    assert show(K.QR, code).code == RC.APPROVED
    assert show(K.QR, code[:-2] + "AA").code == RC.UNKNOWN_CARD  # forged


def test_bad_input_changes_nothing(site, door) -> None:  # type: ignore[no-untyped-def]
    s, ids = site
    seq = next(_seq) + 1000
    answer = door.request(ocp.AccessRequest(seq, 16, 0, 1, ids["staff0"]))
    assert answer == ocp.Error(RC.UNKNOWN_READER, seq,
                               f"terminal {DOOR_TERMINAL} has no reader 16")
    assert record(s, seq) == []
    before = len(s.fetch("SELECT id FROM access_alarms"))
    foreign = ask(door, R_PLAIN, 7700000001)
    assert foreign.code == RC.UNKNOWN_CARD
    unknown = ask(door, R_PLAIN, 123456789)
    assert unknown.code == RC.UNKNOWN_CARD
    assert len(s.fetch("SELECT id FROM access_alarms")) == before


def test_hard_anti_passback(site, door) -> None:  # type: ignore[no-untyped-def]
    s, ids = site
    card = ids["staff4"]
    assert ask(door, R_APB_IN, card).code == RC.APPROVED
    second = ask(door, R_APB_IN, card)
    assert second.code == RC.APB_VIOLATION
    assert [a["txn_seq"] for a in alarms(s, "apb_violation")][-1] == second.txn_seq
    assert ask(door, R_APB_OUT, card).code == RC.APPROVED
    assert ask(door, R_APB_IN, card).code == RC.APPROVED


def test_timed_anti_passback_releases(site, door) -> None:  # type: ignore[no-untyped-def]
    _s, ids = site
    card = ids["staff5"]
    assert ask(door, R_TIMED, card).code == RC.APPROVED
    assert ask(door, R_TIMED, card).code == RC.APB_VIOLATION
    deadline = time.monotonic() + 10
    while (code := ask(door, R_TIMED, card).code) == RC.APB_VIOLATION:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert code == RC.APPROVED


def test_interlock_holds_the_second_door(site, door) -> None:  # type: ignore[no-untyped-def]
    _s, ids = site
    assert ask(door, R_LOCK_A, ids["staff0"]).code == RC.APPROVED
    assert ask(door, R_LOCK_B, ids["staff1"]).code == RC.INTERLOCK
    ack = door.request(ocp.DoorEvent(next(_seq) + 1000, R_LOCK_A, ocp.DoorEventCode.CLOSED))
    assert ack.code == 0
    assert ask(door, R_LOCK_B, ids["staff1"]).code == RC.APPROVED
    door.request(ocp.DoorEvent(next(_seq) + 1000, R_LOCK_B, ocp.DoorEventCode.CLOSED))


def test_two_person_door(site, door) -> None:  # type: ignore[no-untyped-def]
    _s, ids = site
    assert ask(door, R_MULTI, ids["staff0"]).code == RC.MULTI_CARD_PENDING
    assert ask(door, R_MULTI, ids["staff0"]).code == RC.MULTI_CARD_PENDING  # the same person
    assert ask(door, R_MULTI, ids["staff1"]).code == RC.APPROVED


def test_office_mode_holds_the_door_open(site, door) -> None:  # type: ignore[no-untyped-def]
    _s, ids = site
    assert ask(door, R_OFFICE, ids["student2"]).code == RC.APPROVED  # no grant needed
    assert ask(door, R_OFFICE, ids["lost"]).code == RC.CARD_LOST  # never a lost card


def test_security_mode_pin_and_duress(site, door) -> None:  # type: ignore[no-untyped-def]
    s, ids = site
    card = ids["staff2"]
    assert ask(door, R_SECURE, card).code == RC.PIN_REQUIRED
    assert ask(door, R_SECURE, card, pin="0000").code == RC.PIN_WRONG
    assert ask(door, R_SECURE, card, pin=PIN).code == RC.APPROVED
    duress = ask(door, R_SECURE, card, pin=DURESS_PIN)
    assert duress.code == RC.APPROVED  # opens like the PIN: the alarm is silent
    raised = [a for a in alarms(s, "duress") if a["txn_seq"] == duress.txn_seq]
    assert len(raised) == 1
    assert record(s, duress.txn_seq)[0]["duress"] is True


def test_elevator_floors(site, door) -> None:  # type: ignore[no-untyped-def]
    _s, ids = site
    answer = ask(door, R_LIFT, ids["staff0"])
    assert (answer.code, answer.floor_mask) == (RC.APPROVED, 0b110)
    assert ask(door, R_LIFT, ids["staff0"], floor=1).code == RC.APPROVED
    assert ask(door, R_LIFT, ids["staff0"], floor=3).code == RC.FLOOR_NOT_PERMITTED


def test_forced_open_alarm_cleared_by_closing(site, door) -> None:  # type: ignore[no-untyped-def]
    s, _ids = site
    forced = door.request(ocp.DoorEvent(next(_seq) + 1000, R_PLAIN,
                                        ocp.DoorEventCode.FORCED_OPEN))
    assert forced == ocp.DoorEventAck(forced.txn_seq, 0)
    [alarm] = [a for a in alarms(s, "forced_open") if a["txn_seq"] == forced.txn_seq]
    assert alarm["state"] == "open"
    assert s.fetch("SELECT state, alarm FROM access_door_states WHERE door_id = 1")[0][
        "state"] == "forced_open"
    door.request(ocp.DoorEvent(next(_seq) + 1000, R_PLAIN, ocp.DoorEventCode.CLOSED))
    [alarm] = [a for a in alarms(s, "forced_open") if a["txn_seq"] == forced.txn_seq]
    assert alarm["state"] == "cleared"
    state = s.fetch("SELECT state, alarm, online FROM access_door_states WHERE door_id = 1")[0]
    assert (state["state"], state["alarm"], state["online"]) == ("closed", False, True)


def _change(s: Site, sql: str, *args: object) -> None:
    """An access change as the admin API makes it: the rows and the outbox row, one
    transaction."""
    s.fetch("WITH c AS (" + sql + ") SELECT outbox_append('access_changed',"
            " '{\"tenant_id\": 1}'::jsonb)", *args)


def test_lockdown_with_an_override_pass(site, door) -> None:  # type: ignore[no-untyped-def]
    s, ids = site
    assert ask(door, R_LOCKDOWN, ids["staff0"]).code == RC.APPROVED
    _change(s, "INSERT INTO access_lockdowns (tenant_id, area_id, reason) VALUES (1, 4, 'drill')"
               " RETURNING id")
    deadline = time.monotonic() + 10
    while ask(door, R_LOCKDOWN, ids["staff0"]).code != RC.LOCKDOWN:
        assert time.monotonic() < deadline
    assert ask(door, R_LOCKDOWN, ids["staff3"]).code == RC.APPROVED  # override pass
    assert ask(door, R_PLAIN, ids["staff0"]).code == RC.APPROVED  # another area
    _change(s, "UPDATE access_lockdowns SET ended_at = now() RETURNING id")
    while ask(door, R_LOCKDOWN, ids["staff0"]).code != RC.APPROVED:
        assert time.monotonic() < deadline


def test_a_grant_works_within_a_second(site, door) -> None:  # type: ignore[no-untyped-def]
    s, ids = site
    card = ids["student3"]
    assert ask(door, R_PLAIN, card).code == RC.NO_PERMISSION
    started = time.monotonic()
    _change(s, "INSERT INTO access_grants (tenant_id, subject, person_id, door_group_id, effect)"
               " VALUES (1, 'person', $1, 2, 'allow') RETURNING id", ids["person_student3"])
    while ask(door, R_PLAIN, card).code != RC.APPROVED:
        assert time.monotonic() - started < 5
    granted_s = time.monotonic() - started
    started = time.monotonic()
    _change(s, "DELETE FROM access_grants WHERE person_id = $1 RETURNING id",
            ids["person_student3"])
    while ask(door, R_PLAIN, card).code != RC.NO_PERMISSION:
        assert time.monotonic() - started < 5
    revoked_s = time.monotonic() - started
    print(f"grant worked after {granted_s * 1000:.0f} ms, revoke after {revoked_s * 1000:.0f} ms")
    assert granted_s < 1.0 and revoked_s < 1.0


def test_a_till_cannot_open_doors(site) -> None:  # type: ignore[no-untyped-def]
    s, ids = site
    till = s.client(1)
    try:
        seq = till.sign_on_result.last_txn_seq + 1
        answer = till.request(ocp.AccessRequest(seq, 1, 0, 1, ids["staff0"]))
        assert answer == ocp.Error(RC.NOT_PERMITTED, seq,
                                   "AccessRequest is accepted from door terminals (kind 3) only")
        assert record(s, seq, 1) == []
    finally:
        till.close()
