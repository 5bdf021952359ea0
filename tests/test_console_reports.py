"""The console's reports and finance pages (issue 13, items 5 and 6) in a real browser, against
real processes, as tests/test_console.py does.

Journeys: a purchase and a decline made on a simulated till show in the reports' tables (the
chart's own figures) and in a CSV exported with the log-in's token; finance sees the day's
settlement per merchant once its cutover has passed and requests its confirmation (a document
another person approves; then the page says confirmed); a clerk and a finance log-in of the
other park see nothing of this one. Every visible control is labelled and every visible text
comes from the catalogue, in each journey. Screenshots go where tests/test_console.py puts its
own.

In CI (CI set) a missing Chromium or Playwright fails these tests instead of skipping them.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocols import ocp
from tests import console_browser as cb
from tests.admin_site import PASSWORD, AdminSite
from tests.test_settlement import _end_the_day_soon

SALE_FEN = 1_234
"""The till's purchase: 12.34 yuan."""
TOO_MUCH_FEN = 9_999_999
"""A purchase the card cannot pay: a decline."""


def _exceptions(site: AdminSite, node: int) -> tuple[int, int]:
    """A reconciliation exception (a bank line nobody here knows) and a bank exception (the
    switch's document for a reversal advice the bank never acknowledged) of tenant 1, made as
    tests/test_admin_access.py makes them: (exception id, bank exception document id)."""
    recon = site.fetch(
        "WITH f AS (INSERT INTO bank_files (tenant_id, business_date, file_sha256, lines_count,"
        " total_fen, matched, ours_only, bank_only, amount_differs, imported_by) VALUES"
        " (1, '2020-01-02', '\\x01', 1, 700, 0, 0, 1, 0, 'test') RETURNING id)"
        " INSERT INTO reconciliation_exceptions (file_id, tenant_id, node_path, business_date,"
        " kind, rrn, bank_amount_fen, our_amount_fen) SELECT f.id, 1, n.path, '2020-01-02',"
        " 'bank_only', 'RECON1', 700, 0 FROM f, org_nodes n WHERE n.id = $1 RETURNING id",
        node)[0]["id"]
    card_no = site.fetch(  # a card of tenant 1 with no bank card bound yet
        "SELECT c.card_no FROM cards c JOIN accounts a ON a.id = c.account_id"
        " WHERE a.tenant_id = 1 AND NOT EXISTS (SELECT 1 FROM bank_cards b"
        " WHERE b.account_id = c.account_id) ORDER BY c.card_no LIMIT 1")[0]["card_no"]
    bank = site.fetch(
        "WITH bc AS (INSERT INTO bank_cards (tenant_id, account_id, pan_masked, bank_token)"
        " SELECT 1, account_id, '622202******0128', 'TEST' FROM cards WHERE card_no = $1"
        " RETURNING id, account_id),"
        " t AS (INSERT INTO bank_topups (tenant_id, terminal_id, txn_seq, account_id, card_no,"
        " bank_card_id, amount_fen, stan, rrn, state) SELECT 1, 70000001, 1, bc.account_id,"
        " $1, bc.id, 500, 1, 'BANKEXC1', 'exception' FROM bc RETURNING id),"
        " d AS (INSERT INTO documents (tenant_id, node_id, node_path, doc_type, title, reason,"
        " status, levels, total_fen, lines_count, submitted_at, bank_topup_id) SELECT 1, n.id,"
        " n.path, 'bank_exception', 'Bank reversal not acknowledged', 'timeout twice',"
        " 'submitted', 1, 500, 0, now(), t.id FROM t, org_nodes n WHERE n.id = $2"
        " RETURNING id, bank_topup_id)"
        " INSERT INTO bank_advices (topup_id, tenant_id, reason, state, tries, document_id)"
        " SELECT bank_topup_id, 1, 'timeout', 'exception', 2, id FROM d RETURNING document_id",
        card_no, node)[0]["document_id"]
    return recon, bank


@pytest.fixture(scope="module")
def reports_site(pg_server: Any, migrated_template: str) -> Iterator[dict[str, Any]]:
    """Tenant 1 with finance log-ins, a purchase and a decline on its canteen's till, and a
    business day that has ended (the cutover set 2 s ahead, as tests/test_settlement.py does);
    tenant 2 with its own clerk and finance log-in."""
    site = AdminSite(pg_server.new_database(template=migrated_template))
    site.start()
    site.start_admin()
    try:
        root = site.api()
        campus, east = site.tenant_node(1), site.tenant_node(2)
        for username, role, node in (("campus.finance", "finance", campus),
                                     ("campus.approver", "finance", campus),
                                     ("campus.manager", "tenant_admin", campus),
                                     ("east.clerk", "card_office", east),
                                     ("east.finance", "finance", east)):
            root.ok("POST", "/users", {"username": username, "password": PASSWORD,
                                       "role": role, "node_id": node})
        card_no = site.fetch(
            "SELECT c.card_no FROM cards c JOIN accounts a ON a.id = c.account_id"
            " WHERE a.status = 0 AND c.status = 0 AND a.tenant_id = 1 AND a.class_id = 2"
            " AND a.opening_main_fen >= 5000 ORDER BY c.card_no LIMIT 1")[0]["card_no"]
        till = cb.Till(site)
        cb.until("the card spends", lambda: till.buy(card_no, SALE_FEN).code == 0)
        assert till.buy(card_no, TOO_MUCH_FEN).code != ocp.ResponseCode.APPROVED
        merchant = site.fetch("SELECT merchant_id FROM journal WHERE card_no = $1 AND code = 0"
                              " AND kind = 1", card_no)[0]["merchant_id"]
        recon_id, bank_exc_id = _exceptions(site, campus)
        day, _ = _end_the_day_soon(site, root)
        fin = site.api("campus.finance")
        deadline = time.monotonic() + 60
        while fin.get(f"/tenants/1/settlements/{day}").status_code != 200:
            assert time.monotonic() < deadline, "the business day did not close"
            time.sleep(0.05)
        yield {"site": site, "card_no": card_no, "till": till, "day": day,
               "merchant": merchant, "recon_id": recon_id, "bank_exc_id": bank_exc_id,
               "url": site.admin.url if site.admin else ""}
    finally:
        site.close()


@pytest.fixture(scope="module")
def console_url(reports_site: dict[str, Any]) -> str:
    return str(reports_site["url"])



@pytest.fixture(autouse=True)
def _language_of_the_browser_again(reports_site: dict[str, Any]) -> Iterator[None]:
    """A test that switches a shared log-in's language (kept on the server) leaves it to the
    browser's again, whether it passed or not: the next test reads English."""
    yield
    cb.fetch(reports_site["site"], "UPDATE admin_users SET locale = NULL")

@pytest.fixture
def pages(browser: Any, console_url: str) -> Iterator[cb.Pages]:
    with cb.open_pages(browser, console_url, accept_downloads=True) as p:
        yield p


def _expect() -> Any:
    """Playwright's expect, waiting as long as the pages may take here (shared machines)."""
    expect = cb.playwright_expect()
    expect.set_options(timeout=cb.DEADLINE_MS)
    return expect


# -- journeys in the browser -------------------------------------------------------------------


def test_reports_show_a_tills_purchase_in_the_charts_tables_and_export_it_as_csv(
        pages: cb.Pages, reports_site: dict[str, Any], shots: Path) -> None:
    expect = _expect()
    page = pages.new()
    cb.log_in(page, "campus.finance")
    page.get_by_role("link", name="Reports").click()
    page.wait_for_url("**/console/reports.html")
    card = str(reports_site["card_no"])
    # Each chart drew, and its table holds the till's purchase: 12.34 at the canteen.
    for name in ("sales", "merchant", "meal", "kind", "wallet", "result"):
        expect(page.locator(f"#chart-{name} canvas")).to_have_count(1)
    expect(page.locator("#table-merchant tbody")).to_contain_text("12.34")
    expect(page.locator("#table-sales tbody")).to_contain_text("12.34")
    expect(page.locator("#table-kind tbody")).to_contain_text("purchase")
    expect(page.locator("#table-wallet tbody")).to_contain_text("wallet")
    expect(page.locator("#table-wallet tbody")).to_contain_text("12.34")  # the demo's subsidy
    expect(page.locator("#table-result tbody")).to_contain_text("limit exceeded")
    # The decline, in the exceptions table with its card.
    expect(page.locator("#table-exceptions tbody")).to_contain_text(card)
    page.screenshot(path=str(shots / "reports.png"), full_page=True)
    cb.checked(page)

    # The per-merchant export: a CSV fetched with the token, holding the purchase.
    with page.expect_download() as info:
        page.locator('#export-merchant button[data-format="csv"]').click()
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    text = Path(download.path()).read_bytes().decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    sold = [r for r in rows if r["kind"] == "purchase" and r["result"] == "APPROVED"
            and r["merchant_id"] == str(reports_site["merchant"])]
    assert sold and sum(int(r["amount_fen"]) for r in sold) >= SALE_FEN, text
    assert any(r["merchant_delta_yuan"] == "12.34" for r in sold), text
    # And the exceptions' XLSX, by the same kind of link.
    with page.expect_download() as info:
        page.locator('#export-exceptions button[data-format="xlsx"]').click()
    assert Path(info.value.path()).read_bytes()[:2] == b"PK"  # a zip: an XLSX workbook

    # By month, and in Chinese: the same figures, the catalogue's words.
    page.locator("#period").select_option("month")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#table-merchant tbody")).to_contain_text("12.34")
    page.get_by_label("Language").select_option("zh-CN")
    expect(page.locator("#table-kind tbody")).to_contain_text("消费")
    expect(page.locator("#h-merchant")).to_have_text("各商户销售额")
    page.screenshot(path=str(shots / "reports-zh.png"), full_page=True)
    cb.checked(page)


def test_finance_sees_the_days_settlement_and_requests_its_confirmation(
        pages: cb.Pages, reports_site: dict[str, Any], shots: Path) -> None:
    expect = _expect()
    site, day = reports_site["site"], reports_site["day"]
    page = pages.new()
    cb.log_in(page, "campus.finance")
    page.goto(f"/console/finance.html?tenant=1&day={day}")
    expect(page.locator("#settle-status")).to_have_attribute("data-status", "open")
    expect(page.locator("#table-settlement tbody")).to_contain_text("12.34")
    expect(page.locator("#table-float tbody tr")).to_have_count(1)
    expect(page.locator("#table-float tbody")).to_contain_text(str(day))
    for section in ("clearing", "topups", "refusals", "recon", "bankexc"):
        expect(page.locator(f"#table-{section} tbody tr")).to_have_count(1)
    expect(page.locator("#table-recon tbody")).to_contain_text("RECON1")
    expect(page.locator("#table-bankexc tbody")).to_contain_text("BANKEXC1")
    cb.checked(page)
    page.screenshot(path=str(shots / "finance.png"), full_page=True)

    # The settlement export, with the token.
    with page.expect_download() as info:
        page.locator('#export-settlement button[data-format="csv"]').click()
    rows = list(csv.DictReader(io.StringIO(
        Path(info.value.path()).read_bytes().decode("utf-8-sig"))))
    assert any(r["merchant_id"] == str(reports_site["merchant"]) for r in rows), rows

    # The exceptions' resolutions: each drafts a document another person approves.
    recon, bank = reports_site["recon_id"], reports_site["bank_exc_id"]
    row = page.locator(f'#table-recon tr[data-id="{recon}"]')
    row.get_by_label("Resolution").select_option("write_off")
    row.get_by_label("Note").fill("not ours: the bank's own test line")
    row.get_by_role("button", name="Resolve").click()
    expect(page.locator("#recon-message")).to_contain_text("waits for another person's approval")
    expect(page.locator(f'#table-recon tr[data-id="{recon}"]')).to_contain_text("resolving")
    row = page.locator(f'#table-bankexc tr[data-id="{bank}"]')
    row.get_by_label("Resolution").select_option("write_off")
    row.get_by_role("button", name="Resolve").click()  # without the note the API requires
    expect(page.locator("#bankexc-message")).to_contain_text("Say why")
    row.get_by_label("Note").fill("bank desk: nothing debited, ref 42")
    row.get_by_role("button", name="Resolve").click()
    expect(page.locator("#bankexc-message")).to_contain_text("waits for another person's approval")
    expect(page.locator(f'#table-bankexc tr[data-id="{bank}"]')).to_contain_text("resolving")
    fin = site.api("campus.finance")
    assert fin.ok("GET", f"/bank-exceptions/{bank}")["action"] == "write_off"
    assert fin.ok("GET", "/tenants/1/reconciliation-exceptions")["items"][0]["document_id"]
    page.screenshot(path=str(shots / "finance-exceptions.png"), full_page=True)

    # Request the confirmation: a document another person approves.
    page.get_by_label("Comment").fill("checked against the till rolls")
    page.get_by_role("button", name="Request confirmation").click()
    expect(page.locator("#settle-status")).to_have_attribute("data-status", "pending")
    expect(page.locator("#fin-message")).to_contain_text("waits for another person's approval")
    stored = cb.fetch(site, "SELECT status, document_id FROM settlements WHERE tenant_id = 1"
                      " AND business_day = $1", day)
    assert [r["status"] for r in stored] == ["pending"]
    doc = stored[0]["document_id"]
    audit = cb.fetch(site, "SELECT username FROM audit_log WHERE action = 'settlement.request'"
                     " AND entity_id = $1", f"1/{day}")
    assert [r["username"] for r in audit] == ["campus.finance"]
    # Twice is refused by the API: the button is gone, and a second request answers 409.
    expect(page.get_by_role("button", name="Request confirmation")).to_be_hidden()
    assert site.api("campus.finance").post(f"/tenants/1/settlements/{day}/confirm",
                                           {}).status_code == 409
    # Another person approves it; the page then says confirmed.
    site.api("campus.approver").ok("POST", f"/documents/{doc}/approve", {})
    cb.until("the settlement is confirmed", lambda: cb.fetch(
           site, "SELECT status FROM settlements WHERE tenant_id = 1 AND business_day = $1",
           day)[0]["status"] == "confirmed")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#settle-status")).to_have_attribute("data-status", "confirmed")
    expect(page.locator("#settle-note")).to_contain_text(f"Confirmed by document {doc}")
    page.screenshot(path=str(shots / "finance-confirmed.png"), full_page=True)


def test_a_clerk_and_finance_of_another_park_see_nothing_of_this_one(
        pages: cb.Pages, reports_site: dict[str, Any], shots: Path) -> None:
    expect = _expect()
    site, day = reports_site["site"], reports_site["day"]
    card = str(reports_site["card_no"])
    page = pages.new()
    cb.log_in(page, "east.clerk")
    # A clerk has reports (its own park only) and no finance page.
    expect(page.get_by_role("link", name="Reports")).to_be_visible()
    expect(page.get_by_role("link", name="Finance")).to_have_count(0)
    page.goto("/console/reports.html?tenant=1")
    expect(page.locator("#tenant option")).to_have_count(1)
    assert page.locator("#tenant").input_value() == "2"
    expect(page.locator("#table-sales tbody")).not_to_contain_text("12.34")
    expect(page.locator("#table-merchant tbody")).not_to_contain_text("12.34")
    expect(page.locator("#table-exceptions tbody")).not_to_contain_text(card)
    page.goto(f"/console/finance.html?tenant=1&day={day}")
    expect(page.locator("#fin-message")).to_have_text("Your role may not do this.")
    expect(page.locator("#table-settlement tbody tr")).to_have_count(0)
    page.screenshot(path=str(shots / "finance-other-park.png"))
    cb.checked(page)
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/console/")

    # Finance of the other park: its own park only; tenant 1's figures are 404 to it.
    cb.log_in(page, "east.finance")
    page.goto(f"/console/finance.html?tenant=1&day={day}")
    expect(page.locator("#tenant option")).to_have_count(1)
    assert page.locator("#tenant").input_value() == "2"
    expect(page.locator("#settle-status")).not_to_have_text("–")
    expect(page.locator("#table-settlement tbody")).not_to_contain_text("12.34")
    cb.checked(page)
    east = site.api("east.finance")
    for path in (f"/tenants/1/settlements/{day}", "/tenants/1/finance/settlement",
                 "/tenants/1/summary", "/tenants/1/exceptions?format=csv",
                 "/tenants/1/bank-topups", "/tenants/1/reconciliation-exceptions"):
        assert east.get(path).status_code == 404, path
    assert east.post(f"/tenants/1/settlements/{day}/confirm", {}).status_code == 404


def test_sales_by_wallet_sums_the_journal_of_the_tenants_merchants_in_its_subtree_only(
        reports_site: dict[str, Any]) -> None:
    site = reports_site["site"]
    fin = site.api("campus.finance")
    got = fin.ok("GET", "/tenants/1/sales/by-wallet")
    sums = cb.fetch(site, "SELECT -sum(main_delta_fen) AS main, -sum(subsidy_delta_fen) AS sub,"
                    " count(*) FILTER (WHERE main_delta_fen <> 0) AS n,"
                    " count(*) FILTER (WHERE subsidy_delta_fen <> 0) AS sub_n FROM journal"
                    " WHERE merchant_tenant_id = 1 AND code = 0 AND kind IN (1, 2, 5)"
                    " AND committed_at >= $1", _local_midnight(site, got["from_day"]))[0]
    by = {w["wallet"]: w for w in got["items"]}
    assert [w["wallet"] for w in got["items"]] == ["main", "subsidy"]
    assert by["main"]["amount_fen"] == (sums["main"] or 0)
    assert by["subsidy"]["amount_fen"] == (sums["sub"] or 0)
    assert by["main"]["amount_fen"] + by["subsidy"]["amount_fen"] >= SALE_FEN
    assert (by["main"]["count"], by["subsidy"]["count"]) == (sums["n"], sums["sub_n"])
    r = fin.get("/tenants/1/sales/by-wallet?format=csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.content.decode("utf-8-sig").splitlines()[0] == "wallet,count,amount_fen,amount_yuan"
    east = site.api("east.finance")
    assert east.get("/tenants/1/sales/by-wallet").status_code == 404
    assert east.get("/tenants/1/sales/by-wallet?format=csv").status_code == 404
    assert fin.get("/tenants/1/sales/by-wallet?from_day=2026-01-02&to_day=2026-01-01"
                   ).status_code == 422
    doc = fin.get("/docs/openapi.json").json()
    op = doc["paths"]["/tenants/{tenant_id}/sales/by-wallet"]["get"]
    assert op.get("security") != [] and "text/csv" in op["responses"]["200"]["content"]


def _local_midnight(site: AdminSite, day: str) -> Any:
    offset = cb.fetch(site, "SELECT utc_offset_s FROM tenants WHERE id = 1")[0]["utc_offset_s"]
    return (dt.datetime.combine(dt.date.fromisoformat(day), dt.time(), dt.UTC)
            - dt.timedelta(seconds=offset))


def test_the_reports_catalogue_says_everything_in_both_languages(pages: cb.Pages) -> None:
    page = pages.new()
    page.goto("/console/")
    page.add_script_tag(url="/console/messages-reports.js")
    keys = page.evaluate("Object.fromEntries(Object.entries(OC_REPORTS_MESSAGES)"
                         ".map(([k, v]) => [k, Object.keys(v).sort()]))")
    assert set(keys) == {"en", "zh-CN"} and keys["en"] == keys["zh-CN"]
    both = page.evaluate("Object.fromEntries(Object.entries(OC_MESSAGES)"
                         ".map(([k, v]) => [k, Object.keys(v).sort()]))")
    assert both["en"] == both["zh-CN"]


def test_first_render_of_the_reports_and_finance_pages(
        pages: cb.Pages, reports_site: dict[str, Any]) -> None:
    """Each page's first render (DOMContentLoaded) on localhost, measured by the browser and
    printed (not asserted on: shared machines)."""
    page = pages.new()
    cb.log_in(page, "campus.manager")
    for path in ("/console/reports.html", f"/console/finance.html?day={reports_site['day']}"):
        started = time.monotonic()
        page.goto(path)
        ms = page.evaluate("performance.getEntriesByType('navigation')[0]"
                           ".domContentLoadedEventEnd")
        print(f"first render {path}: {ms:.0f} ms (wall {1000 * (time.monotonic() - started):.0f})")
        cb.checked(page)
