"""A/B timing of Ledger.purchase between two builds of ledger_ext, in one process.

    python bench/ledger_ab.py BEFORE_ROOT AFTER_ROOT [--rounds N]

Each ROOT is a checkout with ledger_ext built in place (setup.py build_ext --inplace), e.g.
/work/main and a worktree. Both extensions are loaded side by side and timed in interleaved
short rounds; the minimum per path is printed (ns per call, Python call included), so load on a
shared machine hits both alike. Paths: approved purchases, repeats (in the window), declines
(unknown card) and TXN_SEQ_TOO_OLD.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import sysconfig
import time
from pathlib import Path
from types import ModuleType
from typing import Any

CALLS = 20_000
TERMINALS = 50
NOW_S = 1_700_000_000
CARD_BASE = 1_000_000


def load(name: str, root: str) -> ModuleType:
    path = Path(root) / "ledger_ext" / ("_ledger" + sysconfig.get_config_var("EXT_SUFFIX"))
    spec = importlib.util.spec_from_file_location(f"{name}._ledger", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(module: ModuleType) -> Any:
    ledger = module.Ledger(20_000, 10)
    ledger.configure_class(1, 0, 0, 0, 0, 0)
    ledger.open_merchant(1, 1)
    for a in range(1, 10_001):
        ledger.open_account(a, 1, 1, main_fen=10**9)
        ledger.bind_card(CARD_BASE + a, a)
    return ledger


def one_round(ledger: Any, start: int) -> dict[str, float]:
    """ns per call of each path; `start` is this round's first txn_seq (rounds go up)."""
    new = [(1 + i % TERMINALS, start + i // TERMINALS, CARD_BASE + 1 + i % 10_000, 1, 100, NOW_S)
           for i in range(CALLS)]
    paths = {
        "approved": new,
        "repeat": new[-5_000:],
        "declined": [(101 + i % TERMINALS, start + i // TERMINALS, 999, 1, 100, NOW_S)
                     for i in range(CALLS)],
        "too_old": [(1 + i % TERMINALS, 1, CARD_BASE + 1, 1, 100, NOW_S)
                    for i in range(CALLS)] if start > 1_000 else [],
    }
    purchase = ledger.purchase
    out = {}
    for name, calls in paths.items():
        if calls:
            t = time.perf_counter_ns()
            for args in calls:
                purchase(*args)
            out[name] = (time.perf_counter_ns() - t) / len(calls)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    ledgers = {"before": build(load("before", args.before)),
               "after": build(load("after", args.after))}
    best: dict[str, dict[str, float]] = {k: {} for k in ledgers}
    for r in range(args.rounds):
        for k in ("before", "after") if r % 2 else ("after", "before"):
            for name, ns in one_round(ledgers[k], 1 + r * CALLS // TERMINALS).items():
                best[k][name] = min(best[k].get(name, float("inf")), ns)
    for k, paths in best.items():
        print(k, " ".join(f"{name}={ns:.0f}ns" for name, ns in paths.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
