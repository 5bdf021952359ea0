#!/usr/bin/env python3
"""Micro-benchmark of the OCP per-frame path: decode+verify and encode+MAC, frames per second.

    python bench/bench_ocp.py [--frames N] [--repeat R] [--json PATH]

Measures, on one core, a signed-on switch-side Connection:
- receive: Purchase frames fed in 64 KiB chunks (many frames per receive_data), then one frame
  per receive_data; each frame is length-checked, MAC-verified, sequence-checked, msgspec-decoded
  and run through the transition table;
- send: PurchaseResult encoded, sequenced and MAC'd by Connection.send();
- the MAC alone (MacKey.mac) and hmac.HMAC.copy(), for the record.
Reports the best of R runs. A benchmark is a script that writes JSON, not a timed test.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocols import ocp

KEY = bytes(range(32))
T_NONCE = bytes(16)
S_NONCE = bytes(range(16))
CARD = 6222000000001234


def signed_on() -> tuple[ocp.Connection, ocp.Connection]:
    t, s = ocp.Connection(ocp.Role.TERMINAL), ocp.Connection(ocp.Role.SWITCH)
    s.receive_data(t.start_sign_on(1001, KEY, T_NONCE))
    s.next_event()
    t.receive_data(s.accept_sign_on(KEY, S_NONCE))
    t.next_event()
    s.receive_data(t.send(ocp.SignOnConfirm(0)))
    s.next_event()
    t.receive_data(s.send(ocp.SignOnResult(0, 0, 0, 30)))
    t.next_event()
    return t, s


def best(repeat: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(repeat))


def bench_receive(n: int, chunk_bytes: int | None) -> float:
    t, s = signed_on()
    frames = [t.send(ocp.Purchase(i, CARD, 1250, 1_700_000_000_000)) for i in range(1, n + 1)]
    if chunk_bytes is None:
        chunks = frames
    else:
        blob = b"".join(frames)
        chunks = [blob[i : i + chunk_bytes] for i in range(0, len(blob), chunk_bytes)]
    receive, next_event, need = s.receive_data, s.next_event, ocp.NEED_DATA
    count = 0
    start = time.perf_counter()
    for chunk in chunks:
        receive(chunk)
        while next_event() is not need:
            count += 1
    elapsed = time.perf_counter() - start
    assert count == n
    return elapsed


def bench_send(n: int) -> float:
    _t, s = signed_on()
    msgs = [ocp.PurchaseResult(i, 0, 1250, 8750, 8000, 750) for i in range(1, n + 1)]
    send = s.send
    start = time.perf_counter()
    for m in msgs:
        send(m)
    return time.perf_counter() - start


def bench_mac(n: int, data: bytes) -> tuple[float, float]:
    mac = ocp.MacKey(KEY).mac
    start = time.perf_counter()
    for _ in range(n):
        mac(data)
    ours = time.perf_counter() - start
    keyed = hmac.new(KEY, digestmod=hashlib.sha256)
    start = time.perf_counter()
    for _ in range(n):
        h = keyed.copy()
        h.update(data)
        h.digest()
    return ours, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write results to this file")
    args = parser.parse_args()
    n, r = args.frames, args.repeat
    sample = signed_on()[0].send(ocp.Purchase(1, CARD, 1250, 1_700_000_000_000))
    mac_ours, mac_hmac_copy = (
        min(x) for x in zip(*(bench_mac(n, sample[4:-16]) for _ in range(r)), strict=True)
    )
    results = {
        "frame_bytes": {"purchase": len(sample)},
        "receive_chunked_frames_per_second": n / best(r, lambda: bench_receive(n, 65536)),
        "receive_one_per_call_frames_per_second": n / best(r, lambda: bench_receive(n, None)),
        "send_frames_per_second": n / best(r, lambda: bench_send(n)),
        "mac_microseconds": mac_ours / n * 1e6,
        "hmac_copy_microseconds": mac_hmac_copy / n * 1e6,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "frames": n,
        "repeat": r,
    }
    for key, value in results.items():
        shown = f"{value:,.0f}" if key.endswith("per_second") else value
        if key.endswith("microseconds"):
            shown = f"{value:.3f}"
        print(f"{key:42} {shown}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
