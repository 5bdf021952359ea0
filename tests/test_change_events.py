"""Change events and the outbox without a switch process: decoding (property tests), idempotent
apply, stream entry verification, outbox_append's commit order, and relays racing each other
on a real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import hypothesis.strategies as st
import msgspec
import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings

from ledger_ext import Ledger
from switch._change_events import (
    EVENT_TYPES,
    AccountOpened,
    AccountStatusChanged,
    CardBound,
    CardCancelled,
    ChangeEventError,
    ClassConfigured,
    CrossTenantChanged,
    FeedEntry,
    MerchantOpened,
    TenantConfigured,
    TerminalUpserted,
    apply_event,
    decode_event,
    encode_event,
    entry_fields,
    parse_entry,
)
from switch._masterdata import MasterData, TerminalInfo
from switch._relay import OutboxRelay
from tests import change_writer as admin

KEY = b"k" * 32
REDIS_URL = "redis://127.0.0.1:6379/0"

# -- decoding ----------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12,
)
_FIELDS = sorted({f for t in EVENT_TYPES.values() for f in t.__struct_fields__})


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(sorted(EVENT_TYPES)),
       payload=st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=6),
                               st.integers(-(2**64), 2**64) | _json, max_size=8))
def test_any_payload_decodes_to_its_kind_or_is_refused_naming_why(kind: str,
                                                                   payload: dict[str, Any]
                                                                   ) -> None:
    raw = msgspec.json.encode(payload)
    try:
        event = decode_event(kind, raw)
    except ChangeEventError as exc:
        assert str(exc).startswith(kind)
        return
    assert type(event) is EVENT_TYPES[kind]
    assert encode_event(event)[0] == kind
    assert decode_event(*encode_event(event)) == event  # the writer's encoding round-trips


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=64), kind=st.text(max_size=30))
def test_garbage_is_refused_with_the_one_error(raw: bytes, kind: str) -> None:
    with contextlib.suppress(ChangeEventError):
        decode_event(kind, raw)


def test_decoding_is_strict_and_checks_ranges() -> None:
    assert decode_event("account_status_changed", b'{"account_id": 5, "status": 2}') == (
        AccountStatusChanged(5, 2))
    # A newer writer's extra field is ignored (schema evolution), not a refusal.
    assert decode_event("card_bound", b'{"card_no": 9, "account_id": 5, "issuer": "x"}') == (
        CardBound(9, 5))
    for kind, payload, where in [
        ("account_status_changed", b'{"account_id": "5", "status": 2}', "$.account_id"),
        ("account_status_changed", b'{"account_id": 5, "status": 4}', "$.status"),
        ("card_bound", b'{"card_no": 0, "account_id": 5}', "$.card_no"),
        ("tenant_configured", b'{"tenant_id": 1, "meal_windows": [[0, 1441]]}',
         "$.meal_windows[0][1]"),
    ]:
        with pytest.raises(ChangeEventError, match=where.replace("$", r"\$").replace("[", r"\[")):
            decode_event(kind, payload)
    with pytest.raises(ChangeEventError, match="unknown change kind"):
        decode_event("account_deleted", b"{}")


# -- stream entries ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from([b"prev", b"kind", b"payload", b"at", b"mac"]),
       position=st.integers(0, 100), bit=st.integers(0, 7))
def test_any_changed_byte_of_an_entry_is_refused(field: bytes, position: int, bit: int) -> None:
    kind, payload = encode_event(AccountStatusChanged(7, 0))
    entry = FeedEntry(12, 9, kind, payload, 1_790_000_000_000_000)
    fields = {k.encode(): v for k, v in entry_fields(entry, KEY).items()}
    assert parse_entry(b"12-0", fields, KEY) == entry
    value = bytearray(fields[field])
    value[position % len(value)] ^= 1 << bit
    fields[field] = bytes(value)
    with pytest.raises(ChangeEventError):
        parse_entry(b"12-0", fields, KEY)


def test_an_entry_under_another_key_or_id_is_refused() -> None:
    kind, payload = encode_event(CardCancelled(5))
    fields = {k.encode(): v for k, v in entry_fields(FeedEntry(3, 2, kind, payload, 0),
                                                      KEY).items()}
    with pytest.raises(ChangeEventError, match="bad MAC"):
        parse_entry(b"3-0", fields, b"x" * 32)
    with pytest.raises(ChangeEventError, match="bad MAC"):
        parse_entry(b"4-0", fields, KEY)
    with pytest.raises(ChangeEventError, match="bad MAC"):
        parse_entry(b"3-1", fields, KEY)
    with pytest.raises(ChangeEventError, match="malformed"):
        parse_entry(b"3-0", {b"prev": b"2"}, KEY)


# -- applying ----------------------------------------------------------------------------------

EVENTS = [
    TenantConfigured(3, 28_800, [(660, 780)]),
    CrossTenantChanged(1, 3, True),
    ClassConfigured(4, 1_000, 5_000, 20_000, 2, 3_000),
    MerchantOpened(9, 3, 1, 800, 0),
    AccountOpened(40, 3, 4),
    CardBound(4_000, 40),
    CardBound(4_001, 40),
    CardCancelled(4_000, 40),
    AccountStatusChanged(40, 2),
    AccountStatusChanged(1, 1),
    TerminalUpserted(70, 9, 1, 1, True),
]


def _cache() -> tuple[Ledger, MasterData]:
    ledger = Ledger(64, 16)
    ledger.configure_tenant(1, 28_800)
    ledger.configure_class(1, 0, 0, 0, 0, 0)
    ledger.open_merchant(1, 1, balance_fen=-500)
    ledger.open_account(1, 1, 1, 0, 500, 0)
    ledger.bind_card(1_000, 1)
    master = MasterData({}, 1, 1, 1, 0)
    return ledger, master


def _state(ledger: Ledger, master: MasterData) -> Any:
    cards = {c: ledger.card_account(c) for c in (1_000, 4_000, 4_001)}
    return (ledger.snapshot(), ledger.statistics(), cards, dict(master.terminals),
            master.accounts, master.merchants, master.cards)


def test_applying_an_event_twice_changes_nothing() -> None:
    once_ledger, once_master = _cache()
    for e in EVENTS:
        apply_event(once_ledger, once_master, e)
    twice_ledger, twice_master = _cache()
    for e in EVENTS:
        apply_event(twice_ledger, twice_master, e)
        apply_event(twice_ledger, twice_master, e)
    assert _state(once_ledger, once_master) == _state(twice_ledger, twice_master)
    # ... and replaying the whole history over a state that holds it (a start-up snapshot).
    for e in EVENTS:
        apply_event(twice_ledger, twice_master, e)
    assert _state(once_ledger, once_master) == _state(twice_ledger, twice_master)
    assert once_ledger.card_account(4_000) == (40, True)
    assert once_ledger.account(40).status == 2
    assert once_master.terminals[70] == TerminalInfo(70, 9, 1, 1, True)
    # The new account took a purchase at the new merchant's fixed price, with the new class.
    assert once_ledger.purchase(70, 1, 4_001, 9, 0, 1_790_000_000).code == 41  # lost
    apply_event(once_ledger, once_master, AccountStatusChanged(40, 0))
    approved = once_ledger.purchase(70, 2, 4_001, 9, 0, 1_790_000_000)
    assert (approved.code, approved.amount_fen, approved.main_fen) == (0, 800, -800)


def test_a_change_the_cache_cannot_take_is_refused_with_its_reason() -> None:
    ledger, master = _cache()
    for event, reason in [
        (CardBound(1_000, 2), "bound to account 1"),  # account 2 does not exist either
        (CardCancelled(999), "never bound"),
        (AccountOpened(2, 1, 1, opening_main_fen=100), "money comes in through the switch"),
        (AccountOpened(1, 1, 2), "already open with tenant 1 and class 1"),
        (AccountOpened(65, 1, 1), "out of 1..64"),
        (MerchantOpened(2, 1, opening_balance_fen=5), "starts at 0"),
        (AccountStatusChanged(33, 2), "33"),
    ]:
        with pytest.raises(ChangeEventError, match=reason):
            apply_event(ledger, master, event)
    assert _state(ledger, master) == _state(*_cache())


def test_a_terminal_disabled_rekeyed_or_moved_ends_its_session() -> None:
    ledger, master = _cache()
    assert apply_event(ledger, master, TerminalUpserted(5, 1, 1, 1, True)) == 0  # new
    assert apply_event(ledger, master, TerminalUpserted(5, 1, 1, 1, True)) == 0  # same
    assert apply_event(ledger, master, TerminalUpserted(5, 1, 2, 1, True)) == 0  # kind only
    assert apply_event(ledger, master, TerminalUpserted(5, 1, 2, 2, True)) == 5  # re-keyed
    assert apply_event(ledger, master, TerminalUpserted(5, 2, 2, 2, True)) == 5  # moved
    assert apply_event(ledger, master, TerminalUpserted(5, 2, 2, 2, False)) == 5  # disabled
    assert not master.terminals[5].enabled


# -- the outbox in PostgreSQL ------------------------------------------------------------------


async def _wait(condition: Any, what: str, deadline: float = 30.0) -> None:
    async with asyncio.timeout(deadline):
        while not await condition():
            await asyncio.sleep(0.01)


def test_outbox_ids_are_drawn_in_commit_order_and_a_rollback_leaves_a_hole(db_dsn: str) -> None:
    async def go() -> None:
        first = await asyncpg.connect(db_dsn)
        second = await asyncpg.connect(db_dsn)
        watcher = await asyncpg.connect(db_dsn)
        notified: list[str] = []
        await watcher.add_listener("onecard_outbox", lambda *a: notified.append(a[3]))
        try:
            tx1 = first.transaction()
            await tx1.start()
            id1 = await admin.append(first, CardCancelled(1))
            tx2 = second.transaction()
            await tx2.start()
            pending = asyncio.ensure_future(admin.append(second, CardCancelled(2)))
            pid2 = second.get_server_pid()

            async def second_waits_for_the_lock() -> bool:
                return bool(await watcher.fetchval(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                    pid2))

            await _wait(second_waits_for_the_lock, "the second writer to wait")
            await tx1.rollback()  # a hole: id1 is never committed
            id2 = await pending
            await tx2.commit()
            assert id2 > id1
            ids = [r["id"] for r in await watcher.fetch("SELECT id FROM change_outbox")]
            assert ids == [id2]

            async def notified_once() -> bool:
                await watcher.execute("SELECT 1")
                return bool(notified)

            await _wait(notified_once, "the notification")
            assert notified == [str(id2)]  # a rolled-back append notifies nobody
            with pytest.raises(asyncpg.CheckViolationError):
                await first.execute("SELECT outbox_append('account_deleted', '{}')")
        finally:
            for c in (first, second, watcher):
                await c.close()

    asyncio.run(go())


def test_two_relays_publish_every_row_once_in_order_even_after_the_stream_is_lost(
        db_dsn: str) -> None:
    key = "onecard:test:relays:" + db_dsn.rsplit("/", 1)[1]

    async def go() -> None:
        conn = await asyncpg.connect(db_dsn)
        client = aioredis.Redis.from_url(REDIS_URL)
        relays = [OutboxRelay(db_dsn, REDIS_URL, key, KEY, _NullLog(), poll_seconds=0.05)
                  for _ in range(2)]
        tasks = [asyncio.ensure_future(r.run()) for r in relays]
        try:
            written = [await admin.append(conn, CardCancelled(n)) for n in range(1, 41)]

            async def published(through: int) -> bool:
                entries = await client.xrange(key)
                return bool(entries) and entries[-1][0] == f"{through}-0".encode()

            await _wait(lambda: published(written[-1]), "every row in the stream")
            await client.delete(key)  # Redis loses it
            written += [await admin.append(conn, CardCancelled(n)) for n in range(41, 61)]
            await _wait(lambda: published(written[-1]), "the new rows in the stream")
            entries = [parse_entry(i, f, KEY) for i, f in await client.xrange(key)]
            # A relay that was still behind when the stream went may put back a few rows
            # before 41: that is harmless, as long as the stream is one chain of the outbox
            # (each entry's prev is the one before it), with no row twice and none missing.
            ids = [e.outbox_id for e in entries]
            first = written.index(ids[0])
            assert first <= 40
            assert ids == written[first:]
            assert [e.prev for e in entries] == [0, *written][first:-1]
            assert all(decode_event(e.kind, e.payload) == CardCancelled(n)
                       for e, n in zip(entries, range(first + 1, 61), strict=True))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.delete(key)
            await client.aclose()
            await conn.close()

    asyncio.run(go())


class _NullLog:
    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None
