"""The benchmark's conventional baseline (onecard/conventional.py: one SQL transaction per
purchase, a server of its own) really works, so the ratios in docs/benchmarks.md compare against
something that does the job; and the switch carries none of it."""

from __future__ import annotations

from pathlib import Path

import asyncpg

import switch
from onecard.conventional import SETUP_SQL, ConventionalProcess
from onecard.seed import SeedPlan
from protocols import ocp
from tests.ocp_client import OcpClient
from tests.switch_site import FREE_CANTEEN_TERMINAL, Site, run


def test_conventional_baseline_debits_the_balance_row_and_journals_apart(db_dsn: str) -> None:
    site = Site(db_dsn, SeedPlan(accounts=50, terminals=5, with_limits=False))

    async def setup() -> None:
        conn = await asyncpg.connect(db_dsn)
        try:
            await conn.execute(SETUP_SQL)
            await conn.execute(
                "INSERT INTO conv_balances SELECT id, opening_main_fen FROM accounts"
            )
        finally:
            await conn.close()

    run(setup())
    server = ConventionalProcess(db_dsn, site.master.hex(), args=["--pool-size", "4"]).start()
    try:
        card = site.card(class_id=1, min_main=1_000)
        c = OcpClient(server.host, server.port, FREE_CANTEEN_TERMINAL,
                      site.key(FREE_CANTEEN_TERMINAL))
        assert c.sign_on(0).code == 0
        ok = c.request(ocp.Purchase(1, card["card_no"], 300, 0))
        assert (ok.code, ok.amount_fen, ok.main_fen) == (0, 300, card["main"] - 300)
        broke = c.request(ocp.Purchase(2, card["card_no"], 10**6, 0))
        assert (broke.code, broke.amount_fen) == (ocp.ResponseCode.INSUFFICIENT_FUNDS, 0)
        assert c.request(ocp.Purchase(3, 42, 300, 0)).code == ocp.ResponseCode.UNKNOWN_CARD
        c.close()
    finally:
        assert server.stop() == 0
    (row,) = site.fetch("SELECT main_fen FROM conv_balances WHERE account_id = $1",
                        card["account_id"])
    assert row["main_fen"] == card["main"] - 300
    assert len(site.fetch("SELECT 1 FROM conv_journal")) == 3
    assert site.fetch("SELECT 1 FROM journal") == []  # the real journal never sees its rows


def test_the_switch_has_no_conventional_mode() -> None:
    """The baseline lives in onecard/, not in the production runtime's hot path."""
    assert "conventional_pool_size" not in switch.SwitchSettings.__struct_fields__
    assert not (Path(switch.__file__).parent / "_conventional.py").exists()
