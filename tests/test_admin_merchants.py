"""Merchants, terminals and meal windows through the admin API, with a real switch.

Real processes over real HTTP and TCP: the admin API (with the site's master secret), the switch
(with its change feed on the real Redis), one PostgreSQL. A terminal's key is shown once, at
registration or re-key; the switch learns a new terminal, a re-key and a disable within a second.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from admin_api import AdminSettings, SettingsError, load_settings
from onecard.harness import AdminProcess
from onecard.seed import ADMIN_TERMINAL, CANTEEN_FREE, CASH_DESK_MERCHANT, EAST_CANTEEN
from protocols import ocp
from tests.admin_site import PASSWORD, AdminSite, Api
from tests.ocp_client import OcpClient

PROPAGATION_SECONDS = 1.0
DEADLINE_SECONDS = 30.0


@pytest.fixture(scope="module")
def site(pg_server: Any, migrated_template: str) -> Iterator[AdminSite]:
    s = AdminSite(pg_server.new_database(template=migrated_template))
    s.start()
    s.start_admin()
    try:
        yield s
    finally:
        s.close()


def _user(site: AdminSite, username: str, role: str, node_id: int) -> Api:
    site.api().ok("POST", "/users", {"username": username, "password": PASSWORD, "role": role,
                                     "node_id": node_id}, 201)
    return site.api(username)


def _until(what: str, predicate: Callable[[], bool]) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > DEADLINE_SECONDS:
            raise AssertionError(f"{what}: not within {DEADLINE_SECONDS} s")
        time.sleep(0.01)
    return time.monotonic() - started


def _outbox(site: AdminSite, kind: str) -> list[dict[str, Any]]:
    return [json.loads(r["payload"]) for r in site.fetch(
        "SELECT payload::text AS payload FROM change_outbox WHERE kind = $1 ORDER BY id", kind)]


def _sign_on(site: AdminSite, terminal_id: int, key: bytes) -> tuple[Any, OcpClient | None]:
    """(what the switch said: a code, or "BAD_MAC" when it does not hold this key; the client
    when signed on)."""
    assert site.switch is not None
    c = OcpClient(site.switch.host, site.switch.port, terminal_id, key, timeout=10)
    try:
        c.sock.sendall(c.conn.start_sign_on(terminal_id, key, os.urandom(16)))
        first = c.next_message()
        if isinstance(first, ocp.Error):
            c.close()
            return int(first.code), None
        c.send(ocp.SignOnConfirm(0, 1, "test"))
        result = c.next_message()
    except ocp.OcpError:
        c.close()
        return "BAD_MAC", None
    if result.code != 0:
        c.close()
        return int(result.code), None
    c.sign_on_result = result
    return 0, c


def _signs_on(site: AdminSite, terminal_id: int, key: bytes) -> bool:
    code, client = _sign_on(site, terminal_id, key)
    if client is not None:
        client.close()
    return code == 0


def test_merchants_are_opened_changed_and_audited_with_dense_ids(site: AdminSite) -> None:
    root = site.api()
    campus = site.tenant_node(1)
    before_max = site.fetch("SELECT max(id) AS m FROM merchants")[0]["m"]
    shower = root.ok("POST", "/merchants", {
        "node_id": campus, "name": "Dorm 3 showers", "kind": "service", "mode": "fixed",
        "fixed_amount_fen": 200, "spend_order": "main_first", "fee_rate_bp": 60,
        "settlement_cycle": "monthly"}, 201)
    assert shower["id"] == before_max + 1, "merchant ids stay dense"
    assert shower == {"id": before_max + 1, "tenant_id": 1, "node_id": campus,
                      "name": "Dorm 3 showers", "kind": "service", "mode": "fixed",
                      "fixed_amount_fen": 200, "spend_order": "main_first", "fee_rate_bp": 60,
                      "settlement_cycle": "monthly"}
    row = site.fetch("SELECT * FROM merchants WHERE id = $1", shower["id"])[0]
    assert (row["tenant_id"], row["node_id"], row["mode"], row["fixed_amount_fen"],
            row["spend_order"], row["opening_balance_fen"], row["fee_rate_bp"]) == (
        1, campus, 1, 200, 1, 0, 60)
    assert _outbox(site, "merchant_opened")[-1] == {
        "merchant_id": shower["id"], "tenant_id": 1, "mode": 1, "fixed_amount_fen": 200,
        "spend_order": 1, "opening_balance_fen": 0}

    assert root.ok("GET", f"/merchants/{shower['id']}") == shower
    # Seeded merchants (no node of their own) belong to their tenant's node.
    assert root.ok("GET", f"/merchants/{CANTEEN_FREE}")["node_id"] == campus
    listed = root.ok("GET", f"/merchants?node_id={campus}&kind=service")["items"]
    assert [m["id"] for m in listed] == [shower["id"]]
    assert [m["id"] for m in root.ok("GET", "/merchants?q=showers")["items"]] == [shower["id"]]
    page1 = root.ok("GET", "/merchants?limit=3")
    page2 = root.ok("GET", f"/merchants?limit=3&after={page1['next_after']}")
    assert [m["id"] for m in page1["items"] + page2["items"]] == list(range(1, 7))

    # The fee changes nothing the switch holds: no event. The price does: MerchantConfigured
    # (a running switch sells at the new price at once), not another MerchantOpened.
    opened = len(_outbox(site, "merchant_opened"))
    configured = len(_outbox(site, "merchant_configured"))
    changed = root.ok("PATCH", f"/merchants/{shower['id']}", {"fee_rate_bp": 80})
    assert changed == {**shower, "fee_rate_bp": 80}
    assert len(_outbox(site, "merchant_configured")) == configured
    changed = root.ok("PATCH", f"/merchants/{shower['id']}", {"mode": "free"})
    assert (changed["mode"], changed["fixed_amount_fen"]) == ("free", 0)
    assert _outbox(site, "merchant_configured")[configured:] == [{
        "merchant_id": shower["id"], "mode": 0, "fixed_amount_fen": 0, "spend_order": 1}]
    assert len(_outbox(site, "merchant_opened")) == opened
    assert root.ok("PATCH", f"/merchants/{shower['id']}", {"mode": "free"}) == changed
    assert len(_outbox(site, "merchant_configured")) == configured + 1
    audit = root.ok("GET", f"/audit?entity=merchant&entity_id={shower['id']}")["items"]
    assert [a["action"] for a in audit] == ["merchant.create", "merchant.update",
                                            "merchant.update"]
    assert audit[1]["before"]["fee_rate_bp"] == 60 and audit[1]["after"]["fee_rate_bp"] == 80

    # Refused: a fixed price of 0, a price on a free till, a system account made or unmade,
    # a merchant above the tenants, unknown fields.
    r = root.post("/merchants", {"node_id": campus, "name": "x", "mode": "fixed"})
    assert r.status_code == 422, r.text
    r = root.post("/merchants", {"node_id": campus, "name": "x", "fixed_amount_fen": 5})
    assert r.status_code == 422, r.text
    r = root.http.patch(f"/merchants/{shower['id']}", json={"kind": "system"})
    assert r.status_code == 409, r.text
    r = root.post("/merchants", {"node_id": site.boot.platform_node_id, "name": "x"})
    assert r.status_code == 422, r.text
    r = root.post("/merchants", {"node_id": campus, "name": "x", "colour": "red"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "colour", r.text
    r = root.post("/merchants", {"node_id": campus, "name": "x", "fee_rate_bp": 10_001})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "fee_rate_bp", r.text


def test_merchant_viewers_and_tenant_admins_see_only_their_subtree(site: AdminSite) -> None:
    root = site.api()
    campus, east = site.tenant_node(1), site.tenant_node(2)
    dept = root.ok("POST", "/org/nodes", {"parent_id": campus, "kind": "department",
                                          "name": "Logistics"})
    shop = root.ok("POST", "/merchants", {"node_id": dept["id"], "name": "Logistics kiosk",
                                          "kind": "shop"})
    viewer = _user(site, "logistics.viewer", "merchant_viewer", dept["id"])
    assert [m["id"] for m in viewer.ok("GET", "/merchants")["items"]] == [shop["id"]]
    assert viewer.ok("GET", f"/merchants/{shop['id']}") == shop
    assert viewer.get(f"/merchants/{CANTEEN_FREE}").status_code == 404
    assert viewer.get(f"/merchants/{CANTEEN_FREE}/terminals").status_code == 404
    assert viewer.post("/merchants", {"node_id": dept["id"], "name": "x"}).status_code == 403
    # A department's log-in reads its tenant's meal windows, and changes them nowhere.
    assert viewer.ok("GET", "/tenants/1/meal-windows")["tenant_id"] == 1
    assert viewer.http.put("/tenants/1/meal-windows", json={"windows": []}).status_code == 403

    east_admin = _user(site, "east.merchants", "tenant_admin", east)
    ids = [m["id"] for m in east_admin.ok("GET", "/merchants")["items"]]
    assert EAST_CANTEEN in ids and ids == [r["id"] for r in site.fetch(
        "SELECT id FROM merchants WHERE tenant_id = 2 ORDER BY id")]
    for path in (f"/merchants/{CANTEEN_FREE}", f"/merchants/{shop['id']}",
                 f"/merchants/{CANTEEN_FREE}/terminals", "/terminals/1",
                 "/tenants/1/meal-windows", f"/merchants?node_id={campus}"):
        r = east_admin.get(path)
        assert r.status_code == 404, (path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    for method, path, body in (
            ("PATCH", f"/merchants/{CANTEEN_FREE}", {"name": "mine now"}),
            ("POST", f"/merchants/{CANTEEN_FREE}/terminals", {"kind": "pos"}),
            ("POST", "/terminals/1/disable", None), ("POST", "/terminals/1/rekey", None),
            ("PUT", "/tenants/1/meal-windows", {"windows": []}),
            ("POST", "/merchants", {"node_id": dept["id"], "name": "x"})):
        r = east_admin.http.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
    assert root.ok("GET", f"/merchants/{CANTEEN_FREE}")["name"] == "No.2 canteen"
    assert root.ok("GET", "/terminals/1")["status"] == "enabled"
    mine = east_admin.ok("POST", "/merchants", {"node_id": east, "name": "East shop",
                                                "kind": "shop"}, 201)
    assert mine["tenant_id"] == 2


def test_a_terminal_key_is_shown_once_and_a_rekey_revokes_the_old_one(site: AdminSite) -> None:
    root = site.api()
    campus = site.tenant_node(1)
    canteen = root.ok("POST", "/merchants", {"node_id": campus, "name": "No.3 canteen"}, 201)
    terminals_max = site.fetch("SELECT max(id) AS m FROM terminals")[0]["m"]
    issued = root.post(f"/merchants/{canteen['id']}/terminals", {"kind": "pos",
                                                                 "name": "till 1"})
    assert issued.status_code == 201, issued.text
    assert "no-store" in issued.headers["cache-control"]
    terminal, key_hex = issued.json()["terminal"], issued.json()["key_hex"]
    tid = terminal["id"]
    assert tid == terminals_max + 1, "terminal ids stay dense"
    assert terminal == {"id": tid, "merchant_id": canteen["id"], "kind": "pos", "name": "till 1",
                        "key_version": 1, "status": "enabled"}
    key = bytes.fromhex(key_hex)
    assert key == ocp.derive_terminal_key(site.master, tid, 1)
    assert _outbox(site, "terminal_upserted")[-1] == {
        "terminal_id": tid, "merchant_id": canteen["id"], "kind": 1, "key_version": 1,
        "enabled": True}

    # The new merchant and terminal reach the running switch: it signs on and sells.
    waited = _until("the new terminal signs on", lambda: _signs_on(site, tid, key))
    assert waited < PROPAGATION_SECONDS, f"the new terminal took {waited:.3f} s"
    code, till = _sign_on(site, tid, key)
    assert code == 0 and till is not None
    card = site.card(class_id=2, min_main=5_000)
    answer = till.request(ocp.Purchase(1, card["card_no"], 123, int(time.time() * 1000)))
    assert answer.code == ocp.ResponseCode.APPROVED, answer
    journal = site.journal(tid, 1)
    assert journal[0]["merchant_id"] == canteen["id"] and journal[0]["amount_fen"] == 123

    # No read shows the key: not the terminal, not the list, not the audit trail.
    for path in (f"/terminals/{tid}", f"/merchants/{canteen['id']}/terminals",
                 f"/audit?entity=terminal&entity_id={tid}"):
        r = root.get(path)
        assert r.status_code == 200 and key_hex not in r.text.lower(), path
        assert "key_hex" not in r.text, path
    shown = root.ok("GET", f"/terminals/{tid}")
    assert {k: shown[k] for k in terminal} == terminal
    assert shown["online"] is True and shown["peer"], "the till is signed on (terminal_presence)"

    # Re-key: the live session ends, the old key is refused within a second, the new one works.
    rekeyed = root.ok("POST", f"/terminals/{tid}/rekey")
    assert rekeyed["terminal"]["key_version"] == 2
    new_key = bytes.fromhex(rekeyed["key_hex"])
    assert new_key == ocp.derive_terminal_key(site.master, tid, 2) and new_key != key
    assert _outbox(site, "terminal_upserted")[-1]["key_version"] == 2
    started = time.monotonic()
    till.read_until_closed()
    assert time.monotonic() - started < PROPAGATION_SECONDS + 1, "the session outlived re-key"
    till.close()
    waited = _until("the old key is refused", lambda: _sign_on(site, tid, key)[0] == "BAD_MAC")
    assert waited < PROPAGATION_SECONDS, f"the old key worked {waited:.3f} s after re-key"
    assert _signs_on(site, tid, new_key)
    assert site.fetch("SELECT key_version FROM terminals WHERE id = $1", tid)[0][0] == 2

    # Disabled: refused at sign-on; enabled: back.
    assert root.ok("POST", f"/terminals/{tid}/disable")["status"] == "disabled"
    waited = _until("the disabled terminal is refused", lambda: _sign_on(site, tid, new_key)[0]
                    == ocp.ResponseCode.TERMINAL_DISABLED)
    assert waited < PROPAGATION_SECONDS
    assert root.ok("POST", f"/terminals/{tid}/disable")["status"] == "disabled"  # no-op
    assert root.ok("POST", f"/terminals/{tid}/enable")["status"] == "enabled"
    _until("the enabled terminal signs on", lambda: _signs_on(site, tid, new_key))
    actions = [a["action"] for a in
               root.ok("GET", f"/audit?entity=terminal&entity_id={tid}")["items"]]
    assert actions == ["terminal.register", "terminal.rekey", "terminal.disable",
                       "terminal.enable"]

    # Admin terminals (counter money) belong to system merchants, and only they do.
    r = root.post(f"/merchants/{canteen['id']}/terminals", {"kind": "admin"})
    assert r.status_code == 422, r.text
    r = root.post(f"/merchants/{CASH_DESK_MERCHANT}/terminals", {"kind": "pos"})
    assert r.status_code == 422, r.text
    desk = root.ok("POST", f"/merchants/{CASH_DESK_MERCHANT}/terminals", {"kind": "admin"}, 201)
    assert desk["terminal"]["kind"] == "admin" and desk["terminal"]["id"] == tid + 1


def test_meal_windows_go_out_as_tenant_configured(site: AdminSite) -> None:
    root = site.api()
    seeded = root.ok("GET", "/tenants/2/meal-windows")
    assert seeded == {"tenant_id": 2, "utc_offset_s": 28800, "windows": [
        {"name": "lunch", "start_minute": 690, "end_minute": 810}]}
    windows = [{"name": "dinner", "start_minute": 1020, "end_minute": 1170},
               {"name": "lunch", "start_minute": 660, "end_minute": 810}]
    out = root.ok("PUT", "/tenants/2/meal-windows", {"windows": windows})
    assert out["windows"] == sorted(windows, key=lambda w: w["start_minute"])
    assert root.ok("GET", "/tenants/2/meal-windows") == out
    assert _outbox(site, "tenant_configured")[-1] == {
        "tenant_id": 2, "utc_offset_s": 28800, "meal_windows": [[660, 810], [1020, 1170]]}
    rows = site.fetch("SELECT idx, name FROM tenant_meal_windows WHERE tenant_id = 2"
                      " ORDER BY idx")
    assert [(r["idx"], r["name"]) for r in rows] == [(0, "lunch"), (1, "dinner")]
    assert [a["action"] for a in root.ok("GET", "/audit?entity=tenant&entity_id=2")["items"]
            ] == ["tenant.meal_windows"]
    for bad in ([{"name": "a", "start_minute": 600, "end_minute": 700},
                 {"name": "b", "start_minute": 650, "end_minute": 800}],
                [{"name": "a", "start_minute": 700, "end_minute": 600}],
                [{"name": "a", "start_minute": 0, "end_minute": 60},
                 {"name": "a", "start_minute": 60, "end_minute": 120}]):
        r = root.http.put("/tenants/2/meal-windows", json={"windows": bad})
        assert r.status_code == 422, (bad, r.text)
    r = root.http.put("/tenants/2/meal-windows", json={"windows": [
        {"name": "=cmd()", "start_minute": 0, "end_minute": 60}]})
    assert r.status_code == 400, r.text
    r = root.http.put("/tenants/2/meal-windows", json={"windows": [
        {"name": f"m{n}", "start_minute": n, "end_minute": n + 1} for n in range(9)]})
    assert r.status_code == 400, r.text
    assert root.get("/tenants/99/meal-windows").status_code == 404


def test_without_a_master_secret_no_key_is_issued(site: AdminSite) -> None:
    other = AdminProcess(site.dsn, "", extra_env={
        "ONECARD_ADMIN_MASTER_SECRET": "", "ONECARD_ADMIN_SWITCH_TERMINAL_ID": str(ADMIN_TERMINAL),
    }).start()
    try:
        root = Api(other.url, "root")
        r = root.post(f"/merchants/{CANTEEN_FREE}/terminals", {"kind": "pos"})
        assert r.status_code == 503, r.text
        assert r.json()["type"].endswith("/not-configured")
        assert root.post("/terminals/1/rekey").status_code == 503
        assert site.fetch("SELECT key_version FROM terminals WHERE id = 1")[0][0] == 1
        # The API's own admin terminal is not cut off under its feet.
        for action in ("rekey", "disable"):
            r = root.post(f"/terminals/{ADMIN_TERMINAL}/{action}")
            assert r.status_code == 409, r.text
        root.close()
    finally:
        other.stop()


def test_the_master_secret_setting_is_checked_and_never_shown() -> None:
    secret = "ab" * 32
    s = load_settings(env={"ONECARD_DSN": "postgresql://x/y", "ONECARD_MASTER_SECRET": secret})
    assert s.master_secret == secret and s.master_secret_bytes == bytes.fromhex(secret)
    assert secret not in repr(s) and "master_secret='***'" in repr(s)
    s = load_settings(env={"ONECARD_DSN": "postgresql://x/y", "ONECARD_MASTER_SECRET": secret,
                           "ONECARD_ADMIN_MASTER_SECRET": "cd" * 40})
    assert s.master_secret == "cd" * 40
    with pytest.raises(SettingsError, match=r"master_secret .*32 to 64 bytes of hex") as exc:
        load_settings(env={"ONECARD_DSN": "postgresql://x/y",
                           "ONECARD_ADMIN_MASTER_SECRET": "ab" * 16})
    assert "ab" * 16 not in str(exc.value)
    assert AdminSettings(dsn="postgresql://x/y").master_secret == ""
