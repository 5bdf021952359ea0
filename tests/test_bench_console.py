"""`onecard bench`'s console phase (onecard/bench_console.py, onecard/console_probe.py): its
pure parts (percentiles, the live-lag matcher, the server-sent events reader, the figures) and
one short real run against a seeded database: the admin API under 20 operators and 50 live
streams while the tills buy, every key filled from what was measured. No timing is asserted
(shared machines); docs/benchmarks.md reports the figures."""

from __future__ import annotations

import os

import asyncpg
import httpx

from onecard import bench
from onecard.bench_console import (
    CONSOLE_OPERATORS,
    CONSOLE_STREAMS,
    ConsoleBench,
    figures,
    run_console_phase,
)
from onecard.console_probe import ConsoleLoad, live_lags, percentile, sse_events
from onecard.harness import run_fast
from onecard.seed import CANTEEN_FREE, SeedPlan, seed_site


def test_percentile_is_the_nearest_rank() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([7.0], 0.99) == 7.0
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(reversed(values), 1.0) == 100.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0


def test_live_lag_is_until_the_first_event_that_counts_the_purchase() -> None:
    # Events (arrival, lsn counted up to) of one stream; purchases (answered, their lsn).
    events = [(10.0, 100), (11.0, 105), (12.0, 130)]
    purchases = [(10.2, 101), (10.5, 105), (11.1, 120), (11.9, 131)]
    # 101 and 105 are counted by the event at 11.0; 120 by the one at 12.0; 131 by none.
    assert live_lags(purchases, events) == [800.0, 500.0, 900.0]
    # An event that arrived before the till read its answer: 0, never negative.
    assert live_lags([(11.5, 130)], [(11.4, 130)]) == [0.0]
    # Events out of order of arrival: the earliest that counts it.
    assert live_lags([(1.0, 5)], [(3.0, 9), (2.0, 6)]) == [1000.0]
    assert live_lags([(1.0, 5)], []) == []


def test_the_event_stream_reader_takes_events_and_skips_comments() -> None:
    body = (b": keep-alive\n\nevent: sales\nid: 42\nretry: 1000\ndata: {\"a\": 1}\n\n"
            b"event: switch\ndata: {\"connected\": true}\n\n")

    async def read() -> list[tuple[str, str | None, str]]:
        transport = httpx.MockTransport(lambda request: httpx.Response(
            200, content=body, headers={"content-type": "text/event-stream"}))
        async with httpx.AsyncClient(transport=transport) as client, \
                client.stream("GET", "http://x/live") as r:
            return [(e.event, e.id, e.data) async for e in sse_events(r)]

    assert run_fast(read()) == [("sales", "42", '{"a": 1}'),
                                ("switch", None, '{"connected": true}')]


def test_the_figures_come_from_the_samples() -> None:
    load = ConsoleLoad(requests=300, failed=1, seconds=2.0,
                       page_ms={"people": [1.0, 2.0, 3.0], "sales": [10.0]},
                       live_lags_ms=[100.0, 200.0, 900.0], streams_open=50,
                       stream_events=120, probe_purchases=20)
    c = figures(load, rate=1000.0, operators=20, admin_cpu_pct=55.55, without=(1.0, 4.0),
                with_console=(1.2, 6.0))
    assert c.console_requests_per_s == 150.0
    assert (c.console_p50_ms, c.console_p99_ms) == (2.0, 10.0)  # of 1, 2, 3, 10
    assert c.console_pages == {"people": {"p50_ms": 2.0, "p99_ms": 3.0, "n": 3},
                               "sales": {"p50_ms": 10.0, "p99_ms": 10.0, "n": 1}}
    assert (c.console_live_lag_p50_ms, c.console_live_lag_p99_ms) == (200.0, 900.0)
    assert c.purchase_p99_ratio == 1.5 and c.admin_cpu_pct == 55.5
    text = bench.summary(_result(c), None)
    assert "console: 20 operators, 150 requests/s" in text
    assert "6.00 ms with the console, 4.00 without" in text
    assert "HURTS" not in text
    hurt = figures(load, rate=1000.0, operators=20, admin_cpu_pct=1.0, without=(1.0, 4.0),
                   with_console=(1.0, 8.0))
    assert "THE CONSOLE HURTS THE TILLS" in bench.summary(_result(hurt), None)


def _result(c: ConsoleBench) -> bench.BenchResult:
    from tests.test_machine_load import _result as base

    return base(console=c, console_requests_per_s=c.console_requests_per_s,
                console_p50_ms=c.console_p50_ms, console_p99_ms=c.console_p99_ms,
                console_live_streams=c.console_live_streams,
                purchase_p99_ms_with_console=c.purchase_p99_ms_with_console,
                purchase_p99_ms_without_console=c.purchase_p99_ms_without_console)


def test_a_short_console_phase_measures_operators_streams_and_the_tills(db_dsn: str) -> None:
    async def run() -> tuple[ConsoleBench, int]:
        conn = await asyncpg.connect(db_dsn)
        try:
            seed = await seed_site(conn, SeedPlan(
                accounts=2000, terminals=12, lost_share=0, frozen_share=0, closed_share=0,
                replaced_share=0, main_fen_max=100_000_000, subsidy_fen_max=0,
                with_limits=False))
            await conn.execute("UPDATE terminals SET merchant_id = $1", CANTEEN_FREE)
        finally:
            await conn.close()
        result = await run_console_phase(db_dsn, os.urandom(32), seed.terminals, seed.cards,
                                         2.0, 400.0)
        conn = await asyncpg.connect(db_dsn)
        try:  # the probe till's purchases were journaled
            probe = await conn.fetchval("SELECT count(*) FROM journal WHERE terminal_id = $1",
                                        seed.terminals[0])
        finally:
            await conn.close()
        return result, probe

    c, probe = run_fast(run())
    assert c.operators == CONSOLE_OPERATORS and c.purchase_rate == 200.0
    assert c.console_live_streams == CONSOLE_STREAMS
    assert c.console_failed_pages == 0
    assert c.console_requests_per_s > 0 and c.console_p50_ms > 0
    assert c.console_p99_ms >= c.console_p50_ms
    assert set(c.console_pages) == {"people", "person", "sales", "reports", "merchants",
                                    "approvals"}
    assert probe > 0 and c.console_live_lag_samples > 0
    assert 0 <= c.console_live_lag_p50_ms <= c.console_live_lag_p99_ms < 10_000
    assert c.admin_cpu_pct > 0
    assert c.purchase_p99_ms_with_console > 0 and c.purchase_p99_ms_without_console > 0
