"""Backpressure is per request: a burst far past the pipeline limit, sent in one write, is
decided PIPELINE_REQUESTS_MAX at a time, and no group commit holds more than journal_batch_max
rows (docs/architecture.md, "Backpressure")."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from protocols import ocp
from switch import Journal, limits, recover
from tests.switch_site import FREE_CANTEEN_TERMINAL, SUPERMARKET_TERMINAL, Site, free_port

BURST = 2_000
BATCH_MAX = 16


def _histogram(port: int, name: str) -> dict[str, float]:
    """The buckets of one histogram (by `le`), and its "count"."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == f"{name}_bucket":
                out[s.labels["le"]] = s.value
            elif s.name == f"{name}_count":
                out["count"] = s.value
    return out


def test_a_burst_in_one_write_is_decided_within_the_pipeline_and_batch_limits(
    db_dsn: str,
) -> None:
    metrics_port = free_port()
    site = Site(db_dsn)
    site.start(extra_env={"ONECARD_JOURNAL_BATCH_MAX": str(BATCH_MAX),
                          "ONECARD_METRICS_PORT": str(metrics_port)})
    try:
        card = site.card()["card_no"]
        tills = [site.client(FREE_CANTEEN_TERMINAL), site.client(SUPERMARKET_TERMINAL)]
        for till in tills:
            burst = [till.conn.send(ocp.Purchase(seq, card, 1)) for seq in range(1, BURST + 1)]
            till.send_raw(b"".join(burst))  # one write each: 2,000 frames, ~120 KB
        for till in tills:
            answered = [till.next_message() for _ in range(BURST)]
            assert all(isinstance(a, ocp.PurchaseResult) for a in answered), answered[:3]
            assert sorted(a.txn_seq for a in answered) == list(range(1, BURST + 1))
            till.close()

        commits = site.fetch(
            "SELECT xmin::text AS commit, count(*) AS rows FROM journal"
            " WHERE terminal_id = ANY($1) GROUP BY 1",
            [FREE_CANTEEN_TERMINAL, SUPERMARKET_TERMINAL],
        )
        assert sum(c["rows"] for c in commits) == 2 * BURST  # each request journaled once
        assert max(c["rows"] for c in commits) <= BATCH_MAX

        limit = f"{float(limits.PIPELINE_REQUESTS_MAX)}"
        paused = _histogram(metrics_port, "onecard_session_paused_outstanding_requests")
        assert paused["count"] > 0  # the burst did stop the reading
        assert paused[limit] == paused["count"], paused  # never past PIPELINE_REQUESTS_MAX
        batches = _histogram(metrics_port, "onecard_journal_batch_rows")
        assert batches[f"{float(BATCH_MAX)}"] == batches["count"], batches
    finally:
        site.stop()


class _Session:
    """What the journal needs of a session: collects the answers."""

    def __init__(self) -> None:
        self.answered: list[int] = []

    def answer_nowait(self, outcome: Any) -> None:
        self.answered.append(outcome.txn_seq)

    def flush(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_the_journal_never_commits_more_than_batch_max_rows(db_dsn: str) -> None:
    site = Site(db_dsn)
    card = site.card()["card_no"]

    async def go() -> None:
        conn = await asyncpg.connect(db_dsn)
        try:
            ledger, _, _ = await recover(conn, 1_000, 64)
            journal = Journal(conn, batch_max=BATCH_MAX)
            session = _Session()
            decided = [ledger.purchase(FREE_CANTEEN_TERMINAL, seq, card, 4, 1, 0)
                       for seq in range(1, 41)]
            for o in decided:
                journal.submit(session, o)
            # A repeat of the last request waits for the commit that holds its row.
            journal.answer_when_durable(session, ledger.purchase(
                FREE_CANTEEN_TERMINAL, 40, card, 4, 1, 0))
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(journal.run())
                async with asyncio.timeout(60):
                    await journal.drain()
                writer.cancel()
            assert session.answered == [*range(1, 41), 40]
            assert journal.stats.batches == 3  # 16 + 16 + 8
        finally:
            await conn.close()

    asyncio.run(go())
    commits = site.fetch("SELECT xmin::text, count(*) AS rows FROM journal GROUP BY 1")
    assert sorted(c["rows"] for c in commits) == [8, 16, 16]
