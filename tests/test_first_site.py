"""A first site from an empty database, exactly as docs/admin_api.md "A first site" says.

An empty PostgreSQL database; `onecard migrate`; `onecard admin-init --tenant ...` (platform,
the first tenant with its system accounts and meal windows, the admin terminal, the first
admin); `onecard switch` and `onecard admin` as real processes; then, only through the API: an
identity class, a canteen and its POS, a person with a card, a cash top-up; and a purchase at
the POS over OCP is approved. Before that, `admin-init` without a tenant on the empty site
says so in one line and writes nothing.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Literal, TypeVar

import pytest

from onecard.harness import AdminProcess, SwitchProcess
from protocols import ocp
from tests import pg
from tests.admin_site import Api
from tests.ocp_client import OcpClient
from tests.switch_site import _fetch as fetch
from tests.switch_site import run

PASSWORD = "a long password"
DEADLINE_SECONDS = 60.0
T = TypeVar("T")


def onecard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onecard", *args], capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "ONECARD_ADMIN_PASSWORD": PASSWORD})


def count(dsn: str, table: str) -> int:
    return int(run(fetch(dsn, f"SELECT count(*) AS n FROM {table}"))[0]["n"])


def until(what: str, attempt: Callable[[], T | Literal[False] | None]) -> T:
    """The first truthy result of `attempt()`; fails after DEADLINE_SECONDS."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not (result := attempt()):
        assert time.monotonic() < deadline, f"{what}: not within {DEADLINE_SECONDS} s"
        time.sleep(0.05)
    return result


def signed_on_till(switch: SwitchProcess, terminal_id: int, key: bytes) -> OcpClient:
    """A till signed on, once the switch knows the terminal (a refused sign-on, or a
    connection the switch closes, is tried again)."""

    def attempt() -> OcpClient | None:
        till = OcpClient(switch.host, switch.port, terminal_id, key)
        try:
            if till.sign_on().code == ocp.ResponseCode.APPROVED:
                return till
        except (AssertionError, OSError, ocp.OcpError):
            pass
        till.close()
        return None

    return until(f"terminal {terminal_id} signs on", attempt)


@pytest.fixture
def master() -> bytes:
    return os.urandom(32)


def test_documented_first_site_serves_a_first_purchase(pg_server: pg.TestServer,
                                                        master: bytes) -> None:
    dsn = pg_server.new_database()  # createdb onecard
    migrated = onecard("migrate", "--dsn", dsn)
    assert migrated.returncode == 0, migrated.stderr

    # Without a tenant the site cannot have a cash desk: one line, nothing written.
    refused = onecard("admin-init", "--dsn", dsn)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "onecard admin-init: the site has no tenant yet: give the first one's name "
        "(onecard admin-init --tenant NAME); nothing was written"]
    # Meal windows that overlap, a time that is not one, an offset past 14 hours: one line
    # each, nothing written.
    overlap = onecard("admin-init", "--dsn", dsn, "--tenant", "North Campus", "--meal-windows",
                      "lunch=11:00-13:30,dinner=13:00-19:00")
    assert overlap.returncode == 1
    assert overlap.stderr.strip().splitlines() == [
        "onecard admin-init: meal windows 'lunch' and 'dinner' overlap"]
    for option, value, message in (
            ("--meal-windows", "lunch=11-13", "argument --meal-windows: '11' is not HH:MM"),
            ("--utc-offset", "+15:00", "argument --utc-offset: '+15:00' is not an offset from "
                                       "-14:00 to +14:00")):
        bad = onecard("admin-init", "--dsn", dsn, "--tenant", "North Campus", f"{option}={value}")
        assert bad.returncode == 2 and bad.stderr.strip().endswith(message), bad.stderr
    for table in ("org_nodes", "tenants", "tenant_meal_windows", "merchants", "terminals",
                  "admin_users", "audit_log", "change_outbox"):
        assert count(dsn, table) == 0, table

    init = onecard("admin-init", "--dsn", dsn, "--tenant", "North Campus")
    assert init.returncode == 0, init.stderr
    assert "tenant 1 'North Campus' created" in init.stdout
    again = onecard("admin-init", "--dsn", dsn, "--tenant", "North Campus")
    assert again.returncode == 0 and "tenant 'North Campus' existed" in again.stdout, again
    [tenant] = run(fetch(dsn, "SELECT id, name, utc_offset_s FROM tenants"))
    assert (tenant["name"], tenant["utc_offset_s"]) == ("North Campus", 8 * 3600)
    assert count(dsn, "system_accounts") == 4  # cash desk, subsidy, adjustments, bank

    switch = SwitchProcess(dsn, master.hex()).start()
    admin = None
    try:
        admin = AdminProcess(dsn, master.hex(), extra_env={
            "ONECARD_ADMIN_SWITCH_PORT": str(switch.port)}).start()
        api = Api(admin.url, "admin", PASSWORD)
        nodes = api.ok("GET", "/org/nodes")
        assert [(n["kind"], n["name"]) for n in nodes] == [("platform", "Headquarters"),
                                                           ("tenant", "North Campus")]
        node = nodes[1]["id"]
        windows = api.ok("GET", f"/tenants/{tenant['id']}/meal-windows")["windows"]
        assert [w["name"] for w in windows] == ["breakfast", "lunch", "dinner"]

        student = api.ok("POST", "/classes", {"name": "student"})["id"]
        canteen = api.ok("POST", "/merchants", {"node_id": node, "name": "North canteen"})["id"]
        pos = api.ok("POST", f"/merchants/{canteen}/terminals", {"kind": "pos"})
        person = api.ok("POST", "/people", {"node_id": node, "name": "Zhao Lei",
                                            "class_id": student})["id"]
        card_no = 9_100_000_000_001
        api.ok("POST", f"/people/{person}/cards", {"card_no": card_no})

        # The switch learns of the POS and the card from the change feed (within a second):
        # the till signs on, and a balance inquiry knows the card.
        till = signed_on_till(switch, pos["terminal"]["id"], bytes.fromhex(pos["key_hex"]))
        try:
            seq = itertools.count(1)
            until("the switch knows the card", lambda: till.request(
                ocp.BalanceInquiry(next(seq), card_no)).code == ocp.ResponseCode.APPROVED)
            # A cash top-up; 503 while the API's admin terminal signs on: the same key again.
            key = {"Idempotency-Key": str(uuid.uuid4())}
            topup = until("the top-up is answered", lambda: (r := api.http.post(
                f"/people/{person}/topups", json={"amount_fen": 5000}, headers=key)
            ).status_code != 503 and r)
            assert topup.status_code == 201, topup.text
            assert topup.json()["main_fen"] == 5000
            answer = till.request(ocp.Purchase(next(seq), card_no, 1250,
                                               int(time.time() * 1000)))
        finally:
            till.close()
        assert answer.code == ocp.ResponseCode.APPROVED, answer
        assert answer.main_fen == 5000 - 1250
        balance = api.ok("GET", f"/people/{person}/balance")
        assert balance["balance_fen"] == 5000 - 1250
        api.close()
    finally:
        if admin is not None:
            admin.stop()
        assert switch.stop() == 0, switch.log_tail()
