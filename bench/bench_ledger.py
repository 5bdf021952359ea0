"""Micro-benchmark of ledger_ext.Ledger against the plain-Python LedgerModel.

    python3 bench/bench_ledger.py [--json PATH] [--accounts N] [--purchases N]

Prints purchase authorizations per second (one core, Python calls), the ratio to the model,
memory per account at N accounts with two wallets and one card each (RSS delta, tracemalloc and
the ledger's own C allocation count), snapshot/restore time and replay rows per second.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ledger_ext
from tests.ledger_model import LedgerModel

NOW_S = 1_700_000_000
TERMINALS = 64
CARD_BASE = 8_000_000_000_000_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def build(cls: type, accounts: int, merchants: int = 16) -> object:
    ledger = cls(accounts, merchants)
    ledger.configure_tenant(1, 8 * 3600, [(420, 540), (660, 780), (1020, 1140)])
    ledger.configure_class(1, 0, 0, 0, 0, 0)
    for m in range(1, merchants + 1):
        ledger.open_merchant(m, 1)
    for a in range(1, accounts + 1):
        ledger.open_account(a, 1, 1, ledger_ext.ACTIVE, 10**9, 10**6)
        ledger.bind_card(CARD_BASE + a, a)
    return ledger


def authorizations_per_s(ledger: object, accounts: int, n: int) -> float:
    """n approved purchases over `accounts` cards, 64 terminals, 16 merchants."""
    purchase = ledger.purchase                                      # type: ignore[attr-defined]
    cards = [CARD_BASE + 1 + (i * 7919) % accounts for i in range(4096)]
    args = [(1 + i % TERMINALS, 1 + i // TERMINALS, cards[i % 4096], 1 + i % 16, 1 + i % 700,
             NOW_S + i // 1000) for i in range(n)]
    gc.collect()
    gc.disable()
    start = time.perf_counter()
    for t, s, c, m, a, now in args:
        purchase(t, s, c, m, a, now)
    elapsed = time.perf_counter() - start
    gc.enable()
    last = purchase(*args[-1])
    assert last.repeat and last.code == ledger_ext.APPROVED, last
    return n / elapsed


def memory_per_account(accounts: int) -> dict[str, float]:
    gc.collect()
    rss_before = rss_bytes()
    tracemalloc.start()
    ledger = build(ledger_ext.Ledger, accounts)
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = rss_bytes()
    stats = ledger.statistics()                                     # type: ignore[attr-defined]
    return {
        "accounts": accounts,
        "rss_bytes_per_account": (rss_after - rss_before) / accounts,
        "tracemalloc_bytes_per_account": traced / accounts,
        "c_bytes_per_account": stats.memory_bytes / accounts,
        "accounts_struct_bytes": 64,
        "card_slot_bytes": 16,
    }


def snapshot_and_replay(accounts: int, rows: int) -> dict[str, float]:
    ledger = build(ledger_ext.Ledger, accounts)
    base = ledger.snapshot()                                        # type: ignore[attr-defined]
    journal = []
    for i in range(rows):
        o = ledger.purchase(1 + i % TERMINALS, 1 + i // TERMINALS,  # type: ignore[attr-defined]
                            CARD_BASE + 1 + (i * 7919) % accounts, 1 + i % 16, 100, NOW_S + i)
        journal.append(o.journal_row())
    start = time.perf_counter()
    data = ledger.snapshot()                                        # type: ignore[attr-defined]
    snapshot_s = time.perf_counter() - start
    replica = build(ledger_ext.Ledger, accounts)
    start = time.perf_counter()
    replica.restore(base)                                           # type: ignore[attr-defined]
    restore_s = time.perf_counter() - start
    start = time.perf_counter()
    replay = replica.replay                                         # type: ignore[attr-defined]
    for row in journal:
        replay(row)
    replay_s = time.perf_counter() - start
    assert replica.snapshot() == data                               # type: ignore[attr-defined]
    return {"snapshot_bytes": len(data), "snapshot_s": snapshot_s, "restore_s": restore_s,
            "replay_rows_per_s": rows / replay_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--purchases", type=int, default=2_000_000)
    parser.add_argument("--model-purchases", type=int, default=200_000)
    args = parser.parse_args()

    figures: dict[str, object] = {"python": sys.version.split()[0]}
    auth_accounts = 100_000
    fast = build(ledger_ext.Ledger, auth_accounts)
    model = build(LedgerModel, auth_accounts)
    best = max(authorizations_per_s(build(ledger_ext.Ledger, auth_accounts), auth_accounts,
                                    args.purchases) for _ in range(3))
    figures["ledger_authorizations_per_s"] = best
    figures["model_authorizations_per_s"] = authorizations_per_s(model, auth_accounts,
                                                                 args.model_purchases)
    figures["speedup"] = best / figures["model_authorizations_per_s"]   # type: ignore[operator]
    del fast, model
    gc.collect()
    figures["memory"] = memory_per_account(args.accounts)
    gc.collect()
    figures["recovery"] = snapshot_and_replay(args.accounts, 500_000)

    print(f"ledger   {best:14,.0f} authorizations/s")
    print(f"model    {figures['model_authorizations_per_s']:14,.0f} authorizations/s")
    print(f"speedup  {figures['speedup']:14.1f} x")
    mem = figures["memory"]
    assert isinstance(mem, dict)
    print(f"memory at {args.accounts:,} accounts: "
          f"RSS {mem['rss_bytes_per_account']:.1f} B/account, "
          f"tracemalloc {mem['tracemalloc_bytes_per_account']:.1f} B/account, "
          f"C allocations {mem['c_bytes_per_account']:.1f} B/account")
    rec = figures["recovery"]
    assert isinstance(rec, dict)
    print(f"snapshot {rec['snapshot_s'] * 1000:.1f} ms ({rec['snapshot_bytes']:,} bytes), "
          f"restore {rec['restore_s'] * 1000:.1f} ms, "
          f"replay {rec['replay_rows_per_s']:,.0f} rows/s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
