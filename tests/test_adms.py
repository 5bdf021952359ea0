"""The ZKTeco ADMS push edge (`onecard adms`, docs/adms.md) against an emulated device.

The admin API registers a device by serial number; the device powers on, receives the
people of its node as user commands, uploads attendance records (twice: one effect), and
those of its door become access records. A device nobody registered is refused, and so is a
malformed upload, with nothing stored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from onecard.harness import AdmsProcess
from protocols import adms
from tests.admin_site import AdminSite, Api, new_card_no
from tests.adms_device import AdmsDevice


@pytest.fixture(scope="module")
def edge(pg_server: Any, migrated_template: str) -> Iterator[dict[str, Any]]:
    site = AdminSite(pg_server.new_database(template=migrated_template))
    site.start_admin()
    process = AdmsProcess(site.dsn, site.master.hex()).start()
    try:
        yield {"site": site, "adms": process, "root": site.api()}
    finally:
        process.stop()
        site.close()


def _person_with_card(root: Api, node_id: int, name: str) -> tuple[dict[str, Any], int]:
    person = root.ok("POST", "/people", {"node_id": node_id, "name": name, "class_id": 2})
    card_no = new_card_no()
    root.ok("POST", f"/people/{person['id']}/cards", {"card_no": card_no})
    return person, card_no


def test_a_device_registers_receives_users_and_uploads_once(edge: dict[str, Any]) -> None:
    site: AdminSite = edge["site"]
    root: Api = edge["root"]
    campus = site.tenant_node(1)
    dept = root.ok("POST", "/org/nodes", {"parent_id": campus, "kind": "department",
                                          "name": "Gatehouse"})
    li, li_card = _person_with_card(root, dept["id"], "Li Lei")
    han, _ = _person_with_card(root, dept["id"], "Han Meimei")
    east_person, _ = _person_with_card(root, site.tenant_node(2), "East Person")
    device_out = root.ok("POST", "/adms/devices", {"serial_no": "CKJN201960001",
                                                   "node_id": dept["id"], "name": "Gate"})
    assert device_out["records"] == 0
    device = AdmsDevice(edge["adms"].url, "CKJN201960001")
    try:
        r = device.power_on()
        assert r.status_code == 200 and r.text.startswith("GET OPTION FROM: CKJN201960001")
        assert device.options["ATTLOGStamp"] == "0"
        device.sync()
        assert set(device.users) == {str(li["id"]), str(han["id"])}, "its node's people only"
        assert device.users[str(li["id"])]["Card"] == str(li_card)
        assert device.users[str(li["id"])]["Name"] == "Li Lei"

        # A card reported lost: the next reconcile takes the person off the device.
        root.ok("POST", f"/cards/{li_card}/report-loss", {})
        site.fetch("UPDATE adms_devices SET synced_at = NULL WHERE serial_no = $1",
                   "CKJN201960001")
        device.sync()
        assert set(device.users) == {str(han["id"])}

        at = dt.datetime(2026, 12, 2, 8, 30, 0)
        rows = [(str(han["id"]), at, 0, 1), (str(han["id"]), at + dt.timedelta(hours=9), 1, 1),
                (str(east_person["id"]), at, 0, 4), ("999999", at, 0, 4)]
        first = device.push_attlog(rows)
        assert (first.status_code, first.text) == (200, "OK: 4")
        again = device.push_attlog(rows)  # the answer was lost: the device sends it again
        assert (again.status_code, again.text) == (200, "OK: 4")
        stored = site.fetch("SELECT pin, person_id, at FROM adms_records WHERE serial_no = $1"
                            " ORDER BY id", "CKJN201960001")
        assert len(stored) == 4, "the repeat changed nothing"
        mapped = {r["pin"]: r["person_id"] for r in stored}
        assert mapped[str(han["id"])] == han["id"]
        assert mapped[str(east_person["id"])] is None, "another tenant's person is not mapped"
        assert mapped["999999"] is None
        # The tenant's local time is UTC+8: 08:30 local is 00:30 UTC.
        assert stored[0]["at"] == dt.datetime(2026, 12, 2, 0, 30, tzinfo=dt.UTC)
        after = device.power_on()
        assert after.status_code == 200 and device.options["ATTLOGStamp"] == str(device.stamp)
        listed = [d for d in root.ok("GET", "/adms/devices")
                  if d["serial_no"] == "CKJN201960001"]
        assert listed[0]["records"] == 4 and listed[0]["commands_pending"] == 0
    finally:
        device.close()


def test_an_unknown_serial_number_is_refused_and_stores_nothing(edge: dict[str, Any]) -> None:
    site: AdminSite = edge["site"]
    before = site.fetch("SELECT count(*) AS n FROM adms_records")[0]["n"]
    forged = AdmsDevice(edge["adms"].url, "FORGED0001")
    try:
        assert forged.power_on().status_code == 403
        r = forged.push_attlog([("1", dt.datetime(2026, 12, 2, 8, 0), 0, 1)])
        assert (r.status_code, r.text) == (403, "ERROR: unknown device")
        assert forged.http.get("/iclock/getrequest",
                               params={"SN": "FORGED0001"}).status_code == 403
        no_sn = forged.http.get("/iclock/getrequest")
        assert no_sn.status_code == 400
    finally:
        forged.close()
    assert site.fetch("SELECT count(*) AS n FROM adms_records")[0]["n"] == before
    assert not site.fetch("SELECT 1 FROM adms_devices WHERE serial_no = 'FORGED0001'")


def test_a_malformed_upload_is_refused_whole(edge: dict[str, Any]) -> None:
    site: AdminSite = edge["site"]
    root: Api = edge["root"]
    root.ok("POST", "/adms/devices", {"serial_no": "BAD0001", "node_id": site.tenant_node(1)})
    device = AdmsDevice(edge["adms"].url, "BAD0001")
    try:
        body = "1\t2026-12-02 08:00:00\t0\t1\n2\tnot a time\t0\t1\n"
        r = device.http.post("/iclock/cdata", params={"SN": "BAD0001", "table": "ATTLOG"},
                             content=body)
        assert r.status_code == 400 and "line 2" in r.text
    finally:
        device.close()
    assert not site.fetch("SELECT 1 FROM adms_records WHERE serial_no = 'BAD0001'")


def test_the_codec_refuses_what_the_protocol_does_not_allow() -> None:
    with pytest.raises(adms.AdmsError):
        adms.parse_attlog("x" * (adms.LINE_CHARS_MAX + 1))
    with pytest.raises(adms.AdmsError):
        adms.parse_attlog("\n".join(["1\t2026-12-02 08:00:00"] * (adms.RECORDS_PER_UPLOAD_MAX
                                                                   + 1)))
    with pytest.raises(adms.AdmsError):
        adms.parse_attlog("1;DROP\t2026-12-02 08:00:00")
    with pytest.raises(adms.AdmsError):
        adms.parse_devicecmd("Return=0&CMD=DATA")
    assert adms.parse_attlog("7\t2026-12-02 08:00:00\t1\t15\t0\t0\n") == [
        adms.AttRecord("7", dt.datetime(2026, 12, 2, 8, 0), 1, 15, 0)]
    command = adms.user_update(pin="7", name="A\tB=C", card_no=42)
    assert adms.parse_user_command(command) == {
        "op": "UPDATE", "PIN": "7", "Name": "A B C", "Pri": "0", "Passwd": "", "Card": "42",
        "Grp": "1", "TZ": "0000000000000000", "Verify": "-1"}
    assert adms.format_commands([]) == "OK"
    assert adms.parse_commands(adms.format_commands([(3, "DATA DELETE USERINFO PIN=7")])) == [
        (3, "DATA DELETE USERINFO PIN=7")]
