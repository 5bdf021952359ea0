"""What the console's browser tests share: Debian's Chromium through Playwright, pages that fail
the test on a script error, the log-in, screenshots, the accessibility check and waiting.

Fixtures (exposed to every test module by tests/conftest.py; both module-scoped, so each test
file, and so each pytest-xdist worker under `--dist loadfile`, has its own):

- `browser`: Chromium (/usr/bin/chromium) launched by Playwright; a failure in CI (a skip
  elsewhere) when Playwright or Chromium is missing. It needs `console_url`, a module-scoped
  fixture the test module defines: the admin API's base URL of the module's site.
- `shots`: the folder a journey saves screenshots to: ONECARD_CONSOLE_SHOTS when set
  (docs/make_console_screenshots.py sets it to docs/img/console), else a temporary directory.

Each test file keeps its own site (a module-scoped fixture that starts the switch and the admin
API with what its journeys need), defines `console_url` from it, and builds its `page`/`pages`
fixture with `open_pages(browser, console_url, ...)`, or with `open_contexts(browser,
console_url, ...)` when each page needs a browser context of its own (fresh storage, its own
locale or viewport).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.admin_site import PASSWORD, AdminSite
from tests.admin_site import Till as Till  # the tests' POS, here with the rest
from tests.console_a11y import axe_check

CHROMIUM = "/usr/bin/chromium"
DEADLINE_MS = 30_000
"""How long a page may take to show what a test waits for (generous: shared machines)."""
DESKTOP = {"width": 1200, "height": 860}
PHONE = {"is_mobile": True, "has_touch": True, "viewport": {"width": 390, "height": 844}}


def browser_or_fail() -> Any:
    """Playwright's sync API, or a failure in CI (a skip elsewhere) when it or Chromium is
    missing."""
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
def browser(console_url: str) -> Iterator[Any]:
    """Chromium for the test module. It asks for the module's `console_url` so that the site
    starts first: Playwright's sync API keeps an event loop running in this thread from here
    on, and a site's setup calls asyncio.run."""
    sync_playwright = browser_or_fail()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def shots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = os.environ.get("ONECARD_CONSOLE_SHOTS")
    name = request.module.__name__.rsplit(".", 1)[-1]
    path = Path(where) if where else tmp_path_factory.mktemp(f"{name}-shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Pages:
    """New pages in one browser context, each failing the test on a script error (checked
    when `open_pages` ends); dialogs are accepted unless `accept_dialogs` is false."""

    def __init__(self, context: Any, accept_dialogs: bool = True) -> None:
        self.context = context
        self.accept_dialogs = accept_dialogs
        self.errors: list[str] = []

    def new(self) -> Any:
        page = self.context.new_page()
        page.set_default_timeout(DEADLINE_MS)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        if self.accept_dialogs:
            page.on("dialog", lambda dialog: dialog.accept())
        return page


def _new_pages(browser: Any, url: str, accept_dialogs: bool, context_options: Any) -> Pages:
    """A new browser context at `url`: en-US and DESKTOP's viewport unless `context_options`
    say otherwise."""
    context_options.setdefault("locale", "en-US")
    context_options.setdefault("viewport", DESKTOP)
    return Pages(browser.new_context(base_url=url, **context_options), accept_dialogs)


@contextlib.contextmanager
def open_pages(browser: Any, url: str, accept_dialogs: bool = True,
               **context_options: Any) -> Iterator[Pages]:
    """A browser context at `url` (en-US; DESKTOP's viewport unless `context_options` say
    otherwise: PHONE, accept_downloads=True, ...). On leaving, the context is closed and any
    script error a page raised fails the test."""
    p = _new_pages(browser, url, accept_dialogs, context_options)
    try:
        yield p
    finally:
        p.context.close()
    assert not p.errors, f"script errors in the page: {p.errors}"


class Contexts:
    """New pages each in a browser context of its own (its own storage; the context options
    given to `new`), each failing the test on a script error (checked when `open_contexts`
    ends); dialogs are accepted unless `accept_dialogs` is false."""

    def __init__(self, browser: Any, url: str, accept_dialogs: bool = True) -> None:
        self.browser = browser
        self.url = url
        self.accept_dialogs = accept_dialogs
        self.opened: list[Pages] = []
        self.errors: list[str] = []

    def new(self, **context_options: Any) -> Any:
        """A page in a new context at the URL (en-US; DESKTOP's viewport unless
        `context_options` say otherwise: locale="zh-CN", **PHONE, ...)."""
        p = _new_pages(self.browser, self.url, self.accept_dialogs, context_options)
        p.errors = self.errors
        self.opened.append(p)
        return p.new()


@contextlib.contextmanager
def open_contexts(browser: Any, url: str, accept_dialogs: bool = True) -> Iterator[Contexts]:
    """A factory of pages at `url`, each in a fresh browser context. On leaving, every context
    is closed and any script error a page raised fails the test."""
    c = Contexts(browser, url, accept_dialogs)
    try:
        yield c
    finally:
        for p in c.opened:
            p.context.close()
    assert not c.errors, f"script errors in the pages: {c.errors}"


def log_in(page: Any, username: str, start: str = "/console/",
           landing: str = r"/console/\w+\.html", password: str = PASSWORD) -> None:
    """Log in on the page at `start` by keyboard (an English page: the fields are found by
    their labels), and wait for the page a log-in lands on: a URL matching `landing`, or the
    phone app shown when `start` is under /m/."""
    page.goto(start)
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_label("Password").press("Enter")  # by keyboard
    if start.startswith("/m/"):
        page.wait_for_selector("#m-app:not([hidden])")
    else:
        page.wait_for_url(re.compile(landing))


_UNNAMED = """() => [...document.querySelectorAll("input, select, button, a[href]")]
    .filter((el) => el.offsetParent !== null)
    .filter((el) => !((el.labels && el.labels.length) || el.getAttribute("aria-label")
                      || el.textContent.trim()))
    .map((el) => el.outerHTML)"""

_UNTRANSLATED = """() => [...document.querySelectorAll("[data-i18n]")]
    .filter((el) => el.offsetParent !== null && el.textContent === el.dataset.i18n)
    .map((el) => el.dataset.i18n)"""


def labelled(page: Any) -> None:
    """Every visible control has a name a screen reader can say (a label, aria-label or
    text), and axe-core finds no WCAG 2 A/AA violation (tests/console_a11y.py): the
    automated accessibility check the issue asks for, at each page state a journey shows."""
    assert page.evaluate(_UNNAMED) == [], page.url
    axe_check(page)


def checked(page: Any) -> None:
    """Every visible control is labelled, and every visible text is in the catalogue."""
    labelled(page)
    assert page.evaluate(_UNTRANSLATED) == [], page.url


def playwright_expect() -> Any:
    """Playwright's expect (imported late: a missing Playwright fails in `browser`)."""
    from playwright.sync_api import expect

    return expect


def fetch(site: AdminSite, sql: str, *args: Any) -> list[Any]:
    """site.fetch off this thread: Playwright's sync API keeps an event loop running here."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(site.fetch, sql, *args).result()


def until(what: str, predicate: Any, seconds: float = DEADLINE_MS / 1000,
          poll_seconds: float = 0.02) -> None:
    """Wait until `predicate()` is true, failing with `what` after `seconds`; `predicate` is
    asked every `poll_seconds` (a slower pace for one that asks a server)."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < seconds, f"{what}: not within {seconds} s"
        time.sleep(poll_seconds)
