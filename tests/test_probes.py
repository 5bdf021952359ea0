"""The probes that tell where latency goes (issue 14): the disk's flush latency, run-queue wait
from schedstat, and the once-a-second sampler of processes and PostgreSQL."""

from __future__ import annotations

import os
import time

import asyncpg

from onecard.probes import Sampler, fsync_probe, run_queue_ms
from tests.switch_site import run


def test_the_fsync_probe_times_real_flushes(tmp_path: os.PathLike[str]) -> None:
    probe = fsync_probe(tmp_path, seconds=0.3)
    assert probe["calls"] > 0
    assert 0 < probe["p50_ms"] <= probe["p99_ms"] <= probe["p999_ms"] <= probe["max_ms"]
    assert os.listdir(tmp_path) == []  # its scratch file is gone


def test_run_queue_counts_this_process_and_nothing_for_a_gone_one() -> None:
    cpu0, _ = run_queue_ms(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    cpu1, wait1 = run_queue_ms(os.getpid())
    assert cpu1 - cpu0 >= 40 and wait1 >= 0
    assert run_queue_ms(2**22 + 12345) == (0.0, 0.0)


def test_the_sampler_reports_each_second_from_postgres(db_dsn: str) -> None:
    async def wal_activity() -> None:
        conn = await asyncpg.connect(db_dsn)
        try:
            await conn.execute("CREATE TABLE probe_t (x int)")
            for i in range(30):
                await conn.execute("INSERT INTO probe_t VALUES ($1)", i)
        finally:
            await conn.close()

    sampler = Sampler(db_dsn, {"tests": os.getpid()}).start()
    try:
        run(wal_activity())
        sampler.wait_rows(2, deadline_seconds=60)
    finally:
        rows = sampler.stop()
    assert len(rows) >= 2, rows
    second = rows[1]
    for key in ("tests_cpu_ms", "tests_runq_ms", "wal_syncs", "wal_kb", "journal_waits"):
        assert key in second, second
