"""Counter money through the switch: journaled, idempotent, and nothing half-done.

The admin API and the switch run as real processes; the API is the site's admin terminal.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.admin_site import AdminSite, Api, site_with_switch

ADMIN_KIND = 6


@pytest.fixture
def money_site(db_dsn: str) -> Iterator[AdminSite]:
    yield from site_with_switch(db_dsn)


def _person(site: AdminSite) -> dict[str, Any]:
    row = site.fetch(
        "SELECT p.id, p.account_id, c.card_no FROM people p JOIN accounts a"
        " ON a.id = p.account_id JOIN cards c ON c.account_id = a.id WHERE a.status = 0"
        " AND c.status = 0 AND a.tenant_id = 1 ORDER BY p.id LIMIT 1")[0]
    return dict(row)


def _pay(api: Api, person_id: int, body: dict[str, Any], key: str,
         what: str = "topups") -> Any:
    return api.http.post(f"/people/{person_id}/{what}", json=body,
                         headers={"Idempotency-Key": key})


def _admin_rows(site: AdminSite) -> list[Any]:
    return site.fetch("SELECT j.* FROM journal j JOIN terminals t ON t.id = j.terminal_id"
                      " WHERE t.kind = $1 ORDER BY lsn", ADMIN_KIND)


def test_a_cash_top_up_is_journaled_once_however_often_it_is_sent(money_site: AdminSite
                                                                   ) -> None:
    root = money_site.api()
    cashier_node = money_site.tenant_node(1)
    root.ok("POST", "/users", {"username": "cashier", "password": "correct horse battery",
                               "role": "cashier", "node_id": cashier_node}, 201)
    cashier = money_site.api("cashier")
    person = _person(money_site)
    before = cashier.ok("GET", f"/people/{person['id']}/balance")
    key = str(uuid.uuid4())

    first = _pay(cashier, person["id"], {"amount_fen": 5_000}, key)
    assert first.status_code == 201, first.text
    answer = first.json()
    assert answer["result"] == "APPROVED" and answer["amount_fen"] == 5_000
    assert answer["main_fen"] == before["main_fen"] + 5_000
    assert answer["card_no"] == person["card_no"]

    again = _pay(cashier, person["id"], {"amount_fen": 5_000}, key)
    assert again.status_code == 201 and again.json() == answer
    assert again.headers.get("idempotent-replay") == "true"
    other = _pay(cashier, person["id"], {"amount_fen": 6_000}, key)
    assert other.status_code == 422 and "another request" in other.json()["detail"]

    rows = _admin_rows(money_site)
    assert len(rows) == 1 and rows[0]["amount_fen"] == 5_000
    assert rows[0]["txn_seq"] == answer["txn_seq"]
    after = cashier.ok("GET", f"/people/{person['id']}/balance")
    assert after["main_fen"] == before["main_fen"] + 5_000
    line = cashier.ok("GET", f"/people/{person['id']}/statement")["items"][-1]
    assert line["kind"] == "credit" and line["main_delta_fen"] == 5_000
    # The answer names the movement as the statement does.
    assert (answer["kind"], answer["txn_seq"]) == (line["kind"], line["txn_seq"])

    # The statement downloads as CSV with the same rows as the JSON (fen, and yuan beside it).
    items = root.ok("GET", f"/people/{person['id']}/statement?limit=1000")["items"]
    csv = root.get(f"/people/{person['id']}/statement?format=csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    rows = csv.content.decode("utf-8-sig").splitlines()
    assert rows[0].startswith("lsn,at,kind,result") and len(rows) == len(items) + 1
    assert rows[-1].startswith(f"{items[-1]['lsn']},") and ",credit,APPROVED," in rows[-1]
    xlsx = root.get(f"/cards/{person['card_no']}/history?format=xlsx")
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
    trail = root.ok("GET", f"/audit?entity=person&entity_id={person['id']}")["items"]
    assert [e["action"] for e in trail] == ["money.topup"]
    assert trail[0]["username"] == "cashier" and trail[0]["after"]["amount_fen"] == 5_000

    # Between wallets: main -> subsidy, journaled as one transfer.
    moved = _pay(cashier, person["id"], {"from_wallet": "main", "amount_fen": 1_000},
                 str(uuid.uuid4()), "transfers")
    assert moved.status_code == 201, moved.text
    assert moved.json()["kind"] == "transfer"
    assert cashier.ok("GET", f"/people/{person['id']}/statement")["items"][-1]["kind"] == (
        "transfer")
    assert moved.json()["subsidy_fen"] == after["subsidy_fen"] + 1_000
    assert moved.json()["main_fen"] == after["main_fen"] - 1_000

    auditor_body = {"username": "auditor", "password": "correct horse battery",
                    "role": "auditor", "node_id": cashier_node}
    root.ok("POST", "/users", auditor_body, 201)
    auditor = money_site.api("auditor")
    assert _pay(auditor, person["id"], {"amount_fen": 1}, "k").status_code == 403

    assert money_site.stop() == 0
    report = money_site.audit()
    assert report.conserved, report


def test_a_declined_top_up_says_why_and_moves_nothing(money_site: AdminSite) -> None:
    root = money_site.api()
    closed = money_site.fetch(
        "SELECT p.id FROM people p JOIN accounts a ON a.id = p.account_id JOIN cards c"
        " ON c.account_id = a.id WHERE a.status = 3 AND c.status = 0 ORDER BY p.id LIMIT 1")
    assert closed, "the seed has closed accounts"
    r = _pay(root, closed[0]["id"], {"amount_fen": 100}, str(uuid.uuid4()))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "ACCOUNT_CLOSED" in r.json()["detail"]
    assert all(row["code"] != 0 for row in _admin_rows(money_site))


def test_with_the_switch_down_nothing_is_half_done_and_the_retry_completes_once(
        money_site: AdminSite) -> None:
    root = money_site.api()
    person = _person(money_site)
    assert money_site.switch is not None
    port = money_site.switch.port
    assert money_site.stop() == 0
    key = str(uuid.uuid4())
    # Operators see it before anyone pays: the admin terminal's session metric drops to 0.
    deadline = time.monotonic() + 60
    while "onecard_admin_switch_connected 0.0" not in root.get("/metrics").text:
        assert time.monotonic() < deadline, "the session metric never showed the switch gone"
        time.sleep(0.05)
    down = _pay(root, person["id"], {"amount_fen": 700}, key)
    assert down.status_code == 503, down.text
    assert "same Idempotency-Key" in down.json()["detail"]
    assert _admin_rows(money_site) == []

    money_site.start(extra_env={"ONECARD_PORT": str(port)})
    # The API's session comes back after its reconnect back-off: a client retries the same key
    # while it answers 503, as the problem says (every retry reuses the one txn_seq).
    deadline = time.monotonic() + 60
    while (done := _pay(root, person["id"], {"amount_fen": 700}, key)).status_code == 503:
        assert time.monotonic() < deadline, done.text
    assert done.status_code == 201, done.text
    assert _pay(root, person["id"], {"amount_fen": 700}, key).json() == done.json()
    assert "onecard_admin_switch_connected 1.0" in root.get("/metrics").text
    rows = _admin_rows(money_site)
    assert [r["amount_fen"] for r in rows] == [700]
