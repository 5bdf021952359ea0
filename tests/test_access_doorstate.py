"""Door modes, phone QR codes and alarms across a SIGKILL of the switch: a real switch and
admin API process, real TCP, real PostgreSQL (docs/access.md, issue 12).

- Security mode with a biometric factor (card + face, card + fingerprint): a card alone does
  not open; the card and the same person's face (fingerprint) within the door's window do,
  in one request or two, on any reader of the door.
- A phone QR code opens once; its replay is refused QR_USED and journaled as a refusal, also
  after a restart.
- A first-card door held open, a multi-card window and a security door's first factor in
  progress survive a SIGKILL (rebuilt from the decision records).
- Anti-passback alarms end: by the person's next pass in the area, or by an acknowledgement
  with a note (one, or several at once) through the admin API.

The site is configured through the admin API, as an operator would, before the switch starts.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from onecard.harness import free_port
from onecard.seed import CANTEEN_FREE
from protocols import limits as ocp_limits
from protocols import ocp, qr
from tests.admin_site import PASSWORD, AdminSite, Api, new_card_no
from tests.ocp_client import OcpClient
from tests.switch_site import FREE_CANTEEN_TERMINAL

RC = ocp.ResponseCode
K = ocp.CredentialKindCode
_seq = itertools.count(1)
WINDOW_S = 120
"""The windows of the test doors: long enough to span a restart of the switch."""
# Readers of the door controller.
R_FACE_CARD, R_FACE_CAM, R_FP, R_FIRST, R_MULTI, R_LAB_IN, R_LAB_OUT, R_PLAIN, R_CLOSED = \
    range(1, 10)


@pytest.fixture(scope="module")
def site(pg_server: Any, migrated_template: str) -> Iterator[dict[str, Any]]:
    s = AdminSite(pg_server.new_database(template=migrated_template))
    s.start_admin()
    root = s.api()
    campus = s.tenant_node(1)
    dept = root.ok("POST", "/org/nodes", {"parent_id": campus, "kind": "department",
                                          "name": "Research"})
    terminal = root.ok("POST", f"/merchants/{CANTEEN_FREE}/terminals",
                       {"kind": "door", "name": "wing controller"})["terminal"]
    always = root.ok("POST", "/access/time-zones", {
        "node_id": campus, "name": "always",
        "intervals": [{"day": d, "start_minute": 0, "end_minute": 1440} for d in range(8)]})
    wing = root.ok("POST", "/access/areas", {"node_id": campus, "name": "Wing"})
    lab = root.ok("POST", "/access/areas", {"node_id": campus, "name": "Lab", "apb": "hard"})

    def door(name: str, **kw: Any) -> dict[str, Any]:
        return root.ok("POST", "/access/doors", {"node_id": campus, "name": name,
                                                 "area_id": wing["id"], **kw})

    doors = {
        "face": door("Server room", mode="security", security_factor="face",
                     security_window_s=WINDOW_S),
        "fp": door("Cleanroom", mode="security", security_factor="fingerprint",
                   security_window_s=WINDOW_S),
        "first": door("Lobby", mode="first_card", mode_time_zone_id=always["id"]),
        "multi": door("Vault", mode="multi_card", multi_card_count=2,
                      multi_card_window_s=WINDOW_S),
        "lab": door("Lab gate", area_id=lab["id"]),
        "plain": door("Side door"),
        "closed": door("Director's office"),
    }
    readers = [(R_FACE_CARD, "face", "in"), (R_FACE_CAM, "face", "in"), (R_FP, "fp", "in"),
               (R_FIRST, "first", "in"), (R_MULTI, "multi", "in"), (R_LAB_IN, "lab", "in"),
               (R_LAB_OUT, "lab", "out"), (R_PLAIN, "plain", "in"), (R_CLOSED, "closed", "in")]
    for reader_no, key, direction in readers:
        root.ok("POST", "/access/readers", {"terminal_id": terminal["id"], "reader_no": reader_no,
                                            "door_id": doors[key]["id"],
                                            "direction": direction})
    group = root.ok("POST", "/access/door-groups", {
        "node_id": campus, "name": "research doors",
        "door_ids": [d["id"] for k, d in doors.items() if k != "closed"]})
    root.ok("POST", "/access/grants", {"door_group_id": group["id"], "subject": "department",
                                       "department_id": dept["id"]})
    people: dict[str, tuple[dict[str, Any], int]] = {}
    for name in ("ann", "bob", "cai", "dan", "eve", "fay", "gus", "hal", "ivy", "kim", "outsider"):
        node = campus if name == "outsider" else dept["id"]
        p = root.ok("POST", "/people", {"node_id": node, "name": name, "class_id": 2})
        card_no = new_card_no()
        root.ok("POST", f"/people/{p['id']}/cards", {"card_no": card_no})
        root.ok("POST", f"/people/{p['id']}/credentials",
                {"kind": "face", "template_id": f"face-{name}"})
        root.ok("POST", f"/people/{p['id']}/credentials",
                {"kind": "fingerprint", "template_id": f"fp-{name}"})
        people[name] = (p, card_no)
    root.ok("POST", "/users", {"username": "desk.officer", "password": PASSWORD,
                               "role": "security_desk", "node_id": campus})
    s.start(extra_env={"ONECARD_PORT": str(free_port())})
    try:
        yield {"site": s, "root": root, "terminal": terminal, "doors": doors, "people": people,
               "lab": lab}
    finally:
        s.close()


def restart(site: dict[str, Any]) -> None:
    """SIGKILL the switch and start it again on the same port and database."""
    s: AdminSite = site["site"]
    assert s.switch is not None
    port = s.switch.port
    s.switch.kill()
    s.start(extra_env={"ONECARD_PORT": str(port)})


class Door:
    """The door controller's connection: one request at a time, fresh txn_seqs."""

    def __init__(self, site: dict[str, Any]) -> None:
        self.site = site
        self.tid = site["terminal"]["id"]
        self.client: OcpClient = site["site"].client(self.tid)
        self.base = self.client.sign_on_result.last_txn_seq

    def ask(self, reader: int, kind: int = K.CARD, card_no: int = 0, credential: str = ""
            ) -> ocp.AccessResult:
        seq = self.base + next(_seq)
        msg = ocp.AccessRequest(seq, reader, 0, kind, card_no, credential)
        answer = self.client.request(msg)
        assert isinstance(answer, ocp.AccessResult) and answer.txn_seq == seq, answer
        return answer

    def record(self, answer: ocp.AccessResult) -> Any:
        [row] = self.site["site"].fetch(
            "SELECT * FROM access_decisions WHERE terminal_id = $1 AND txn_seq = $2",
            self.tid, answer.txn_seq)  # read after the answer: committed before it
        return row

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def door(site: dict[str, Any]) -> Iterator[Door]:
    d = Door(site)
    try:
        yield d
    finally:
        d.close()


def card(site: dict[str, Any], name: str) -> int:
    return int(site["people"][name][1])


def qr_code(site: dict[str, Any], name: str) -> str:
    now = int(time.time())
    return qr.issue(qr.derive_qr_key(site["site"].master), card(site, name), now + 120,
                    os.urandom(ocp_limits.QR_NONCE_BYTES), issued_s=now)


def test_the_door_api_takes_the_security_factor(site: dict[str, Any]) -> None:
    root: Api = site["root"]
    face = root.ok("GET", f"/access/doors/{site['doors']['face']['id']}")
    assert (face["mode"], face["security_factor"], face["security_window_s"]) == (
        "security", "face", WINDOW_S)
    bad = root.post("/access/doors", {"node_id": face["node_id"], "name": "x",
                                      "security_factor": "iris"})
    assert bad.status_code == 400


def test_card_and_face_open_only_together_and_of_one_person(site: dict[str, Any],
                                                            door: Door) -> None:
    ann, bob = card(site, "ann"), card(site, "bob")
    # A card alone does not open: it waits for the same person's face.
    first = door.ask(R_FACE_CARD, K.CARD, ann)
    assert first.code == RC.SECOND_FACTOR_REQUIRED and first.open_ms == 0
    assert door.record(first)["code"] == RC.SECOND_FACTOR_REQUIRED
    # Another person's face does not complete it (it is that person's own first factor).
    assert door.ask(R_FACE_CAM, K.FACE, credential="face-bob").code == \
        RC.SECOND_FACTOR_REQUIRED
    # Ann's face, on the door's other reader, within the window: open.
    opened = door.ask(R_FACE_CAM, K.FACE, credential="face-ann")
    assert (opened.code, opened.open_ms) == (RC.APPROVED, 3000)
    # Used: the next card of Ann waits again; a face first, then the card, also opens.
    assert door.ask(R_FACE_CARD, K.CARD, bob).code == RC.APPROVED  # bob's face came first
    assert door.ask(R_FACE_CAM, K.FACE, credential="face-ann").code == \
        RC.SECOND_FACTOR_REQUIRED
    assert door.ask(R_FACE_CARD, K.CARD, ann).code == RC.APPROVED
    # One request with both factors (a terminal that reads the card and verifies the face).
    both = door.ask(R_FACE_CAM, K.FACE, ann, "face-ann")
    assert both.code == RC.APPROVED
    row = door.record(both)
    assert (row["credential_kind"], row["card_no"], row["credential"]) == (2, ann, "face-ann")
    assert door.ask(R_FACE_CAM, K.FACE, bob, "face-ann").code == RC.NO_PERMISSION
    # A fingerprint is no factor of a card + face door; a person without a grant gets no
    # further than without the mode.
    assert door.ask(R_FACE_CAM, K.FINGERPRINT, credential="fp-ann").code == RC.NO_PERMISSION
    assert door.ask(R_FACE_CARD, K.CARD, card(site, "outsider")).code == RC.NO_PERMISSION


def test_card_and_fingerprint(site: dict[str, Any], door: Door) -> None:
    cai = card(site, "cai")
    assert door.ask(R_FP, K.CARD, cai).code == RC.SECOND_FACTOR_REQUIRED
    assert door.ask(R_FP, K.FACE, credential="face-cai").code == RC.NO_PERMISSION
    assert door.ask(R_FP, K.FINGERPRINT, credential="fp-cai").code == RC.APPROVED


def test_a_qr_code_opens_once_and_its_replay_is_refused_after_a_kill(
        site: dict[str, Any], door: Door) -> None:
    code = qr_code(site, "dan")
    # Refused by the rules: not used up.
    assert door.ask(R_CLOSED, K.QR, credential=code).code == RC.NO_PERMISSION
    opened = door.ask(R_PLAIN, K.QR, credential=code)
    assert opened.code == RC.APPROVED
    row = door.record(opened)
    assert row["card_no"] == card(site, "dan") and row["credential"].startswith("qr:")
    replay = door.ask(R_PLAIN, K.QR, credential=code)
    assert replay.code == RC.QR_USED
    refused = door.record(replay)  # journaled as a refusal
    assert (refused["code"], refused["card_no"]) == (RC.QR_USED, card(site, "dan"))
    # The code itself is never stored (it could be replayed at a till while valid).
    assert not site["site"].fetch("SELECT 1 FROM access_decisions WHERE credential = $1", code)
    door.close()
    restart(site)
    again = Door(site)
    try:
        assert again.ask(R_PLAIN, K.QR, credential=code).code == RC.QR_USED
        # A code issued since the restart opens, once; used at a door, it pays nothing either.
        fresh = qr_code(site, "dan")
        assert again.ask(R_PLAIN, K.QR, credential=fresh).code == RC.APPROVED
        assert again.ask(R_PLAIN, K.QR, credential=fresh).code == RC.QR_USED
        till = site["site"].client(FREE_CANTEEN_TERMINAL)
        try:
            seq = till.sign_on_result.last_txn_seq + 1
            refused = till.request(ocp.QrPurchase(seq, fresh, 100))
            assert isinstance(refused, ocp.Error) and refused.code == RC.QR_USED, refused
            # And a code that paid opens no door.
            paid = qr_code(site, "dan")
            bought = till.request(ocp.QrPurchase(seq, paid, 100))
            assert isinstance(bought, ocp.PurchaseResult) and bought.code == RC.APPROVED
        finally:
            till.close()
        assert again.ask(R_PLAIN, K.QR, credential=paid).code == RC.QR_USED
    finally:
        again.close()


def test_door_mode_state_survives_a_kill(site: dict[str, Any], door: Door) -> None:
    # First-card: a permitted person opens the lobby, which then stays open for everybody
    # known until its interval ends (the end of the day here) - also the outsider.
    assert door.ask(R_FIRST, K.CARD, card(site, "eve")).code == RC.APPROVED
    assert door.ask(R_FIRST, K.CARD, card(site, "outsider")).code == RC.APPROVED
    # Multi-card: one of two counted; a card + face door: the card counted.
    assert door.ask(R_MULTI, K.CARD, card(site, "fay")).code == RC.MULTI_CARD_PENDING
    assert door.ask(R_FACE_CARD, K.CARD, card(site, "gus")).code == RC.SECOND_FACTOR_REQUIRED
    door.close()
    restart(site)
    after = Door(site)
    try:
        assert after.ask(R_FIRST, K.CARD, card(site, "outsider")).code == RC.APPROVED
        assert after.ask(R_MULTI, K.CARD, card(site, "hal")).code == RC.APPROVED
        assert after.ask(R_FACE_CAM, K.FACE, credential="face-gus").code == RC.APPROVED
        # And used up: the next ones start again.
        assert after.ask(R_MULTI, K.CARD, card(site, "hal")).code == RC.MULTI_CARD_PENDING
    finally:
        after.close()


def _alarms(site: dict[str, Any], account_card: int) -> list[Any]:
    return site["site"].fetch(
        "SELECT a.* FROM access_alarms a WHERE a.kind = 'apb_violation' AND a.card_no = $1"
        " ORDER BY a.id", account_card)


def test_an_apb_alarm_ends_at_the_next_pass_even_after_a_kill(site: dict[str, Any],
                                                              door: Door) -> None:
    ivy = card(site, "ivy")
    assert door.ask(R_LAB_IN, K.CARD, ivy).code == RC.APPROVED
    assert door.ask(R_LAB_IN, K.CARD, ivy).code == RC.APB_VIOLATION
    [alarm] = _alarms(site, ivy)
    assert (alarm["state"], alarm["cleared_at"]) == ("open", None)
    door.close()
    restart(site)
    after = Door(site)
    try:
        # Ivy leaves the lab: the situation that raised the alarm is over.
        assert after.ask(R_LAB_OUT, K.CARD, ivy).code == RC.APPROVED
        [alarm] = _alarms(site, ivy)  # in the commit of the pass, before its answer
        assert (alarm["state"], alarm["cleared_reason"]) == ("cleared", "passed")
        assert alarm["acknowledged_at"] is None  # the desk may still acknowledge it
        desk = site["site"].api("desk.officer")
        unacked = desk.ok("GET", "/access/alarms?kind=apb_violation&acknowledged=false")
        assert alarm["id"] in [a["id"] for a in unacked["items"]]
        done = desk.ok("POST", f"/access/alarms/{alarm['id']}/acknowledge",
                       {"note": "tailgated behind a colleague; spoken to"})
        assert (done["state"], done["cleared_reason"]) == ("cleared", "passed")
    finally:
        after.close()


def test_the_desk_acknowledges_apb_alarms_and_that_ends_them(site: dict[str, Any],
                                                              door: Door) -> None:
    kim = card(site, "kim")
    assert door.ask(R_LAB_IN, K.CARD, kim).code == RC.APPROVED
    for _ in range(3):
        assert door.ask(R_LAB_IN, K.CARD, kim).code == RC.APB_VIOLATION
    alarms = _alarms(site, kim)
    assert [a["state"] for a in alarms] == ["open"] * 3
    desk = site["site"].api("desk.officer")
    cashier_like = site["root"]
    # One with a note: momentary, so the acknowledgement ends it.
    one = desk.ok("POST", f"/access/alarms/{alarms[0]['id']}/acknowledge",
                  {"note": "badge shared at the turnstile; reported"})
    assert (one["state"], one["cleared_reason"]) == ("cleared", "acknowledged")
    assert one["acknowledged_at"] is not None and one["cleared_at"] is not None
    # The rest at once, all or nothing: one already acknowledged refuses the whole.
    ids = [a["id"] for a in alarms]
    assert desk.post("/access/alarms/acknowledge",
                     {"alarm_ids": ids, "note": "same incident"}).status_code == 409
    assert [a["acknowledged_at"] is None for a in _alarms(site, kim)] == [False, True, True]
    assert desk.post("/access/alarms/acknowledge",
                     {"alarm_ids": ids[1:], "note": " "}).status_code == 422
    rest = desk.ok("POST", "/access/alarms/acknowledge",
                   {"alarm_ids": ids[1:], "note": "same incident"})
    assert [(a["state"], a["cleared_reason"]) for a in rest] == [("cleared", "acknowledged")] * 2
    audit = site["site"].fetch("SELECT entity_id FROM audit_log WHERE action ="
                               " 'access.acknowledge_alarm' AND entity_id = ANY($1::text[])",
                               [str(i) for i in ids])
    assert len(audit) == 3
    # Unknown alarms refuse the whole request.
    assert cashier_like.post("/access/alarms/acknowledge",
                             {"alarm_ids": [2**40], "note": "x"}).status_code == 404
    # Kim leaves, comes back: the alarms are over, nothing else changes.
    assert door.ask(R_LAB_OUT, K.CARD, kim).code == RC.APPROVED
    assert [a["cleared_reason"] for a in _alarms(site, kim)] == ["acknowledged"] * 3
