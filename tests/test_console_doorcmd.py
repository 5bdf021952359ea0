"""The security desk opens a door once from the console's e-map (issue 13), in a real browser
against real processes: the switch and the admin API over real TCP, PostgreSQL and Redis, and
a simulated door controller (terminals_sim.DoorControl behind a real OCP connection) that
carries out the DoorCommand and acknowledges it.

The browser, its pages and the log-in are tests/console_browser.py's. In CI a missing Chromium
or Playwright fails these tests.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from onecard.harness import free_port
from onecard.seed import CANTEEN_FREE
from protocols import ocp
from terminals_sim import DoorControl
from tests import console_browser as cb
from tests.admin_site import PASSWORD, AdminSite
from tests.ocp_client import OcpClient
from tests.test_console_desk import floor_plan


class SimDoor:
    """A door controller on its own thread: signed on, heartbeating, carrying out every
    DoorCommand with DoorControl and acknowledging it."""

    def __init__(self, site: AdminSite, terminal_id: int, readers: set[int]) -> None:
        self.control = DoorControl(readers=readers)
        self.client: OcpClient = site.client(terminal_id)
        self.client.sock.settimeout(1.0)
        self._stop = False
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="sim-door", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                msg = self.client.next_message()
            except TimeoutError:
                self.client.send(ocp.Heartbeat(int(time.time() * 1000)))
                continue
            except OSError:
                return
            if msg is ocp.CLOSED:
                return
            if isinstance(msg, ocp.DoorCommand):
                with self._lock:
                    ack = self.control.command(msg, now_ms=int(time.time() * 1000))
                self.client.send(ack)

    def received(self) -> list[ocp.DoorCommand]:
        with self._lock:
            return list(self.control.received)

    def close(self) -> None:
        self._stop = True
        self.thread.join(5)
        self.client.close()


@pytest.fixture(scope="module")
def doorcmd_site(pg_server: Any, migrated_template: str) -> Iterator[dict[str, Any]]:
    """Tenant 1: an area with a floor plan and a door on it, whose reader 1 is on a simulated
    door controller; a security desk log-in and an auditor (who may read, not command)."""
    site = AdminSite(pg_server.new_database(template=migrated_template))
    site.start(extra_env={"ONECARD_PORT": str(free_port())})
    site.start_admin(ONECARD_ADMIN_LIVE_POLL_SECONDS="0.2")
    sim: SimDoor | None = None
    try:
        root = site.api()
        campus = site.tenant_node(1)
        terminal = root.ok("POST", f"/merchants/{CANTEEN_FREE}/terminals",
                           {"kind": "door", "name": "north gate controller"})["terminal"]
        hall = root.ok("POST", "/access/areas", {"node_id": campus, "name": "North building"})
        door = root.ok("POST", "/access/doors", {"node_id": campus, "name": "North gate",
                                                 "area_id": hall["id"], "open_ms": 3500})
        root.ok("POST", "/access/readers", {"terminal_id": terminal["id"], "reader_no": 1,
                                            "door_id": door["id"]})
        root.ok("POST", f"/access/areas/{hall['id']}/plan",
                {"image": base64.b64encode(floor_plan()).decode()})
        root.ok("POST", f"/access/doors/{door['id']}/place", {"x": 5000, "y": 5000})
        for username, role in (("security.desk", "security_desk"), ("the.auditor", "auditor")):
            root.ok("POST", "/users", {"username": username, "password": PASSWORD,
                                       "role": role, "node_id": campus})
        sim = SimDoor(site, terminal["id"], {1})
        yield {"site": site, "root": root, "terminal": terminal, "hall": hall, "door": door,
               "sim": sim, "url": site.admin.url if site.admin else ""}
    finally:
        if sim is not None:
            sim.close()
        site.close()


@pytest.fixture(scope="module")
def console_url(doorcmd_site: dict[str, Any]) -> str:
    return str(doorcmd_site["url"])


@pytest.fixture
def page(browser: Any, console_url: str) -> Iterator[Any]:
    with cb.open_pages(browser, console_url, accept_dialogs=False,
                       viewport={"width": 1280, "height": 900}) as pages:
        yield pages.new()


def _log_in(page: Any, username: str) -> None:
    cb.log_in(page, username, landing=r"/console/(people|sales|security)\.html")


def test_the_desk_opens_a_door_once_from_the_map(page: Any,
                                                 doorcmd_site: dict[str, Any]) -> None:
    expect = cb.playwright_expect()
    door_id = doorcmd_site["door"]["id"]
    sim: SimDoor = doorcmd_site["sim"]
    _log_in(page, "security.desk")
    page.goto(f"/console/security.html?area={doorcmd_site['hall']['id']}")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    marker = page.locator(f'.desk-door[data-door="{door_id}"]')
    expect(marker).to_have_attribute("data-online", "true")
    # The desk may not change modes (no buttons in the doors table), but may command a door.
    expect(page.locator("#doors-table button")).to_have_count(0)
    marker.click()  # no open alarm: the door is chosen in the door control panel
    control = page.locator("#door-control")
    expect(control).to_be_visible()
    expect(page.get_by_label("Door", exact=True)).to_have_value(str(door_id))
    expect(page.locator("#control-what")).to_contain_text("North gate")
    page.get_by_role("button", name="Open once").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Open North gate once now?")
    cb.labelled(page)
    page.get_by_label("Note (optional)").fill("delivery at the north gate")
    page.get_by_role("button", name="Confirm").click()
    state = page.locator("#command-state")
    expect(state).to_have_attribute("data-state", "done")
    expect(state).to_have_text("North gate · Open once: done")
    # The simulated door got exactly that command, for its reader, with the door's open time.
    [cmd] = sim.received()
    assert (cmd.reader_no, cmd.action, cmd.open_ms) == (1, ocp.DoorCommandAction.OPEN_ONCE, 3500)
    assert str(cmd.command_id) == state.get_attribute("data-command")
    assert sim.control.opened and sim.control.opened[0][0] == 1
    row = doorcmd_site["root"].ok("GET", f"/access/door-commands/{cmd.command_id}")
    assert (row["state"], row["note"], row["ack_code"]) == (
        "done", "delivery at the north gate", 0)

    # Lock asks first; cancelling sends nothing.
    page.get_by_role("button", name="Lock", exact=True).click()
    expect(dialog).to_contain_text("Lock North gate until set back to normal?")
    page.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Lock", exact=True).click()
    page.get_by_role("button", name="Confirm").click()
    expect(state).to_have_text("North gate · Lock: done")
    cb.until("the door is held locked", lambda: not sim.control.may_open(1))
    # Normal needs no confirmation.
    page.get_by_role("button", name="Normal", exact=True).click()
    expect(state).to_have_text("North gate · Normal: done")
    assert sim.control.may_open(1)
    assert [c.action for c in sim.received()] == [1, 3, 4]


def test_a_log_in_without_access_control_sees_no_door_commands(
        page: Any, doorcmd_site: dict[str, Any]) -> None:
    expect = cb.playwright_expect()
    _log_in(page, "the.auditor")
    page.goto(f"/console/security.html?area={doorcmd_site['hall']['id']}")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    expect(page.locator(f'.desk-door[data-door="{doorcmd_site["door"]["id"]}"]')).to_be_visible()
    expect(page.locator("#door-control")).to_be_hidden()
    expect(page.get_by_role("button", name="Open once")).to_have_count(0)
