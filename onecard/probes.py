"""Where latency goes, seen from outside the switch (issue 14): the disk's own flush time, the
time each process waited for a core, and PostgreSQL's side of the journal's commits.

- `fsync_probe`: 8 KiB written and `fdatasync`ed in a loop in a directory (PostgreSQL's data
  directory when it is local): the disk's share of a commit, to set beside the commit latency.
- `run_queue_ms`: from `/proc/<pid>/task/*/schedstat`, the time a process's threads spent
  runnable but not running (waiting for a core), and running, in ms since they started.
- `Sampler`: a separate process (so that sampling does not load the generator's event loop)
  that records, once a second, the run-queue wait and CPU of named processes, PostgreSQL's
  `pg_stat_wal` (WAL written, flushes, write and sync time) and the wait events of the
  journal's backend (polled every 10 ms from `pg_stat_activity`).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import queue
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

FSYNC_WRITE_BYTES = 8192


def fsync_probe(directory: str | os.PathLike[str] | None = None, seconds: float = 2.0,
                ) -> dict[str, float | int | str]:
    """Write 8 KiB at the start of a scratch file and fdatasync it, again and again for
    `seconds`: the flush latency of the disk holding `directory` (p50, p99, p99.9, max in ms)."""
    block = os.urandom(FSYNC_WRITE_BYTES)
    times: list[float] = []
    fd, path = tempfile.mkstemp(prefix=".onecard-fsync-probe-", dir=directory)
    try:
        end = time.perf_counter() + seconds
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            os.pwrite(fd, block, 0)
            os.fdatasync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    times.sort()

    def pct(q: float) -> float:
        return round(times[min(len(times) - 1, int(q * len(times)))] * 1000, 3)

    return {"calls": len(times), "p50_ms": pct(0.5), "p99_ms": pct(0.99), "p999_ms": pct(0.999),
            "max_ms": round(times[-1] * 1000, 3),
            "mean_ms": round(statistics.fmean(times) * 1000, 3),
            "directory": str(Path(directory or tempfile.gettempdir()).resolve())}


def run_queue_ms(pid: int) -> tuple[float, float]:
    """(ms running on a core, ms runnable but waiting for one) summed over the threads of
    `pid` since they started; (0, 0) when the process is gone."""
    on_cpu = waiting = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0, 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run_ns, wait_ns, _ = f.read().split()
        except (OSError, ValueError):
            continue
        on_cpu += int(run_ns)
        waiting += int(wait_ns)
    return on_cpu / 1e6, waiting / 1e6


_WAL_SQL = ("SELECT wal_bytes::bigint, wal_write, wal_sync, wal_write_time, wal_sync_time"
            " FROM pg_stat_wal")
# PostgreSQL 18 moved WAL writes and flushes from pg_stat_wal to pg_stat_io.
_WAL_SQL_18 = ("SELECT (SELECT wal_bytes::bigint FROM pg_stat_wal), sum(writes)::bigint,"
               " sum(fsyncs)::bigint, sum(write_time), sum(fsync_time)"
               " FROM pg_stat_io WHERE object = 'wal'")
# The journal's connection names itself (switch/_server.py, JOURNAL_APPLICATION_NAME).
_JOURNAL_BACKEND_SQL = ("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                        " AND application_name = 'onecard-switch-journal'"
                        " ORDER BY backend_start DESC LIMIT 1")
_WAIT_SQL = "SELECT state, wait_event_type, wait_event FROM pg_stat_activity WHERE pid = $1"


_SWITCH_KEYS = ("end_to_end_p50_ms", "commit_queue_p50_ms", "commit_p50_ms",
                "end_to_end_p99_ms", "commit_queue_p99_ms", "commit_p99_ms", "answer_p99_ms",
                "group_commit_prepare_p99_ms", "group_commit_postgres_p99_ms",
                "group_commit_release_p99_ms", "loop_lag_p99_ms", "rows_per_commit")


async def _sample_loop(dsn: str, pids: dict[str, int], stop: Any, out: Any,
                       metrics_url: str | None) -> None:
    import asyncpg

    from onecard.status import scrape, switch_figures

    last_scrape = scrape(metrics_url) if metrics_url else None

    conn = await asyncpg.connect(dsn)
    wal_sql = _WAL_SQL_18 if conn.get_server_version().major >= 18 else _WAL_SQL
    try:
        journal_pid: int | None = None
        last: dict[str, tuple[float, float]] = {}
        last_wal: Any = None
        t0 = time.perf_counter()
        next_second = t0 + 1.0
        waits: dict[str, int] = {}
        timed_waits: list[tuple[float, str]] = []
        while not stop.is_set():
            if journal_pid is None:
                journal_pid = await conn.fetchval(_JOURNAL_BACKEND_SQL)
                if journal_pid is not None:
                    pids = {**pids, "journal_backend": journal_pid}
            else:
                r = await conn.fetchrow(_WAIT_SQL, journal_pid)
                if r is not None:
                    key = (r["wait_event"] or ("CPU" if r["state"] == "active" else "idle"))
                    waits[key] = waits.get(key, 0) + 1
                    if key not in ("ClientRead", "idle"):  # while a commit is under way
                        timed_waits.append((round(time.time(), 3), key))
            now = time.perf_counter()
            if now >= next_second:
                next_second += 1.0
                row: dict[str, Any] = {"t": round(now - t0, 1)}
                for name, pid in pids.items():
                    cpu, wait = run_queue_ms(pid)
                    prev = last.get(name, (cpu, wait))
                    row[f"{name}_cpu_ms"] = round(cpu - prev[0], 1)
                    row[f"{name}_runq_ms"] = round(wait - prev[1], 1)
                    last[name] = (cpu, wait)
                wal = await conn.fetchrow(wal_sql)
                if last_wal is not None:
                    row["wal_kb"] = round((wal[0] - last_wal[0]) / 1024)
                    row["wal_writes"] = wal[1] - last_wal[1]
                    row["wal_syncs"] = wal[2] - last_wal[2]
                    row["wal_write_ms"] = round((wal[3] or 0) - (last_wal[3] or 0), 1)
                    row["wal_sync_ms"] = round((wal[4] or 0) - (last_wal[4] or 0), 1)
                last_wal = wal
                row["journal_waits"] = waits
                row["journal_wait_samples"] = timed_waits  # (unix time, wait event)
                waits, timed_waits = {}, []
                if metrics_url and last_scrape is not None:
                    with contextlib.suppress(OSError):
                        now_scrape = scrape(metrics_url)
                        figures = switch_figures(last_scrape, now_scrape)
                        row.update({f"switch_{k}": figures[k] for k in _SWITCH_KEYS
                                    if k in figures})
                        last_scrape = now_scrape
                out.put(row)
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


def _sampler_main(dsn: str, pids: dict[str, int], stop: Any, out: Any,
                  metrics_url: str | None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_sample_loop(dsn, pids, stop, out, metrics_url))
    out.put(None)


class Sampler:
    """Samples the processes in `pids`, PostgreSQL at `dsn` and the switch's /metrics at
    `metrics_url` (if given) once a second, from a process of its own, between start() and
    stop(); stop() returns the rows (the first has no deltas)."""

    def __init__(self, dsn: str, pids: dict[str, int], metrics_url: str | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self._out: Any = ctx.Queue()
        self._proc = ctx.Process(target=_sampler_main, daemon=True,
                                 args=(dsn, pids, self._stop, self._out, metrics_url))

    def start(self) -> Sampler:
        self._rows: list[dict[str, Any]] = []
        self._done = False
        self._proc.start()
        return self

    def _pull(self, timeout: float) -> bool:
        """Move one row from the child into _rows; False when nothing came or it ended."""
        try:
            row = self._out.get(timeout=timeout)
        except queue.Empty:
            return False
        if row is None:
            self._done = True
            return False
        self._rows.append(row)
        return True

    def wait_rows(self, n: int, deadline_seconds: float = 60.0) -> list[dict[str, Any]]:
        """Wait until `n` rows have come (or the deadline passes); the rows so far."""
        deadline = time.monotonic() + deadline_seconds
        while len(self._rows) < n and not self._done and time.monotonic() < deadline:
            self._pull(timeout=0.5)
        return list(self._rows)

    def stop(self) -> list[dict[str, Any]]:
        self._stop.set()
        deadline = time.monotonic() + 30
        while not self._done and time.monotonic() < deadline:
            if not self._pull(timeout=1.0) and not self._proc.is_alive():
                break
        self._proc.join(timeout=10)
        return self._rows
