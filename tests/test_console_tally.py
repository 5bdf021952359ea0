"""The sales page's and the big screen's shared tally (admin_api/console/_tally.py) against a
full count of the journal: after each wave of purchases, declines, reversals and top-ups,
what the routes show is what a count of the whole day shows. Real switch, admin API and
PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from protocols import ocp
from tests.admin_site import AdminSite, Till, site_with_switch

UNKNOWN_CARD = 9_999_000_000_001


@pytest.fixture(scope="module")
def site(pg_server: Any, migrated_template: str) -> Iterator[AdminSite]:
    yield from site_with_switch(pg_server.new_database(template=migrated_template))


def _full_count(site: AdminSite, day: str) -> dict[str, Any]:
    """The day's figures of tenant 1 counted from scratch (the query each poll used to run)."""
    [t] = site.fetch("SELECT utc_offset_s FROM tenants WHERE id = 1")
    start = f"('{day}'::date::timestamp AT TIME ZONE 'UTC') - make_interval(secs => $1)"
    where = f"committed_at >= {start} AND committed_at < {start} + interval '1 day'"
    by_hour = site.fetch(
        "SELECT ((floor(date_part('epoch', committed_at))::bigint + $1) % 86400 / 3600)::int"
        " AS hour, count(*) FILTER (WHERE code = 0 AND kind IN (1, 5)) AS n,"
        " count(*) FILTER (WHERE code <> 0 AND kind = 1) AS declined,"
        " coalesce(sum(merchant_delta_fen), 0)::bigint AS amount FROM journal"
        f" WHERE merchant_tenant_id = 1 AND kind IN (1, 2, 5) AND {where} GROUP BY 1",
        t["utc_offset_s"])
    [top] = site.fetch(
        "SELECT count(*) AS n, coalesce(sum(amount_fen), 0)::bigint AS fen FROM journal"
        f" WHERE tenant_id = 1 AND kind = 8 AND code = 0 AND {where}", t["utc_offset_s"])
    return {"hours": {r["hour"]: (r["n"], r["declined"], r["amount"]) for r in by_hour
                      if r["n"] or r["declined"] or r["amount"]},
            "topups": (top["n"], top["fen"])}


def _shown(api: Any) -> dict[str, Any]:
    sales = api.ok("GET", "/tenants/1/sales/hourly")
    screen = api.ok("GET", "/tenants/1/screen")
    assert (screen["purchases"], screen["declined"], screen["amount_fen"]) == (
        sales["purchases"], sales["declined"], sales["amount_fen"])
    return {"day": sales["day"],
            "hours": {h["hour"]: (h["purchases"], h["declined"], h["amount_fen"])
                      for h in sales["hours"]
                      if h["purchases"] or h["declined"] or h["amount_fen"]},
            "topups": (screen["topups"], screen["topup_fen"])}


def test_the_shared_tally_counts_what_a_full_count_counts(site: AdminSite) -> None:
    api = site.api()
    first = _shown(api)  # the tally of today is built here, then only added to
    assert {k: first[k] for k in ("hours", "topups")} == _full_count(site, first["day"])
    till = Till(site)
    card = site.card(min_main=10_000)
    person = site.fetch("SELECT id FROM people WHERE account_id = $1",
                        card["account_id"])[0]["id"]
    for wave in range(3):
        for n in range(5):
            assert till.buy(card["card_no"], 100 + wave * 10 + n).code == 0
        assert till.buy(UNKNOWN_CARD, 100).code == ocp.ResponseCode.UNKNOWN_CARD
        till.seq += 1
        rev = till.client.request(ocp.Reversal(till.seq, till.seq - 2, UNKNOWN_CARD, 100))
        assert rev.code != 0  # a reversal of a declined purchase moves nothing
        r = api.http.post(f"/people/{person}/topups", json={"amount_fen": 500 + wave},
                          headers={"Idempotency-Key": str(uuid.uuid4())})
        assert r.status_code in (200, 201), r.text
        deadline = time.monotonic() + 30
        while True:  # the top-up is journaled by the switch: wait until counted in full
            shown, full = _shown(api), _full_count(site, first["day"])
            if {k: shown[k] for k in ("hours", "topups")} == full or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # a poll's pace
        assert {k: shown[k] for k in ("hours", "topups")} == full, wave
        assert shown["topups"][0] >= first["topups"][0] + wave + 1
