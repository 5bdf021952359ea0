"""The console's security desk, operations and big screen pages (admin_api/console/) in a real
browser, against real processes (tests/test_console.py has the card office and sales pages).

The switch (with its operator HTTP port) and the admin API run as processes over real TCP;
Playwright drives Debian's Chromium. Journeys: a lost card at a real door raises an alarm that
the security desk sees on the e-map and acknowledges with a note; a manager uploads a floor
plan and places a door on it; the operations page shows the switch's figures live; the big
screen moves when a till sells; a log-in of the other park sees nothing of this one on these
pages. Screenshots as in tests/test_console.py (ONECARD_CONSOLE_SHOTS).

In CI (CI set) a missing Chromium or Playwright fails these tests instead of skipping them.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from onecard.harness import free_port
from onecard.seed import CANTEEN_FREE
from protocols import ocp
from tests import console_browser as cb
from tests.admin_site import PASSWORD, AdminSite, new_card_no, tiny_png

RC = ocp.ResponseCode
NOTE = "Card taken from the finder at the east gate"


def floor_plan(width: int = 640, height: int = 400) -> bytes:
    """A PNG that looks like a floor plan: walls around, a corridor, rooms (with doorways)."""
    import struct
    import zlib

    wall, floor, corridor = b"\x3c\x44\x4f", b"\xf4\xf1\xe8", b"\xe3\xe8\xee"
    top, bottom = height * 2 // 5, height * 3 // 5

    def pixel(x: int, y: int) -> bytes:
        t = 4
        if x < t or y < t or x >= width - t or y >= height - t:
            return wall if not (y > top and y < bottom and x < t) else floor  # the entrance
        if abs(y - top) < t // 2 + 1 or abs(y - bottom) < t // 2 + 1:
            return floor if (x // 40) % 4 == 1 else wall  # doorways off the corridor
        if (y < top or y > bottom) and x % (width // 4) < t:
            return wall
        return corridor if top < y < bottom else floor

    raw = b"".join(b"\0" + b"".join(pixel(x, y) for x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def desk_site(pg_server: Any, migrated_template: str) -> Iterator[dict[str, Any]]:
    """Tenant 1 with an area whose floor plan shows a door with a reader on a door terminal,
    a security desk log-in and a manager; tenant 2 with its own manager and desk."""
    site = AdminSite(pg_server.new_database(template=migrated_template))
    metrics_port = free_port()
    site.start(extra_env={"ONECARD_PORT": str(free_port()),
                          "ONECARD_METRICS_PORT": str(metrics_port),
                          "ONECARD_LATENCY_SAMPLE_EVERY": "1"})
    site.start_admin(ONECARD_ADMIN_LIVE_POLL_SECONDS="0.2",
                     ONECARD_ADMIN_SWITCH_STATUS_URL=f"http://127.0.0.1:{metrics_port}")
    try:
        root = site.api()
        campus, east = site.tenant_node(1), site.tenant_node(2)
        terminal = root.ok("POST", f"/merchants/{CANTEEN_FREE}/terminals",
                           {"kind": "door", "name": "east gate controller"})["terminal"]
        hall = root.ok("POST", "/access/areas", {"node_id": campus, "name": "Main building"})
        library = root.ok("POST", "/access/areas", {"node_id": campus, "name": "Library"})
        door = root.ok("POST", "/access/doors", {"node_id": campus, "name": "East gate",
                                                 "area_id": hall["id"]})
        stacks = root.ok("POST", "/access/doors", {"node_id": campus, "name": "Stacks door",
                                                   "area_id": library["id"]})
        root.ok("POST", "/access/readers", {"terminal_id": terminal["id"], "reader_no": 1,
                                            "door_id": door["id"]})
        root.ok("POST", f"/access/areas/{hall['id']}/plan",
                {"image": base64.b64encode(floor_plan()).decode()})
        root.ok("POST", f"/access/doors/{door['id']}/place", {"x": 300, "y": 5000})
        for username, role, node in (("desk.one", "security_desk", campus),
                                     ("campus.manager", "tenant_admin", campus),
                                     ("east.manager", "tenant_admin", east),
                                     ("east.desk", "security_desk", east)):
            root.ok("POST", "/users", {"username": username, "password": PASSWORD,
                                       "role": role, "node_id": node})
        till = cb.Till(site)
        spender = site.card(min_main=10_000)["card_no"]
        yield {"site": site, "root": root, "terminal": terminal, "hall": hall,
               "library": library, "door": door, "stacks": stacks, "till": till,
               "spender": spender, "campus": campus, "url": site.admin.url if site.admin else ""}
    finally:
        site.close()


@pytest.fixture(scope="module")
def console_url(desk_site: dict[str, Any]) -> str:
    return str(desk_site["url"])


@pytest.fixture
def page(browser: Any, console_url: str) -> Iterator[Any]:
    with cb.open_pages(browser, console_url, accept_dialogs=False,
                       viewport={"width": 1280, "height": 900}) as pages:
        yield pages.new()


def _log_in(page: Any, username: str) -> None:
    cb.log_in(page, username, landing=r"/console/(people|sales|security)\.html")


def _lost_card_at_the_door(desk_site: dict[str, Any]) -> int:
    """A card of tenant 1 reported lost, then shown at the east gate until the switch refuses
    it as lost (the change feed reached it): that raises an illegal-card alarm."""
    site: AdminSite = desk_site["site"]
    root = desk_site["root"]
    person = root.ok("POST", "/people", {"node_id": desk_site["campus"], "name": "Lost Li",
                                         "class_id": 2})
    card_no = new_card_no()
    root.ok("POST", f"/people/{person['id']}/cards", {"card_no": card_no})
    root.ok("POST", f"/cards/{card_no}/report-loss")
    client = site.client(desk_site["terminal"]["id"])
    try:
        seq = [0]

        def refused() -> bool:
            seq[0] += 1
            return client.request(ocp.AccessRequest(seq[0], 1, 0, 1, card_no)).code \
                == RC.CARD_LOST

        cb.until("the door refuses the lost card", refused)
    finally:
        client.close()
    return card_no


# -- journeys in the browser -------------------------------------------------------------------


def test_the_security_desk_acknowledges_an_alarm_shown_on_the_map(
        page: Any, desk_site: dict[str, Any], shots: Path) -> None:
    expect = cb.playwright_expect()
    door_id = desk_site["door"]["id"]
    _log_in(page, "desk.one")
    page.goto("/console/security.html")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    marker = page.locator(f'.desk-door[data-door="{door_id}"]')
    expect(marker).to_have_attribute("data-alarm", "none")
    expect(page.locator("#plan")).to_have_attribute("alt", "Floor plan of Main building")
    # The desk may not change the plan or the doors' modes; it may lock down.
    expect(page.locator("#plan-form")).to_be_hidden()
    expect(page.locator("#doors-table button")).to_have_count(0)
    expect(page.get_by_role("button", name="Lock down the site")).to_be_visible()

    card_no = _lost_card_at_the_door(desk_site)
    # Pushed, no reload: in the list and on the map.
    row = page.locator("#alarms-table tbody tr").first
    expect(row).to_contain_text(str(card_no))
    expect(row).to_contain_text("card refused")
    expect(marker).to_have_attribute("data-alarm", "open")
    expect(marker).to_have_attribute("aria-label", re.compile(r"^East gate: .*card refused"))
    page.screenshot(path=str(shots / "security-alarm.png"), full_page=True)
    cb.labelled(page)

    marker.click()  # on the map: the door's open alarm, to acknowledge with a note
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(str(card_no))
    cb.labelled(page)
    page.get_by_label("What was found and done").fill(NOTE)
    page.screenshot(path=str(shots / "security-ack.png"))
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("#desk-message")).to_contain_text("is acknowledged")
    # A refused card is a momentary alarm: its acknowledgement ends it (docs/access.md), so it
    # leaves the active list and the map.
    expect(page.locator("#alarms-message")).to_have_text("No active alarms.")
    expect(marker).to_have_attribute("data-alarm", "none")
    alarms = desk_site["site"].api("desk.one").ok("GET", "/access/alarms")["items"]
    [alarm] = [a for a in alarms if a["card_no"] == card_no]
    assert (alarm["state"], alarm["note"]) == ("cleared", NOTE)
    assert alarm["acknowledged_at"] is not None
    page.screenshot(path=str(shots / "security.png"), full_page=True)


def test_a_manager_uploads_a_floor_plan_places_a_door_and_the_site_locks_down(
        page: Any, desk_site: dict[str, Any], shots: Path, tmp_path: Path) -> None:
    expect = cb.playwright_expect()
    library, stacks = desk_site["library"], desk_site["stacks"]
    _log_in(page, "campus.manager")
    page.goto(f"/console/security.html?area={library['id']}")
    expect(page.locator("#map-message")).to_have_text("This area has no floor plan yet.")
    # Not an image: refused, and nothing stored.
    bad = tmp_path / "plan.png"
    bad.write_bytes(b"GIF89a not really a png")
    page.get_by_label("Floor plan image (PNG or JPEG, at most 1 MiB)").set_input_files(str(bad))
    page.get_by_role("button", name="Upload plan").click()
    expect(page.locator("#desk-message")).to_contain_text("PNG or JPEG")
    assert not cb.fetch(desk_site["site"], "SELECT 1 FROM access_area_plans WHERE area_id = $1",
                                          library["id"])
    good = tmp_path / "library.png"
    good.write_bytes(floor_plan(480, 300))
    page.get_by_label("Floor plan image (PNG or JPEG, at most 1 MiB)").set_input_files(str(good))
    page.get_by_role("button", name="Upload plan").click()
    expect(page.locator("#desk-message")).to_have_text("The floor plan of Library is saved.")
    plan = page.locator("#plan")
    expect(plan).to_be_visible()
    page.get_by_label("Door to place").select_option(str(stacks["id"]))
    plan.click(position={"x": plan.bounding_box()["width"] * 0.75,
                         "y": plan.bounding_box()["height"] * 0.5})
    marker = page.locator(f'.desk-door[data-door="{stacks["id"]}"]')
    expect(marker).to_be_visible()
    place = desk_site["root"].ok("GET", f"/access/areas/{library['id']}/map")["doors"][0]
    assert abs(place["x"] - 7500) <= 100 and abs(place["y"] - 5000) <= 100, place
    cb.labelled(page)
    page.screenshot(path=str(shots / "security-plan.png"), full_page=True)

    # Lockdown of the area behind a confirmation; Cancel does nothing, Confirm starts it.
    page.get_by_role("button", name="Lock down this area").click()
    expect(page.get_by_role("dialog")).to_contain_text("Lock down Library")
    page.get_by_role("button", name="Cancel").click()
    assert not [x for x in desk_site["root"].ok("GET", "/access/lockdowns")
                if x["ended_at"] is None]
    page.get_by_role("button", name="Lock down this area").click()
    page.get_by_label("Reason").fill("drill")
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("#lockdowns-table tbody tr")).to_have_count(1)
    expect(page.locator("#lockdowns-table tbody")).to_contain_text("Library")
    [active] = [x for x in desk_site["root"].ok("GET", "/access/lockdowns")
                if x["ended_at"] is None]
    assert (active["area_id"], active["reason"]) == (library["id"], "drill")
    page.get_by_role("button", name="End lockdown").click()
    expect(page.locator("#lockdown-message")).to_have_text("No lockdown is active.")


def test_the_big_screen_moves_when_a_till_sells(
        page: Any, desk_site: dict[str, Any], shots: Path) -> None:
    expect = cb.playwright_expect()
    _log_in(page, "campus.manager")
    page.goto("/console/screen.html?tenant=1")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    expect(page.locator("#screen-purchases")).not_to_have_text("–")
    expect(page.locator("#screen-chart canvas")).to_have_count(1)
    before = int(page.locator("#screen-purchases").inner_text())
    assert desk_site["till"].buy(desk_site["spender"], 1_250).code == RC.APPROVED
    expect(page.locator("#screen-purchases")).to_have_text(str(before + 1))
    screen = desk_site["site"].api("campus.manager").ok("GET", "/tenants/1/screen")
    assert screen["purchases"] == before + 1 and screen["canteens"], screen
    assert screen["amount_fen"] == sum(c["amount_fen"] for c in screen["canteens"])
    expect(page.locator("#screen-amount")).to_have_text(
        page.evaluate("(fen) => OC.yuan(fen)", screen["amount_fen"]))
    cb.labelled(page)
    page.screenshot(path=str(shots / "screen.png"))


def test_the_operations_page_shows_the_switch_live(
        page: Any, desk_site: dict[str, Any], shots: Path) -> None:
    expect = cb.playwright_expect()
    _log_in(page, "root")
    page.goto("/console/operations.html")
    expect(page.locator("#ops-switch")).to_have_attribute("data-ready", "true")
    expect(page.locator("#ops-api")).to_have_text("connected")
    expect(page.locator("#ops-terminals tbody tr").first).to_be_visible()
    expect(page.locator("#ops-chart canvas")).to_have_count(1)
    till = desk_site["till"]

    def latency_shown() -> bool:  # the latency of the last interval with a request in it
        assert till.buy(desk_site["spender"], 1).code == RC.APPROVED
        return page.locator("#ops-p50").inner_text() != "–"

    cb.until("the page shows the latency of the till's purchases", latency_shown)
    assert float(page.locator("#ops-rate").inner_text()) > 0
    cb.labelled(page)
    page.screenshot(path=str(shots / "operations.png"), full_page=True)


def test_a_log_in_of_another_park_sees_nothing_of_this_one_on_these_pages(
        page: Any, desk_site: dict[str, Any], shots: Path) -> None:
    expect = cb.playwright_expect()
    site: AdminSite = desk_site["site"]
    _log_in(page, "east.manager")
    page.goto("/console/security.html")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    expect(page.locator("#map-message")).to_have_text(
        "Your part of the organisation has no areas yet.")
    expect(page.locator("#alarms-message")).to_have_text("No active alarms.")
    expect(page.locator(".desk-door")).to_have_count(0)
    expect(page.locator("#doors-table tbody tr")).to_have_count(0)
    for name in ("East gate", "Main building", "Library", "Stacks door"):
        assert name not in page.content()
    page.screenshot(path=str(shots / "security-other-park.png"))
    page.goto("/console/screen.html?tenant=1")  # asks for tenant 1: shown its own
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    assert page.locator("#tenant").input_value() == "2"
    page.goto("/console/operations.html")
    expect(page.locator("#ops-switch")).to_have_attribute("data-ready", "true")
    expect(page.locator("#ops-platform-only")).to_be_visible()
    expect(page.locator("#ops-switch-figures")).to_be_hidden()
    # The API behind the pages refuses tenant 1's objects to both of tenant 2's log-ins.
    hall, door = desk_site["hall"], desk_site["door"]
    for who in ("east.manager", "east.desk"):
        api = site.api(who)
        for path in (f"/access/areas/{hall['id']}/plan", f"/access/areas/{hall['id']}/map",
                     "/tenants/1/screen", "/tenants/1/screen/live"):
            assert api.get(path).status_code in (403, 404), (who, path)
        assert api.post(f"/access/doors/{door['id']}/place", {"x": 1, "y": 1}).status_code \
            in (403, 404)
        r = api.get("/operations/status")  # the desk has no reports.read
        assert r.status_code == 403 if who == "east.desk" else r.json()["switch"] is None


def test_first_render_of_the_desk_pages_is_measured(
        page: Any, desk_site: dict[str, Any], shots: Path) -> None:
    """Milliseconds from navigation start until each page shows its first pushed data, in
    this browser on localhost (docs/benchmarks.md reports them; timing is not asserted)."""
    import json

    expect = cb.playwright_expect()
    _log_in(page, "root")
    waits = {"/console/security.html": "#doors-table tbody tr",
             "/console/operations.html": "#ops-switch[data-ready]",
             "/console/screen.html?tenant=1": "#screen-name:not([data-i18n])"}
    times = {}
    for url, shown in waits.items():
        page.goto(url)
        expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
        page.wait_for_selector(shown)
        times[url] = round(page.evaluate("performance.now()"))
    (shots / "desk-render-ms.json").write_text(json.dumps(times, indent=1) + "\n")
    assert all(ms > 0 for ms in times.values())


def test_the_desk_catalogue_says_it_all_in_both_languages(page: Any) -> None:
    page.goto("/console/")
    page.add_script_tag(url="/console/messages-desk.js")
    keys = page.evaluate("Object.fromEntries(Object.entries(OC_MESSAGES)"
                         ".map(([k, v]) => [k, Object.keys(v).sort()]))")
    assert set(keys) == {"en", "zh-CN"} and keys["en"] == keys["zh-CN"]
    assert {"desk.ack", "ops.title", "screen.title", "nav.desk"} <= set(keys["en"])


# -- the routes behind the pages ---------------------------------------------------------------


def test_a_plan_is_png_or_jpeg_sniffed_size_limited_and_audited(
        desk_site: dict[str, Any]) -> None:
    site: AdminSite = desk_site["site"]
    manager, desk = site.api("campus.manager"), site.api("desk.one")
    area = manager.ok("POST", "/access/areas", {"node_id": desk_site["campus"],
                                                "name": "Sniffed"})
    url = f"/access/areas/{area['id']}/plan"

    def upload(api: Any, image: bytes) -> httpx.Response:
        return api.post(url, {"image": base64.b64encode(image).decode()})

    big = tiny_png() + b"\0" * (1024 * 1024)
    for image, status in ((b"<svg onload=alert(1)>", 415), (b"GIF89a", 415), (b"", 415),
                          (big, 413)):
        r = upload(manager, image)
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    assert manager.post(url, {"image": "not base64!"}).status_code == 400
    assert upload(desk, tiny_png()).status_code == 403  # the desk reads plans, never writes
    assert not cb.fetch(site, "SELECT 1 FROM access_area_plans WHERE area_id = $1", area["id"])
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64 + b"\xff\xd9"
    out = manager.ok("POST", url, {"image": base64.b64encode(jpeg).decode()})
    assert (out["content_type"], out["bytes"]) == ("image/jpeg", len(jpeg))
    r = desk.get(url)
    assert r.status_code == 200 and r.content == jpeg
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert manager.post(f"/access/doors/{desk_site['door']['id']}/place",
                        {"x": 10_001, "y": 0}).status_code == 400
    assert manager.post(f"/access/doors/{desk_site['door']['id']}/place",
                        {"x": 1, "y": None}).status_code == 422
    audit = cb.fetch(site, "SELECT username, after FROM audit_log"
                     " WHERE action = 'access.upload_plan' AND entity_id = $1", str(area["id"]))
    assert [a["username"] for a in audit] == ["campus.manager"]
    assert "/9j/" not in audit[0]["after"]  # the size and digest, not the image


def test_the_desk_stream_pushes_door_states_with_doors_true_only(
        desk_site: dict[str, Any]) -> None:
    import json

    site: AdminSite = desk_site["site"]
    token = site.api("desk.one").token
    seen: list[tuple[str, Any]] = []
    for query in ("", "?doors=true"):
        with httpx.stream("GET", f"{desk_site['url']}/access/alarms/live{query}",
                          headers={"Authorization": f"Bearer {token}"}, timeout=30) as r:
            events: list[tuple[str, Any]] = []
            name = "message"
            started = time.monotonic()
            for line in r.iter_lines():
                if line.startswith("event:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    events.append((name, json.loads(line.split(":", 1)[1])))
                if len(events) == (1 if not query else 2) or time.monotonic() - started > 20:
                    break
            seen.append(events[-1])
    assert seen[0][0] == "snapshot"
    kind, doors = seen[1]
    assert kind == "doors"
    assert {d["name"] for d in doors} >= {"East gate", "Stacks door"}


def test_a_door_on_its_tenants_node_is_on_the_map(desk_site: dict[str, Any]) -> None:
    """A door whose node_id is NULL belongs to its tenant's node (access/_scope.py): the map
    lists it for the tenant's desk like every other access route, never for another park's."""
    site: AdminSite = desk_site["site"]
    manager = site.api("campus.manager")
    area = manager.ok("POST", "/access/areas", {"node_id": desk_site["campus"],
                                                "name": "Tenant-node doors"})
    door = manager.ok("POST", "/access/doors", {"node_id": desk_site["campus"],
                                                "name": "Side door", "area_id": area["id"]})
    manager.ok("POST", f"/access/doors/{door['id']}/place", {"x": 10, "y": 20})
    cb.fetch(site, "UPDATE doors SET node_id = NULL WHERE id = $1", door["id"])
    got = site.api("desk.one").ok("GET", f"/access/areas/{area['id']}/map")
    assert [(d["door_id"], d["x"], d["y"]) for d in got["doors"]] == [(door["id"], 10, 20)]
    assert site.api("east.desk").get(f"/access/areas/{area['id']}/map").status_code == 404
