"""The routes the console's last gaps needed (docs/console.md): a person's documents and audit
trail (`person_id` on GET /documents and GET /audit), the language preference of a log-in
(PUT /auth/me/preferences, carried by the log-in answer and GET /auth/me), and the clearing
table's counterpart park names. Without a browser; tests/test_console_prefs.py drives the pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.admin_site import PASSWORD, AdminSite, Api


@pytest.fixture(scope="module")
def site(pg_server: Any, migrated_template: str) -> Iterator[AdminSite]:
    s = AdminSite(pg_server.new_database(template=migrated_template))
    s.start_admin()
    try:
        root = s.api()
        for username, role, tenant in (("campus.clerk", "card_office", 1),
                                       ("campus.manager", "tenant_admin", 1),
                                       ("east.clerk", "card_office", 2),
                                       ("east.manager", "tenant_admin", 2)):
            root.ok("POST", "/users", {"username": username, "password": PASSWORD,
                                       "role": role, "node_id": s.tenant_node(tenant)})
        yield s
    finally:
        s.close()


def _person(site: AdminSite, tenant: int, n: int = 0) -> dict[str, Any]:
    rows = site.fetch(
        "SELECT p.id, p.account_id, c.card_no FROM people p JOIN accounts a ON a.id = p.account_id"
        " JOIN cards c ON c.account_id = a.id WHERE a.status = 0 AND c.status = 0"
        " AND a.tenant_id = $1 ORDER BY p.id LIMIT 1 OFFSET $2",
        tenant, n)
    return dict(rows[0])


def test_a_persons_documents_and_audit_stay_in_the_callers_subtree(site: AdminSite) -> None:
    clerk, east = site.api("campus.clerk"), site.api("east.clerk")
    manager, east_manager = site.api("campus.manager"), site.api("east.manager")
    li, han = _person(site, 1, 0), _person(site, 1, 1)
    other = site.api().ok("POST", "/people", {"node_id": site.tenant_node(2), "name": "Wang Wu",
                                              "class_id": 2})
    mine = clerk.ok("POST", "/documents", {"doc_type": "adjustment", "title": "Li's",
                                           "lines": [{"person_id": li["id"], "amount_fen": 100}]})
    clerk.ok("POST", "/documents", {"doc_type": "adjustment", "title": "Han's",
                                    "lines": [{"person_id": han["id"], "amount_fen": 100}]})
    theirs = east.ok("POST", "/documents", {"doc_type": "adjustment", "title": "East's",
                                            "lines": [{"person_id": other["id"],
                                                       "amount_fen": 100}]})
    listed = clerk.ok("GET", f"/documents?person_id={li['id']}")["items"]
    assert [d["id"] for d in listed] == [mine["id"]]
    assert clerk.ok("GET", f"/documents?person_id={li['id']}&status=submitted")["items"] == []
    # Another park's person: 404, as GET /people/{id} answers, both ways; never listed.
    for api, pid in ((clerk, other["id"]), (east, li["id"])):
        r = api.get(f"/documents?person_id={pid}")
        assert r.status_code == 404, r.text
        assert api.get(f"/people/{pid}").status_code == 404
        assert api.get(f"/audit?person_id={pid}").status_code in (403, 404)
    assert [d["id"] for d in east.ok("GET", f"/documents?person_id={other['id']}")["items"]] \
        == [theirs["id"]]
    csv = clerk.get(f"/documents?person_id={li['id']}&format=csv")
    assert csv.status_code == 200 and len(csv.content.decode("utf-8-sig").splitlines()) == 2
    # The audit trail of Li: the card reported lost and the document; not Han's document.
    clerk.ok("POST", f"/cards/{li['card_no']}/report-loss")
    trail = manager.ok("GET", f"/audit?person_id={li['id']}")["items"]
    seen = {(r["action"], r["entity"], r["entity_id"]) for r in trail}
    assert ("card.report_loss", "card", str(li["card_no"])) in seen, seen
    assert ("document.create", "document", str(mine["id"])) in seen, seen
    assert all(r["entity_id"] not in (str(han["card_no"]),) for r in trail)
    assert {r["entity"] for r in trail} <= {"person", "card", "document"}
    assert east_manager.get(f"/audit?person_id={li['id']}").status_code == 404
    assert clerk.get(f"/audit?person_id={li['id']}").status_code == 403  # no audit.read
    clerk.ok("POST", f"/cards/{li['card_no']}/unfreeze")


def test_a_log_in_keeps_its_language_on_the_server(site: AdminSite) -> None:
    clerk = site.api("campus.clerk")
    assert clerk.ok("GET", "/auth/me")["locale"] is None
    out = clerk.ok("PUT", "/auth/me/preferences", {"locale": "en"})
    assert out == {"locale": "en"}
    fresh = Api(site.admin.url if site.admin else "")
    r = fresh.post("/auth/login", {"username": "campus.clerk", "password": PASSWORD})
    assert r.status_code == 200 and r.json()["locale"] == "en", r.text
    fresh.close()
    assert clerk.ok("GET", "/auth/me")["locale"] == "en"
    # Only the two languages, or null (back to the browser's choice).
    for bad in ({"locale": "fr"}, {"locale": "EN"}, {"lang": "en"}, {}):
        assert clerk.http.put("/auth/me/preferences", json=bad).status_code == 400, bad
    assert clerk.ok("PUT", "/auth/me/preferences", {"locale": None}) == {"locale": None}
    assert clerk.ok("PUT", "/auth/me/preferences", {"locale": "zh-CN"}) == {"locale": "zh-CN"}
    # Only the caller's own: another log-in's is untouched; the change is audited.
    assert site.api("east.clerk").ok("GET", "/auth/me")["locale"] is None
    audit = site.api().ok("GET", "/audit?action=user.preferences")["items"]
    assert [(a["username"], a["after"]) for a in audit][-1] == ("campus.clerk",
                                                                {"locale": "zh-CN"})
    assert site.api().get("/auth/me").json()["locale"] is None
