"""How busy the machine is apart from the benchmark: CPU steal, and other processes' CPU.

A benchmark on a shared or virtual machine measures the machine as much as the code: a run that
reports 3,300 purchases/s with the switch at 14 % of a core was waiting for CPU, not for
PostgreSQL. `LoadMeter.sample()` reads the machine's CPU time by state (`/proc/stat`) and every
process's CPU time (psutil); between two samples, `MachineLoad` says

- `steal_pct`: the share of the machine's CPU time the hypervisor gave to other guests;
- `other_cpu_pct`: CPU used by processes that are not the benchmark's own, in % of one core:
  the machine's busy time less that of the bench's process tree and of the processes that serve
  it (PostgreSQL backends of its database, a private PostgreSQL's data directory: the `markers`
  found in their command lines, and their children);
- `own_cpu_pct`: the benchmark's own processes, in % of one core.

A window is busy when steal or other load passes BUSY_STEAL_PCT or BUSY_OTHER_CPU_PCT; `busy()`
names why, for a warning printed beside the figures taken in it. Linux only: elsewhere a sample
is empty and no window is ever busy.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence

import msgspec
import psutil

BUSY_STEAL_PCT = 5.0
"""% of the machine's CPU time stolen by the hypervisor above which figures are suspect."""
BUSY_OTHER_CPU_PCT = 25.0
"""% of one core used by other processes above which figures are suspect."""
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class CpuTicks(msgspec.Struct, frozen=True):
    """The machine's CPU time since boot from /proc/stat's `cpu` line, in clock ticks."""

    busy: int
    """user, nice, system, irq, softirq (guest time is inside user and nice)."""
    steal: int
    total: int
    """Every state but guest and guest_nice (counted inside user and nice already)."""


def parse_proc_stat(text: str) -> CpuTicks:
    """The `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal [guest
    [guest_nice]]."""
    line = next(li for li in text.splitlines() if li.startswith("cpu "))
    f = [int(x) for x in line.split()[1:]] + [0] * 10
    user, nice, system, idle, iowait, irq, softirq, steal = f[:8]
    busy = user + nice + system + irq + softirq
    return CpuTicks(busy=busy, steal=steal, total=busy + idle + iowait + steal)


class Proc(msgspec.Struct, frozen=True):
    pid: int
    ppid: int
    started: float
    """create_time: a pid reused by another process is another process."""
    cpu_seconds: float
    cmdline: str


def own_pids(procs: Iterable[Proc], root: int, markers: Sequence[str]) -> set[int]:
    """`root` and every process whose command line holds a marker, with all their
    descendants."""
    procs = list(procs)
    own = {p.pid for p in procs if p.pid == root or any(m and m in p.cmdline for m in markers)}
    children: dict[int, list[int]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p.pid)
    todo = list(own)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in own:
                own.add(child)
                todo.append(child)
    return own


class Sample(msgspec.Struct, frozen=True):
    at: float
    """time.monotonic()"""
    ticks: CpuTicks | None
    procs: dict[int, Proc]
    own: frozenset[int]


class MachineLoad(msgspec.Struct, frozen=True):
    seconds: float
    steal_pct: float
    other_cpu_pct: float
    own_cpu_pct: float

    def busy(self) -> list[str]:
        """Why figures taken in this window are suspect (empty: the machine was quiet)."""
        reasons = []
        if self.steal_pct > BUSY_STEAL_PCT:
            reasons.append(f"CPU steal {self.steal_pct:.0f} % > {BUSY_STEAL_PCT:g} %")
        if self.other_cpu_pct > BUSY_OTHER_CPU_PCT:
            reasons.append(f"other processes {self.other_cpu_pct:.0f} % of a core > "
                           f"{BUSY_OTHER_CPU_PCT:g} %")
        return reasons

    def describe(self) -> str:
        return (f"steal {self.steal_pct:.1f} %, other processes {self.other_cpu_pct:.0f} % "
                f"and the bench {self.own_cpu_pct:.0f} % of a core over {self.seconds:.0f} s")


def load_between(a: Sample, b: Sample, cpus: int = os.cpu_count() or 1) -> MachineLoad:
    """The load from sample `a` to sample `b`. A process of the bench counts from `a` (or from
    its start, if it started after `a`) to `b`; one that ended between them is not seen, and its
    CPU counts as other load (so take windows while the bench's processes run: `combine`
    adds several up)."""
    wall = max(b.at - a.at, 1e-9)
    own = 0.0
    for pid in b.own:
        p = b.procs[pid]
        before = a.procs.get(pid)
        own += p.cpu_seconds - (before.cpu_seconds if before and before.started == p.started
                                else 0.0)
    if a.ticks is None or b.ticks is None:
        return MachineLoad(round(wall, 1), 0.0, 0.0, round(100 * own / wall, 1))
    total = max(b.ticks.total - a.ticks.total, 1)
    steal_pct = 100 * (b.ticks.steal - a.ticks.steal) / total
    busy_seconds = (b.ticks.busy - a.ticks.busy) / _CLK_TCK
    other = max(0.0, busy_seconds - own)
    # Shares of the window as the kernel counted it (every CPU's ticks), so that they stay
    # within 100 % per CPU whatever the sampling's own delay.
    elapsed = total / _CLK_TCK / cpus
    return MachineLoad(round(wall, 1), round(steal_pct, 1), round(100 * other / elapsed, 1),
                       round(100 * own / elapsed, 1))


def combine(loads: Sequence[MachineLoad]) -> MachineLoad:
    """Several windows as one: their seconds added, every figure weighted by its window's."""
    seconds = sum(load.seconds for load in loads) or 1e-9

    def mean(figure: str) -> float:
        return round(sum(getattr(load, figure) * load.seconds for load in loads) / seconds, 1)

    return MachineLoad(round(seconds, 1), mean("steal_pct"), mean("other_cpu_pct"),
                       mean("own_cpu_pct"))


class LoadMeter:
    """Samples for `load_between`; `markers` pick out the processes that serve the bench."""

    def __init__(self, markers: Sequence[str] = ()) -> None:
        self.markers = list(markers)

    def sample(self) -> Sample:
        try:
            with open("/proc/stat") as f:
                ticks: CpuTicks | None = parse_proc_stat(f.read())
        except OSError:
            ticks = None
        procs = {}
        for p in psutil.process_iter(["pid", "ppid", "create_time", "cpu_times", "cmdline"]):
            info = p.info
            if info["cpu_times"] is None:  # gone, or not ours to read
                continue
            procs[info["pid"]] = Proc(
                info["pid"], info["ppid"] or 0, info["create_time"] or 0.0,
                info["cpu_times"].user + info["cpu_times"].system,
                " ".join(info["cmdline"] or ()),
            )
        own = own_pids(procs.values(), os.getpid(), self.markers)
        return Sample(time.monotonic(), ticks, procs, frozenset(own))
