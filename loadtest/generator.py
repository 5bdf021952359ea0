"""A lean OCP load generator on asyncio: one Protocol object per terminal, no task per request.

Closed loop: every terminal keeps `depth` requests outstanding and sends the next one as soon as
an answer arrives (saturation). Open loop: requests are sent on a fixed schedule spread over the
terminals, and latency counts from each request's scheduled send time, so a stalled switch
cannot hide its queue behind a slow sender (no coordinated omission).

The generator measures its own CPU share, so a reader can tell when it, not the switch, is the
limit.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, cast

import msgspec

from protocols import ocp

APPROVED = int(ocp.ResponseCode.APPROVED)


class TerminalSpec(msgspec.Struct, frozen=True):
    terminal_id: int
    key: bytes
    last_txn_seq: int = 0
    # A fixed-price till (set meal) sends amount 0: the switch charges the merchant's price.
    fixed_price: bool = False
    # A door controller (kind 3) with this many readers sends AccessRequests (a card at a
    # random reader) instead of purchases (docs/access.md).
    door_readers: int = 0


class CardPool(msgspec.Struct):
    """Which cards a purchase uses and how much it asks for."""

    cards: list[int]
    amount_fen_min: int = 100
    amount_fen_max: int = 1500
    # Share of purchases with a card number nobody issued (exercises UNKNOWN_CARD).
    unknown_card_share: float = 0.0
    # Share of approved purchases that the terminal then reverses.
    reversal_share: float = 0.0
    # Share of requests that are balance inquiries.
    inquiry_share: float = 0.0


class GeneratorReport(msgspec.Struct):
    mode: str
    terminals: int
    seconds: float
    sent: int
    answered: int
    approved: int
    codes: dict[str, int]
    by_type: dict[str, int]
    tps: float
    approved_tps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    generator_cpu_pct: float
    errors: int
    offered_tps: float = 0.0
    # One entry per second of the measured window: answers, p50/p99/max latency (ms).
    timeline: list[dict[str, float]] = msgspec.field(default_factory=list)
    # Open loop: how late the generator itself wrote each request after its scheduled time
    # (its own loop and scheduling, part of every latency it reports), p50 and p99 in ms.
    send_lag_p50_ms: float = 0.0
    send_lag_p99_ms: float = 0.0
    # Per answer type: {"purchase": {"p50_ms": .., "p99_ms": .., "n": ..}, "access": ..}.
    by_type_latency: dict[str, dict[str, float]] = msgspec.field(default_factory=dict)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


class _Terminal(asyncio.Protocol):
    def __init__(self, gen: LoadGenerator, spec: TerminalSpec) -> None:
        self.gen = gen
        self.spec = spec
        self.conn = ocp.Connection(ocp.Role.TERMINAL)
        self.transport: asyncio.Transport | None = None
        self.txn_seq = spec.last_txn_seq
        self.ready = asyncio.get_running_loop().create_future()
        self.sent_at: dict[int, float] = {}
        self.kind_of: dict[int, str] = {}
        self.approved_purchases: list[tuple[int, int, int]] = []  # (txn_seq, card, amount)
        self.requests: dict[int, object] = {}  # txn_seq -> request, when recording
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.write(
            self.conn.start_sign_on(self.spec.terminal_id, self.spec.key, os.urandom(16))
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"terminal {self.spec.terminal_id} lost"))
        self.gen._lost(self)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        conn.receive_data(data)
        now = time.perf_counter()
        gen = self.gen
        while True:
            try:
                ev: Any = conn.next_event()
            except ocp.OcpError as exc:
                gen.errors += 1
                gen.codes[f"protocol:{type(exc).__name__}"] += 1
                assert self.transport is not None
                self.transport.close()
                return
            if ev is ocp.NEED_DATA or ev is ocp.CLOSED:
                break
            t = type(ev)
            if (t is ocp.PurchaseResult or t is ocp.AccessResult or t is ocp.ReversalResult
                    or t is ocp.BalanceResult):
                gen._answered(self, ev, now)
            elif t is ocp.SignOnChallenge:
                assert self.transport is not None
                self.transport.write(conn.send(ocp.SignOnConfirm(self.txn_seq, 1, "loadgen")))
            elif t is ocp.SignOnResult:
                if ev.code != APPROVED:
                    self.ready.set_exception(ConnectionError(f"sign-on refused: {ev.code}"))
                    return
                self.txn_seq = max(self.txn_seq, ev.last_txn_seq)
                if not self.ready.done():
                    self.ready.set_result(None)
            elif t is ocp.Error:
                gen.errors += 1
                gen.codes[f"error:{ev.code}"] += 1
                if ev.txn_seq and ev.txn_seq in self.sent_at:
                    gen._answered(self, ev, now)
            elif t is ocp.HeartbeatAck:
                pass

    def send_request(self, scheduled: float | None = None) -> None:
        gen = self.gen
        pool = gen.pool
        rnd = gen.rnd
        self.txn_seq += 1
        seq = self.txn_seq
        roll = rnd.random()
        if self.spec.door_readers:
            msg: Any = ocp.AccessRequest(seq, 1 + int(roll * self.spec.door_readers), 0, 1,
                                         rnd.choice(pool.cards))
        elif pool.reversal_share and self.approved_purchases and roll < pool.reversal_share:
            orig, card, amount = self.approved_purchases.pop()
            msg = ocp.Reversal(seq, orig, card, amount)
            self.kind_of[seq] = "reversal"
        elif pool.inquiry_share and roll < pool.reversal_share + pool.inquiry_share:
            msg = ocp.BalanceInquiry(seq, rnd.choice(pool.cards))
            self.kind_of[seq] = "inquiry"
        else:
            if pool.unknown_card_share and rnd.random() < pool.unknown_card_share:
                card = 9_000_000_000_000 + rnd.randrange(1_000_000)
            else:
                card = rnd.choice(pool.cards)
            # random() arithmetic: randint costs about a microsecond a call on this path.
            amount = 0 if self.spec.fixed_price else pool.amount_fen_min + int(
                rnd.random() * (pool.amount_fen_max - pool.amount_fen_min + 1)
            )
            msg = ocp.Purchase(seq, card, amount, 0)
            if pool.reversal_share:
                self.kind_of[seq] = f"purchase:{card}:{amount}"
        self.sent_at[seq] = scheduled if scheduled is not None else time.perf_counter()
        if gen.record:
            self.requests[seq] = msg
        gen.sent += 1
        assert self.transport is not None
        self.transport.write(self.conn.send(msg))


class LoadGenerator:
    def __init__(self, host: str, port: int, terminals: Sequence[TerminalSpec], pool: CardPool,
                 *, seed: int = 1, record: bool = False) -> None:
        self.record = record
        # (terminal_id, txn_seq) -> the answer, when recording (crash and audit tests).
        self.answers: dict[tuple[int, int], object] = {}
        self.host = host
        self.port = port
        self.specs = list(terminals)
        self.pool = pool
        self.rnd = random.Random(seed)
        self.terms: list[_Terminal] = []
        self._reset()

    def _reset(self) -> None:
        self.sent = 0
        self.answered = 0
        self.approved = 0
        self.errors = 0
        self.codes: Counter[str] = Counter()
        self.by_type: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.sent_times: list[float] = []  # when each answered request was (to be) sent
        # Latencies by answer type ("purchase", "access"...), for mixed loads.
        self.type_latencies: dict[str, list[float]] = {}
        self._closed_loop = False
        self._recording = True

    async def connect(self, *, concurrency: int = 200) -> None:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(concurrency)

        async def one(spec: TerminalSpec) -> _Terminal:
            async with sem:
                _, proto = await loop.create_connection(
                    lambda: _Terminal(self, spec), self.host, self.port
                )
                await proto.ready
                return proto

        self.terms = list(await asyncio.gather(*(one(s) for s in self.specs)))

    def close(self) -> None:
        for t in self.terms:
            if t.transport is not None:
                t.transport.close()

    def unanswered(self) -> dict[tuple[int, int], object]:
        """Requests sent and not answered (recording only): in flight at a crash."""
        return {
            (t.spec.terminal_id, seq): t.requests[seq]
            for t in self.terms
            for seq in t.sent_at
            if seq in t.requests
        }

    def last_txn_seqs(self) -> dict[int, int]:
        return {t.spec.terminal_id: t.txn_seq for t in self.terms}

    def _lost(self, term: _Terminal) -> None:
        pass

    def _answered(self, term: _Terminal, ev: object, now: float) -> None:
        seq = ev.txn_seq  # type: ignore[attr-defined]
        sent = term.sent_at.pop(seq, None)
        if sent is None:
            return
        self.answered += 1
        if self.record:
            self.answers[(term.spec.terminal_id, seq)] = ev
        code = ev.code  # type: ignore[attr-defined]
        if self._recording:
            self.latencies.append(now - sent)
            self.sent_times.append(sent)
            kind = _KIND_OF_ANSWER.get(type(ev), "error")
            self.by_type[kind] += 1
            self.type_latencies.setdefault(kind, []).append(now - sent)
            self.codes[_CODE_NAMES.get(code) or str(code)] += 1
            if code == APPROVED:
                self.approved += 1
        if self.pool.reversal_share:
            tag = term.kind_of.pop(seq, "")
            if code == APPROVED and tag.startswith("purchase:"):
                _, card, amount = tag.split(":")
                # A POS reverses right after a timeout, never a purchase from long ago.
                recent = term.approved_purchases
                recent.append((seq, int(card), int(amount)))
                if len(recent) > 8:
                    del recent[0]
        if self._closed_loop and not term.closed:
            term.send_request()

    def _timeline(self) -> list[dict[str, float]]:
        if not self.sent_times:
            return []
        t0 = min(self.sent_times)
        buckets: dict[int, list[float]] = {}
        for sent, latency in zip(self.sent_times, self.latencies, strict=True):
            buckets.setdefault(int(sent - t0), []).append(latency)
        out = []
        for second in sorted(buckets):
            values = sorted(buckets[second])
            out.append({
                "second": second,
                "answered": len(values),
                "p50_ms": round(percentile(values, 0.5) * 1000, 3),
                "p99_ms": round(percentile(values, 0.99) * 1000, 3),
                "max_ms": round(values[-1] * 1000, 3),
            })
        return out

    def _report(self, mode: str, seconds: float, cpu: float, offered: float = 0.0
                ) -> GeneratorReport:
        lat = sorted(self.latencies)
        ms = 1000.0
        return GeneratorReport(
            mode=mode,
            terminals=len(self.terms),
            seconds=round(seconds, 3),
            sent=self.sent,
            answered=self.answered,
            approved=self.approved,
            codes=dict(self.codes),
            by_type=dict(self.by_type),
            tps=round(self.answered / seconds, 1) if seconds else 0.0,
            approved_tps=round(self.approved / seconds, 1) if seconds else 0.0,
            p50_ms=round(percentile(lat, 0.50) * ms, 3),
            p99_ms=round(percentile(lat, 0.99) * ms, 3),
            p999_ms=round(percentile(lat, 0.999) * ms, 3),
            max_ms=round((lat[-1] if lat else 0.0) * ms, 3),
            generator_cpu_pct=round(100.0 * cpu / seconds, 1) if seconds else 0.0,
            errors=self.errors,
            offered_tps=round(offered, 1),
            timeline=self._timeline(),
            by_type_latency={
                kind: {"n": len(v), "p50_ms": round(percentile(v, 0.5) * ms, 3),
                       "p99_ms": round(percentile(v, 0.99) * ms, 3)}
                for kind, v in ((k, sorted(v)) for k, v in self.type_latencies.items())
            },
        )

    async def wait_quiet(self, deadline_seconds: float = 30.0) -> None:
        """Wait until every request sent has been answered (or the deadline passes)."""
        async with asyncio.timeout(deadline_seconds):
            while any(t.sent_at for t in self.terms if not t.closed):
                await asyncio.sleep(0.01)

    def start_closed_loop(self, depth: int = 1) -> None:
        """Keep `depth` requests outstanding per terminal until stop_closed_loop()."""
        self._closed_loop = True
        for t in self.terms:
            for _ in range(depth):
                t.send_request()

    def stop_closed_loop(self) -> None:
        self._closed_loop = False

    async def wait_answered(self, count: int) -> None:
        """Wait until `count` answers have arrived (the caller sets the deadline)."""
        while self.answered < count:
            await asyncio.sleep(0.005)

    async def wait_disconnected(self) -> None:
        """Wait until the switch has closed every terminal's connection."""
        while not all(t.closed for t in self.terms):
            await asyncio.sleep(0.01)

    async def closed_loop(self, seconds: float, *, depth: int = 1,
                          warmup_seconds: float = 0.0,
                          on_measure_start: Callable[[], None] | None = None,
                          on_measure_end: Callable[[], None] | None = None) -> GeneratorReport:
        self._reset()
        if warmup_seconds:
            self._recording = False
        self.start_closed_loop(depth)
        if warmup_seconds:
            await asyncio.sleep(warmup_seconds)
            self._reset()
            self._closed_loop = True
        if on_measure_start is not None:
            on_measure_start()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        if on_measure_end is not None:
            on_measure_end()
        self._closed_loop = False
        report = self._report("closed", wall, cpu)
        await self.wait_quiet()
        return report

    async def open_loop(self, seconds: float, rate: float) -> GeneratorReport:
        """Send `rate` requests per second on a fixed schedule, round-robin over terminals."""
        self._reset()
        terms = [t for t in self.terms if not t.closed]
        n = len(terms)
        if not n:
            raise ConnectionError("open loop: the switch has closed every terminal's connection")
        interval = 1.0 / rate
        start = time.perf_counter()
        cpu0 = time.process_time()
        i = 0
        end = start + seconds
        lags: list[float] = []
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            due = min(int((now - start) * rate) + 1, int(seconds * rate))
            while i < due:
                scheduled = start + i * interval
                terms[i % n].send_request(scheduled=scheduled)
                lags.append(now - scheduled)
                i += 1
            # One tick a millisecond: uvloop rounds a shorter timer down to 0 and the
            # generator would spin, taking a core from the switch and PostgreSQL (issue 14).
            await asyncio.sleep(0.001)
        await self.wait_quiet()
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        report = self._report("open", wall, cpu, offered=i / seconds)
        lags.sort()
        report.send_lag_p50_ms = round(percentile(lags, 0.5) * 1000, 3)
        report.send_lag_p99_ms = round(percentile(lags, 0.99) * 1000, 3)
        return report


_CODE_NAMES = {int(c): c.name for c in ocp.ResponseCode}
_KIND_OF_ANSWER: dict[type, str] = {
    ocp.PurchaseResult: "purchase", ocp.ReversalResult: "reversal", ocp.BalanceResult: "inquiry",
    ocp.AccessResult: "access",
}
