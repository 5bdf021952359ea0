"""Finance: the bank's daily file, reconciliation and its resolution, vouchers (docs/finance.md).

The site's switch and admin API run as real processes on a real PostgreSQL. The top-ups the
bank link would make are credits journaled by the switch (the admin terminal, from the bank
clearing account) with their `bank_topups` rows, made before the admin API starts; a top-up
whose answer was lost in transit is a row the bank approved and we reversed, never credited.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from collections.abc import Iterator
from typing import Any

import asyncpg
import msgspec
import pytest

from admin_api._downloads import EXPORT_ROWS_MAX, download_all, rows_wanted, yuan
from admin_api._problems import Problem
from admin_api._switch_client import SwitchClient
from admin_api.finance import (
    HEADER,
    BankFileError,
    ensure_bank_clearing,
    read_bank_file,
    write_bank_file,
)
from admin_api.finance._bankfile import BANK_FILE_BYTES_MAX, BANK_FILE_LINES_MAX
from onecard import cli
from onecard.harness import free_port
from protocols import ocp
from tests.admin_site import PASSWORD, AdminSite, Api
from tests.ocp_client import OcpClient
from tests.switch_site import FREE_CANTEEN_TERMINAL

DAY = dt.date(2026, 11, 30)

# -- the file, alone -----------------------------------------------------------------------------


def _file(*lines: str, header: str = HEADER) -> bytes:
    return ("\n".join([header, *lines]) + "\n").encode()


GOOD = f"{DAY},000000000001,000001,7,tok-1,5000,00,A1B2C3"


def test_a_good_file_is_read_line_by_line() -> None:
    f = read_bank_file(_file(GOOD, f"{DAY},R2,2,8,tok*2,1,00,"), DAY)
    assert [(x.line_no, x.rrn, x.stan, x.terminal_id, x.amount_fen) for x in f.lines] == [
        (2, "000000000001", 1, 7, 5000), (3, "R2", 2, 8, 1)]
    assert f.total_fen == 5001
    assert read_bank_file(_file(), DAY).lines == []  # a day without top-ups
    assert read_bank_file(write_bank_file(DAY, [("R1", 1, 7, "t", 5, "X")]), DAY).lines[0].rrn \
        == "R1"


@pytest.mark.parametrize(("data", "line", "words"), [
    (b"", 0, "empty"),
    (_file(GOOD, header=HEADER.replace("rrn", "ref")), 1, "header"),
    (_file(GOOD.replace("5000", "50.00")), 2, "amount_fen"),
    (_file(GOOD.replace("5000", "-5")), 2, "amount_fen"),
    (_file(GOOD.replace(",000001,", ",x1,")), 2, "stan"),
    (_file(GOOD, GOOD.replace("tok-1", "tok-9")), 3, "again (first on line 2)"),
    (_file(GOOD.replace(str(DAY), "2026-11-29")), 2, "not the day imported"),
    (_file(GOOD.replace(",00,", ",05,")), 2, "approved top-ups only"),
    (_file(GOOD + ",extra"), 2, "9 fields"),
    (_file(GOOD).replace(b"\n", b"\r\n"), 0, "LF"),
    (_file(GOOD).replace(b"tok-1", b"tok-\xff"), 0, "UTF-8"),
    (b"x" * (BANK_FILE_BYTES_MAX + 1), 0, "more than"),
    (_file(*[f"{DAY},R{n},1,7,t,1,00," for n in range(BANK_FILE_LINES_MAX + 1)]), 0,
     "more than"),
])
def test_a_bad_file_is_refused_with_its_line_and_reason(data: bytes, line: int,
                                                        words: str) -> None:
    with pytest.raises(BankFileError) as caught:
        read_bank_file(data, DAY)
    problem = caught.value.problems[0]
    assert problem.line == line and words in problem.message, caught.value.problems


# -- reconciliation through the API and the switch -----------------------------------------------


def _local_yesterday() -> dt.date:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)).date() - dt.timedelta(days=1)


async def _credits(site: AdminSite, clearing: int, plan: list[tuple[str, int, int, str]]
                   ) -> dict[str, dict[str, Any]]:
    """Journal the credited ones of `plan` (rrn, account, amount, state) through the switch as
    the admin terminal, and record every one in bank_topups, made yesterday noon (local)."""
    conn = await asyncpg.connect(site.dsn)
    try:
        terminal = await conn.fetchrow("SELECT id, key_version FROM terminals WHERE kind = 6")
        assert site.switch is not None
        client = SwitchClient(site.switch.host, site.switch.port, terminal["id"],
                              ocp.derive_terminal_key(site.master, terminal["id"],
                                                      terminal["key_version"]), timeout=10)
        await client.start()
        made = {}
        noon = dt.datetime.combine(_local_yesterday(), dt.time(4), dt.UTC)  # 12:00 at +08:00
        try:
            for stan, (rrn, account, amount, state) in enumerate(plan, start=1):
                seq = await conn.fetchval("SELECT nextval('admin_txn_seq')")
                card = await conn.fetchval("SELECT card_no FROM cards WHERE account_id = $1"
                                           " AND status = 0 LIMIT 1", account)
                if state == "approved":
                    answer = await client.credit(seq, card, 0, amount, clearing)
                    assert answer.code == 0, answer
                # The account's bound bank card (a top-up always names one: 0012_topup.sql).
                bank_card = await conn.fetchval(
                    "SELECT id FROM bank_cards WHERE account_id = $1 AND unbound_at IS NULL",
                    account) or await conn.fetchval(
                    "INSERT INTO bank_cards (tenant_id, account_id, pan_masked, bank_token)"
                    " VALUES (1, $1, '622202******0128', 'TOKEN-' || $1::text) RETURNING id",
                    account)
                await conn.execute(
                    "INSERT INTO bank_topups (tenant_id, terminal_id, txn_seq, account_id,"
                    " card_no, bank_card_id, amount_fen, stan, rrn, state, created_at) VALUES"
                    " (1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", terminal["id"], seq,
                    account, card, bank_card, amount, stan, rrn, state, noon)
                made[rrn] = {"account_id": account, "card_no": card, "txn_seq": seq}
        finally:
            await client.close()
        # Three purchases at the free canteen (merchant 4, fee 1 %) of cards not topped up.
        await conn.execute("UPDATE merchants SET fee_rate_bp = 100 WHERE id = 4")
        pos = OcpClient(site.switch.host, site.switch.port, FREE_CANTEEN_TERMINAL,
                        site.key(FREE_CANTEEN_TERMINAL))
        try:
            pos.sign_on()
            for n, amount in enumerate((1000, 2000, 1500), start=1):
                card = await conn.fetchval(
                    "SELECT c.card_no FROM cards c JOIN accounts a ON a.id = c.account_id"
                    " WHERE a.tenant_id = 1 AND a.status = 0 AND c.status = 0"
                    " AND a.opening_main_fen >= 5000 AND a.id > 10 ORDER BY a.id OFFSET $1"
                    " LIMIT 1", n)
                answer = await asyncio.to_thread(pos.request, ocp.Purchase(n, card, amount))
                assert answer.code == 0, answer
        finally:
            pos.sock.close()
        # All of it was yesterday's (the vouchers and the settlement below read that day).
        await conn.execute("UPDATE journal SET committed_at = $1", noon)
        return made
    finally:
        await conn.close()


PLAN = [("R1", 5000, "approved"), ("R2", 3000, "approved"), ("R3", 2000, "reversed"),
        ("R4", 1000, "approved"), ("R5", 800, "unknown")]


@pytest.fixture(scope="module")
def fin(pg_server: Any, migrated_template: str) -> Iterator[dict[str, Any]]:
    site = AdminSite(pg_server.new_database(template=migrated_template))

    async def clearing() -> int:
        conn = await asyncpg.connect(site.dsn)
        try:
            node = await conn.fetchval("SELECT id FROM org_nodes WHERE kind = 'tenant'"
                                       " AND tenant_id = 1")
            async with conn.transaction():
                return await ensure_bank_clearing(conn, 1, node, lambda event: None)
        finally:
            await conn.close()

    clearing_id = asyncio.run(clearing())
    site.start(extra_env={"ONECARD_PORT": str(free_port())})
    accounts = [r["account_id"] for r in site.fetch(
        "SELECT p.account_id FROM people p JOIN cards c ON c.account_id = p.account_id"
        " WHERE p.tenant_id = 1 AND c.status = 0 ORDER BY p.id LIMIT 5")]
    plan = [(rrn, accounts[n], amount, state) for n, (rrn, amount, state) in enumerate(PLAN)]
    made = asyncio.run(_credits(site, clearing_id, plan))
    site.start_admin(ONECARD_ADMIN_SWITCH_TIMEOUT_SECONDS="5")
    root = site.api()
    campus, east = site.tenant_node(1), site.tenant_node(2)
    for name, role, node in (("fin.a", "finance", campus), ("fin.b", "finance", campus),
                             ("boss", "tenant_admin", campus), ("aud", "auditor", campus),
                             ("till", "cashier", campus), ("east.fin", "finance", east)):
        root.ok("POST", "/users", {"username": name, "password": PASSWORD, "role": role,
                                   "node_id": node})
    try:
        yield {"site": site, "made": made, "clearing": clearing_id, "day": _local_yesterday(),
               "api": {n: site.api(n) for n in ("fin.a", "fin.b", "boss", "aud", "till",
                                                "east.fin")}}
    finally:
        site.close()


def _bank_file(day: dt.date) -> bytes:
    # R1 as ours; R2 with another amount; R3 approved by the bank though we reversed it, R5
    # though we never heard its answer (both lost in transit); R9 nobody here knows; R4 (ours)
    # missing.
    return write_bank_file(day, [("R1", 1, 6, "tok-a", 5000, "AUTH01"),
                                 ("R2", 2, 6, "tok-b", 3500, "AUTH02"),
                                 ("R3", 3, 6, "tok-c", 2000, "AUTH03"),
                                 ("R5", 5, 6, "tok-e", 800, "AUTH05"),
                                 ("R9", 9, 6, "tok-z", 700, "AUTH09")])


def _upload(api: Api, day: dt.date, data: bytes, tenant: int = 1) -> Any:
    return api.http.post(f"/tenants/{tenant}/bank-files/{day}",
                         files={"file": ("bank.csv", data)})


def _balance(site: AdminSite, account: int) -> int:
    return int(site.fetch("SELECT a.opening_main_fen + coalesce((SELECT sum(main_delta_fen)"
                          " FROM journal j WHERE j.account_id = a.id), 0) AS b FROM accounts a"
                          " WHERE a.id = $1", account)[0]["b"])


def _exceptions(api: Api) -> dict[str, dict[str, Any]]:
    return {e["rrn"]: e for e in api.ok("GET", "/tenants/1/reconciliation-exceptions")["items"]}


def test_bad_files_change_nothing(fin: dict[str, Any]) -> None:
    site, api, day = fin["site"], fin["api"]["fin.a"], fin["day"]
    good = _bank_file(day)
    cases = [
        (good.replace(b"business_date", b"date"), "line 1"),
        (good.replace(b",3500,", b",35.00,"), "line 3"),
        (good.replace(b",R2,", b",R1,"), "line 3"),
        (good.replace(str(day).encode(), str(day - dt.timedelta(days=1)).encode(), 1), "line 2"),
    ]
    for data, where in cases:
        r = _upload(api, day, data)
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["type"].endswith("bad-bank-file") and body["errors"][0]["field"] == where
        assert "nothing was changed" in body["detail"]
    no_file = api.http.post(f"/tenants/1/bank-files/{day}", files={"other": ("a", b"x")})
    assert no_file.status_code == 422 and "form field" in no_file.json()["detail"]
    as_body = api.http.post(f"/tenants/1/bank-files/{day}", content=good.replace(b"R2", b"R1"),
                            headers={"Content-Type": "text/csv"})
    assert as_body.status_code == 422 and as_body.json()["errors"][0]["field"] == "line 3"
    too_big = _upload(api, day, b"x" * (BANK_FILE_BYTES_MAX + 1))
    assert too_big.status_code == 413
    # A day that has not ended is not reconciled.
    today = day + dt.timedelta(days=1)
    r = _upload(api, today, write_bank_file(today, []))
    assert r.status_code == 422 and "has not ended" in r.json()["detail"]
    assert site.fetch("SELECT count(*) AS n FROM bank_files")[0]["n"] == 0
    assert site.fetch("SELECT count(*) AS n FROM reconciliation_exceptions")[0]["n"] == 0


def test_a_lost_answer_is_found_and_resolved_once(fin: dict[str, Any]) -> None:
    site, day, made = fin["site"], fin["day"], fin["made"]
    a, b, boss = fin["api"]["fin.a"], fin["api"]["fin.b"], fin["api"]["boss"]
    r = _upload(a, day, _bank_file(day))
    assert r.status_code == 200, r.text
    result = r.json()
    assert (result["lines_count"], result["matched"], result["ours_only"], result["bank_only"],
            result["amount_differs"], result["repeated"]) == (5, 1, 1, 3, 1, False)
    # The same file again: its first result; another file for the day: refused.
    again = _upload(a, day, _bank_file(day)).json()
    assert again["repeated"] and again["id"] == result["id"]
    other = _upload(a, day, _bank_file(day).replace(b"AUTH09", b"AUTH10"))
    assert other.status_code == 409
    found = _exceptions(a)
    assert {k: (e["kind"], e["expected_fen"], e["status"]) for k, e in found.items()} == {
        "R2": ("amount_differs", 500, "open"), "R3": ("bank_only", 2000, "open"),
        "R4": ("ours_only", -1000, "open"), "R9": ("bank_only", 700, "open"),
        "R5": ("bank_only", 800, "open")}
    assert (found["R3"]["topup_state"], found["R5"]["topup_state"]) == ("reversed", "unknown")

    # The lost answer: credit it. Drafted and submitted by one, approved by two others.
    lost = found["R3"]
    account = made["R3"]["account_id"]
    before = _balance(site, account)
    wrong = a.post(f"/reconciliation-exceptions/{lost['id']}/resolve", {"action": "reverse"})
    assert wrong.status_code == 422
    out = a.ok("POST", f"/reconciliation-exceptions/{lost['id']}/resolve",
               {"action": "credit", "comment": "the bank approved it; our answer timed out"})
    assert out["status"] == "resolving" and out["document_status"] == "submitted"
    doc = out["document_id"]
    twice = a.post(f"/reconciliation-exceptions/{lost['id']}/resolve", {"action": "credit"})
    assert twice.status_code == 409 and "resolved once" in twice.json()["detail"]
    assert a.post(f"/documents/{doc}/approve", {}).status_code == 403  # the drafter
    b.ok("POST", f"/documents/{doc}/approve", {})
    assert _balance(site, account) == before
    executed = boss.ok("POST", f"/documents/{doc}/approve", {})
    assert executed["status"] == "executed" and executed["lines"][0]["result"] == "APPROVED"
    assert _balance(site, account) == before + 2000
    # Every way of doing it again moves nothing.
    assert boss.post(f"/documents/{doc}/approve", {}).status_code == 409
    assert boss.post(f"/documents/{doc}/execute").status_code == 409
    assert a.post(f"/reconciliation-exceptions/{lost['id']}/resolve",
                  {"action": "credit"}).status_code == 409
    assert boss.post(f"/documents/{doc}/revise", {"title": "x", "lines": []}).status_code in (
        400, 409)
    assert _balance(site, account) == before + 2000
    rows = site.fetch("SELECT * FROM journal WHERE account_id = $1 AND merchant_id = $2"
                      " AND code = 0", account, fin["clearing"])
    assert [(r["kind"], r["amount_fen"]) for r in rows] == [(8, 2000)]
    assert _exceptions(a)["R3"]["status"] == "resolved"

    # Ours only: reversed back to the bank clearing account; the unknown line: written off.
    r4 = _exceptions(a)["R4"]
    before4 = _balance(site, made["R4"]["account_id"])
    d4 = a.ok("POST", f"/reconciliation-exceptions/{r4['id']}/resolve",
              {"action": "reverse"})["document_id"]
    b.ok("POST", f"/documents/{d4}/approve", {})
    boss.ok("POST", f"/documents/{d4}/approve", {})
    assert _balance(site, made["R4"]["account_id"]) == before4 - 1000
    r9 = _exceptions(a)["R9"]
    assert a.post(f"/reconciliation-exceptions/{r9['id']}/resolve",
                  {"action": "credit"}).status_code == 422  # whose wallet?
    d9 = a.ok("POST", f"/reconciliation-exceptions/{r9['id']}/resolve",
              {"action": "write_off"})["document_id"]
    b.ok("POST", f"/documents/{d9}/approve", {})
    total = site.fetch("SELECT sum(main_delta_fen + subsidy_delta_fen + merchant_delta_fen)"
                       " AS s, count(*) AS n FROM journal")[0]
    assert boss.ok("POST", f"/documents/{d9}/approve", {})["status"] == "executed"
    assert site.fetch("SELECT count(*) AS n FROM journal")[0]["n"] == total["n"]  # nothing moved
    statuses = {k: e["status"] for k, e in _exceptions(a).items()}
    assert statuses == {"R2": "open", "R3": "resolved", "R4": "resolved", "R9": "resolved",
                        "R5": "open"}
    assert [e["rrn"] for e in a.ok(
        "GET", "/tenants/1/reconciliation-exceptions?status=open")["items"]] == ["R2", "R5"]
    audit = {r["action"] for r in site.fetch("SELECT action FROM audit_log")}
    assert {"bank_file.import", "reconciliation.resolve", "document.approve"} <= audit

    # The exports of the exceptions: CSV exactly, XLSX readable.
    text = a.get("/tenants/1/reconciliation-exceptions?format=csv").content.decode("utf-8-sig")
    rows_csv = list(csv.DictReader(io.StringIO(text)))
    assert [(x["rrn"], x["kind"], x["expected_fen"], x["expected_yuan"], x["status"])
            for x in rows_csv] == [("R2", "amount_differs", "500", "5.00", "open"),
                                   ("R3", "bank_only", "2000", "20.00", "resolved"),
                                   ("R5", "bank_only", "800", "8.00", "open"),
                                   ("R9", "bank_only", "700", "7.00", "resolved"),
                                   ("R4", "ours_only", "-1000", "-10.00", "resolved")]
    from openpyxl import load_workbook

    xlsx = a.get("/tenants/1/reconciliation-exceptions?format=xlsx")
    sheet = load_workbook(io.BytesIO(xlsx.content)).active
    values = list(sheet.values)
    assert values[0][:5] == ("id", "tenant_id", "business_date", "kind", "rrn")
    assert [v[4] for v in values[1:]] == ["R2", "R3", "R5", "R9", "R4"]


def test_vouchers_balance_and_reach_the_events_feed(fin: dict[str, Any]) -> None:
    site, day, api = fin["site"], fin["day"], fin["api"]["fin.a"]
    made, clearing = fin["made"], fin["clearing"]
    text = api.get(f"/tenants/1/vouchers/{day}?format=csv").content.decode("utf-8-sig")
    wallets = [made[r]["account_id"] for r in ("R1", "R2", "R4")]
    assert len(set(wallets)) == 3
    name = site.fetch("SELECT name FROM merchants WHERE id = $1", clearing)[0]["name"]
    ymd = day.strftime("%Y%m%d")
    ref = f"credit at merchant {clearing} by cards of tenant 1; 3 rows; lsn "
    lsns = site.fetch("SELECT min(lsn) AS lo, max(lsn) AS hi FROM journal WHERE kind = 8"
                      " AND committed_at < now() - interval '1 hour'")[0]
    ref += f"{lsns['lo']}-{lsns['hi']}"
    # The purchases' voucher: what the wallets lost (subsidy first), the canteen gained.
    p = site.fetch("SELECT -sum(main_delta_fen)::bigint AS main,"
                   " -sum(subsidy_delta_fen)::bigint AS sub,"
                   " min(lsn) AS lo, max(lsn) AS hi FROM journal WHERE kind = 1")[0]
    canteen = site.fetch("SELECT name FROM merchants WHERE id = 4")[0]["name"]
    pref = f"purchase at merchant 4 by cards of tenant 1; 3 rows; lsn {p['lo']}-{p['hi']}"
    purchase = [f"wallet.main.t1,main wallets of tenant 1,{p['main']},{yuan(p['main'])},0,0.00",
                f"wallet.subsidy.t1,subsidy wallets of tenant 1,{p['sub']},{yuan(p['sub'])},0,"
                "0.00", f"merchant.4,{canteen},0,0.00,4500,45.00"]
    purchase = [x for x in purchase if ",0,0.00,0,0.00" not in x]
    assert p["main"] + p["sub"] == 4500
    assert text == (
        "business_date,voucher_no,line_no,account,account_name,debit_fen,debit_yuan,"
        "credit_fen,credit_yuan,reference\r\n"
        + "".join(f"{day},{ymd}-0001,{n},{x},{pref}\r\n" for n, x in enumerate(purchase, 1))
        + f"{day},{ymd}-0002,1,wallet.main.t1,main wallets of tenant 1,0,0.00,9000,90.00,"
        f"{ref}\r\n"
        f"{day},{ymd}-0002,2,merchant.{clearing},{name},9000,90.00,0,0.00,{ref}\r\n")
    page = api.ok("GET", f"/tenants/1/vouchers/{day}")
    assert page["debit_fen"] == page["credit_fen"] == 13500
    assert len(page["items"]) == len(purchase) + 2
    published = api.ok("POST", f"/tenants/1/vouchers/{day}/publish")
    assert (published["vouchers"], published["lines"], published["repeated"]) == (
        2, len(purchase) + 2, False)
    assert api.ok("POST", f"/tenants/1/vouchers/{day}/publish")["repeated"]
    # An integrator's key at the tenant sees them on the events feed, once.
    root = site.api()
    key = root.ok("POST", "/api-keys", {"node_id": site.tenant_node(1), "name": "ERP",
                                        "scopes": ["events.read"]})["key"]
    integrator = site.api(None)
    integrator.http.headers["X-Api-Key"] = key
    events = integrator.ok("GET", "/integration/events?limit=1000")["items"]
    batches = [e for e in events if e["type"] == "change" and e["entity"] == "voucher_batch"]
    assert len(batches) == 1
    assert batches[0]["after"]["lines"] == page["items"]


def test_roles_and_subtrees_are_checked(fin: dict[str, Any]) -> None:
    day, apis = fin["day"], fin["api"]
    data = write_bank_file(day, [])
    assert _upload(apis["till"], day, data).status_code == 403
    assert apis["till"].get("/tenants/1/reconciliation-exceptions").status_code == 403
    assert _upload(apis["aud"], day, data).status_code == 403
    assert apis["aud"].get("/tenants/1/reconciliation-exceptions").status_code == 200
    assert apis["aud"].get(f"/tenants/1/vouchers/{day}").status_code == 200
    east = apis["east.fin"]
    assert _upload(east, day, data).status_code == 404
    for path in ("/tenants/1/reconciliation-exceptions", "/tenants/1/bank-files",
                 f"/tenants/1/vouchers/{day}", "/tenants/1/bank-topups"):
        assert east.get(path).status_code == 404, path
    exc = fin["site"].fetch("SELECT id FROM reconciliation_exceptions ORDER BY id LIMIT 1")
    if exc:
        r = east.post(f"/reconciliation-exceptions/{exc[0]['id']}/resolve",
                      {"action": "write_off"})
        assert r.status_code == 404
    assert east.post(f"/tenants/1/vouchers/{day}/publish").status_code == 404


def test_bank_topups_list_and_download(fin: dict[str, Any]) -> None:
    api, day = fin["api"]["fin.b"], fin["day"]
    page = api.ok("GET", f"/tenants/1/bank-topups?from_day={day}")
    assert [(t["rrn"], t["state"], t["credited_fen"]) for t in page["items"]] == [
        ("R1", "approved", 5000), ("R2", "approved", 3000), ("R3", "reversed", 0),
        ("R4", "approved", 1000), ("R5", "unknown", 0)]
    reversed_only = api.ok("GET", f"/tenants/1/bank-topups?from_day={day}&topup_state=reversed")
    assert [t["rrn"] for t in reversed_only["items"]] == ["R3"]
    text = api.get(f"/tenants/1/bank-topups?from_day={day}&format=csv").content.decode(
        "utf-8-sig")
    assert [r["rrn"] for r in csv.DictReader(io.StringIO(text))] == ["R1", "R2", "R3", "R4",
                                                                      "R5"]


def test_the_cli_imports_and_refuses(fin: dict[str, Any], tmp_path: Any,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    site = fin["site"]
    day = fin["day"] - dt.timedelta(days=1)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(_file(f"{day},Q1,1,6,t,12x,00,"))
    args = ["reconcile", "--dsn", site.dsn, "--tenant", "1", "--date", str(day)]
    assert cli.main([*args, "--file", str(bad)]) == 2
    assert "line 2: amount_fen" in capsys.readouterr().err
    assert site.fetch("SELECT count(*) AS n FROM bank_files WHERE business_date = $1",
                      day)[0]["n"] == 0
    good = tmp_path / "good.csv"
    good.write_bytes(write_bank_file(day, [("Q1", 1, 6, "t", 1200, "")]))
    assert cli.main([*args, "--file", str(good), "--json", str(tmp_path / "r.json")]) == 0
    assert "1 exceptions (ours only 0, bank's only 1" in capsys.readouterr().out
    assert cli.main([*args, "--file", str(good)]) == 0
    assert "imported before" in capsys.readouterr().out
    good.write_bytes(write_bank_file(day, [("Q2", 1, 6, "t", 1200, "")]))
    assert cli.main([*args, "--file", str(good)]) == 3


def test_settlement_clearing_and_float_reports(fin: dict[str, Any]) -> None:
    api, day = fin["api"]["fin.b"], fin["day"]
    page = api.ok("GET", f"/tenants/1/finance/settlement?from_day={day}")
    rows = {r["merchant_id"]: r for r in page["items"]}
    assert {k: rows[4][k] for k in ("period", "count", "gross_fen", "fee_fen", "net_fen")} == {
        "period": str(day), "count": 3, "gross_fen": 4500, "fee_fen": 45, "net_fen": 4455}
    assert rows[None]["merchant_name"] == "(tenant total)" and rows[None]["net_fen"] == 4455
    month = api.ok("GET", f"/tenants/1/finance/settlement?period=month&from_day={day}")
    assert [(r["period"], r["merchant_id"], r["net_fen"]) for r in month["items"]] == [
        (day.strftime("%Y-%m"), 4, 4455), (day.strftime("%Y-%m"), None, 4455)]
    text = api.get(f"/tenants/1/finance/settlement?from_day={day}&format=csv").content
    lines = text.decode("utf-8-sig").splitlines()
    assert lines[0] == ("period,merchant_id,merchant_name,count,gross_fen,gross_yuan,"
                        "reversal_count,reversals_fen,reversals_yuan,sales_fen,sales_yuan,"
                        "fee_fen,fee_yuan,net_fen,net_yuan")
    canteen = fin["site"].fetch("SELECT name FROM merchants WHERE id = 4")[0]["name"]
    assert lines[1] == (f"{day},4,{canteen},3,4500,45.00,0,0,0.00,4500,45.00,45,0.45,4455,"
                        "44.55")
    from openpyxl import load_workbook

    sheet = load_workbook(io.BytesIO(api.get(
        f"/tenants/1/finance/float?from_day={day}&format=xlsx").content)).active
    header, row = list(sheet.values)
    f = dict(zip(header, row, strict=True))
    assert f["bank_topups_fen"] == 9000 and f["balanced"] is True
    assert f["close_total_fen"] - f["open_total_fen"] == 9000 - 4500
    clearing = api.ok("GET", f"/tenants/1/finance/clearing?from_day={day}")
    assert clearing["items"] == []  # no card of another park spent here that day
    assert api.get(f"/tenants/1/finance/settlement?from_day={day}&to_day="
                   f"{day + dt.timedelta(days=70)}").status_code == 422


def test_a_merchant_statement_is_a_pdf_with_its_figures(fin: dict[str, Any]) -> None:
    api, day = fin["api"]["fin.a"], fin["day"]
    r = api.get(f"/merchants/4/settlement-statement?from_day={day}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF") and r.content.count(b"/Type /Page\n") == 1
    assert (f"merchant_id=4 from={day} to={day} count=3 gross_fen=4500 reversals_fen=0 "
            f"fee_fen=45 net_fen=4455").encode() in r.content
    assert fin["api"]["east.fin"].get("/merchants/4/settlement-statement").status_code == 404
    assert fin["api"]["till"].get("/merchants/4/settlement-statement").status_code == 403


def test_a_listing_downloads_all_its_rows_or_refuses_past_the_export_cap() -> None:
    """_downloads.rows_wanted / download_all, which the finance listings share: a JSON page
    reads `limit` rows, a download all of them up to EXPORT_ROWS_MAX, and more is a 422."""
    assert (rows_wanted("json", 100), rows_wanted("csv", 100)) == (100, EXPORT_ROWS_MAX)

    class Row(msgspec.Struct):
        amount_fen: int

    r = asyncio.run(download_all("csv", "rows", [Row(1505)], ["amount_fen"], more=False,
                                 what="rows"))
    assert r.content == "\ufeffamount_fen,amount_yuan\r\n1505,15.05\r\n".encode()
    with pytest.raises(Problem) as refused:
        asyncio.run(download_all("xlsx", "rows", [Row(1)], ["amount_fen"], more=True,
                                 what="rows: narrow the days"))
    assert refused.value.status == 422
    assert refused.value.detail == f"more than {EXPORT_ROWS_MAX} rows: narrow the days"
