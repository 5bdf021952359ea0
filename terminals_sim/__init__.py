"""trio simulators of terminals, speaking OCP through `protocols` over real TCP.

    scenario = terminals_sim.load_scenario("canteen_lunch_rush")    # or a path to a .toml
    sim = terminals_sim.Simulation(scenario, site, host=..., port=..., master_secret=...)
    summary = trio.run(sim.run)
    print(terminals_sim.render_summary(summary))

A `Site` (terminals, cards) is plain data: `onecard sim` reads it from PostgreSQL, since this
package imports nothing of ours but `protocols`. POS terminals are simulated now; the scenario
format already names kiosks, doors, attendance and water controllers, and refuses them with a
clear message until the switch speaks to them. A door controller's rules are plain objects here:
`OfflineDoor` (its offline list and decisions) and `DoorControl` (the security desk's door
commands: open once, hold open, hold locked, normal, and the DoorCommandAck it answers);
`DoorTerminal` runs a DoorControl on a live OCP connection (a trio task). The bank host
simulator comes with the bank link.

Everything public is re-exported here; the modules starting with `_` are private.
"""

from terminals_sim._door import DoorTerminal
from terminals_sim._door_control import DoorControl
from terminals_sim._door_offline import OfflineDoor
from terminals_sim._errors import ScenarioError, SimError, UnsupportedTerminalKind
from terminals_sim._run import Simulation
from terminals_sim._scenario import (
    SUPPORTED_KINDS,
    Amount,
    Faults,
    FenRange,
    IdentityClass,
    MealWindow,
    Merchant,
    Phase,
    Population,
    PosBehaviour,
    RunSettings,
    Scenario,
    TerminalGroup,
    Visit,
    check_supported,
    decode_scenario,
    load_scenario,
    scenario_names,
    with_seconds,
)
from terminals_sim._site import CARD_STATES, Site, SiteTerminal
from terminals_sim._stats import Statistics
from terminals_sim._summary import (
    SIM_CPU_LIMIT_PCT,
    LatencySummary,
    PhaseSummary,
    Summary,
    render_summary,
)

__all__ = [
    "CARD_STATES",
    "SIM_CPU_LIMIT_PCT",
    "SUPPORTED_KINDS",
    "Amount",
    "DoorControl",
    "DoorTerminal",
    "Faults",
    "FenRange",
    "IdentityClass",
    "LatencySummary",
    "MealWindow",
    "Merchant",
    "OfflineDoor",
    "Phase",
    "PhaseSummary",
    "Population",
    "PosBehaviour",
    "RunSettings",
    "Scenario",
    "ScenarioError",
    "SimError",
    "Simulation",
    "Site",
    "SiteTerminal",
    "Statistics",
    "Summary",
    "TerminalGroup",
    "UnsupportedTerminalKind",
    "Visit",
    "check_supported",
    "decode_scenario",
    "load_scenario",
    "render_summary",
    "scenario_names",
    "with_seconds",
]
