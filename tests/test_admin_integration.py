"""The Web Service interface for integrators, over real HTTP with a real switch and real POS.

API keys (scopes, subtree, revocation), bulk people sync (idempotent, all or nothing), and the
events stream: paged with a cursor while purchases and changes happen, resumed across restarts
of the admin API and of the switch, and compared with the database at the end: every
transaction and every change of the key's subtree, each once, none of another subtree.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from protocols import ocp
from tests.admin_site import PASSWORD, AdminSite, Api, Till, new_card_no
from tests.switch_site import EAST_PARK_TERMINAL, FREE_CANTEEN_TERMINAL

RC = ocp.ResponseCode
DEADLINE_SECONDS = 30.0
ENTITIES = ["person", "card", "org_node"]
TABLES = ("people", "accounts", "audit_log", "change_outbox")


@pytest.fixture(scope="module")
def site(pg_server: Any, migrated_template: str) -> Iterator[AdminSite]:
    s = AdminSite(pg_server.new_database(template=migrated_template))
    s.start()
    s.start_admin()
    try:
        yield s
    finally:
        s.close()


def key_api(site: AdminSite, key: str, *, bearer: bool = False) -> Api:
    assert site.admin is not None
    api = Api(site.admin.url)
    if bearer:
        api.http.headers["Authorization"] = f"Bearer {key}"
    else:
        api.http.headers["X-Api-Key"] = key
    site.apis.append(api)
    return api


def make_key(api: Api, node_id: int, scopes: list[str], **extra: Any) -> dict[str, Any]:
    return api.ok("POST", "/api-keys", {"node_id": node_id, "name": "test key",
                                        "scopes": scopes, **extra}, 201)


def counts(site: AdminSite) -> dict[str, int]:
    return {t: site.fetch(f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in TABLES}


def until(what: str, predicate: Callable[[], bool]) -> None:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < DEADLINE_SECONDS, f"{what}: not within the deadline"
        time.sleep(0.02)


# -- API keys ----------------------------------------------------------------------------------


def test_api_keys_scopes_subtree_and_revocation(site: AdminSite) -> None:
    root = site.api()
    campus, east = site.tenant_node(1), site.tenant_node(2)
    made = make_key(root, east, ["people.read", "events.read"])
    key = made["key"]
    assert key.startswith("ock_") and made["api_key"]["key_prefix"] == key[:12]
    listed = root.get("/api-keys")
    assert listed.status_code == 200 and key not in listed.text
    assert made["api_key"]["id"] in [k["id"] for k in listed.json()]
    assert site.fetch("SELECT count(*) AS n FROM api_keys WHERE key_sha256::text LIKE $1",
                      f"%{key}%")[0]["n"] == 0

    for bearer in (True, False):
        api = key_api(site, key, bearer=bearer)
        me = api.ok("GET", "/auth/me")
        assert (me["role"], me["node_id"], me["permissions"]) == (
            "integration", east, ["events.read", "people.read"])
    east_person = root.ok("POST", "/people", {"node_id": east, "name": "East Li",
                                              "class_id": 2})
    campus_person = site.fetch("SELECT id FROM people WHERE tenant_id = 1 LIMIT 1")[0]["id"]
    assert api.ok("GET", f"/people/{east_person['id']}")["name"] == "East Li"
    assert api.get(f"/people/{campus_person}").status_code == 404, "outside the key's subtree"
    assert {p["tenant_id"] for p in api.ok("GET", "/people?limit=1000")["items"]} == {2}
    # Only its scopes, though the role "integration" could have more.
    assert api.http.put("/integration/people", json={"people": [
        {"external_id": "X", "name": "X", "node_id": east, "class_id": 2}]}).status_code == 403
    assert api.post("/people", {"node_id": east, "name": "X", "class_id": 2}).status_code == 403
    assert api.post("/api-keys", {"node_id": east, "name": "more", "scopes": ["people.read"]}
                    ).status_code == 403, "a key makes no keys"
    assert api.post("/auth/logout").status_code == 409, "a key is revoked, not logged out"

    # Who makes keys: platform and tenant admins, in their subtree, with scopes they have.
    root.ok("POST", "/users", {"username": "east.admin", "password": PASSWORD,
                               "role": "tenant_admin", "node_id": east})
    root.ok("POST", "/users", {"username": "east.office", "password": PASSWORD,
                               "role": "card_office", "node_id": east})
    root.ok("POST", "/users", {"username": "east.auditor", "password": PASSWORD,
                               "role": "auditor", "node_id": east})
    east_admin = site.api("east.admin")
    assert east_admin.post("/api-keys", {"node_id": campus, "name": "x",
                                         "scopes": ["events.read"]}).status_code == 404
    r = east_admin.post("/api-keys", {"node_id": east, "name": "x", "scopes": ["money.counter"]})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "scopes[0]", r.text
    assert site.api("east.office").post("/api-keys", {"node_id": east, "name": "x", "scopes": [
        "events.read"]}).status_code == 403
    auditor = site.api("east.auditor")
    assert [k["id"] for k in auditor.ok("GET", "/api-keys")] == [made["api_key"]["id"]]
    campus_key = make_key(root, campus, ["events.read"])
    assert east_admin.post(f"/api-keys/{campus_key['api_key']['id']}/revoke").status_code == 404

    # Revoked: refused from the next request on, with either header.
    revoked = east_admin.ok("POST", f"/api-keys/{made['api_key']['id']}/revoke")
    assert revoked["revoked_at"] is not None
    for bearer in (True, False):
        r = key_api(site, key, bearer=bearer).get("/auth/me")
        assert r.status_code == 401 and r.headers["content-type"].startswith(
            "application/problem+json"), r.text
    again = east_admin.ok("POST", f"/api-keys/{made['api_key']['id']}/revoke")
    assert again["revoked_at"] == revoked["revoked_at"]
    expired = make_key(root, east, ["events.read"], expires_at=(
        dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat())
    assert key_api(site, expired["key"]).get("/auth/me").status_code == 401
    assert key_api(site, "ock_" + "A" * 43).get("/auth/me").status_code == 401
    assert key_api(site, "not a key").get("/auth/me").status_code == 401
    # The audit trail has both, and never the key.
    trail = root.ok("GET", f"/audit?entity=api_key&entity_id={made['api_key']['id']}")["items"]
    assert [e["action"] for e in trail] == ["api_key.create", "api_key.revoke"]
    assert trail[0]["username"] == "root" and trail[1]["username"] == "east.admin"
    assert key not in str(trail)


# -- bulk people sync --------------------------------------------------------------------------


def test_people_sync_is_idempotent_and_all_or_nothing(site: AdminSite) -> None:
    root = site.api()
    campus, east = site.tenant_node(1), site.tenant_node(2)
    physics = root.ok("POST", "/org/nodes", {"parent_id": campus, "kind": "department",
                                             "name": "Sync Physics"})
    api = key_api(site, make_key(root, campus, ["people.sync", "people.read"])["key"])
    people = [
        {"external_id": "HR-1", "name": "Han Mei", "node_id": campus, "class_id": 2,
         "phone": "13700000001"},
        {"external_id": "HR-2", "name": "Lu Yang", "node_id": physics["id"], "class_id": 1},
        {"external_id": "HR-3", "name": "Ma Jun", "node_id": campus, "class_id": 1},
    ]
    before = counts(site)
    first = api.ok("PUT", "/integration/people", {"people": people})
    assert (first["created"], first["updated"], first["unchanged"]) == (3, 0, 0)
    assert [i["result"] for i in first["items"]] == ["created"] * 3
    after_first = counts(site)
    assert {t: after_first[t] - before[t] for t in TABLES} == {
        "people": 3, "accounts": 3, "audit_log": 3, "change_outbox": 3}
    han = api.ok("GET", f"/people/{first['items'][0]['person_id']}")
    assert (han["name"], han["phone"], han["external_id"]) == ("Han Mei", "13700000001", "HR-1")
    [row] = site.fetch("SELECT username, role FROM audit_log WHERE action = 'person.create'"
                       " AND entity_id = $1", str(han["id"]))
    assert row["username"].startswith("api-key:") and row["role"] == "integration"

    # The same request again: nothing changes, and the answer says so.
    second = api.ok("PUT", "/integration/people", {"people": people})
    assert (second["created"], second["updated"], second["unchanged"]) == (0, 0, 3)
    assert [i["person_id"] for i in second["items"]] == [i["person_id"] for i in first["items"]]
    assert counts(site) == after_first
    # Without the class (an update needs none) and without the phone (left as it is): same.
    bare = [{k: v for k, v in p.items() if k not in ("class_id", "phone")} for p in people]
    assert api.ok("PUT", "/integration/people", {"people": bare})["unchanged"] == 3
    assert counts(site) == after_first

    # One renamed and moved, one new phone: two updates, each audited, no change event.
    changed = [dict(people[0], name="Han Meimei", node_id=physics["id"]),
               dict(people[1], phone="13700000002"), people[2]]
    third = api.ok("PUT", "/integration/people", {"people": changed})
    assert [i["result"] for i in third["items"]] == ["updated", "updated", "unchanged"]
    after_third = counts(site)
    assert {t: after_third[t] - after_first[t] for t in TABLES} == {
        "people": 0, "accounts": 0, "audit_log": 2, "change_outbox": 0}
    han = api.ok("GET", f"/people/{han['id']}")
    assert (han["name"], han["node_id"]) == ("Han Meimei", physics["id"])
    assert site.fetch("SELECT holder_name FROM accounts WHERE id = $1",
                      han["account_id"])[0]["holder_name"] == "Han Meimei"
    trail = root.ok("GET", f"/audit?entity=person&entity_id={han['id']}&action=person.update")
    [update] = trail["items"]
    assert update["before"]["name"] == "Han Mei" and update["after"]["name"] == "Han Meimei"

    # Any bad item: 422 naming each, and nothing at all is changed.
    bad = [
        dict(changed[0], name="Renamed Again"),  # fine on its own
        {"external_id": "HR-4", "name": "Elsewhere", "node_id": east, "class_id": 1},
        {"external_id": "HR-5", "name": "No Class", "node_id": campus},
        dict(people[2], class_id=2),  # an existing person's class
        {"external_id": "HR-6", "name": "Twice", "node_id": campus, "class_id": 1},
        {"external_id": "HR-6", "name": "Twice", "node_id": campus, "class_id": 1},
        {"external_id": "HR-7", "name": "Platform", "node_id": site.boot.platform_node_id,
         "class_id": 1},
    ]
    r = api.http.put("/integration/people", json={"people": bad})
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [
        "people[1].node_id", "people[5].external_id", "people[6].node_id",
        "people[2].class_id", "people[3].class_id"]
    assert counts(site) == after_third
    assert api.ok("GET", f"/people/{han['id']}")["name"] == "Han Meimei"
    r = api.http.put("/integration/people", json={"people": [dict(people[0], colour="red")]})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "people[0].colour"


# -- events ------------------------------------------------------------------------------------


def drain(api: Api, cursor: str | None, limit: int, pages_max: int = 10_000
          ) -> tuple[str, list[dict[str, Any]]]:
    """Every event after `cursor` up to the end for now, page by page."""
    items: list[dict[str, Any]] = []
    for _ in range(pages_max):
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        page = api.ok("GET", "/integration/events?" + str(httpx.QueryParams(params)))
        items += page["items"]
        cursor = page["cursor"]
        if not page["has_more"] and not page["items"]:
            return page["cursor"], items
    raise AssertionError("the stream did not end")


def expected(site: AdminSite, node_id: int) -> tuple[list[int], list[int]]:
    """What the database says the node's subtree holds: journal lsns and audit ids."""
    lsns = [r["lsn"] for r in site.fetch(
        "SELECT j.lsn FROM journal j JOIN people p ON p.account_id = j.account_id"
        " JOIN org_nodes n ON n.id = p.node_id WHERE $1 = ANY(n.path) AND j.kind <> 3"
        " ORDER BY j.lsn", node_id)]
    ids = [r["id"] for r in site.fetch(
        "SELECT id FROM audit_log WHERE $1 = ANY(node_path) AND entity = ANY($2::text[])"
        " ORDER BY id", node_id, ENTITIES)]
    return lsns, ids


def split(items: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    return ([e["lsn"] for e in items if e["type"] == "transaction"],
            [e["audit_id"] for e in items if e["type"] == "change"])


def test_events_page_through_everything_once_and_resume_after_restarts(
        site: AdminSite) -> None:
    root = site.api()
    campus = site.tenant_node(1)
    key = make_key(root, campus, ["events.read"])["key"]
    api = key_api(site, key)
    cards = [r["card_no"] for r in site.fetch(
        "SELECT c.card_no FROM cards c JOIN accounts a ON a.id = c.account_id"
        " WHERE a.status = 0 AND c.status = 0 AND a.tenant_id = 1 AND a.class_id = 2"
        " AND a.opening_main_fen >= 20000 ORDER BY a.id LIMIT 4")]
    people = {r["card_no"]: r["id"] for r in site.fetch(
        "SELECT c.card_no, p.id FROM cards c JOIN people p ON p.account_id = c.account_id"
        " WHERE c.card_no = ANY($1::bigint[])", cards)}
    till = Till(site, FREE_CANTEEN_TERMINAL)
    answers: list[Any] = []

    def activity(rounds: int) -> None:
        for i in range(rounds):
            for card in cards:
                answers.append(till.buy(card, 100 + i))
            if i % 5 == 0:  # changes of people and cards between the purchases
                pid = people[cards[i % len(cards)]]
                root.ok("POST", "/people/bulk/report-loss", {"person_ids": [pid]})
                root.ok("POST", "/people/bulk/unfreeze", {"person_ids": [pid]})
                root.ok("POST", "/people", {"node_id": campus, "name": f"Walk-in {i}",
                                            "class_id": 3})

    activity(3)
    cursor, items = drain(api, None, limit=50)
    # Page with a small limit while purchases and changes go on in another thread.
    worker = threading.Thread(target=activity, args=(20,))
    worker.start()
    while worker.is_alive():
        page = api.ok("GET", f"/integration/events?limit=7&cursor={cursor}")
        items += page["items"]
        cursor = page["cursor"]
    worker.join()
    cursor, more = drain(api, cursor, limit=7)
    items += more
    assert all(a.code in (RC.APPROVED, RC.CARD_LOST) for a in answers), answers
    assert any(a.code == RC.APPROVED for a in answers)
    lsns, ids = expected(site, campus)
    got_lsns, got_ids = split(items)
    assert got_lsns == lsns, "every transaction of the subtree, once, in lsn order"
    assert got_ids == ids, "every change of the subtree, once, in commit order"
    assert len(lsns) >= 23 * 4 and len(ids) >= 5 * 3
    purchase = next(e for e in items if e["type"] == "transaction" and e["result"] == "APPROVED")
    assert purchase["kind"] == "purchase" and purchase["person_id"] in people.values()
    assert purchase["main_delta_fen"] + purchase["subsidy_delta_fen"] == -purchase["amount_fen"]
    actions = {e["action"] for e in items if e["type"] == "change"}
    assert {"person.create", "person.report_loss", "person.unfreeze"} <= actions

    # Read again from the start, in other page sizes: the same stream; and the cursor of any
    # event resumes right after it.
    _, again = drain(api, None, limit=13)
    assert split(again) == (lsns, ids)
    assert drain(api, None, limit=1000)[1] == again
    middle = len(again) // 2
    assert drain(api, again[middle]["cursor"], limit=100)[1] == again[middle + 1:]

    # Restart the admin API and the switch; resume with the saved cursor: only what is new.
    saved = cursor
    assert site.admin is not None and site.switch is not None
    till.client.close()
    site.admin.stop()
    assert site.stop() == 0
    site.start()
    site.start_admin()
    api = key_api(site, key)
    till = Till(site, FREE_CANTEEN_TERMINAL)
    root = site.api()
    activity(2)
    till.client.close()
    _, after = drain(api, saved, limit=3)
    lsns2, ids2 = expected(site, campus)
    assert split(after) == (lsns2[len(lsns):], ids2[len(ids):])
    assert len(lsns2) - len(lsns) == 2 * 4 and len(ids2) > len(ids)
    # And the end is the end: nothing more, the same cursor back.
    end, nothing = drain(api, saved, limit=1000)
    assert split(nothing) == split(after)
    page = api.ok("GET", f"/integration/events?cursor={end}")
    assert page == {"items": [], "cursor": end, "has_more": False}
    assert api.get("/integration/events?cursor=bm90IGEgY3Vyc29y").status_code == 400


def test_events_of_one_tenant_hold_nothing_of_another(site: AdminSite) -> None:
    root = site.api()
    campus, east = site.tenant_node(1), site.tenant_node(2)
    east_api = key_api(site, make_key(root, east, ["events.read"])["key"])
    campus_api = key_api(site, make_key(root, campus, ["events.read"])["key"])
    person = root.ok("POST", "/people", {"node_id": east, "name": "East Zhang", "class_id": 2})
    card_no = new_card_no()
    root.ok("POST", f"/people/{person['id']}/cards", {"card_no": card_no})
    till = Till(site, EAST_PARK_TERMINAL)
    answer: list[Any] = []
    until("the switch knows the new card",
          lambda: answer.append(till.buy(card_no, 100)) or answer[-1].code != RC.UNKNOWN_CARD)
    till.client.close()
    result = RC(answer[-1].code).name  # staff may overdraw a little: approved

    _, east_items = drain(east_api, None, limit=200)
    _, campus_items = drain(campus_api, None, limit=1000)
    east_people = {r["id"] for r in site.fetch("SELECT id FROM people WHERE tenant_id = 2")}
    [decline] = [e for e in east_items if e["type"] == "transaction"]
    assert (decline["person_id"], decline["card_no"], decline["result"]) == (
        person["id"], card_no, result)
    assert {e["person_id"] for e in campus_items if e["type"] == "transaction"}.isdisjoint(
        east_people)
    assert card_no not in {e.get("card_no") for e in campus_items}
    assert "East Zhang" not in str(campus_items)
    assert split(east_items) == expected(site, east)
    assert {e["action"] for e in east_items if e["type"] == "change"} >= {"person.create",
                                                                          "card.issue"}


def test_audit_ids_are_drawn_in_commit_order(db_dsn: str) -> None:
    """What the events cursor relies on: a writer that has drawn an audit id holds the lock
    until it commits, so nobody can commit a larger id before it (0005_integration.sql)."""
    insert = ("INSERT INTO audit_log (username, role, action, entity, entity_id, node_path)"
              " VALUES ('t', 't', 'x', 'person', '1', '{1}') RETURNING id")

    async def go() -> None:
        first, second = await asyncpg.connect(db_dsn), await asyncpg.connect(db_dsn)
        try:
            tx = first.transaction()
            await tx.start()
            a = await first.fetchval(insert)
            await second.execute("SET lock_timeout = '200ms'")
            with pytest.raises(asyncpg.LockNotAvailableError):
                await second.fetchval(insert)  # would draw a larger id and could commit first
            await second.execute("SET lock_timeout = 0")
            waiting = asyncio.create_task(second.fetchval(insert))
            await asyncio.sleep(0.2)
            assert not waiting.done(), "the second writer waits for the first one's commit"
            await tx.commit()
            assert await waiting > a
        finally:
            await first.close()
            await second.close()

    asyncio.run(go())
