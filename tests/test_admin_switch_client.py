"""admin_api's SwitchClient against a real switch: pipelined admin requests, refusals, and a
switch SIGKILLed and restarted under it (recovery replays credits, debits and transfers)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from admin_api._switch_client import (
    WALLET_MAIN,
    WALLET_SUBSIDY,
    SwitchClient,
    SwitchRefused,
    SwitchUnavailable,
)
from onecard.seed import ADMIN_TERMINAL, CASH_DESK_MERCHANT, SUBSIDY_FUND, SeedPlan
from protocols import ocp
from tests.switch_site import FREE_CANTEEN_TERMINAL, Site

RC = ocp.ResponseCode


@pytest.fixture
def site(db_dsn: str) -> Iterator[Site]:
    s = Site(db_dsn, SeedPlan(accounts=100, terminals=5, lost_share=0, frozen_share=0,
                              closed_share=0, replaced_share=0, main_fen_max=20_000))
    s.start()
    try:
        yield s
    finally:
        if s.switch is not None:
            s.switch.stop()


def client(site: Site, terminal_id: int = ADMIN_TERMINAL, timeout: float = 10.0
           ) -> SwitchClient:
    assert site.switch is not None
    return SwitchClient(site.switch.host, site.switch.port, terminal_id, site.key(terminal_id),
                        timeout=timeout)


def cards(site: Site, n: int) -> list[int]:
    rows = site.fetch("SELECT card_no FROM cards c JOIN accounts a ON a.id = c.account_id"
                      " WHERE a.opening_main_fen >= 5000 ORDER BY a.id LIMIT $1", n)
    return [r["card_no"] for r in rows]


def test_pipelined_credits_debits_and_transfers_with_repeats(site: Site) -> None:
    card, other = cards(site, 2)

    async def go() -> None:
        c = client(site)
        assert await c.start() == 0
        start = await c.balance(1, card)
        results = await asyncio.gather(
            c.credit(2, card, WALLET_MAIN, 1_000, CASH_DESK_MERCHANT),
            c.credit(3, card, WALLET_SUBSIDY, 400, SUBSIDY_FUND),
            c.debit(4, other, WALLET_MAIN, 250, CASH_DESK_MERCHANT),
            c.transfer(5, card, WALLET_SUBSIDY, 100),
            c.debit(6, card, WALLET_SUBSIDY, 10**6, SUBSIDY_FUND),
        )
        assert [r.code for r in results] == [0, 0, 0, 0, RC.INSUFFICIENT_FUNDS]
        assert [type(r) for r in results] == [ocp.CreditResult, ocp.CreditResult,
                                              ocp.DebitResult, ocp.TransferResult,
                                              ocp.DebitResult]
        end = await c.balance(7, card)
        assert (end.main_fen, end.subsidy_fen) == (start.main_fen + 1_100,
                                                   start.subsidy_fen + 300)
        # The same txn_seq again, even with other fields: the original answer.
        assert await c.credit(2, card, WALLET_SUBSIDY, 1, SUBSIDY_FUND) == results[0]
        await c.close()
        again = client(site)
        assert await again.start() == 7  # the switch's last txn_seq for the terminal
        assert await again.debit(4, other, WALLET_MAIN, 250, CASH_DESK_MERCHANT) == results[2]
        await again.close()

    asyncio.run(go())
    assert len(site.journal(ADMIN_TERMINAL, 2)) == 1


def test_refusals_and_an_unreachable_switch(site: Site) -> None:
    (card,) = cards(site, 1)

    async def go() -> None:
        pos = client(site, FREE_CANTEEN_TERMINAL)
        await pos.start()
        with pytest.raises(SwitchRefused) as info:
            await pos.credit(1, card, WALLET_MAIN, 100, CASH_DESK_MERCHANT)
        assert (info.value.code, info.value.txn_seq) == (RC.NOT_PERMITTED, 1)
        assert (await pos.balance(1, card)).code == 0  # txn_seq 1 was not used up
        await pos.close()
        admin = client(site, timeout=2.0)
        await admin.start()
        with pytest.raises(SwitchRefused) as info:
            await admin.credit(2, card, WALLET_MAIN, 100, 30_000)  # beyond merchants_max
        assert info.value.code == RC.INVALID_FIELD
        assert site.switch is not None
        await asyncio.to_thread(site.switch.stop)
        with pytest.raises(SwitchUnavailable):
            await admin.credit(3, card, WALLET_MAIN, 100, CASH_DESK_MERCHANT)
        assert not admin.connected
        await admin.close()

    asyncio.run(go())
    assert site.journal(ADMIN_TERMINAL, 3) == []
    site.start()  # (the fixture stops it)


def _balance_row(site: Site, card_no: int) -> tuple[int, int]:
    rows = site.fetch(
        "SELECT a.opening_main_fen + coalesce(sum(j.main_delta_fen), 0) AS main,"
        " a.opening_subsidy_fen + coalesce(sum(j.subsidy_delta_fen), 0) AS subsidy"
        " FROM cards c JOIN accounts a ON a.id = c.account_id"
        " LEFT JOIN journal j ON j.account_id = a.id WHERE c.card_no = $1"
        " GROUP BY a.id", card_no)
    return rows[0]["main"], rows[0]["subsidy"]


def test_sigkill_mid_stream_keeps_every_admin_movement_once_and_the_books_balance(
        site: Site) -> None:
    """Acknowledged means durable for the admin kinds too: the switch dies with admin requests
    in flight; the client resends them with their txn_seq after the restart; recovery replayed
    the credits, debits and transfers already committed, so nothing is lost or doubled."""
    card_nos = cards(site, 8)
    requests = 299
    answered: dict[int, Any] = {}

    def message(seq: int) -> Any:
        card = card_nos[seq % len(card_nos)]
        return (ocp.Credit(seq, card, WALLET_MAIN, 300 + seq, CASH_DESK_MERCHANT),
                ocp.Credit(seq, card, WALLET_SUBSIDY, 50, SUBSIDY_FUND),
                ocp.Debit(seq, card, WALLET_MAIN, 200, CASH_DESK_MERCHANT),
                ocp.Transfer(seq, card, WALLET_SUBSIDY, 30))[seq % 4]

    def call(c: SwitchClient, seq: int) -> Any:
        m = message(seq)
        if isinstance(m, ocp.Credit):
            return c.credit(m.txn_seq, m.card_no, m.wallet, m.amount_fen, m.from_merchant_id)
        if isinstance(m, ocp.Debit):
            return c.debit(m.txn_seq, m.card_no, m.wallet, m.amount_fen, m.to_merchant_id)
        return c.transfer(m.txn_seq, m.card_no, m.from_wallet, m.amount_fen)

    async def go() -> None:
        c = client(site, timeout=120.0)
        await c.start()
        tasks: list[asyncio.Task[None]] = []

        async def one(seq: int) -> None:
            answered[seq] = await call(c, seq)

        async def produce(first: int, last: int) -> None:
            for seq in range(first, last + 1):
                tasks.append(asyncio.create_task(one(seq)))
                await asyncio.sleep(0.002)

        await produce(1, 100)  # a stream answered one by one, then a burst it dies under
        tasks.extend(asyncio.create_task(one(seq)) for seq in range(101, 141))
        await asyncio.sleep(0)  # each task has written its frame
        assert site.switch is not None and site.switch.proc is not None
        site.switch.proc.send_signal(signal.SIGKILL)
        producer = asyncio.create_task(produce(141, requests))  # sent while it is down
        before_kill = dict(answered)
        in_flight = {seq for seq in range(1, len(tasks) + 1) if seq not in before_kill}
        assert in_flight, "the kill should catch admin requests in flight"
        await asyncio.to_thread(site.switch.wait, 30)
        switch = await asyncio.to_thread(site.start)
        c.port = switch.port  # a new process on a new port; the client reconnects there
        await producer
        await asyncio.gather(*tasks)
        # What was answered before the kill is answered the same way after it.
        for seq, before in before_kill.items():
            assert await call(c, seq) == before
        await c.close()

    asyncio.run(go())
    assert len(answered) == requests
    rows = site.fetch("SELECT txn_seq, kind, code, amount_fen, main_fen, subsidy_fen"
                      " FROM journal WHERE terminal_id = $1", ADMIN_TERMINAL)
    assert sorted(r["txn_seq"] for r in rows) == list(range(1, requests + 1))  # each once
    by_seq = {r["txn_seq"]: r for r in rows}
    for seq, answer in answered.items():
        row = by_seq[seq]
        assert (row["code"], row["main_fen"], row["subsidy_fen"]) == (
            answer.code, answer.main_fen, answer.subsidy_fen), seq
        assert row["kind"] == (8, 8, 9, 10)[seq % 4]
    # The switch's balances are opening + journal, to the fen, and the books balance.
    pos = site.client(FREE_CANTEEN_TERMINAL)
    for seq, card in enumerate(card_nos, start=1):
        r = pos.request(ocp.BalanceInquiry(seq, card))
        assert (r.main_fen, r.subsidy_fen) == _balance_row(site, card)
    pos.close()
    assert site.stop() == 0
    report = site.audit()
    assert report.conserved, report
    assert report.duplicate_requests == 0 and report.journal_rows_after_checkpoint == 0
    site.start()  # from the checkpoint this time: repeats still answered from the window
    admin = site.client(ADMIN_TERMINAL, last_txn_seq=requests)
    assert type(message(requests)) is ocp.Transfer
    assert admin.request(message(requests)) == answered[requests]
    admin.close()
