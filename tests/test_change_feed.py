"""The change feed end to end: admin-side changes committed in PostgreSQL (table change + outbox
row in one transaction) reach a running switch (a real process) through a real Redis, and
still do when Redis loses the stream, is unreachable, or holds a forged entry.

Every wait is on a condition under a generous deadline; nothing passes or fails on timing.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest
import redis

from protocols import ocp
from switch._change_events import (
    AccountStatusChanged,
    FeedEntry,
    encode_event,
    entry_fields,
)
from switch._outbox import STREAM_KEY_PREFIX
from tests import change_writer as admin
from tests.ocp_client import OcpClient
from tests.switch_site import (
    FREE_CANTEEN_TERMINAL,
    SUPERMARKET_TERMINAL,
    Site,
    free_port,
)

RC = ocp.ResponseCode
REDIS_URL = "redis://127.0.0.1:6379/0"
DEADLINE_SECONDS = 30.0
LOST, ACTIVE = 2, 0


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _with_conn(dsn: str, fn: Callable[[asyncpg.Connection], Any]) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await fn(conn)
    finally:
        await conn.close()


def change(site: Site, fn: Callable[[asyncpg.Connection], Any]) -> Any:
    """Commit one admin-side change (tests/change_writer.py) against the site's database."""
    return run(_with_conn(site.dsn, fn))


class Till:
    """A signed-on terminal that counts its own txn_seq."""

    def __init__(self, site: Site, terminal_id: int) -> None:
        self.site = site
        self.terminal_id = terminal_id
        self.client = site.client(terminal_id)
        self.seq = self.client.sign_on_result.last_txn_seq  # go on after the switch's last

    def ask(self, msg_of_seq: Callable[[int], Any]) -> Any:
        self.seq += 1
        return self.client.request(msg_of_seq(self.seq))

    def buy(self, card_no: int, amount_fen: int = 100) -> Any:
        return self.ask(lambda s: ocp.Purchase(s, card_no, amount_fen, 0))

    def wait_code(self, card_no: int, code: int, amount_fen: int = 100) -> Any:
        """Purchase until the answer has `code` (the switch has applied the change)."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            answer = self.buy(card_no, amount_fen)
            if answer.code == code:
                return answer
            assert time.monotonic() < deadline, (
                f"card {card_no} still answers {answer.code}, not {code}, after "
                f"{DEADLINE_SECONDS} s:\n{self.site.switch.log_tail() if self.site.switch else ''}"
            )
            time.sleep(0.01)

    def close(self) -> None:
        self.client.close()


def stream_key(site: Site) -> str:
    return STREAM_KEY_PREFIX + site.dsn.rsplit("/", 1)[1]


def metrics_of(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("onecard_changefeed"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def log_events(site: Site, name: str) -> list[dict[str, Any]]:
    assert site.switch is not None
    return [json.loads(line) for line in site.switch.log_path.read_text().splitlines()
            if f'"{name}"' in line]


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def feed_site(db_dsn: str, redis_client: redis.Redis) -> Iterator[Site]:
    """The seeded site, its switch serving /metrics, and its stream deleted afterwards."""
    s = Site(db_dsn)
    s.metrics_port = free_port()  # type: ignore[attr-defined]
    s.start(args=["--metrics-port", str(s.metrics_port)])  # type: ignore[attr-defined]
    try:
        yield s
    finally:
        if s.switch is not None:
            s.switch.stop()
        redis_client.delete(stream_key(s))


def newest_outbox_id(site: Site) -> int:
    return int(site.fetch("SELECT coalesce(max(id), 0) AS n FROM change_outbox")[0]["n"])


def new_account_id(site: Site) -> int:
    return int(site.fetch("SELECT max(id) + 1 AS n FROM accounts")[0]["n"])


# -- a running switch ------------------------------------------------------------------------


def test_lost_unfrozen_issued_replaced_and_disabled_reach_a_running_switch(
        feed_site: Site) -> None:
    site = feed_site
    card = site.card()
    till = Till(site, FREE_CANTEEN_TERMINAL)
    assert till.buy(card["card_no"]).code == RC.APPROVED

    # 挂失: reported lost -> refused; 解挂: unfrozen -> approved again.
    change(site, lambda c: admin.set_account_status(c, card["account_id"], LOST))
    till.wait_code(card["card_no"], RC.CARD_LOST)
    change(site, lambda c: admin.set_account_status(c, card["account_id"], ACTIVE))
    till.wait_code(card["card_no"], RC.APPROVED)

    # A new cardholder (staff class: 50 yuan overdraft) and card, issued while it runs.
    account_id = new_account_id(site)
    new_card = 66_000_000_000 + account_id
    change(site, lambda c: admin.open_account_with_card(c, account_id, new_card))
    fresh = till.wait_code(new_card, RC.APPROVED, 250)
    assert (fresh.amount_fen, fresh.balance_fen) == (250, -250)

    # Replacement: the new card works, the old one is dead.
    replacement = new_card + 1
    change(site, lambda c: admin.replace_card(c, new_card, replacement, account_id))
    till.wait_code(new_card, RC.CARD_CANCELLED)
    assert till.buy(replacement).code == RC.APPROVED

    # The caches hold what the outbox says, and the metrics say so.
    newest = newest_outbox_id(site)
    port = site.metrics_port  # type: ignore[attr-defined]
    deadline = time.monotonic() + DEADLINE_SECONDS
    while metrics_of(port)["onecard_changefeed_applied_id"] < newest:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    m = metrics_of(port)
    assert m["onecard_changefeed_redis_up"] == 1
    assert m["onecard_changefeed_lag_seconds_count"] == newest
    assert m["onecard_changefeed_events_refused_total"] == 0
    assert m['onecard_changefeed_events_total{source="stream"}'] + m[
        'onecard_changefeed_events_total{source="database"}'] == newest

    # A disabled terminal: its live session ends, and it cannot sign on again.
    other = Till(site, SUPERMARKET_TERMINAL)
    assert other.buy(card["card_no"]).code == RC.APPROVED
    change(site, lambda c: admin.set_terminal(c, SUPERMARKET_TERMINAL, enabled=False))
    assert other.client.read_until_closed() == []
    assert site.switch is not None
    again = OcpClient(site.switch.host, site.switch.port, SUPERMARKET_TERMINAL,
                      site.key(SUPERMARKET_TERMINAL))
    again.send_raw(again.conn.start_sign_on(SUPERMARKET_TERMINAL,
                                            site.key(SUPERMARKET_TERMINAL), b"n" * 16))
    (refusal,) = again.read_until_closed()
    assert refusal.code == RC.TERMINAL_DISABLED
    again.close()
    other.close()
    till.close()


def test_lost_stream_rollback_holes_and_forged_entries_do_not_stall_the_feed(
        feed_site: Site, redis_client: redis.Redis) -> None:
    site = feed_site
    till = Till(site, FREE_CANTEEN_TERMINAL)
    first, second, third = (site.card(skip=n) for n in range(3))

    change(site, lambda c: admin.set_account_status(c, first["account_id"], LOST))
    till.wait_code(first["card_no"], RC.CARD_LOST)

    # Redis loses the stream; a transaction rolls back after taking an outbox id (a hole).
    redis_client.delete(stream_key(site))

    async def rolled_back(conn: asyncpg.Connection) -> None:
        tx = conn.transaction()
        await tx.start()
        await admin.append(conn, AccountStatusChanged(second["account_id"], LOST))
        await tx.rollback()

    change(site, rolled_back)
    change(site, lambda c: admin.set_account_status(c, second["account_id"], LOST))
    till.wait_code(second["card_no"], RC.CARD_LOST)
    ids = [r["id"] for r in site.fetch("SELECT id FROM change_outbox ORDER BY id")]
    assert ids == [1, 3], "the rolled-back id is a hole"

    # Someone who can write to Redis forges "unfreeze the first card" with the next id. It
    # does not verify (no key), so the switch reads PostgreSQL instead, where it is not.
    forged_kind, forged_payload = encode_event(AccountStatusChanged(first["account_id"], ACTIVE))
    forged = entry_fields(FeedEntry(4, 3, forged_kind, forged_payload, 0), b"not the key")
    redis_client.xadd(stream_key(site), forged, id="4-0")
    change(site, lambda c: admin.set_account_status(c, third["account_id"], LOST))  # id 4
    till.wait_code(third["card_no"], RC.CARD_LOST)
    assert till.buy(first["card_no"]).code == RC.CARD_LOST
    assert log_events(site, "changefeed.bad_entry")

    # Still fed after all that: a change after the forged id travels again.
    change(site, lambda c: admin.set_account_status(c, first["account_id"], ACTIVE))
    till.wait_code(first["card_no"], RC.APPROVED)
    port = site.metrics_port  # type: ignore[attr-defined]
    assert metrics_of(port)["onecard_changefeed_gaps_total"] >= 1
    till.close()


def test_restart_catches_up_and_live_issued_cards_survive_checkpoints(feed_site: Site) -> None:
    """Recovery = master data + checkpoint + statuses + replay: an account and card issued
    after the last checkpoint, spent on, and a card lost meanwhile, all survive a crash; a
    change committed while the switch is down is there when it is back."""
    site = feed_site
    assert site.switch is not None
    card = site.card()
    till = Till(site, FREE_CANTEEN_TERMINAL)
    assert till.buy(card["card_no"]).code == RC.APPROVED
    till.close()
    assert site.stop() == 0  # a checkpoint without what follows
    site.start(args=["--metrics-port", str(site.metrics_port)])  # type: ignore[attr-defined]

    till = Till(site, FREE_CANTEEN_TERMINAL)
    account_id = new_account_id(site)
    new_card = 66_000_000_000 + account_id
    change(site, lambda c: admin.open_account_with_card(c, account_id, new_card))
    assert till.wait_code(new_card, RC.APPROVED, 300).balance_fen == -300
    change(site, lambda c: admin.set_account_status(c, card["account_id"], LOST))
    till.wait_code(card["card_no"], RC.CARD_LOST)
    till.close()
    site.switch.kill()  # no checkpoint: the journal after the old one is replayed

    other = site.card(skip=1)
    change(site, lambda c: admin.set_account_status(c, other["account_id"], LOST))  # while down
    site.start(args=["--metrics-port", str(site.metrics_port)])  # type: ignore[attr-defined]
    (recovered,) = log_events(site, "switch.recovered")[-1:]
    assert recovered["changes_applied"] == newest_outbox_id(site)
    till = Till(site, FREE_CANTEEN_TERMINAL)
    assert till.ask(lambda s: ocp.BalanceInquiry(s, new_card)).balance_fen == -300
    assert till.buy(new_card, 50).balance_fen == -350
    assert till.buy(card["card_no"]).code == RC.CARD_LOST
    assert till.buy(other["card_no"]).code == RC.CARD_LOST
    till.close()

    # Once more with a checkpoint that holds the live-issued account.
    assert site.stop() == 0
    site.start(args=["--metrics-port", str(site.metrics_port)])  # type: ignore[attr-defined]
    till = Till(site, FREE_CANTEEN_TERMINAL)
    assert till.ask(lambda s: ocp.BalanceInquiry(s, new_card)).balance_fen == -350
    assert till.buy(card["card_no"]).code == RC.CARD_LOST
    till.close()
    assert site.audit().conserved


def test_without_redis_the_switch_serves_and_polls_postgresql(db_dsn: str) -> None:
    site = Site(db_dsn)
    closed_port = free_port()
    port = free_port()
    site.start(extra_env={"ONECARD_REDIS_URL": f"redis://127.0.0.1:{closed_port}/0",
                          "ONECARD_CHANGEFEED_POLL_SECONDS": "0.2"},
               args=["--metrics-port", str(port)])
    try:
        card = site.card()
        till = Till(site, FREE_CANTEEN_TERMINAL)
        assert till.buy(card["card_no"]).code == RC.APPROVED
        change(site, lambda c: admin.set_account_status(c, card["account_id"], LOST))
        till.wait_code(card["card_no"], RC.CARD_LOST)
        account_id = new_account_id(site)
        change(site, lambda c: admin.open_account_with_card(c, account_id, 77_000 + account_id))
        till.wait_code(77_000 + account_id, RC.APPROVED)
        m = metrics_of(port)
        assert m["onecard_changefeed_redis_up"] == 0
        assert m['onecard_changefeed_events_total{source="database"}'] == 3
        assert log_events(site, "changefeed.redis_down")
        till.close()
    finally:
        assert site.switch is not None
        site.switch.stop()
