"""`onecard demo` on a short burst: its `bank` object (issue 11) is right and from the database,
and its `console` object (the web console walked over HTTP by every demo log-in) is whole.

The demo runs kiosk top-ups against the bank simulator (one declined, one timed out and
reversed), a cutover in the middle of the purchases, the day's settlement checked against
independent sums over the journal, and a reconciliation with the bank's own file of that day
plus one injected line. Every figure is read back from the demo's database after it ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg

from onecard.console_probe import PAGES
from onecard.demo import DEMO_DATABASE, DEMO_KIOSK_TOPUPS, DEMO_KIOSK_TOPUPS_BEFORE
from onecard.demo_finance import INJECTED_RRN
from onecard.demo_users import DEMO_USERS
from onecard.harness import run_fast, with_database
from tests import pg


def test_a_short_demo_tops_up_settles_and_reconciles_with_exactly_the_injected_exception(
        pg_server: pg.TestServer, tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    run = subprocess.run(
        [sys.executable, "-m", "onecard", "demo", "--seconds", "2", "--accounts", "2000",
         "--terminals", "10", "--doors", "2", "--dsn", pg_server.admin_dsn, "--json", str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads(out.read_text())
    bank = summary["bank"]
    assert bank["topups_approved"] == DEMO_KIOSK_TOPUPS
    assert bank["topups_declined"] == 2  # one by the bank, one mistyped PIN by the switch
    assert bank["topups_unknown"] == 1
    assert bank["reversals_sent"] == 1
    assert bank["reversals_pending"] == 0
    assert bank["bank_exceptions_open"] == 0
    assert bank["settlement_balanced"] is True
    assert summary["settlement"]["mismatches"] == []
    # The day before the cutover held the kiosk's first top-ups: all matched, and the one
    # exception is the injected line.
    assert bank["reconciliation_matched"] == DEMO_KIOSK_TOPUPS_BEFORE
    assert bank["reconciliation_exceptions"] == 1
    assert bank["reconciliation_injected_found"] is True
    rec = summary["reconciliation"]
    assert rec["matched_agrees"] is True and rec["lines"] == DEMO_KIOSK_TOPUPS_BEFORE + 1
    assert "SETTLEMENT BALANCED: yes" in run.stdout
    assert f"{DEMO_KIOSK_TOPUPS_BEFORE} matched, 1 exception(s)" in run.stdout

    async def check() -> None:  # the same figures, straight from the demo's database
        conn = await asyncpg.connect(with_database(pg_server.admin_dsn, DEMO_DATABASE))
        try:
            assert await conn.fetchval(
                "SELECT count(*) FROM bank_topups WHERE state = 'approved'") == DEMO_KIOSK_TOPUPS
            assert await conn.fetchval(
                "SELECT count(*) FROM bank_advices WHERE state = 'pending'") == 0
            assert await conn.fetchval("SELECT count(*) FROM bank_topup_refusals") == 1
            found = await conn.fetch("SELECT rrn, kind FROM reconciliation_exceptions")
            assert [(r["rrn"], r["kind"]) for r in found] == [(INJECTED_RRN, "bank_only")]
            # The late top-up was never credited: approved top-ups are the only kiosk credits.
            assert await conn.fetchval(
                "SELECT count(*) FROM journal WHERE kind = 8 AND code = 0") == DEMO_KIOSK_TOPUPS
        finally:
            await conn.close()

    run_fast(check())
    console = summary["console"]  # the web console, walked over HTTP by every demo log-in
    assert_console_section(console)
    assert "CONSOLE CHECKS: passed" in run.stdout


def assert_console_section(console: dict[str, Any]) -> None:
    """The demo's `console` object agrees with itself and with the demo's log-ins."""
    assert console["pages"] == [p.name for p in PAGES]
    assert set(console["roles"]) == {user for user, _, _ in DEMO_USERS}
    assert set(console["matrix"]) == set(console["roles"])
    for user, view in console["roles"].items():
        row = console["matrix"][user]
        assert set(row) == set(console["pages"])
        assert sorted(view["allowed"]) == sorted(p for p, s in row.items() if s == 200)
        assert sorted(view["refused"]) == sorted(p for p, s in row.items() if s in (401, 403))
        assert view["other"] == {p: s for p, s in row.items() if s not in (200, 401, 403)}
        assert all(s == 404 for s in view["other"].values()), (user, view["other"])
    roles = console["roles"]
    # What the roles allow, as the API answered it: the phone pages are the cardholder's and
    # the parent's only; the card office searches people but is refused the finance page.
    assert roles["student"]["allowed"] == ["phone"] and roles["parent"]["allowed"] == ["phone"]
    assert "people" in roles["card.office"]["allowed"]
    assert "finance" in roles["card.office"]["refused"]
    assert "phone" in roles["campus.admin"]["refused"]
    # The other park's clerk: none of the campus's people, and the campus's person is a 404.
    assert console["other_park_campus_people"] == 0
    assert console["own_park_people"] > 0
    assert console["matrix"]["east.admin"]["person"] == 404
    times = [t for page in console["first_data_by_page"].values() for t in page.values()]
    assert all(t > 0 for t in times)
    assert console["first_data_max_ms"] == max(
        page["max_ms"] for page in console["first_data_by_page"].values())
    assert 0 <= console["first_data_p50_ms"] <= console["first_data_max_ms"]
    assert 0 <= console["live_lag_ms"] <= console["live_lag_limit_ms"]
