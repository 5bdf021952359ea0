"""The operators' console (admin_api/console/) in a real browser, against real processes.

The switch and the admin API run as processes over real TCP; Playwright drives Debian's
Chromium (/usr/bin/chromium, nothing downloaded). Journeys: a clerk finds a person and reports
the card lost (then the switch refuses it); a clerk of the other tenant sees nothing of this
one; the sales page moves live when a till sells. The JSON routes behind the pages are tested
here without a browser too. Each journey saves screenshots: to ONECARD_CONSOLE_SHOTS when set
(docs/make_console_screenshots.py sets it to docs/img/console), else to a temporary directory.

In CI (CI set) a missing Chromium or Playwright fails these tests instead of skipping them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from protocols import ocp
from tests import console_browser as cb
from tests.admin_site import PASSWORD, AdminSite, new_card_no

PERSON = "Li Lei"
EXTERNAL_ID = "S2026-0042"
DEPARTMENT = "Physics Department"


@pytest.fixture(scope="module")
def console_site(pg_server: Any, migrated_template: str) -> Iterator[dict[str, Any]]:
    """Tenant 1 with a department, a person with a card and money (a top-up and a purchase),
    a card office clerk and a site manager; tenant 2 with its own clerk."""
    site = AdminSite(pg_server.new_database(template=migrated_template))
    site.start()
    site.start_admin()
    try:
        root = site.api()
        campus, east = site.tenant_node(1), site.tenant_node(2)
        dept = root.ok("POST", "/org/nodes", {"parent_id": campus, "kind": "department",
                                              "name": DEPARTMENT})
        person = root.ok("POST", "/people", {"node_id": dept["id"], "name": PERSON,
                                             "class_id": 2, "external_id": EXTERNAL_ID})
        card_no = new_card_no()
        root.ok("POST", f"/people/{person['id']}/cards", {"card_no": card_no})
        r = root.http.post(f"/people/{person['id']}/topups", json={"amount_fen": 5_000},
                           headers={"Idempotency-Key": "console-topup-1"})
        assert r.status_code == 201 and r.json()["result"] == "APPROVED", r.text
        for username, role, node in (("campus.clerk", "card_office", campus),
                                     ("campus.manager", "tenant_admin", campus),
                                     ("east.clerk", "card_office", east)):
            root.ok("POST", "/users", {"username": username, "password": PASSWORD,
                                       "role": role, "node_id": node})
        till = cb.Till(site)
        cb.until("the new card spends",
                 lambda: till.buy(card_no, 150).code == ocp.ResponseCode.APPROVED)
        # A card of tenant 1 that stays active, for the live sales journey.
        spender = site.fetch(
            "SELECT c.card_no FROM cards c JOIN accounts a ON a.id = c.account_id"
            " WHERE a.status = 0 AND c.status = 0 AND a.tenant_id = 1 AND a.class_id = 2"
            " AND a.opening_main_fen >= 5000 ORDER BY c.card_no LIMIT 1")[0]["card_no"]
        yield {"site": site, "person": person, "card_no": card_no, "dept": dept, "till": till,
               "spender": spender, "url": site.admin.url if site.admin else ""}
    finally:
        site.close()


@pytest.fixture(scope="module")
def console_url(console_site: dict[str, Any]) -> str:
    return str(console_site["url"])



@pytest.fixture(autouse=True)
def _language_of_the_browser_again(console_site: dict[str, Any]) -> Iterator[None]:
    """A test that switches a shared log-in's language (kept on the server) leaves it to the
    browser's again, whether it passed or not: the next test reads English."""
    yield
    cb.fetch(console_site["site"], "UPDATE admin_users SET locale = NULL")

@pytest.fixture
def page(browser: Any, console_url: str) -> Iterator[Any]:
    with cb.open_pages(browser, console_url) as pages:
        yield pages.new()


def _log_in(page: Any, username: str, start: str = "/console/") -> None:
    cb.log_in(page, username, start, landing=r"/console/(people|sales)\.html")


# -- journeys in the browser -------------------------------------------------------------------


def test_clerk_finds_a_person_reports_the_card_lost_and_the_switch_refuses_it(
        page: Any, console_site: dict[str, Any], shots: Path) -> None:
    expect = cb.playwright_expect()
    card_no = console_site["card_no"]
    page.goto("/console/")
    page.screenshot(path=str(shots / "login.png"))
    cb.labelled(page)
    _log_in(page, "campus.clerk")
    # By department, by external id and by card number: the same person.
    for words in (DEPARTMENT.split()[0], EXTERNAL_ID, str(card_no)):
        page.get_by_label("Name, card number, external id or department").fill(words)
        page.get_by_role("button", name="Search").click()
        expect(page.locator("#people-table tbody tr")).to_have_count(1)
        expect(page.locator("#people-table tbody")).to_contain_text(PERSON)
    page.screenshot(path=str(shots / "people.png"))
    cb.labelled(page)
    page.get_by_role("link", name=PERSON).click()
    expect(page.locator("#person-name")).to_have_text(PERSON)
    # 50.00 topped up, 1.50 spent: in yuan with two decimals.
    expect(page.locator("#balance-total")).to_have_text("48.50")
    expect(page.locator("#txns-table tbody tr")).to_have_count(2)
    expect(page.locator("#txns-table tbody")).to_contain_text("-1.50")
    page.screenshot(path=str(shots / "person.png"), full_page=True)
    cb.labelled(page)

    page.get_by_role("button", name="Report lost").click()
    expect(page.locator(f'tr[data-card="{card_no}"] .card-status')).to_have_text("lost")
    expect(page.locator("#card-message")).to_contain_text(f"Card {card_no} is reported lost")
    expect(page.get_by_role("button", name="Unfreeze")).to_be_visible()
    page.screenshot(path=str(shots / "person-lost.png"), full_page=True)
    # The API says so, and the switch refuses the card (the change feed, within seconds).
    api = console_site["site"].api("campus.clerk")
    assert api.ok("GET", f"/cards/{card_no}")["status"] == "lost"
    till = console_site["till"]
    cb.until("the lost card is refused",
             lambda: till.buy(card_no).code == ocp.ResponseCode.CARD_LOST)
    audit = cb.fetch(console_site["site"],
           "SELECT username FROM audit_log WHERE action = 'card.report_loss' AND entity_id = $1",
           str(card_no))
    assert [r["username"] for r in audit] == ["campus.clerk"]

    # In Chinese, chosen by this user and kept for them.
    page.get_by_label("Language").select_option("zh-CN")
    expect(page.get_by_role("button", name="解挂")).to_be_visible()
    expect(page.locator(f'tr[data-card="{card_no}"] .card-status')).to_have_text("挂失")
    expect(page.locator("#txns-table tbody tr").first).to_contain_text("消费")
    expect(page.locator("#card-message")).to_have_text(f"卡 {card_no} 已挂失。")
    page.screenshot(path=str(shots / "person-zh.png"), full_page=True)
    page.reload()
    expect(page.get_by_role("button", name="解挂")).to_be_visible()
    page.get_by_role("button", name="解挂").click()
    expect(page.locator(f'tr[data-card="{card_no}"] .card-status')).to_have_text("正常")
    cb.until("the unfrozen card spends",
             lambda: till.buy(card_no, 100).code == ocp.ResponseCode.APPROVED)


def test_a_clerk_of_another_tenant_sees_nothing_of_this_one(
        page: Any, console_site: dict[str, Any], shots: Path) -> None:
    expect = cb.playwright_expect()
    _log_in(page, "east.clerk")
    for words in (PERSON, str(console_site["card_no"]), EXTERNAL_ID, DEPARTMENT):
        page.get_by_label("Name, card number, external id or department").fill(words)
        page.get_by_role("button", name="Search").click()
        expect(page.locator("#people-message")).to_have_text(
            "Nobody in your part of the organisation matches.")
        expect(page.locator("#people-table")).to_be_hidden()
    page.goto(f"/console/person.html?id={console_site['person']['id']}")
    expect(page.locator("#person-message")).to_have_text(
        "No such person in your part of the organisation.")
    expect(page.locator("#person-body")).to_be_hidden()
    page.screenshot(path=str(shots / "other-tenant.png"))
    assert PERSON not in page.content() and EXTERNAL_ID not in page.content()
    # The sales page offers only its own site, and tenant 1's stream is refused.
    page.goto("/console/sales.html")
    expect(page.locator("#tenant option")).to_have_count(1)
    assert page.locator("#tenant").input_value() == "2"
    east = console_site["site"].api("east.clerk")
    assert east.get("/tenants/1/live").status_code == 404
    # Log-out ends the token: back to the log-in page, and the person page sends us there.
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/console/$"))
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    page.goto("/console/people.html")
    page.wait_for_url(re.compile(r"/console/$"))


def test_the_sales_page_moves_live_when_a_till_sells(
        page: Any, console_site: dict[str, Any], shots: Path) -> None:
    expect = cb.playwright_expect()
    _log_in(page, "campus.manager", start="/console")  # without the slash, too
    page.goto("/console/sales.html")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "live")
    expect(page.locator("#switch-state")).to_have_attribute("data-connected", "true")
    expect(page.locator("#sales-chart canvas")).to_have_count(1)
    expect(page.locator("#sales-purchases")).not_to_have_text("–")
    before = int(page.locator("#sales-purchases").inner_text())
    amount_before = page.locator("#sales-amount").inner_text()
    assert console_site["till"].buy(console_site["spender"], 1_234).code == \
        ocp.ResponseCode.APPROVED
    # No reload: the stream brings it.
    expect(page.locator("#sales-purchases")).to_have_text(str(before + 1))
    expect(page.locator("#sales-amount")).not_to_have_text(amount_before)
    hour_rows = page.locator("#sales-table tbody tr")
    expect(hour_rows).to_have_count(24)
    total = sum(int(hour_rows.nth(h).locator("td").nth(0).inner_text()) for h in range(24))
    assert total == before + 1
    page.screenshot(path=str(shots / "sales.png"), full_page=True)
    cb.labelled(page)


def test_money_text_is_converted_to_fen_by_digits_and_both_languages_say_it_all(
        page: Any) -> None:
    page.goto("/console/")
    cases = {"12": 1200, "12.5": 1250, "0.07": 7, "1,234.05": 123_405, " 3.10 ": 310,
             "9999999999999.99": 999_999_999_999_999, "12.345": None, "-1": None, "1e3": None,
             "": None, "1.": None, ".5": None, "12,34": None, "0.1 + 0.2": None}
    got = page.evaluate("(cases) => Object.keys(cases).map((k) => [k, OC.yuanToFen(k)])", cases)
    assert dict(got) == cases
    shown = page.evaluate("[OC.yuan(0), OC.yuan(7), OC.yuan(-150), OC.yuan(123405)]")
    assert shown == ["0.00", "0.07", "-1.50", "1,234.05"]
    # The catalogue says everything in both languages.
    keys = page.evaluate("Object.fromEntries(Object.entries(OC_MESSAGES)"
                         ".map(([k, v]) => [k, Object.keys(v).sort()]))")
    assert set(keys) == {"en", "zh-CN"} and keys["en"] == keys["zh-CN"]


# -- the routes behind the pages ---------------------------------------------------------------


def test_search_matches_name_card_external_id_and_department_in_the_subtree_only(
        console_site: dict[str, Any]) -> None:
    site: AdminSite = console_site["site"]
    person_id = console_site["person"]["id"]
    clerk, east = site.api("campus.clerk"), site.api("east.clerk")
    for words in ("li lei", "LEI", str(console_site["card_no"]), EXTERNAL_ID, "physics"):
        found = clerk.ok("GET", f"/people/search?q={words}")
        assert [p["id"] for p in found["items"]] == [person_id], words
        assert east.ok("GET", f"/people/search?q={words}")["items"] == [], words
    [hit] = clerk.ok("GET", f"/people/search?q={EXTERNAL_ID}")["items"]
    assert (hit["department"], hit["card_nos"]) == (DEPARTMENT, [console_site["card_no"]])
    # A LIKE wildcard is a literal, not "everyone".
    assert clerk.ok("GET", "/people/search?q=%25")["items"] == []
    assert clerk.ok("GET", "/people/search?q=_")["items"] == []
    page = clerk.ok("GET", "/people/search?limit=5")
    assert len(page["items"]) == 5 and page["more"]
    assert east.get(f"/people/{person_id}/recent").status_code == 404
    recent = clerk.ok("GET", f"/people/{person_id}/recent?limit=1")
    assert len(recent) == 1 and recent[0]["kind"] in ("purchase", "credit")


def test_hourly_sales_and_the_live_stream_agree_with_the_journal(
        console_site: dict[str, Any]) -> None:
    site: AdminSite = console_site["site"]
    manager = site.api("campus.manager")
    sales = manager.ok("GET", "/tenants/1/sales/hourly")
    [row] = cb.fetch(site,
           "SELECT count(*) FILTER (WHERE code = 0 AND kind IN (1, 5)) AS n,"
           " coalesce(sum(merchant_delta_fen), 0)::bigint AS fen FROM journal"
           " WHERE merchant_tenant_id = 1 AND kind IN (1, 2, 5) AND lsn <= $1",
           sales["as_of_lsn"])
    assert (sales["purchases"], sales["amount_fen"]) == (row["n"], row["fen"])
    assert len(sales["hours"]) == 24 and sales["switch_connected"] is True
    assert site.api("east.clerk").get("/tenants/1/sales/hourly").status_code == 404

    events: list[tuple[str, Any]] = []
    headers = {"Authorization": f"Bearer {manager.token}"}
    with httpx.stream("GET", f"{console_site['url']}/tenants/1/live", headers=headers,
                      timeout=cb.DEADLINE_MS / 1000) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name or "message", json.loads(line.split(":", 1)[1])))
                if len(events) == 2:  # the first sales and switch events: now sell
                    code = console_site["till"].buy(console_site["spender"], 200).code
                    assert code == ocp.ResponseCode.APPROVED
                if len([e for e in events if e[0] == "sales"]) == 2:
                    break
    first, second = [data for kind, data in events if kind == "sales"]
    assert ("switch", {"connected": True}) in events
    assert second["purchases"] == first["purchases"] + 1
    assert second["amount_fen"] == first["amount_fen"] + 200
    assert second["as_of_lsn"] > first["as_of_lsn"]


def test_console_files_are_public_hold_no_data_and_load_nothing_from_elsewhere(
        console_site: dict[str, Any]) -> None:
    static = Path(__file__).resolve().parent.parent / "admin_api" / "console" / "static"
    with httpx.Client(base_url=console_site["url"], timeout=30) as http:
        for path in sorted(static.rglob("*")):
            if path.is_dir() or path.name == "README":
                continue
            name = path.relative_to(static).as_posix()
            r = http.get(f"/console/{name}")
            assert r.status_code == 200, name
            assert "default-src 'self'" in r.headers["content-security-policy"], name
            assert r.content == path.read_bytes(), name
            if path.suffix == ".html":
                assert not re.search(r"""(src|href)=["']?(https?:)?//""", r.text), name
        index = http.get("/console/")
        assert index.status_code == 200 and 'id="login-form"' in index.text


def test_the_console_routes_are_in_the_openapi_document_that_the_access_walk_reads(
        console_site: dict[str, Any]) -> None:
    """tests/test_admin_access.py walks every route of the document with every role from the
    other tenant; the console's JSON routes are among them (its pages, static files with no
    data, are not API routes)."""
    doc = httpx.get(f"{console_site['url']}/docs/openapi.json", timeout=30).json()
    for path in ("/people/search", "/people/{person_id}/recent",
                 "/tenants/{tenant_id}/sales/hourly", "/tenants/{tenant_id}/live"):
        assert "get" in doc["paths"][path], path
        assert doc["paths"][path]["get"].get("security") != [], path
    assert not [p for p in doc["paths"] if p.startswith("/console")]
    live = doc["paths"]["/tenants/{tenant_id}/live"]["get"]["responses"]["200"]
    assert "text/event-stream" in live["content"], live


def test_every_console_file_is_package_data() -> None:
    """pip install (not only -e) serves the console: each of its files matches a pattern of
    [tool.setuptools.package-data] (a new folder needs its own pattern)."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["admin_api.console"]
    package = root / "admin_api" / "console"
    files = [p.relative_to(package).as_posix() for p in (package / "static").rglob("*")
             if p.is_file() and "vendor/axe-core" not in p.as_posix()]  # the tests' only
    assert len(files) >= 12
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) and name.count("/") == pattern.count("/")
                   for pattern in patterns), f"{name} is not package data"
