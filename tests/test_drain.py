"""SIGTERM under load drains: stop reading, commit what was decided, answer it, checkpoint."""

from __future__ import annotations

import asyncio
import signal

from loadtest import CardPool, LoadGenerator
from onecard.seed import SeedPlan
from tests.switch_site import Site, drive_until


async def _drive_then_stop(site: Site) -> LoadGenerator:
    async def terminate() -> None:
        assert site.switch is not None and site.switch.proc is not None
        site.switch.proc.send_signal(signal.SIGTERM)

    pool = CardPool(cards=site.seed.cards, amount_fen_min=1, amount_fen_max=100)
    return await drive_until(site, pool, depth=8, answers=3_000, then=terminate)


def test_sigterm_answers_everything_it_journaled_and_checkpoints(db_dsn: str) -> None:
    site = Site(db_dsn, SeedPlan(accounts=500, terminals=30, with_limits=False))
    site.start()
    gen = asyncio.run(_drive_then_stop(site))
    assert site.switch is not None and site.switch.wait(60) == 0
    log = site.switch.log_tail(400)
    assert "switch.draining" in log and "switch.stopped" in log
    journaled = {(r["terminal_id"], r["txn_seq"]) for r in site.fetch(
        "SELECT terminal_id, txn_seq FROM journal")}
    answered = set(gen.answers)
    # Everything answered is durable, and everything durable was answered before the close:
    # a drained switch leaves no decided request unanswered.
    assert answered <= journaled
    assert journaled == answered
    report = site.audit()
    assert report.conserved and report.journal_rows_after_checkpoint == 0, report
