"""A simulation run: every terminal a task in one nursery, the phases one after the other.

    sim = Simulation(scenario, site, host=..., port=..., master_secret=...)
    summary = await sim.run()          # inside trio.run(); sim.finish() ends it early

Order: every terminal signs on (at most `[run] sign_on_concurrency` at once); the phases run;
then no new cardholders come, each till finishes the one in front of it (at most
`[run] drain_seconds`), signs off and closes.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any, Final, TextIO

import trio

from protocols import ocp
from terminals_sim import limits
from terminals_sim._crowd import Crowd, PhasePlan, Schedule
from terminals_sim._errors import SimError
from terminals_sim._pos import Pos
from terminals_sim._scenario import Scenario, check_supported
from terminals_sim._site import Site
from terminals_sim._stats import Statistics, Stats
from terminals_sim._summary import (
    SIM_CPU_LIMIT_PCT,
    LatencySummary,
    PhaseSummary,
    Summary,
)

_PROGRESS_TTY_SECONDS: Final = 1.0
_PROGRESS_PLAIN_SECONDS: Final = 5.0


class Simulation:
    """Simulated terminals driving one running switch."""

    def __init__(
        self,
        scenario: Scenario,
        site: Site,
        *,
        host: str,
        port: int,
        master_secret: bytes,
        record: bool = False,
        terminals_max: int | None = None,
        progress: TextIO | None = None,
        progress_every_seconds: float | None = None,
    ) -> None:
        check_supported(scenario)
        self.scenario = scenario
        self.host = host
        self.port = port
        self.notes: list[str] = []
        specs = [t for t in site.terminals if t.kind == "pos" and t.enabled]
        skipped = Counter(t.kind for t in site.terminals if t.kind != "pos")
        for kind, n in sorted(skipped.items()):
            self.notes.append(f"{n} {kind} terminals of the site are not simulated: the switch "
                              f"does not speak {kind} terminals yet")
        disabled = sum(1 for t in site.terminals if t.kind == "pos" and not t.enabled)
        if disabled:
            self.notes.append(f"{disabled} disabled POS terminals are not simulated")
        if terminals_max is not None and len(specs) > terminals_max:
            self.notes.append(f"simulating {terminals_max} of the site's {len(specs)} POS "
                              "terminals (--terminals)")
            specs = specs[:terminals_max]
        if not specs:
            raise SimError("the site has no enabled POS terminal to simulate")
        if len(specs) > limits.TERMINALS_MAX:
            raise SimError(f"{len(specs)} terminals: one simulator runs at most "
                           f"{limits.TERMINALS_MAX} (split them over several processes)")
        self.stats = Stats(len(specs))
        rng = random.Random(scenario.seed)
        self.tills = [
            Pos(self, spec,
                ocp.derive_terminal_key(master_secret, spec.terminal_id, spec.key_version),
                random.Random(rng.getrandbits(64)))
            for spec in specs
        ]
        try:
            self.crowd = Crowd(site.cards_in_use(), random.Random(rng.getrandbits(64)),
                               self.stats)
            self.plans = [PhasePlan(i, p, self.tills) for i, p in enumerate(scenario.phases)]
        except LookupError as exc:
            raise SimError(f"scenario {scenario.name!r}: {exc.args[0]}") from None
        self.schedule = Schedule()
        self.sign_on_limiter = trio.CapacityLimiter(scenario.run.sign_on_concurrency)
        self._progress = progress
        self._progress_every = progress_every_seconds
        self._record = record
        self.requests: dict[tuple[int, int], Any] = {}
        """(terminal_id, txn_seq) -> the request, when recording."""
        self.answers: dict[tuple[int, int], Any] = {}
        """(terminal_id, txn_seq) -> the answer the till accepted, when recording."""
        self.given_up: dict[tuple[int, int], Any] = {}
        """(terminal_id, txn_seq) -> a request left unanswered after every retry."""
        self._running = len(self.tills)
        self._all_done = trio.Event()
        self._finishing = False
        self._scope: trio.CancelScope | None = None
        self._answer_waiters: list[tuple[int, trio.Event]] = []

    # -- for callers while it runs ---------------------------------------------------------

    def statistics(self) -> Statistics:
        return self.stats.snapshot()

    def finish(self) -> None:
        """End the current phase now and skip the rest; the drain follows as usual."""
        self._finishing = True
        if self._scope is not None:
            self._scope.cancel()

    async def wait_signed_on(self) -> None:
        """Until every terminal has been signed on at the same time once."""
        await self.stats.all_signed_on.wait()

    async def wait_answered(self, count: int) -> None:
        """Until `count` answers have been accepted in all (the caller sets the deadline)."""
        if self.stats.answered >= count:
            return
        event = trio.Event()
        self._answer_waiters.append((count, event))
        await event.wait()

    # -- called by the terminals -------------------------------------------------------------

    def terminal_done(self) -> None:
        self._running -= 1
        if self._running == 0:
            self._all_done.set()

    def record_request(self, terminal_id: int, msg: Any) -> None:
        if self._record and len(self.requests) < limits.RECORDED_MAX:
            self.requests[(terminal_id, msg.txn_seq)] = msg

    def record_answer(self, terminal_id: int, request: Any, answer: Any) -> None:
        if self._answer_waiters:
            answered = self.stats.answered
            for count, event in self._answer_waiters:
                if answered >= count:
                    event.set()
            self._answer_waiters = [w for w in self._answer_waiters if not w[1].is_set()]
        if self._record and len(self.answers) < limits.RECORDED_MAX:
            self.answers[(terminal_id, request.txn_seq)] = answer

    def record_gave_up(self, terminal_id: int, msg: Any) -> None:
        if self._record and len(self.given_up) < limits.RECORDED_MAX:
            self.given_up[(terminal_id, msg.txn_seq)] = msg

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> Summary:
        stats = self.stats
        scenario = self.scenario
        phases: list[PhaseSummary] = []
        async with trio.open_nursery() as nursery:
            for till in self.tills:
                nursery.start_soon(till.run)
            if self._progress is not None:
                nursery.start_soon(self._report_progress, self._progress)
            with trio.CancelScope() as self._scope:
                self._scope.deadline = trio.current_time() + scenario.run.sign_on_deadline_seconds
                await stats.all_signed_on.wait()
            if not stats.all_signed_on.is_set():
                self.notes.append(
                    f"only {stats.signed_on_peak} of {stats.terminals} terminals had signed on "
                    f"after {scenario.run.sign_on_deadline_seconds:g} s; the phases started anyway"
                )
            wall0 = trio.current_time()
            cpu0 = time.process_time()
            for plan in self.plans:
                if self._finishing:
                    break
                started = trio.current_time()
                answered0, cardholders0 = stats.answered, stats.customers
                ends_at = started + plan.phase.seconds
                self.schedule.start(plan, ends_at)
                stats.phase = plan.phase.name
                for till in self.tills:
                    till.wake()
                with trio.CancelScope(deadline=ends_at) as self._scope:
                    if plan.arrivals:
                        await self.crowd.arrive(plan, ends_at)
                    await trio.sleep_until(ends_at)
                seconds = trio.current_time() - started
                phases.append(PhaseSummary(
                    name=plan.phase.name,
                    seconds=round(seconds, 3),
                    cardholders=stats.customers - cardholders0,
                    answered=stats.answered - answered0,
                    answers_per_s=round((stats.answered - answered0) / seconds, 1),
                ))
            wall = max(trio.current_time() - wall0, 1e-9)
            cpu = time.process_time() - cpu0
            answered, cardholders = stats.answered, stats.customers
            self._scope = None
            self.schedule.finish()
            stats.phase = "drain"
            for till in self.tills:
                till.wake()
            with trio.move_on_after(scenario.run.drain_seconds):
                await self._all_done.wait()
            # Count them before the cancellation below: each cancelled request leaves in_flight.
            unanswered = stats.in_flight
            nursery.cancel_scope.cancel()
        if self._progress is not None and self._progress.isatty():
            self._progress.write("\n")
            self._progress.flush()
        return self._summary(phases, wall, cpu, answered, cardholders, unanswered)

    def _summary(self, phases: list[PhaseSummary], wall: float, cpu: float, answered: int,
                 cardholders: int, unanswered: int) -> Summary:
        s = self.stats
        answers: dict[str, dict[str, int]] = {}
        for (kind, code), n in sorted(s.answers.items()):
            answers.setdefault(kind, {})[code] = n
        lat = s.latency
        ms = 1000.0
        cpu_pct = round(100.0 * cpu / wall, 1)
        purchases_approved = answers.get("purchase", {}).get("APPROVED", 0)
        return Summary(
            scenario=self.scenario.name,
            switch=f"{self.host}:{self.port}",
            terminals=s.terminals,
            terminals_signed_on_peak=s.signed_on_peak,
            seconds=round(wall, 3),
            requests=dict(sorted(s.sent.items())),
            answers=answers,
            answered=s.answered,
            approved=s.approved,
            declined=s.answered - s.approved,
            purchases_approved=purchases_approved,
            purchase_declines=dict(s.purchase_declines.most_common()),
            latency=LatencySummary(
                count=lat.count,
                p50_ms=round(lat.percentile(0.50) * ms, 3),
                p90_ms=round(lat.percentile(0.90) * ms, 3),
                p99_ms=round(lat.percentile(0.99) * ms, 3),
                max_ms=round(lat.max_seconds * ms, 3),
            ),
            retries=s.retries,
            repeats_answered=s.repeats_answered,
            answer_mismatches=s.answer_mismatches,
            answers_dropped=s.answers_dropped,
            timeouts=s.timeouts,
            busy=s.busy,
            gave_up=s.gave_up,
            reversals_sent=s.reversals_sent,
            reversals=dict(sorted(s.reversals.items())),
            reversals_unanswered=s.reversals_unanswered,
            reconnects=s.reconnects,
            connect_failures=s.connect_failures,
            sign_on_refused=dict(sorted(s.sign_on_refused.items())),
            closed_by_switch=dict(sorted(s.closed_by_switch.items())),
            protocol_errors=s.protocol_errors,
            heartbeats=s.heartbeats,
            heartbeat_timeouts=s.heartbeat_timeouts,
            cardholders=s.customers,
            balked=s.balked,
            unserved_at_end=sum(t.queue_length() for t in self.tills),
            unanswered_at_end=unanswered,
            cardholders_per_s=round(cardholders / wall, 1),
            answers_per_s=round(answered / wall, 1),
            sim_cpu_pct=cpu_pct,
            sim_was_limit=cpu_pct > SIM_CPU_LIMIT_PCT,
            phases=phases,
            notes=list(self.notes),
        )

    async def _report_progress(self, out: TextIO) -> None:
        """One line: updated in place on a terminal, a plain line every few seconds else."""
        tty = out.isatty()
        every = self._progress_every or (_PROGRESS_TTY_SECONDS if tty else _PROGRESS_PLAIN_SECONDS)
        s = self.stats
        t0 = last_t = trio.current_time()
        last_cpu = time.process_time()
        last_answered = s.answered
        while True:
            await trio.sleep(every)
            now = trio.current_time()
            cpu = time.process_time()
            dt = max(now - last_t, 1e-9)
            rate = (s.answered - last_answered) / dt
            approved = 100.0 * s.approved / s.answered if s.answered else 0.0
            p99 = s.window_latency.percentile(0.99) * 1000.0
            s.window_latency.clear()
            line = (
                f"{now - t0:6.1f} s  {s.phase or 'signing on':<12.12} "
                f"signed on {s.signed_on:>5}  rate {rate:8,.0f}/s  answered {s.answered:>9,}  "
                f"approved {approved:5.1f} %  p99 {p99:7.2f} ms  reconnects {s.reconnects:>5}  "
                f"sim CPU {100.0 * (cpu - last_cpu) / dt:3.0f} %"
            )
            if tty:
                out.write("\r" + line)
            else:
                out.write(line + "\n")
            out.flush()
            last_t, last_cpu, last_answered = now, cpu, s.answered
