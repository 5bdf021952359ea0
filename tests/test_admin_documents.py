"""Documents with multi-level approval, executed once through a real switch."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from protocols import ocp
from tests.admin_site import PASSWORD, AdminSite, Api, site_with_switch
from tests.switch_site import FREE_CANTEEN_TERMINAL


@pytest.fixture
def doc_site(db_dsn: str) -> Iterator[AdminSite]:
    yield from site_with_switch(db_dsn)


def _staff(site: AdminSite) -> dict[str, Api]:
    root = site.api()
    node = site.tenant_node(1)
    out = {"root": root}
    for name, role in (("office", "card_office"), ("finance1", "finance"),
                       ("finance2", "finance")):
        root.ok("POST", "/users", {"username": name, "password": PASSWORD, "role": role,
                                   "node_id": node}, 201)
        out[name] = site.api(name)
    return out


def _people(site: AdminSite, n: int) -> list[dict[str, Any]]:
    rows = site.fetch(
        "SELECT p.id, c.card_no, a.opening_main_fen, a.opening_subsidy_fen FROM people p"
        " JOIN accounts a ON a.id = p.account_id JOIN cards c ON c.account_id = a.id"
        " WHERE a.status = 0 AND c.status = 0 AND a.tenant_id = 1 AND a.opening_main_fen > 1000"
        " ORDER BY p.id LIMIT $1", n)
    return [dict(r) for r in rows]


def test_a_subsidy_batch_needs_two_different_approvers_and_executes_once(doc_site: AdminSite
                                                                         ) -> None:
    s = _staff(doc_site)
    people = _people(doc_site, 3)
    before = {p["id"]: s["root"].ok("GET", f"/people/{p['id']}/balance") for p in people}
    doc = s["office"].ok("POST", "/documents", {
        "doc_type": "subsidy_batch", "title": "November meal subsidy",
        "lines": [{"person_id": p["id"], "amount_fen": 3_000} for p in people]})
    assert doc["status"] == "draft" and doc["levels"] == 2 and doc["total_fen"] == 9_000
    assert s["finance1"].post(f"/documents/{doc['id']}/approve", {}).status_code == 409, \
        "a draft is not approved"
    s["office"].ok("POST", f"/documents/{doc['id']}/submit", {})
    r = s["finance2"].post(f"/documents/{doc['id']}/approve", {})
    assert r.status_code == 200  # a first level
    r = s["finance2"].post(f"/documents/{doc['id']}/approve", {})
    assert r.status_code == 403 and "different person" in r.json()["detail"]
    done = s["finance1"].ok("POST", f"/documents/{doc['id']}/approve", {"comment": "ok"})
    assert done["status"] == "executed", done
    assert [line["result"] for line in done["lines"]] == ["APPROVED"] * 3
    assert [st["decision"] for st in done["steps"]] == ["submit", "approve", "approve",
                                                        "execute"]
    for p in people:
        after = s["root"].ok("GET", f"/people/{p['id']}/balance")
        assert after["subsidy_fen"] == before[p["id"]]["subsidy_fen"] + 3_000
    # Executed once: again is refused, and the journal has three credits.
    assert s["finance2"].post(f"/documents/{doc['id']}/execute").status_code == 409
    rows = doc_site.fetch("SELECT count(*) AS n FROM journal j JOIN terminals t"
                          " ON t.id = j.terminal_id WHERE t.kind = 6")
    assert rows[0]["n"] == 3
    listed = s["finance2"].ok("GET", "/documents?status=executed")["items"]
    assert [d["id"] for d in listed] == [doc["id"]]
    csv = s["finance2"].get("/documents?format=csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.content.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("id,tenant_id,doc_type,title,status")
    assert lines[1].startswith(f"{doc['id']},1,subsidy_batch,November meal subsidy,executed")
    assert "9000,90.00" in lines[1], "fen and its yuan twin"
    pdf = s["finance2"].get(f"/documents/{doc['id']}/pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    actions = [e["action"] for e in s["root"].ok(
        "GET", f"/audit?entity=document&entity_id={doc['id']}")["items"]]
    assert actions == ["document.create", "document.submit", "document.approve",
                       "document.approve", "document.execute"]


def test_nobody_approves_their_own_and_a_rejected_document_is_revised(doc_site: AdminSite
                                                                      ) -> None:
    s = _staff(doc_site)
    person = _people(doc_site, 1)[0]
    # The drafter is a tenant admin, who made neither finance log-in.
    s["root"].ok("POST", "/users", {"username": "boss", "password": PASSWORD,
                                    "role": "tenant_admin", "node_id": doc_site.tenant_node(1)})
    boss = doc_site.api("boss")
    s["root"].ok("POST", "/approval-policies", {"node_id": doc_site.tenant_node(1),
                                               "doc_type": "refund", "levels": 1})
    doc = boss.ok("POST", "/documents", {
        "doc_type": "refund", "title": "Refund for a broken meal",
        "lines": [{"person_id": person["id"], "amount_fen": 800}]})
    assert doc["levels"] == 1
    too_much = boss.post("/documents", {
        "doc_type": "refund", "title": "More than there is",
        "lines": [{"person_id": person["id"], "amount_fen": 10**7}]})
    assert too_much.status_code == 422 and "main wallet" in too_much.json()["detail"]
    boss.ok("POST", f"/documents/{doc['id']}/submit", {})
    r = boss.post(f"/documents/{doc['id']}/approve", {})
    assert r.status_code == 403 and "drafted" in r.json()["detail"]
    s["finance1"].ok("POST", f"/documents/{doc['id']}/reject", {"comment": "wrong amount"})
    revised = boss.ok("POST", f"/documents/{doc['id']}/revise", {
        "title": "Refund for a broken meal", "lines": [{"person_id": person["id"],
                                                        "amount_fen": 650}]})
    assert revised["version"] == 2 and revised["status"] == "draft"
    boss.ok("POST", f"/documents/{doc['id']}/submit", {})
    before = s["root"].ok("GET", f"/people/{person['id']}/balance")
    done = s["finance2"].ok("POST", f"/documents/{doc['id']}/approve", {})
    assert done["status"] == "executed"
    after = s["root"].ok("GET", f"/people/{person['id']}/balance")
    assert after["main_fen"] == before["main_fen"] - 650


def test_cancellation_with_refund_freezes_refunds_and_closes(doc_site: AdminSite) -> None:
    s = _staff(doc_site)
    person = _people(doc_site, 1)[0]
    balance = s["root"].ok("GET", f"/people/{person['id']}/balance")
    doc = s["office"].ok("POST", "/documents", {
        "doc_type": "cancellation", "title": "Graduated", "lines": [{"person_id": person["id"]}]})
    assert doc["total_fen"] == abs(balance["main_fen"]) + abs(balance["subsidy_fen"])
    s["office"].ok("POST", f"/documents/{doc['id']}/submit", {})
    till = doc_site.client(FREE_CANTEEN_TERMINAL)
    seq = till.sign_on_result.last_txn_seq + 1
    # Frozen while it waits: the card is refused (within the change feed's second).
    deadline = time.monotonic() + 30
    while True:
        answer = till.request(ocp.BalanceInquiry(seq, person["card_no"]))
        seq += 1
        if answer.code == ocp.ResponseCode.ACCOUNT_FROZEN:
            break
        assert answer.code == ocp.ResponseCode.APPROVED
        assert time.monotonic() < deadline, "the freeze never reached the switch"
        time.sleep(0.01)
    answer = till.request(ocp.Purchase(seq, person["card_no"], 100, int(time.time() * 1000)))
    assert answer.code == ocp.ResponseCode.ACCOUNT_FROZEN
    # Held: a loss report is taken, but neither unfreeze nor a bulk unfreeze lets it go.
    s["office"].ok("POST", f"/cards/{person['card_no']}/report-loss")
    r = s["office"].post(f"/cards/{person['card_no']}/unfreeze")
    assert r.status_code == 409 and "held by cancellation" in r.json()["detail"], r.text
    r = s["office"].post("/people/bulk/unfreeze", {"person_ids": [person["id"]]})
    assert r.status_code == 409 and "held by cancellation" in r.text, r.text
    # The refund is exactly the balance the approvers saw (nothing could spend meanwhile).
    s["finance1"].ok("POST", f"/documents/{doc['id']}/approve", {})
    done = s["finance2"].ok("POST", f"/documents/{doc['id']}/approve", {})
    assert done["status"] == "executed", done
    after = s["root"].ok("GET", f"/people/{person['id']}/balance")
    assert (after["main_fen"], after["subsidy_fen"]) == (0, 0)
    assert after["account_status"] == "closed"
    cards = s["root"].ok("GET", f"/people/{person['id']}/cards")
    assert all(c["status"] == "cancelled" for c in cards)
    till.close()
    assert doc_site.stop() == 0
    assert doc_site.audit().conserved


def test_the_transition_table_is_the_schema_s_states_and_steps(db_dsn: str) -> None:
    """Issue 10 item 11: document states and steps live in one table (TRANSITIONS), which
    names exactly the states and decisions the schema allows, and reaches every state."""
    import asyncio

    import asyncpg

    from admin_api._routes_documents import TRANSITIONS, Status, Step

    async def allowed(table: str, column: str) -> set[str]:
        conn = await asyncpg.connect(db_dsn)
        try:
            check = await conn.fetchval(
                "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c WHERE c.conrelid ="
                " $1::regclass AND c.contype = 'c' AND pg_get_constraintdef(c.oid) LIKE $2",
                table, f"%({column} = ANY%")
        finally:
            await conn.close()
        return set(re.findall(r"'(\w+)'::text", check))

    assert asyncio.run(allowed("documents", "status")) == {str(s) for s in Status}
    assert asyncio.run(allowed("approval_steps", "decision")) == {str(s) for s in Step}
    reached, todo = {Status.DRAFT}, [Status.DRAFT]
    while todo:
        state = todo.pop()
        for sources, targets in TRANSITIONS.values():
            if state in sources:
                todo.extend(targets - reached)
                reached |= targets
    assert reached == set(Status)
