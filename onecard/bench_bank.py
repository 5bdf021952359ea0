"""`onecard bench`'s bank phases: kiosk top-ups against the bank simulator answering at once
(`topup_tps`, `topup_p99_ms`), and purchases at saturation while the bank link is down and
reversal advices wait to be repeated (`durable_tps_bank_down`, to compare with durable_tps).

The bank simulator runs in this process (a trio thread), the switch as its own process, both
over real TCP. Every bound card's PIN is checked once with argon2id in a warm-up round (the
switch then remembers it verified: section 4.7 of docs/protocol.md), as a day's kiosks would.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import msgspec

from loadtest import CardPool, LoadGenerator, TerminalSpec
from onecard.demo import DEMO_BANK_KEK, demo_bank_env
from onecard.harness import SwitchProcess
from onecard.kiosks import KioskClient
from onecard.seed import DEMO_PIN
from protocols import ocp
from terminals_sim.bank_host import BankHostThread

TOPUP_FEN = 100


class BankBench(msgspec.Struct):
    topup_tps: float
    topup_p50_ms: float
    topup_p99_ms: float
    topups_measured: int
    topup_codes: dict[str, int]
    kiosks: int
    durable_tps_bank_down: float
    advices_pending_bank_down: int


def _pct(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return 0.0
    return round(sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))], 2)


async def _kiosk_loop(kiosk: KioskClient, cards: list[int], until: float, measure_from: float,
                      latencies: list[float], codes: dict[str, int]) -> None:
    n = 0
    while time.monotonic() < until:
        card = cards[n % len(cards)]
        n += 1
        t0 = time.perf_counter()
        answer = await kiosk.topup(card, TOPUP_FEN, DEMO_PIN)
        if time.monotonic() >= measure_from:
            latencies.append((time.perf_counter() - t0) * 1000)
            name = ocp.ResponseCode(answer.code).name if isinstance(
                answer, ocp.TopupResult) else f"Error {answer.code}"
            codes[name] = codes.get(name, 0) + 1


async def run_bank_phases(dsn: str, master: bytes, terminals: list[int], cards: list[int],
                          seconds: float) -> BankBench:
    conn = await asyncpg.connect(dsn)
    try:  # no caps: the bench measures throughput
        kiosks = [r["id"] for r in await conn.fetch(
            "SELECT id FROM terminals WHERE kind = 2 ORDER BY id")]
        banked = [r["card_no"] for r in await conn.fetch(
            "SELECT c.card_no FROM cards c JOIN bank_cards b ON b.account_id = c.account_id"
            " WHERE c.status = 0 AND b.unbound_at IS NULL ORDER BY c.card_no")]
        await conn.execute("INSERT INTO tenant_bank_settings (tenant_id, single_max_fen,"
                           " daily_card_max_fen, daily_account_max_fen) VALUES (1, 0, 0, 0)"
                           " ON CONFLICT (tenant_id) DO NOTHING")
    finally:
        await conn.close()
    bank = BankHostThread(DEMO_BANK_KEK, default_balance_fen=10**15).start()
    switch = SwitchProcess(dsn, master.hex(), extra_env={
        "ONECARD_LOG_LEVEL": "warning", **demo_bank_env(bank.port),
        # As many top-ups in flight as kiosks, on enough connections to share the commits.
        "ONECARD_TOPUP_WORKERS": str(max(1, min(1024, len(kiosks)))),
        "ONECARD_TOPUP_POOL_MAX": "32"}).start()
    try:
        clients = [KioskClient(k, ocp.derive_terminal_key(master, k, 1)) for k in kiosks]
        # 256 argon2id checks take ~10 s on a quiet machine; a busy one took over 120 s.
        async with asyncio.timeout(600):
            for c in clients:
                await c.connect(switch.host, switch.port)
            while not bank.host.signed_on_connections:  # noqa: ASYNC110 - another thread's
                await asyncio.sleep(0.05)
            # Warm-up: each bound card's PIN is checked once with argon2id.
            share = [banked[i::len(clients)] for i in range(len(clients))]
            await asyncio.gather(*(_one_each(c, s) for c, s in zip(clients, share,
                                                                  strict=True)))
        print(f"  kiosk top-ups: {len(clients)} kiosks, {len(banked)} bound cards, "
              f"{seconds:g} s against the instant bank simulator ...", flush=True)
        latencies: list[float] = []
        codes: dict[str, int] = {}
        start = time.monotonic()
        measure_from, until = start + 1.0, start + 1.0 + seconds
        await asyncio.gather(*(_kiosk_loop(c, s, until, measure_from, latencies, codes)
                               for c, s in zip(clients, share, strict=True)))
        latencies.sort()
        approved = codes.get("APPROVED", 0)
        topup_tps = round(approved / seconds, 1)
        print(f"  kiosk top-ups: {topup_tps:,.0f}/s approved (p50 {_pct(latencies, 0.5)} ms, "
              f"p99 {_pct(latencies, 0.99)} ms; {codes})", flush=True)
        # The bank stops answering (advices pile up), then goes away altogether.
        bank.host.set_behaviour("silent")
        bank.host.set_advice_action("silent")
        async with asyncio.timeout(60):
            await asyncio.gather(*(c.topup(s[0], TOPUP_FEN, DEMO_PIN)
                                   for c, s in zip(clients, share, strict=True)))
        bank.stop()
        for c in clients:
            c.close()
        pending = await _pending(dsn)
        specs = [TerminalSpec(t, ocp.derive_terminal_key(master, t, 1)) for t in terminals]
        gen = LoadGenerator(switch.host, switch.port, specs, CardPool(cards=cards))
        await gen.connect()
        print(f"  bank down, {pending} reversal advices pending: purchases at saturation "
              f"for {seconds:g} s ...", flush=True)
        down = await gen.closed_loop(seconds, depth=1, warmup_seconds=2.0)
        gen.close()
        print(f"  bank down: {down.approved_tps:,.0f} durable purchases/s "
              f"(p99 {down.p99_ms:.1f} ms)", flush=True)
    finally:
        switch.stop()
        bank.stop()
    return BankBench(topup_tps=topup_tps, topup_p50_ms=_pct(latencies, 0.5),
                     topup_p99_ms=_pct(latencies, 0.99), topups_measured=len(latencies),
                     topup_codes=codes, kiosks=len(clients),
                     durable_tps_bank_down=down.approved_tps, advices_pending_bank_down=pending)


async def _one_each(kiosk: KioskClient, cards: list[int]) -> None:
    for card in cards:
        await kiosk.topup(card, TOPUP_FEN, DEMO_PIN)


async def _pending(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        value: Any = await conn.fetchval(
            "SELECT count(*) FROM bank_advices WHERE state = 'pending'")
        return int(value)
    finally:
        await conn.close()
