"""Counters of one simulation run and a fixed-size latency histogram.

Everything here is touched from trio tasks of one thread: plain integers, no locks.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Final

import msgspec
import trio

from terminals_sim import limits

_GROWTH: Final = 1.02
"""Each histogram bucket is 2 % wider than the one before: percentiles within 2 %."""
_INV_LOG_GROWTH: Final = 1.0 / math.log(_GROWTH)
_MICROS: Final = 1e6
BUCKETS: Final = int(math.log(limits.LATENCY_SECONDS_MAX * _MICROS) * _INV_LOG_GROWTH) + 2


class LatencyHistogram:
    """Latencies in log buckets from 1 µs to LATENCY_SECONDS_MAX; a fixed 8 KB whatever the
    run's length. Percentiles report a bucket's upper edge (at most 2 % high); max is exact."""

    __slots__ = ("buckets", "count", "max_seconds")

    def __init__(self) -> None:
        self.buckets = [0] * BUCKETS
        self.count = 0
        self.max_seconds = 0.0

    def add(self, seconds: float) -> None:
        micros = seconds * _MICROS
        i = int(math.log(micros) * _INV_LOG_GROWTH) + 1 if micros >= 1.0 else 0
        self.buckets[i if i < BUCKETS else BUCKETS - 1] += 1
        self.count += 1
        if seconds > self.max_seconds:
            self.max_seconds = seconds

    def percentile(self, q: float) -> float:
        """The latency (seconds) below which a share q of the observations fall."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for i, n in enumerate(self.buckets):
            seen += n
            if seen >= rank:
                edge = _GROWTH ** i / _MICROS if i else 1.0 / _MICROS
                return min(edge, self.max_seconds)
        return self.max_seconds

    def clear(self) -> None:
        self.buckets = [0] * BUCKETS
        self.count = 0
        self.max_seconds = 0.0


class Statistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a running simulation's counters (Simulation.statistics())."""

    terminals: int
    signed_on: int
    signed_on_peak: int
    sent: int
    answered: int
    approved: int
    retries: int
    repeats_answered: int
    answer_mismatches: int
    answers_dropped: int
    reversals_sent: int
    gave_up: int
    reconnects: int
    connect_failures: int
    timeouts: int
    protocol_errors: int
    in_flight: int
    customers: int
    balked: int
    phase: str


class Stats:
    """The mutable counters the terminals update."""

    def __init__(self, terminals: int) -> None:
        self.terminals = terminals
        self.signed_on = 0
        self.signed_on_peak = 0
        self.all_signed_on = trio.Event()
        self.sent: Counter[str] = Counter()  # first sends, by request type
        self.answers: Counter[tuple[str, str]] = Counter()  # (type, code name)
        self.answered = 0
        self.approved = 0
        self.purchase_declines: Counter[str] = Counter()
        self.latency = LatencyHistogram()
        self.window_latency = LatencyHistogram()  # since the last progress line
        self.retries = 0
        self.repeats_answered = 0
        self.answer_mismatches = 0
        self.answers_dropped = 0
        self.reversals_sent = 0
        self.reversals: Counter[str] = Counter()
        self.gave_up = 0
        self.reversals_unanswered = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.sign_on_refused: Counter[str] = Counter()
        self.closed_by_switch: Counter[str] = Counter()  # closing Errors inside a session
        self.timeouts = 0
        self.busy = 0
        self.protocol_errors = 0
        self.heartbeats = 0
        self.heartbeat_timeouts = 0
        self.in_flight = 0
        self.customers = 0
        self.balked = 0
        self.phase = ""

    def signed_on_changed(self, delta: int) -> None:
        self.signed_on += delta
        if self.signed_on > self.signed_on_peak:
            self.signed_on_peak = self.signed_on
            if self.signed_on_peak >= self.terminals:
                self.all_signed_on.set()

    def snapshot(self) -> Statistics:
        return Statistics(
            terminals=self.terminals,
            signed_on=self.signed_on,
            signed_on_peak=self.signed_on_peak,
            sent=sum(self.sent.values()),
            answered=self.answered,
            approved=self.approved,
            retries=self.retries,
            repeats_answered=self.repeats_answered,
            answer_mismatches=self.answer_mismatches,
            answers_dropped=self.answers_dropped,
            reversals_sent=self.reversals_sent,
            gave_up=self.gave_up,
            reconnects=self.reconnects,
            connect_failures=self.connect_failures,
            timeouts=self.timeouts,
            protocol_errors=self.protocol_errors,
            in_flight=self.in_flight,
            customers=self.customers,
            balked=self.balked,
            phase=self.phase,
        )
