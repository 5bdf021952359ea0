"""Seed a demo campus (or a benchmark site) into a migrated database.

Every opening balance has its counter-entry in the system merchant "opening balances", so all
balances sum to zero from the first moment (double entry).
"""

from __future__ import annotations

import random

import asyncpg
import msgspec

# Merchant ids of the demo site.
OPENING_MERCHANT = 1
CASH_DESK_MERCHANT = 2
CANTEEN_FIXED = 3  # fixed-price set meal
CANTEEN_FREE = 4  # weighed / free-amount till
SUPERMARKET = 5  # cash wallet only
EAST_CANTEEN = 6  # belongs to the second park (tenant 2)
SUBSIDY_FUND = 7  # system account that pays subsidies into subsidy wallets
BANK_CLEARING = 8  # system account that pays bank top-ups (圈存) into main wallets
EAST_BANK_CLEARING = 9  # the same for the second park (tenant 2)
SYSTEM_MERCHANTS = (OPENING_MERCHANT, CASH_DESK_MERCHANT, SUBSIDY_FUND, BANK_CLEARING,
                    EAST_BANK_CLEARING)
# Self-service top-up kiosks (kind 2), far above the POS ids and below the admin terminal's.
KIOSK_BASE = 900_000
# Every seeded bound bank card's cardholder has this query/spending PIN (a demo site only).
DEMO_PIN = "123456"
BANK_PAN_BASE = 622202_000_000_000
# The card office's admin terminal (kind 6): the admin API moves money through the switch as
# this terminal (Credit, Debit, Transfer). Far above the POS ids (1..plan.terminals).
ADMIN_TERMINAL = 1_000_000
CARD_NO_BASE = 8_800_000_000


class SeedPlan(msgspec.Struct, frozen=True):
    accounts: int = 5_000
    terminals: int = 200
    # Share of accounts reported lost, frozen, closed; share of cards replaced (old card dead).
    lost_share: float = 0.01
    frozen_share: float = 0.005
    closed_share: float = 0.005
    replaced_share: float = 0.01
    # Opening balances are drawn from [0, main_fen_max] and [0, subsidy_fen_max].
    main_fen_max: int = 30_000
    subsidy_fen_max: int = 10_000
    with_limits: bool = True
    seed: int = 7
    # Kiosks of tenant 1, and accounts (the first active ones) with a bound bank card and
    # DEMO_PIN, ready for 快速圈存.
    kiosks: int = 2
    bank_cards: int = 50
    # The site's bank-card key (protocols.bank_card.bank_card_key of its master secret): when
    # given, each seeded bank card's number is kept sealed under it (`pan_encrypted`), as the
    # admin API's binding keeps it; else only its masked form is kept. The full number is
    # never stored in clear: the bank knows the card by its token (demo_token).
    bank_card_key: bytes = b""


class SeedResult(msgspec.Struct, frozen=True):
    accounts: int
    cards: list[int]
    lost_cards: list[int]
    cancelled_cards: list[int]
    terminals: list[int]
    fixed_price_terminals: list[int]
    opening_total_fen: int
    admin_terminal: int = ADMIN_TERMINAL
    """Registered with kind 6 (admin) at the cash desk; not among `terminals` (POS only)."""
    kiosks: list[int] = msgspec.field(default_factory=list)
    """Kiosk terminals (kind 2) of tenant 1."""
    bank_card_cards: list[int] = msgspec.field(default_factory=list)
    """Cards whose account has a bound bank card (the bank's token for it: demo_token(account
    id), never its number) and DEMO_PIN."""


def card_no_of(account_id: int) -> int:
    return CARD_NO_BASE + account_id * 10


async def seed_site(conn: asyncpg.Connection, plan: SeedPlan) -> SeedResult:
    assert plan.terminals < ADMIN_TERMINAL, "POS ids would reach the admin terminal's"
    rnd = random.Random(plan.seed)
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO tenants (id, name, utc_offset_s) VALUES"
            " (1, 'Demo Campus', 28800), (2, 'East Park', 28800)"
        )
        await conn.executemany(
            "INSERT INTO tenant_meal_windows VALUES ($1, $2, $3, $4, $5)",
            [
                (1, 0, "breakfast", 6 * 60 + 30, 9 * 60),
                (1, 1, "lunch", 11 * 60, 13 * 60 + 30),
                (1, 2, "dinner", 17 * 60, 19 * 60 + 30),
                (2, 0, "lunch", 11 * 60 + 30, 13 * 60 + 30),
            ],
        )
        # Campus cards may eat at the East Park canteen; both sides agree.
        await conn.execute(
            "INSERT INTO tenant_cross_spend VALUES (1, 2, true, true)"
        )
        if plan.with_limits:
            classes = [
                (1, "student", 0, 10_000, 30_000, 4, 5_000),
                (2, "staff", 5_000, 50_000, 100_000, 0, 0),
                (3, "visitor", 0, 5_000, 20_000, 2, 3_000),
            ]
        else:
            classes = [(1, "student", 0, 0, 0, 0, 0), (2, "staff", 0, 0, 0, 0, 0),
                       (3, "visitor", 0, 0, 0, 0, 0)]
        await conn.executemany(
            "INSERT INTO identity_classes VALUES ($1, $2, $3, $4, $5, $6, $7)", classes
        )

        accounts = []
        cards = []
        lost, cancelled, live = [], [], []
        opening_total = 0
        for account_id in range(1, plan.accounts + 1):
            roll = rnd.random()
            status = 0
            if roll < plan.lost_share:
                status = 2
            elif roll < plan.lost_share + plan.frozen_share:
                status = 1
            elif roll < plan.lost_share + plan.frozen_share + plan.closed_share:
                status = 3
            main = rnd.randint(0, plan.main_fen_max)
            subsidy = rnd.randint(0, plan.subsidy_fen_max)
            class_id = 1 if rnd.random() < 0.85 else (2 if rnd.random() < 0.8 else 3)
            accounts.append((account_id, 1, class_id, f"holder {account_id}", status, main,
                             subsidy))
            opening_total += main + subsidy
            card = card_no_of(account_id)
            if rnd.random() < plan.replaced_share:
                cards.append((card, account_id, 1))  # the old, replaced card: dead
                cancelled.append(card)
                card += 1
            cards.append((card, account_id, 0))
            if status == 2:
                lost.append(card)
            elif status == 0:
                live.append(card)
        await conn.copy_records_to_table(
            "accounts",
            records=accounts,
            columns=["id", "tenant_id", "class_id", "holder_name", "status", "opening_main_fen",
                     "opening_subsidy_fen"],
        )
        await conn.copy_records_to_table(
            "cards", records=cards, columns=["card_no", "account_id", "status"]
        )
        await conn.executemany(
            "INSERT INTO merchants (id, tenant_id, name, kind, mode, fixed_amount_fen,"
            " spend_order, opening_balance_fen) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            [
                (OPENING_MERCHANT, 1, "opening balances", "system", 0, 0, 0, -opening_total),
                (CASH_DESK_MERCHANT, 1, "card office cash desk", "system", 0, 0, 0, 0),
                (CANTEEN_FIXED, 1, "No.1 canteen set meal", "canteen", 1, 800, 0, 0),
                (CANTEEN_FREE, 1, "No.2 canteen", "canteen", 0, 0, 0, 0),
                (SUPERMARKET, 1, "campus supermarket", "shop", 0, 0, 2, 0),
                (EAST_CANTEEN, 2, "East Park canteen", "canteen", 0, 0, 0, 0),
                (SUBSIDY_FUND, 1, "subsidy fund", "system", 0, 0, 0, 0),
                (BANK_CLEARING, 1, "bank clearing", "system", 0, 0, 0, 0),
                (EAST_BANK_CLEARING, 2, "bank clearing", "system", 0, 0, 0, 0),
            ],
        )
        await conn.executemany(
            "INSERT INTO system_accounts (tenant_id, purpose, merchant_id) VALUES ($1, $2, $3)",
            [(1, "bank_clearing", BANK_CLEARING), (2, "bank_clearing", EAST_BANK_CLEARING)])
        merchants_for_terminals = [CANTEEN_FREE, CANTEEN_FREE, CANTEEN_FIXED, SUPERMARKET,
                                   EAST_CANTEEN]
        terminals = [
            (tid, merchants_for_terminals[tid % len(merchants_for_terminals)], 1, f"POS {tid}")
            for tid in range(1, plan.terminals + 1)
        ]
        kiosks = [(KIOSK_BASE + n, BANK_CLEARING, 2, f"kiosk {n}")
                  for n in range(1, plan.kiosks + 1)]
        await conn.copy_records_to_table(
            "terminals",
            records=[*terminals, *kiosks,
                     (ADMIN_TERMINAL, CASH_DESK_MERCHANT, 6, "card office admin")],
            columns=["id", "merchant_id", "kind", "name"],
        )
        banked = await _seed_bank_cards(conn, accounts, cards, plan.bank_cards,
                                        plan.bank_card_key)
    return SeedResult(
        accounts=plan.accounts,
        cards=live,
        lost_cards=lost,
        cancelled_cards=cancelled,
        terminals=[t[0] for t in terminals],
        fixed_price_terminals=[t[0] for t in terminals if t[1] == CANTEEN_FIXED],
        opening_total_fen=opening_total,
        kiosks=[k[0] for k in kiosks],
        bank_card_cards=banked,
    )


def demo_token(account_id: int) -> str:
    """The bank's token for the seeded bank card of an account: what the switch sends in field
    102 (docs/bank-link.md: never a card number), the simulator's key for the card and the
    daily file's `card_token`. Letters and digits: never mistaken for a card number."""
    return f"DEMO-BT-{account_id:08d}"


def demo_pan(account_id: int) -> str:
    """The seeded bank card number of an account: a valid Luhn number under BIN 622202. Kept
    only masked, and sealed when the plan gives a bank-card key (never in clear)."""
    body = str(BANK_PAN_BASE + account_id * 10)[:-1]
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


async def _seed_bank_cards(conn: asyncpg.Connection, accounts: list[tuple], cards: list[tuple],
                           count: int, key: bytes = b"") -> list[int]:
    """Bind a bank card (known to the bank by its token, demo_token; its number masked, and
    sealed under `key` when given) and DEMO_PIN to the first `count` active accounts: one
    argon2 hash of DEMO_PIN serves them all (a demo site)."""
    if count <= 0:
        return []
    from argon2 import PasswordHasher

    from protocols.bank_card import mask_pan, seal_pan

    live = {a: c for c, a, status in cards if status == 0}
    chosen = [a[0] for a in accounts if a[4] == 0 and a[0] in live][:count]
    pin_hash = PasswordHasher().hash(DEMO_PIN)
    pans = {a: demo_pan(a) for a in chosen}
    await conn.executemany(
        "INSERT INTO bank_cards (tenant_id, account_id, pan_masked, pan_encrypted, bank_token)"
        " VALUES (1, $1, $2, $3, $4)",
        [(a, mask_pan(pans[a]), seal_pan(key, a, pans[a]) if key else None, demo_token(a))
         for a in chosen])
    await conn.executemany(
        "INSERT INTO cardholder_pins (account_id, pin_hash) VALUES ($1, $2)",
        [(a, pin_hash) for a in chosen])
    return [live[a] for a in chosen]
