"""The bench notices a busy machine (onecard/machine_load.py): steal from /proc/stat, other
processes' CPU, the warning beside the figures, and the short summary instead of the JSON."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import msgspec
import pytest

from onecard import bench
from onecard.machine_load import (
    BUSY_OTHER_CPU_PCT,
    CpuTicks,
    LoadMeter,
    MachineLoad,
    Proc,
    Sample,
    combine,
    load_between,
    own_pids,
    parse_proc_stat,
)

TCK = os.sysconf("SC_CLK_TCK")


def test_proc_stat_busy_steal_and_total() -> None:
    text = ("cpu  100 5 20 800 10 1 2 30 7 0\n"
            "cpu0 50 2 10 400 5 0 1 15 3 0\nintr 1 2 3\n")
    # guest (7) is inside user already; idle and iowait are not busy; steal is its own.
    assert parse_proc_stat(text) == CpuTicks(busy=128, steal=30, total=968)
    assert parse_proc_stat("cpu  1 2 3 4\n") == CpuTicks(busy=6, steal=0, total=10)  # old kernels


def _proc(pid: int, ppid: int, cmdline: str = "", cpu: float = 0.0, started: float = 1.0) -> Proc:
    return Proc(pid, ppid, started, cpu, cmdline)


def test_own_processes_are_the_tree_and_what_serves_the_bench() -> None:
    procs = [
        _proc(1, 0, "/sbin/init"),
        _proc(10, 1, "python -m onecard bench"),            # the bench
        _proc(11, 10, "python -m onecard switch"),          # its child
        _proc(12, 11, "worker"),                            # and grandchild
        _proc(20, 1, "postgres -D /var/lib/postgresql"),    # a shared server: not ours
        _proc(21, 20, "postgres: u onecard_bench 127.0.0.1(5) idle"),  # our database's backend
        _proc(22, 20, "postgres: u other_db 127.0.0.1(6) idle"),
        _proc(30, 1, "postgres -D /tmp/bench-pg/pgdata"),   # a private server
        _proc(31, 30, "postgres: checkpointer"),
        _proc(40, 1, "stress --cpu 2"),
    ]
    assert own_pids(procs, 10, ["onecard_bench", "/tmp/bench-pg/pgdata"]) == {
        10, 11, 12, 21, 30, 31}
    assert own_pids(procs, 10, []) == {10, 11, 12}


def _sample(at: float, busy_ticks: int, steal_ticks: int, total_ticks: int,
            procs: list[Proc], own: set[int]) -> Sample:
    return Sample(at, CpuTicks(busy_ticks, steal_ticks, total_ticks),
                  {p.pid: p for p in procs}, frozenset(own))


def test_load_between_two_samples() -> None:
    a = _sample(100.0, 0, 0, 0, [_proc(10, 1, cpu=5.0), _proc(11, 10, cpu=1.0, started=2.0)],
                {10, 11})
    b = _sample(102.0, 3 * TCK, TCK // 4, 4 * TCK,  # 2 CPUs for 2 s: 3 s busy
                [_proc(10, 1, cpu=6.0),                  # 1 s in the window
                 _proc(11, 10, cpu=0.5, started=3.0),    # pid 11 reused: all 0.5 s count
                 _proc(13, 10, cpu=0.5, started=101.0)], # started in the window: all of it
                {10, 11, 13})
    load = load_between(a, b, cpus=2)
    # 3 s busy in 2 s, 2 s of it the bench's: other processes half a core, the bench one core.
    assert load == MachineLoad(seconds=2.0, steal_pct=6.2, other_cpu_pct=50.0,
                               own_cpu_pct=100.0)
    assert load.busy() == ["CPU steal 6 % > 5 %", "other processes 50 % of a core > 25 %"]
    quiet = MachineLoad(seconds=2.0, steal_pct=0.4, other_cpu_pct=BUSY_OTHER_CPU_PCT,
                        own_cpu_pct=180.0)
    assert quiet.busy() == []
    # Two windows as one, weighted by their seconds.
    assert combine([load, MachineLoad(6.0, 0.0, 50.0, 40.0)]) == MachineLoad(
        8.0, 1.6, 50.0, 55.0)
    # No /proc/stat (not Linux): the bench's own CPU only, never busy.
    no_stat = load_between(msgspec.structs.replace(a, ticks=None), b, cpus=2)
    assert (no_stat.other_cpu_pct, no_stat.steal_pct, no_stat.busy()) == (0.0, 0.0, [])


def _orphan(*args: str) -> int:
    """A process that is not our descendant (its parent exits at once): its pid."""
    code = ("import os, time\n"
            "pid = os.fork()\n"
            "if pid:\n    print(pid, flush=True)\n    os._exit(0)\n"
            "null = os.open(os.devnull, os.O_WRONLY)\n"
            "os.dup2(null, 1)\nos.dup2(null, 2)\n"  # so that run() sees the pipe close
            "time.sleep(30)\n")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         timeout=30)
    return int(out.stdout.split()[-1])


def test_a_real_sample_tells_the_bench_from_other_processes() -> None:
    marker = f"onecard-test-{uuid.uuid4().hex}"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    served, other = _orphan(marker), _orphan()
    try:
        meter = LoadMeter(markers=[marker])
        deadline = time.monotonic() + 30
        while True:  # the orphans' parents have exited: they hang off init (or a subreaper)
            a = meter.sample()
            if {served, other} <= set(a.procs) and a.procs[other].ppid not in a.own:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert {os.getpid(), child.pid, served} <= a.own
        assert other not in a.own
        time.sleep(0.2)
        load = load_between(a, meter.sample())
        assert load.seconds > 0 and 0 <= load.steal_pct <= 100
        assert load.other_cpu_pct >= 0 and load.own_cpu_pct >= 0
    finally:
        child.kill()
        child.wait()
        for pid in (served, other):
            os.kill(pid, 9)


@pytest.mark.parametrize("busy", [True, False])
def test_the_warning_is_printed_beside_the_figures(busy: bool,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    a = _sample(0.0, 0, 0, 0, [], set())
    b = _sample(1.0, TCK if busy else 0, 0, os.cpu_count() * TCK, [], set())
    loads: dict[str, MachineLoad] = {}
    bench._report_load("open_loop", [(a, b)], loads)
    out = capsys.readouterr().out
    assert loads["open_loop"].other_cpu_pct == (100.0 if busy else 0.0)
    assert out.startswith("  machine during the open loop: steal 0.0 %, other processes ")
    if busy:
        assert out.splitlines()[1].startswith(
            "  WARNING: busy machine during the open loop (other processes 100 % of a core > "
            "25 %)")
    else:
        assert "WARNING" not in out


def _result(**changes: object) -> bench.BenchResult:
    figures: dict[str, object] = {f: 0 for f in bench.BenchResult.__struct_fields__}
    figures["bank"] = figures["console"] = None
    for name in ("console_pages", "conventional_by_pool", "pgbench_by_clients",
                 "switch_metrics_open_loop", "machine_load", "busy_machine", "loop_lag_ms",
                 "fsync_probe", "open_loop_where"):
        figures[name] = {}
    figures.update(saturation_timeline=[], open_loop_timeline=[], door_open_loop_timeline=[],
                   fsync="on",
                   synchronous_commit="on", postgres="PostgreSQL 15")
    figures.update(durable_tps=3300.0, switch_cpu_pct=14.0, conventional_tps=4000.0, ratio=0.83)
    figures.update(changes)
    return msgspec.convert(figures, bench.BenchResult)


def test_the_summary_is_short_and_warns_of_a_busy_machine() -> None:
    busy = _result(busy_machine={"saturation": ["other processes 180 % of a core > 25 %"]})
    text = bench.summary(busy, "bench.json")
    assert len(text.splitlines()) <= 8 and "{" not in text  # not the JSON
    assert "durable: 3,300 purchases/s" in text and "switch CPU 14 % of a core" in text
    assert ("WARNING: figures taken on a busy machine: during saturation: other processes 180 % "
            "of a core > 25 %") in text
    assert text.endswith("every figure: bench.json")
    quiet = bench.summary(_result(cores=2, fsync_p99_ms=0.25), None)
    assert "WARNING" not in quiet and "machine: quiet" in quiet
    assert "2 cores, the disk's fsync p99 0.25 ms" in quiet  # issue 14: beside the figures
