"""Change events and the outbox without a switch process: decoding (property tests), idempotent
apply, stream entry verification, outbox_append's commit order, and relays racing each other
on a real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import asyncpg
import hypothesis.strategies as st
import msgspec
import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings

from ledger_ext import Ledger, MerchantState
from switch._change_events import (
    EVENT_KINDS,
    EVENT_TYPES,
    AccountClassChanged,
    AccountOpened,
    AccountStatusChanged,
    CardBound,
    CardCancelled,
    ChangeEventError,
    ClassConfigured,
    CrossTenantChanged,
    FeedEntry,
    MerchantConfigured,
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


def test_the_new_kinds_decode_strictly() -> None:
    assert decode_event("account_class_changed", b'{"account_id": 5, "class_id": 3}') == (
        AccountClassChanged(5, 3))
    assert decode_event("merchant_configured", b'{"merchant_id": 4, "mode": 1,'
                        b' "fixed_amount_fen": 600, "spend_order": 2, "by": "x"}') == (
        MerchantConfigured(4, 1, 600, 2))
    for kind, payload, where in [
        ("account_class_changed", b'{"account_id": 5, "class_id": 0}', "$.class_id"),
        ("account_class_changed", b'{"account_id": 5, "class_id": 256}', "$.class_id"),
        ("account_class_changed", b'{"account_id": 5, "class_id": "2"}', "$.class_id"),
        ("account_class_changed", b'{"account_id": 0, "class_id": 2}', "$.account_id"),
        ("account_class_changed", b'{"account_id": 5}', "class_id"),
        ("merchant_configured", b'{"merchant_id": 4, "mode": 2, "fixed_amount_fen": 0,'
         b' "spend_order": 0}', "$.mode"),
        ("merchant_configured", b'{"merchant_id": 4, "mode": 1, "fixed_amount_fen": 10000001,'
         b' "spend_order": 0}', "$.fixed_amount_fen"),
        ("merchant_configured", b'{"merchant_id": 4, "mode": 0, "fixed_amount_fen": 0,'
         b' "spend_order": 3}', "$.spend_order"),
        ("merchant_configured", b'{"merchant_id": 4, "mode": true, "fixed_amount_fen": 0,'
         b' "spend_order": 0}', "$.mode"),
        # Every field is needed: a half configuration is not one.
        ("merchant_configured", b'{"merchant_id": 4, "mode": 0}', "fixed_amount_fen"),
    ]:
        with pytest.raises(ChangeEventError, match=where.replace("$", r"\$")):
            decode_event(kind, payload)


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
    # Then the merchant's price and the account's class change while the switch runs.
    MerchantConfigured(9, 1, 600, 1),
    ClassConfigured(5, 2_000, 1_000, 0, 0, 0),
    AccountClassChanged(40, 5),
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
    # Classes and merchant configurations are not in the snapshot: compared one by one.
    accounts = [ledger.account(a) for a, _, _ in ledger.account_balances()]
    merchants = [ledger.merchant(m) for m, _ in ledger.merchant_balances()]
    return (ledger.snapshot(), ledger.statistics(), cards, dict(master.terminals),
            master.accounts, master.merchants, master.cards, accounts, merchants)


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
    assert once_ledger.account(40).class_id == 5
    assert once_ledger.merchant(9) == MerchantState(9, 3, 1, 600, 1, 0)
    # The new account took a purchase at the merchant's new fixed price, with its new class
    # (overdraft 2,000: main goes below zero).
    assert once_ledger.purchase(70, 1, 4_001, 9, 0, 1_790_000_000).code == 41  # lost
    apply_event(once_ledger, once_master, AccountStatusChanged(40, 0))
    assert once_ledger.purchase(70, 2, 4_001, 9, 800, 1_790_000_000).code == 13  # old price
    approved = once_ledger.purchase(70, 3, 4_001, 9, 0, 1_790_000_000)
    assert (approved.code, approved.amount_fen, approved.main_fen) == (0, 600, -600)
    # Back to class 4 (overdraft 1,000): 600 more would pass its floor.
    apply_event(once_ledger, once_master, AccountClassChanged(40, 4))
    assert once_ledger.purchase(70, 4, 4_001, 9, 0, 1_790_000_000).code == 51


def test_reconfiguring_applies_from_the_next_purchase_and_is_idempotent() -> None:
    ledger, master = _cache()
    ledger.configure_class(2, 0, 300, 0, 0, 0)                  # txn limit 300
    assert ledger.purchase(5, 1, 1_000, 1, 400, 1_790_000_000).code == 0
    for _ in range(2):
        assert apply_event(ledger, master, AccountClassChanged(1, 2)) == 0
        assert ledger.account(1).class_id == 2
        assert ledger.purchase(5, 2, 1_000, 1, 50, 1_790_000_000).code == 0  # 2nd: a repeat
    assert ledger.purchase(5, 3, 1_000, 1, 301, 1_790_000_000).code == 61
    for _ in range(2):
        assert apply_event(ledger, master, MerchantConfigured(1, 1, 20, 2)) == 0
        assert ledger.merchant(1) == MerchantState(1, 1, 1, 20, 2, -50)
    fixed = ledger.purchase(5, 4, 1_000, 1, 0, 1_790_000_000)
    assert (fixed.code, fixed.amount_fen) == (0, 20)
    # An old AccountOpened of the account (its class since changed) changes nothing.
    apply_event(ledger, master, AccountOpened(1, 1, 1))
    assert ledger.account(1).class_id == 2 and master.accounts == 1



def test_a_change_the_cache_cannot_take_is_refused_with_its_reason() -> None:
    ledger, master = _cache()
    for event, reason in [
        (CardBound(1_000, 2), "bound to account 1"),  # account 2 does not exist either
        (CardCancelled(999), "never bound"),
        (AccountOpened(2, 1, 1, opening_main_fen=100), "money comes in through the switch"),
        (AccountOpened(1, 2, 1), "already open with tenant 1"),
        (AccountClassChanged(33, 2), "account 33 not opened"),
        (AccountClassChanged(65, 2), "out of 1..64"),
        (MerchantConfigured(3, 0, 0, 0), "merchant 3 not opened"),
        (MerchantConfigured(1, 1, 0, 0), "fixed_amount_fen 0 out of range"),
        (MerchantConfigured(1, 0, 5, 0), "must be 0 for a FREE merchant"),
        (MerchantConfigured(17, 0, 0, 0), "out of 1..16"),
        (AccountOpened(65, 1, 1), "out of 1..64"),
        (MerchantOpened(2, 1, opening_balance_fen=5), "starts at 0"),
        (AccountStatusChanged(33, 2), "33"),
    ]:
        with pytest.raises(ChangeEventError, match=reason):
            apply_event(ledger, master, event)
    assert _state(ledger, master) == _state(*_cache())


def test_a_terminal_disabled_rekeyed_moved_or_of_another_kind_ends_its_session() -> None:
    """Its session's permitted messages come from its kind at sign-on (docs/protocol.md 4.1),
    so a change of kind ends the session like a change of key."""
    ledger, master = _cache()
    assert apply_event(ledger, master, TerminalUpserted(5, 1, 1, 1, True)) == 0  # new
    assert apply_event(ledger, master, TerminalUpserted(5, 1, 1, 1, True)) == 0  # same
    assert apply_event(ledger, master, TerminalUpserted(5, 1, 2, 1, True)) == 5  # another kind
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


def test_the_outbox_takes_exactly_the_kinds_the_switch_decodes(db_dsn: str) -> None:
    """The CHECK on change_outbox.kind (0002, widened by 0007) and EVENT_TYPES agree: a writer
    can append every kind a switch applies, and no kind a switch would refuse as unknown."""

    async def go() -> None:
        conn = await asyncpg.connect(db_dsn)
        try:
            definition = await conn.fetchval(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conrelid = 'change_outbox'::regclass"
                " AND conname = 'change_outbox_kind_check'")
            assert set(re.findall(r"'([a-z_]+)'::text", definition)) == set(EVENT_KINDS)
            async with conn.transaction():
                for event in (AccountClassChanged(1, 2), MerchantConfigured(1, 1, 600, 0)):
                    assert await admin.append(conn, event) > 0
                raise _Rollback
        except _Rollback:
            pass
        finally:
            await conn.close()

    asyncio.run(go())


class _Rollback(Exception):
    pass


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
