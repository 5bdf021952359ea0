"""Door decisions across a SIGKILL of the switch: what a door heard stays true.

Doors and tills share the group commit; after a kill, recovery replays the money journal (the
decision records are not money and do not confuse it), the answers of door requests already
decided come back from `access_decisions` (a repeat gets the original answer), and
anti-passback positions come back too (docs/access.md, "Keeping the switch current").
"""

from __future__ import annotations

import pytest

from onecard.access_demo import seed_doors
from protocols import ocp
from tests.switch_site import FREE_CANTEEN_TERMINAL, Site, run

RC = ocp.ResponseCode


@pytest.fixture
def site(db_dsn: str):  # type: ignore[no-untyped-def]
    s = Site(db_dsn)

    async def seed() -> list[int]:
        import asyncpg

        conn = await asyncpg.connect(db_dsn)
        try:
            return await seed_doors(conn, 4)  # door 0 is a hard anti-passback turnstile
        finally:
            await conn.close()

    s.doors = run(seed())  # type: ignore[attr-defined]
    s.start()
    try:
        yield s
    finally:
        if s.switch is not None and s.switch.proc is not None and s.switch.proc.poll() is None:
            s.stop()


def test_door_answers_and_anti_passback_survive_a_kill(site: Site) -> None:
    door_tid = site.doors[0]  # type: ignore[attr-defined]
    row = site.card(class_id=1)
    card = row["card_no"]
    door = site.client(door_tid)
    till = site.client(FREE_CANTEEN_TERMINAL)
    base = door.sign_on_result.last_txn_seq
    entered = door.request(ocp.AccessRequest(base + 1, 1, 0, 1, card))
    assert entered == ocp.AccessResult(base + 1, RC.APPROVED, 3000, 0)
    pseq = till.sign_on_result.last_txn_seq + 1
    bought = till.request(ocp.Purchase(pseq, card, 100, 0))
    assert bought.code == RC.APPROVED
    event = door.request(ocp.DoorEvent(base + 2, 1, int(ocp.DoorEventCode.FORCED_OPEN)))
    assert event == ocp.DoorEventAck(base + 2, 0)
    door.close()
    till.close()
    assert site.switch is not None
    site.switch.kill()
    site.start()
    door = site.client(door_tid)
    assert door.sign_on_result.last_txn_seq == base + 2  # told at sign-on, doors included
    # Repeats get their original answers; nothing is journaled twice.
    assert door.request(ocp.AccessRequest(base + 1, 1, 0, 1, card)) == entered
    assert door.request(ocp.DoorEvent(base + 2, 1, 4)) == event
    # The person is inside the library: a second entry is anti-passback.
    again = door.request(ocp.AccessRequest(base + 3, 1, 0, 1, card))
    assert again.code == RC.APB_VIOLATION
    door.close()
    # The money beside it: recovered from the journal alone, charged once.
    till = site.client(FREE_CANTEEN_TERMINAL)
    balance = till.request(ocp.BalanceInquiry(pseq + 1, card))
    till.close()
    assert balance.balance_fen == row["main"] + row["subsidy"] - 100
    assert len(site.journal(FREE_CANTEEN_TERMINAL, pseq)) == 1
    assert len(site.fetch("SELECT 1 FROM access_decisions WHERE terminal_id = $1 AND txn_seq"
                          " = $2", door_tid, base + 1)) == 1
    assert len(site.fetch("SELECT 1 FROM access_door_events WHERE terminal_id = $1",
                          door_tid)) == 1
