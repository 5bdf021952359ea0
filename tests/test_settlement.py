"""A business day's cutover and settlement over a real switch, admin API and PostgreSQL.

Purchases at two parks (tenant 1's canteens and shop, tenant 2's East canteen, where tenant
1's cards spend across parks), a reversal and a cash top-up; the cutover passes while the
switch keeps authorizing; the day's figures are checked against sums over the journal written
differently here (row by row in Python, by amount rather than by merchant delta, the float
from each account's last balance before the cutover); then the day is confirmed by one finance
log-in and approved by another, which freezes it and pays merchants out once.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from admin_api.settlement import business_day_of, day_bounds, fee_of
from onecard.cli import main as onecard_main
from protocols import ocp
from tests.admin_site import PASSWORD, AdminSite, Api, site_with_switch
from tests.ocp_client import OcpClient
from tests.switch_site import EAST_PARK_TERMINAL, FREE_CANTEEN_TERMINAL, SUPERMARKET_TERMINAL

FEE_RATE_BP = 65
EAST_CANTEEN = 6


def _wait_for(what: str, check: Callable[[], Any], seconds: float = 60.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Till:
    def __init__(self, site: AdminSite, terminal_id: int) -> None:
        self.client: OcpClient = site.client(terminal_id)
        self.seq = 0

    def buy(self, card_no: int, amount_fen: int) -> Any:
        self.seq += 1
        return self.client.request(ocp.Purchase(self.seq, card_no, amount_fen,
                                                int(time.time() * 1000)))

    def reverse(self, original: int, card_no: int) -> Any:
        self.seq += 1
        return self.client.request(ocp.Reversal(self.seq, original, card_no, 0))


@pytest.fixture
def day_site(db_dsn: str) -> Iterator[AdminSite]:
    yield from site_with_switch(db_dsn)


def _cards(site: AdminSite, n: int) -> list[int]:
    rows = site.fetch("SELECT c.card_no FROM cards c JOIN accounts a ON a.id = c.account_id"
                      " WHERE c.status = 0 AND a.status = 0 AND a.tenant_id = 1"
                      " AND a.class_id = 2 AND a.opening_main_fen >= 5000 ORDER BY a.id"
                      " LIMIT $1", n)
    return [r["card_no"] for r in rows]


def _independent(site: AdminSite, tenant: int, start: dt.datetime, end: dt.datetime,
                 offset: int, cutover: int, day: dt.date) -> dict[str, Any]:
    """The day's figures from the journal, row by row, another way than the module."""
    rows = site.fetch("SELECT * FROM journal ORDER BY lsn")
    kinds = {r["id"]: (r["kind"], r["tenant_id"], r["fee_rate_bp"]) for r in
             site.fetch("SELECT id, kind, tenant_id, fee_rate_bp FROM merchants")}
    merchants: dict[int, dict[str, int]] = {}
    clearing: dict[tuple[int, int], int] = {}
    clearing_count: dict[tuple[int, int], int] = {}
    cash_in = 0
    for r in rows:
        if r["code"] != 0 or business_day_of(r["committed_at"], offset, cutover) != day:
            continue
        assert start <= r["committed_at"] < end
        mkind, mtenant, _ = kinds[r["merchant_id"]]
        if mtenant == tenant and mkind != "system" and r["kind"] in (1, 2):
            m = merchants.setdefault(r["merchant_id"], {"count": 0, "gross": 0, "rev": 0})
            if r["kind"] == 1:
                m["count"] += 1
                m["gross"] += r["amount_fen"]
            else:
                m["rev"] += r["amount_fen"]
        if r["tenant_id"] != r["merchant_tenant_id"] and r["kind"] in (1, 2):
            key = (r["tenant_id"], r["merchant_tenant_id"])
            clearing[key] = clearing.get(key, 0) + (r["amount_fen"] if r["kind"] == 1
                                                    else -r["amount_fen"])
            clearing_count[key] = clearing_count.get(key, 0) + (r["kind"] == 1)
        if r["kind"] == 8 and mtenant == tenant and r["merchant_id"] == 2:
            cash_in += r["amount_fen"]
    # The float at the cutover: each account's balance after its last approved row before the
    # cutover (the journal stores the balances after each row), else its opening balances.
    last: dict[int, tuple[int, int]] = {}
    for r in rows:
        if r["code"] == 0 and r["committed_at"] < end and r["account_id"]:
            last[r["account_id"]] = (r["main_fen"], r["subsidy_fen"])
    main = sub = 0
    for a in site.fetch("SELECT id, opening_main_fen, opening_subsidy_fen FROM accounts"
                        " WHERE tenant_id = $1", tenant):
        m_, s_ = last.get(a["id"], (a["opening_main_fen"], a["opening_subsidy_fen"]))
        main += m_
        sub += s_
    return {"merchants": merchants, "clearing": clearing, "float": (main, sub),
            "clearing_count": clearing_count,
            "cash_in": cash_in}


def test_a_day_is_cut_over_settled_confirmed_and_paid_out_once(day_site: AdminSite,
                                                              tmp_path: Path) -> None:
    site = day_site
    root = site.api()
    campus, east = site.tenant_node(1), site.tenant_node(2)
    for name, node in (("fin.a", campus), ("fin.b", campus), ("cashier.a", campus),
                       ("fin.east", east)):
        root.ok("POST", "/users", {"username": name, "password": PASSWORD,
                                   "role": "cashier" if name.startswith("cashier")
                                   else "finance", "node_id": node}, 201)
    fin_a, fin_b, cashier = site.api("fin.a"), site.api("fin.b"), site.api("cashier.a")
    site.fetch("UPDATE merchants SET fee_rate_bp = $1 WHERE id = 4", FEE_RATE_BP)
    site.fetch("UPDATE merchants SET settlement_cycle = 'weekly' WHERE id = 5")  # the shop
    cards = _cards(site, 6)
    canteen, shop, east_till = (Till(site, t) for t in (FREE_CANTEEN_TERMINAL,
                                                        SUPERMARKET_TERMINAL,
                                                        EAST_PARK_TERMINAL))
    # Day D: purchases at both parks, a cross-park card, a reversal, a cash top-up.
    approved = 0
    for i, card in enumerate(cards):
        for till, amount in ((canteen, 333 + i), (shop, 250 + 7 * i), (east_till, 401 + i)):
            approved += till.buy(card, amount).code == 0
    assert approved >= 12
    assert canteen.reverse(1, cards[0]).code == 0
    person = site.fetch("SELECT id FROM people WHERE account_id = (SELECT account_id FROM"
                        " cards WHERE card_no = $1)", cards[1])[0]["id"]
    r = cashier.http.post(f"/people/{person}/topups", json={"amount_fen": 5_000},
                          headers={"Idempotency-Key": str(uuid.uuid4())})
    assert r.status_code == 201, r.text

    # The cutover: both parks' day ends 2 s from now (the database's clock), and the switch
    # keeps authorizing across it with no pause.
    day, boundary = _end_the_day_soon(site, root)
    tenant = site.fetch("SELECT utc_offset_s, cutover_s FROM tenants WHERE id = 1")[0]
    offset, cutover = tenant["utc_offset_s"], tenant["cutover_s"]
    start, end = day_bounds(day, offset, cutover)
    assert end == boundary
    r = fin_a.get(f"/tenants/1/settlements/{day}")
    if site.fetch("SELECT now() < $1 AS before", end)[0]["before"]:  # else a very slow machine
        assert r.status_code == 409 and r.json()["type"].endswith("/day-open"), r.text
    # Till past the cutover every purchase is approved at once: nothing pauses.
    tries = answered = 0
    while site.fetch("SELECT now() < $1 AS before", end)[0]["before"] or tries == 0:
        tries += 1
        answered += canteen.buy(cards[tries % len(cards)], 11).code == 0
    assert answered == tries
    for card in cards[:3]:
        assert canteen.buy(card, 222).code == 0  # the next day's

    view = _wait_for("the day to close", lambda: (
        lambda r: r.json() if r.status_code == 200 else None)(
        fin_a.get(f"/tenants/1/settlements/{day}")))
    assert view["status"] == "open"
    s = view["settlement"]
    assert s["balanced"] is True

    # Against an independent sum over the journal.
    ind = _independent(site, 1, start, end, offset, cutover, day)
    got = {m["merchant_id"]: m for m in s["merchants"]}
    assert set(got) == set(ind["merchants"]) == {4, 5}
    for mid, m in ind["merchants"].items():
        g = got[mid]
        assert (g["count"], g["gross_fen"], g["reversals_fen"]) == (m["count"], m["gross"],
                                                                    m["rev"]), mid
        rate = FEE_RATE_BP if mid == 4 else 0
        assert g["fee_fen"] == fee_of(m["gross"] - m["rev"], rate)
        assert g["net_fen"] == m["gross"] - m["rev"] - g["fee_fen"]
    owed = ind["clearing"][(1, 2)]
    assert owed > 0 and (1, 2) in ind["clearing"] and (2, 1) not in ind["clearing"]
    assert s["clearing"] == [{
        "other_tenant_id": 2,
        "our_cards_there_count": ind["clearing_count"][(1, 2)], "our_cards_there_fen": owed,
        "their_cards_here_count": 0, "their_cards_here_fen": 0, "net_fen": owed,
        "debtor_tenant_id": 1, "creditor_tenant_id": 2}]
    assert s["clearing_net_payable_fen"] == owed
    # The clearing report names the other park (its name only: docs/console.md, finance).
    cleared = fin_a.ok("GET", f"/tenants/1/finance/clearing?from_day={day}")["items"]
    assert [(c["other_tenant_id"], c["other_tenant_name"], c["net_fen"]) for c in cleared] == [
        (2, site.fetch("SELECT name FROM tenants WHERE id = 2")[0]["name"], owed)]
    assert (s["float_close"]["main_fen"], s["float_close"]["subsidy_fen"]) == ind["float"]
    assert s["cash"]["in_fen"] == ind["cash_in"] == 5_000
    east_day = fin_b.get(f"/tenants/2/settlements/{day}")
    assert east_day.status_code == 404  # tenant 2 is outside fin.b's subtree
    east_s = site.api("fin.east").ok("GET", f"/tenants/2/settlements/{day}")["settlement"]
    assert east_s["merchants"][0]["merchant_id"] == EAST_CANTEEN
    assert east_s["merchants"][0]["gross_fen"] == owed
    assert east_s["clearing"][0]["their_cards_here_fen"] == owed
    assert east_s["clearing"][0]["debtor_tenant_id"] == 1 and east_s["balanced"]

    # Reproducible: the API twice, the CLI twice, byte for byte.
    again = fin_b.get(f"/tenants/1/settlements/{day}").json()["settlement"]
    assert again == s
    outs = []
    for n in (1, 2):
        path = tmp_path / f"s{n}.json"
        assert onecard_main(["settle", "--tenant", "1", "--date", str(day), "--json",
                             str(path), "--dsn", site.dsn]) == 0
        outs.append(path.read_bytes())
    assert outs[0] == outs[1] and json.loads(outs[0]) == s

    # Confirmation: requested by fin.a, approved by fin.b, never by fin.a.
    balances_before = _merchant_balances(site)
    pending = fin_a.ok("POST", f"/tenants/1/settlements/{day}/confirm", {"comment": "day"})
    doc = pending["document_id"]
    assert pending["status"] == "pending" and pending["settlement"] == s
    r = fin_a.post(f"/documents/{doc}/approve", {})
    assert r.status_code == 403, r.text
    r = fin_a.post(f"/tenants/1/settlements/{day}/confirm", {})
    assert r.status_code == 409 and r.json()["type"].endswith("/in-progress")
    done = fin_b.ok("POST", f"/documents/{doc}/approve", {})
    assert done["status"] == "executed", done

    # Paid once: every due merchant's net to bank clearing, its fee to the fee account.
    accounts = site.fetch("SELECT * FROM settlement_accounts WHERE tenant_id = 1")[0]
    bank = site.fetch("SELECT merchant_id FROM system_accounts WHERE tenant_id = 1"
                      " AND purpose = 'bank_clearing'")[0]["merchant_id"]
    after = _merchant_balances(site)
    # The shop is paid weekly: on a Sunday with the rest, else carried to its Sunday.
    due = [m for m in s["merchants"] if m["due_on"] <= str(day)]
    assert {m["merchant_id"] for m in due} == ({4, 5} if day.weekday() == 6 else {4})
    nets = sum(m["net_fen"] for m in due)
    fees = sum(m["fee_fen"] for m in due)
    assert after[bank] - balances_before.get(bank, 0) == nets
    assert after[accounts["fee_merchant_id"]] == fees
    unpaid = site.fetch("SELECT merchant_id FROM settlement_merchants WHERE paid_by IS NULL")
    assert {r["merchant_id"] for r in unpaid} == {m["merchant_id"] for m in s["merchants"]
                                                  if m not in due}
    for m in s["merchants"]:
        mid = m["merchant_id"]
        if m not in due:
            assert after[mid] == balances_before[mid]
            continue
        assert after[mid] == balances_before[mid] - m["sales_fen"]
        # What is left is what is not yet due: the next day's sales.
        not_due = site.fetch("SELECT coalesce(sum(merchant_delta_fen), 0) AS v FROM journal"
                             " WHERE merchant_id = $1 AND committed_at >= $2 AND kind <> 8",
                             mid, end)[0]["v"]
        assert after[mid] == not_due
    transit = site.fetch("SELECT coalesce(sum(main_delta_fen), 0) AS v FROM journal"
                         " WHERE account_id = $1", accounts["transit_account_id"])[0]["v"]
    assert transit == 0
    payout_rows = site.fetch("SELECT count(*) AS n FROM journal WHERE card_no = $1",
                             accounts["transit_card_no"])[0]["n"]
    assert payout_rows == 2 * sum(1 for m in due if m["net_fen"] > 0) + 2 * sum(
        1 for m in due if m["fee_fen"] > 0)

    # Frozen: recomputing gives the frozen figures; a second confirmation, an execution and a
    # direct edit change nothing.
    view = fin_a.ok("GET", f"/tenants/1/settlements/{day}")
    assert (view["status"], view["matches_stored"]) == ("confirmed", True)
    assert view["settlement"] == s
    r = fin_a.post(f"/tenants/1/settlements/{day}/confirm", {})
    assert r.status_code == 409 and r.json()["type"].endswith("/already-confirmed")
    r = fin_b.post(f"/documents/{doc}/execute", {})
    assert r.status_code == 409
    assert site.fetch("SELECT count(*) AS n FROM journal WHERE card_no = $1",
                      accounts["transit_card_no"])[0]["n"] == payout_rows
    with pytest.raises(Exception, match="frozen"):
        site.fetch("UPDATE settlements SET figures = '{}' WHERE tenant_id = 1")
    assert _merchant_balances(site) == after
    assert site.stop() == 0  # a final checkpoint: conservation proved from the database
    audit = site.audit()
    assert audit.conserved, audit.reason


def _merchant_balances(site: AdminSite) -> dict[int, int]:
    return {r["id"]: r["b"] for r in site.fetch(
        "SELECT m.id, m.opening_balance_fen + coalesce((SELECT sum(merchant_delta_fen)"
        " FROM journal j WHERE j.merchant_id = m.id), 0) AS b FROM merchants m")}


def test_bad_days_and_tenants_are_refused_and_change_nothing(day_site: AdminSite) -> None:
    site = day_site
    root = site.api()
    root.ok("POST", "/users", {"username": "fin.c", "password": PASSWORD, "role": "finance",
                               "node_id": site.tenant_node(1)}, 201)
    fin: Api = site.api("fin.c")
    before = site.fetch("SELECT (SELECT count(*) FROM audit_log) AS audit,"
                        " (SELECT count(*) FROM documents) AS docs,"
                        " (SELECT count(*) FROM settlements) AS days")[0]
    today = dt.datetime.now(dt.UTC).date()
    cases = [
        ("GET", "/tenants/4000/settlements/2026-01-01", 404, "not-found"),
        ("POST", "/tenants/4000/settlements/2026-01-01/confirm", 404, "not-found"),
        ("GET", f"/tenants/1/settlements/{today + dt.timedelta(days=3)}", 422, "future-day"),
        ("POST", f"/tenants/1/settlements/{today + dt.timedelta(days=3)}/confirm", 422,
         "future-day"),
        ("GET", f"/tenants/1/settlements/{today + dt.timedelta(days=1)}", None, None),
        ("GET", "/tenants/1/settlements/1999-12-31", 422, "unprocessable"),
        ("GET", "/tenants/1/settlements/2026-02-30", 404, None),  # no such day: no route
    ]
    for method, path, status, slug in cases:
        r = fin.http.request(method, path, json={} if method == "POST" else None)
        if status is None:  # today or tomorrow, depending on the tenant's offset: not closed
            assert r.status_code in (409, 422), r.text
            continue
        assert r.status_code == status, (path, r.text)
        if slug:
            assert r.json()["type"].endswith("/" + slug), r.text
    r = fin.post("/tenants/1/cutover", {"cutover": "24:00"})
    assert r.status_code == 403  # finance does not set the cutover
    r = root.post("/tenants/1/cutover", {"cutover": "24:00"})
    assert r.status_code == 422, r.text
    after = site.fetch("SELECT (SELECT count(*) FROM audit_log) AS audit,"
                       " (SELECT count(*) FROM documents) AS docs,"
                       " (SELECT count(*) FROM settlements) AS days")[0]
    assert (after["docs"], after["days"]) == (before["docs"], before["days"])
    assert after["audit"] - before["audit"] <= 2  # the two log-ins only


@pytest.mark.parametrize(("cutover", "day", "start_local", "end_local"), [
    ("00:00:00", "2026-12-01", "2026-12-01T00:00", "2026-12-02T00:00"),
    ("02:00:00", "2026-12-01", "2026-12-01T02:00", "2026-12-02T02:00"),
    ("11:59:59", "2026-12-01", "2026-12-01T11:59:59", "2026-12-02T11:59:59"),
    ("12:00:00", "2026-12-01", "2026-11-30T12:00", "2026-12-01T12:00"),
    ("22:00:00", "2026-12-01", "2026-11-30T22:00", "2026-12-01T22:00"),
])
def test_a_business_day_is_named_by_the_date_holding_most_of_it(
        cutover: str, day: str, start_local: str, end_local: str) -> None:
    h, m, s = map(int, cutover.split(":"))
    cut = h * 3600 + m * 60 + s
    offset = 8 * 3600
    start, end = day_bounds(dt.date.fromisoformat(day), offset, cut)
    local = dt.timedelta(seconds=offset)
    assert (start + local).replace(tzinfo=None) == dt.datetime.fromisoformat(start_local)
    assert (end + local).replace(tzinfo=None) == dt.datetime.fromisoformat(end_local)
    # Every instant belongs to exactly one day: the start is in it, the end in the next.
    tick = dt.timedelta(microseconds=1)
    assert business_day_of(start, offset, cut) == dt.date.fromisoformat(day)
    assert business_day_of(end - tick, offset, cut) == dt.date.fromisoformat(day)
    assert business_day_of(end, offset, cut) == dt.date.fromisoformat(day) + dt.timedelta(1)


def test_fees_round_half_away_from_zero_and_nets_fall_due_by_cycle() -> None:
    from admin_api.settlement import due_on

    assert fee_of(10_000, 65) == 65
    assert fee_of(77, 65) == 1  # 0.5005 fen
    assert fee_of(76, 65) == 0  # 0.494 fen
    assert fee_of(200, 25) == 1  # 0.5 fen exactly: up
    assert fee_of(-200, 25) == -1  # a day of net refunds: the fee goes back
    assert fee_of(123_456, 0) == 0
    wednesday = dt.date(2026, 12, 2)
    assert due_on(wednesday, "daily") == wednesday
    assert due_on(wednesday, "weekly") == dt.date(2026, 12, 6)
    assert due_on(dt.date(2026, 12, 6), "weekly") == dt.date(2026, 12, 6)
    assert due_on(wednesday, "monthly") == dt.date(2026, 12, 31)
    assert due_on(dt.date(2028, 2, 3), "monthly") == dt.date(2028, 2, 29)


def _end_the_day_soon(site: AdminSite, root: Api) -> tuple[dt.date, dt.datetime]:
    """Every tenant's business day ends 2 s from now (the database's clock): (day, end)."""
    tenant = site.fetch("SELECT utc_offset_s, now() AS now FROM tenants WHERE id = 1")[0]
    offset = tenant["utc_offset_s"]
    local_s = int(tenant["now"].timestamp()) + offset + 2
    clock = f"{local_s % 86400 // 3600:02d}:{local_s % 3600 // 60:02d}:{local_s % 60:02d}"
    for t in (1, 2):
        root.ok("POST", f"/tenants/{t}/cutover", {"cutover": clock})
    end = dt.datetime.fromtimestamp(local_s - offset, dt.UTC)
    return business_day_of(end - dt.timedelta(microseconds=1), offset, local_s % 86400), end


def test_a_payout_cut_short_by_the_switch_resumes_and_moves_money_once(
        day_site: AdminSite) -> None:
    site = day_site
    root = site.api()
    for name in ("fin.d", "fin.e"):
        root.ok("POST", "/users", {"username": name, "password": PASSWORD, "role": "finance",
                                   "node_id": site.tenant_node(1)}, 201)
    fin_d, fin_e = site.api("fin.d"), site.api("fin.e")
    canteen = Till(site, FREE_CANTEEN_TERMINAL)
    for card in _cards(site, 4):
        assert canteen.buy(card, 1_234).code == 0
    canteen.client.close()
    day, _ = _end_the_day_soon(site, root)
    _wait_for("the day to close", lambda: fin_d.get(
        f"/tenants/1/settlements/{day}").status_code == 200)
    pending = fin_d.ok("POST", f"/tenants/1/settlements/{day}/confirm", {})
    doc = pending["document_id"]
    assert site.switch is not None
    port = site.switch.port
    assert site.stop() == 0
    _wait_for("the API to see the switch gone", lambda: "onecard_admin_switch_connected 0.0"
              in root.get("/metrics").text)
    r = fin_e.post(f"/documents/{doc}/approve", {})
    assert r.status_code == 503, r.text
    assert f"/documents/{doc}/execute" in r.json()["detail"]
    assert fin_e.ok("GET", f"/documents/{doc}")["status"] == "approved"
    assert fin_e.ok("GET", f"/tenants/1/settlements/{day}")["status"] == "confirmed"
    lines = site.fetch("SELECT count(*) AS n FROM settlement_payouts WHERE document_id = $1",
                       doc)[0]["n"]
    assert lines == 2  # merchant 4's net, in one chunk of two legs (no fee)

    site.start(extra_env={"ONECARD_PORT": str(port)})
    done = _wait_for("the payout to finish", lambda: (
        lambda r: r.json() if r.status_code == 200 else None)(
        fin_e.post(f"/documents/{doc}/execute", {})))
    assert done["status"] == "executed", done
    assert fin_e.post(f"/documents/{doc}/execute", {}).status_code == 409
    card = site.fetch("SELECT transit_card_no FROM settlement_accounts WHERE tenant_id = 1"
                      )[0]["transit_card_no"]
    rows = site.fetch("SELECT kind, amount_fen FROM journal WHERE card_no = $1 AND code = 0"
                      " ORDER BY lsn", card)
    net = pending["settlement"]["totals"]["net_fen"]
    assert [(r["kind"], r["amount_fen"]) for r in rows] == [(8, net), (9, net)]
    merchant = site.fetch("SELECT coalesce(sum(merchant_delta_fen), 0) AS b FROM journal"
                          " WHERE merchant_id = 4")[0]["b"]
    assert merchant == 0  # everything it sold that day was paid out, nothing more


def test_a_rejected_confirmation_is_asked_again_and_nothing_is_paid_meanwhile(
        day_site: AdminSite) -> None:
    site = day_site
    root = site.api()
    for name in ("fin.f", "fin.g"):
        root.ok("POST", "/users", {"username": name, "password": PASSWORD, "role": "finance",
                                   "node_id": site.tenant_node(1)}, 201)
    fin_f, fin_g = site.api("fin.f"), site.api("fin.g")
    day, _ = _end_the_day_soon(site, root)
    first = _wait_for("the day to close", lambda: (
        lambda r: r.json() if r.status_code == 200 else None)(
        fin_f.post(f"/tenants/1/settlements/{day}/confirm", {"comment": "first"})))
    assert fin_g.ok("POST", f"/documents/{first['document_id']}/reject",
                    {"comment": "not yet"})["status"] == "rejected"
    r = root.post(f"/documents/{first['document_id']}/revise",
                   {"title": "x", "lines": [{"person_id": 1, "amount_fen": 1}]})
    assert r.status_code == 409, r.text
    assert fin_f.ok("GET", f"/tenants/1/settlements/{day}")["status"] == "pending"
    second = fin_g.ok("POST", f"/tenants/1/settlements/{day}/confirm", {"comment": "again"})
    assert second["document_id"] != first["document_id"]
    assert second["settlement"] == first["settlement"]
    assert site.fetch("SELECT count(*) AS n FROM settlement_payouts")[0]["n"] == 0
    done = fin_f.ok("POST", f"/documents/{second['document_id']}/approve", {})
    assert done["status"] == "executed", done  # a quiet day: nothing to pay
    actions = [r["action"] for r in site.fetch(
        "SELECT action FROM audit_log WHERE entity = 'settlement' ORDER BY id")]
    assert actions == ["settlement.request", "settlement.request", "settlement.confirm"]


def test_a_days_subsidy_issued_and_spent_match_the_journal(day_site: AdminSite) -> None:
    """A subsidy batch (drafted by the card office, approved twice by finance) is the day's
    subsidy issued; purchases at the canteen (subsidy wallet first) and the shop (cash only)
    spend some of it. Both figures are checked against sums over the journal written here
    independently: the wallets' side (subsidy_delta_fen) rather than the merchants'."""
    site = day_site
    root = site.api()
    campus = site.tenant_node(1)
    for name, role in (("office.s", "card_office"), ("fin.s1", "finance"),
                       ("fin.s2", "finance")):
        root.ok("POST", "/users", {"username": name, "password": PASSWORD, "role": role,
                                   "node_id": campus}, 201)
    office, fin1, fin2 = site.api("office.s"), site.api("fin.s1"), site.api("fin.s2")
    people = site.fetch(
        "SELECT p.id, c.card_no FROM people p JOIN accounts a ON a.id = p.account_id"
        " JOIN cards c ON c.account_id = a.id WHERE a.status = 0 AND c.status = 0"
        " AND a.tenant_id = 1 AND a.class_id = 2 ORDER BY p.id LIMIT 3")
    assert len(people) == 3
    amounts = (3_000, 2_500, 1_200)
    doc = office.ok("POST", "/documents", {
        "doc_type": "subsidy_batch", "title": "December meal subsidy",
        "lines": [{"person_id": p["id"], "amount_fen": a} for p, a in zip(people, amounts,
                                                                           strict=True)]})
    office.ok("POST", f"/documents/{doc['id']}/submit", {})
    fin1.ok("POST", f"/documents/{doc['id']}/approve", {})
    done = fin2.ok("POST", f"/documents/{doc['id']}/approve", {})
    assert done["status"] == "executed", done
    assert [line["result"] for line in done["lines"]] == ["APPROVED"] * 3
    canteen, shop = Till(site, FREE_CANTEEN_TERMINAL), Till(site, SUPERMARKET_TERMINAL)
    for p in people:
        assert canteen.buy(p["card_no"], 1_000).code == 0  # the subsidy wallet first
        assert shop.buy(p["card_no"], 300).code == 0  # the cash wallet only
    assert canteen.reverse(1, people[0]["card_no"]).code == 0  # back to the subsidy wallet
    for till in (canteen, shop):
        till.client.close()

    day, end = _end_the_day_soon(site, root)
    tenant = site.fetch("SELECT utc_offset_s, cutover_s FROM tenants WHERE id = 1")[0]
    start, end_at = day_bounds(day, tenant["utc_offset_s"], tenant["cutover_s"])
    assert end_at == end
    view = _wait_for("the day to close", lambda: (
        lambda r: r.json() if r.status_code == 200 else None)(
        fin1.get(f"/tenants/1/settlements/{day}")))
    s = view["settlement"]
    assert s["balanced"] is True

    fund = site.fetch("SELECT merchant_id FROM system_accounts WHERE tenant_id = 1"
                      " AND purpose = 'subsidy_fund'")[0]["merchant_id"]
    issued = site.fetch(
        "SELECT count(*) FILTER (WHERE kind = 8) AS in_n,"
        " coalesce(sum(subsidy_delta_fen) FILTER (WHERE kind = 8), 0) AS in_fen,"
        " count(*) FILTER (WHERE kind = 9) AS out_n,"
        " coalesce(-sum(subsidy_delta_fen) FILTER (WHERE kind = 9), 0) AS out_fen"
        " FROM journal WHERE merchant_id = $1 AND code = 0 AND committed_at >= $2"
        " AND committed_at < $3", fund, start, end)[0]
    assert (issued["in_n"], issued["in_fen"], issued["out_n"], issued["out_fen"]) == (
        3, sum(amounts), 0, 0)
    assert s["subsidy"]["issued"] == {"in_count": 3, "in_fen": sum(amounts), "out_count": 0,
                                      "out_fen": 0}
    spent = site.fetch(
        "SELECT coalesce(-sum(subsidy_delta_fen), 0) AS v FROM journal WHERE tenant_id = 1"
        " AND code = 0 AND kind IN (1, 2, 5) AND committed_at >= $1 AND committed_at < $2",
        start, end)[0]["v"]
    # Each card had at least 1,000 fen of subsidy after the batch: two canteen purchases
    # were paid from it in full, one was reversed; the shop takes cash only.
    assert spent == 2_000
    assert s["subsidy"]["spent_fen"] == spent
    # The float moved by what was issued less what was spent (and the cash side by its own).
    assert s["float_close"]["subsidy_fen"] - s["float_open"]["subsidy_fen"] == (
        sum(amounts) - spent)
