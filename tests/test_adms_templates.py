"""Biometric template sync over the ADMS push protocol (docs/adms.md "Users and templates").

`onecard adms` and the admin API run as real processes on a real PostgreSQL; the devices are
the emulator of tests/adms_device.py, which refuses a template for a user it does not hold
(so the order of the commands is checked by every test). A grant puts the person and their
templates on the door's device, a revoke takes them off; a device that was offline catches up
when it polls again; a lost answer, a reboot and a refusal are retried in order; a template
enrolled at one device reaches the person's other doors; bad input costs nothing.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from onecard.harness import AdmsProcess
from protocols import adms
from tests.admin_site import AdminSite, Api, new_card_no
from tests.adms_device import AdmsDevice

_serials = itertools.count(1)
FINGER = bytes(range(256)) * 6  # 1,536 opaque bytes: a fingerprint template's size
FACE = b"\x7fFACE" * 900
PHOTO = b"\xff\xd8\xff\xe0JFIF" + bytes(range(256)) * 40  # a small JPEG's worth of bytes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def edge(pg_server: Any, migrated_template: str) -> Iterator[dict[str, Any]]:
    site = AdminSite(pg_server.new_database(template=migrated_template))
    site.start_admin()
    # Compare at every poll, so a test needs no clock; resends are tested through a reboot.
    process = AdmsProcess(site.dsn, site.master.hex(), extra_env={
        "ONECARD_ADMS_RECONCILE_SECONDS": "0", "ONECARD_ADMS_RESEND_SECONDS": "3600"}).start()
    root = site.api()
    merchant = root.ok("POST", "/merchants", {"node_id": site.tenant_node(1),
                                              "name": "Door controllers", "mode": "fixed",
                                              "fixed_amount_fen": 100})
    try:
        yield {"site": site, "adms": process, "root": root, "merchant": merchant}
    finally:
        process.stop()
        site.close()


class Door:
    """A door of tenant 1 with its own door group and an ADMS device guarding it."""

    def __init__(self, edge: dict[str, Any], *, pushver: str = "2.4.1",
                 node_id: int | None = None) -> None:
        root: Api = edge["root"]
        campus = edge["site"].tenant_node(1)
        n = next(_serials)
        self.door = root.ok("POST", "/access/doors", {"node_id": campus, "name": f"Lab {n}"})
        self.group = root.ok("POST", "/access/door-groups", {
            "node_id": campus, "name": f"Lab {n}", "door_ids": [self.door["id"]]})
        terminal = root.ok("POST", f"/merchants/{edge['merchant']['id']}/terminals",
                           {"kind": "door", "name": f"Lab {n} terminal"})["terminal"]
        self.serial_no = f"TPL{n:04d}{pushver[0]}"
        root.ok("POST", "/adms/devices", {"serial_no": self.serial_no,
                                          "node_id": node_id or campus,
                                          "door_id": self.door["id"],
                                          "terminal_id": terminal["id"]})
        self.device = AdmsDevice(edge["adms"].url, self.serial_no, pushver=pushver)
        assert self.device.power_on().status_code == 200

    def grant(self, root: Api, person_id: int) -> int:
        return int(root.ok("POST", "/access/grants", {"door_group_id": self.group["id"],
                                                      "person_id": person_id})["id"])


def _person(root: Api, node_id: int, name: str, *, card: bool = True) -> dict[str, Any]:
    person = root.ok("POST", "/people", {"node_id": node_id, "name": name, "class_id": 2})
    if card:
        root.ok("POST", f"/people/{person['id']}/cards", {"card_no": new_card_no()})
    return dict(person)


def _enrol(root: Api, person_id: int, bio_type: int, data: bytes, **kw: Any) -> dict[str, Any]:
    return dict(root.ok("POST", f"/people/{person_id}/biometrics",
                        {"bio_type": bio_type, "data": _b64(data), "major_ver": 10, **kw}))


def test_a_grant_sends_the_user_then_the_template_and_a_revoke_deletes_them(
        edge: dict[str, Any]) -> None:
    root: Api = edge["root"]
    site: AdminSite = edge["site"]
    lab = Door(edge)
    li = _person(root, site.tenant_node(1), "Li Lei")
    tpl = _enrol(root, li["id"], 1, FINGER, no=6)
    assert (tpl["kind"], tpl["no"], tpl["size_bytes"], tpl["enrolled_at_device"]) == (
        "fingerprint", 6, len(FINGER), None)
    listed = root.get(f"/people/{li['id']}/biometrics")
    assert _b64(FINGER)[:40] not in listed.text, "the bytes never come out of the API"
    d = lab.device
    d.sync()
    assert str(li["id"]) not in d.users, "no grant on the door: not on its device"

    grant_id = lab.grant(root, li["id"])
    d.sync()
    pin = str(li["id"])
    assert d.users[pin]["Name"] == "Li Lei"
    assert d.templates == {(pin, 1, 6, 0): FINGER}, "legacy firmware: FINGERTMP"
    order = [c.split(" PIN=")[0] for c in d.applied if f"PIN={pin}" in c]
    assert order == ["DATA UPDATE USERINFO", "DATA UPDATE FINGERTMP"]
    # The queue as the admin API shows it: summaries, never the template.
    queue = root.get(f"/adms/devices/{lab.serial_no}/commands?status=all")
    assert queue.status_code == 200 and _b64(FINGER)[:40] not in queue.text
    assert [c["status"] for c in queue.json()] == ["done", "done"]
    assert queue.json()[1]["summary"].startswith(f"DATA UPDATE FINGERTMP PIN={pin}\tFID=6")
    stored = site.fetch("SELECT command FROM adms_commands WHERE serial_no = $1",
                        lab.serial_no)
    assert all(_b64(FINGER)[:40] not in r["command"] for r in stored), \
        "an acknowledged command keeps only its summary"

    # The template is deleted: off the device, the user stays.
    root.ok("DELETE", f"/people/{li['id']}/biometrics/{tpl['id']}", status=204)
    d.sync()
    assert pin in d.users and d.templates == {}
    assert d.applied[-1] == f"DATA DELETE FINGERTMP PIN={pin}\tFID=6"

    # Enrolled again, then the grant revoked: the user goes, and its templates with it.
    _enrol(root, li["id"], 1, FINGER, no=6)
    d.sync()
    assert d.templates == {(pin, 1, 6, 0): FINGER}
    root.ok("POST", f"/access/grants/{grant_id}/revoke", {})
    d.sync()
    assert pin not in d.users and d.templates == {}
    assert d.applied[-1] == f"DATA DELETE USERINFO PIN={pin}"
    assert not site.fetch("SELECT 1 FROM adms_device_templates WHERE serial_no = $1",
                          lab.serial_no)


def test_department_grant_and_a_person_deny_follow_the_switch_precedence(
        edge: dict[str, Any]) -> None:
    root: Api = edge["root"]
    site: AdminSite = edge["site"]
    lab = Door(edge)
    dept = root.ok("POST", "/org/nodes", {"parent_id": site.tenant_node(1),
                                          "kind": "department", "name": "Physics"})
    a = _person(root, dept["id"], "Physicist A")
    b = _person(root, dept["id"], "Physicist B", card=False)  # a face only
    _enrol(root, b["id"], 2, FACE, index=0)
    root.ok("POST", "/access/grants", {"door_group_id": lab.group["id"], "subject": "department",
                                       "department_id": dept["id"]})
    root.ok("POST", "/access/grants", {"door_group_id": lab.group["id"], "person_id": a["id"],
                                       "effect": "deny"})
    lab.device.sync()
    assert set(lab.device.users) == {str(b["id"])}, "the person's deny beats the department"
    assert lab.device.templates == {(str(b["id"]), 2, 0, 0): FACE}, "legacy firmware: FACE"


def test_an_offline_device_catches_up_and_lost_answers_are_resent_in_order(
        edge: dict[str, Any]) -> None:
    root: Api = edge["root"]
    site: AdminSite = edge["site"]
    lab = Door(edge, pushver="3.1.2")
    d = lab.device
    d.sync()
    han = _person(root, site.tenant_node(1), "Han Meimei")
    pin = str(han["id"])
    # While the device is offline: a grant, a fingerprint, a visible-light face.
    lab.grant(root, han["id"])
    _enrol(root, han["id"], 1, FINGER, no=1)
    _enrol(root, han["id"], 9, FACE, major_ver=40)
    # The operator sees what is waiting (compared now, through the admin API).
    queued = root.ok("POST", f"/adms/devices/{lab.serial_no}/sync", {})
    assert queued == {"serial_no": lab.serial_no, "queued": 3}
    pending = root.ok("GET", f"/adms/devices/{lab.serial_no}/commands")
    assert [(c["status"], c["summary"].split("\t")[0]) for c in pending] == [
        ("pending", f"DATA UPDATE USERINFO PIN={pin}"),
        ("pending", f"DATA UPDATE BIODATA Pin={pin}"),
        ("pending", f"DATA UPDATE BIODATA Pin={pin}")]
    assert all("Tmp=<" in c["summary"] for c in pending[1:])
    devices = {x["serial_no"]: x for x in root.ok("GET", "/adms/devices")}
    assert devices[lab.serial_no]["commands_pending"] == 3
    assert devices[lab.serial_no]["template_dialect"] == "biodata", "push 3.1.2 registered"

    # Back, but its answer is lost: the batch stays in flight and nothing else goes out...
    assert d.poll(ack=False, apply=False) == 3
    assert d.poll() == 0
    # ...until --resend-seconds passed (the clock moved by moving the hand-out back)...
    site.fetch("UPDATE adms_commands SET sent_at = sent_at - interval '2 hours'"
               " WHERE serial_no = $1", lab.serial_no)
    assert d.poll(ack=False, apply=False) == 3
    # ...or it reboots: the same commands, in order.
    assert d.power_on().status_code == 200
    d.sync()
    assert pin in d.users
    assert d.templates == {(pin, 1, 1, 0): FINGER, (pin, 9, 0, 0): FACE}
    done = root.ok("GET", f"/adms/devices/{lab.serial_no}/commands?status=all")
    assert {c["status"] for c in done} == {"done"} and {c["attempts"] for c in done} == {3}

    # A refusal (Return -1001, e.g. storage full) is retried, and succeeds the second time.
    _enrol(root, han["id"], 1, FINGER[::-1], no=2)
    refused = iter([-1001])
    d.poll(refuse=lambda command: next(refused, 0))
    failed_once = root.ok("GET", f"/adms/devices/{lab.serial_no}/commands")
    assert [(c["status"], c["return_code"], c["attempts"]) for c in failed_once] == [
        ("pending", -1001, 1)]
    d.sync()
    assert d.templates[(pin, 1, 2, 0)] == FINGER[::-1]

    # Refused every time: failed after COMMAND_ATTEMPTS_MAX hand-outs, the queue goes on.
    _enrol(root, han["id"], 1, FINGER[:100], no=3)
    for _ in range(adms.COMMAND_ATTEMPTS_MAX):
        d.poll(refuse=lambda command: -1002)
    [failed] = root.ok("GET", f"/adms/devices/{lab.serial_no}/commands")
    assert (failed["status"], failed["attempts"], failed["return_code"]) == (
        "failed", adms.COMMAND_ATTEMPTS_MAX, -1002)
    assert d.poll() == 0
    # A full resync sends everything again (a wiped or replaced device).
    d.users.clear()
    d.templates.clear()
    assert root.ok("POST", f"/adms/devices/{lab.serial_no}/sync", {"full": True})["queued"] == 5
    d.sync()
    assert set(d.templates) == {(pin, 1, 1, 0), (pin, 1, 2, 0), (pin, 1, 3, 0), (pin, 9, 0, 0)}


def test_a_template_enrolled_at_a_device_reaches_the_persons_other_doors(
        edge: dict[str, Any]) -> None:
    root: Api = edge["root"]
    site: AdminSite = edge["site"]
    front, back, old = Door(edge, pushver="3.1.2"), Door(edge, pushver="3.1.2"), Door(edge)
    wang = _person(root, site.tenant_node(1), "Wang Fang")
    pin = str(wang["id"])
    for door in (front, back, old):
        door.grant(root, wang["id"])
        door.device.sync()
        assert pin in door.device.users

    # Wang enrols a visible-light face and its photo at the front door, a finger at the old one.
    r = front.device.enrol(pin, 9, FACE, major_ver=40)
    assert (r.status_code, r.text) == (200, "OK: 1")
    again = front.device.enrol(pin, 9, FACE, major_ver=40)  # the answer was lost: resent
    assert (again.status_code, again.text) == (200, "OK: 1")
    assert front.device.enrol(pin, 0, PHOTO).text == "OK: 1"
    r = old.device.enrol(pin, 1, FINGER, no=0)
    assert (r.status_code, r.text) == (200, "OK: 2")  # its USER line and its FP line
    kept = root.ok("GET", f"/people/{wang['id']}/biometrics")
    assert [(t["kind"], t["enrolled_at_device"]) for t in kept] == [
        ("face_photo", front.serial_no), ("fingerprint", old.serial_no),
        ("face_visible", front.serial_no)], "once each"

    for door in (front, back, old):
        door.device.sync()
    everything = {(pin, 9, 0, 0): FACE, (pin, 1, 0, 0): FINGER, (pin, 0, 0, 0): PHOTO}
    assert back.device.templates == everything
    assert front.device.templates == everything
    assert not [c for c in front.device.applied if "Type=9" in c], \
        "the device it was enrolled at is not sent it back"
    assert old.device.templates == {(pin, 1, 0, 0): FINGER}, \
        "a legacy device takes neither a visible-light face nor a photo"
    assert not [c for c in old.device.applied if "FINGERTMP" in c]

    # The photo deleted in the admin API: off every device that holds it.
    [photo] = [t for t in kept if t["kind"] == "face_photo"]
    root.ok("DELETE", f"/people/{wang['id']}/biometrics/{photo['id']}", status=204)
    for door in (front, back):
        door.device.sync()
        assert door.device.applied[-1] == f"DATA DELETE BIOPHOTO PIN={pin}"
        assert (pin, 0, 0, 0) not in door.device.templates


def test_templates_of_nobody_in_the_subtree_and_bad_input_cost_nothing(
        edge: dict[str, Any]) -> None:
    root: Api = edge["root"]
    site: AdminSite = edge["site"]
    lab = Door(edge, pushver="3.1.2")
    east = _person(root, site.tenant_node(2), "East Person")
    count = "SELECT count(*) AS n FROM biometric_templates"
    before = site.fetch(count)[0]["n"]
    # Another tenant's person, an unknown PIN: acknowledged (the device must not resend
    # forever) and not kept.
    for pin in (str(east["id"]), "999999"):
        r = lab.device.enrol(pin, 9, FACE)
        assert (r.status_code, r.text) == (200, "OK: 1")
    # A malformed template line refuses the upload whole.
    bad = (f"BIODATA Pin=1\tNo=0\tIndex=0\tValid=1\tType=9\tTmp={_b64(FACE)}\n"
           "BIODATA Pin=1\tNo=0\tIndex=0\tValid=1\tType=9\tTmp=not*base64\n")
    r = lab.device.http.post("/iclock/cdata", params={"SN": lab.serial_no, "table": "BIODATA"},
                             content=bad)
    assert r.status_code == 400 and "line 2" in r.text
    too_big = "A" * (adms.TEMPLATE_TEXT_CHARS_MAX + 4)
    r = lab.device.http.post("/iclock/cdata", params={"SN": lab.serial_no, "table": "OPERLOG"},
                             content=f"FP PIN=1\tFID=0\tSize=1\tValid=1\tTMP={too_big}\n")
    assert r.status_code == 400
    assert site.fetch(count)[0]["n"] == before
    # An acknowledgement of commands not handed out to that serial number changes nothing.
    other = Door(edge)
    other.grant(root, _person(root, site.tenant_node(1), "Zhao Lei")["id"])
    assert root.ok("POST", f"/adms/devices/{other.serial_no}/sync", {})["queued"] >= 1
    queued = site.fetch("SELECT id FROM adms_commands WHERE serial_no = $1", other.serial_no)
    forged = "".join(f"ID={r['id']}&Return=0&CMD=DATA\n" for r in queued)
    for serial_no in (lab.serial_no, other.serial_no):  # another device's; not yet handed out
        r = lab.device.http.post("/iclock/devicecmd", params={"SN": serial_no}, content=forged)
        assert (r.status_code, r.text) == (200, "OK")
    assert {r["status"] for r in site.fetch(
        "SELECT status FROM adms_commands WHERE serial_no = $1", other.serial_no)} == {"pending"}
    odd = lab.device.http.get("/iclock/cdata", params={"SN": lab.serial_no, "options": "all",
                                                       "pushver": "\u00b3.0"})
    assert odd.status_code == 200 and "MultiBioDataSupport=0:1:1:0:0:0:0:0:0:1" in odd.text

    # The admin API: too big, not base64, another tenant's person, a role without the right.
    li = _person(root, site.tenant_node(1), "Li Si")
    url = f"/people/{li['id']}/biometrics"
    too_long = _b64(b"x" * (adms.TEMPLATE_BYTES_MAX + 3))  # refused by the schema
    assert root.post(url, {"bio_type": 1, "data": too_long}).status_code == 400
    one_over = _b64(b"x" * (adms.TEMPLATE_BYTES_MAX + 1))  # the text fits, the bytes do not
    assert root.post(url, {"bio_type": 1, "data": one_over}).status_code == 422
    assert root.post(url, {"bio_type": 1, "data": "not base64!"}).status_code == 400
    assert root.post(url, {"bio_type": 1, "data": "QUJD="}).status_code == 422
    assert root.post(url, {"bio_type": 3, "data": "QUJD"}).status_code == 400
    assert root.post(url, {"bio_type": 1, "data": "QUJD", "no": 10}).status_code == 400
    root.ok("POST", "/users", {"username": "east.office", "password": "correct horse battery",
                               "role": "card_office", "node_id": site.tenant_node(2)})
    east_office = site.api("east.office")
    assert east_office.post(url, {"bio_type": 1, "data": "QUJD"}).status_code == 404
    root.ok("POST", "/users", {"username": "east.admin", "password": "correct horse battery",
                               "role": "tenant_admin", "node_id": site.tenant_node(2)})
    east_admin = site.api("east.admin")
    assert east_admin.post(url, {"bio_type": 1, "data": "QUJD"}).status_code == 404
    assert east_admin.get(f"/adms/devices/{lab.serial_no}/commands").status_code == 404
    assert east_admin.post(f"/adms/devices/{lab.serial_no}/sync", {}).status_code == 404
    root.ok("POST", "/users", {"username": "campus.cashier",
                               "password": "correct horse battery", "role": "cashier",
                               "node_id": site.tenant_node(1)})
    cashier = site.api("campus.cashier")
    assert cashier.post(url, {"bio_type": 1, "data": "QUJD"}).status_code == 403
    assert site.fetch(count)[0]["n"] == before


def test_the_template_codec() -> None:
    t = adms.Template("7", 1, 3, 0, 10, 0, 0, data=b"\x00secret\xff")
    assert "secret" not in repr(t) and "secret" not in str(t), "a template never reaches a log"
    legacy = adms.template_update(t, dialect="legacy")
    assert legacy == f"DATA UPDATE FINGERTMP PIN=7\tFID=3\tSize=12\tValid=1\tTMP={_b64(t.data)}"
    assert adms.template_update(t, dialect="biodata") == (
        "DATA UPDATE BIODATA Pin=7\tNo=3\tIndex=0\tValid=1\tDuress=0\tType=1\tMajorVer=10\t"
        f"MinorVer=0\tFormat=0\tTmp={_b64(t.data)}")
    assert adms.template_update(adms.Template("7", 9, data=b"x"), dialect="legacy") is None
    assert adms.template_delete(pin="7", bio_type=2, no=0, idx=4, dialect="legacy") == \
        "DATA DELETE FACE PIN=7"
    assert adms.command_summary(legacy) == "DATA UPDATE FINGERTMP PIN=7\tFID=3\tSize=12\t" \
        "Valid=1\tTMP=<12 chars>"
    upload = adms.parse_templates(
        "USER PIN=7\tName=Li\n"
        f"FP PIN=7\tFID=3\tSize=12\tValid=1\tTMP={_b64(b'finger')}\n"
        f"FACE PIN=7\tFID=2\tSize=8\tValid=1\tTMP={_b64(b'face')}\n"
        f"BIODATA Pin=8\tNo=0\tIndex=0\tValid=1\tDuress=0\tType=9\tMajorVer=40\tMinorVer =1\t"
        f"Format=0\tTmp={_b64(b'vl')}\n"
        f"BIODATA Pin=8\tNo=0\tIndex=0\tValid=1\tType=8\tTmp={_b64(b'palm')}\n"
        f"FP PIN=7\tFID=4\tSize=12\tValid=0\tTMP={_b64(b'old')}\n")
    assert upload.other_lines == 3, "the USER line, a palm (type 8), an invalid finger"
    assert upload.templates == [adms.Template("7", 1, 3, 0, data=b"finger"),
                                adms.Template("7", 2, 0, 2, data=b"face"),
                                adms.Template("8", 9, 0, 0, 40, 1, 0, data=b"vl")]
    for bad in ("FP PIN=7\tFID=10\tTMP=QUJD", "FP PIN=x;y\tFID=1\tTMP=QUJD",
                "BIODATA Pin=7\tType=1\tTmp=", "FACE PIN=7\tFID=0\tTMP=QUJ"):
        with pytest.raises(adms.AdmsError):
            adms.parse_templates(bad)
    photo = adms.parse_templates(f"BIOPHOTO PIN=7\tFileName=7.jpg\tType=9\tSize=8\t"
                                 f"Content={_b64(b'jpeg')}\n"
                                 f"BIOPHOTO PIN=7\tType=2\tContent={_b64(b'nir')}\n")
    assert photo == adms.TemplateUpload([adms.Template("7", 0, data=b"jpeg")], 1)
    assert adms.command_summary(adms.template_update(photo.templates[0], dialect="biodata")
                                or "") == ("DATA UPDATE BIOPHOTO PIN=7\tType=9\tSize=8\t"
                                           "Content=<8 chars>\tFormat=0\tUrl=\tPostBackTmpFlag=0")
    assert adms.template_update(photo.templates[0], dialect="legacy") is None
    assert adms.parse_data_command("DATA DELETE BIODATA Pin=7\tType=1\tNo=3\tIndex=0") == (
        "DELETE", "BIODATA", {"pin": "7", "type": "1", "no": "3", "index": "0"})


def test_no_template_reaches_a_log(edge: dict[str, Any]) -> None:
    """Run last in this module: after every template above went up, down and through the
    admin API, neither process's log holds a piece of one."""
    site: AdminSite = edge["site"]
    assert site.admin is not None
    logs = {"adms": edge["adms"].log_path.read_text(errors="replace"),
            "admin": site.admin.log_path.read_text(errors="replace")}
    assert "adms.templates_uploaded" in logs["adms"], "the upload was logged, by its counts"
    for data in (FINGER, FINGER[::-1], FACE, PHOTO):
        for offset in (0, 300, 1200):
            piece = _b64(data[offset:offset + 48])
            for name, text in logs.items():
                assert piece not in text, (name, "a template in the log")
