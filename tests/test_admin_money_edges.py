"""Counter money at its edges (found by review): stale txn_seqs, a movement another process
started, another tenant's transfers, and who may approve a revised document."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.admin_site import PASSWORD, AdminSite, Api, site_with_switch

ADMIN_KIND = 6


@pytest.fixture
def site(db_dsn: str) -> Iterator[AdminSite]:
    yield from site_with_switch(db_dsn)


def _person(site: AdminSite, tenant: int = 1) -> dict[str, Any]:
    return dict(site.fetch(
        "SELECT p.id, a.id AS account_id FROM people p JOIN accounts a ON a.id = p.account_id"
        " JOIN cards c ON c.account_id = a.id WHERE a.status = 0 AND c.status = 0"
        " AND a.tenant_id = $1 AND a.opening_subsidy_fen > 100 ORDER BY p.id LIMIT 1",
        tenant)[0])


def _admin_rows(site: AdminSite) -> list[Any]:
    return site.fetch("SELECT j.* FROM journal j JOIN terminals t ON t.id = j.terminal_id"
                      " WHERE t.kind = $1 ORDER BY lsn", ADMIN_KIND)


def _until_not_503(api: Api, method: str, path: str, body: Any = None,
                   headers: dict[str, str] | None = None) -> Any:
    deadline = time.monotonic() + 60
    while (r := api.http.request(method, path, json=body, headers=headers)).status_code == 503:
        assert time.monotonic() < deadline, r.text
    return r


def test_a_txn_seq_gone_stale_is_renewed_and_the_money_moves_once(site: AdminSite) -> None:
    root = site.api()
    person = _person(site)
    node = site.tenant_node(1)
    for name in ("office", "fin.a", "fin.b"):
        root.ok("POST", "/users", {"username": name, "password": PASSWORD, "node_id": node,
                                   "role": "card_office" if name == "office" else "finance"},
                201)
    office, fa, fb = (site.api(n) for n in ("office", "fin.a", "fin.b"))
    doc = office.ok("POST", "/documents", {"doc_type": "subsidy_batch", "title": "late",
                                           "lines": [{"person_id": person["id"],
                                                      "amount_fen": 250}]})
    office.ok("POST", f"/documents/{doc['id']}/submit", {})
    fa.ok("POST", f"/documents/{doc['id']}/approve", {})
    assert site.switch is not None
    port = site.switch.port
    assert site.stop() == 0
    r = fb.post(f"/documents/{doc['id']}/approve", {})
    assert r.status_code == 503 and "POST /documents" in r.json()["detail"], r.text
    [line] = site.fetch("SELECT txn_seq FROM document_lines WHERE document_id = $1", doc["id"])
    # Meanwhile 300 other movements went by: the line's txn_seq is far below the newest.
    site.fetch("SELECT setval('admin_txn_seq', (SELECT last_value FROM admin_txn_seq) + 300)")
    site.start(extra_env={"ONECARD_PORT": str(port)})
    topup = _until_not_503(root, "POST", f"/people/{person['id']}/topups", {"amount_fen": 1},
                           {"Idempotency-Key": str(uuid.uuid4())})
    assert topup.status_code == 201 and topup.json()["txn_seq"] > line["txn_seq"] + 256
    done = _until_not_503(fb, "POST", f"/documents/{doc['id']}/execute")
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "executed"
    [after] = site.fetch("SELECT txn_seq, result_code FROM document_lines"
                         " WHERE document_id = $1", doc["id"])
    assert after["result_code"] == 0 and after["txn_seq"] > line["txn_seq"], "renewed"
    credits = [r for r in _admin_rows(site) if r["amount_fen"] == 250]
    assert len(credits) == 1 and credits[0]["code"] == 0


def test_a_movement_another_process_started_is_never_sent_under_another_terminal(
        site: AdminSite) -> None:
    root = site.api()
    person = _person(site)
    key = str(uuid.uuid4())
    first = root.http.post(f"/people/{person['id']}/topups", json={"amount_fen": 300},
                           headers={"Idempotency-Key": key})
    assert first.status_code == 201
    # As if another admin API process (admin terminal 777) had stored the key and timed out.
    other_key = str(uuid.uuid4())
    user_id = site.fetch("SELECT id FROM admin_users WHERE username = 'root'")[0]["id"]
    sha = site.fetch("SELECT request_sha256 FROM idempotency_keys WHERE key = $1", key)[0][0]
    site.fetch("INSERT INTO idempotency_keys (user_id, key, request_sha256, terminal_id,"
               " txn_seq) VALUES ($1, $2, $3, 777, 5)", user_id, other_key, sha)
    r = root.http.post(f"/people/{person['id']}/topups", json={"amount_fen": 300},
                       headers={"Idempotency-Key": other_key})
    assert r.status_code == 409 and "another admin API process" in r.json()["detail"], r.text
    assert len(_admin_rows(site)) == 1, "nothing sent under this process's terminal"


def test_another_tenants_cardholder_moves_money_between_wallets(site: AdminSite) -> None:
    from tests.admin_site import new_card_no

    root = site.api()
    east = root.ok("POST", "/people", {"node_id": site.tenant_node(2), "name": "East Li",
                                       "class_id": 2})
    root.ok("POST", f"/people/{east['id']}/cards", {"card_no": new_card_no()})
    deadline = time.monotonic() + 60
    while True:  # until the switch knows the new card (each declined try moves nothing)
        r = root.http.post(f"/people/{east['id']}/topups", json={"amount_fen": 500},
                           headers={"Idempotency-Key": str(uuid.uuid4())})
        if r.status_code == 201:
            break
        assert "UNKNOWN_CARD" in r.text and time.monotonic() < deadline, r.text
    r = root.http.post(f"/people/{east['id']}/transfers",
                       json={"from_wallet": "main", "amount_fen": 100},
                       headers={"Idempotency-Key": str(uuid.uuid4())})
    assert r.status_code == 201, r.text
    assert (r.json()["main_fen"], r.json()["subsidy_fen"]) == (400, 100)


def test_whoever_revised_a_document_does_not_approve_it(site: AdminSite) -> None:
    root = site.api()
    person = _person(site)
    node = site.tenant_node(1)
    for name, role in (("office", "card_office"), ("boss", "tenant_admin"),
                       ("fin", "finance")):
        root.ok("POST", "/users", {"username": name, "password": PASSWORD, "role": role,
                                   "node_id": node}, 201)
    office, boss, fin = (site.api(n) for n in ("office", "boss", "fin"))
    root.ok("POST", "/approval-policies", {"node_id": node, "doc_type": "adjustment",
                                           "levels": 1})
    doc = office.ok("POST", "/documents", {"doc_type": "adjustment", "title": "fix",
                                           "lines": [{"person_id": person["id"],
                                                      "amount_fen": 10}]})
    office.ok("POST", f"/documents/{doc['id']}/submit", {})
    fin.ok("POST", f"/documents/{doc['id']}/reject", {"comment": "no"})
    boss.ok("POST", f"/documents/{doc['id']}/revise", {
        "title": "fix", "lines": [{"person_id": person["id"], "amount_fen": 99_999}]})
    boss.ok("POST", f"/documents/{doc['id']}/submit", {})
    r = boss.post(f"/documents/{doc['id']}/approve", {})
    assert r.status_code == 403 and "revised, submitted" in r.json()["detail"]
    assert fin.ok("POST", f"/documents/{doc['id']}/approve", {})["status"] == "executed"


def test_parallel_repeats_of_a_key_gone_stale_move_the_money_once(site: AdminSite) -> None:
    """Issue 9 item 7: after TXN_SEQ_TOO_OLD every concurrent repeat renewed the key's txn_seq
    and moved the money again (ten repeats: six credits). One key moves money at most once,
    writes one audit row, and every repeat gets the same answer."""
    root = site.api()
    person, other = (dict(r) for r in site.fetch(
        "SELECT p.id FROM people p JOIN accounts a ON a.id = p.account_id JOIN cards c"
        " ON c.account_id = a.id WHERE a.status = 0 AND c.status = 0 AND a.tenant_id = 1"
        " ORDER BY p.id LIMIT 2"))
    assert site.switch is not None
    port = site.switch.port
    assert site.stop() == 0
    key, body = str(uuid.uuid4()), {"amount_fen": 4_321}
    down = root.http.post(f"/people/{person['id']}/topups", json=body,
                          headers={"Idempotency-Key": key})
    assert down.status_code == 503, down.text
    [stored] = site.fetch("SELECT txn_seq FROM idempotency_keys WHERE key = $1", key)
    assert stored["txn_seq"] is not None
    site.start(extra_env={"ONECARD_PORT": str(port)})
    _until_not_503(root, "POST", f"/people/{other['id']}/topups", {"amount_fen": 1},
                   {"Idempotency-Key": str(uuid.uuid4())})

    async def top_up(http: httpx.AsyncClient, n: int, k: str, b: Any) -> httpx.Response:
        return await http.post(f"/people/{n}/topups", json=b, headers={"Idempotency-Key": k})

    async def run() -> list[httpx.Response]:
        assert site.admin is not None
        async with httpx.AsyncClient(base_url=site.admin.url, timeout=60, headers={
                "Authorization": f"Bearer {root.token}"},
                limits=httpx.Limits(max_connections=32)) as http:
            # 300 other top-ups: the key's txn_seq is now more than 256 below the newest.
            for _ in range(30):
                others = await asyncio.gather(*(
                    top_up(http, other["id"], str(uuid.uuid4()), {"amount_fen": 1})
                    for _ in range(10)))
                assert {r.status_code for r in others} == {201}, others[0].text
            return list(await asyncio.gather(*(top_up(http, person["id"], key, body)
                                               for _ in range(10))))

    answers = asyncio.run(run())
    newest = site.fetch("SELECT max(txn_seq) FROM idempotency_keys")[0][0]
    assert newest > stored["txn_seq"] + 256
    moved = [r for r in _admin_rows(site) if r["amount_fen"] == body["amount_fen"]]
    assert [(r["code"], r["txn_seq"] > stored["txn_seq"]) for r in moved] == [(0, True)], moved
    assert {r.status_code for r in answers} == {201}, [r.text for r in answers]
    assert all(r.json() == answers[0].json() for r in answers), "each gets the first answer"
    assert answers[0].json()["txn_seq"] == moved[0]["txn_seq"]
    audit = site.fetch("SELECT after FROM audit_log WHERE action = 'money.topup'"
                       " AND entity_id = $1", str(person["id"]))
    assert len(audit) == 1, audit


def test_a_stale_txn_seq_is_renewed_by_one_request_only(site: AdminSite) -> None:
    """The compare-and-set under the per-key lock (item 7): two requests that both read the
    same stale txn_seq (two admin API processes, or any interleaving the lock does not
    cover) and both hear TXN_SEQ_TOO_OLD: the first renews and moves the money, the second
    finds the stored txn_seq renewed and answers 409; it never draws a third."""
    import asyncpg

    from admin_api._money import Money
    from admin_api._problems import Problem
    from admin_api._settings import AdminSettings

    assert site.admin is not None and site.switch is not None
    site.admin.stop()  # this test is the admin terminal now
    site.admin = None
    card = site.fetch("SELECT c.card_no FROM cards c JOIN accounts a ON a.id = c.account_id"
                      " WHERE a.status = 0 AND c.status = 0 AND a.tenant_id = 1"
                      " ORDER BY c.card_no LIMIT 1")[0]["card_no"]
    cash_desk = site.fetch("SELECT merchant_id FROM system_accounts WHERE tenant_id = 1"
                           " AND purpose = 'cash_desk'")[0]["merchant_id"]
    user = site.fetch("SELECT id FROM admin_users WHERE username = 'root'")[0]["id"]

    async def run() -> tuple[list[object], int]:
        pool = await asyncpg.create_pool(site.dsn, min_size=1, max_size=4)
        assert pool is not None
        money = Money(AdminSettings(dsn=site.dsn, master_secret=site.master.hex(),
                                    switch_port=site.switch.port if site.switch else 0,
                                    switch_timeout_seconds=10), pool)
        try:
            await money.start()
            stale = await money.next_txn_seq(pool)
            await pool.execute("INSERT INTO idempotency_keys (user_id, key, request_sha256,"
                               " terminal_id, txn_seq) VALUES ($1, 'k', '', $2, $3)", user,
                               money.terminal_id, stale)
            await pool.execute("SELECT setval('admin_txn_seq', $1)", stale + 300)
            await money.ask("credit", await money.next_txn_seq(pool), card, 0, 1, cash_desk)

            async def renew(old: int, fresh: int) -> bool:
                return bool(await pool.fetchval(
                    "UPDATE idempotency_keys SET txn_seq = $3 WHERE user_id = $1 AND key = 'k'"
                    " AND txn_seq = $2 RETURNING true", user, old, fresh))

            answers: list[object] = []
            for _ in range(2):  # both read `stale` before either renewed
                try:
                    answers.append(await money.ask("credit", stale, card, 0, 777, cash_desk,
                                                   renew=renew))
                except Problem as exc:
                    answers.append(exc.status)
            stored = await pool.fetchval("SELECT txn_seq FROM idempotency_keys WHERE key = 'k'")
            return answers, int(stored)
        finally:
            await money.close()
            await pool.close()

    (first, second), stored = asyncio.run(run())
    assert getattr(first, "approved", False) and getattr(first, "txn_seq", 0) == stored, first
    assert second == 409, second
    moved = [r for r in _admin_rows(site) if r["amount_fen"] == 777]
    assert [(r["code"], r["txn_seq"]) for r in moved] == [(0, stored)]
