"""The terminal simulator (terminals_sim) on trio, against the switch as a real process.

Scenario files: the shipped ones load, and every kind of mistake is refused naming the field.
Runs: a faulty network (answers lost, purchases never answered) exercises resends with the same
txn_seq and reversals, and the journal shows every request once and every answer the tills
accepted; a switch killed with SIGKILL mid-run and restarted on the same port is rejoined by
every till (back-off and sign-on), and nothing acknowledged is lost or charged twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import msgspec
import pytest
import trio

import terminals_sim
from ledger_ext import REVERSAL as KIND_REVERSAL
from onecard.audit import AuditReport, audit_conservation
from onecard.harness import SwitchProcess, free_port
from onecard.population import seed_population
from onecard.sim import load_site, utc_offset_text
from protocols import ocp
from terminals_sim import ScenarioError, Simulation, UnsupportedTerminalKind

# A small site: 2 fixed-price tills and 10 free-amount tills; cardholders in all states.
SMALL = """
name = "small"
seed = 7

[population]
accounts = 400
lost_share = 0.05
frozen_share = 0.03
low_balance_share = 0.05
subsidy_share = 0.5
main_fen = { min_fen = 2_000, max_fen = 40_000 }

[[population.merchants]]
name = "set meal"
fixed_price_fen = 800

[[population.merchants]]
name = "shop"
kind = "shop"

[[terminals]]
merchant = "set meal"
count = 4

[[terminals]]
merchant = "shop"
count = 10

[pos]
answer_timeout_seconds = 0.5
retries_max = 2
reversal_retries_max = 50
backoff_initial_seconds = 0.05
backoff_max_seconds = 0.5

[run]
drain_seconds = 60

[[phases]]
name = "steady"
seconds = 600
think_seconds = 0.02
inquiry_share = 0.05
unknown_card_share = 0.01
visit = [
    { merchant = "set meal" },
    { merchant = "shop", amount = { min_fen = 100, max_fen = 900, step_fen = 50 } },
]
"""

# The same site behind a lossy network: the last [[phases]] table gets faults.
FAULTY = SMALL + """
[phases.faults]
drop_answer_share = 0.15
never_answer_share = 0.03
"""

# Every purchase's answer lost, and an answer timeout far longer than the drain: when the drain
# deadline passes, every till is still waiting for its purchase's answer.
STUCK = SMALL.replace("answer_timeout_seconds = 0.5", "answer_timeout_seconds = 60").replace(
    "drain_seconds = 60", "drain_seconds = 0.5") + """
[phases.faults]
never_answer_share = 1.0
"""


def _scenario(text: str = SMALL) -> terminals_sim.Scenario:
    return terminals_sim.decode_scenario(text, "test.toml")


# -- scenario files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", terminals_sim.scenario_names())
def test_every_shipped_scenario_loads_and_is_supported(name: str) -> None:
    scenario = terminals_sim.load_scenario(name)
    terminals_sim.check_supported(scenario)
    assert scenario.name == name
    assert sum(g.count for g in scenario.terminals) >= 20
    squeezed = terminals_sim.with_seconds(scenario, 10)
    assert squeezed.seconds == pytest.approx(10)
    assert [p.name for p in squeezed.phases] == [p.name for p in scenario.phases]


def test_the_lunch_rush_has_what_a_canteen_has() -> None:
    s = terminals_sim.load_scenario("canteen_lunch_rush")
    assert sum(g.count for g in s.terminals) >= 200
    assert s.population.accounts >= 1_000
    assert any(m.fixed_price_fen for m in s.population.merchants)
    assert any(not m.fixed_price_fen for m in s.population.merchants)
    assert s.population.lost_share > 0 and s.population.low_balance_share > 0
    assert s.population.subsidy_share > 0
    assert s.population.now_in_meal_window == "lunch"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("count = 4", "count = 4\ncolour = 1"), "terminals[0].colour"),
        (("seed = 7", "seed = 7\nwibble = 2"), "wibble"),
        (("lost_share = 0.05", "lost_share = 1.5"), "population.lost_share"),
        (("merchant = \"set meal\"\ncount", "merchant = \"canteen 9\"\ncount"),
         "terminals[0].merchant"),
        (("{ merchant = \"set meal\" }", "{ merchant = \"nowhere\" }"),
         "phases[0].visit[0].merchant"),
        (("think_seconds = 0.02", "think_seconds = 0.02\narrivals_per_s = 5"), "phases[0]"),
        (("min_fen = 100, max_fen = 900", "min_fen = 1000, max_fen = 900"),
         "phases[0].visit[1].amount.min_fen"),
        (("answer_timeout_seconds = 0.5", "answer_timeout_seconds = -1"),
         "pos.answer_timeout_seconds"),
        (("accounts = 400", "accounts = \"many\""), "population.accounts"),
    ],
)
def test_a_mistake_in_a_scenario_is_refused_naming_the_field(change: tuple[str, str],
                                                             field: str) -> None:
    old, new = change
    assert old in SMALL
    with pytest.raises(ScenarioError) as caught:
        _scenario(SMALL.replace(old, new, 1))
    message = str(caught.value)
    assert message.startswith("test.toml: "), message
    assert repr(field) in message, message


def test_terminal_kinds_the_switch_does_not_speak_are_refused_clearly() -> None:
    scenario = _scenario(SMALL.replace('[[terminals]]\nmerchant = "shop"',
                                       '[[terminals]]\nkind = "door"\nmerchant = "shop"'))
    with pytest.raises(UnsupportedTerminalKind, match=r"terminals\[1\].*door"):
        terminals_sim.check_supported(scenario)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(28_800, "+8:00"), (0, "+0:00"), (-22_020, "-6:07"), (-1_800, "-0:30"), (20_700, "+5:45"),
     (-50_400, "-14:00")],
)
def test_the_seeded_utc_offset_is_printed_with_its_sign_outside(seconds: int, text: str) -> None:
    # -22,020 s is 6 h 7 min west; floor division once printed it as "-7:07".
    assert utc_offset_text(seconds) == text


def test_unknown_scenario_names_list_the_shipped_ones(tmp_path: Any) -> None:
    with pytest.raises(ScenarioError, match="canteen_lunch_rush"):
        terminals_sim.load_scenario("lunch")
    with pytest.raises(ScenarioError, match="cannot read"):
        terminals_sim.load_scenario(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [")
    with pytest.raises(ScenarioError, match=r"bad\.toml"):
        terminals_sim.load_scenario(bad)


# -- runs against a real switch ------------------------------------------------------------------


class SimSite:
    """A database seeded from a scenario, its Site, and a switch process."""

    def __init__(self, dsn: str, scenario: terminals_sim.Scenario) -> None:
        self.dsn = dsn
        self.scenario = scenario
        self.secret = b"s" * 32
        asyncio.run(self._with(lambda c: seed_population(c, scenario)))
        self.site: terminals_sim.Site = asyncio.run(self._with(load_site))
        self.port = free_port()
        self.switch = self._process()

    def _process(self) -> SwitchProcess:
        return SwitchProcess(self.dsn, self.secret.hex(),
                             extra_env={"ONECARD_PORT": str(self.port)})

    async def _with(self, fn: Any) -> Any:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    def restart(self) -> None:
        self.switch = self._process().start()

    def simulation(self, **kw: Any) -> Simulation:
        return Simulation(self.scenario, self.site, host="127.0.0.1", port=self.port,
                          master_secret=self.secret, record=True, **kw)

    def journal(self) -> dict[tuple[int, int], asyncpg.Record]:
        rows = asyncio.run(self._with(lambda c: c.fetch(
            "SELECT terminal_id, txn_seq, ref_txn_seq, kind, code, amount_fen, main_fen,"
            " subsidy_fen, main_delta_fen + subsidy_delta_fen AS delta FROM journal")))
        return {(r["terminal_id"], r["txn_seq"]): r for r in rows}

    def audit(self) -> AuditReport:
        return asyncio.run(self._with(audit_conservation))  # type: ignore[no-any-return]


def _sim_site(dsn: str, text: str) -> Iterator[SimSite]:
    s = SimSite(dsn, _scenario(text))
    s.switch.start()
    try:
        yield s
    finally:
        s.switch.stop()


@pytest.fixture
def faulty_site(db_dsn: str) -> Iterator[SimSite]:
    yield from _sim_site(db_dsn, FAULTY)


@pytest.fixture
def small_site(db_dsn: str) -> Iterator[SimSite]:
    yield from _sim_site(db_dsn, SMALL)


@pytest.fixture
def stuck_site(db_dsn: str) -> Iterator[SimSite]:
    yield from _sim_site(db_dsn, STUCK)


def _assert_acknowledged_means_journaled(sim: Simulation,
                                         journal: dict[tuple[int, int], Any]) -> None:
    assert sim.answers
    for key, answer in sim.answers.items():
        row = journal.get(key)
        if isinstance(answer, ocp.Error):
            continue  # refused before the ledger (e.g. a field out of range): nothing journaled
        assert row is not None, f"the till accepted an answer to {key} that is not journaled"
        assert row["code"] == answer.code, key
        assert row["main_fen"] + row["subsidy_fen"] == answer.balance_fen, key
        if isinstance(answer, ocp.PurchaseResult):
            assert answer.amount_fen == (row["amount_fen"] if row["code"] == 0 else 0), key


async def _run_until(sim: Simulation, answers: int, then: Any = None) -> terminals_sim.Summary:
    result: list[terminals_sim.Summary] = []
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            result.append(await sim.run())

        nursery.start_soon(run)
        with trio.fail_after(180):
            await sim.wait_answered(answers)
        if then is not None:
            await then()
        sim.finish()
    return result[0]


@pytest.mark.trio
async def test_lost_answers_are_resent_with_the_same_seq_and_never_charged_twice(
        faulty_site: SimSite) -> None:
    sim = faulty_site.simulation()
    summary = await _run_until(sim, 1_500)

    # The faults happened, and the tills did what a till does about them.
    assert summary.answers_dropped > 0
    assert summary.retries > 0
    assert summary.repeats_answered > 0
    assert summary.answer_mismatches == 0, "a repeat was answered differently"
    assert summary.gave_up > 0 and summary.reversals_sent > 0
    assert summary.reversals_unanswered == 0
    assert summary.unanswered_at_end == 0
    # The population's states show in the declines.
    for code in ("CARD_LOST", "ACCOUNT_FROZEN", "UNKNOWN_CARD"):
        assert summary.purchase_declines.get(code, 0) > 0, (code, summary.purchase_declines)
    assert summary.sim_cpu_pct > 0

    assert faulty_site.switch.stop() == 0
    journal = await trio.to_thread.run_sync(faulty_site.journal)
    _assert_acknowledged_means_journaled(sim, journal)
    # Every request that went out is journaled once (the table's key says at most once).
    for key in sim.requests:
        assert key in journal, f"request {key} sent but never journaled"
    # A purchase the till gave up on is reversed: the cardholder paid nothing for it in the end.
    for (tid, seq), request in sim.given_up.items():
        if not isinstance(request, ocp.Purchase):
            continue
        original = journal[(tid, seq)]
        reversal = next(r for (t, _), r in journal.items()
                        if t == tid and r["kind"] == KIND_REVERSAL and r["ref_txn_seq"] == seq)
        assert original["delta"] + reversal["delta"] == 0, (tid, seq)
    report = await trio.to_thread.run_sync(faulty_site.audit)
    assert report.duplicate_requests == 0
    assert report.conserved, report
    # Money is an int in the report too (PostgreSQL's sum of bigint is numeric).
    assert type(report.sum_of_balances_fen) is int and type(report.journal_sum_fen) is int


@pytest.mark.trio
async def test_tills_rejoin_a_switch_killed_mid_run_and_lose_nothing_acknowledged(
        small_site: SimSite) -> None:
    sim = small_site.simulation()
    before: list[int] = []

    async def crash_and_restart() -> None:
        proc = small_site.switch.proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        await trio.to_thread.run_sync(small_site.switch.wait, 30)
        before.append(sim.stats.answered)
        await trio.to_thread.run_sync(small_site.restart)
        # The tills find the switch again on their own and go on serving.
        with trio.fail_after(120):
            await sim.wait_answered(before[0] + 2_000)

    summary = await _run_until(sim, 2_000, crash_and_restart)
    assert summary.reconnects >= summary.terminals, "every till signs on again"
    assert summary.answer_mismatches == 0
    assert summary.answered >= before[0] + 2_000
    assert summary.unanswered_at_end == 0

    assert small_site.switch.stop() == 0
    journal = await trio.to_thread.run_sync(small_site.journal)
    _assert_acknowledged_means_journaled(sim, journal)
    report = await trio.to_thread.run_sync(small_site.audit)
    assert report.duplicate_requests == 0
    assert report.conserved, report


@pytest.mark.trio
async def test_requests_still_unanswered_when_the_drain_ends_are_counted(
        stuck_site: SimSite) -> None:
    sim = stuck_site.simulation()
    result: list[terminals_sim.Summary] = []
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            result.append(await sim.run())

        nursery.start_soon(run)
        with trio.fail_after(120):
            while sim.statistics().in_flight < 14:
                await trio.sleep(0.02)
        sim.finish()
    summary = result[0]
    # The drain ends after 0.5 s with each of the 14 tills waiting for its purchase's answer;
    # cancelling them must not hide them (it once reported 0 here whatever was in flight).
    assert summary.unanswered_at_end == 14, summary
    assert summary.gave_up == 0 and summary.answer_mismatches == 0
    assert "unanswered at the end     14" in terminals_sim.render_summary(summary)


@pytest.mark.trio
async def test_the_summary_is_what_the_json_says(small_site: SimSite) -> None:
    sim = small_site.simulation()
    summary = await _run_until(sim, 500)
    text = terminals_sim.render_summary(summary)
    assert "purchases approved" in text and "simulator CPU" in text
    decoded = msgspec.json.decode(msgspec.json.encode(summary), type=terminals_sim.Summary)
    assert decoded == summary
    sent = sum(summary.requests.values())
    assert summary.answered == sum(sum(v.values()) for v in summary.answers.values())
    assert summary.answered <= sent
    assert summary.approved + summary.declined == summary.answered
    assert summary.terminals == 14
    assert summary.terminals_signed_on_peak == 14


# -- the command ---------------------------------------------------------------------------------


def _onecard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onecard", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def test_onecard_sim_drives_a_running_switch_and_writes_its_summary(
        small_site: SimSite, tmp_path: Any) -> None:
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL)
    out = tmp_path / "summary.json"
    done = _onecard("sim", str(scenario), "--switch", f"127.0.0.1:{small_site.port}",
                    "--dsn", small_site.dsn, "--seconds", "3", "--json", str(out),
                    env={"ONECARD_MASTER_SECRET": small_site.secret.hex()})
    assert done.returncode == 0, done.stderr
    assert "OneCard terminal simulator — small" in done.stdout
    report = msgspec.json.decode(out.read_bytes())
    summary = report["summary"]
    assert summary["terminals"] == 14 and summary["answered"] > 0
    assert summary["answer_mismatches"] == 0
    # What the tills were told is what the switch journaled.
    journal = small_site.journal()
    assert len(journal) == sum(summary["requests"].values())


# Starts the switch the way `onecard sim --private` does, then handles Ctrl-C as onecard sim
# does (by itself), prints the switch's pid and port, and stops it when stdin closes.
_PRIVATE_SWITCH_CHILD = """
import signal, sys
from onecard.sim import start_private_switch
switch = start_private_switch(sys.argv[1], bytes.fromhex(sys.argv[2]))
signal.signal(signal.SIGINT, signal.SIG_IGN)
print(switch.proc.pid, switch.port, flush=True)
sys.stdin.read()
print(switch.stop(), flush=True)
"""


def test_a_ctrl_c_at_the_terminal_leaves_the_private_switch_serving(db_dsn: str) -> None:
    """The first Ctrl-C ends the phases and the tills drain against the switch, so under
    --private the switch must not get that Ctrl-C, although a terminal sends it to the whole
    foreground process group (it once did, and the tills spent the drain reconnecting)."""
    sim_site = SimSite(db_dsn, _scenario())
    child = subprocess.Popen(
        [sys.executable, "-c", _PRIVATE_SWITCH_CHILD, db_dsn, sim_site.secret.hex()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    pid = 0
    try:
        assert child.stdout is not None and child.stdin is not None
        pid, port = (int(x) for x in child.stdout.readline().split())
        os.killpg(child.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        time.sleep(1.0)  # a switch that got it stops listening at once
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        child.stdin.close()
        assert child.stdout.readline().strip() == "0", "the switch stopped cleanly"
        assert child.wait(60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["nowhere"], {}, "no scenario named 'nowhere'"),
        (["canteen_lunch_rush"], {"ONECARD_DSN": ""}, "give --dsn"),
        (["canteen_lunch_rush", "--dsn", "postgresql://x/y"], {}, "give --switch"),
        (["canteen_lunch_rush", "--dsn", "postgresql://x/y", "--switch", "localhost"], {},
         "expected HOST:PORT"),
        (["canteen_lunch_rush", "--dsn", "postgresql://x/y", "--switch", "127.0.0.1:1"],
         {"ONECARD_MASTER_SECRET": ""}, "ONECARD_MASTER_SECRET"),
        (["canteen_lunch_rush", "--dsn", "postgresql://x/y", "--switch", "127.0.0.1:1"],
         {"ONECARD_MASTER_SECRET": "zz"}, "32 to 64 bytes of hex"),
        (["canteen_lunch_rush", "--seconds", "0", "--private"], {}, "--seconds must be above 0"),
    ],
)
def test_onecard_sim_says_what_is_wrong_and_exits_2(args: list[str], env: dict[str, str],
                                                    message: str) -> None:
    done = _onecard("sim", *args, env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr, done.stderr
