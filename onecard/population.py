"""Write a scenario's population (terminals_sim) into an empty, migrated database.

The switch loads master data only when it starts, so a scenario is seeded before its switch
starts. Every opening balance has its counter-entry in the system merchant "opening balances",
so all balances sum to zero from the first moment (double entry), as in onecard.seed.
"""

from __future__ import annotations

import random
import time

import asyncpg
import msgspec

from migrations import check_schema
from onecard.seed import card_no_of  # one card numbering for every seeded site
from protocols import ocp
from terminals_sim import Scenario, ScenarioError, check_supported

OPENING_MERCHANT = 1
TENANT_ID = 1
MEAL_WINDOW_LEAD_MINUTES = 15
"""now_in_meal_window puts the moment of seeding this far into the window."""

ACTIVE, FROZEN, LOST = 0, 1, 2
_SPEND_ORDER = {"subsidy_first": 0, "main_first": 1, "main_only": 2}
_TERMINAL_KIND = {kind.name.lower(): int(kind) for kind in ocp.TerminalKind}


class SeededPopulation(msgspec.Struct, frozen=True, kw_only=True):
    scenario: str
    accounts: int
    cards: int
    lost: int
    frozen: int
    low_balance: int
    with_subsidy: int
    merchants: int
    terminals: int
    opening_total_fen: int
    utc_offset_s: int


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def utc_offset_for_window(start: str, now_s: float) -> int:
    """The UTC offset (seconds, whole minutes) under which `now_s` is MEAL_WINDOW_LEAD_MINUTES
    into a meal window opening at local time `start`."""
    target = _minutes(start) + MEAL_WINDOW_LEAD_MINUTES
    now_minute = int(now_s // 60) % 1440
    offset = (target - now_minute) % 1440
    if offset > 720:
        offset -= 1440
    return offset * 60


async def _require_empty(conn: asyncpg.Connection) -> None:
    await check_schema(conn)
    counts = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM tenants) AS tenants,"
        " (SELECT count(*) FROM accounts) AS accounts,"
        " (SELECT count(*) FROM merchants) AS merchants,"
        " (SELECT count(*) FROM terminals) AS terminals,"
        " (SELECT count(*) FROM journal) AS journal"
    )
    filled = {name: n for name, n in counts.items() if n}
    if filled:
        raise ScenarioError(
            "the database is not empty ("
            + ", ".join(f"{n} {name}" for name, n in filled.items())
            + "): --seed writes a population only into an empty, migrated database"
        )


async def seed_population(conn: asyncpg.Connection, scenario: Scenario,
                          *, now_s: float | None = None) -> SeededPopulation:
    """Write the scenario's population; raises ScenarioError on a non-empty database or on
    terminals the switch cannot serve. `now_s` (default: now) places now_in_meal_window."""
    check_supported(scenario)
    pop = scenario.population
    rnd = random.Random(scenario.seed)
    utc_offset_s = pop.utc_offset_s
    if pop.now_in_meal_window:
        window = next(w for w in pop.meal_windows if w.name == pop.now_in_meal_window)
        utc_offset_s = utc_offset_for_window(window.start, time.time() if now_s is None else now_s)

    class_ids = list(range(1, len(pop.classes) + 1))
    class_shares = [c.share for c in pop.classes]
    overdraft = {i: c.overdraft_fen for i, c in zip(class_ids, pop.classes, strict=True)}
    accounts = []
    cards = []
    lost = frozen = low = with_subsidy = 0
    opening_total = 0
    for account_id in range(1, pop.accounts + 1):
        class_id = rnd.choices(class_ids, class_shares)[0]
        roll = rnd.random()
        status = ACTIVE
        subsidy = 0
        if roll < pop.lost_share:
            status = LOST
            lost += 1
        elif roll < pop.lost_share + pop.frozen_share:
            status = FROZEN
            frozen += 1
        if pop.lost_share + pop.frozen_share <= roll < (
            pop.lost_share + pop.frozen_share + pop.low_balance_share
        ):
            # Too little money: what they can spend is main + overdraft, and no subsidy.
            spendable = rnd.randint(pop.low_balance_fen.min_fen, pop.low_balance_fen.max_fen)
            main = spendable - overdraft[class_id]
            low += 1
        else:
            main = rnd.randint(pop.main_fen.min_fen, pop.main_fen.max_fen)
            if pop.subsidy_share and rnd.random() < pop.subsidy_share:
                subsidy = rnd.randint(pop.subsidy_fen.min_fen, pop.subsidy_fen.max_fen)
                with_subsidy += 1
        accounts.append((account_id, TENANT_ID, class_id, f"holder {account_id}", status, main,
                         subsidy))
        cards.append((card_no_of(account_id), account_id, 0))
        opening_total += main + subsidy

    merchants = [(OPENING_MERCHANT, TENANT_ID, "opening balances", "system", 0, 0, 0,
                  -opening_total)]
    merchant_ids: dict[str, int] = {}
    for i, m in enumerate(pop.merchants, start=OPENING_MERCHANT + 1):
        merchant_ids[m.name] = i
        merchants.append((i, TENANT_ID, m.name, m.kind, 1 if m.fixed_price_fen else 0,
                          m.fixed_price_fen, _SPEND_ORDER[m.spend_order], 0))
    terminals: list[tuple[int, int, int, str]] = []
    for group in scenario.terminals:
        for _ in range(group.count):
            tid = len(terminals) + 1
            terminals.append((tid, merchant_ids[group.merchant], _TERMINAL_KIND[group.kind],
                              f"{group.kind.upper()} {tid} {group.merchant}"))

    async with conn.transaction():
        await _require_empty(conn)
        await conn.execute(
            "INSERT INTO tenants (id, name, utc_offset_s) VALUES ($1, $2, $3)",
            TENANT_ID, pop.site_name, utc_offset_s,
        )
        await conn.executemany(
            "INSERT INTO tenant_meal_windows VALUES ($1, $2, $3, $4, $5)",
            [(TENANT_ID, i, w.name, _minutes(w.start), _minutes(w.end))
             for i, w in enumerate(pop.meal_windows)],
        )
        await conn.executemany(
            "INSERT INTO identity_classes VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [(i, c.name, c.overdraft_fen, c.txn_limit_fen, c.daily_limit_fen, c.meal_count_max,
              c.meal_amount_max_fen) for i, c in zip(class_ids, pop.classes, strict=True)],
        )
        await conn.copy_records_to_table(
            "accounts", records=accounts,
            columns=["id", "tenant_id", "class_id", "holder_name", "status", "opening_main_fen",
                     "opening_subsidy_fen"],
        )
        await conn.copy_records_to_table(
            "cards", records=cards, columns=["card_no", "account_id", "status"]
        )
        await conn.copy_records_to_table(
            "merchants", records=merchants,
            columns=["id", "tenant_id", "name", "kind", "mode", "fixed_amount_fen",
                     "spend_order", "opening_balance_fen"],
        )
        await conn.copy_records_to_table(
            "terminals", records=terminals, columns=["id", "merchant_id", "kind", "name"]
        )
    return SeededPopulation(
        scenario=scenario.name,
        accounts=len(accounts),
        cards=len(cards),
        lost=lost,
        frozen=frozen,
        low_balance=low,
        with_subsidy=with_subsidy,
        merchants=len(merchants),
        terminals=len(terminals),
        opening_total_fen=opening_total,
        utc_offset_s=utc_offset_s,
    )
