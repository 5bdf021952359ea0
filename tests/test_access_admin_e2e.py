"""Access control through the admin API, at a real door: a real switch and admin API process,
real TCP, real PostgreSQL (docs/access-admin.md).

Everything is configured through the API, as an operator would: a door terminal registered
at a merchant, an area, doors and their readers, grants. The switch learns it from the change
feed; the tests measure how soon a grant works at the door, and follow a visitor pass to its
expiry, a patrol round to its missed checkpoint and alarm, and a door through an offline
spell (its list, its decisions alone, its upload, once).
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from onecard.harness import free_port
from onecard.seed import CANTEEN_FREE
from protocols import ocp
from terminals_sim import OfflineDoor
from tests.admin_site import PASSWORD, AdminSite, Api, new_card_no
from tests.ocp_client import OcpClient

RC = ocp.ResponseCode
_seq = itertools.count(5000)


def wait_for(check: Callable[[], Any], *, seconds: float = 15.0, what: str = "") -> Any:
    """Poll `check` until it returns something true (no sleeps beyond a short poll)."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def edge(pg_server: Any, migrated_template: str) -> Iterator[dict[str, Any]]:
    site = AdminSite(pg_server.new_database(template=migrated_template))
    site.start(extra_env={"ONECARD_PORT": str(free_port())})
    site.start_admin(ONECARD_ADMIN_ACCESS_CHECK_SECONDS="0.2")
    root = site.api()
    campus = site.tenant_node(1)
    dept = root.ok("POST", "/org/nodes", {"parent_id": campus, "kind": "department",
                                          "name": "Security"})
    terminal = root.ok("POST", f"/merchants/{CANTEEN_FREE}/terminals",
                       {"kind": "door", "name": "gate controller"})["terminal"]
    area = root.ok("POST", "/access/areas", {"node_id": campus, "name": "Main building"})
    doors = [root.ok("POST", "/access/doors", {"node_id": campus, "name": name,
                                               "area_id": area["id"]})
             for name in ("North gate", "Archive", "Roof")]
    for reader_no, door in enumerate(doors, 1):
        root.ok("POST", "/access/readers", {"terminal_id": terminal["id"],
                                            "reader_no": reader_no, "door_id": door["id"]})
    root.ok("POST", "/users", {"username": "desk.officer", "password": PASSWORD,
                               "role": "security_desk", "node_id": campus})
    root.ok("POST", "/users", {"username": "front.desk", "password": PASSWORD,
                               "role": "reception", "node_id": campus})
    root.ok("POST", "/users", {"username": "till.cashier", "password": PASSWORD,
                               "role": "cashier", "node_id": campus})
    try:
        yield {"site": site, "root": root, "campus": campus, "dept": dept,
               "terminal": terminal, "area": area, "doors": doors}
    finally:
        site.close()


def person(edge: dict[str, Any], name: str, node: int | None = None) -> tuple[dict[str, Any], int]:
    root: Api = edge["root"]
    p = root.ok("POST", "/people", {"node_id": node or edge["dept"]["id"], "name": name,
                                    "class_id": 2})
    card_no = new_card_no()
    root.ok("POST", f"/people/{p['id']}/cards", {"card_no": card_no})
    return p, card_no


@pytest.fixture
def door(edge: dict[str, Any]) -> Iterator[OcpClient]:
    client = edge["site"].client(edge["terminal"]["id"])
    try:
        yield client
    finally:
        client.close()


def ask(client: OcpClient, card_no: int, reader_no: int = 1) -> int:
    msg = ocp.AccessRequest(next(_seq), reader_no, 0, 1, card_no)
    answer = client.request(msg)
    assert isinstance(answer, ocp.AccessResult) and answer.txn_seq == msg.txn_seq, answer
    return answer.code


def test_a_grant_made_in_the_api_works_at_the_door_within_a_second(
        edge: dict[str, Any], door: OcpClient) -> None:
    root: Api = edge["root"]
    p, card_no = person(edge, "Zhao Lei")
    wait_for(lambda: ask(door, card_no) == RC.NO_PERMISSION, what="the new card known")
    group = root.ok("POST", "/access/door-groups", {"node_id": edge["campus"], "name": "North",
                                                    "door_ids": [edge["doors"][0]["id"]]})
    started = time.monotonic()
    grant = root.ok("POST", "/access/grants", {"door_group_id": group["id"],
                                               "person_id": p["id"]})
    wait_for(lambda: ask(door, card_no) == RC.APPROVED, what="the grant at the door")
    granted_s = time.monotonic() - started
    started = time.monotonic()
    root.ok("POST", f"/access/grants/{grant['id']}/revoke", {})
    wait_for(lambda: ask(door, card_no) == RC.NO_PERMISSION, what="the revocation")
    revoked_s = time.monotonic() - started
    print(f"grant at the door after {granted_s * 1000:.0f} ms, revocation after "
          f"{revoked_s * 1000:.0f} ms")
    assert granted_s < 1.0 and revoked_s < 1.0, (granted_s, revoked_s)
    # Audited, on the change feed.
    audit = edge["site"].fetch("SELECT action FROM audit_log WHERE entity = 'access_grant'"
                               " AND entity_id = $1 ORDER BY id", str(grant["id"]))
    assert [a["action"] for a in audit] == ["access.grant", "access.revoke_grant"]


def test_a_visitor_pass_opens_its_doors_then_expires_by_itself(
        edge: dict[str, Any], door: OcpClient) -> None:
    site: AdminSite = edge["site"]
    reception = site.api("front.desk")
    host, _ = person(edge, "Host Wang")
    visitor_card = new_card_no()
    until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    visit = reception.ok("POST", "/visitors", {
        "host_person_id": host["id"], "name": "Visitor Sun", "credential": "card",
        "card_no": visitor_card, "door_ids": [edge["doors"][0]["id"]],
        "valid_until": until.isoformat(), "purpose": "delivery"})
    assert visit["status"] == "active" and visit["qr"] == ""
    wait_for(lambda: ask(door, visitor_card) == RC.APPROVED, what="the pass at its door")
    assert ask(door, visitor_card, reader_no=2) == RC.NO_PERMISSION, "not the pass's door"
    # At valid_until the pass ends by itself: the card is cancelled everywhere.
    wait_for(lambda: reception.ok("GET", f"/visitors/{visit['id']}")["status"] == "expired",
             what="the pass expired")
    wait_for(lambda: ask(door, visitor_card) == RC.CARD_CANCELLED, what="the card refused")
    report = reception.ok("GET", "/visitors/report")
    [row] = [r for r in report if r["visitor"]["id"] == visit["id"]]
    assert row["host_name"] == "Host Wang" and row["entries"] >= 1 and row["denied"] >= 2
    # Revoking an ended pass is a conflict, and a cashier may not issue one.
    r = reception.post(f"/visitors/{visit['id']}/revoke", {})
    assert r.status_code == 409
    cashier = site.api("till.cashier")
    r = cashier.post("/visitors", {"host_person_id": host["id"], "name": "x",
                                   "door_ids": [edge["doors"][0]["id"]],
                                   "valid_until": until.isoformat()})
    assert r.status_code == 403


def test_a_qr_pass_can_be_revoked(edge: dict[str, Any], door: OcpClient) -> None:
    reception = edge["site"].api("front.desk")
    host, _ = person(edge, "Host Liu")
    visit = reception.ok("POST", "/visitors", {
        "host_person_id": host["id"], "name": "Visitor Qian",
        "door_ids": [edge["doors"][0]["id"]],
        "valid_until": (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).isoformat()})
    assert visit["qr"] == f"OCV1:{visit['card_no']}"
    wait_for(lambda: ask(door, visit["card_no"]) == RC.APPROVED, what="the QR pass's card")
    ended = reception.ok("POST", f"/visitors/{visit['id']}/revoke", {})
    assert ended["status"] == "revoked"
    wait_for(lambda: ask(door, visit["card_no"]) == RC.CARD_CANCELLED, what="revoked")


def test_a_missed_patrol_checkpoint_raises_an_alarm_the_desk_acknowledges(
        edge: dict[str, Any], door: OcpClient) -> None:
    site: AdminSite = edge["site"]
    root: Api = edge["root"]
    guard, guard_card = person(edge, "Guard Ma")
    north, archive = edge["doors"][0]["id"], edge["doors"][1]["id"]
    route = root.ok("POST", "/patrol/routes", {
        "node_id": edge["campus"], "name": "Night round",
        "checkpoints": [{"door_id": north, "offset_s": 0, "tolerance_s": 2},
                        {"door_id": archive, "offset_s": 1, "tolerance_s": 1}]})
    wait_for(lambda: ask(door, guard_card) in (RC.NO_PERMISSION, RC.APPROVED), what="known")
    round_ = root.ok("POST", f"/patrol/routes/{route['id']}/rounds",
                     {"guard_person_id": guard["id"]})
    ask(door, guard_card, reader_no=1)  # checkpoint 1, on time; checkpoint 2 never read

    def records() -> list[dict[str, Any]] | None:
        [r] = [x for x in root.ok("GET", f"/patrol/routes/{route['id']}/rounds")
               if x["id"] == round_["id"]]
        return r["records"] if len(r["records"]) == 2 else None

    recs = wait_for(records, what="both checkpoints judged")
    assert [(r["seq"], r["status"]) for r in recs] == [(1, "on_time"), (2, "missed")]
    desk = site.api("desk.officer")
    alarms = wait_for(lambda: [a for a in desk.ok("GET", "/access/alarms?kind=patrol_missed")
                               ["items"] if a["door_id"] == archive], what="the alarm")
    alarm = alarms[0]
    assert alarm["state"] == "open" and "Guard Ma" in alarm["detail"]
    report = root.ok("GET", "/patrol/report")
    [row] = [r for r in report if r["route_id"] == route["id"]]
    assert (row["guard"], row["rounds"], row["on_time"], row["missed"]) == ("Guard Ma", 1, 1, 1)
    # Acknowledging needs a note and the role; then it is acknowledged, once. A missed
    # checkpoint is momentary (no door event ends it): its acknowledgement ends it.
    assert site.api("till.cashier").post(f"/access/alarms/{alarm['id']}/acknowledge",
                                         {"note": "x"}).status_code == 403
    assert desk.post(f"/access/alarms/{alarm['id']}/acknowledge", {}).status_code == 400
    assert desk.post(f"/access/alarms/{alarm['id']}/acknowledge",
                     {"note": "  "}).status_code == 422
    done = desk.ok("POST", f"/access/alarms/{alarm['id']}/acknowledge",
                   {"note": "guard was called to the roof; archive checked at 02:10"})
    assert done["state"] == "cleared" and done["acknowledged_at"] is not None
    assert done["cleared_reason"] == "acknowledged" and done["cleared_at"] is not None
    assert desk.post(f"/access/alarms/{alarm['id']}/acknowledge",
                     {"note": "again"}).status_code == 409
    audit = site.fetch("SELECT username FROM audit_log WHERE action = 'access.acknowledge_alarm'"
                       " AND entity_id = $1", str(alarm["id"]))
    assert [a["username"] for a in audit] == ["desk.officer"]


def test_a_door_decides_offline_from_its_list_and_uploads_once(
        edge: dict[str, Any], door: OcpClient) -> None:
    site: AdminSite = edge["site"]
    root: Api = edge["root"]
    allowed, allowed_card = person(edge, "Offline Allowed")
    _other, other_card = person(edge, "Offline Other")
    group = root.ok("POST", "/access/door-groups", {"node_id": edge["campus"],
                                                    "name": "North offline",
                                                    "door_ids": [edge["doors"][0]["id"]]})
    root.ok("POST", "/access/grants", {"door_group_id": group["id"], "person_id": allowed["id"]})
    wait_for(lambda: ask(door, allowed_card) == RC.APPROVED, what="the grant")
    offline = OfflineDoor()
    door.send(ocp.AccessListRequest(next(_seq), 0))
    while True:
        part = door.next_message()
        assert isinstance(part, ocp.AccessListSnapshot), part
        if offline.apply(part):
            break
    assert allowed_card in offline.entries and other_card not in offline.entries
    # The link is down: the door decides alone.
    now_ms = int(time.time() * 1000)
    opened = offline.decide(allowed_card, now_ms=now_ms)
    refused = offline.decide(other_card, now_ms=now_ms + 1)
    assert (opened.code, refused.code) == (RC.APPROVED, RC.NO_PERMISSION)
    # Back online: the upload is journaled once; its replay changes nothing.
    upload = offline.upload(next(_seq))
    assert upload is not None
    first = door.request(upload)
    assert isinstance(first, ocp.OfflineUploadResult), first
    assert (first.code, first.accepted, first.duplicates, first.last_record_no) == (0, 2, 0, 2)
    replay = door.request(ocp.OfflineUpload(next(_seq), upload.snapshot_version,
                                            upload.records))
    assert (replay.code, replay.accepted, replay.duplicates) == (0, 0, 2)
    offline.uploaded(first)
    assert offline.pending == []
    rows = site.fetch("SELECT txn_seq, source, code, account_id, card_no FROM access_decisions"
                      " WHERE terminal_id = $1 AND source = 1 ORDER BY txn_seq",
                      edge["terminal"]["id"])
    assert [(r["txn_seq"], r["code"], r["card_no"]) for r in rows] == [
        (1, 0, allowed_card), (2, RC.NO_PERMISSION, other_card)]
    records = root.ok("GET", f"/access/records?door_id={edge['doors'][0]['id']}&limit=1000")
    assert {r["source"] for r in records["items"]} >= {"online", "offline"}
    # A change: the door asks with the version it holds and gets a delta.
    root.ok("POST", "/access/grants", {"door_group_id": group["id"], "person_id": _other["id"]})
    wait_for(lambda: ask(door, other_card) == RC.APPROVED, what="the second grant")
    delta = door.request(ocp.AccessListRequest(next(_seq), offline.version))
    assert isinstance(delta, ocp.AccessListDelta), delta
    assert delta.from_version == offline.version and delta.to_version > offline.version
    assert [e.card_no for e in delta.upserts] == [other_card] and delta.removals == []
    assert offline.apply(delta) and offline.code_for(other_card, now_ms) == RC.APPROVED
    # Nothing new: the same version back, no changes.
    same = door.request(ocp.AccessListRequest(next(_seq), offline.version))
    assert same == ocp.AccessListDelta(offline.version, offline.version, [], [])


def test_stale_versions_and_other_kinds_are_refused(edge: dict[str, Any],
                                                    door: OcpClient) -> None:
    site: AdminSite = edge["site"]
    before = site.fetch("SELECT count(*) AS n FROM access_decisions WHERE source = 1")[0]["n"]
    seq = next(_seq)
    stale = door.request(ocp.AccessListRequest(seq, 12345))
    assert isinstance(stale, ocp.Error) and (stale.code, stale.txn_seq) == (
        RC.SNAPSHOT_STALE, seq)
    record = ocp.OfflineRecord(99, int(time.time() * 1000), 1, 0, 1, 0)
    never = door.request(ocp.OfflineUpload(next(_seq), 2**53 - 1, [record]))
    assert isinstance(never, ocp.Error) and never.code == RC.SNAPSHOT_STALE
    unknown_reader = ocp.OfflineRecord(99, int(time.time() * 1000), 16, 0, 1, 0)
    r = door.request(ocp.OfflineUpload(next(_seq), 1, [unknown_reader]))
    assert isinstance(r, ocp.Error) and r.code == RC.UNKNOWN_READER
    # A till may not upload door records.
    till = site.client(1)
    try:
        r = till.request(ocp.OfflineUpload(next(_seq), 1, [record]))
        assert isinstance(r, ocp.Error) and r.code == RC.NOT_PERMITTED
    finally:
        till.close()
    after = site.fetch("SELECT count(*) AS n FROM access_decisions WHERE source = 1")[0]["n"]
    assert after == before, "nothing was journaled"


def test_bad_input_is_refused_and_changes_nothing(edge: dict[str, Any]) -> None:
    site: AdminSite = edge["site"]
    root: Api = edge["root"]
    east_person, _ = person(edge, "East Guest", node=site.tenant_node(2))
    campus_admin = site.api("desk.officer")
    audit_before = site.fetch("SELECT count(*) AS n FROM audit_log")[0]["n"]
    passes_before = site.fetch("SELECT count(*) AS n FROM visitor_passes")[0]["n"]
    group = root.ok("GET", "/access/door-groups")[0]
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    cases = [
        (root, "/access/grants", {"door_group_id": group["id"], "person_id": 999_999}, 404),
        (root, "/access/door-groups", {"node_id": edge["campus"], "name": "x",
                                       "door_ids": [999_999]}, 404),
        (root, "/access/grants", {"door_group_id": group["id"],
                                  "person_id": east_person["id"]}, 422),
        (root, "/visitors", {"host_person_id": east_person["id"], "name": "x",
                             "door_ids": [edge["doors"][0]["id"]], "valid_until": until}, 422),
        (root, "/visitors", {"host_person_id": east_person["id"], "name": "x",
                             "door_ids": [999_999], "valid_until": until}, 404),
        (root, "/visitors", {"host_person_id": east_person["id"], "name": "x",
                             "door_ids": [edge["doors"][0]["id"]],
                             "valid_until": "2020-01-01T00:00:00Z"}, 422),
        (root, "/visitors", {"host_person_id": east_person["id"], "name": "x",
                             "door_ids": [edge["doors"][0]["id"]], "valid_until": until,
                             "credential": "card"}, 422),
        (root, "/access/doors", {"node_id": edge["campus"], "name": "x", "mode": "office"},
         422),
        (root, "/access/doors", {"node_id": edge["campus"], "name": "x", "mode": "open"}, 400),
        (root, "/access/time-zones", {"node_id": edge["campus"], "name": "x", "intervals": [
            {"day": 0, "start_minute": 600, "end_minute": 700},
            {"day": 0, "start_minute": 650, "end_minute": 800}]}, 422),
        (root, "/patrol/routes", {"node_id": edge["campus"], "name": "x", "checkpoints": [
            {"door_id": edge["doors"][0]["id"], "offset_s": 60},
            {"door_id": edge["doors"][1]["id"], "offset_s": 0}]}, 422),
        (campus_admin, "/access/doors", {"node_id": edge["campus"], "name": "x"}, 403),
        (root, "/adms/devices", {"serial_no": "bad serial!", "node_id": edge["campus"]}, 400),
    ]
    for api, path, body, status in cases:
        r = api.post(path, body)
        assert r.status_code == status, (path, body, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert site.fetch("SELECT count(*) AS n FROM audit_log")[0]["n"] == audit_before
    assert site.fetch("SELECT count(*) AS n FROM visitor_passes")[0]["n"] == passes_before


def test_pins_set_in_the_api_work_at_a_security_door(edge: dict[str, Any],
                                                     door: OcpClient) -> None:
    site: AdminSite = edge["site"]
    root: Api = edge["root"]
    p, card_no = person(edge, "Pin Holder")
    roof = edge["doors"][2]["id"]
    group = root.ok("POST", "/access/door-groups", {"node_id": edge["campus"], "name": "Roof",
                                                    "door_ids": [roof]})
    root.ok("POST", "/access/grants", {"door_group_id": group["id"], "person_id": p["id"]})
    assert root.ok("POST", f"/access/doors/{roof}/mode", {"mode": "security"})["mode"] == \
        "security"
    assert root.post(f"/access/people/{p['id']}/pins",
                     {"pin": "2468", "duress_pin": "2468"}).status_code == 422
    root.ok("POST", f"/access/people/{p['id']}/pins", {"pin": "2468", "duress_pin": "1357"})

    def with_pin(pin: str) -> int:
        answer = door.request(ocp.AccessRequest(next(_seq), 3, 0, 1, card_no, "", pin))
        assert isinstance(answer, ocp.AccessResult), answer
        return answer.code

    wait_for(lambda: with_pin("2468") == RC.APPROVED, what="the PIN at the door")
    assert with_pin("") == RC.PIN_REQUIRED
    assert with_pin("1111") == RC.PIN_WRONG
    assert with_pin("1357") == RC.APPROVED  # duress: opens alike, raises a silent alarm
    wait_for(lambda: site.fetch("SELECT 1 FROM access_alarms WHERE kind = 'duress'"
                                " AND door_id = $1", roof), what="the duress alarm")
    audit = site.fetch("SELECT after::text AS a FROM audit_log WHERE action = 'access.set_pins'")
    assert audit and not any("2468" in r["a"] or "1357" in r["a"] for r in audit)


def test_a_schedule_makes_its_round_once(edge: dict[str, Any]) -> None:
    site: AdminSite = edge["site"]
    root: Api = edge["root"]
    guard, _ = person(edge, "Guard Niu")
    route = root.ok("POST", "/patrol/routes", {
        "node_id": edge["campus"], "name": "Scheduled round",
        "checkpoints": [{"door_id": edge["doors"][0]["id"], "offset_s": 3600}]})
    local = dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)  # tenant 1 is UTC+8
    schedule = root.ok("POST", f"/patrol/routes/{route['id']}/schedules", {
        "guard_person_id": guard["id"], "weekdays": 127,
        "start_minute": local.hour * 60 + local.minute})

    def rounds() -> list[Any]:
        return site.fetch("SELECT starts_at, status FROM patrol_rounds WHERE schedule_id = $1",
                          schedule["id"])

    made = wait_for(rounds, what="the scheduled round")
    start_utc = (local.replace(second=0, microsecond=0) - dt.timedelta(hours=8))
    assert [(r["starts_at"], r["status"]) for r in made] == [(start_utc, "open")]
    # Made once (a unique key: the checker runs every 0.2 s, in any number of processes),
    # and nothing judged before its checkpoint is due.
    assert len(rounds()) == 1
    assert site.fetch("SELECT 1 FROM patrol_records r JOIN patrol_rounds o ON o.id = r.round_id"
                      " WHERE o.schedule_id = $1", schedule["id"]) == []


def test_lists_hold_each_items_children(edge: dict[str, Any]) -> None:
    """Door groups, time zones, calendars and interlocks list with their own doors, intervals
    and holidays (read for all items in one query each: every item gets its own)."""
    root: Api = edge["root"]
    campus, doors = edge["campus"], [d["id"] for d in edge["doors"]]
    groups = [root.ok("POST", "/access/door-groups", {"node_id": campus, "name": f"G{i}",
                                                      "door_ids": doors[:i + 1]})
              for i in range(2)]
    calendars = [root.ok("POST", "/access/holiday-calendars", {
        "node_id": campus, "name": f"C{i}",
        "holidays": [{"day": f"2027-0{i + 1}-0{d}", "name": f"h{d}"} for d in range(1, i + 2)]})
        for i in range(2)]
    zones = [root.ok("POST", "/access/time-zones", {
        "node_id": campus, "name": f"Z{i}", "holiday_calendar_id": calendars[i]["id"],
        "intervals": [{"day": d, "start_minute": 60 * i, "end_minute": 600}
                      for d in range(i + 1)]}) for i in range(2)]
    locks = [root.ok("POST", "/access/interlocks", {"node_id": campus, "name": f"L{i}",
                                                    "door_ids": doors[i:i + 2]})
             for i in range(2)]
    for path, made in (("/access/door-groups", groups), ("/access/holiday-calendars", calendars),
                       ("/access/time-zones", zones), ("/access/interlocks", locks)):
        listed = {x["id"]: x for x in root.ok("GET", path)}
        for item in made:
            assert listed[item["id"]] == item, path
