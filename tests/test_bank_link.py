"""The bank link over real TCP: switch/_banklink.py (asyncio) against the trio bank host
simulator (terminals_sim/bank_host.py) running in a thread of the test process.

Sign-on, key exchange, echo, approve, decline, timeout then late answer, a duplicate answer,
the connection dropped and re-established, a reversal advice acknowledged, the bank restarting,
a cutover either way; and bad input from the bank (docs/bank-link.md, "Bad input"): wrong
bitmap, short and over-long fields, unknown MTI, wrong MAC, an answer for a STAN never sent, a
frame over the size limit. Each is counted and dropped, never approved, and the link stays up
except for the oversized frame, after which it reconnects.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from protocols import iso8583
from switch._banklink import (
    BankLink,
    BankLinkConfig,
    ReversalAdvice,
    TopupRequest,
    allocate_stan_rrn,
)
from terminals_sim.bank_host import BankHostThread

ROOT = Path(__file__).resolve().parent.parent
KEK = bytes(range(0x40, 0x60))
DEADLINE = 20.0
_stan = iter(range(1, 999_999))


def _req(card: str = "TOK-1", amount_fen: int = 10_000, terminal_id: int = 5001
         ) -> TopupRequest:
    stan = next(_stan)
    return TopupRequest(
        terminal_id=terminal_id, stan=stan, rrn=f"{stan:012d}", amount_fen=amount_fen,
        card_token=card, account_ref="A-42", local_datetime=dt.datetime(2026, 12, 2, 11, 30),
        tenant_id=1)


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _until(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(DEADLINE):
        while not cond():
            await asyncio.sleep(0.01)


@pytest.fixture
def bank() -> Iterator[BankHostThread]:
    with BankHostThread(KEK, balances={"TOK-1": 1_000_000, "TOK-2": 5_000},
                        late_seconds=0.8) as sim:
        yield sim


Body = Callable[[BankHostThread, BankLink], Awaitable[None]]


def linked(body: Body | None = None, *, timeout: float = 2.0,
           key_interval: float = 3600.0) -> Any:
    """A test of `body` against a started link (two connections) to the `bank` fixture, with
    this response timeout: generous by default, so a loaded machine does not turn an approval
    into a timeout; short only where a test waits for timeouts (their answers come later)."""

    def wrap(body: Body) -> Callable[[BankHostThread], None]:
        def test(bank: BankHostThread) -> None:
            async def main() -> None:
                cfg = BankLinkConfig(host="127.0.0.1", port=bank.port, kek=KEK, connections=2,
                                     response_timeout_seconds=timeout,
                                     key_exchange_interval_seconds=key_interval,
                                     echo_interval_seconds=0.2, reconnect_min_seconds=0.05,
                                     reconnect_max_seconds=0.2)
                link = BankLink(cfg)
                await link.start()
                try:
                    async with asyncio.timeout(DEADLINE):
                        await link.wait_available()
                    await body(bank, link)
                finally:
                    await link.close()

            asyncio.run(main())

        test.__name__ = test.__qualname__ = body.__name__
        test.__doc__ = body.__doc__
        return test

    return wrap if body is None else wrap(body)


@linked
async def test_sign_on_key_exchange_and_echo(bank: BankHostThread, link: BankLink) -> None:
    host = bank.host
    await _until(lambda: host.signed_on_connections == 2)
    assert host.keys.current == link.keys.current is not None
    codes = [m.code for m in host.received_of(iso8583.NetworkRequest)]
    assert codes.count(iso8583.NetworkCode.SIGN_ON) == 2
    assert codes.count(iso8583.NetworkCode.KEY_EXCHANGE) == 1
    await _until(lambda: sum(m.code is iso8583.NetworkCode.ECHO
                             for m in host.received_of(iso8583.NetworkRequest)) >= 2)
    assert link.available


@linked
async def test_approve_and_decline(bank: BankHostThread, link: BankLink) -> None:
    req = _req()
    answer = await link.authorize_topup(req)
    assert (answer.outcome, answer.field39, answer.response_code) == ("approved", "00", 0)
    assert len(answer.auth_code) == 6
    assert bank.host.balances["TOK-1"] == 1_000_000 - 10_000
    big = await link.authorize_topup(_req(card="TOK-2", amount_fen=6_000))
    assert (big.outcome, big.field39, big.response_code) == ("declined", "51", 51)
    unknown = await link.authorize_topup(_req(card="NOPE"))
    assert (unknown.outcome, unknown.field39) == ("declined", "14")
    bank.host.set_behaviour("decline", card="TOK-1", field39="05")
    declined = await link.authorize_topup(_req())
    assert (declined.outcome, declined.field39) == ("declined", "05")
    assert bank.host.balances["TOK-1"] == 1_000_000 - 10_000


@linked(timeout=0.3)
async def test_timeout_then_late_answer_is_dropped(bank: BankHostThread, link: BankLink
                                                   ) -> None:
    late_before = _metric("onecard_bank_unmatched_answers_total", reason="late")
    bank.host.set_behaviour("late")
    answer = await link.authorize_topup(_req())
    assert (answer.outcome, answer.sent) == ("unknown", True)
    await _until(lambda: _metric("onecard_bank_unmatched_answers_total", reason="late")
                 > late_before)
    assert link.available  # a late answer costs nothing but a count


@linked
async def test_duplicate_answer_is_counted(bank: BankHostThread, link: BankLink) -> None:
    before = _metric("onecard_bank_unmatched_answers_total", reason="duplicate")
    bank.host.set_behaviour("twice")
    answer = await link.authorize_topup(_req())
    assert answer.outcome == "approved"
    await _until(lambda: _metric("onecard_bank_unmatched_answers_total", reason="duplicate")
                 > before)


@linked
async def test_drop_then_reconnect_and_reversal_acknowledged(bank: BankHostThread,
                                                             link: BankLink) -> None:
    host = bank.host
    accepted = host.connections_accepted
    host.set_behaviour("drop", card="TOK-1")
    req = _req()
    answer = await link.authorize_topup(req)
    assert answer.outcome == "unknown"  # debited at the bank, the answer lost with the line
    assert host.balances["TOK-1"] == 1_000_000 - 10_000
    await _until(lambda: host.connections_accepted > accepted and link.available)
    acked = await link.send_reversal_advice(ReversalAdvice.of(req), repeat=False)
    assert acked and host.balances["TOK-1"] == 1_000_000
    assert host.advices[-1].repeat is False and host.topups[req.rrn].reversed
    # The repeat of an advice already done is acknowledged again, and moves nothing.
    assert await link.send_reversal_advice(ReversalAdvice.of(req), repeat=True)
    assert host.advices[-1].repeat is True and host.balances["TOK-1"] == 1_000_000


@linked(timeout=0.5)
async def test_advice_pending_across_a_bank_restart(bank: BankHostThread, link: BankLink
                                                    ) -> None:
    host = bank.host
    req = _req()
    host.set_behaviour("silent")
    assert (await link.authorize_topup(req)).outcome == "unknown"
    host.set_advice_action("silent")
    assert not await link.send_reversal_advice(ReversalAdvice.of(req), repeat=False)
    old_key = link.keys.current
    bank.call(host.restart)
    await _until(lambda: host.keys.current is not None and link.available)
    assert link.keys.current != old_key  # a new MAC key after the bank forgot the old one
    host.set_advice_action("ack")
    assert await link.send_reversal_advice(ReversalAdvice.of(req), repeat=True)
    assert req.rrn in host.advice_tombstones  # never seen as a top-up: nothing to reverse


@linked
async def test_key_exchange_rotates_the_mac_key(bank: BankHostThread, link: BankLink) -> None:
    first = link.keys.current
    await link._exchange_key(link._pick())  # what the rotation timer does
    assert link.keys.current != first and bank.host.keys.current == link.keys.current
    assert (await link.authorize_topup(_req())).outcome == "approved"


@linked(key_interval=0.05)
async def test_top_ups_go_on_while_the_key_rotates(bank: BankHostThread, link: BankLink
                                                   ) -> None:
    """Answers MAC'd under a key the bank has just installed, before its 0810 reaches the
    switch, still verify: the switch accepts the new key from the moment it announces it."""
    generations = {link.keys.current}
    bad_mac = _metric("onecard_bank_bad_messages_total", reason="bad_mac")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.0
    while loop.time() < deadline or len(generations) < 4:
        answers = await asyncio.gather(*(link.authorize_topup(_req(amount_fen=1))
                                         for _ in range(20)))
        assert {a.outcome for a in answers} == {"approved"}
        generations.add(link.keys.current)
    assert _metric("onecard_bank_bad_messages_total", reason="bad_mac") == bad_mac


@linked
async def test_cutover_either_way(bank: BankHostThread, link: BankLink) -> None:
    seen: list[dt.date] = []
    link.on_cutover = seen.append
    assert await link.cutover(dt.date(2026, 12, 3))
    assert bank.host.business_date == dt.date(2026, 12, 3)
    bank.call(bank.host.cutover, dt.date(2026, 12, 4))
    await _until(lambda: bool(seen))
    assert seen[0] == dt.date(2026, 12, 4) and link.business_date == dt.date(2026, 12, 4)


def test_unavailable_link_refuses_at_once() -> None:
    asyncio.run(_unavailable())


async def _unavailable() -> None:
    cfg = BankLinkConfig(host="127.0.0.1", port=1, kek=KEK, reconnect_min_seconds=0.05)
    link = BankLink(cfg)
    await link.start()
    try:
        answer = await link.authorize_topup(_req())
        assert (answer.outcome, answer.field39, answer.sent) == ("declined", "91", False)
        assert not await link.send_reversal_advice(ReversalAdvice.of(_req()), repeat=False)
    finally:
        await link.close()


# -- bad input from the bank ---------------------------------------------------------------

def _signed(msg: iso8583.Message, keys: iso8583.MacKeys) -> bytes:
    return iso8583.encode_message(msg, now=dt.datetime(2026, 12, 2, 3, 4, 5), keys=keys)


def _approval(stan: int, terminal_id: int = 5001) -> iso8583.TopupResponse:
    return iso8583.TopupResponse(terminal_id=terminal_id, stan=stan, rrn=f"{stan:012d}",
                                 amount_fen=10_000, field39="00", auth_code="000001")


def _bad_frames(keys: iso8583.MacKeys) -> dict[str, bytes]:
    good = _signed(_approval(999_001), keys)
    wrong_bitmap = bytearray(good)
    wrong_bitmap[4] |= 0x40  # bit 2 (PAN): not in our spec
    short = bytearray(good)
    short[-20] = 0x41  # inside the MAC'd part: a digit field no longer digits
    other = iso8583.MacKeys()
    other.install(keys.current or 0, bytes(32))
    return {
        "malformed": bytes(wrong_bitmap),
        "unknown_mti": b"0999" + good[4:],
        "bad_mac": _signed(_approval(999_002), other),
        "bad_mac_digit": bytes(short),
        "truncated": good[:-11],
        "overlong": good + b"0",
    }


@linked
async def test_bad_input_is_counted_and_never_approves(bank: BankHostThread, link: BankLink
                                                       ) -> None:
    reasons = ("malformed", "unknown_mti", "bad_mac")
    before = {r: _metric("onecard_bank_bad_messages_total", reason=r) for r in reasons}
    frames = _bad_frames(link.keys)
    for data in frames.values():
        bank.call(bank.host.send_raw, iso8583.frame(data))
    await _until(lambda: sum(_metric("onecard_bank_bad_messages_total", reason=r) - before[r]
                             for r in reasons) >= len(frames))
    assert _metric("onecard_bank_bad_messages_total", reason="unknown_mti") > before[
        "unknown_mti"]
    assert _metric("onecard_bank_bad_messages_total", reason="bad_mac") >= before["bad_mac"] + 2
    # An approval for a STAN never sent, well-formed and MAC'd: counted, dropped.
    unsolicited = _metric("onecard_bank_unmatched_answers_total", reason="unsolicited")
    bank.call(bank.host.send_raw, iso8583.frame(_signed(_approval(999_003), link.keys)))
    await _until(lambda: _metric("onecard_bank_unmatched_answers_total", reason="unsolicited")
                 > unsolicited)
    assert link.available  # the link stayed up through all of it
    assert (await link.authorize_topup(_req())).outcome == "approved"


@linked
async def test_oversized_frame_closes_and_reconnects(bank: BankHostThread, link: BankLink
                                                     ) -> None:
    before = _metric("onecard_bank_bad_messages_total", reason="frame_too_large")
    accepted = bank.host.connections_accepted
    bank.call(bank.host.send_raw, b"\xff\xff" + bytes(100))
    await _until(lambda: _metric("onecard_bank_bad_messages_total", reason="frame_too_large")
                 > before)
    await _until(lambda: bank.host.connections_accepted >= accepted + 1 and link.available)
    assert (await link.authorize_topup(_req())).outcome == "approved"


# -- STAN and RRN from PostgreSQL -----------------------------------------------------------

def test_stan_and_rrn_survive_reconnects(db_dsn: str) -> None:
    asyncio.run(_stan_and_rrn(db_dsn))


async def _stan_and_rrn(db_dsn: str) -> None:
    conn = await asyncpg.connect(db_dsn)
    try:
        first = [await allocate_stan_rrn(conn) for _ in range(3)]
    finally:
        await conn.close()
    conn = await asyncpg.connect(db_dsn)  # as a restarted switch would
    try:
        stan, rrn = await allocate_stan_rrn(conn)
        assert [s for s, _ in first] == [1, 2, 3] and stan == 4
        assert [r for _, r in first] == ["000000000001", "000000000002", "000000000003"]
        assert rrn == "000000000004"
        # The next day starts at STAN 1 again; the RRN goes on.
        await conn.execute("UPDATE bank_stan_days SET day = day - 1")
        stan, rrn = await allocate_stan_rrn(conn)
        assert (stan, rrn) == (1, "000000000005")
        await conn.execute("UPDATE bank_stan_days SET last_stan = 999999")
        with pytest.raises(asyncpg.CheckViolationError):
            await allocate_stan_rrn(conn)
    finally:
        await conn.close()


@linked
async def test_delay_per_card_and_the_daily_file(bank: BankHostThread, link: BankLink) -> None:
    host = bank.host
    host.set_behaviour("delay", card="TOK-2", delay_seconds=0.1)  # within the 2 s timeout
    slow = _req(card="TOK-2", amount_fen=1_000)
    fast = _req(card="TOK-1", amount_fen=2_000)
    answers = await asyncio.gather(link.authorize_topup(slow), link.authorize_topup(fast))
    assert [a.outcome for a in answers] == ["approved", "approved"]
    host.set_behaviour("delay", card="TOK-2", delay_seconds=2.5)  # past it
    assert (await link.authorize_topup(_req(card="TOK-2", amount_fen=1_000))).outcome == (
        "unknown")
    reversed_one = _req(amount_fen=3_000)
    assert (await link.authorize_topup(reversed_one)).outcome == "approved"
    assert await link.send_reversal_advice(ReversalAdvice.of(reversed_one), repeat=False)
    path = Path(tempfile.mkdtemp()) / "topups.csv"
    lines = host.write_daily_file(path, host.business_date)
    text = path.read_bytes().decode("utf-8")
    rows = text.split("\n")
    assert rows[0] == ("business_date,rrn,stan,terminal_id,card_token,amount_fen,field39,"
                       "auth_code") and rows[-1] == "" and "\r" not in text
    assert lines == 3 == len(rows) - 2  # slow, fast, the late one; not the reversed one
    assert reversed_one.rrn not in text
    assert f"{fast.rrn},{fast.stan:06d},5001,TOK-1,2000,00," in text


def test_onecard_bank_sim_serves_the_spec() -> None:
    """`onecard bank-sim` on its own: a client signs on, exchanges a key, tops up."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "onecard", "bank-sim", "--port", "0", "--kek", KEK.hex()],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(line.rsplit(":", 1)[1])
        asyncio.run(_sign_on_and_top_up(port))
    finally:
        proc.terminate()
        proc.wait(10)


async def _sign_on_and_top_up(port: int) -> None:
    link = BankLink(BankLinkConfig(host="127.0.0.1", port=port, kek=KEK))
    await link.start()
    try:
        async with asyncio.timeout(DEADLINE):
            await link.wait_available()
        assert (await link.authorize_topup(_req(card="ANY"))).outcome == "approved"
    finally:
        await link.close()


def test_close_signs_off(bank: BankHostThread) -> None:
    async def main() -> None:
        link = BankLink(BankLinkConfig(host="127.0.0.1", port=bank.port, kek=KEK,
                                       connections=2))
        await link.start()
        async with asyncio.timeout(DEADLINE):
            await link.wait_available()
        await _until(lambda: link.state()["connections"] == 2)  # as the link sees it
        await link.close()
        assert not link.available

    asyncio.run(main())
    codes = [m.code for m in bank.host.received_of(iso8583.NetworkRequest)]
    assert codes.count(iso8583.NetworkCode.SIGN_OFF) == 2


@linked
async def test_bank_refusing_connections_then_back(bank: BankHostThread, link: BankLink
                                                   ) -> None:
    host = bank.host
    host.refuse_connections = True
    bank.call(host.restart)
    await _until(lambda: not link.available)
    answer = await link.authorize_topup(_req())
    assert (answer.outcome, answer.sent) == ("declined", False)  # nothing sent: no reversal
    host.refuse_connections = False
    await _until(lambda: link.available)
    assert (await link.authorize_topup(_req())).outcome == "approved"
