"""Terminals online (issue 13): the switch writes terminal_presence in its group commit, the
admin API shows it. Real processes: the switch, the admin API, the loadtest client's terminals
and the test OCP client over TCP, one PostgreSQL (docs/operations.md "Terminals online").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from loadtest import CardPool, LoadGenerator, TerminalSpec
from onecard.harness import free_port
from onecard.seed import CANTEEN_FREE, EAST_CANTEEN
from protocols import ocp
from tests.admin_site import PASSWORD, AdminSite, Api

DEADLINE_SECONDS = 30.0
CAMPUS_POS = (1, 5)  # terminals of merchant CANTEEN_FREE (tenant 1)
EAST_POS = (4, 9)  # terminals of EAST_CANTEEN (tenant 2)


@pytest.fixture(scope="module")
def site(pg_server: Any, migrated_template: str) -> Iterator[AdminSite]:
    s = AdminSite(pg_server.new_database(template=migrated_template))
    s.port = free_port()  # type: ignore[attr-defined]
    s.start(extra_env={"ONECARD_PORT": str(s.port)})  # type: ignore[attr-defined]
    s.start_admin()
    try:
        yield s
    finally:
        s.close()


def _restart(site: AdminSite) -> None:
    site.start(extra_env={"ONECARD_PORT": str(site.port)})  # type: ignore[attr-defined]


def _user(site: AdminSite, username: str, role: str, node_id: int) -> Api:
    site.api().ok("POST", "/users", {"username": username, "password": PASSWORD, "role": role,
                                     "node_id": node_id}, 201)
    return site.api(username)


def _until(what: str, predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {DEADLINE_SECONDS} s")
        time.sleep(0.02)


def _online(api: Api, terminal_id: int) -> bool:
    return bool(api.ok("GET", f"/terminals/{terminal_id}")["online"])


def _row(site: AdminSite, terminal_id: int) -> Any:
    rows = site.fetch("SELECT * FROM terminal_presence WHERE terminal_id = $1", terminal_id)
    return rows[0] if rows else None


class Terminals:
    """The loadtest client's terminals, signed on in a thread's event loop of their own."""

    def __init__(self, site: AdminSite, terminal_ids: tuple[int, ...]) -> None:
        assert site.switch is not None
        specs = [TerminalSpec(t, site.key(t)) for t in terminal_ids]
        self.gen = LoadGenerator(site.switch.host, site.switch.port, specs, CardPool(cards=[]))
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(asyncio.wait_for(self.gen.connect(), DEADLINE_SECONDS))

    def close(self) -> None:
        self.gen.close()
        self.loop.run_until_complete(asyncio.sleep(0.05))  # let the transports close
        self.loop.close()


def test_a_pos_is_online_while_signed_on_and_offline_after(site: AdminSite) -> None:
    root = site.api()
    campus_viewer = _user(site, "campus.viewer", "merchant_viewer", site.tenant_node(1))
    east_admin = _user(site, "east.admin", "tenant_admin", site.tenant_node(2))
    before = root.ok("GET", f"/terminals/{CAMPUS_POS[0]}")
    assert (before["online"], before["online_since"], before["peer"]) == (False, None, None)

    sim = Terminals(site, CAMPUS_POS + EAST_POS)
    try:
        _until("the POS terminals show online",
               lambda: all(_online(root, t) for t in CAMPUS_POS + EAST_POS))
        seen = root.ok("GET", f"/terminals/{CAMPUS_POS[0]}")
        assert seen["peer"].startswith("127.0.0.1:") and seen["online_since"]
        assert seen["signed_on_at"] == seen["online_since"]
        # A viewer sees the state, not the address (merchants.write only).
        viewed = campus_viewer.ok("GET", f"/terminals/{CAMPUS_POS[0]}")
        assert viewed["online"] is True and viewed["peer"] is None
        # The filter: the merchant's signed-on terminals, and the others.
        on = root.ok("GET", f"/merchants/{CANTEEN_FREE}/terminals?online=true")["items"]
        off = root.ok("GET", f"/merchants/{CANTEEN_FREE}/terminals?online=false")["items"]
        assert {t["id"] for t in on} == set(CAMPUS_POS)
        assert off and not {t["id"] for t in off} & set(CAMPUS_POS)
        assert all(not t["online"] for t in off)
        assert root.get(f"/merchants/{CANTEEN_FREE}/terminals?online=maybe").status_code == 400
        # Another park: none of it is visible.
        for path in (f"/terminals/{CAMPUS_POS[0]}",
                     f"/merchants/{CANTEEN_FREE}/terminals?online=true"):
            assert east_admin.get(path).status_code == 404, path
        east = east_admin.ok("GET", f"/merchants/{EAST_CANTEEN}/terminals?online=true")["items"]
        assert {t["id"] for t in east} == set(EAST_POS)
        assert all(t["peer"] for t in east)  # a tenant admin manages its terminals
        # The operations page: this subtree's terminals by kind.
        ops = east_admin.ok("GET", "/operations/status")["terminals"]
        assert ops == {"pos": {"online": 2, "total": 2}}, ops
        campus = campus_viewer.ok("GET", "/operations/status")["terminals"]
        assert campus["pos"]["online"] == 2 and campus["pos"]["total"] >= 6, campus
    finally:
        sim.close()
    _until("the POS terminals show offline",
           lambda: not any(_online(root, t) for t in CAMPUS_POS + EAST_POS))
    gone = root.ok("GET", f"/terminals/{CAMPUS_POS[0]}")
    assert gone["online_since"] > seen["online_since"] and gone["peer"] == seen["peer"]
    assert east_admin.ok("GET", "/operations/status")["terminals"] == {
        "pos": {"online": 0, "total": 2}}


def test_a_session_replacing_another_keeps_the_terminal_online(site: AdminSite) -> None:
    root = site.api()
    tid, barrier = CAMPUS_POS
    first = site.client(tid)
    _until("signed on", lambda: _online(root, tid))
    row = _row(site, tid)
    second = site.client(tid)
    # The first session is ended with SESSION_REPLACED: read until the switch closed it.
    ended = first.read_until_closed()
    assert any(isinstance(m, ocp.Error) and m.code == ocp.ResponseCode.SESSION_REPLACED
               for m in ended), ended
    first.close()
    # Another terminal's sign-on after that end: once it shows, every write before it has
    # been made (one writer, in order).
    third = site.client(barrier)
    _until("the barrier terminal shows online", lambda: _online(root, barrier))
    now = _row(site, tid)
    assert now["online"] and now["sessions"] == row["sessions"] + 1
    assert now["since"] == row["since"] and now["signed_on_at"] > row["signed_on_at"]
    second.close()
    third.close()
    _until("offline once its current session ends",
           lambda: not _online(root, tid) and not _online(root, barrier))


def test_a_killed_switch_leaves_no_terminal_online(site: AdminSite) -> None:
    root = site.api()
    door = site.fetch("INSERT INTO doors (tenant_id, name) VALUES (1, 'presence door')"
                      " RETURNING id")[0]["id"]
    sim = Terminals(site, CAMPUS_POS)
    try:
        _until("online", lambda: all(_online(root, t) for t in CAMPUS_POS))
        # A door said online by the killed switch: the same staleness, the same cure.
        site.fetch("INSERT INTO access_door_states (door_id, tenant_id, online)"
                   " VALUES ($1, 1, true)", door)
        assert site.switch is not None
        site.switch.kill()
        # Nobody but the switch writes it: the rows still say online...
        assert all(_row(site, t)["online"] for t in CAMPUS_POS)
    finally:
        sim.close()
    # ... until the switch starts again, which clears them before it accepts anybody.
    _restart(site)
    assert not any(_online(root, t) for t in CAMPUS_POS)
    # (The admin API's own terminal may be back already: it reconnects by itself.)
    assert not site.fetch("SELECT 1 FROM terminal_presence WHERE online"
                          " AND terminal_id = ANY($1::int[])", list(CAMPUS_POS))
    assert not site.fetch("SELECT 1 FROM access_door_states WHERE online")
    # They sign on again: online again.
    sim = Terminals(site, CAMPUS_POS)
    try:
        _until("online after the restart", lambda: all(_online(root, t) for t in CAMPUS_POS))
        # A clean stop marks them offline too (after its last commit).
        assert site.stop() == 0
        assert not site.fetch("SELECT 1 FROM terminal_presence WHERE online")
    finally:
        sim.close()
        _restart(site)


def test_a_failed_presence_write_costs_the_tills_nothing(site: AdminSite) -> None:
    """Presence is best effort: a write that fails is logged and dropped; the journal goes
    on (no recovery, purchases approved) and the next write works again."""
    assert site.switch is not None
    pid = site.switch.proc.pid  # type: ignore[union-attr]
    tid, other = CAMPUS_POS
    site.fetch("ALTER TABLE terminal_presence RENAME TO terminal_presence_away")
    try:
        pos = site.client(tid)  # its sign-on's presence write fails
        seq = pos.sign_on_result.last_txn_seq
        card = site.card(min_main=1_000)["card_no"]
        for n in range(1, 6):
            assert pos.request(ocp.Purchase(seq + n, card, 10, 0)).code == 0
        _until("the failure is logged", lambda: "presence.write_failed"
               in site.switch.log_tail(400))  # type: ignore[union-attr]
    finally:
        site.fetch("ALTER TABLE terminal_presence_away RENAME TO terminal_presence")
    second = site.client(other)
    _until("the next sign-on is written", lambda: _online(site.api(), other))
    assert site.switch.proc.pid == pid  # type: ignore[attr-defined]
    assert "switch.recovering" not in site.switch.log_tail(400)
    assert "journal.commit_failed" not in site.switch.log_tail(400)
    assert pos.request(ocp.Purchase(seq + 6, card, 10, 0)).code == 0
    pos.close()
    second.close()
    _until("both offline", lambda: not _online(site.api(), tid)
           and not _online(site.api(), other))
