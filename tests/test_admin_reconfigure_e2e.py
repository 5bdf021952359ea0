"""A person's identity class and a merchant's price changed through the admin API reach a
running switch within a second, and hold across restarts.

Real processes over real TCP and HTTP: the switch (with its outbox relay and change feed on the
real Redis) and the admin API, one PostgreSQL. A staff member (overdraft 5,000, one purchase up
to 50,000 fen) becomes a visitor (no overdraft, one purchase up to 5,000 fen); the free-amount
canteen starts selling a set meal at a fixed 7.77 yuan. The probes never spend by accident:
before the change arrives they are declined for another reason (insufficient funds, an amount
the till may not key in), after it for the new rule, so each wait ends on a code.

Then the switch restarts twice: killed (recovery = the checkpoint taken before the changes, the
journal rows after it, and the master data from the database) and stopped (its final
checkpoint, taken after the changes). Neither brings the old class or price back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from onecard.seed import CANTEEN_FREE
from protocols import ocp
from tests.admin_site import AdminSite
from tests.switch_site import FREE_CANTEEN_TERMINAL, SUPERMARKET_TERMINAL

RC = ocp.ResponseCode
PROPAGATION_SECONDS = 1.0
"""The promise: a change reaches every switch within one second."""
DEADLINE_SECONDS = 30.0
STAFF, VISITOR = 2, 3
STAFF_OVERDRAFT_FEN, VISITOR_TXN_LIMIT_FEN = 5_000, 5_000  # onecard.seed's classes
SET_MEAL_FEN = 777


@pytest.fixture
def site(db_dsn: str) -> Iterator[AdminSite]:
    s = AdminSite(db_dsn)
    s.start()
    s.start_admin()
    try:
        yield s
    finally:
        s.close()


class Till:
    """A signed-on POS that goes on from the switch's last txn_seq."""

    def __init__(self, site: AdminSite, terminal_id: int) -> None:
        self.client = site.client(terminal_id)
        self.seq = self.client.sign_on_result.last_txn_seq

    def buy(self, card_no: int, amount_fen: int) -> Any:
        self.seq += 1
        return self.client.request(ocp.Purchase(self.seq, card_no, amount_fen,
                                                int(time.time() * 1000)))

    def balances(self, card_no: int) -> tuple[int, int]:
        self.seq += 1
        r = self.client.request(ocp.BalanceInquiry(self.seq, card_no))
        assert r.code == RC.APPROVED, r
        return r.main_fen, r.subsidy_fen

    def close(self) -> None:
        self.client.close()


def _until(what: str, predicate: Callable[[], bool]) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > DEADLINE_SECONDS:
            raise AssertionError(f"{what}: not within {DEADLINE_SECONDS} s")
        time.sleep(0.01)
    return time.monotonic() - started


def _staff(site: AdminSite) -> list[Any]:
    """Two staff members of the campus with money, active, each with a live card."""
    return site.fetch(
        "SELECT p.id, c.card_no, a.opening_main_fen AS main FROM people p"
        " JOIN accounts a ON a.id = p.account_id JOIN cards c ON c.account_id = a.id"
        " WHERE a.status = 0 AND c.status = 0 AND a.tenant_id = 1 AND a.class_id = $1"
        " AND a.opening_main_fen >= 8000 ORDER BY p.id LIMIT 2", STAFF)


def test_a_new_class_and_a_new_price_apply_within_a_second_and_survive_restarts(
        site: AdminSite) -> None:
    # A checkpoint before any change: the kill below recovers from it plus the journal.
    assert site.stop() == 0
    site.start()
    api = site.api()
    person, diner = _staff(site)
    shop, canteen = Till(site, SUPERMARKET_TERMINAL), Till(site, FREE_CANTEEN_TERMINAL)

    # Staff may pay 6,000 at once; the probe is one fen beyond what the account can pay
    # (main only at the supermarket, down to the staff overdraft): INSUFFICIENT_FUNDS.
    assert shop.buy(person["card_no"], 6_000).code == RC.APPROVED
    main, _ = shop.balances(person["card_no"])
    probe = main + STAFF_OVERDRAFT_FEN + 1
    assert VISITOR_TXN_LIMIT_FEN < probe <= 50_000
    assert shop.buy(person["card_no"], probe).code == RC.INSUFFICIENT_FUNDS

    # A visitor now: the limit comes before the funds, so the same purchase is declined
    # TXN_LIMIT_EXCEEDED as soon as the switch knows.
    api.ok("POST", f"/people/{person['id']}/class", {"class_id": VISITOR}, 200)
    waited = _until("the new class applies",
                    lambda: shop.buy(person["card_no"], probe).code == RC.TXN_LIMIT_EXCEEDED)
    assert waited < PROPAGATION_SECONDS, f"the class took {waited:.3f} s to reach the switch"
    assert shop.buy(person["card_no"], VISITOR_TXN_LIMIT_FEN + 1).code == RC.TXN_LIMIT_EXCEEDED

    # The free-amount canteen sells a set meal at a fixed price: amount 0 means "the price".
    assert canteen.buy(diner["card_no"], 0).code == RC.INVALID_AMOUNT
    api.ok("PATCH", f"/merchants/{CANTEEN_FREE}", {"mode": "fixed",
                                                   "fixed_amount_fen": SET_MEAL_FEN})
    waited = _until("the new price applies",
                    lambda: canteen.buy(diner["card_no"], 0).code == RC.APPROVED)
    assert waited < PROPAGATION_SECONDS, f"the price took {waited:.3f} s to reach the switch"
    before = canteen.balances(diner["card_no"])
    charged = canteen.buy(diner["card_no"], 0)
    assert (charged.code, charged.amount_fen) == (RC.APPROVED, SET_MEAL_FEN)
    assert canteen.buy(diner["card_no"], 500).code == RC.INVALID_AMOUNT
    after = canteen.balances(diner["card_no"])
    assert sum(before) - sum(after) == SET_MEAL_FEN
    shop.close()
    canteen.close()

    for restart in ("kill", "stop"):
        assert site.switch is not None
        if restart == "kill":
            site.switch.kill()
        else:
            assert site.stop() == 0
        site.start()
        shop, canteen = Till(site, SUPERMARKET_TERMINAL), Till(site, FREE_CANTEEN_TERMINAL)
        assert canteen.balances(diner["card_no"]) == after, restart  # replayed to the fen
        assert shop.buy(person["card_no"], probe).code == RC.TXN_LIMIT_EXCEEDED, restart
        charged = canteen.buy(diner["card_no"], 0)
        assert (charged.code, charged.amount_fen) == (RC.APPROVED, SET_MEAL_FEN), restart
        assert canteen.buy(diner["card_no"], 500).code == RC.INVALID_AMOUNT, restart
        after = canteen.balances(diner["card_no"])
        shop.close()
        canteen.close()

    assert site.stop() == 0
    report = site.audit()
    assert report.conserved, report
