"""Which terminals and cards the locust users of one process draw from.

No locust here (so the tests import it freely): `loadtest/ocp_user.py` builds a `LoadPlan`
from the site catalog, splits it among the workers and keeps this process's share in a
`TerminalPool`.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

import msgspec

from loadtest.site_catalog import SiteCatalog
from protocols import ocp

DEFAULT_HOST: Final = "ocp://127.0.0.1:7700"
DEFAULT_PORT: Final = 7700


class TerminalGrant(msgspec.Struct, frozen=True):
    terminal_id: int
    key_hex: str
    fixed_price: bool


class LoadPlan(msgspec.Struct, frozen=True):
    """What the users of one process draw from."""

    terminals: list[TerminalGrant]
    cards: list[int]
    lost_cards: list[int]


def build_plan(catalog: SiteCatalog, master_secret: bytes) -> LoadPlan:
    return LoadPlan(
        terminals=[
            TerminalGrant(t.terminal_id,
                          ocp.derive_terminal_key(master_secret, t.terminal_id,
                                                  t.key_version).hex(),
                          t.fixed_price)
            for t in catalog.terminals
        ],
        cards=catalog.cards,
        lost_cards=catalog.lost_cards,
    )


def split_plan(plan: LoadPlan, parts: int) -> list[LoadPlan]:
    """`parts` plans with disjoint terminals (round robin, so each gets the site's mix of tills)
    and every card."""
    return [LoadPlan(plan.terminals[i::parts], plan.cards, plan.lost_cards)
            for i in range(parts)]


class TerminalPool:
    """This process's terminals; each is held by at most one user at a time."""

    def __init__(self) -> None:
        self.plan = LoadPlan([], [], [])
        self._grants: dict[int, TerminalGrant] = {}
        self._free: list[TerminalGrant] = []
        self._held: set[int] = set()
        self._txn_seq: dict[int, int] = {}

    def load(self, plan: LoadPlan) -> None:
        self.plan = plan
        self._grants = {g.terminal_id: g for g in plan.terminals}
        # Pop from the end, in terminal id order.
        self._free = [g for g in reversed(plan.terminals) if g.terminal_id not in self._held]

    def take(self) -> TerminalGrant | None:
        if not self._free:
            return None
        grant = self._free.pop()
        self._held.add(grant.terminal_id)
        return grant

    @property
    def free(self) -> int:
        return len(self._free)

    def give_back(self, grant: TerminalGrant, txn_seq: int) -> None:
        self._txn_seq[grant.terminal_id] = txn_seq
        self._held.discard(grant.terminal_id)
        current = self._grants.get(grant.terminal_id)  # the plan may have changed meanwhile
        if current is not None:
            self._free.append(current)

    def last_txn_seq(self, terminal_id: int) -> int:
        """The highest txn_seq a user of this process sent from the terminal (0: none yet)."""
        return self._txn_seq.get(terminal_id, 0)


def parse_ocp_host(host: str | None) -> tuple[str, int]:
    """`ocp://10.0.0.5:7700`, `tcp://10.0.0.5:7700` or `10.0.0.5:7700` -> (host, port)."""
    text = (host or DEFAULT_HOST).strip()
    if "://" not in text:
        text = "ocp://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("ocp", "tcp") or not parts.hostname:
        raise ValueError(f"--host {host!r}: expected ocp://HOST:PORT")
    return parts.hostname, parts.port or DEFAULT_PORT


