"""Reconciliation end to end: a top-up whose answer was lost in transit is found in the bank's
own daily file and resolved once (issue 11, section 5; docs/finance.md).

The switch and the admin API run as real processes on a real PostgreSQL, the bank simulator
(terminals_sim/bank_host.py) in-process over real TCP. During one business day a kiosk tops
up twice: once approved and credited; once approved at the bank (the bank card debited) but
the answer is lost with the connection, so the switch answers "unknown, not credited" and
sends reversal advices that the bank never takes (it is busy), until the switch hands the
top-up to a person (a bank exception). The day ends at its cutover; the simulator writes its
daily file of that day, finance imports it and the lost top-up is the one exception. Finance
resolves it: every way of resolving it twice (twice at once, at both places, approved twice)
moves the money once. Also: no full bank card number is stored anywhere in clear.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from admin_api.settlement import business_day_of
from onecard.seed import BANK_CLEARING, demo_pan, demo_token
from protocols import ocp
from protocols.bank_card import bank_card_key, check_pan, open_pan
from terminals_sim.bank_host import BankHostThread
from tests.admin_site import PASSWORD, AdminSite, Api
from tests.switch_site import free_port
from tests.test_topup import KEK, KIOSK, Kiosk, switch_env, topup_row, until

OUT = ocp.TopupOutcome
DAY_SECONDS = 12
"""The business day ends this long after the module starts (the database's clock)."""
APPROVED_FEN = 4_200
LOST_FEN = 3_300
BANK_START_FEN = 10_000_000


def _twice(*calls: tuple[Api, str, str, Any]) -> list[int]:
    """The requests at once, each on its own connection; their status codes, sorted."""
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(api.http.request, method, path, json=body)
                   for api, method, path, body in calls]
        return sorted(f.result().status_code for f in futures)


def _balance(site: AdminSite, account: int) -> int:
    return int(site.fetch("SELECT a.opening_main_fen + coalesce((SELECT sum(main_delta_fen)"
                          " FROM journal j WHERE j.account_id = a.id), 0) AS b FROM accounts a"
                          " WHERE a.id = $1", account)[0]["b"])


def _end_the_day_in(site: AdminSite, root: Api, seconds: int) -> tuple[dt.date, dt.datetime]:
    """Both parks' business day ends `seconds` from now (the database's clock): (day, end)."""
    tenant = site.fetch("SELECT utc_offset_s, now() AS now FROM tenants WHERE id = 1")[0]
    offset = tenant["utc_offset_s"]
    local_s = int(tenant["now"].timestamp()) + offset + seconds
    clock = f"{local_s % 86400 // 3600:02d}:{local_s % 3600 // 60:02d}:{local_s % 60:02d}"
    for t in (1, 2):
        root.ok("POST", f"/tenants/{t}/cutover", {"cutover": clock})
    end = dt.datetime.fromtimestamp(local_s - offset, dt.UTC)
    return business_day_of(end - dt.timedelta(microseconds=1), offset, local_s % 86400), end


@pytest.fixture(scope="module")
def day(pg_server: Any, migrated_template: str,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    sim = BankHostThread(KEK, default_balance_fen=BANK_START_FEN).start()
    site = AdminSite(pg_server.new_database(template=migrated_template))
    site.start(extra_env={**switch_env(sim), "ONECARD_BANK_ADVICE_TRIES_MAX": "2",
                          "ONECARD_PORT": str(free_port())})
    try:
        until(lambda: sim.host.signed_on_connections >= 1, "signed on")
        site.start_admin(ONECARD_ADMIN_SWITCH_TIMEOUT_SECONDS="5")
        root = site.api()
        campus = site.tenant_node(1)
        for name, role in (("fin.a", "finance"), ("fin.a2", "finance"), ("fin.b", "finance"),
                           ("fin.b2", "finance"), ("boss", "tenant_admin")):
            root.ok("POST", "/users", {"username": name, "password": PASSWORD, "role": role,
                                       "node_id": campus})
        api = {n: site.api(n) for n in ("fin.a", "fin.a2", "fin.b", "fin.b2", "boss")}
        # The day: it ends DAY_SECONDS from now, and the bank's business day is the same one
        # (a bank that cuts over with us; its 0800 cutover is tested in test_topup.py).
        business_date, end = _end_the_day_in(site, root, DAY_SECONDS)
        sim.host.business_date = business_date
        approved_card, lost_card = site.seed.bank_card_cards[:2]
        accounts = {c: site.fetch("SELECT account_id FROM cards WHERE card_no = $1", c)[0][
            "account_id"] for c in (approved_card, lost_card)}
        kiosk = Kiosk(site)
        try:
            ok = kiosk.topup_msg(approved_card, APPROVED_FEN)
            answer = kiosk.client.request(ok)
            assert (answer.code, answer.outcome) == (0, OUT.APPROVED), answer
            # Approved at the bank, the answer lost with the connection; the advices never
            # taken: "unknown, not credited", then handed to a person after two tries.
            lost_token = demo_token(accounts[lost_card])
            sim.host.set_behaviour("drop", card=lost_token)
            sim.host.set_advice_action("silent")
            lost = kiosk.topup_msg(lost_card, LOST_FEN)
            answer = kiosk.client.request(lost)
            assert (answer.code, answer.outcome, answer.amount_fen) == (
                ocp.ResponseCode.BANK_NO_ANSWER, OUT.UNKNOWN, 0), answer
        finally:
            kiosk.close()
        lost_row = until(lambda: (r := topup_row(site, KIOSK, lost.txn_seq)) is not None
                         and r["state"] == "exception" and r, "handed to a person")
        assert lost_row["created_at"] < end, "the lost top-up belongs to the day"
        sim.host.set_advice_action("ack")
        sim.host.per_card.pop(lost_token, None)
        until(lambda: site.fetch("SELECT now() >= $1 AS over", end)[0]["over"],
              "the business day ends")
        bank_file = tmp_path_factory.mktemp("bank") / f"bank-{business_date}.csv"
        assert sim.host.write_daily_file(bank_file, business_date) == 2
        yield {"site": site, "sim": sim, "api": api, "day": business_date, "file": bank_file,
               "lost": lost_row, "lost_card": lost_card, "lost_token": lost_token,
               "approved": topup_row(site, KIOSK, ok.txn_seq), "accounts": accounts}
    finally:
        site.close()
        sim.stop()


def test_a_lost_answer_is_found_in_the_banks_file_and_resolved_once(
        day: dict[str, Any]) -> None:
    site, sim, lost, approved = day["site"], day["sim"], day["lost"], day["approved"]
    a, a2, b, b2, boss = (day["api"][n] for n in ("fin.a", "fin.a2", "fin.b", "fin.b2", "boss"))
    account = lost["account_id"]
    # The bank has the money: it debited the bank card and never reversed.
    assert sim.host.balances[day["lost_token"]] == BANK_START_FEN - LOST_FEN
    assert not sim.host.topups[lost["rrn"]].reversed
    assert site.journal(KIOSK, lost["txn_seq"]) == []  # and we never credited it
    before = _balance(site, account)

    # The simulator's own file of the day, imported: one match, one exception.
    data = Path(day["file"]).read_bytes()
    r = a.http.post(f"/tenants/1/bank-files/{day['day']}", files={"file": ("bank.csv", data)})
    assert r.status_code == 200, r.text
    result = r.json()
    assert (result["lines_count"], result["matched"], result["ours_only"], result["bank_only"],
            result["amount_differs"]) == (2, 1, 0, 1, 0)
    [exc] = a.ok("GET", "/tenants/1/reconciliation-exceptions")["items"]
    assert (exc["rrn"], exc["kind"], exc["expected_fen"], exc["status"], exc["topup_state"]) == (
        lost["rrn"], "bank_only", LOST_FEN, "open", "exception")
    assert approved["rrn"] != lost["rrn"]

    # One place resolves a top-up: its bank exception, which the switch opened.
    [advice] = site.fetch("SELECT * FROM bank_advices WHERE topup_id = $1", lost["id"])
    bank_exc = advice["document_id"]
    resolve = f"/reconciliation-exceptions/{exc['id']}/resolve"
    refused = a.post(resolve, {"action": "credit"})
    assert refused.status_code == 409 and f"bank exception {bank_exc}" in refused.text
    # Credit chosen twice at once (two log-ins of finance): once.
    note = {"action": "credit", "note": "the bank's file has it: debited, never reversed"}
    choose = f"/bank-exceptions/{bank_exc}/resolve"
    assert _twice((a, "POST", choose, note), (a2, "POST", choose, note)) == [200, 409]
    # Approved twice at once by another: credited once.
    approve = f"/documents/{bank_exc}/approve"
    assert _twice((b, "POST", approve, {}), (b2, "POST", approve, {})) == [200, 409]
    assert a.ok("GET", f"/bank-exceptions/{bank_exc}")["status"] == "resolved"
    assert _balance(site, account) == before + LOST_FEN
    # The reconciliation exception: credit again is refused; it is written off, twice at once.
    again = a.post(resolve, {"action": "credit"})
    assert again.status_code == 409 and "credited by bank exception" in again.text
    off = {"action": "write_off", "comment": "credited by the bank exception"}
    assert _twice((a, "POST", resolve, off), (a2, "POST", resolve, off)) == [200, 409]
    [exc] = a.ok("GET", "/tenants/1/reconciliation-exceptions")["items"]
    doc = exc["document_id"]
    status = b.ok("POST", f"/documents/{doc}/approve", {})["status"]
    if status != "executed":  # a second level, if the tenant's policy has one
        status = boss.ok("POST", f"/documents/{doc}/approve", {})["status"]
    assert status == "executed"
    assert a.ok("GET", "/tenants/1/reconciliation-exceptions")["items"][0]["status"] == \
        "resolved"
    for api, path, body in ((a, choose, note), (a, resolve, {"action": "credit"}),
                            (a, resolve, off), (b, approve, {}), (b, f"/documents/{doc}/approve",
                                                                   {})):
        assert api.post(path, body).status_code == 409, path

    # Money moved once: one credit from bank clearing, the bank's debit stands.
    rows = site.fetch("SELECT amount_fen FROM journal WHERE account_id = $1 AND merchant_id = $2"
                      " AND code = 0 AND kind = 8", account, BANK_CLEARING)
    assert [r["amount_fen"] for r in rows] == [LOST_FEN]
    assert _balance(site, account) == before + LOST_FEN
    assert sim.host.balances[day["lost_token"]] == BANK_START_FEN - LOST_FEN
    [t] = site.fetch("SELECT state FROM bank_topups WHERE id = $1", lost["id"])
    assert t["state"] == "approved"
    # The same file again: its first result, nothing new.
    repeat = a.http.post(f"/tenants/1/bank-files/{day['day']}",
                         files={"file": ("bank.csv", data)}).json()
    assert repeat["repeated"] and repeat["id"] == result["id"]


_DIGIT_RUNS = re.compile(r"(?<![0-9])[0-9]{16,19}(?![0-9])")


def _card_numbers(text: str) -> set[str]:
    """Every Luhn-valid run of 16 to 19 digits in the text."""
    found = set()
    for run in _DIGIT_RUNS.findall(text):
        with contextlib.suppress(ValueError):
            found.add(check_pan(run))
    return found


def test_no_full_card_number_is_stored_in_clear(day: dict[str, Any]) -> None:
    """The seeded bound cards' numbers are nowhere in clear: not in bank_cards (the bank knows
    a card by its token), not in the imported file's lines, not in the simulator's own file;
    each is kept sealed under the site's bank-card key, and opens there only."""
    site = day["site"]
    cards = site.fetch("SELECT account_id, pan_masked, pan_encrypted, bank_token FROM bank_cards"
                       " WHERE tenant_id = 1")
    pans = {demo_pan(c["account_id"]) for c in cards}
    assert len(pans) == len(cards) >= 2
    stored = "\n".join(r["row"] for r in site.fetch(
        "SELECT (to_jsonb(c) - 'pan_encrypted')::text AS row FROM bank_cards c"))
    lines = "\n".join(r["row"] for r in site.fetch(
        "SELECT to_jsonb(l)::text AS row FROM bank_file_lines l"))
    assert lines.count(day["lost_token"]) == 1  # the lines are there, by token
    sim_file = Path(day["file"]).read_text()
    for where, text in (("bank_cards", stored), ("bank_file_lines", lines),
                        ("the simulator's file", sim_file)):
        assert not _card_numbers(text), where
        assert not any(p in text for p in pans), where
    key = bank_card_key(site.master)
    for c in cards:
        pan = demo_pan(c["account_id"])
        assert c["bank_token"] == demo_token(c["account_id"])
        assert not _card_numbers(c["bank_token"])
        assert c["pan_masked"] == pan[:6] + "*" * (len(pan) - 10) + pan[-4:]
        assert open_pan(key, c["account_id"], c["pan_encrypted"]) == pan
        with pytest.raises(ValueError):
            open_pan(key, c["account_id"] + 1, c["pan_encrypted"])
    # What the switch sent the bank (field 102) and the bank keyed its cards by: tokens.
    assert not _card_numbers(" ".join(day["sim"].host.balances))
