"""Load master data (tenants, classes, merchants, accounts, cards, terminals) into a Ledger.

Master data is what the admin side owns; balances are what the switch owns. At start-up the
switch opens every account and merchant at its opening balance; the checkpoint and the journal
then bring the balances to where they were.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from switch._errors import RecoveryError

if TYPE_CHECKING:
    import asyncpg

    from ledger_ext import Ledger

TERMINAL_ENABLED = 0


class TerminalInfo(msgspec.Struct, frozen=True):
    terminal_id: int
    merchant_id: int
    kind: int
    key_version: int
    enabled: bool


class MasterData(msgspec.Struct):
    terminals: dict[int, TerminalInfo]
    accounts: int
    merchants: int
    cards: int
    opening_total_fen: int
    # Account ids and their statuses as the database has them now: a checkpoint restores the
    # statuses it saw, so recovery sets these again afterwards.
    account_ids: array[int] = msgspec.field(default_factory=lambda: array("i"))
    account_statuses: bytearray = msgspec.field(default_factory=bytearray)
    # Automatic top-up (自动圈存): account -> (threshold_fen, amount_fen) of its bound bank
    # card; a purchase leaving the balance below the threshold triggers a top-up.
    auto_topups: dict[int, tuple[int, int]] = msgspec.field(default_factory=dict)
    # Told of every change event that alters a kiosk top-up's context (bound bank card, PIN,
    # tenant bank settings, account status, tenant offset): switch/_topup.py TopupContexts.
    topup_listeners: list[Callable[[Any], None]] = msgspec.field(default_factory=list)

    def apply_statuses(self, ledger: Ledger) -> None:
        set_status = ledger.set_account_status
        for account_id, status in zip(self.account_ids, self.account_statuses, strict=True):
            set_status(account_id, status)


async def load_master_data(conn: asyncpg.Connection, ledger: Ledger) -> MasterData:
    """Open everything in `ledger`. Call inside a REPEATABLE READ transaction, so every table
    is read from one snapshot (an account and its card issued meanwhile arrive together)."""
    for t in await conn.fetch("SELECT id, utc_offset_s FROM tenants ORDER BY id"):
        windows = [
            (w["start_minute"], w["end_minute"])
            for w in await conn.fetch(
                "SELECT start_minute, end_minute FROM tenant_meal_windows"
                " WHERE tenant_id = $1 ORDER BY idx",
                t["id"],
            )
        ]
        ledger.configure_tenant(t["id"], t["utc_offset_s"], windows)
    for pair in await conn.fetch(
        "SELECT card_tenant_id, merchant_tenant_id FROM tenant_cross_spend"
        " WHERE card_side_allows AND merchant_side_allows"
    ):
        ledger.allow_cross_tenant(pair["card_tenant_id"], pair["merchant_tenant_id"])
    for c in await conn.fetch("SELECT * FROM identity_classes ORDER BY id"):
        ledger.configure_class(
            c["id"],
            c["overdraft_fen"],
            c["txn_limit_fen"],
            c["daily_limit_fen"],
            c["meal_count_max"],
            c["meal_amount_max_fen"],
        )
    opening = 0
    merchants = 0
    for m in await conn.fetch(
        "SELECT id, tenant_id, mode, fixed_amount_fen, spend_order, opening_balance_fen"
        " FROM merchants ORDER BY id"
    ):
        ledger.open_merchant(
            m["id"],
            m["tenant_id"],
            m["mode"],
            m["fixed_amount_fen"],
            m["spend_order"],
            m["opening_balance_fen"],
        )
        opening += m["opening_balance_fen"]
        merchants += 1
    accounts = 0
    account_ids: array[int] = array("i")
    account_statuses = bytearray()
    async for a in conn.cursor(
        "SELECT id, tenant_id, class_id, status, opening_main_fen, opening_subsidy_fen"
        " FROM accounts ORDER BY id",
        prefetch=20_000,
    ):
        ledger.open_account(a[0], a[1], a[2], a[3], a[4], a[5])
        account_ids.append(a[0])
        account_statuses.append(a[3])
        opening += a[4] + a[5]
        accounts += 1
    cards = 0
    async for card in conn.cursor(
        "SELECT card_no, account_id, status FROM cards", prefetch=20_000
    ):
        ledger.bind_card(card[0], card[1])
        if card[2] != 0:
            ledger.cancel_card(card[0])
        cards += 1
    terminals = {
        r["id"]: TerminalInfo(
            r["id"], r["merchant_id"], r["kind"], r["key_version"], r["status"] == TERMINAL_ENABLED
        )
        for r in await conn.fetch(
            "SELECT id, merchant_id, kind, key_version, status FROM terminals"
        )
    }
    if opening != 0:
        raise RecoveryError(
            f"opening balances sum to {opening} fen, not 0: every opening balance needs its "
            "counter-entry (a system merchant account)"
        )
    auto_topups = {
        r["account_id"]: (r["auto_threshold_fen"], r["auto_amount_fen"])
        for r in await conn.fetch(
            "SELECT account_id, auto_threshold_fen, auto_amount_fen FROM bank_cards"
            " WHERE unbound_at IS NULL AND auto_amount_fen > 0 AND auto_threshold_fen > 0")
    }
    return MasterData(terminals, accounts, merchants, cards, opening, account_ids,
                      account_statuses, auto_topups)
