"""Every console page: reachable by keyboard with a visible focus, checked by axe, and its
first render measured (issue 13).

Uses tests/test_console.py's site (the demo's seed: 200 accounts, a person with a card and
money) and browser. The timing test prints and writes what the tests' Chromium measured and
asserts nothing about time (shared machines); docs/benchmarks.md reports the figures.
"""

from __future__ import annotations

import contextlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests import test_console as tc
from tests.console_a11y import axe_check, axe_violations

console_site = tc.console_site
console_url = tc.console_url
page = tc.page

STATIC = Path(__file__).resolve().parent.parent / "admin_api" / "console" / "static"

_CONTROLS = """() => [...document.querySelectorAll(
        "input, select, textarea, button, a[href], [tabindex]:not([tabindex='-1'])")]
    .filter((el) => el.offsetParent !== null && !el.disabled
                    && getComputedStyle(el).visibility !== "hidden")
    .map((el) => el.id || el.getAttribute("href") || el.outerHTML)"""

_FOCUSED = """() => {
    const el = document.activeElement;
    if (!el || el === document.body) return null;
    const s = getComputedStyle(el);
    const ring = s.outlineStyle !== "none" && parseFloat(s.outlineWidth) >= 2;
    return {key: el.id || el.getAttribute("href") || el.outerHTML,
            visible: el.matches(":focus-visible") && (ring || s.boxShadow !== "none")};
}"""


def _tab_through(page: Any) -> None:
    """Tab from the top of the page: every visible, enabled control is reached, and each one
    shows a focus ring (:focus-visible with an outline) when it has the focus."""
    controls = page.evaluate(_CONTROLS)
    assert controls, page.url
    page.evaluate("document.activeElement && document.activeElement.blur()")
    reached: list[str] = []
    for _ in range(len(controls) + 3):
        page.keyboard.press("Tab")
        focused = page.evaluate(_FOCUSED)
        if focused is None:
            continue
        assert focused["visible"], f"{focused['key']} has no visible focus on {page.url}"
        reached.append(focused["key"])
    missing = [c for c in controls if c not in reached]
    assert not missing, f"not reached by Tab on {page.url}: {missing}"


def test_the_log_in_and_the_people_page_are_usable_by_keyboard_alone(
        page: Any, console_site: dict[str, Any]) -> None:
    page.goto("/console/")
    _tab_through(page)
    # Log in by keyboard only: focus the user name with Tab, type, Tab, type, Enter.
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press("Tab")
    while page.evaluate("document.activeElement.id") != "username":
        page.keyboard.press("Tab")
    page.keyboard.type("campus.clerk")
    page.keyboard.press("Tab")
    page.keyboard.type(tc.PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/people.html*")
    page.wait_for_selector("#oc-header nav a")
    page.get_by_label("Name, card number, external id or department").fill(tc.EXTERNAL_ID)
    page.keyboard.press("Enter")
    page.wait_for_selector("#people-table tbody tr")
    _tab_through(page)
    axe_check(page)


def test_the_accessibility_check_finds_what_it_should(page: Any) -> None:
    """The check is not vacuous: an unlabelled field and grey-on-white text fail it."""
    page.goto("/console/")
    page.evaluate("""() => {
        const main = document.querySelector("main");
        const input = document.createElement("input");
        const p = document.createElement("p");
        p.textContent = "faint";
        p.style.color = "#c8c8c8";
        main.append(input, p);
    }""")
    found = {v["id"] for v in axe_violations(page)}
    assert {"label", "color-contrast"} <= found, found


# When each page's first data has reached it: the first API answer (a JSON body, or the first
# chunk of a live stream) handed to the page's script, plus the animation frame after it (the
# pages render in the handler). Set before the page's own scripts run; no page code changes.
_MARK_FIRST_DATA = """(() => {
    window.__firstData = null;
    const mark = () => {
        if (window.__firstData === null)
            requestAnimationFrame(() => {
                if (window.__firstData === null) window.__firstData = performance.now();
            });
    };
    for (const how of ["json", "text"]) {
        const body = Response.prototype[how];
        Response.prototype[how] = function () {
            return body.call(this).then((v) => {
                if (this.url.indexOf("/auth/") < 0) mark();
                return v;
            });
        };
    }
    const read = ReadableStreamDefaultReader.prototype.read;
    ReadableStreamDefaultReader.prototype.read = function () {
        return read.call(this).then((r) => { if (r.value) mark(); return r; });
    };
})();"""


_TIMING = """() => {
    const n = performance.getEntriesByType("navigation")[0];
    return {dom_content_loaded_ms: Math.round(n.domContentLoadedEventEnd),
            first_data_ms: window.__firstData === null ? null : Math.round(window.__firstData)};
}"""

NO_DATA = ("index.html", "m/index.html", "import.html")
"""Pages that ask the API nothing when they open: the log-in forms, the import form. Others
that ask nothing until used are given 5 s and recorded with no first data."""


def _pages(person_id: int) -> dict[str, str]:
    """Every page's file, with the address that shows it with data."""
    query = {"person.html": f"?id={person_id}", "people.html": f"?q={tc.EXTERNAL_ID}",
             "screen.html": "?tenant=1"}
    found = {}
    for path in sorted(STATIC.rglob("*.html")):
        name = path.relative_to(STATIC).as_posix()
        base = "/m/" if name == "m/index.html" else f"/console/{name}"
        found[name] = base + query.get(name, "")
    return found


def test_first_render_of_every_page_is_measured(
        page: Any, console_site: dict[str, Any], shots: Path) -> None:
    """Each page's DOMContentLoaded and time to its first data, from navigation start, in
    this browser on localhost with the demo's seed, logged in as the platform admin
    (everything visible). Printed and written to first-render-ms.json; not asserted on."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.add_init_script(_MARK_FIRST_DATA)
    page.goto("/console/")
    tc._log_in(page, "root")
    pages = _pages(console_site["person"]["id"])
    assert len(pages) >= 12 and "index.html" in pages and "m/index.html" in pages
    figures: dict[str, dict[str, Any]] = {}
    for name, url in pages.items():
        page.goto(url)
        page.wait_for_load_state("load")
        if name not in NO_DATA:
            # A page that asks nothing until used (the cashier's search) has no first data.
            with contextlib.suppress(PlaywrightTimeout):
                page.wait_for_function("() => window.__firstData !== null", timeout=5_000)
        timing = page.evaluate(_TIMING)
        figures[url] = timing
    # The phone page as its cardholder sees it: logged in, then opened again.
    site = console_site["site"]
    with ThreadPoolExecutor(1) as pool:  # off this thread: Playwright's loop runs here
        pool.submit(lambda: site.api().ok("POST", "/users", {
            "username": "li.lei", "password": tc.PASSWORD, "role": "cardholder",
            "node_id": site.tenant_node(1), "person_id": console_site["person"]["id"]})).result()
    page.goto("/m/")
    page.get_by_label("User name").fill("li.lei")
    page.get_by_label("Password").fill(tc.PASSWORD)
    page.get_by_label("Password").press("Enter")
    page.wait_for_selector("#m-app:not([hidden])")
    page.reload()
    page.wait_for_function("() => window.__firstData !== null")
    figures["/m/ (cardholder)"] = page.evaluate(_TIMING)
    for url, timing in figures.items():
        print(f"first render {url}: DOMContentLoaded {timing['dom_content_loaded_ms']} ms,"
              f" first data {timing['first_data_ms']} ms")
    out = Path(os.environ.get("ONECARD_CONSOLE_RENDER_JSON") or shots / "first-render-ms.json")
    out.write_text(json.dumps(figures, indent=1) + "\n")
    assert len(figures) == len(pages) + 1
