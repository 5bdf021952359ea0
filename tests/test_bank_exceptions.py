"""Bank exceptions: a reversal advice the bank never acknowledges, handed to a person and
resolved by finance (admin_api/finance/_bankexc.py, docs/finance.md section 3a).

The switch and the admin API run as real processes on a real PostgreSQL, the bank simulator
(terminals_sim/bank_host.py) in-process over real TCP. A kiosk's top-up is never answered and
its reversal advice never acknowledged (bank_advice_tries_max 2): the switch opens a
bank_exception document; finance chooses credit, retry or write-off, and another person's
approval carries it out once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import pytest

from admin_api.finance import write_bank_file
from onecard.kiosks import bank_summary
from onecard.seed import BANK_CLEARING
from protocols import iso8583, ocp
from terminals_sim.bank_host import BankHostThread
from tests.admin_site import PASSWORD, AdminSite, Api
from tests.switch_site import free_port
from tests.test_topup import KEK, KIOSK, Kiosk, switch_env, topup_row, until

OUT = ocp.TopupOutcome


@pytest.fixture(scope="module")
def exc_site(pg_server: Any, migrated_template: str) -> Iterator[dict[str, Any]]:
    sim = BankHostThread(KEK, default_balance_fen=10_000_000).start()
    site = AdminSite(pg_server.new_database(template=migrated_template))
    site.start(extra_env={**switch_env(sim), "ONECARD_BANK_ADVICE_TRIES_MAX": "2",
                          "ONECARD_PORT": str(free_port())})
    try:
        until(lambda: sim.host.signed_on_connections >= 1, "signed on")
        site.start_admin(ONECARD_ADMIN_SWITCH_TIMEOUT_SECONDS="5")
        root = site.api()
        campus, east = site.tenant_node(1), site.tenant_node(2)
        for name, role, node in (("fin.a", "finance", campus), ("fin.b", "finance", campus),
                                 ("office", "card_office", campus),
                                 ("east.fin", "finance", east)):
            root.ok("POST", "/users", {"username": name, "password": PASSWORD, "role": role,
                                       "node_id": node})
        yield {"site": site, "sim": sim, "cards": list(site.seed.bank_card_cards),
               "api": {n: site.api(n) for n in ("fin.a", "fin.b", "office", "east.fin")}}
    finally:
        site.close()
        sim.stop()


def _exception(w: dict[str, Any], amount_fen: int) -> tuple[dict[str, Any], Any]:
    """A top-up the bank never answers whose advice it never acknowledges: (the exception as
    GET /bank-exceptions/{id} shows it, the top-up row)."""
    site, sim = w["site"], w["sim"]
    card = w["cards"].pop(0)
    sim.host.set_behaviour("silent")
    sim.host.set_advice_action("silent")
    kiosk = Kiosk(site)
    try:
        msg = kiosk.topup_msg(card, amount_fen)
        assert kiosk.client.request(msg).outcome == OUT.UNKNOWN
    finally:
        kiosk.close()
    t = until(lambda: (r := topup_row(site, KIOSK, msg.txn_seq)) is not None
              and r["state"] == "exception" and r, "handed to a person")
    [advice] = site.fetch("SELECT * FROM bank_advices WHERE topup_id = $1", t["id"])
    exc = w["api"]["fin.a"].ok("GET", f"/bank-exceptions/{advice['document_id']}")
    assert (exc["status"], exc["topup_id"], exc["amount_fen"], exc["rrn"], exc["action"]) == (
        "open", t["id"], amount_fen, t["rrn"], None)
    return exc, t


def _open_count(site: AdminSite) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(site.dsn)
        try:
            return (await bank_summary(conn)).bank_exceptions_open
        finally:
            await conn.close()

    return asyncio.run(count())


def _balance(site: AdminSite, account: int) -> int:
    return int(site.fetch("SELECT a.opening_main_fen + coalesce((SELECT sum(main_delta_fen)"
                          " FROM journal j WHERE j.account_id = a.id), 0) AS b FROM accounts a"
                          " WHERE a.id = $1", account)[0]["b"])


def _twice(*calls: tuple[Api, str, str, Any]) -> list[int]:
    """The requests at once, each on its own connection; their status codes, sorted."""
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(api.http.request, method, path, json=body)
                   for api, method, path, body in calls]
        return sorted(f.result().status_code for f in futures)


def test_credit_is_approved_by_another_and_credits_once(exc_site: dict[str, Any]) -> None:
    site, a, b = exc_site["site"], exc_site["api"]["fin.a"], exc_site["api"]["fin.b"]
    exc, t = _exception(exc_site, 2_500)
    doc = exc["id"]
    before = _balance(site, t["account_id"])
    assert _open_count(site) == 1  # the demo's bank_exceptions_open, from the database
    # Listed for its tenant; nobody of another tenant (nor without finance.read) sees it.
    listed = a.ok("GET", "/tenants/1/bank-exceptions?status=open")["items"]
    assert doc in [x["id"] for x in listed]
    east, office = exc_site["api"]["east.fin"], exc_site["api"]["office"]
    assert east.get(f"/bank-exceptions/{doc}").status_code == 404
    assert east.get("/tenants/1/bank-exceptions").status_code == 404
    assert doc not in [x["id"] for x in east.ok("GET", "/tenants/2/bank-exceptions")["items"]]
    assert east.post(f"/bank-exceptions/{doc}/resolve",
                     {"action": "credit", "note": "x"}).status_code == 404
    assert office.get(f"/bank-exceptions/{doc}").status_code == 403
    # Nothing is approved before someone chose how it ends.
    assert b.post(f"/documents/{doc}/approve", {}).status_code == 409
    assert a.post(f"/bank-exceptions/{doc}/resolve", {"action": "credit"}).status_code == 400
    # Chosen twice at once: once.
    note = {"action": "credit", "note": "bank (Ms Li, ref 7781) confirms the debit"}
    a2 = site.api("fin.a")
    path = f"/bank-exceptions/{doc}/resolve"
    assert _twice((a, "POST", path, note), (a2, "POST", path, note)) == [200, 409]
    got = a.ok("GET", f"/bank-exceptions/{doc}")
    assert (got["status"], got["action"], got["proposed_by"], got["document_status"]) == (
        "resolving", "credit", "fin.a", "submitted")
    # Not by whoever chose; by another finance log-in, posted twice at once: credited once.
    assert a.post(f"/documents/{doc}/approve", {}).status_code == 403
    b2 = site.api("fin.b")
    approve = f"/documents/{doc}/approve"
    assert _twice((b, "POST", approve, {}), (b2, "POST", approve, {})) == [200, 409]
    assert b.post(f"/documents/{doc}/execute").status_code == 409
    assert a.post(path, note).status_code == 409
    done = a.ok("GET", f"/bank-exceptions/{doc}")
    assert (done["status"], done["credited_fen"], done["topup_state"], done["advice_state"]) \
        == ("resolved", 2_500, "approved", "resolved")
    assert _balance(site, t["account_id"]) == before + 2_500
    rows = site.fetch("SELECT * FROM journal WHERE account_id = $1 AND merchant_id = $2"
                      " AND code = 0 AND kind = 8", t["account_id"], BANK_CLEARING)
    assert [r["amount_fen"] for r in rows] == [2_500]
    [topup] = site.fetch("SELECT * FROM bank_topups WHERE id = $1", t["id"])
    assert topup["lsn"] == rows[0]["lsn"]
    actions = {r["action"] for r in site.fetch(
        "SELECT action FROM audit_log WHERE entity_id = $1 OR entity_id = $2", str(doc),
        str(t["id"]))}
    assert {"bank_exception.resolve", "document.approve", "document.execute",
            "bank_exception.close"} <= actions

    # The bank's file of the top-up's day names it: matched, no reconciliation exception.
    day = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)).date() - dt.timedelta(days=1)
    noon = dt.datetime.combine(day, dt.time(4), dt.UTC)
    site.fetch("UPDATE bank_topups SET created_at = $2 WHERE id = $1", t["id"], noon)
    data = write_bank_file(day, [(t["rrn"], t["stan"], KIOSK, "tok", 2_500, "AUTH01")])
    r = a.http.post(f"/tenants/1/bank-files/{day}", files={"file": ("bank.csv", data)})
    assert r.status_code == 200, r.text
    assert (r.json()["matched"], r.json()["bank_only"], r.json()["ours_only"]) == (1, 0, 0)


def test_retry_sends_the_advice_again_and_the_bank_acknowledges(
        exc_site: dict[str, Any]) -> None:
    site, sim = exc_site["site"], exc_site["sim"]
    a, b = exc_site["api"]["fin.a"], exc_site["api"]["fin.b"]
    exc, t = _exception(exc_site, 1_200)
    before = _balance(site, t["account_id"])
    sent = len([m for m in sim.host.received_of(iso8583.ReversalAdvice) if m.rrn == t["rrn"]])
    sim.host.set_advice_action("ack")  # the bank link is back
    doc = exc["id"]
    a.ok("POST", f"/bank-exceptions/{doc}/resolve",
         {"action": "retry", "note": "the bank's host is back since 10:20"})
    assert site.fetch("SELECT state FROM bank_advices WHERE topup_id = $1",
                      t["id"])[0]["state"] == "exception"  # nothing until approved
    out = b.ok("POST", f"/documents/{doc}/approve", {})
    assert out["status"] == "executed" and out["lines"] == []
    until(lambda: topup_row(site, KIOSK, t["txn_seq"])["state"] == "reversed",
          "the repeated advice is acknowledged")
    [advice] = site.fetch("SELECT * FROM bank_advices WHERE topup_id = $1", t["id"])
    assert advice["state"] == "acknowledged"
    again = [m for m in sim.host.received_of(iso8583.ReversalAdvice) if m.rrn == t["rrn"]]
    assert len(again) == sent + 1 and again[-1].repeat  # an 0421
    assert a.ok("GET", f"/bank-exceptions/{doc}")["status"] == "resolved"
    assert _balance(site, t["account_id"]) == before


def test_write_off_moves_nothing_and_a_rejection_lets_finance_choose_again(
        exc_site: dict[str, Any]) -> None:
    site = exc_site["site"]
    a, b = exc_site["api"]["fin.a"], exc_site["api"]["fin.b"]
    exc, t = _exception(exc_site, 900)
    doc = exc["id"]
    before = _balance(site, t["account_id"])
    a.ok("POST", f"/bank-exceptions/{doc}/resolve", {"action": "credit", "note": "guess"})
    rejected = b.ok("POST", f"/documents/{doc}/reject", {"comment": "ask the bank first"})
    assert rejected["status"] == "rejected"
    assert a.ok("GET", f"/bank-exceptions/{doc}")["status"] == "open"
    revised = site.api().post(f"/documents/{doc}/revise", {"title": "x", "lines": [
        {"person_id": 1, "amount_fen": 1}]})
    assert revised.status_code == 409 and "not revised" in revised.text
    # Chosen again, by the other one this time; approved by the first.
    b.ok("POST", f"/bank-exceptions/{doc}/resolve",
         {"action": "write_off", "note": "the bank never debited (ref 7790)"})
    assert b.post(f"/documents/{doc}/approve", {}).status_code == 403
    journal = site.fetch("SELECT count(*) AS n FROM journal")[0]["n"]
    out = a.ok("POST", f"/documents/{doc}/approve", {})
    assert out["status"] == "executed" and out["version"] == 3
    assert site.fetch("SELECT count(*) AS n FROM journal")[0]["n"] == journal
    assert _balance(site, t["account_id"]) == before
    done = a.ok("GET", f"/bank-exceptions/{doc}")
    assert (done["status"], done["action"], done["topup_state"], done["advice_state"],
            done["credited_fen"]) == ("resolved", "write_off", "reversed", "resolved", 0)
    assert a.post(f"/bank-exceptions/{doc}/resolve",
                  {"action": "credit", "note": "x"}).status_code == 409
    csv = a.get("/tenants/1/bank-exceptions?format=csv&status=resolved")
    assert csv.status_code == 200 and t["rrn"] in csv.text


def test_a_top_up_is_resolved_in_one_place(exc_site: dict[str, Any]) -> None:
    """The bank's file names an exception's top-up (bank_only): the reconciliation exception
    moves no money while the bank exception is open or credits it."""
    site = exc_site["site"]
    a, b = exc_site["api"]["fin.a"], exc_site["api"]["fin.b"]
    exc, t = _exception(exc_site, 700)
    day = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)).date() - dt.timedelta(days=2)
    site.fetch("UPDATE bank_topups SET created_at = $2 WHERE id = $1", t["id"],
               dt.datetime.combine(day, dt.time(4), dt.UTC))
    data = write_bank_file(day, [(t["rrn"], t["stan"], KIOSK, "tok", 700, "AUTH02")])
    r = a.http.post(f"/tenants/1/bank-files/{day}", files={"file": ("bank.csv", data)})
    assert r.status_code == 200 and r.json()["bank_only"] == 1, r.text
    [rec] = [e for e in a.ok("GET", "/tenants/1/reconciliation-exceptions")["items"]
             if e["rrn"] == t["rrn"]]
    resolve = f"/reconciliation-exceptions/{rec['id']}/resolve"
    refused = a.post(resolve, {"action": "credit"})
    assert refused.status_code == 409 and f"bank exception {exc['id']}" in refused.text
    a.ok("POST", f"/bank-exceptions/{exc['id']}/resolve",
         {"action": "credit", "note": "the bank's file has it: debited"})
    assert b.ok("POST", f"/documents/{exc['id']}/approve", {})["status"] == "executed"
    again = a.post(resolve, {"action": "credit"})
    assert again.status_code == 409 and "credited by bank exception" in again.text
    assert a.ok("POST", resolve, {"action": "write_off"})["status"] == "resolving"
    rows = site.fetch("SELECT amount_fen FROM journal WHERE account_id = $1 AND merchant_id = $2"
                      " AND code = 0", t["account_id"], BANK_CLEARING)
    assert [r["amount_fen"] for r in rows].count(700) == 1
    assert _open_count(site) == 0  # every exception of this module resolved


def test_finance_sees_the_switchs_own_refusals(exc_site: dict[str, Any]) -> None:
    """A wrong PIN at the kiosk: the switch refuses it before asking the bank (a row in
    bank_topup_refusals, nothing in bank_topups) and finance lists it, filters it by code and
    downloads it; the card office and another park's finance do not see it."""
    site, sim = exc_site["site"], exc_site["sim"]
    a, office, east = (exc_site["api"][n] for n in ("fin.a", "office", "east.fin"))
    card = exc_site["cards"].pop(0)
    sim.host.set_behaviour("approve")
    kiosk = Kiosk(site)
    try:
        wrong = kiosk.topup_msg(card, 1_800, pin="000000")
        assert kiosk.client.request(wrong).code == ocp.ResponseCode.PIN_INCORRECT
    finally:
        kiosk.close()
    until(lambda: site.fetch("SELECT 1 FROM bank_topup_refusals WHERE terminal_id = $1"
                             " AND txn_seq = $2", KIOSK, wrong.txn_seq), "the refusal recorded")
    today = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)).date()
    days = f"from_day={today - dt.timedelta(days=1)}&to_day={today + dt.timedelta(days=1)}"
    page = a.ok("GET", f"/tenants/1/bank-topup-refusals?{days}")
    mine = [r for r in page["items"] if r["txn_seq"] == wrong.txn_seq]
    assert [(r["terminal_id"], r["card_no"], r["amount_fen"], r["code"], r["result"], r["auto"])
            for r in mine] == [(KIOSK, card, 1_800, int(ocp.ResponseCode.PIN_INCORRECT),
                                "PIN_INCORRECT", False)]
    code = int(ocp.ResponseCode.PIN_INCORRECT)
    only = a.ok("GET", f"/tenants/1/bank-topup-refusals?{days}&code={code}")["items"]
    assert only and {r["code"] for r in only} == {code}
    other = a.ok("GET", f"/tenants/1/bank-topup-refusals?{days}&code={code + 1}")["items"]
    assert wrong.txn_seq not in {r["txn_seq"] for r in other}
    text = a.get(f"/tenants/1/bank-topup-refusals?{days}&format=csv").content.decode(
        "utf-8-sig")
    header, *rows = text.splitlines()
    assert header.startswith("id,created_at,terminal_id,txn_seq,account_id,card_no,amount_fen,"
                             "amount_yuan,auto,code,result")
    assert any(f",{wrong.txn_seq}," in row and "18.00" in row for row in rows)
    assert not site.fetch("SELECT 1 FROM bank_topups WHERE terminal_id = $1 AND txn_seq = $2",
                          KIOSK, wrong.txn_seq)
    assert office.get(f"/tenants/1/bank-topup-refusals?{days}").status_code == 403
    assert east.get(f"/tenants/1/bank-topup-refusals?{days}").status_code == 404
    assert a.get("/tenants/1/bank-topup-refusals?code=256").status_code in (400, 422)
    assert a.get("/tenants/4000/bank-topup-refusals").status_code == 404
