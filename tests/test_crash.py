"""SIGKILL the switch mid-stream and prove that acknowledged means durable.

Many terminals pipeline purchases, reversals and inquiries; the switch is killed with SIGKILL
once thousands of answers have been seen; it is restarted. Then: every answer a terminal saw is
in the journal with the same result; nothing is in the journal twice; repeating every request
that was in flight (and a sample of answered ones) returns the original answer; and after a
graceful stop every balance equals its opening balance plus its journal and all balances sum to
zero (computed in SQL from the database).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import asyncpg

from loadtest import CardPool, LoadGenerator
from onecard.seed import SeedPlan
from protocols import ocp
from tests.switch_site import Site, drive_until

ANSWERS_BEFORE_KILL = 4_000


def _result_of(ev: Any) -> tuple[int, int, int]:
    """(code, amount, balance) of an answer; amount is -1 for inquiries."""
    if isinstance(ev, ocp.BalanceResult):
        return (ev.code, -1, ev.balance_fen)
    return (ev.code, ev.amount_fen, ev.balance_fen)


async def _drive_until_killed(site: Site) -> LoadGenerator:
    pool = CardPool(cards=site.seed.cards, amount_fen_min=1, amount_fen_max=400,
                    reversal_share=0.05, inquiry_share=0.02)

    async def kill() -> None:
        assert site.switch is not None and site.switch.proc is not None
        site.switch.proc.send_signal(signal.SIGKILL)

    # Pipelining: four requests outstanding per terminal when the switch dies.
    gen = await drive_until(site, pool, depth=4, answers=ANSWERS_BEFORE_KILL, then=kill)
    assert site.switch is not None
    site.switch.wait(30)
    return gen


async def _journal(dsn: str) -> dict[tuple[int, int], asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT terminal_id, txn_seq, kind, code, amount_fen, main_fen, subsidy_fen"
            " FROM journal"
        )
    finally:
        await conn.close()
    return {(r["terminal_id"], r["txn_seq"]): r for r in rows}


def test_sigkill_mid_stream_loses_nothing_acknowledged_and_doubles_nothing(db_dsn: str) -> None:
    site = Site(db_dsn, SeedPlan(accounts=1_000, terminals=40, main_fen_max=50_000,
                                 with_limits=False))
    site.start()
    gen = asyncio.run(_drive_until_killed(site))
    answers = gen.answers
    in_flight = gen.unanswered()
    assert len(answers) >= ANSWERS_BEFORE_KILL
    assert in_flight, "the kill should catch requests in flight"

    journal = asyncio.run(_journal(db_dsn))
    # 1. Acknowledged means durable: every answer seen is in the journal, with the same result.
    for key, ev in answers.items():
        row = journal.get(key)
        assert row is not None, f"answered {key} but not journaled"
        assert row["code"] == ev.code  # type: ignore[attr-defined]
        if not isinstance(ev, ocp.BalanceResult):
            # The answer carries what was charged (0 on a decline); the journal the request.
            charged = row["amount_fen"] if row["code"] == 0 else 0
            assert charged == ev.amount_fen  # type: ignore[attr-defined]
        assert row["main_fen"] + row["subsidy_fen"] == ev.balance_fen  # type: ignore[attr-defined]

    # 2. Restart; repeat every in-flight request and a sample of answered ones.
    site.start()
    by_terminal: dict[int, list[tuple[int, Any]]] = {}
    for (tid, seq), request in in_flight.items():
        by_terminal.setdefault(tid, []).append((seq, request))
    for i, ((tid, seq), _) in enumerate(answers.items()):
        if i % 20 == 0:
            t = next(t for t in gen.terms if t.spec.terminal_id == tid)
            by_terminal.setdefault(tid, []).append((seq, t.requests[seq]))
    repeated: dict[tuple[int, int], Any] = {}
    for tid, requests in by_terminal.items():
        client = site.client(tid, last_txn_seq=max(s for s, _ in requests))
        for seq, request in sorted(requests, key=lambda r: r[0]):
            repeated[(tid, seq)] = client.request(request)
        client.close()
    after = asyncio.run(_journal(db_dsn))
    for key, ev in repeated.items():
        if key in answers:
            assert _result_of(ev) == _result_of(answers[key]), key
        row = after[key]  # in flight: journaled now exactly once, before or after the crash
        assert ev.code == row["code"]
        if key in journal:  # committed before the crash: the original answer, not a new one
            assert ev.balance_fen == journal[key]["main_fen"] + journal[key]["subsidy_fen"]

    # 3. Graceful stop writes a checkpoint; conservation is proved from the database.
    assert site.stop() == 0
    report = site.audit()
    assert report.duplicate_requests == 0
    assert report.conserved, report
    assert report.journal_rows_after_checkpoint == 0
