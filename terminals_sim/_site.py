"""What the simulator knows of the site it drives: terminals and cards, as plain data.

The simulator never reads a database itself (it imports only `protocols`): `onecard sim` reads
these from PostgreSQL, read-only, and hands them over.
"""

from __future__ import annotations

from typing import Final

import msgspec

CARD_STATES: Final = ("active", "frozen", "lost", "closed", "cancelled")
"""A card's state as the switch sees it: the account's status, or cancelled (a dead card)."""


class SiteTerminal(msgspec.Struct, frozen=True, kw_only=True):
    terminal_id: int
    kind: str
    """"pos", "kiosk", "door", "attendance", "water" or "admin"."""
    key_version: int = 1
    enabled: bool = True
    merchant: str = ""
    """The merchant's name."""
    merchant_kind: str = ""
    """"canteen", "shop", "service" or "system"."""
    fixed_price_fen: int = 0
    """> 0 at a fixed-price till: the terminal sends amount 0 and the switch charges this."""


class Site(msgspec.Struct, frozen=True, kw_only=True):
    terminals: list[SiteTerminal]
    cards: dict[str, list[int]]
    """Card numbers by state (CARD_STATES). Cardholders use every card but cancelled ones."""

    def cards_in_use(self) -> list[int]:
        return [c for state in CARD_STATES if state != "cancelled"
                for c in self.cards.get(state, [])]
