"""Cardholders: who comes, to which till, what they want, and the phase they come in.

A phase is planned once against the site (which tills each `visit` entry covers). In arrival
mode one task draws Poisson arrivals and puts each cardholder in the shorter of two tills'
queues (people look at two queues and join the shorter one); in think mode every visited till
makes its own next cardholder.
"""

from __future__ import annotations

import bisect
import itertools
import random
from typing import TYPE_CHECKING, Final

import msgspec
import trio

from terminals_sim._scenario import Amount, Phase, Visit

if TYPE_CHECKING:
    from terminals_sim._pos import Pos
    from terminals_sim._stats import Stats

UNKNOWN_CARD_BASE: Final = 9_000_000_000_000_000
"""Cards the site never issued are drawn above this (and checked against the issued ones)."""


class Customer(msgspec.Struct, frozen=True, gc=False):
    card_no: int
    amount_fen: int
    inquiry: bool


class VisitPlan(msgspec.Struct, frozen=True, kw_only=True):
    visit: Visit
    tills: list[Pos]


class PhasePlan:
    """One phase, resolved against the site's tills."""

    __slots__ = ("cum_weights", "index", "phase", "till_visit", "visits")

    def __init__(self, index: int, phase: Phase, tills: list[Pos]) -> None:
        self.index = index
        self.phase = phase
        self.visits: list[VisitPlan] = []
        self.till_visit: dict[int, Visit] = {}
        for j, visit in enumerate(phase.visit):
            matched = [
                t for t in tills
                if visit.merchant in (t.spec.merchant, t.spec.merchant_kind)
            ]
            if not matched:
                raise LookupError(
                    f"phases[{index}].visit[{j}]: no simulated terminal belongs to a merchant "
                    f"named (or of kind) {visit.merchant!r}; the site's merchants are "
                    f"{sorted({t.spec.merchant for t in tills})}"
                )
            self.visits.append(VisitPlan(visit=visit, tills=matched))
            for t in matched:
                self.till_visit.setdefault(t.spec.terminal_id, visit)
        self.cum_weights = list(itertools.accumulate(v.visit.weight for v in self.visits))

    @property
    def arrivals(self) -> bool:
        return self.phase.arrivals_per_s is not None


class Schedule:
    """Which phase runs now; terminals read it, the simulation moves it on."""

    __slots__ = ("ends_at", "finished", "last", "plan", "started")

    def __init__(self) -> None:
        self.plan: PhasePlan | None = None
        self.last: PhasePlan | None = None  # the phase that ran last (its faults stay in force)
        self.ends_at = 0.0
        self.finished = False
        self.started = trio.Event()

    def start(self, plan: PhasePlan, ends_at: float) -> None:
        self.plan = self.last = plan
        self.ends_at = ends_at
        self.started.set()

    def finish(self) -> None:
        self.plan = None
        self.finished = True
        self.started.set()


class Crowd:
    """Draws cardholders: a card, an amount, whether they ask their balance first."""

    def __init__(self, cards: list[int], rng: random.Random, stats: Stats) -> None:
        if not cards:
            raise LookupError("the site has no cards in use: nobody can pay")
        self.cards = cards
        self._issued = frozenset(cards)
        self.rng = rng
        self.stats = stats

    def amount_fen(self, amount: Amount) -> int:
        rng = self.rng
        if amount.prices_fen:
            return rng.choice(amount.prices_fen)
        steps = (amount.max_fen - amount.min_fen) // amount.step_fen
        return amount.min_fen + amount.step_fen * rng.randint(0, steps)

    def card_no(self, phase: Phase) -> int:
        rng = self.rng
        if phase.unknown_card_share and rng.random() < phase.unknown_card_share:
            while True:
                card = UNKNOWN_CARD_BASE + rng.randrange(10**12)
                if card not in self._issued:
                    return card
        return self.cards[rng.randrange(len(self.cards))]

    def customer(self, phase: Phase, visit: Visit) -> Customer:
        self.stats.customers += 1
        return Customer(
            card_no=self.card_no(phase),
            amount_fen=self.amount_fen(visit.amount),
            inquiry=bool(phase.inquiry_share) and self.rng.random() < phase.inquiry_share,
        )

    async def arrive(self, plan: PhasePlan, ends_at: float) -> None:
        """Poisson arrivals at the phase's rate until `ends_at`, each queued at a till."""
        rate = plan.phase.arrivals_per_s
        assert rate is not None
        rng = self.rng
        stats = self.stats
        visits = plan.visits
        cum = plan.cum_weights
        total = cum[-1]
        phase = plan.phase
        at = trio.current_time()
        while True:
            at += rng.expovariate(rate)
            if at >= ends_at:
                return
            if at > trio.current_time():
                await trio.sleep_until(at)
            v = visits[bisect.bisect_right(cum, rng.random() * total)] if len(visits) > 1 \
                else visits[0]
            tills = v.tills
            till = tills[rng.randrange(len(tills))]
            if len(tills) > 1:
                other = tills[rng.randrange(len(tills))]
                if other.queue_length() < till.queue_length():
                    till = other
            if not till.enqueue_nowait(self.customer(phase, v.visit)):
                stats.balked += 1
