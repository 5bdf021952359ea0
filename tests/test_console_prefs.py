"""The console's last gaps in a real browser (docs/console.md): the language a log-in chose
follows it to a fresh browser (kept on the server), on the console and on the phone pages;
a person's documents and audit trail on the person page, kept to the log-in's subtree.

The admin API runs as a process over real TCP (no switch: nothing here moves money);
Playwright drives Debian's Chromium. The browser, its contexts, the log-in (of an English
page) and reading the database are tests/console_browser.py's. In CI (CI set) a missing
Chromium or Playwright fails these tests instead of skipping them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests import console_browser as cb
from tests.admin_site import PASSWORD, AdminSite
from tests.console_a11y import axe_check

NARROW = {"width": 390, "height": 860}
"""A phone-wide viewport (not a mobile browser)."""


@pytest.fixture(scope="module")
def prefs_site(pg_server: Any, migrated_template: str) -> Iterator[dict[str, Any]]:
    """Tenant 1 with a clerk, a manager, a finance log-in and a cardholder; a person with a
    submitted adjustment (a document) and an audited card; tenant 2 with a person."""
    site = AdminSite(pg_server.new_database(template=migrated_template))
    site.start_admin()
    try:
        root = site.api()
        campus, east = site.tenant_node(1), site.tenant_node(2)
        person = dict(site.fetch(
            "SELECT p.id, c.card_no FROM people p JOIN accounts a ON a.id = p.account_id"
            " JOIN cards c ON c.account_id = a.id WHERE a.status = 0 AND c.status = 0"
            " AND a.tenant_id = 1 ORDER BY p.id LIMIT 1")[0])
        for username, role, node in (("campus.clerk", "card_office", campus),
                                     ("campus.manager", "tenant_admin", campus),
                                     ("campus.finance", "finance", campus),
                                     ("east.clerk", "card_office", east)):
            root.ok("POST", "/users", {"username": username, "password": PASSWORD,
                                       "role": role, "node_id": node})
        root.ok("POST", "/users", {"username": "li.lei", "password": PASSWORD,
                                   "role": "cardholder", "node_id": campus,
                                   "person_id": person["id"]})
        clerk = site.api("campus.clerk")
        doc = clerk.ok("POST", "/documents", {
            "doc_type": "adjustment", "title": "Meal card correction", "reason": "till error",
            "lines": [{"person_id": person["id"], "amount_fen": 1234}]})
        clerk.ok("POST", f"/documents/{doc['id']}/submit", {})
        other = root.ok("POST", "/people", {"node_id": east, "name": "Wang Wu", "class_id": 2})
        yield {"site": site, "person": person, "doc": doc, "other": other,
               "url": site.admin.url if site.admin else ""}
    finally:
        site.close()


@pytest.fixture(scope="module")
def console_url(prefs_site: dict[str, Any]) -> str:
    return str(prefs_site["url"])


@pytest.fixture
def contexts(browser: Any, console_url: str) -> Iterator[cb.Contexts]:
    """A factory of pages, each in a fresh context (its own storage), closed afterwards."""
    with cb.open_contexts(browser, console_url) as c:
        yield c


def _log_in_by_ids(page: Any, username: str, start: str = "/console/") -> None:
    """Log in by the fields' ids: on a Chinese page the labels are not cb.log_in's."""
    page.goto(start)
    prefix = "m-" if start.startswith("/m/") else ""
    page.locator(f"#{prefix}username").fill(username)
    page.locator(f"#{prefix}password").fill(PASSWORD)
    page.locator(f"#{prefix}password").press("Enter")


def test_the_language_chosen_follows_the_log_in_to_a_fresh_browser(
        contexts: cb.Contexts, prefs_site: dict[str, Any]) -> None:
    site = prefs_site["site"]
    first = contexts.new(locale="zh-CN")
    _log_in_by_ids(first, "campus.clerk")
    first.wait_for_url(re.compile(r"/console/people\.html"))
    first.wait_for_selector("#oc-header nav a")
    assert first.evaluate("document.documentElement.lang") == "zh-CN"  # the browser's
    first.locator("#oc-lang").select_option("en")
    first.evaluate("OC.saved()")
    assert first.locator("#oc-header nav a").first.inner_text() == "Card office"
    saved = cb.fetch(site, "SELECT locale FROM admin_users WHERE username = 'campus.clerk'")
    assert saved[0]["locale"] == "en"

    # A fresh context: new storage, a Chinese browser. Before log-in the page is Chinese (no
    # browser copy); after it, English, from the server.
    second = contexts.new(locale="zh-CN")
    second.goto("/console/")
    assert second.evaluate("document.documentElement.lang") == "zh-CN"
    _log_in_by_ids(second, "campus.clerk")
    second.wait_for_url(re.compile(r"/console/people\.html"))
    second.wait_for_selector("#oc-header nav a")
    assert second.evaluate("document.documentElement.lang") == "en"
    assert second.locator("#oc-header nav a").first.inner_text() == "Card office"
    assert second.locator("#oc-lang").input_value() == "en"
    # Another log-in on that browser is not given the clerk's language from the server.
    second.locator("#oc-logout").click()
    second.wait_for_url(re.compile(r"/console/(index\.html)?$"))
    _log_in_by_ids(second, "campus.manager")
    second.wait_for_url(re.compile(r"/console/people\.html"))
    second.wait_for_selector("#oc-header nav a")
    assert cb.fetch(site, "SELECT locale FROM admin_users WHERE username = 'campus.manager'"
                    )[0]["locale"] is None

    # The phone pages: the cardholder switches to English on one phone; a fresh one follows.
    phone = contexts.new(locale="zh-CN", viewport=NARROW)
    _log_in_by_ids(phone, "li.lei", "/m/")
    phone.wait_for_selector("#m-app:not([hidden])")
    assert phone.evaluate("document.documentElement.lang") == "zh-CN"
    phone.locator("#m-lang").select_option("en")
    phone.evaluate("OC.saved()")
    again = contexts.new(locale="zh-CN", viewport=NARROW)
    _log_in_by_ids(again, "li.lei", "/m/")
    again.wait_for_selector("#m-app:not([hidden])")
    assert again.evaluate("document.documentElement.lang") == "en"
    assert again.locator("#m-lang").input_value() == "en"
    axe_check(again)


def test_a_persons_documents_and_audit_trail_on_their_page(
        contexts: cb.Contexts, prefs_site: dict[str, Any]) -> None:
    expect = cb.playwright_expect()
    person, doc = prefs_site["person"], prefs_site["doc"]
    page = contexts.new()
    cb.log_in(page, "campus.manager", landing=r"/console/people\.html")
    page.goto(f"/console/person.html?id={person['id']}")
    row = page.locator(f"#docs-table tbody tr[data-doc='{doc['id']}']")
    expect(row).to_contain_text("adjustment")
    expect(row).to_contain_text("submitted")
    expect(row).to_contain_text("12.34")
    expect(row).to_contain_text("campus.clerk")
    audit = page.locator("#audit-table tbody")
    expect(audit).to_contain_text("document.create")
    expect(audit).to_contain_text("document.submit")
    axe_check(page)
    with page.expect_download() as download:
        row.get_by_role("button", name=f"Document {doc['id']} as PDF").click()
    assert download.value.suggested_filename == f"document-{doc['id']}.pdf"
    # The approvals link opens the document on the approvals page (a manager approves).
    row.get_by_role("link", name=f"Document {doc['id']} on the approvals page").click()
    page.wait_for_url(re.compile(r"/console/approvals\.html\?doc="))
    expect(page.locator("#doc-heading")).to_contain_text("Meal card correction")

    # A clerk: the documents, no audit trail (no audit.read), no approvals link.
    clerk = contexts.new()
    cb.log_in(clerk, "campus.clerk", landing=r"/console/people\.html")
    clerk.goto(f"/console/person.html?id={person['id']}")
    clerk_row = clerk.locator(f"#docs-table tbody tr[data-doc='{doc['id']}']")
    expect(clerk_row).to_contain_text("submitted")
    expect(clerk_row.get_by_role("link")).to_have_count(0)
    expect(clerk.locator("#audit-section")).to_be_hidden()

    # The other park's clerk: no such person, and no documents section at all.
    east = contexts.new()
    cb.log_in(east, "east.clerk", landing=r"/console/people\.html")
    east.goto(f"/console/person.html?id={person['id']}")
    expect(east.locator("#person-message")).to_contain_text("No such person")
    expect(east.locator("#docs-section")).to_be_hidden()
    # ... and its own person has none of tenant 1's documents.
    east.goto(f"/console/person.html?id={prefs_site['other']['id']}")
    expect(east.locator("#docs-table tbody")).to_contain_text("No documents")


def test_the_finance_page_names_the_other_park_in_the_clearing_table(
        contexts: cb.Contexts, prefs_site: dict[str, Any]) -> None:
    """The page shows the names the clearing route answers (the route's own figures and names
    over a real cross-park day: tests/test_settlement.py). Here the route's answer is a
    cross-park row served to the page, since no day of this site has one."""
    expect = cb.playwright_expect()
    names = {r["id"]: r["name"] for r in cb.fetch(
        prefs_site["site"], "SELECT id, name FROM tenants WHERE id IN (1, 2)")}
    page = contexts.new()

    def clearing(route: Any) -> None:
        day = re.search(r"from_day=([0-9-]+)", route.request.url)
        body = {"tenant_id": 1, "from_day": day.group(1) if day else "2026-12-01",
                "to_day": day.group(1) if day else "2026-12-01", "next_after": None,
                "items": [{"business_day": "2026-12-01", "other_tenant_id": 2,
                           "other_tenant_name": names[2], "our_cards_there_count": 3,
                           "our_cards_there_fen": 1203, "their_cards_here_count": 0,
                           "their_cards_here_fen": 0, "net_fen": 1203,
                           "debtor_tenant_id": 1, "creditor_tenant_id": 2}]}
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.route(re.compile(r"/tenants/1/finance/clearing\?"), clearing)
    cb.log_in(page, "campus.finance", landing=r"/console/people\.html")
    page.goto("/console/finance.html")
    row = page.locator("#table-clearing tbody tr").first
    expect(row).to_contain_text(names[2])
    expect(row).to_contain_text(f"{names[1]} pays {names[2]}")
    expect(row).not_to_contain_text("#2")
