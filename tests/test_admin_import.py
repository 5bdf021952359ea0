"""Import of people (CSV, XLSX), bulk operations over a selection and a person's change of
identity class, over real HTTP.

Import and bulk operations are all-or-nothing: a file with one bad row, or a selection with one
person that cannot be changed, writes nothing at all (people, accounts, cards, audit rows and
outbox rows counted before and after).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import struct
import time
import zipfile
from collections.abc import Iterator
from typing import Any

import openpyxl
import pytest

from tests.admin_site import PASSWORD, AdminSite, Api, new_card_no

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
TABLES = ("people", "accounts", "cards", "audit_log", "change_outbox")


@pytest.fixture(scope="module")
def site(pg_server: Any, migrated_template: str) -> Iterator[AdminSite]:
    s = AdminSite(pg_server.new_database(template=migrated_template))
    s.start_admin()
    root = s.api()
    campus = s.tenant_node(1)
    physics = root.ok("POST", "/org/nodes", {"parent_id": campus, "kind": "department",
                                             "name": "Physics"})
    root.ok("POST", "/org/nodes", {"parent_id": physics["id"], "kind": "department",
                                   "name": "Class 3"})
    root.ok("POST", "/users", {"username": "campus.office", "password": PASSWORD,
                               "role": "card_office", "node_id": campus})
    root.ok("POST", "/users", {"username": "campus.cashier", "password": PASSWORD,
                               "role": "cashier", "node_id": campus})
    try:
        yield s
    finally:
        s.close()


def counts(site: AdminSite) -> dict[str, int]:
    """Rows per table; log-ins (audited as auth.*) are not changes the imports could make."""
    where = {"audit_log": " WHERE action NOT LIKE 'auth.%'"}
    return {t: site.fetch(f"SELECT count(*) AS n FROM {t}{where.get(t, '')}")[0]["n"]
            for t in TABLES}


def to_csv(rows: list[list[Any]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    return buf.getvalue().encode()


def to_xlsx(rows: list[list[Any]]) -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    for r in rows:
        ws.append(r)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def upload(api: Api, data: bytes, name: str = "people.csv", **params: Any) -> Any:
    return api.http.post("/people/import", params=params, files={"file": (name, data)})


HEADER = ["external_id", "name", "node", "class", "phone", "card_no", "printed_no", "chip_uid",
          "card_type", "valid_until"]


def test_csv_import_creates_people_accounts_cards_audited_and_on_the_change_feed(
        site: AdminSite) -> None:
    office = site.api("campus.office")
    campus = site.tenant_node(1)
    c1, c2 = new_card_no(), new_card_no()
    before = counts(site)
    outbox_top = site.fetch("SELECT coalesce(max(id), 0) AS n FROM change_outbox")[0]["n"]
    data = to_csv([
        HEADER,
        ["CSV-1", "Zhao Lei", "Demo Campus/Physics/Class 3", "student", "13800000001", c1,
         "P-001", "04a1b2c3", "standard", "2030-06-30"],
        ["CSV-2", "Qian Li", "Physics", "2", "", c2, "", "", "electronic_student_id", ""],
        ["", "Sun Mei", str(campus), "visitor", "", "", "", "", "", ""],
    ])
    r = upload(office, data)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["dry_run"], out["rows"], out["people_created"], out["cards_issued"]) == (
        False, 3, 3, 2)
    assert [p["row"] for p in out["people"]] == [2, 3, 4]
    first = out["people"][0]
    person = office.ok("GET", f"/people/{first['person_id']}")
    assert person["name"] == "Zhao Lei" and person["external_id"] == "CSV-1"
    assert person["phone"] == "13800000001" and person["class_id"] == 1
    class3 = site.fetch("SELECT id FROM org_nodes WHERE name = 'Class 3'")[0]["id"]
    assert person["node_id"] == class3
    [card] = office.ok("GET", f"/people/{first['person_id']}/cards")
    assert (card["card_no"], card["chip_uid"], card["valid_until"], card["printed_no"]) == (
        c1, "04A1B2C3", "2030-06-30", "P-001")
    second = office.ok("GET", f"/people/{out['people'][1]['person_id']}")
    assert second["class_id"] == 2, "a class by id"
    third = out["people"][2]
    assert third["external_id"] is None and third["card_no"] is None
    after = counts(site)
    assert {t: after[t] - before[t] for t in TABLES} == {
        "people": 3, "accounts": 3, "cards": 2, "audit_log": 5, "change_outbox": 5}
    # The change feed: person by person, the account before its card.
    events = site.fetch("SELECT kind, payload->>'account_id' AS account FROM change_outbox"
                        " WHERE id > $1 ORDER BY id", outbox_top)
    accounts = [str(p["account_id"]) for p in out["people"]]
    assert [(e["kind"], e["account"]) for e in events] == [
        ("account_opened", accounts[0]), ("card_bound", accounts[0]),
        ("account_opened", accounts[1]), ("card_bound", accounts[1]),
        ("account_opened", accounts[2])]
    # The audit rows say the same as POST /people's and POST /people/{id}/cards' would.
    auditor = site.api()
    trail = auditor.ok("GET", f"/audit?entity=person&entity_id={first['person_id']}")
    single = office.ok("POST", "/people", {"node_id": campus, "name": "One By Hand",
                                           "class_id": 2})
    by_hand = auditor.ok("GET", f"/audit?entity=person&entity_id={single['id']}")
    assert trail["items"][0]["action"] == by_hand["items"][0]["action"] == "person.create"
    assert set(trail["items"][0]["after"]) == set(by_hand["items"][0]["after"])
    assert trail["items"][0]["after"]["account_status"] == "active"


def test_xlsx_import_multipart_and_as_the_body(site: AdminSite) -> None:
    office = site.api("campus.office")
    c1, c2 = new_card_no(), new_card_no()
    rows = [
        ["Name", "Node", "Class", "Card_No", "Valid_Until", "External_ID", "Phone"],
        ["Zhou Xin", "HQ / Demo Campus / Physics", "student", c1, dt.datetime(2029, 7, 1), "X-1",
         13900000002],
        [None, None, None, None, None, None, None],  # a blank row: skipped, still counted
        ["Wu Hao", "Demo Campus", 1, c2, None, 4242, None],
    ]
    r = upload(office, to_xlsx(rows), "people.xlsx")
    assert r.status_code == 200, r.text
    out = r.json()
    assert [p["row"] for p in out["people"]] == [2, 4], "spreadsheet row numbers"
    card = office.ok("GET", f"/cards/{c1}")
    assert card["valid_until"] == "2029-07-01"
    wu = office.ok("GET", f"/people/{out['people'][1]['person_id']}")
    assert wu["external_id"] == "4242", "a number cell is its digits, not 4242.0"
    zhou = office.ok("GET", f"/people/{out['people'][0]['person_id']}")
    assert zhou["phone"] == "13900000002"
    physics = site.fetch("SELECT id FROM org_nodes WHERE name = 'Physics'")[0]["id"]
    assert zhou["node_id"] == physics, "a path from the platform's name works too"

    # The workbook as the request body, no form.
    r = office.http.post("/people/import", content=to_xlsx([
        ["name", "node", "class"], ["Zheng Yu", "Demo Campus", "staff"]]),
        headers={"content-type": XLSX})
    assert r.status_code == 200 and r.json()["people_created"] == 1, r.text
    # And CSV as the body, semicolon-separated, with a BOM, as Excel may save it.
    r = office.http.post("/people/import", content="\ufeffname;node;class\nFeng Bo;Demo Campus;"
                         "staff\n".encode(), headers={"content-type": "text/csv"})
    assert r.status_code == 200 and r.json()["people_created"] == 1, r.text
    # GB18030 text (what Excel in China saves as CSV).
    r = office.http.post("/people/import", content="name,node,class\n王芳,Demo Campus,staff\n"
                         .encode("gb18030"), headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    pid = r.json()["people"][0]["person_id"]
    assert office.ok("GET", f"/people/{pid}")["name"] == "王芳"


def test_a_file_with_bad_rows_gives_a_per_row_report_and_changes_nothing(
        site: AdminSite) -> None:
    office = site.api("campus.office")
    root = site.api()
    taken = root.ok("POST", "/people", {"node_id": site.tenant_node(1), "name": "Taken",
                                        "class_id": 2, "external_id": "TAKEN-1"})
    used_card = new_card_no()
    root.ok("POST", f"/people/{taken['id']}/cards", {"card_no": used_card,
                                                     "chip_uid": "DEADBEEF"})
    east = site.tenant_node(2)
    good, dup = new_card_no(), new_card_no()
    data = to_csv([
        HEADER,
        ["OK-1", "Good Row", "Demo Campus", "student", "", good, "", "", "", ""],  # row 2
        ["OK-2", "", "Demo Campus", "student", "", "", "", "", "", ""],  # 3: no name
        ["OK-3", "No Node", "Nowhere/At All", "student", "", "", "", "", "", ""],  # 4
        ["OK-4", "Foreign", str(east), "student", "", "", "", "", "", ""],  # 5: not theirs
        ["OK-5", "Bad Class", "Demo Campus", "wizard", "", "", "", "", "", ""],  # 6
        ["OK-1", "Twice", "Demo Campus", "student", "", "", "", "", "", ""],  # 7: dup ext id
        ["TAKEN-1", "Taken", "Demo Campus", "student", "", "", "", "", "", ""],  # 8
        ["OK-8", "Old Card", "Demo Campus", "student", "", used_card, "", "", "", ""],  # 9
        ["OK-9", "Same Card", "Demo Campus", "student", "", good, "", "", "", ""],  # 10
        ["OK-10", "Chip", "Demo Campus", "student", "", dup, "", "xyz", "", "31/12/2030"],  # 11
        ["OK-11", "Card Bits", "Demo Campus", "student", "", "", "P-9", "", "", ""],  # 12
        ["OK-12", "Float", "Demo Campus", "student", "", "9.1e+15", "", "", "", ""],  # 13
        ["OK-13", "Used Chip", "Demo Campus", "student", "", new_card_no(), "", "deadbeef",
         "", ""],  # 14
        ["OK-14", "Platform", str(site.boot.platform_node_id), "student", "", "", "", "",
         "", ""],  # 15: a card office of the campus does not see the platform node
    ])
    before = counts(site)
    r = upload(office, data)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"].endswith("/import-rejected") and body["rows"] == 14
    got = {(e["row"], e["column"]) for e in body["errors"]}
    assert got == {(3, "name"), (4, "node"), (5, "node"), (6, "class"), (7, "external_id"),
                   (8, "external_id"), (9, "card_no"), (10, "card_no"), (11, "chip_uid"),
                   (11, "valid_until"), (12, "printed_no"), (13, "card_no"), (14, "chip_uid"),
                   (15, "node")}, body["errors"]
    assert body["error_count"] == len(body["errors"]) == 14
    messages = {(e["row"], e["column"]): e["message"] for e in body["errors"]}
    assert "also in row 2" in messages[(7, "external_id")]
    assert "never reused" in messages[(9, "card_no")]
    assert "15 digits" in messages[(13, "card_no")]
    assert "in your part of the organisation" in messages[(5, "node")]
    assert counts(site) == before, "nothing was written"
    # The dry run says the same and writes nothing either.
    r = upload(office, data, dry_run="true")
    assert r.status_code == 422 and r.json()["error_count"] == 14
    assert counts(site) == before


def test_dry_run_header_errors_limits_and_permissions(site: AdminSite) -> None:
    office = site.api("campus.office")
    cashier = site.api("campus.cashier")  # log-ins are audited: both before the count
    before = counts(site)
    ok = to_csv([["name", "node", "class"], ["Dry Run", "Demo Campus", "staff"]])
    r = upload(office, ok, dry_run="true")
    assert r.status_code == 200 and r.json() == {
        "dry_run": True, "rows": 1, "people_created": 0, "cards_issued": 0, "people": []}
    assert counts(site) == before

    r = upload(office, to_csv([["name", "colour", "class"], ["X", "red", "staff"]]))
    assert r.status_code == 422
    assert {(e["row"], e["column"]) for e in r.json()["errors"]} == {(1, "colour"), (1, "node")}
    r = upload(office, b"")
    assert r.status_code == 422 and r.json()["errors"][0]["row"] == 0
    r = office.http.post("/people/import", json={"name": "x"})
    assert r.status_code == 415, r.text
    r = upload(office, b"PK\x03\x04 not really a workbook", "x.xlsx")
    assert r.status_code == 422 and "XLSX" in r.json()["errors"][0]["message"], r.text

    too_many = to_csv([["name", "node", "class"]]
                      + [[f"P{i}", "Demo Campus", "1"] for i in range(50_001)])
    r = upload(office, too_many)
    assert r.status_code == 413 and "50000" in r.json()["detail"], r.text
    r = upload(office, b"name,node,class\n" + b"x" * (17 * 1024 * 1024))
    assert r.status_code == 413, r.text

    assert upload(cashier, ok).status_code == 403
    assert counts(site) == before


def test_ten_thousand_rows_in_one_transaction(site: AdminSite) -> None:
    """The measured figure of docs/admin_api.md: 10,000 people, each with a card."""
    office = site.api("campus.office")
    base = new_card_no()
    for _ in range(10_000):
        new_card_no()
    rows = [HEADER] + [[f"BIG-{i}", f"Student {i}", "Demo Campus/Physics", "student",
                        f"1390000{i:04d}", base + i, f"P{i}", "", "", "2030-06-30"]
                       for i in range(10_000)]
    data = to_csv(rows)
    before = counts(site)
    started = time.perf_counter()
    r = upload(office, data)
    seconds = time.perf_counter() - started
    assert r.status_code == 200, r.text[:2000]
    assert r.json()["people_created"] == 10_000 and r.json()["cards_issued"] == 10_000
    after = counts(site)
    assert {t: after[t] - before[t] for t in TABLES} == {
        "people": 10_000, "accounts": 10_000, "cards": 10_000, "audit_log": 20_000,
        "change_outbox": 20_000}
    print(f"\nimport of 10,000 rows with cards: {seconds:.2f} s ({len(data)} bytes of CSV)")
    assert seconds < 120


# -- bulk operations ---------------------------------------------------------------------------


def _people(site: AdminSite, api: Api, n: int, node: int | str, tag: str) -> list[int]:
    rows = [["external_id", "name", "node", "class", "card_no"]] + [
        [f"{tag}-{i}", f"{tag} {i}", node, "student", new_card_no()] for i in range(n)]
    r = upload(api, to_csv(rows))
    assert r.status_code == 200, r.text
    return [p["person_id"] for p in r.json()["people"]]


def _statuses(site: AdminSite, ids: list[int]) -> list[int]:
    rows = site.fetch("SELECT a.status FROM people p JOIN accounts a ON a.id = p.account_id"
                      " WHERE p.id = ANY($1::integer[]) ORDER BY p.id", ids)
    return [r["status"] for r in rows]


def test_bulk_report_loss_and_unfreeze_are_all_or_nothing(site: AdminSite) -> None:
    office = site.api("campus.office")
    ids = _people(site, office, 4, "Demo Campus/Physics", "BULK")
    office.ok("POST", "/people/bulk/report-loss", {"person_ids": [ids[0]]})
    top = site.fetch("SELECT coalesce(max(id), 0) AS n FROM change_outbox")[0]["n"]
    out = office.ok("POST", "/people/bulk/report-loss", {"person_ids": ids[:3]})
    assert (out["selected"], sorted(out["changed"]), out["unchanged"]) == (
        3, sorted(ids[1:3]), [ids[0]])
    assert _statuses(site, ids) == [2, 2, 2, 0]
    events = site.fetch("SELECT kind, payload FROM change_outbox WHERE id > $1 ORDER BY id", top)
    assert [e["kind"] for e in events] == ["account_status_changed"] * 2
    trail = site.api().ok("GET", f"/audit?entity=person&entity_id={ids[1]}&action="
                                 "person.report_loss")["items"]
    assert len(trail) == 1 and trail[0]["before"]["account_status"] == "active"
    assert trail[0]["after"]["account_status"] == "lost"

    # One closed account in the selection: nothing changes, the answer names it.
    site.fetch("UPDATE accounts SET status = 3 FROM people p WHERE p.account_id = accounts.id"
               " AND p.id = $1", ids[3])
    before = counts(site)
    r = office.post("/people/bulk/unfreeze", {"person_ids": ids})
    assert r.status_code == 409, r.text
    assert [e["field"] for e in r.json()["errors"]] == [f"person {ids[3]}"]
    assert counts(site) == before and _statuses(site, ids) == [2, 2, 2, 3]
    # A person of another tenant (or none at all): 404, naming the entries, nothing changes.
    east = site.api().ok("POST", "/people", {"node_id": site.tenant_node(2), "name": "East",
                                             "class_id": 2})
    before = counts(site)
    r = office.post("/people/bulk/unfreeze", {"person_ids": [ids[0], east["id"], 99_999_999]})
    assert r.status_code == 404, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["person_ids[1]", "person_ids[2]"]
    assert counts(site) == before

    # By filter: everyone lost in Physics (and below) is unfrozen.
    physics = site.fetch("SELECT id FROM org_nodes WHERE name = 'Physics'")[0]["id"]
    out = office.ok("POST", "/people/bulk/unfreeze",
                    {"filter": {"node_id": physics, "account_status": "lost"}})
    assert set(ids[:3]) <= set(out["changed"]) and out["unchanged"] == []
    assert _statuses(site, ids) == [0, 0, 0, 3]
    assert office.post("/people/bulk/unfreeze", {"filter": {"node_id": site.tenant_node(2)}}
                       ).status_code == 404
    assert office.post("/people/bulk/unfreeze", {}).status_code == 422
    assert office.post("/people/bulk/unfreeze", {"person_ids": [ids[0]], "filter": {
        "node_id": physics}}).status_code == 422
    cashier = site.api("campus.cashier")
    assert cashier.post("/people/bulk/report-loss", {"person_ids": ids[:1]}).status_code == 403


def test_bulk_move_stays_in_the_tenant(site: AdminSite) -> None:
    office = site.api("campus.office")
    ids = _people(site, office, 3, "Demo Campus", "MOVE")
    class3 = site.fetch("SELECT id, path FROM org_nodes WHERE name = 'Class 3'")[0]
    out = office.ok("POST", "/people/bulk/move", {"person_ids": ids[:2], "node_id": class3["id"]})
    assert sorted(out["changed"]) == sorted(ids[:2])
    assert office.ok("GET", f"/people/{ids[0]}")["node_id"] == class3["id"]
    again = office.ok("POST", "/people/bulk/move", {"person_ids": ids[:2],
                                                    "node_id": class3["id"]})
    assert again["changed"] == [] and sorted(again["unchanged"]) == sorted(ids[:2])
    [row] = site.fetch("SELECT node_path FROM audit_log WHERE action = 'person.move'"
                       " AND entity_id = $1", str(ids[0]))
    assert set(row["node_path"]) == {*class3["path"]}, "old path and new path's nodes"
    root = site.api()
    before = counts(site)
    r = root.post("/people/bulk/move", {"person_ids": ids, "node_id": site.tenant_node(2)})
    assert r.status_code == 409 and len(r.json()["errors"]) == 3, r.text
    assert counts(site) == before


def _classes(site: AdminSite, ids: list[int]) -> list[tuple[int, int]]:
    """(people.class_id, accounts.class_id) of each person, by id: they always agree."""
    rows = site.fetch("SELECT p.class_id AS p, a.class_id AS a FROM people p"
                      " JOIN accounts a ON a.id = p.account_id"
                      " WHERE p.id = ANY($1::integer[]) ORDER BY p.id", ids)
    return [(r["p"], r["a"]) for r in rows]


def test_a_person_changes_class_audited_and_on_the_change_feed(site: AdminSite) -> None:
    office = site.api("campus.office")
    [pid] = _people(site, office, 1, "Demo Campus/Physics", "CLASS")
    account_id = office.ok("GET", f"/people/{pid}")["account_id"]
    top = site.fetch("SELECT coalesce(max(id), 0) AS n FROM change_outbox")[0]["n"]
    out = office.ok("POST", f"/people/{pid}/class", {"class_id": 3}, 200)
    assert (out["id"], out["class_id"]) == (pid, 3)
    assert office.ok("GET", f"/people/{pid}") == out
    assert _classes(site, [pid]) == [(3, 3)]
    events = site.fetch("SELECT kind, payload::text AS p FROM change_outbox WHERE id > $1",
                        top)
    assert [(e["kind"], e["p"]) for e in events] == [
        ("account_class_changed", f'{{"class_id": 3, "account_id": {account_id}}}')]
    [trail] = site.api().ok("GET", f"/audit?entity=person&entity_id={pid}"
                                   "&action=person.set_class")["items"]
    assert (trail["before"]["class_id"], trail["after"]["class_id"]) == (1, 3)
    assert trail["username"] == "campus.office"
    # Already in that class: nothing written, nothing audited.
    before = counts(site)
    assert office.ok("POST", f"/people/{pid}/class", {"class_id": 3}) == out
    assert counts(site) == before
    # Refused, nothing changed: a class that does not exist, one out of range, a person
    # outside the caller's subtree, a caller without people.write.
    r = office.post(f"/people/{pid}/class", {"class_id": 99})
    assert r.status_code == 422 and "no identity class 99" in r.text, r.text
    r = office.post(f"/people/{pid}/class", {"class_id": 0})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "class_id", r.text
    assert counts(site) == before
    east = site.api().ok("POST", "/people", {"node_id": site.tenant_node(2), "name": "East C",
                                             "class_id": 2})
    before = counts(site)
    assert office.post(f"/people/{east['id']}/class", {"class_id": 3}).status_code == 404
    assert site.api("campus.cashier").post(f"/people/{pid}/class",
                                           {"class_id": 2}).status_code == 403
    assert counts(site) == before and _classes(site, [pid, east["id"]]) == [(3, 3), (2, 2)]


def test_bulk_class_is_all_or_nothing(site: AdminSite) -> None:
    office = site.api("campus.office")
    ids = _people(site, office, 3, "Demo Campus/Physics/Class 3", "BCLASS")
    office.ok("POST", f"/people/{ids[0]}/class", {"class_id": 2})
    top = site.fetch("SELECT coalesce(max(id), 0) AS n FROM change_outbox")[0]["n"]
    out = office.ok("POST", "/people/bulk/class", {"person_ids": ids, "class_id": 2})
    assert (out["action"], out["selected"], sorted(out["changed"]), out["unchanged"]) == (
        "person.set_class", 3, sorted(ids[1:]), [ids[0]])
    assert _classes(site, ids) == [(2, 2)] * 3
    events = site.fetch("SELECT kind FROM change_outbox WHERE id > $1", top)
    assert [e["kind"] for e in events] == ["account_class_changed"] * 2
    # By filter: everyone of class 2 in Class 3 becomes a visitor (3).
    class3 = site.fetch("SELECT id FROM org_nodes WHERE name = 'Class 3'")[0]["id"]
    out = office.ok("POST", "/people/bulk/class",
                    {"filter": {"node_id": class3, "class_id": 2}, "class_id": 3})
    assert set(ids) <= set(out["changed"])
    assert _classes(site, ids) == [(3, 3)] * 3
    # One person outside the subtree, or a class that does not exist: nothing changes.
    east = site.api().ok("POST", "/people", {"node_id": site.tenant_node(2), "name": "East B",
                                             "class_id": 2})
    before = counts(site)
    r = office.post("/people/bulk/class", {"person_ids": [*ids, east["id"]], "class_id": 1})
    assert r.status_code == 404, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["person_ids[3]"]
    r = office.post("/people/bulk/class", {"person_ids": ids, "class_id": 77})
    assert r.status_code == 422, r.text
    assert office.post("/people/bulk/class", {"class_id": 1}).status_code == 422
    assert site.api("campus.cashier").post("/people/bulk/class", {
        "person_ids": ids, "class_id": 1}).status_code == 403
    assert counts(site) == before and _classes(site, ids) == [(3, 3)] * 3


# -- bad files: bounded, refused clearly, nothing written ------------------------------------------

_SHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"


def _with_parts(data: bytes, parts: dict[str, bytes | int]) -> bytes:
    """The workbook with `parts` replaced or added (shared strings declared, so that openpyxl
    reads them); an int is a shared strings part of one string that many bytes long, written
    a MiB at a time (a zip bomb: it compresses about 1000:1)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            content = src.read(info)
            if info.filename == "[Content_Types].xml" and "xl/sharedStrings.xml" in parts:
                content = content.replace(b"</Types>", b'<Override PartName="/xl/sharedStrings'
                                          b'.xml" ContentType="application/vnd.openxmlformats-'
                                          b'officedocument.spreadsheetml.sharedStrings+xml"/>'
                                          b"</Types>")
            if info.filename not in parts:
                z.writestr(info, content)
        for name, part in parts.items():
            if isinstance(part, bytes):
                z.writestr(name, part)
                continue
            with z.open(name, "w", force_zip64=True) as f:
                f.write(f'<sst xmlns="{_SHEET_NS}"><si><t>'.encode())
                for _ in range(part >> 20):
                    f.write(b"A" * (1 << 20))
                f.write(b"</t></si></sst>")
    return out.getvalue()


def _declaring(data: bytes, name: str, size: int) -> bytes:
    """The zip with `name`'s central directory entry claiming it unpacks to `size` bytes."""
    patched = bytearray(data)
    at = patched.find(b"PK\x01\x02")
    while at >= 0:
        name_length = struct.unpack_from("<H", patched, at + 28)[0]
        if patched[at + 46:at + 46 + name_length] == name.encode():
            struct.pack_into("<I", patched, at + 24, size)
        at = patched.find(b"PK\x01\x02", at + 4)
    return bytes(patched)


def _sheet(rows: str) -> bytes:
    """A worksheet that declares the whole grid as used (XFD1048576)."""
    return (f'<worksheet xmlns="{_SHEET_NS}"><dimension ref="A1:XFD1048576"/><sheetData>{rows}'
            "</sheetData></worksheet>").encode()


def _cell(ref: str, text: object) -> str:
    return f'<c r="{ref}" t="inlineStr"><is><t>{text}</t></is></c>'


def test_zip_bombs_and_huge_grids_are_refused_quickly_and_write_nothing(site: AdminSite
                                                                        ) -> None:
    office = site.api("campus.office")
    base = to_xlsx([["name", "node", "class"], ["Ann", "Demo Campus", "student"]])
    before = counts(site)

    # 250 MiB of shared strings in 250 KiB: refused from the sizes the zip declares, unread.
    bomb = _with_parts(base, {"xl/sharedStrings.xml": 250 << 20})
    assert len(bomb) < 1 << 20
    started = time.monotonic()
    r = upload(office, bomb, "bomb.xlsx", dry_run="true")
    assert r.status_code == 413 and "unpacks to" in r.json()["detail"], r.text
    assert time.monotonic() - started < 10
    # The same part claiming to unpack to 1,000 bytes: unpacking stops there and the CRC fails.
    liar = _declaring(_with_parts(base, {"xl/sharedStrings.xml": 100 << 20}),
                      "xl/sharedStrings.xml", 1000)
    started = time.monotonic()
    r = upload(office, liar, "liar.xlsx")
    assert r.status_code == 422 and "CRC" in r.json()["errors"][0]["message"], r.text
    assert time.monotonic() - started < 10

    # A declared XFD1048576 grid and a row at the very bottom: rows are read 32 cells wide
    # (a cell far right is not read), and the blank rows between cost little.
    rows = (f'<row r="1">{_cell("A1", "name")}{_cell("B1", "node")}{_cell("C1", "class")}</row>'
            f'<row r="2">{_cell("A2", "Ann")}{_cell("B2", "Demo Campus")}{_cell("C2", "2")}'
            f'{_cell("XFD2", "far right")}</row>')
    started = time.monotonic()
    r = upload(office, _with_parts(base, {"xl/worksheets/sheet1.xml": _sheet(
        rows + f'<row r="1048576">{_cell("A1048576", "Bottom")}</row>')}), "grid.xlsx",
        dry_run="true")
    assert r.status_code == 422, r.text
    assert {(e["row"], e["column"]) for e in r.json()["errors"]} == {
        (1048576, "node"), (1048576, "class")}
    # One row further is past any spreadsheet: refused.
    r = upload(office, _with_parts(base, {"xl/worksheets/sheet1.xml": _sheet(
        rows + f'<row r="1048577">{_cell("A1048577", "Below")}</row>')}), "grid.xlsx")
    assert r.status_code == 413 and "1048576 lines" in r.json()["detail"], r.text
    assert time.monotonic() - started < 30
    assert counts(site) == before


def test_unicode_digits_control_characters_and_taken_numbers(site: AdminSite) -> None:
    """`²` is a digit to str.isdigit() (and then not a number to int()): a row error, never a
    500. A NUL that PostgreSQL would refuse is refused by the check itself, so the dry run
    answers as the import does. A card number or chip UID that is taken is refused with the
    same words whichever tenant has it."""
    office = site.api("campus.office")
    root = site.api()
    ours = root.ok("POST", "/people", {"node_id": site.tenant_node(1), "name": "Ours",
                                       "class_id": 2})
    theirs = root.ok("POST", "/people", {"node_id": site.tenant_node(2), "name": "Theirs",
                                         "class_id": 2})
    our_card, their_card = new_card_no(), new_card_no()
    root.ok("POST", f"/people/{ours['id']}/cards", {"card_no": our_card, "chip_uid": "0A0A0A0A"})
    root.ok("POST", f"/people/{theirs['id']}/cards", {"card_no": their_card,
                                                      "chip_uid": "0B0B0B0B"})
    data = to_csv([
        HEADER,
        ["", "Square", "Demo Campus", "student", "", "²", "", "", "", ""],  # row 2
        ["", "Arabic", "Demo Campus", "student", "", "٣٤٥", "", "", "", ""],  # 3
        ["", "Nul\x00Name", "Demo Campus", "student", "", "", "", "", "", ""],  # 4
        ["", "Bell", "Demo Campus", "student", "", new_card_no(), "P\x07", "", "", ""],  # 5
        ["", "Ours", "Demo Campus", "student", "", our_card, "", "", "", ""],  # 6
        ["", "Theirs", "Demo Campus", "student", "", their_card, "", "", "", ""],  # 7
        ["", "Our Chip", "Demo Campus", "student", "", new_card_no(), "", "0a0a0a0a", "",
         ""],  # 8
        ["", "Their Chip", "Demo Campus", "student", "", new_card_no(), "", "0b0b0b0b", "",
         ""],  # 9
        ["", "Superscript Node", "²", "student", "", "", "", "", "", ""],  # 10
    ])
    before = counts(site)
    answers = [upload(office, data, dry_run="true"), upload(office, data)]
    for r in answers:
        assert r.status_code == 422, r.text
    dry, real = (r.json()["errors"] for r in answers)
    assert dry == real, "the dry run answers as the import"
    messages = {(e["row"], e["column"]): e["message"] for e in real}
    assert set(messages) == {(2, "card_no"), (3, "card_no"), (4, "name"), (5, "printed_no"),
                             (6, "card_no"), (7, "card_no"), (8, "chip_uid"), (9, "chip_uid"),
                             (10, "node")}, real
    assert messages[(4, "name")] == "a control character (U+0000) is not allowed"
    assert messages[(5, "printed_no")] == "a control character (U+0007) is not allowed"
    assert messages[(6, "card_no")].replace(str(our_card), "N") == \
        messages[(7, "card_no")].replace(str(their_card), "N")
    assert messages[(8, "chip_uid")].replace("0A0A0A0A", "X") == \
        messages[(9, "chip_uid")].replace("0B0B0B0B", "X")
    assert counts(site) == before
    # Issuing one card by hand says the same words (409), for a chip UID too.
    r = root.post(f"/people/{ours['id']}/cards", {"card_no": their_card})
    assert r.status_code == 409 and r.json()["detail"] == messages[(7, "card_no")]
    r = root.post(f"/people/{ours['id']}/cards", {"card_no": new_card_no(),
                                                  "chip_uid": "0B0B0B0B"})
    assert r.status_code == 409 and r.json()["detail"] == messages[(9, "chip_uid")]
