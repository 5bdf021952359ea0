"""Every console page and the phone pages by keyboard alone (issue 13, docs/console.md).

On each page, in the states a user reaches (logged in as a log-in that sees the page's
controls; with data where the page shows it): Tab from the top reaches every visible, enabled
control, in document order (no positive tabindex, nothing skipped), each with a visible focus
ring, and Tab carries on past the last one (no keyboard trap); every single-line field sits in
a form with a submit button, so Enter submits it; a dialog closes with Escape and gives the
focus back to the control that opened it; and axe finds no WCAG 2 A/AA violation.

The admin API runs as a process over real TCP (no switch: the pages show it as down, which
is a state too); Playwright drives Debian's Chromium. The browser, its pages, the log-in and
reading the database are tests/console_browser.py's. In CI (CI set) a missing Chromium or
Playwright fails these tests.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import console_browser as cb
from tests.admin_site import PASSWORD, AdminSite, tiny_png
from tests.console_a11y import axe_check

# Every page walked by Tab (about a minute): in the slow pass (`python -m pytest -m slow`,
# run by .ci/run); the default suite's browser tests run axe on every page.
pytestmark = pytest.mark.slow

STATIC = Path(__file__).resolve().parent.parent / "admin_api" / "console" / "static"


@pytest.fixture(scope="module")
def keyboard_site(pg_server: Any, migrated_template: str) -> Iterator[dict[str, Any]]:
    """Tenant 1 with a site manager and a cardholder; a person with a card and a submitted
    document (so the person and approvals pages show their tables and forms)."""
    site = AdminSite(pg_server.new_database(template=migrated_template))
    site.start_admin()
    try:
        root = site.api()
        campus = site.tenant_node(1)
        person = dict(site.fetch(
            "SELECT p.id, p.external_id, c.card_no FROM people p"
            " JOIN accounts a ON a.id = p.account_id JOIN cards c ON c.account_id = a.id"
            " WHERE a.status = 0 AND c.status = 0 AND a.tenant_id = 1 ORDER BY p.id LIMIT 1")[0])
        for username, role in (("campus.manager", "tenant_admin"), ("campus.clerk",
                                                                    "card_office")):
            root.ok("POST", "/users", {"username": username, "password": PASSWORD,
                                       "role": role, "node_id": campus})
        root.ok("POST", "/users", {"username": "li.lei", "password": PASSWORD,
                                   "role": "cardholder", "node_id": campus,
                                   "person_id": person["id"]})
        clerk = site.api("campus.clerk")
        doc = clerk.ok("POST", "/documents", {
            "doc_type": "adjustment", "title": "Correction", "reason": "till error",
            "lines": [{"person_id": person["id"], "amount_fen": 500}]})
        clerk.ok("POST", f"/documents/{doc['id']}/submit", {})
        # The security desk's map: an area with a plan, a placed door, and an open alarm.
        hall = root.ok("POST", "/access/areas", {"node_id": campus, "name": "Main building"})
        door = root.ok("POST", "/access/doors", {"node_id": campus, "name": "East gate",
                                                 "area_id": hall["id"]})
        root.ok("POST", f"/access/areas/{hall['id']}/plan",
                {"image": base64.b64encode(tiny_png(40, 30)).decode()})
        root.ok("POST", f"/access/doors/{door['id']}/place", {"x": 3000, "y": 5000})
        alarm = site.fetch("INSERT INTO access_alarms (tenant_id, kind, door_id, area_id)"
                           " VALUES (1, 'tamper', $1, $2) RETURNING id", door["id"],
                           hall["id"])[0]["id"]
        yield {"site": site, "person": person, "doc": doc, "alarm": alarm,
               "url": site.admin.url if site.admin else ""}
    finally:
        site.close()


@pytest.fixture(scope="module")
def console_url(keyboard_site: dict[str, Any]) -> str:
    return str(keyboard_site["url"])


@pytest.fixture
def page(browser: Any, console_url: str) -> Iterator[Any]:
    """A page whose dialogs are dismissed (Playwright's default when nobody accepts them)."""
    with cb.open_pages(browser, console_url, accept_dialogs=False) as pages:
        yield pages.new()


def _log_in(page: Any, username: str) -> None:
    cb.log_in(page, username, landing=r"/console/people\.html")


# -- the walk ----------------------------------------------------------------------------------

_SELECTOR = "input, select, textarea, button, a[href], summary, [tabindex]:not([tabindex='-1'])"
_KEY = """const all = [...document.querySelectorAll(SELECTOR)];
    const key = (el) => (el.id || el.getAttribute("href")
                         || el.tagName.toLowerCase() + " " + (el.textContent || el.name || "")
                            .trim().slice(0, 30)) + " @" + all.indexOf(el);
""".replace("SELECTOR", repr(_SELECTOR))

_CONTROLS = """() => { """ + _KEY + """ return all
    .filter((el) => el.offsetParent !== null && !el.disabled
                    && getComputedStyle(el).visibility !== "hidden" && el.tabIndex >= 0
                    && !(el.type === "radio" && !el.checked
                         && document.querySelector(`input[type=radio][name="${el.name}"]:checked`)))
    .map(key); }"""

_FOCUSED = """() => { """ + _KEY + """
    const el = document.activeElement;
    if (!el || el === document.body || el === document.documentElement) return null;
    const s = getComputedStyle(el);
    const ring = s.outlineStyle !== "none" && parseFloat(s.outlineWidth) >= 2;
    return {key: key(el),
            // A date field's parts hold the focus: the field is only :focus-within.
            visible: (el.matches(":focus-visible")
                      || el.matches("input:is([type=date],[type=month],[type=time]):focus-within"))
                     && (ring || s.boxShadow !== "none")};
}"""

_POSITIVE_TABINDEX = """() => [...document.querySelectorAll("[tabindex]")]
    .filter((el) => el.tabIndex > 0).map((el) => el.outerHTML.slice(0, 200))"""

_NO_ENTER = """() => [...document.querySelectorAll("input")]
    .filter((el) => el.offsetParent !== null && !el.disabled
                    && ["text", "search", "number", "date", "month", "password", "email",
                        "tel", "url"].includes(el.type))
    .filter((el) => !(el.form && el.form.querySelector("button[type=submit], button:not([type]),"
                                                       + " input[type=submit]")))
    .map((el) => el.id || el.outerHTML.slice(0, 200))"""

_STABLE = """() => {
    const now = JSON.stringify(([...document.querySelectorAll(
        "input, select, textarea, button, a[href]")].filter((e) => e.offsetParent !== null)
        .map((e) => e.id || e.getAttribute("href") || e.tagName)));
    const t = performance.now();
    if (window.__kbLast !== now) { window.__kbLast = now; window.__kbSince = t; return false; }
    return t - window.__kbSince > 600;
}"""


_TO_THE_TOP = """() => {
    document.activeElement && document.activeElement.blur();
    document.body.setAttribute("tabindex", "-1");
    document.body.focus();  // the next Tab starts at the top of the page
    document.body.removeAttribute("tabindex");
    window.scrollTo(0, 0);
}"""


def _settle(page: Any) -> None:
    """Until the page's controls stop changing (its API answers have been drawn)."""
    page.evaluate("() => { window.__kbLast = null; }")
    page.wait_for_function(_STABLE, polling=100)


def _walk(page: Any) -> list[str]:
    """Tab from the top: every visible, enabled control reached, in document order, each with
    a visible focus ring, and the focus goes on past the last one (no trap). Returns the
    controls in the order reached."""
    _settle(page)
    controls = page.evaluate(_CONTROLS)
    assert controls, page.url
    assert page.evaluate(_POSITIVE_TABINDEX) == [], f"a positive tabindex on {page.url}"
    page.evaluate(_TO_THE_TOP)
    reached: list[str] = []
    left = False
    for _ in range(3 * len(controls) + 10):  # a date field takes a Tab per part
        page.keyboard.press("Tab")
        focused = page.evaluate(_FOCUSED)
        if focused is None:
            left = bool(reached)
            continue
        assert focused["visible"], f"{focused['key']} has no visible focus on {page.url}"
        if left and focused["key"] == reached[0]:
            break  # came round again: the walk left the page and re-entered it
        reached.append(focused["key"])
    missing = [c for c in controls if c not in reached]
    assert not missing, f"not reached by Tab on {page.url}: {missing}"
    order = [c for c in dict.fromkeys(reached) if c in controls]
    assert order == [c for c in controls if c in order], (
        f"Tab order is not the document's on {page.url}:\n{order}\n{controls}")
    assert left or len(reached) > len(controls), f"focus trapped on {page.url}: {reached}"
    assert page.evaluate(_NO_ENTER) == [], f"fields Enter does not submit on {page.url}"
    return reached


def _check(page: Any) -> None:
    _walk(page)
    axe_check(page)


def _pages(keyboard_site: dict[str, Any]) -> dict[str, str]:
    person = keyboard_site["person"]
    return {"people.html": f"/console/people.html?q={person['card_no']}",
            "person.html": f"/console/person.html?id={person['id']}",
            "import.html": "/console/import.html",
            "approvals.html": f"/console/approvals.html?doc={keyboard_site['doc']['id']}",
            "cashier.html": "/console/cashier.html",
            "merchants.html": "/console/merchants.html",
            "reports.html": "/console/reports.html",
            "sales.html": "/console/sales.html",
            "finance.html": "/console/finance.html",
            "security.html": "/console/security.html",
            "operations.html": "/console/operations.html",
            "screen.html": "/console/screen.html?tenant=1"}


_READY = {
    "people.html": "#people-table tbody tr",
    "person.html": "#person-body:not([hidden]) #docs-table tbody tr",
    "approvals.html": "#doc-section:not([hidden])",
    "merchants.html": "#merchants-table tbody tr",
    "reports.html": "#table-sales tbody tr",
    "sales.html": "#sales-table tbody tr",
    "finance.html": "#fin-message",
    "security.html": "#alarms-table:not([hidden]) button.ack",
    "screen.html": "#screen-clock:not(:empty)",
}


def test_every_console_page_is_usable_by_keyboard_alone(
        page: Any, keyboard_site: dict[str, Any]) -> None:
    pages = _pages(keyboard_site)
    on_disk = {p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*.html")}
    assert set(pages) | {"index.html", "m/index.html"} == on_disk, "a page is not walked"
    page.goto("/console/")
    _check(page)
    _log_in(page, "campus.manager")
    for name, url in pages.items():
        page.goto(url)
        if name in _READY:
            page.wait_for_selector(_READY[name], state="attached")
        _check(page)
    # A merchant opened by keyboard: its terminals (and the register form, for a canteen).
    page.goto("/console/merchants.html")
    page.locator("#merchants-table tbody a").first.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#terminals-section:not([hidden])")
    _check(page)


def test_forms_submit_with_enter(page: Any, keyboard_site: dict[str, Any]) -> None:
    expect = cb.playwright_expect()
    person = keyboard_site["person"]
    _log_in(page, "campus.manager")
    # The people search and the cashier's search: type, Enter, results.
    page.locator("#q").fill(str(person["card_no"]))
    page.locator("#q").press("Enter")
    expect(page.locator("#people-table tbody tr")).to_have_count(1)
    page.goto("/console/cashier.html")
    field = page.locator("#find-q")
    field.fill(str(person["card_no"]))
    field.press("Enter")
    expect(page.get_by_text(str(person["card_no"])).first).to_be_visible()
    # Reports and finance: Enter in the day field shows the figures again.
    for url, day in (("/console/reports.html", "#to-day"), ("/console/finance.html",
                                                            "#business-day")):
        page.goto(url)
        page.wait_for_function("(sel) => document.querySelector(sel).value !== ''", arg=day)
        with page.expect_request(re.compile(r"/tenants/1/")):
            page.locator(day).press("Enter")


def test_a_dialog_closes_with_escape_and_gives_the_focus_back(
        page: Any, keyboard_site: dict[str, Any]) -> None:
    _log_in(page, "campus.manager")
    page.goto("/console/security.html")
    opener = page.locator("#lock-site")
    opener.wait_for()
    opener.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#lock-dialog")
    assert dialog.evaluate("(d) => d.open")
    assert page.evaluate("document.activeElement.id") == "lock-reason"
    # Modal: Tab goes round the dialog's controls (and the browser's own), never to the
    # page behind it.
    for _ in range(8):
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement === document.body"
                             " || document.activeElement.closest('dialog') !== null"), \
            page.evaluate("document.activeElement.outerHTML")
    page.keyboard.press("Escape")
    assert not dialog.evaluate("(d) => d.open")
    assert page.evaluate("document.activeElement.id") == "lock-site"
    # Cancel by keyboard does the same; nothing was locked down.
    page.keyboard.press("Enter")
    page.locator("#lock-cancel").focus()
    page.keyboard.press("Enter")
    assert not dialog.evaluate("(d) => d.open")
    assert page.evaluate("document.activeElement.id") == "lock-site"
    site = keyboard_site["site"]
    rows = cb.fetch(site, "SELECT count(*) AS n FROM access_lockdowns")
    assert rows[0]["n"] == 0
    # An alarm's Acknowledge button: the note's dialog, closed by Escape, focus back.
    ack = page.locator("#alarms-table button.ack").first
    ack.focus()
    page.keyboard.press("Enter")
    assert page.locator("#ack-dialog").evaluate("(d) => d.open")
    assert page.evaluate("document.activeElement.id") == "ack-note"
    page.keyboard.press("Escape")
    assert not page.locator("#ack-dialog").evaluate("(d) => d.open")
    assert page.evaluate("document.activeElement.classList.contains('ack')")
    axe_check(page)


def test_the_phone_pages_are_usable_by_keyboard_alone(
        page: Any, keyboard_site: dict[str, Any]) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/m/")
    page.wait_for_selector("#m-login:not([hidden])")
    _check(page)
    # Log in by keyboard only.
    page.evaluate(_TO_THE_TOP)
    while page.evaluate("document.activeElement.id") != "m-username":
        page.keyboard.press("Tab")
    page.keyboard.type("li.lei")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector("#m-app:not([hidden])")
    page.wait_for_selector("#m-cards li", state="attached")
    _check(page)
