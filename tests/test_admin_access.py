"""Every route of the OpenAPI document, called by every role from a foreign subtree: no leak.

The objects asked for (a person, a card, a node, a log-in) belong to tenant 1; the callers are
bound to tenant 2, or are a cardholder and a parent of tenant 2. Whatever a route answers, it
is never a 500, never a change to tenant 1, and never tenant 1's data: a 2xx body holds none of
the canaries (the person's name, the card's number, the node's name).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from admin_api import ROLES
from admin_api._routes_integration import SCOPES
from tests.admin_site import PASSWORD, AdminSite, Api, new_card_no, tiny_png

CANARY_NAME = "Canary Zhang"
CANARY_NODE = "Canary Department"
CANARY_MERCHANT = "Canary Canteen"
CANARY_TERMINAL = "Canary POS"
CANARY_DOOR = "Canary Door"
CANARY_VISITOR = "Canary Visitor"
CANARY_TEMPLATE = "Q2FuYXJ5VGVtcGxhdGVCeXRlcw=="  # base64 of b"CanaryTemplateBytes"


@pytest.fixture(scope="module")
def walk_site(pg_server: Any, migrated_template: str) -> Iterator[dict[str, Any]]:
    site = AdminSite(pg_server.new_database(template=migrated_template))
    site.start_admin()
    root = site.api()
    campus, east = site.tenant_node(1), site.tenant_node(2)
    dept = root.ok("POST", "/org/nodes", {"parent_id": campus, "kind": "department",
                                          "name": CANARY_NODE})
    person = root.ok("POST", "/people", {"node_id": dept["id"], "name": CANARY_NAME,
                                         "class_id": 2, "external_id": "CANARY"})
    card_no = new_card_no()
    root.ok("POST", f"/people/{person['id']}/cards", {"card_no": card_no})
    document = root.ok("POST", "/documents", {"doc_type": "subsidy_batch",
                                              "title": "Canary subsidy",
                                              "lines": [{"person_id": person["id"],
                                                         "amount_fen": 100}]})
    root.ok("POST", f"/documents/{document['id']}/submit", {})
    target_user = root.ok("POST", "/users", {"username": "campus.office", "password": PASSWORD,
                                             "role": "card_office", "node_id": campus})
    # At the tenant node, not the canary department: its own changes are counted below.
    merchant = root.ok("POST", "/merchants", {"node_id": campus, "name": CANARY_MERCHANT,
                                              "mode": "fixed", "fixed_amount_fen": 700})
    terminal = root.ok("POST", f"/merchants/{merchant['id']}/terminals",
                       {"kind": "pos", "name": CANARY_TERMINAL})["terminal"]
    east_person = root.ok("POST", "/people", {"node_id": east, "name": "East Person",
                                              "class_id": 2})
    access = _access_objects(site, root, campus, merchant["id"], person["id"])
    key = root.ok("POST", "/api-keys", {"node_id": campus, "name": "Campus HR",
                                        "scopes": list(SCOPES)})
    # A reconciliation exception of tenant 1 (a bank line nobody here knows).
    exception_id = site.fetch(
        "WITH f AS (INSERT INTO bank_files (tenant_id, business_date, file_sha256, lines_count,"
        " total_fen, matched, ours_only, bank_only, amount_differs, imported_by) VALUES"
        " (1, '2020-01-02', '\\x00', 1, 700, 0, 0, 1, 0, 'walk') RETURNING id)"
        " INSERT INTO reconciliation_exceptions (file_id, tenant_id, node_path, business_date,"
        " kind, rrn, bank_amount_fen, our_amount_fen) SELECT f.id, 1, n.path, '2020-01-02',"
        " 'bank_only', 'WALK1', 700, 0 FROM f, org_nodes n WHERE n.id = $1 RETURNING id",
        campus)[0]["id"]
    # A bank exception of tenant 1 (the switch's document for an advice the bank never
    # acknowledged), naming the canary's card.
    bank_exception_id = site.fetch(
        "WITH bc AS (INSERT INTO bank_cards (tenant_id, account_id, pan_masked, bank_token)"
        " SELECT 1, account_id, '622202******0128', 'WALK' FROM cards WHERE card_no = $1"
        " RETURNING id, account_id),"
        " t AS (INSERT INTO bank_topups (tenant_id, terminal_id, txn_seq, account_id, card_no,"
        " bank_card_id, amount_fen, stan, rrn, state) SELECT 1, 70000001, 1, bc.account_id,"
        " $1, bc.id, 500, 1, 'WALKBANK1', 'exception' FROM bc RETURNING id),"
        " d AS (INSERT INTO documents (tenant_id, node_id, node_path, doc_type, title, reason,"
        " status, levels, total_fen, lines_count, submitted_at, bank_topup_id) SELECT 1, n.id,"
        " n.path, 'bank_exception', 'Bank reversal not acknowledged', 'walk', 'submitted', 1,"
        " 500, 0, now(), t.id FROM t, org_nodes n WHERE n.id = $2 RETURNING id, bank_topup_id)"
        " INSERT INTO bank_advices (topup_id, tenant_id, reason, state, tries, document_id)"
        " SELECT bank_topup_id, 1, 'timeout', 'exception', 2, id FROM d RETURNING document_id",
        card_no, campus)[0]["document_id"]
    # A top-up of the canary's card the switch refused itself (yesterday: the finance list's
    # default day).
    site.fetch("INSERT INTO bank_topup_refusals (tenant_id, terminal_id, txn_seq, account_id,"
               " card_no, amount_fen, code, created_at) SELECT 1, 70000001, 2, account_id, $1,"
               " 500, 1, now() - interval '1 day' FROM cards WHERE card_no = $1", card_no)
    callers: dict[str, Api] = {}
    for role in ROLES:
        body: dict[str, Any] = {"username": f"east.{role.replace('_', '-')}",
                                "password": PASSWORD, "role": role, "node_id": east}
        if role == "platform_admin":
            continue  # a platform admin sees everything by design; nobody foreign to it
        if role == "cardholder":
            body["person_id"] = east_person["id"]
        if role == "parent":
            body["children"] = [east_person["id"]]
        root.ok("POST", "/users", body)
        callers[role] = site.api(body["username"])
    # An API key of the other tenant with every scope a key may have: role "integration".
    east_key = root.ok("POST", "/api-keys", {"node_id": east, "name": "East HR",
                                             "scopes": list(SCOPES)})["key"]
    callers["integration"] = site.api(None)
    callers["integration"].http.headers["X-Api-Key"] = east_key
    try:
        yield {"key": key["api_key"], "key_secret": key["key"],
               "site": site, "callers": callers, "person": person, "card_no": card_no,
               "node": dept, "user": target_user, "merchant": merchant, "terminal": terminal,
               "document": document, "exception_id": exception_id, "access": access,
               "bank_exception_id": bank_exception_id,
               "canaries": [CANARY_NAME, CANARY_NODE, str(card_no), CANARY_MERCHANT,
                            CANARY_TERMINAL, CANARY_DOOR, CANARY_VISITOR, CANARY_TEMPLATE,
                            CANARY_TEMPLATE[:12]]}
    finally:
        site.close()


def _access_objects(site: AdminSite, root: Api, campus: int, merchant_id: int,
                    person_id: int) -> dict[str, Any]:
    """Tenant 1's access objects, at its own node (the canary department's count of changes
    stays the set-up's six): one of each kind a route names."""
    area = root.ok("POST", "/access/areas", {"node_id": campus, "name": "Canary Hall"})
    door = root.ok("POST", "/access/doors", {"node_id": campus, "name": CANARY_DOOR,
                                             "area_id": area["id"]})
    door2 = root.ok("POST", "/access/doors", {"node_id": campus, "name": "Canary back door"})
    door_terminal = root.ok("POST", f"/merchants/{merchant_id}/terminals",
                            {"kind": "door", "name": "Canary door controller"})["terminal"]
    root.ok("POST", "/access/readers", {"terminal_id": door_terminal["id"], "reader_no": 1,
                                        "door_id": door["id"]})
    group = root.ok("POST", "/access/door-groups", {"node_id": campus, "name": "Canary group",
                                                    "door_ids": [door["id"]]})
    calendar = root.ok("POST", "/access/holiday-calendars", {"node_id": campus,
                                                              "name": "Canary holidays"})
    tz = root.ok("POST", "/access/time-zones", {
        "node_id": campus, "name": "Canary hours", "holiday_calendar_id": calendar["id"],
        "intervals": [{"day": 0, "start_minute": 480, "end_minute": 1080}]})
    grant = root.ok("POST", "/access/grants", {"door_group_id": group["id"],
                                               "person_id": person_id})
    root.ok("POST", f"/access/areas/{area['id']}/plan",  # the e-map's plan, walked too
            {"image": base64.b64encode(tiny_png()).decode()})
    lockdown = root.ok("POST", "/access/lockdowns", {"node_id": campus, "area_id": area["id"],
                                                     "reason": "canary drill"})
    host = root.ok("POST", "/people", {"node_id": campus, "name": "Canary Host", "class_id": 2})
    visitor = root.ok("POST", "/visitors", {
        "host_person_id": host["id"], "name": CANARY_VISITOR, "door_ids": [door["id"]],
        "valid_until": (dt.datetime.now(dt.UTC) + dt.timedelta(hours=4)).isoformat()})
    route = root.ok("POST", "/patrol/routes", {"node_id": campus, "name": "Canary round",
                                               "checkpoints": [{"door_id": door["id"],
                                                                "offset_s": 0}]})
    alarm_id = site.fetch("INSERT INTO access_alarms (tenant_id, kind, door_id, detail)"
                          " VALUES (1, 'forced_open', $1, 'canary') RETURNING id",
                          door["id"])[0]["id"]
    # A template of the canary person (its audit row is the canary node's sixth change) and
    # an ADMS device of tenant 1 with a command queued for it.
    biometric = root.ok("POST", f"/people/{person_id}/biometrics",
                        {"bio_type": 1, "data": CANARY_TEMPLATE})
    root.ok("POST", "/adms/devices", {"serial_no": "CANARY0001", "node_id": campus})
    root.ok("POST", "/adms/devices/CANARY0001/sync", {})
    door_command = root.ok("POST", f"/access/doors/{door['id']}/commands",
                           {"action": "normal", "note": "canary"})
    return {"door_command": door_command, "area": area, "door": door, "door2": door2,
            "group": group, "calendar": calendar, "tz": tz, "grant": grant, "lockdown": lockdown,
            "visitor": visitor, "route": route,
            "alarm_id": alarm_id, "door_terminal": door_terminal, "host": host,
            "biometric": biometric}


def _routes(site: AdminSite) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) with the operation's body schema's field names in "fields"."""
    doc = site.api(None).ok("GET", "/docs/openapi.json")
    schemas = doc["components"]["schemas"]
    out = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                content = op.get("requestBody", {}).get("content", {})
                op["multipart"] = "multipart/form-data" in content
                body = content.get("application/json", {})
                ref = body.get("schema", {}).get("$ref", "")
                schema = schemas[ref.rsplit("/", 1)[1]] if ref else {}
                op["fields"] = list(schema.get("properties", {}))
                out.append((method.upper(), path, op))
    return out


def _fill(path: str, w: dict[str, Any]) -> str:
    values = {"person_id": w["person"]["id"], "card_no": w["card_no"],
              "node_id": w["node"]["id"], "user_id": w["user"]["id"], "class_id": 2,
              "merchant_id": w["merchant"]["id"], "terminal_id": w["terminal"]["id"],
              "tenant_id": 1, "doc_id": w["document"]["id"], "day": "2026-01-01",
              "business_date": "2020-01-01", "exception_id": w["exception_id"],
              "bank_exception_id": w["bank_exception_id"]}
    values["key_id"] = w["key"]["id"]  # tenant 1's API key
    a = w["access"]
    values.update(area_id=a["area"]["id"], door_id=a["door"]["id"], group_id=a["group"]["id"],
                  time_zone_id=a["tz"]["id"], calendar_id=a["calendar"]["id"],
                  grant_id=a["grant"]["id"], lockdown_id=a["lockdown"]["id"],
                  alarm_id=a["alarm_id"], visitor_id=a["visitor"]["id"],
                  route_id=a["route"]["id"], biometric_id=a["biometric"]["id"],
                  serial_no="CANARY0001", command_id=a["door_command"]["id"])
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), path)


def _body(w: dict[str, Any], op: dict[str, Any]) -> dict[str, Any] | None:
    """A valid body for the route's schema, aimed at tenant 1's objects."""
    if not op["fields"]:
        return None
    values = {"node_id": w["node"]["id"], "parent_id": w["node"]["id"], "kind": "department",
              "name": "x", "class_id": 2, "card_no": new_card_no(), "username": "intruder",
              "password": PASSWORD, "role": "card_office",
              "old_password": "not the password", "new_password": "a new long passphrase",
              "new_card": {"card_no": new_card_no()}, "template_id": "t-1", "windows": [],
              "locale": "en"}
    values.update(scopes=["events.read"], person_ids=[w["person"]["id"]], people=[
        {"external_id": "CANARY-2", "name": "x", "node_id": w["node"]["id"], "class_id": 2}])
    values.update(doc_type="refund", title="x", lines=[{"person_id": w["person"]["id"],
                                                        "amount_fen": 100}],
                  amount_fen=100, from_wallet="main", comment="", levels=1, cutover="22:00",
                  action="write_off")
    a = w["access"]
    door_id = a["door"]["id"]
    values.update(door_ids=[door_id, a["door2"]["id"]], door_id=door_id, area_id=a["area"]["id"],
                  door_group_id=a["group"]["id"], terminal_id=a["door_terminal"]["id"],
                  reader_no=2, floors=[], intervals=[], holidays=[], note="x",
                  person_id=w["person"]["id"], host_person_id=w["person"]["id"],
                  guard_person_id=w["person"]["id"], serial_no="WALK0001", pin="4321",
                  bio_type=1, data="V2Fsaw==", full=True,
                  checkpoints=[{"door_id": door_id, "offset_s": 0}],
                  alarm_ids=[a["alarm_id"]])
    # The e-map: a floor plan (another than tenant 1's) and a door's place on it.
    values.update(image=base64.b64encode(tiny_png(rgb=(1, 2, 3))).decode(), x=1200, y=3400)
    if "host_person_id" in op["fields"]:  # a visitor pass: a time, not a card's date
        values["valid_until"] = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    if "door_group_id" in op["fields"]:  # a grant: floors is a mask, and one subject
        values.pop("floors")
        values.pop("class_id")
    if "mode_time_zone_id" in op["fields"]:  # a door's, or its mode
        values.update(kind="door", mode="normal")
    values.update(pin="135790", pan="6222021234567890128", bank_token="WALK",
                  auto_threshold_fen=1_000, auto_amount_fen=2_000, enabled=False)
    if "template_id" in op["fields"]:
        values["kind"] = "face"
    if "settlement_cycle" in op["fields"]:
        values["kind"] = "canteen"  # a merchant's
    if set(op["fields"]) == {"action", "open_ms", "note"}:
        values["action"] = "open_once"  # a door command's
    if set(op["fields"]) == {"kind", "name"}:
        values["kind"] = "pos"  # a terminal's
    return {f: values[f] for f in op["fields"] if f in values}


def _streams(op: dict[str, Any]) -> bool:
    return any("text/event-stream" in (r.get("content") or {})
               for r in op.get("responses", {}).values())


def _request(api: Api, method: str, url: str, w: dict[str, Any], op: dict[str, Any]
             ) -> httpx.Response:
    if _streams(op):  # a live stream: its status and its first event (the snapshot) only
        with api.http.stream(method, url, timeout=30) as r:
            first = b""
            for chunk in r.iter_bytes():  # an error's body ends; a stream's first event
                first += chunk
                if r.status_code < 300 and (b"\n\n" in first or b"\r\n\r\n" in first):
                    break
        return httpx.Response(r.status_code, headers=r.headers, content=first)
    if op["multipart"]:  # a file upload (the import): one row aimed at tenant 1's node
        csv = f"name,node,class,card_no\nIntruder,{w['node']['id']},2,{new_card_no()}\n"
        return api.http.request(method, url, files={"file": ("people.csv", csv.encode())})
    # Every money request carries an Idempotency-Key; the others ignore it.
    return api.http.request(method, url, json=_body(w, op),
                            headers={"Idempotency-Key": f"walk-{new_card_no()}"})


def test_every_route_with_every_role_from_a_foreign_subtree_leaks_nothing(
        walk_site: dict[str, Any]) -> None:
    site: AdminSite = walk_site["site"]
    routes = _routes(site)
    assert len(routes) >= 25
    outbox_before = site.fetch("SELECT count(*) AS n FROM change_outbox")[0]["n"]
    merchant_audit = "SELECT count(*) AS n FROM audit_log WHERE entity IN ('merchant', 'terminal')"
    merchants_before = site.fetch(merchant_audit)[0]["n"]
    windows_before = site.api().ok("GET", "/tenants/1/meal-windows")

    def walk(role: str, api: Api) -> None:
        for method, path, op in routes:
            if path in ("/auth/logout", "/auth/login"):
                continue  # would end the caller's own session, or is public: tested elsewhere
            url = _fill(path, walk_site)
            r = _request(api, method, url, walk_site, op)
            assert r.status_code != 500, (role, method, url, r.text)
            assert r.status_code != 400, (role, method, url, "the walk's body is wrong", r.text)
            if r.status_code < 300:
                for canary in walk_site["canaries"]:
                    assert canary not in r.text, (role, method, url, "leaked", canary)
                assert walk_site["key_secret"] not in r.text, (role, method, url, "key leaked")
            else:
                assert r.headers["content-type"].startswith("application/problem+json")

    # The roles walk at the same time (each its own client and session; each writes only in
    # its own subtree): what one role's request changes must not open tenant 1 to another's.
    with ThreadPoolExecutor(max_workers=len(walk_site["callers"])) as pool:
        for done in [pool.submit(walk, role, api) for role, api in walk_site["callers"].items()]:
            done.result()
    # Nothing of tenant 1 changed: its person, card and node are as they were.
    root = site.api()
    assert root.ok("GET", f"/cards/{walk_site['card_no']}")["account_status"] == "active"
    assert root.ok("GET", f"/people/{walk_site['person']['id']}")["name"] == CANARY_NAME
    [key] = [k for k in root.ok("GET", "/api-keys") if k["id"] == walk_site["key"]["id"]]
    assert key["revoked_at"] is None, "tenant 1's API key"
    changed = site.fetch("SELECT count(*) AS n FROM audit_log WHERE $1 = ANY(node_path)",
                         walk_site["node"]["id"])[0]["n"]
    assert changed == 6, "only the set-up's own six changes touch the canary's node"
    document = root.ok("GET", f"/documents/{walk_site['document']['id']}")
    assert (document["status"], document["approved_levels"]) == ("submitted", 0)
    assert root.ok("GET", f"/merchants/{walk_site['merchant']['id']}") == walk_site["merchant"]
    shown = root.ok("GET", f"/terminals/{walk_site['terminal']['id']}")
    assert {k: shown[k] for k in walk_site["terminal"]} == walk_site["terminal"]
    assert root.ok("GET", "/tenants/1/meal-windows") == windows_before
    assert site.fetch("SELECT document_id FROM reconciliation_exceptions WHERE id = $1",
                      walk_site["exception_id"])[0]["document_id"] is None
    assert site.fetch("SELECT count(*) AS n FROM bank_files")[0]["n"] == 1
    bank_exception = site.fetch(
        "SELECT d.status, d.version, t.state, (SELECT count(*) FROM bank_exception_resolutions r"
        " WHERE r.document_id = d.id) AS chosen FROM documents d JOIN bank_topups t"
        " ON t.id = d.bank_topup_id WHERE d.id = $1", walk_site["bank_exception_id"])[0]
    assert tuple(bank_exception) == ("submitted", 1, "exception", 0)
    # Nor any access object of tenant 1.
    a = walk_site["access"]
    assert root.ok("GET", f"/access/doors/{a['door']['id']}") == a["door"]
    assert [r["sha256"] for r in site.fetch(  # the e-map: plan and places as they were
        "SELECT sha256 FROM access_area_plans WHERE tenant_id = 1")] == [
        hashlib.sha256(tiny_png()).hexdigest()]
    assert not site.fetch("SELECT 1 FROM doors WHERE tenant_id = 1 AND map_x IS NOT NULL")
    assert root.ok("GET", f"/visitors/{a['visitor']['id']}")["status"] == "active"
    assert [g["id"] for g in root.ok("GET", f"/access/grants?person_id={walk_site['person']['id']}")
            ] == [a["grant"]["id"]]
    [lockdown] = [x for x in root.ok("GET", "/access/lockdowns") if x["id"] == a["lockdown"]["id"]]
    assert lockdown["ended_at"] is None
    alarm = site.fetch("SELECT state, note FROM access_alarms WHERE id = $1", a["alarm_id"])[0]
    assert (alarm["state"], alarm["note"]) == ("open", "")
    assert root.ok("GET", f"/patrol/routes/{a['route']['id']}") == a["route"]
    assert not site.fetch("SELECT 1 FROM adms_devices WHERE serial_no = 'WALK0001'"
                          " AND tenant_id = 1")
    # Nor its templates, nor its device's queue (the sync below is the set-up's only one).
    assert [b["id"] for b in root.ok("GET", f"/people/{walk_site['person']['id']}/biometrics")
            ] == [a["biometric"]["id"]]
    assert site.fetch("SELECT count(*) AS n FROM audit_log WHERE action = 'adms.sync'"
                      )[0]["n"] == 1
    # Nobody foreign opened, changed, registered or re-keyed anything of a merchant's.
    assert site.fetch(merchant_audit)[0]["n"] == merchants_before
    outbox_after = site.fetch("SELECT count(*) AS n FROM change_outbox")[0]["n"]
    # Foreign callers may change their own subtree (e.g. a tenant admin adds a department
    # there), never tenant 1: checked above through the canaries' node and objects.
    assert outbox_after >= outbox_before


def test_without_a_token_every_private_route_is_401(walk_site: dict[str, Any]) -> None:
    site: AdminSite = walk_site["site"]
    anonymous = site.api(None)
    for method, path, op in _routes(site):
        if path == "/auth/login":
            continue
        r = _request(anonymous, method, _fill(path, walk_site), walk_site, op)
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert op.get("security") != [], f"{path} is private but documented as public"
