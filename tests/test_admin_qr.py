"""GET /self/people/{id}/qr: a cardholder's phone QR code, paid with at a POS over real TCP.

The admin API signs the code with the QR key it derives from the site master secret; the switch
(a real process) verifies it with the key it derives from the same secret, lets it pay once, and
journals the purchase like a card's.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest

from protocols import ocp, qr
from tests.admin_site import PASSWORD, AdminSite, Api
from tests.switch_site import FREE_CANTEEN_TERMINAL

RC = ocp.ResponseCode


@pytest.fixture
def qr_site(db_dsn: str) -> Iterator[AdminSite]:
    s = AdminSite(db_dsn)
    s.start()
    s.start_admin()
    try:
        yield s
    finally:
        s.close()


def _user(site: AdminSite, root: Api, username: str, role: str, **extra: object) -> Api:
    root.ok("POST", "/users", {"username": username, "password": PASSWORD, "role": role,
                               "node_id": site.tenant_node(1), **extra}, 201)
    return site.api(username)


def test_a_cardholder_shows_a_qr_code_and_a_pos_is_paid_once(qr_site: AdminSite) -> None:
    site = qr_site
    root = site.api()
    person = site.fetch(
        "SELECT p.id, c.card_no FROM people p JOIN accounts a ON a.id = p.account_id"
        " JOIN cards c ON c.account_id = a.id WHERE p.tenant_id = 1 AND a.status = 0"
        " AND c.status = 0 AND a.class_id = 2 AND a.opening_main_fen >= 5000"
        " ORDER BY p.id LIMIT 1")[0]
    holder = _user(site, root, "holder", "cardholder", person_id=person["id"])
    before = holder.ok("GET", f"/self/people/{person['id']}/balance")["balance_fen"]

    r = holder.get(f"/self/people/{person['id']}/qr")
    assert r.status_code == 200, r.text
    assert "no-store" in r.headers["cache-control"]
    code = r.json()
    assert (code["person_id"], code["card_no"], code["expires_in"]) == (
        person["id"], person["card_no"], 60)
    issued = dt.datetime.fromisoformat(code["issued_at"])
    assert dt.datetime.fromisoformat(code["expires_at"]) - issued == dt.timedelta(seconds=60)
    assert abs(issued.timestamp() - time.time()) < 30
    token = qr.verify(qr.derive_qr_key(site.master), code["token"], int(time.time()))
    assert (token.card_no, token.expires_s - token.issued_s) == (person["card_no"], 60)
    # Every call gives a fresh code (a new nonce): each pays once on its own.
    assert holder.ok("GET", f"/self/people/{person['id']}/qr")["token"] != code["token"]

    pos = site.client(FREE_CANTEEN_TERMINAL)
    paid = pos.request(ocp.QrPurchase(1, code["token"], 1_200))
    assert isinstance(paid, ocp.PurchaseResult)
    assert (paid.code, paid.amount_fen, paid.balance_fen) == (RC.APPROVED, 1_200, before - 1_200)
    again = pos.request(ocp.QrPurchase(2, code["token"], 1_200))
    assert isinstance(again, ocp.Error) and again.code == RC.QR_USED
    pos.close()
    # The cardholder's own view shows the purchase, from the journal.
    assert holder.ok("GET", f"/self/people/{person['id']}/balance")["balance_fen"] == (
        before - 1_200)
    [entry] = holder.ok("GET", f"/self/people/{person['id']}/transactions")["items"]
    assert (entry["kind"], entry["result"], entry["card_no"], entry["amount_fen"]) == (
        "purchase", "APPROVED", person["card_no"], 1_200)


def test_only_the_cardholder_of_an_active_account_with_a_card_gets_a_code(
        qr_site: AdminSite) -> None:
    site = qr_site
    root = site.api()
    child, other = site.fetch(
        "SELECT p.id FROM people p JOIN accounts a ON a.id = p.account_id"
        " WHERE p.tenant_id = 1 AND a.status = 0"
        " AND EXISTS (SELECT 1 FROM cards c WHERE c.account_id = a.id AND c.status = 0)"
        " ORDER BY p.id LIMIT 2")
    holder = _user(site, root, "holder", "cardholder", person_id=child["id"])
    parent = _user(site, root, "parent", "parent", children=[child["id"]])
    # A parent sees their child's balance but does not pay with the child's account.
    r = parent.get(f"/self/people/{child['id']}/qr")
    assert r.status_code == 403 and r.headers["content-type"].startswith(
        "application/problem+json")
    assert holder.get(f"/self/people/{other['id']}/qr").status_code == 404
    assert root.get(f"/self/people/{child['id']}/qr").status_code == 403  # staff: no "self"
    assert holder.get(f"/self/people/{child['id']}/qr").status_code == 200

    # A card reported lost makes the account lost: no code (409), until it is unfrozen.
    [card] = holder.ok("GET", f"/self/people/{child['id']}/cards")
    holder.ok("POST", f"/self/cards/{card['card_no']}/report-loss")
    r = holder.get(f"/self/people/{child['id']}/qr")
    assert r.status_code == 409 and r.json()["type"].endswith("/account-not-active")
    assert "lost" in r.json()["detail"]

    # A person with no card: 409 too.
    newcomer = root.ok("POST", "/people", {"node_id": site.tenant_node(1), "name": "New Hire",
                                           "class_id": 2})
    hire = _user(site, root, "hire", "cardholder", person_id=newcomer["id"])
    r = hire.get(f"/self/people/{newcomer['id']}/qr")
    assert r.status_code == 409 and r.json()["type"].endswith("/no-active-card")
