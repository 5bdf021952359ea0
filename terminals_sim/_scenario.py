"""Scenarios as data: a TOML file decoded into msgspec Structs.

A scenario has two halves. `[population]` and `[[terminals]]` describe who exists (cardholders,
their wallets and classes, merchants, terminals); `onecard sim --seed` writes them into an empty
database before the switch starts. `[[phases]]`, `[pos]` and `[run]` describe what happens: how
fast cardholders arrive, where they go, what they spend, and which faults the simulated network
adds. docs/operations.md ("The terminal simulator") documents every field.

Every table forbids unknown fields, so a typo names itself; an error names the file and the
field as it is written in the TOML (`phases[1].visit[0].weight`).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

from protocols import limits as wire
from terminals_sim import limits
from terminals_sim._errors import ScenarioError, UnsupportedTerminalKind

Share = Annotated[float, Meta(ge=0.0, le=1.0)]
Fen = Annotated[int, Meta(ge=0, le=wire.AMOUNT_FEN_MAX)]
BalanceFen = Annotated[int, Meta(ge=-wire.AMOUNT_FEN_MAX, le=100 * wire.AMOUNT_FEN_MAX)]
Seconds = Annotated[float, Meta(ge=0.0, le=limits.TIMEOUT_SECONDS_MAX)]
Name = Annotated[str, Meta(min_length=1, max_length=100)]
ClockTime = Annotated[str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")]

TerminalKindName = Literal["pos", "kiosk", "door", "attendance", "water"]
MerchantKind = Literal["canteen", "shop", "service"]
SpendOrder = Literal["subsidy_first", "main_first", "main_only"]

SUPPORTED_KINDS: Final = frozenset({"pos"})
"""Terminal kinds the switch speaks today; the scenario format already names the others."""

SCENARIO_SUFFIX: Final = ".toml"


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Base of every scenario table: unknown keys are errors."""


class FenRange(_Table, kw_only=True, frozen=True):
    """An inclusive range of amounts in fen, drawn uniformly in whole fen."""

    min_fen: BalanceFen
    max_fen: BalanceFen


class MealWindow(_Table, kw_only=True, frozen=True):
    name: Name
    start: ClockTime
    """Local time "HH:MM" the window opens."""
    end: ClockTime
    """Local time "HH:MM" it closes (not included)."""


class IdentityClass(_Table, kw_only=True, frozen=True):
    name: Name
    share: Share
    """Share of cardholders in this class; the shares of all classes sum to 1."""
    overdraft_fen: Fen = 0
    txn_limit_fen: Fen = 0
    daily_limit_fen: Annotated[int, Meta(ge=0, le=100 * wire.AMOUNT_FEN_MAX)] = 0
    meal_count_max: Annotated[int, Meta(ge=0, le=1000)] = 0
    meal_amount_max_fen: Fen = 0


class Merchant(_Table, kw_only=True, frozen=True):
    name: Name
    kind: MerchantKind = "canteen"
    fixed_price_fen: Fen = 0
    """> 0: a fixed-price till (set meal). Its terminals send amount 0 and the switch charges
    this price. 0: a free-amount till; the cardholder's amount comes from the phase."""
    spend_order: SpendOrder = "subsidy_first"


class Population(_Table, kw_only=True, frozen=True):
    site_name: Name = "Simulated campus"
    accounts: Annotated[int, Meta(ge=1, le=limits.ACCOUNTS_MAX)]
    lost_share: Share = 0.0
    """Share of cardholders whose card is reported lost (purchases decline CARD_LOST)."""
    frozen_share: Share = 0.0
    low_balance_share: Share = 0.0
    """Share of cardholders with too little money: what they can spend (main + their class's
    overdraft) is drawn from low_balance_fen, and they have no subsidy."""
    subsidy_share: Share = 0.0
    """Share of (other) cardholders who also have a subsidy wallet."""
    main_fen: FenRange = FenRange(min_fen=0, max_fen=30_000)
    subsidy_fen: FenRange = FenRange(min_fen=0, max_fen=10_000)
    low_balance_fen: FenRange = FenRange(min_fen=0, max_fen=200)
    utc_offset_s: Annotated[int, Meta(ge=-50_400, le=50_400)] = 28_800
    meal_windows: Annotated[list[MealWindow], Meta(max_length=limits.MEAL_WINDOWS_MAX)] = []
    now_in_meal_window: str = ""
    """Name of a meal window to be inside while the run lasts: the seed picks the site's UTC
    offset so that the moment of seeding is 15 minutes into that window. The switch decides
    meal limits by its own clock, which a simulator cannot move."""
    classes: Annotated[
        list[IdentityClass], Meta(min_length=1, max_length=limits.CLASSES_MAX)
    ] = msgspec.field(default_factory=lambda: [IdentityClass(name="cardholder", share=1.0)])
    merchants: Annotated[list[Merchant], Meta(min_length=1, max_length=limits.MERCHANTS_MAX)]


class TerminalGroup(_Table, kw_only=True, frozen=True):
    kind: TerminalKindName = "pos"
    merchant: str = ""
    """The merchant (a name from [[population.merchants]]) the terminals belong to."""
    count: Annotated[int, Meta(ge=1, le=limits.TERMINALS_MAX)]


class Amount(_Table, kw_only=True, frozen=True):
    """What a cardholder spends at a free-amount till (fixed-price tills ignore it)."""

    min_fen: Annotated[int, Meta(ge=1, le=wire.AMOUNT_FEN_MAX)] = 100
    max_fen: Annotated[int, Meta(ge=1, le=wire.AMOUNT_FEN_MAX)] = 2_000
    step_fen: Annotated[int, Meta(ge=1, le=wire.AMOUNT_FEN_MAX)] = 10
    """Amounts are min_fen + k * step_fen, uniformly, up to max_fen."""
    prices_fen: Annotated[
        list[Annotated[int, Meta(ge=1, le=wire.AMOUNT_FEN_MAX)]],
        Meta(max_length=limits.PRICES_MAX),
    ] = []
    """When given: one of these prices, uniformly (min/max/step are then ignored)."""


class Visit(_Table, kw_only=True, frozen=True):
    merchant: Name
    """A merchant name, or a merchant kind ("canteen", "shop", "service") for all of them."""
    weight: Annotated[float, Meta(gt=0.0, le=1e9)] = 1.0
    """Relative share of the phase's arrivals that go here (arrival mode)."""
    amount: Amount = Amount()


class Faults(_Table, kw_only=True, frozen=True):
    """What the simulated network does to answers (the switch itself is not touched)."""

    drop_answer_share: Share = 0.0
    """Share of answers lost on the way to the terminal: it times out and resends the request
    with the same txn_seq; the switch must answer the repeat identically and never charge twice."""
    never_answer_share: Share = 0.0
    """Share of purchases whose every answer is lost (the resends' too): the retry budget runs
    out and the terminal sends a Reversal of that txn_seq."""


class Phase(_Table, kw_only=True, frozen=True):
    name: Name
    seconds: Annotated[float, Meta(gt=0.0, le=limits.PHASE_SECONDS_MAX)]
    arrivals_per_s: Annotated[float, Meta(gt=0.0, le=limits.ARRIVALS_PER_S_MAX)] | None = None
    """Open loop: cardholders arrive at this mean rate (Poisson) and queue at a till."""
    think_seconds: Annotated[float, Meta(ge=0.0, le=limits.TIMEOUT_SECONDS_MAX)] | None = None
    """Closed loop: every visited till always has someone waiting and serves the next
    cardholder this long (on average) after the last one is done."""
    serve_seconds: Seconds = 0.0
    """Arrival mode: time a till spends with a cardholder before the card is tapped."""
    inquiry_share: Share = 0.0
    """Share of cardholders who ask for their balance before they pay."""
    unknown_card_share: Share = 0.0
    """Share of cardholders who tap a card the site never issued (UNKNOWN_CARD)."""
    visit: Annotated[list[Visit], Meta(min_length=1, max_length=limits.VISITS_MAX)]
    faults: Faults = Faults()


class PosBehaviour(_Table, kw_only=True, frozen=True):
    """How a simulated POS terminal behaves (its firmware's settings)."""

    answer_timeout_seconds: Annotated[float, Meta(gt=0.0, le=limits.TIMEOUT_SECONDS_MAX)] = 3.0
    retries_max: Annotated[int, Meta(ge=0, le=limits.RETRIES_MAX)] = 2
    """Resends of an unanswered request (same txn_seq) before the terminal gives up; a purchase
    given up is then reversed."""
    reversal_retries_max: Annotated[int, Meta(ge=0, le=limits.RETRIES_MAX)] = 20
    backoff_initial_seconds: Annotated[float, Meta(gt=0.0, le=limits.BACKOFF_SECONDS_MAX)] = 0.2
    backoff_max_seconds: Annotated[float, Meta(gt=0.0, le=limits.BACKOFF_SECONDS_MAX)] = 10.0
    sign_on_timeout_seconds: Annotated[float, Meta(gt=0.0, le=limits.TIMEOUT_SECONDS_MAX)] = 10.0
    """Connect, SignOn, challenge, confirm and result must fit in this; else it counts as a
    failed attempt and the terminal backs off."""
    busy_pause_seconds: Seconds = 0.5
    """Pause before resending a request the switch refused BUSY or SYSTEM_ERROR."""
    queue_max: Annotated[int, Meta(ge=1, le=limits.TILL_QUEUE_MAX)] = 30
    firmware: Annotated[str, Meta(max_length=wire.FIRMWARE_CHARS_MAX)] = "onecard-sim"


class RunSettings(_Table, kw_only=True, frozen=True):
    sign_on_deadline_seconds: Annotated[float, Meta(gt=0.0, le=3600.0)] = 120.0
    """How long the phases wait for every terminal to sign on first."""
    sign_on_concurrency: Annotated[int, Meta(ge=1, le=limits.SIGN_ON_CONCURRENCY_MAX)] = 256
    """Terminals connecting and signing on at the same moment (terminals boot in waves)."""
    drain_seconds: Annotated[float, Meta(ge=0.0, le=3600.0)] = 30.0
    """After the last phase: time for terminals to finish the cardholder in front of them."""


class Scenario(_Table, kw_only=True, frozen=True):
    name: Name
    description: str = ""
    seed: int = 1
    """Seeds the population and the behaviour: the same seed gives the same run plan."""
    population: Population
    terminals: Annotated[
        list[TerminalGroup], Meta(min_length=1, max_length=limits.TERMINAL_GROUPS_MAX)
    ]
    pos: PosBehaviour = PosBehaviour()
    run: RunSettings = RunSettings()
    phases: Annotated[list[Phase], Meta(min_length=1, max_length=limits.PHASES_MAX)]

    @property
    def seconds(self) -> float:
        """Length of all phases together."""
        return sum(p.seconds for p in self.phases)


_PATH_RE: Final = re.compile(r" - at `\$\.?([^`]*)`$")


def _field_path(message: str) -> tuple[str, str]:
    """(what, where) of a msgspec error: ("Expected `float` <= 1.0", "phases[0].faults")."""
    m = _PATH_RE.search(message)
    if m is None:
        return message, ""
    return message[: m.start()], m.group(1)


def _explain(source: str, exc: msgspec.MsgspecError) -> ScenarioError:
    what, where = _field_path(str(exc))
    if what.startswith("Object contains unknown field"):
        name = what.split("`")[1]
        field = f"{where}.{name}" if where else name
        return ScenarioError(f"{source}: unknown field {field!r}")
    if what.startswith("Object missing required field"):
        name = what.split("`")[1]
        field = f"{where}.{name}" if where else name
        return ScenarioError(f"{source}: missing field {field!r}")
    if where:
        return ScenarioError(f"{source}: field {where!r}: {what}")
    return ScenarioError(f"{source}: {what}")


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def _check(scenario: Scenario, source: str) -> None:
    """Rules that span fields; each error names the field."""

    def fail(field: str, what: str) -> ScenarioError:
        return ScenarioError(f"{source}: field {field!r}: {what}")

    pop = scenario.population
    if pop.lost_share + pop.frozen_share + pop.low_balance_share > 1.0:
        raise fail("population.low_balance_share",
                   "lost_share + frozen_share + low_balance_share is more than 1")
    for name in ("main_fen", "subsidy_fen", "low_balance_fen"):
        r: FenRange = getattr(pop, name)
        if r.min_fen > r.max_fen:
            raise fail(f"population.{name}.min_fen", f"{r.min_fen} is above max_fen {r.max_fen}")
    if pop.subsidy_fen.min_fen < 0:
        raise fail("population.subsidy_fen.min_fen", "a subsidy wallet is never negative")
    if abs(sum(c.share for c in pop.classes) - 1.0) > 1e-6:
        raise fail("population.classes", "the shares of the classes must sum to 1")
    names: set[str] = set()
    for i, c in enumerate(pop.classes):
        if c.name in names:
            raise fail(f"population.classes[{i}].name", f"{c.name!r} appears twice")
        names.add(c.name)
    windows: list[tuple[int, int]] = []
    for i, w in enumerate(pop.meal_windows):
        start, end = _minutes(w.start), _minutes(w.end)
        if start >= end:
            raise fail(f"population.meal_windows[{i}].end", f"{w.end} is not after {w.start}")
        if any(s < end and start < e for s, e in windows):
            raise fail(f"population.meal_windows[{i}]", "overlaps another meal window")
        windows.append((start, end))
    if pop.now_in_meal_window and pop.now_in_meal_window not in {w.name for w in pop.meal_windows}:
        raise fail("population.now_in_meal_window",
                   f"no meal window is named {pop.now_in_meal_window!r}")
    merchants: set[str] = set()
    kinds: set[str] = set()
    for i, m in enumerate(pop.merchants):
        if m.name in merchants:
            raise fail(f"population.merchants[{i}].name", f"{m.name!r} appears twice")
        merchants.add(m.name)
        kinds.add(m.kind)
    total = 0
    for i, g in enumerate(scenario.terminals):
        total += g.count
        if g.kind == "pos" and g.merchant not in merchants:
            raise fail(f"terminals[{i}].merchant",
                       f"{g.merchant!r} is not a merchant of [[population.merchants]]")
    if total > limits.TERMINALS_MAX:
        raise fail("terminals", f"{total} terminals, more than {limits.TERMINALS_MAX}")
    pos = scenario.pos
    if pos.backoff_initial_seconds > pos.backoff_max_seconds:
        raise fail("pos.backoff_initial_seconds", "is above backoff_max_seconds")
    for i, p in enumerate(scenario.phases):
        if (p.arrivals_per_s is None) == (p.think_seconds is None):
            raise fail(f"phases[{i}]", "give either arrivals_per_s or think_seconds, not both")
        if p.faults.drop_answer_share >= 1.0:
            raise fail(f"phases[{i}].faults.drop_answer_share",
                       "must be below 1 (use never_answer_share to lose every answer)")
        for j, v in enumerate(p.visit):
            if v.merchant not in merchants and v.merchant not in kinds:
                raise fail(f"phases[{i}].visit[{j}].merchant",
                           f"{v.merchant!r} is neither a merchant nor a merchant kind of the "
                           "population")
            a = v.amount
            if a.min_fen > a.max_fen:
                raise fail(f"phases[{i}].visit[{j}].amount.min_fen",
                           f"{a.min_fen} is above max_fen {a.max_fen}")


def check_supported(scenario: Scenario) -> None:
    """Raise UnsupportedTerminalKind if the scenario needs terminals the switch cannot serve."""
    for i, g in enumerate(scenario.terminals):
        if g.kind not in SUPPORTED_KINDS:
            raise UnsupportedTerminalKind(
                f"scenario {scenario.name!r}, terminals[{i}]: the switch does not speak "
                f"{g.kind} terminals yet (only: {', '.join(sorted(SUPPORTED_KINDS))})"
            )


def decode_scenario(data: bytes | str, source: str = "<scenario>") -> Scenario:
    """Decode and check one scenario document. Raises ScenarioError naming the field."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        # msgspec.toml has no Decoder object to keep; scenarios are decoded once per run.
        scenario = msgspec.toml.decode(raw, type=Scenario)
    except msgspec.MsgspecError as exc:
        raise _explain(source, exc) from None
    _check(scenario, source)
    return scenario


def scenario_names() -> list[str]:
    """Names of the scenarios shipped in terminals_sim/scenarios/."""
    folder = resources.files("terminals_sim").joinpath("scenarios")
    return sorted(
        entry.name[: -len(SCENARIO_SUFFIX)]
        for entry in folder.iterdir()
        if entry.name.endswith(SCENARIO_SUFFIX)
    )


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name ("canteen_lunch_rush"), or a TOML file by path."""
    text = str(name_or_path)
    looks_like_path = isinstance(name_or_path, Path) or text.endswith(SCENARIO_SUFFIX) or (
        "/" in text or "\\" in text
    )
    if looks_like_path:
        path = Path(text)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ScenarioError(f"cannot read scenario file {path}: {exc.strerror}") from None
        return decode_scenario(data, str(path))
    resource = resources.files("terminals_sim").joinpath("scenarios", text + SCENARIO_SUFFIX)
    if not resource.is_file():
        raise ScenarioError(
            f"no scenario named {text!r}; shipped: {', '.join(scenario_names())} "
            "(or give the path of a .toml file)"
        )
    return decode_scenario(resource.read_bytes(), f"{text}{SCENARIO_SUFFIX}")


def with_seconds(scenario: Scenario, seconds: float) -> Scenario:
    """The scenario with its phases stretched or squeezed to last `seconds` in all."""
    if seconds <= 0:
        raise ScenarioError(f"--seconds must be above 0, not {seconds}")
    factor = seconds / scenario.seconds
    phases = [msgspec.structs.replace(p, seconds=p.seconds * factor) for p in scenario.phases]
    return msgspec.structs.replace(scenario, phases=phases)
