#!/usr/bin/env python3
"""Benchmark of the bank link: the ISO 8583 codec per message, and top-ups per second through
BankLink against the bank host simulator answering at once.

    python bench/bench_banklink.py [--messages N] [--topups N] [--concurrency C]
                                   [--connections K] [--json PATH]

- codec: a 0200 encoded with its AES-CMAC (`encode_message`), and decoded with every field
  checked and the MAC verified (`decode_message`), best of 3 runs, one core;
- link: `--topups` top-ups (0200 -> 0210 approved) with `--concurrency` in flight, over
  `--connections` connections, to `onecard bank-sim` run as a separate process (its own core
  where there is one), from one asyncio process (uvloop when installed): top-ups per second
  and the p50/p99 of `authorize_topup`.
A benchmark is a script that writes JSON, not a timed test.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocols import iso8583
from switch._banklink import BankLink, BankLinkConfig, TopupRequest

ROOT = Path(__file__).resolve().parent.parent
KEK = bytes(range(32))
NOW = dt.datetime(2026, 12, 2, 3, 4, 5, tzinfo=dt.UTC)
LOCAL = dt.datetime(2026, 12, 2, 11, 4, 5)


def _request(stan: int) -> TopupRequest:
    return TopupRequest(terminal_id=5000 + stan % 18, stan=stan, rrn=f"{stan:012d}",
                        amount_fen=10_000, card_token=f"TOK-{stan % 1000}", account_ref="A-1",
                        local_datetime=LOCAL, tenant_id=1)


def bench_codec(n: int) -> dict[str, float]:
    keys = iso8583.MacKeys()
    keys.install(1, bytes(32))
    req = _request(1)
    data = iso8583.encode_message(req, now=NOW, keys=keys)
    out: dict[str, float] = {"message_bytes": len(data)}
    for name, fn in (("encode_per_s", lambda: iso8583.encode_message(req, now=NOW, keys=keys)),
                     ("decode_per_s", lambda: iso8583.decode_message(data, keys)),
                     ("cmac_per_s", lambda: iso8583.cmac(bytes(32), data))):
        best = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best = max(best, n / (time.perf_counter() - t0))
        out[name] = round(best)
    return out


async def bench_link(port: int, topups: int, concurrency: int, connections: int
                     ) -> dict[str, float]:
    link = BankLink(BankLinkConfig(host="127.0.0.1", port=port, kek=KEK,
                                   connections=connections, response_timeout_seconds=30))
    await link.start()
    latencies: list[float] = []
    try:
        async with asyncio.timeout(30):
            await link.wait_available()
        stans = iter(range(1, topups + 1))

        async def worker() -> None:
            for stan in stans:
                t0 = time.perf_counter()
                answer = await link.authorize_topup(_request(stan))
                latencies.append(time.perf_counter() - t0)
                assert answer.outcome == "approved", answer

        t0, cpu0 = time.perf_counter(), time.process_time()
        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(worker())
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await link.close()
    latencies.sort()
    return {"topups": topups, "seconds": round(seconds, 3),
            "topups_per_s": round(topups / seconds),
            "switch_cpu_us_per_topup": round(1e6 * cpu / topups, 1),
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 3),
            "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 3)}


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--topups", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    result: dict[str, object] = {"python": platform.python_version(),
                                 "codec": bench_codec(args.messages)}
    sim = subprocess.Popen(
        [sys.executable, "-m", "onecard", "bank-sim", "--port", "0", "--kek", KEK.hex()],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert sim.stdout is not None
        port = int(sim.stdout.readline().rsplit(":", 1)[1])
        import psutil

        sim_cpu = psutil.Process(sim.pid).cpu_times()
        result["link"] = _run(bench_link(port, args.topups, args.concurrency, args.connections))
        sim_after = psutil.Process(sim.pid).cpu_times()
        used = (sim_after.user + sim_after.system) - (sim_cpu.user + sim_cpu.system)
        result["link"]["simulator_cpu_us_per_topup"] = round(  # type: ignore[index]
            1e6 * used / args.topups, 1)
        result["link"]["concurrency"] = args.concurrency  # type: ignore[index]
        result["link"]["connections"] = args.connections  # type: ignore[index]
    finally:
        sim.terminate()
        sim.wait(10)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
