"""Reports over real HTTP, from journal rows a real switch wrote, checked against SQL.

A running switch and admin API, one PostgreSQL. Terminals of two tenants sell, decline (illegal
cards, insufficient funds, limits, a wrong fixed price), reverse and answer inquiries; the
reports must give the journal's own numbers, in the tenant's local time and meal windows, as JSON
pages and as CSV and XLSX downloads that parse back to the same rows, and nothing of tenant 1 to
tenant 2.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import openpyxl
import pytest

from onecard.seed import CANTEEN_FIXED, CANTEEN_FREE, EAST_CANTEEN
from protocols import ocp
from tests.admin_site import PASSWORD, AdminSite, Api
from tests.ocp_client import OcpClient
from tests.switch_site import (
    EAST_PARK_TERMINAL,
    FIXED_CANTEEN_TERMINAL,
    FREE_CANTEEN_TERMINAL,
)

OFFSET = dt.timedelta(hours=8)
"""The seeded tenants' utc_offset_s (28800)."""
RC = ocp.ResponseCode
# Local time, as the reports define it: commit time in the merchant tenant's offset.
LOCAL = "(j.committed_at AT TIME ZONE 'UTC' + interval '8 hours')"
MINUTE = f"(extract(hour FROM {LOCAL}) * 60 + extract(minute FROM {LOCAL}))::int"


class Till:
    def __init__(self, client: OcpClient) -> None:
        self.client = client
        self.seq = client.sign_on_result.last_txn_seq

    def next(self) -> int:
        self.seq += 1
        return self.seq

    def buy(self, card_no: int, amount_fen: int) -> Any:
        return self.client.request(ocp.Purchase(self.next(), card_no, amount_fen,
                                                int(time.time() * 1000)))


def _until(what: str, predicate: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def rep(pg_server: Any, migrated_template: str) -> Iterator[dict[str, Any]]:
    site = AdminSite(pg_server.new_database(template=migrated_template))
    site.start()
    site.start_admin()
    try:
        root = site.api()
        campus, east = site.tenant_node(1), site.tenant_node(2)
        # Two meal windows that cover the day: every row has a meal we can compute in SQL.
        root.ok("PUT", "/tenants/1/meal-windows", {"windows": [
            {"name": "early", "start_minute": 0, "end_minute": 720},
            {"name": "late", "start_minute": 720, "end_minute": 1440}]})
        dept = root.ok("POST", "/org/nodes", {"parent_id": campus, "kind": "department",
                                              "name": "Sports centre"})
        cafe = root.ok("POST", "/merchants", {"node_id": dept["id"], "name": "Sports cafe",
                                              "kind": "shop"}, 201)
        issued = root.ok("POST", f"/merchants/{cafe['id']}/terminals", {"kind": "pos"}, 201)
        cafe_tid, cafe_key = issued["terminal"]["id"], bytes.fromhex(issued["key_hex"])

        staff = [site.card(class_id=2, min_main=5_000, skip=n)["card_no"] for n in range(3)]
        free = Till(site.client(FREE_CANTEEN_TERMINAL))
        fixed = Till(site.client(FIXED_CANTEEN_TERMINAL))
        east_till = Till(site.client(EAST_PARK_TERMINAL))
        for n, card in enumerate(staff):
            assert free.buy(card, 150 + n).code == RC.APPROVED
            assert free.buy(card, 1_000 + 7 * n).code == RC.APPROVED
        seq = free.seq
        assert free.client.request(ocp.Reversal(free.next(), seq, staff[2], 1_014)
                                   ).code == RC.APPROVED
        assert free.client.request(ocp.BalanceInquiry(free.next(), staff[0])
                                   ).code == RC.APPROVED
        assert free.buy(staff[0], 49_000).code == RC.INSUFFICIENT_FUNDS  # 45,000 at most
        assert free.buy(staff[1], 60_000).code == RC.TXN_LIMIT_EXCEEDED  # staff: 50,000
        assert free.buy(1, 100).code == RC.UNKNOWN_CARD
        assert free.buy(site.seed.lost_cards[0], 100).code == RC.CARD_LOST
        assert fixed.buy(staff[0], 800).code == RC.APPROVED
        assert fixed.buy(staff[1], 500).code == RC.INVALID_AMOUNT
        assert fixed.buy(staff[1], 800).code == RC.APPROVED
        # A campus card eats at the East Park canteen (both tenants allow it).
        assert east_till.buy(staff[2], 950).code == RC.APPROVED
        assert east_till.buy(1, 100).code == RC.UNKNOWN_CARD
        _until("the cafe terminal signs on", lambda: _cafe_signs_on(site, cafe_tid, cafe_key))
        client = OcpClient(site.switch.host, site.switch.port, cafe_tid, cafe_key)  # type: ignore[union-attr]
        client.sign_on()
        cafe_till = Till(client)
        assert cafe_till.buy(staff[0], 420).code == RC.APPROVED
        assert cafe_till.buy(staff[1], 60_000).code == RC.TXN_LIMIT_EXCEEDED
        for till in (free, fixed, east_till, cafe_till):
            till.client.close()

        today = (dt.datetime.now(dt.UTC) + OFFSET).date()
        days = {"from_day": str(today - dt.timedelta(days=1)),
                "to_day": str(today + dt.timedelta(days=1))}
        east_admin = _user(root, site, "east.reports", "tenant_admin", east)
        viewer = _user(root, site, "sports.viewer", "merchant_viewer", dept["id"])
        yield {"site": site, "root": root, "days": days, "cafe": cafe, "cafe_tid": cafe_tid,
               "east_admin": east_admin, "viewer": viewer}
    finally:
        site.close()


def _cafe_signs_on(site: AdminSite, tid: int, key: bytes) -> bool:
    assert site.switch is not None
    c = OcpClient(site.switch.host, site.switch.port, tid, key, timeout=10)
    try:
        c.sock.sendall(c.conn.start_sign_on(tid, key, os.urandom(16)))
        return isinstance(c.next_message(), ocp.SignOnChallenge)
    except ocp.OcpError:
        return False
    finally:
        c.close()


def _user(root: Api, site: AdminSite, username: str, role: str, node_id: int) -> Api:
    root.ok("POST", "/users", {"username": username, "password": PASSWORD, "role": role,
                               "node_id": node_id}, 201)
    return site.api(username)


def _query(params: dict[str, Any]) -> str:
    return "&".join(f"{k}={v}" for k, v in params.items())


def _all_pages(api: Api, path: str, params: dict[str, Any], limit: int = 4
               ) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after = 0
    while True:
        page = api.ok("GET", f"{path}?{_query({**params, 'limit': limit, 'after_lsn': after})}")
        assert len(page["items"]) <= limit
        items += page["items"]
        if page["next_after_lsn"] is None:
            return items
        after = page["next_after_lsn"]


def _journal(site: AdminSite, where: str, *args: Any) -> list[dict[str, Any]]:
    """The journal rows a report must list, with the local day, time and meal in SQL."""
    rows = site.fetch(
        f"SELECT j.*, {LOCAL}::date AS local_day, to_char({LOCAL}, 'HH24:MI:SS') AS local_time,"
        f" CASE WHEN {MINUTE} < 720 THEN 'early' ELSE 'late' END AS meal"
        f" FROM journal j WHERE {where} ORDER BY j.lsn", *args)
    return [dict(r) for r in rows]


def _same_rows(items: list[dict[str, Any]], rows: list[dict[str, Any]],
               meal: bool = True) -> None:
    assert [i["lsn"] for i in items] == [r["lsn"] for r in rows]
    for i, r in zip(items, rows, strict=True):
        for f in ("terminal_id", "txn_seq", "card_no", "account_id", "merchant_id",
                  "amount_fen", "merchant_delta_fen", "main_delta_fen", "subsidy_delta_fen"):
            assert i[f] == r[f] and type(i[f]) is int, (f, i, r)
        assert i["result"] == RC(r["code"]).name
        assert i["local_day"] == str(r["local_day"]) and i["local_time"] == r["local_time"]
        if meal:
            assert i["meal"] == r["meal"]


def test_a_merchants_transactions_are_the_journals(rep: dict[str, Any]) -> None:
    site, root, days = rep["site"], rep["root"], rep["days"]
    path = f"/merchants/{CANTEEN_FREE}/transactions"
    items = _all_pages(root, path, days)
    rows = _journal(site, "j.merchant_id = $1 AND j.kind <> 3", CANTEEN_FREE)
    assert len(rows) == 11  # six sales, a reversal, four declines
    _same_rows(items, rows)
    assert {i["kind"] for i in items} == {"purchase", "reversal"}
    reversal = next(i for i in items if i["kind"] == "reversal")
    assert reversal["merchant_delta_fen"] == -1_014

    with_inquiries = _all_pages(root, path, {**days, "inquiries": "true"}, limit=100)
    _same_rows(with_inquiries, _journal(site, "j.merchant_id = $1", CANTEEN_FREE))
    assert "inquiry" in {i["kind"] for i in with_inquiries}

    for result, where in (
            ("declined", "j.code <> 0"), ("approved", "j.code = 0"),
            ("insufficient_funds", "j.code = 51"), ("illegal_card", "j.code IN (14, 41)"),
            ("limit_exceeded", "j.code = 61"), ("CARD_LOST,UNKNOWN_CARD", "j.code IN (14, 41)")):
        got = _all_pages(root, path, {**days, "result": result}, limit=100)
        want = _journal(site, f"j.merchant_id = $1 AND j.kind <> 3 AND {where}", CANTEEN_FREE)
        assert want, result
        _same_rows(got, want)
    got = _all_pages(root, path, {**days, "kind": "reversal"}, limit=100)
    _same_rows(got, _journal(site, "j.merchant_id = $1 AND j.kind = 2", CANTEEN_FREE))
    for meal in ("early", "late"):
        got = _all_pages(root, path, {**days, "meal": meal}, limit=100)
        _same_rows(got, [r for r in rows if r["meal"] == meal])
    assert _all_pages(root, path, {**days, "meal": "none"}) == []
    categories = {i["result"]: i["category"] for i in items}
    assert categories == {"APPROVED": "approved", "INSUFFICIENT_FUNDS": "insufficient_funds",
                          "TXN_LIMIT_EXCEEDED": "limit_exceeded", "UNKNOWN_CARD": "illegal_card",
                          "CARD_LOST": "illegal_card"}

    # Yesterday only: nothing (every row is from today, local time).
    yesterday = days["from_day"]
    assert root.ok("GET", f"{path}?from_day={yesterday}&to_day={yesterday}")["items"] == []
    page = root.ok("GET", path)  # default: today
    assert page["from_day"] == page["to_day"] and page["utc_offset_s"] == 28800

    for query, status, field in (("result=bogus", 400, "result"), ("kind=lunch", 400, "kind"),
                                 ("meal=brunch", 422, None), ("limit=0", 400, "limit"),
                                 ("from_day=2024-02-01&to_day=2024-01-01", 422, None),
                                 ("from_day=2020-01-01&to_day=2024-01-01", 422, None),
                                 ("to_day=9999-12-31", 422, None),
                                 ("from_day=0001-01-01&to_day=0001-01-01", 422, None),
                                 ("format=pdf", 400, "format")):
        r = root.get(f"{path}?{query}")
        assert r.status_code == status, (query, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        if field:
            assert r.json()["errors"][0]["field"] == field, r.text


def test_a_terminals_transactions_and_a_tenants_exceptions(rep: dict[str, Any]) -> None:
    site, root, days = rep["site"], rep["root"], rep["days"]
    items = _all_pages(root, f"/terminals/{FIXED_CANTEEN_TERMINAL}/transactions", days)
    _same_rows(items, _journal(site, "j.terminal_id = $1 AND j.kind <> 3",
                               FIXED_CANTEEN_TERMINAL))
    assert [i["amount_fen"] for i in items] == [800, 500, 800]
    assert {i["merchant_id"] for i in items} == {CANTEEN_FIXED}

    exceptions = _all_pages(root, "/tenants/1/exceptions", days)
    want = _journal(site, "j.merchant_tenant_id = 1 AND j.code <> 0")
    _same_rows(exceptions, want)
    assert {i["category"] for i in exceptions} == {"illegal_card", "insufficient_funds",
                                                   "limit_exceeded", "other"}
    limits = _all_pages(root, "/tenants/1/exceptions", {**days, "result": "limit_exceeded"})
    _same_rows(limits, [r for r in want if r["code"] == 61])
    assert {i["merchant_id"] for i in limits} == {CANTEEN_FREE, rep["cafe"]["id"]}
    one = _all_pages(root, "/tenants/1/exceptions", {**days, "merchant_id": CANTEEN_FIXED})
    _same_rows(one, [r for r in want if r["merchant_id"] == CANTEEN_FIXED])
    assert [i["result"] for i in one] == ["INVALID_AMOUNT"]
    r = root.get("/tenants/1/exceptions?result=approved")
    assert r.status_code == 400, r.text
    # The East Park decline is tenant 2's.
    assert all(i["terminal_id"] != EAST_PARK_TERMINAL for i in exceptions)


def _summary_sql(site: AdminSite, where: str, period: str, *, by: str = "") -> list[tuple]:
    fmt = "YYYY-MM-DD" if period == "day" else "YYYY-MM"
    rows = site.fetch(
        f"SELECT to_char({LOCAL}, '{fmt}') AS period, {by or 'NULL'} AS by, j.kind, j.code,"
        " count(*) AS n, sum(j.amount_fen) AS amount, sum(j.merchant_delta_fen) AS net"
        f" FROM journal j WHERE {where} GROUP BY 1, 2, 3, 4")
    return sorted((r["period"], r["by"], r["kind"], r["code"], r["n"], r["amount"], r["net"])
                  for r in rows)


_KINDS = {"purchase": 1, "reversal": 2, "inquiry": 3}


def _summary_rows(items: list[dict[str, Any]], by: str | None = None) -> list[tuple]:
    return sorted((i["period"], i[by] if by else None, _KINDS[i["kind"]], RC[i["result"]].value,
                   i["count"], i["amount_fen"], i["merchant_delta_fen"]) for i in items)


def test_daily_and_monthly_summaries_are_the_journals_sums(rep: dict[str, Any]) -> None:
    site, root, days = rep["site"], rep["root"], rep["days"]
    for period in ("day", "month"):
        out = root.ok("GET", f"/tenants/1/summary?{_query(days)}&period={period}")
        assert out["period"] == period and out["next_after"] is None
        assert _summary_rows(out["items"]) == _summary_sql(site, "j.merchant_tenant_id = 1",
                                                           period)
        by_merchant = root.ok("GET", f"/tenants/1/summary?{_query(days)}&period={period}"
                              "&by_merchant=true")["items"]
        assert _summary_rows(by_merchant, "merchant_id") == _summary_sql(
            site, "j.merchant_tenant_id = 1", period, by="j.merchant_id")
        mine = root.ok("GET", f"/merchants/{CANTEEN_FREE}/summary?{_query(days)}"
                       f"&period={period}&by_meal=true")["items"]
        assert _summary_rows(mine, "meal") == _summary_sql(
            site, f"j.merchant_id = {CANTEEN_FREE}", period,
            by=f"CASE WHEN {MINUTE} < 720 THEN 'early' ELSE 'late' END")
        assert {i["merchant_id"] for i in mine} == {CANTEEN_FREE}
    approved = [i for i in root.ok("GET", f"/tenants/1/summary?{_query(days)}")["items"]
                if i["result"] == "APPROVED" and i["kind"] == "purchase"]
    assert sum(i["count"] for i in approved) == site.fetch(
        "SELECT count(*) FROM journal WHERE merchant_tenant_id = 1 AND code = 0 AND kind = 1"
    )[0][0]
    # Paged: the pages are the whole.
    whole = root.ok("GET", f"/tenants/1/summary?{_query(days)}&by_merchant=true")["items"]
    pages: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        page = root.ok("GET", f"/tenants/1/summary?{_query(days)}&by_merchant=true&limit=2"
                       f"&after={after}")
        pages += page["items"]
        after = page["next_after"]
    assert pages == whole and len(whole) > 2


def _csv_rows(content: bytes) -> list[list[str]]:
    assert content.startswith("\ufeff".encode())
    return list(csv.reader(io.StringIO(content.decode("utf-8-sig"))))


def _xlsx_rows(content: bytes) -> list[list[str]]:
    ws = openpyxl.load_workbook(io.BytesIO(content), read_only=True).active
    assert ws is not None
    return [["" if v is None else str(v) for v in row] for row in ws.iter_rows(values_only=True)]


def _as_text(value: Any) -> str:
    return "" if value is None else str(value)


@pytest.mark.parametrize("path, params, page_key", [
    (f"/merchants/{CANTEEN_FREE}/transactions", {"inquiries": "true"}, "lsn"),
    ("/tenants/1/exceptions", {}, "lsn"),
    ("/tenants/1/summary", {"by_merchant": "true", "period": "month"}, None),
    (f"/merchants/{CANTEEN_FREE}/summary", {"by_meal": "true"}, None),
])
def test_csv_and_xlsx_downloads_are_the_json_rows(rep: dict[str, Any], path: str,
                                                  params: dict[str, Any],
                                                  page_key: str | None) -> None:
    root, days = rep["root"], rep["days"]
    params = {**days, **params}
    items = root.ok("GET", f"{path}?{_query({**params, 'limit': 1000})}")["items"]
    assert items
    files = {}
    for fmt in ("csv", "xlsx"):
        r = root.get(f"{path}?{_query({**params, 'format': fmt})}")
        assert r.status_code == 200, r.text
        disposition = r.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="') and disposition.endswith(
            f'_{days["to_day"]}.{fmt}"'), disposition
        files[fmt] = _csv_rows(r.content) if fmt == "csv" else _xlsx_rows(r.content)
    assert files["csv"] == files["xlsx"]
    header, *rows = files["csv"]
    fields = list(items[0])
    assert [h for h in header if not h.endswith("_yuan")] == fields
    assert len(rows) == len(items)
    for row, item in zip(rows, items, strict=True):
        cells = dict(zip(header, row, strict=True))
        for f in fields:
            assert cells[f] == _as_text(item[f]), (f, cells, item)
            if f.endswith("_fen"):
                yuan = cells[f[:-4] + "_yuan"]
                assert Decimal(yuan) * 100 == item[f] and yuan.count(".") == 1, (yuan, item[f])
    if page_key:
        assert [int(r[header.index(page_key)]) for r in rows] == [i[page_key] for i in items]


def test_an_empty_download_has_its_header(rep: dict[str, Any]) -> None:
    r = rep["root"].get(f"/merchants/{CANTEEN_FREE}/transactions?from_day=2020-01-01"
                        "&to_day=2020-01-01&format=csv")
    assert r.status_code == 200
    header, *rows = _csv_rows(r.content)
    assert rows == [] and header[:3] == ["lsn", "at", "local_day"]
    assert "amount_yuan" in header


def test_reports_stay_inside_the_callers_subtree(rep: dict[str, Any]) -> None:
    site, days = rep["site"], rep["days"]
    east: Api = rep["east_admin"]
    for path in (f"/merchants/{CANTEEN_FREE}/transactions", f"/merchants/{CANTEEN_FREE}/summary",
                 f"/terminals/{FREE_CANTEEN_TERMINAL}/transactions", "/tenants/1/summary",
                 "/tenants/1/exceptions", f"/merchants/{rep['cafe']['id']}/transactions",
                 f"/merchants/{CANTEEN_FREE}/transactions?format=csv"):
        r = east.get(path)
        assert r.status_code == 404, (path, r.text)
    # Tenant 2 sees its own merchant: the campus card that ate there, not the campus.
    mine = east.ok("GET", f"/tenants/2/summary?{_query(days)}&by_merchant=true")["items"]
    assert {i["merchant_id"] for i in mine} == {EAST_CANTEEN}
    assert _summary_rows(mine, "merchant_id") == _summary_sql(
        site, "j.merchant_tenant_id = 2", "day", by="j.merchant_id")
    exceptions = _all_pages(east, "/tenants/2/exceptions", days)
    _same_rows(exceptions, _journal(site, "j.merchant_tenant_id = 2 AND j.code <> 0"),
               meal=False)
    assert [i["terminal_id"] for i in exceptions] == [EAST_PARK_TERMINAL]
    assert east.get(f"/tenants/1/exceptions?merchant_id={EAST_CANTEEN}").status_code == 404

    # A merchant viewer of a department: its merchant's reports, nothing else.
    viewer: Api = rep["viewer"]
    cafe = rep["cafe"]["id"]
    items = _all_pages(viewer, f"/merchants/{cafe}/transactions", days)
    _same_rows(items, _journal(site, "j.merchant_id = $1 AND j.kind <> 3", cafe))
    assert [i["amount_fen"] for i in items] == [420, 60_000]
    assert viewer.ok("GET", f"/terminals/{rep['cafe_tid']}/transactions?{_query(days)}")["items"]
    for path in (f"/merchants/{CANTEEN_FREE}/transactions", "/tenants/1/summary",
                 "/tenants/1/exceptions", f"/terminals/{FREE_CANTEEN_TERMINAL}/transactions"):
        assert viewer.get(path).status_code == 404, path
    summary = viewer.ok("GET", f"/merchants/{cafe}/summary?{_query(days)}")["items"]
    assert {(i["result"], i["count"]) for i in summary} == {("APPROVED", 1),
                                                            ("TXN_LIMIT_EXCEEDED", 1)}
