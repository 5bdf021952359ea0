"""Terminals online in the console (issue 13), in a real browser against real processes: a POS
(the test OCP client over TCP) signs on to the switch; the merchants page shows it online (a
dot and the words "online since HH:MM"), filters online / offline, and the operations page
counts the site's terminals online by kind. axe checks each page state.

The browser, its pages, the log-in and waiting are tests/console_browser.py's. In CI (CI set) a
missing Chromium or Playwright fails these tests instead of skipping them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from onecard.seed import CANTEEN_FREE
from tests import console_browser as cb
from tests.admin_site import PASSWORD, AdminSite
from tests.console_a11y import axe_check

POS = 1  # a till of CANTEEN_FREE (tenant 1), signed on by the test
IDLE_POS = 5  # another till of the same merchant, never signed on here


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
def console_url(site: AdminSite) -> str:
    assert site.admin is not None
    return site.admin.url


@pytest.fixture
def page(browser: Any, console_url: str) -> Iterator[Any]:
    with cb.open_pages(browser, console_url, accept_dialogs=False) as pages:
        yield pages.new()


def _until_online(site: AdminSite, online: bool) -> None:
    api = site.api()
    cb.until(f"terminal {POS} online={online}",
             lambda: api.ok("GET", f"/terminals/{POS}")["online"] is online, poll_seconds=0.05)


def test_the_terminals_page_and_the_operations_page_show_a_signed_on_pos(
        page: Any, site: AdminSite) -> None:
    expect = cb.playwright_expect()
    till = site.client(POS)
    try:
        _until_online(site, True)
        cb.log_in(page, "campus.manager")
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
