"""Terminals online in the console (issue 13), in a real browser against real processes: a POS
(the test OCP client over TCP) signs on to the switch; the merchants page shows it online (a
dot and the words "online since HH:MM"), filters online / offline, and the operations page
counts the site's terminals online by kind. axe checks each page state.

The fixtures follow tests/test_console_office.py's pattern (a module's site and browser); the
few helpers are copied here so that this file stands alone. In CI (CI set) a missing Chromium
or Playwright fails these tests instead of skipping them.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onecard.seed import CANTEEN_FREE
from tests.admin_site import PASSWORD, AdminSite
from tests.console_a11y import axe_check

CHROMIUM = "/usr/bin/chromium"
DEADLINE_MS = 30_000
"""How long a page may take to show what a test waits for (generous: shared machines)."""
POS = 1  # a till of CANTEEN_FREE (tenant 1), signed on by the test
IDLE_POS = 5  # another till of the same merchant, never signed on here


def _browser_or_fail() -> Any:
    why = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "playwright is not installed (pip install -e '.[test]')"
    if why is None and not Path(CHROMIUM).exists():
        why = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{why}: the browser tests must run in CI")
        pytest.skip(why)
    return sync_playwright


@pytest.fixture(scope="module")
def site(pg_server: Any, migrated_template: str) -> Iterator[AdminSite]:
    s = AdminSite(pg_server.new_database(template=migrated_template))
    s.start()
    s.start_admin()
    try:
        s.api().ok("POST", "/users", {"username": "campus.manager", "password": PASSWORD,
                                      "role": "tenant_admin", "node_id": s.tenant_node(1)}, 201)
        # Read before the browser starts (its event loop runs in this thread from then on).
        s.pos_total = len(s.fetch(  # type: ignore[attr-defined]
            "SELECT te.id FROM terminals te JOIN merchants m ON m.id = te.merchant_id"
            " WHERE m.tenant_id = 1 AND te.kind = 1"))
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def browser(site: AdminSite) -> Iterator[Any]:
    sync_playwright = _browser_or_fail()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, site: AdminSite) -> Iterator[Any]:
    assert site.admin is not None
    context = browser.new_context(base_url=site.admin.url, locale="en-US",
                                  viewport={"width": 1200, "height": 860})
    errors: list[str] = []
    p = context.new_page()
    p.set_default_timeout(DEADLINE_MS)
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield p
    finally:
        context.close()
    assert not errors, f"script errors in the page: {errors}"


def _log_in(page: Any, username: str) -> None:
    page.goto("/console/")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")
    page.wait_for_url(re.compile(r"/console/\w+\.html"))


def _until_online(site: AdminSite, online: bool) -> None:
    api = site.api()
    deadline = time.monotonic() + DEADLINE_MS / 1000
    while api.ok("GET", f"/terminals/{POS}")["online"] is not online:
        assert time.monotonic() < deadline, f"terminal {POS} online={online}: not in time"
        time.sleep(0.05)


def test_the_terminals_page_and_the_operations_page_show_a_signed_on_pos(
        page: Any, site: AdminSite) -> None:
    from playwright.sync_api import expect

    till = site.client(POS)
    try:
        _until_online(site, True)
        _log_in(page, "campus.manager")
        page.goto(f"/console/merchants.html#merchant-{CANTEEN_FREE}")
        row = page.locator(f'#terminals-table tr[data-terminal="{POS}"]')
        cell = row.locator(".terminal-presence")
        expect(cell).to_have_attribute("data-online", "true")
        expect(cell).to_contain_text(re.compile(r"online since \d\d:\d\d"))
        expect(cell.locator(".oc-dot-online")).to_have_count(1)
        expect(cell).to_contain_text("last session from 127.0.0.1:")  # a manager sees it
        idle = page.locator(f'#terminals-table tr[data-terminal="{IDLE_POS}"] .terminal-presence')
        expect(idle).to_have_text("never signed on")
        axe_check(page)

        # The filter: online only, then offline only.
        page.get_by_label("Show").select_option("true")
        expect(page.locator("#terminals-table tbody tr")).to_have_count(1)
        expect(row).to_be_visible()
        page.get_by_label("Show").select_option("false")
        expect(row).to_have_count(0)
        expect(page.locator(f'#terminals-table tr[data-terminal="{IDLE_POS}"]')).to_be_visible()
        page.get_by_label("Show").select_option("")

        # The operations page: this park's terminals online by kind.
        page.goto("/console/operations.html")
        pos = page.locator('#ops-site-terminals tr[data-kind="pos"]')
        expect(pos.locator("th")).to_have_text("POS")
        expect(pos.locator(".ops-online")).to_have_text("1")
        expect(pos.locator(".ops-total")).to_have_text(str(site.pos_total))  # type: ignore
        axe_check(page)
    finally:
        till.close()

    # The till hangs up: offline since now, on the next look.
    _until_online(site, False)
    page.goto(f"/console/merchants.html#merchant-{CANTEEN_FREE}")
    cell = page.locator(f'#terminals-table tr[data-terminal="{POS}"] .terminal-presence')
    expect(cell).to_have_attribute("data-online", "false")
    expect(cell).to_contain_text(re.compile(r"offline since \d\d:\d\d"))
    expect(cell.locator(".oc-dot-offline")).to_have_count(1)
    axe_check(page)
