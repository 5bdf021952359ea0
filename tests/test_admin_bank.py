"""The bank domain of the admin API: PINs, bound bank cards, automatic top-up, bank settings.

Only the masked card number is ever answered, audited or put on the change feed; the full
number is kept sealed under the bank-card key; a PIN is kept only as its argon2id hash and is
never audited. Every change is audited and on the feed; role and subtree are checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from protocols.bank_card import bank_card_key, open_pan
from tests.admin_site import PASSWORD, AdminSite

PAN = "6222021234567890128"  # Luhn-valid
MASKED = "622202*********0128"


@pytest.fixture(scope="module")
def bank_site(pg_server: Any, migrated_template: str) -> Iterator[AdminSite]:
    site = AdminSite(pg_server.new_database(template=migrated_template))
    site.start_admin()
    try:
        yield site
    finally:
        site.close()


def _person(site: AdminSite, tenant_id: int = 1, skip: int = 0) -> dict[str, Any]:
    return dict(site.fetch("SELECT p.id, p.account_id FROM people p WHERE p.tenant_id = $1"
                           " ORDER BY p.id OFFSET $2 LIMIT 1", tenant_id, skip)[0])


def _everything_said(site: AdminSite) -> str:
    audit = site.fetch("SELECT action, before::text, after::text FROM audit_log")
    feed = site.fetch("SELECT kind, payload::text FROM change_outbox")
    return repr([tuple(r) for r in audit]) + repr([tuple(r) for r in feed])


def test_card_office_binds_and_unbinds_masked_only(bank_site: AdminSite) -> None:
    root = bank_site.api()
    root.ok("POST", "/users", {"username": "office.bank", "password": PASSWORD,
                               "role": "card_office", "node_id": bank_site.tenant_node(1)}, 201)
    office = bank_site.api("office.bank")
    person = _person(bank_site)
    pid = person["id"]
    bad = office.post(f"/people/{pid}/bank-card", {"pan": PAN[:-1] + "9", "bank_token": "T1"})
    assert bad.status_code == 422 and "check digit" in bad.text
    card = office.ok("POST", f"/people/{pid}/bank-card",
                     {"pan": PAN, "bank_token": "TOKEN-1"}, 201)
    assert card["pan_masked"] == MASKED and PAN not in repr(card)
    assert office.ok("GET", f"/people/{pid}/bank-card")["pan_masked"] == MASKED
    [row] = bank_site.fetch("SELECT * FROM bank_cards WHERE account_id = $1"
                            " AND unbound_at IS NULL", person["account_id"])
    key = bank_card_key(bank_site.master)
    assert open_pan(key, person["account_id"], row["pan_encrypted"]) == PAN
    assert PAN not in bytes(row["pan_encrypted"]).decode("latin-1")
    auto = office.ok("PUT", f"/people/{pid}/bank-card/auto-topup",
                     {"auto_threshold_fen": 2_000, "auto_amount_fen": 5_000})
    assert (auto["auto_threshold_fen"], auto["auto_amount_fen"]) == (2_000, 5_000)
    half = office.http.put(f"/people/{pid}/bank-card/auto-topup",
                           json={"auto_threshold_fen": 2_000, "auto_amount_fen": 0})
    assert half.status_code == 422
    assert office.http.delete(f"/people/{pid}/bank-card").status_code == 204
    assert office.get(f"/people/{pid}/bank-card").status_code == 404
    said = _everything_said(bank_site)
    assert PAN not in said and "TOKEN-1" not in said
    assert "bank_card.bind" in said and "bank_card.unbind" in said and MASKED in said
    kinds = [r["kind"] for r in bank_site.fetch(
        "SELECT kind FROM change_outbox WHERE kind = 'bank_card_changed' ORDER BY id")]
    assert len(kinds) == 3  # bind, auto top-up, unbind
    # Another tenant's person is not in a tenant-1 card office's part of the organisation.
    east = root.ok("POST", "/people", {"node_id": bank_site.tenant_node(2),
                                       "name": "East Person", "class_id": 2})
    assert office.post(f"/people/{east['id']}/bank-card",
                       {"pan": PAN, "bank_token": "T2"}).status_code == 404
    assert office.http.put(f"/people/{east['id']}/pin", json={"pin": "1234"}).status_code == 404


def test_pins_are_hashed_and_never_said(bank_site: AdminSite) -> None:
    root = bank_site.api()
    person, other = _person(bank_site, skip=1), _person(bank_site, skip=2)
    assert root.http.put(f"/people/{person['id']}/pin", json={"pin": "12a4"}).status_code == 400
    assert root.http.put(f"/people/{person['id']}/pin", json={"pin": "987654"}
                         ).status_code == 204
    bank_site.fetch("UPDATE cardholder_pins SET failed_tries = 5, locked = true"
                    " WHERE account_id = $1", person["account_id"])
    root.ok("POST", "/users", {"username": "holder.pin", "password": PASSWORD,
                               "role": "cardholder", "node_id": bank_site.tenant_node(1),
                               "person_id": person["id"]}, 201)
    holder = bank_site.api("holder.pin")
    # The cardholder sets a new PIN: it unlocks; and only their own.
    assert holder.http.put(f"/self/people/{person['id']}/pin", json={"pin": "246810"}
                           ).status_code == 204
    [pin] = bank_site.fetch("SELECT * FROM cardholder_pins WHERE account_id = $1",
                            person["account_id"])
    assert pin["pin_hash"].startswith("$argon2id$") and not pin["locked"]
    assert pin["failed_tries"] == 0
    assert holder.http.put(f"/self/people/{other['id']}/pin", json={"pin": "1111"}
                           ).status_code == 404
    assert holder.http.put(f"/people/{person['id']}/pin", json={"pin": "1111"}
                           ).status_code == 403
    said = _everything_said(bank_site)
    assert "987654" not in said and "246810" not in said and "pin.set" in said


def test_bank_settings_by_tenant(bank_site: AdminSite) -> None:
    root = bank_site.api()
    assert root.ok("GET", "/tenants/1/bank-settings")["enabled"] is True
    out = root.ok("PUT", "/tenants/1/bank-settings",
                  {"enabled": False, "single_max_fen": 50_000, "daily_card_max_fen": 80_000,
                   "daily_account_max_fen": 100_000})
    assert out["enabled"] is False and out["single_max_fen"] == 50_000
    [row] = bank_site.fetch("SELECT * FROM tenant_bank_settings WHERE tenant_id = 1")
    assert not row["enabled"] and row["daily_card_max_fen"] == 80_000
    assert bank_site.fetch("SELECT 1 FROM change_outbox WHERE kind = 'bank_settings_changed'")
    assert bank_site.fetch("SELECT 1 FROM audit_log WHERE action = 'bank_settings.set'")
    root.ok("POST", "/users", {"username": "east.admin.bank", "password": PASSWORD,
                               "role": "tenant_admin", "node_id": bank_site.tenant_node(2)},
            201)
    east = bank_site.api("east.admin.bank")
    assert east.http.put("/tenants/1/bank-settings", json={"enabled": True}).status_code == 404
    assert east.get("/tenants/1/bank-settings").status_code == 404
