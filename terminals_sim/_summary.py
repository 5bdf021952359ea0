"""The summary of a run: one msgspec Struct (what `--json` writes) and its table."""

from __future__ import annotations

from typing import Final

import msgspec

SIM_CPU_LIMIT_PCT: Final = 90.0
"""Above this share of one core the simulator itself was the bottleneck (a Python process uses
one core), so its figures say nothing about the switch's limit."""


class LatencySummary(msgspec.Struct, frozen=True, kw_only=True):
    """Tap to accepted answer, resends included, as the cardholder waits (milliseconds)."""

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


class PhaseSummary(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    seconds: float
    cardholders: int
    answered: int
    answers_per_s: float


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    scenario: str
    switch: str
    terminals: int
    terminals_signed_on_peak: int
    seconds: float
    """Wall time of the phases (the drain after them is not counted)."""
    requests: dict[str, int]
    """Requests sent, by type (each once, however often it was resent)."""
    answers: dict[str, dict[str, int]]
    """Answers accepted, by request type and response-code name."""
    answered: int
    approved: int
    declined: int
    purchases_approved: int
    purchase_declines: dict[str, int]
    """Declined purchases by reason (response-code name)."""
    latency: LatencySummary
    retries: int
    """Resends of an unanswered request with the same txn_seq."""
    repeats_answered: int
    """Answers to a txn_seq that had been answered before (the switch answering a repeat)."""
    answer_mismatches: int
    """Repeats whose answer differed from the first answer: must be 0."""
    answers_dropped: int
    """Answers the simulated network lost (faults)."""
    timeouts: int
    busy: int
    gave_up: int
    """Requests left unanswered after every retry (purchases among them were reversed)."""
    reversals_sent: int
    reversals: dict[str, int]
    reversals_unanswered: int
    reconnects: int
    connect_failures: int
    sign_on_refused: dict[str, int]
    closed_by_switch: dict[str, int]
    protocol_errors: int
    heartbeats: int
    heartbeat_timeouts: int
    cardholders: int
    balked: int
    """Cardholders who found every queue they looked at full and walked away."""
    unserved_at_end: int
    """Cardholders still queued when the last phase ended."""
    unanswered_at_end: int
    """Requests still waiting for an answer when the drain deadline passed."""
    cardholders_per_s: float
    answers_per_s: float
    sim_cpu_pct: float
    """The simulator's CPU time over the phases, in % of one core."""
    sim_was_limit: bool
    phases: list[PhaseSummary]
    notes: list[str]


def _n(value: int) -> str:
    return f"{value:,}"


def render_summary(s: Summary) -> str:
    lines = [
        "",
        f"OneCard terminal simulator — {s.scenario}",
        "=" * (31 + len(s.scenario)),
        f"  switch                    {s.switch}",
        f"  terminals                 {_n(s.terminals)} POS "
        f"({_n(s.terminals_signed_on_peak)} signed on at the peak)",
        f"  phases                    {s.seconds:.1f} s: "
        + ", ".join(f"{p.name} {p.seconds:.0f} s {p.answers_per_s:,.0f}/s" for p in s.phases),
        f"  cardholders               {_n(s.cardholders)} ({s.cardholders_per_s:,.1f}/s); "
        f"balked {_n(s.balked)}, still queued at the end {_n(s.unserved_at_end)}",
        f"  answers                   {_n(s.answered)} ({s.answers_per_s:,.1f}/s achieved)",
        "",
        "  requests by type and response code",
        f"    {'type':<10}{'sent':>10}  answers",
    ]
    for kind in sorted(set(s.requests) | set(s.answers)):
        codes = s.answers.get(kind, {})
        detail = ", ".join(f"{name} {_n(n)}" for name, n in
                           sorted(codes.items(), key=lambda kv: -kv[1])) or "-"
        lines.append(f"    {kind:<10}{_n(s.requests.get(kind, 0)):>10}  {detail}")
    purchases = s.purchases_approved + sum(s.purchase_declines.values())
    lines += [
        "",
        f"  purchases approved        {_n(s.purchases_approved)} of {_n(purchases)}"
        + (f" ({100.0 * s.purchases_approved / purchases:.1f} %)" if purchases else ""),
        f"  purchases declined        {_n(sum(s.purchase_declines.values()))}",
    ]
    for reason, n in sorted(s.purchase_declines.items(), key=lambda kv: -kv[1]):
        lines.append(f"      {reason:<24}{_n(n):>8}")
    lat = s.latency
    lines += [
        "",
        f"  latency (tap to answer)   p50 {lat.p50_ms:.2f} ms   p90 {lat.p90_ms:.2f} ms   "
        f"p99 {lat.p99_ms:.2f} ms   max {lat.max_ms:.2f} ms   ({_n(lat.count)} answers)",
        f"  timeouts / retries        {_n(s.timeouts)} timeouts, {_n(s.retries)} resends with "
        f"the same txn_seq, {_n(s.busy)} BUSY",
        f"  repeats answered          {_n(s.repeats_answered)} "
        f"({_n(s.answer_mismatches)} differed from the first answer)",
        f"  answers lost (faults)     {_n(s.answers_dropped)}",
        f"  given up / reversals      {_n(s.gave_up)} given up; {_n(s.reversals_sent)} reversals "
        "sent" + (f" ({', '.join(f'{k} {_n(v)}' for k, v in sorted(s.reversals.items()))})"
                  if s.reversals else "")
        + (f", {_n(s.reversals_unanswered)} unanswered" if s.reversals_unanswered else ""),
        f"  connections               {_n(s.reconnects)} reconnects, {_n(s.connect_failures)} "
        f"failed attempts, {_n(s.protocol_errors)} protocol errors, {_n(s.heartbeats)} "
        f"heartbeats ({_n(s.heartbeat_timeouts)} unanswered)",
    ]
    if s.sign_on_refused:
        lines.append("  sign-ons refused          " + ", ".join(
            f"{k} {_n(v)}" for k, v in sorted(s.sign_on_refused.items())))
    if s.closed_by_switch:
        lines.append("  sessions closed by switch " + ", ".join(
            f"{k} {_n(v)}" for k, v in sorted(s.closed_by_switch.items())))
    if s.unanswered_at_end:
        lines.append(f"  unanswered at the end     {_n(s.unanswered_at_end)}")
    lines.append(f"  simulator CPU             {s.sim_cpu_pct:.0f} % of one core")
    if s.sim_was_limit:
        lines.append(f"    over {SIM_CPU_LIMIT_PCT:.0f} %: the simulator, not the switch, was the "
                     "limit; run several simulators (split the terminals) to load the switch more")
    lines += [f"  note: {note}" for note in s.notes]
    return "\n".join(lines)
