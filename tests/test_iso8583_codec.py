"""protocols/iso8583 without sockets: round trips, and every kind of bad input raising its own
Iso8583RemoteError (and nothing else), with the connection going on where the spec says."""

from __future__ import annotations

import contextlib
import datetime as dt

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import iso8583

NOW = dt.datetime(2026, 12, 2, 3, 4, 5, tzinfo=dt.UTC)
KEYS = iso8583.MacKeys()
KEYS.install(7, bytes(range(32)))
REQ = iso8583.TopupRequest(
    terminal_id=5001, stan=42, rrn="000000000042", amount_fen=10_000, card_token="TOK-1",
    account_ref="A-42", local_datetime=dt.datetime(2026, 12, 2, 11, 4, 5), tenant_id=3)
GOOD = iso8583.encode_message(REQ, now=NOW, keys=KEYS)


def _refused(data: bytes) -> iso8583.Iso8583RemoteError:
    with pytest.raises(iso8583.Iso8583RemoteError) as info:
        iso8583.decode_message(data, KEYS)
    return info.value


def _resigned(data: bytes | bytearray) -> bytes:
    """`data` with a MAC that verifies again, so the check under test is not the MAC's."""
    data = bytes(data)
    return data[:-8] + iso8583.cmac(bytes(range(32)), data[:-8])


def test_every_message_round_trips() -> None:
    advice = iso8583.ReversalAdvice.of(REQ)
    messages: list[iso8583.Message] = [
        REQ, advice, msgspec.structs.replace(advice, repeat=True),
        iso8583.TopupResponse(terminal_id=1, stan=1, rrn="ABCDEF123456", amount_fen=1,
                              field39="51", reason="no money, sorry"),
        iso8583.ReversalResponse(terminal_id=1, stan=1, rrn="ABCDEF123456", field39="25"),
        iso8583.NetworkRequest(code=iso8583.NetworkCode.ECHO, stan=999_999),
        iso8583.NetworkResponse(code=iso8583.NetworkCode.KEY_EXCHANGE, stan=3, field39="00",
                                key_generation=7),
    ]
    for msg in messages:
        assert iso8583.decode_message(iso8583.encode_message(msg, now=NOW, keys=KEYS),
                                      KEYS) == msg


def test_wrong_bitmap_is_malformed() -> None:
    data = bytearray(GOOD)
    data[4] |= 0x40  # field 2: not in the spec
    assert isinstance(_refused(_resigned(data)), iso8583.MalformedMessage)
    data = bytearray(GOOD)
    data[4 + 8] |= 0x80  # field 65: a tertiary bitmap
    assert _refused(_resigned(data)).reason == "malformed"
    data = bytearray(GOOD)
    data[4] &= ~0x20 & 0xFF  # field 3 cleared: missing, and the rest misaligned
    assert _refused(_resigned(data)).reason == "malformed"


def test_short_and_overlong_fields_are_malformed() -> None:
    assert _refused(GOOD[:-9]).reason == "malformed"  # ends inside a field
    assert _refused(GOOD + b"0").reason in ("malformed", "bad_mac")
    # An LLVAR length over its maximum (field 102 ..28: "99").
    i = GOOD.index(b"05TOK-1")
    data = GOOD[:i] + b"99" + GOOD[i + 2 :]
    assert _refused(_resigned(data)).reason == "malformed"
    # A digit field with a letter.
    i = GOOD.index(b"000000010000")
    data = GOOD[:i] + b"00000001000A" + GOOD[i + 12 :]
    assert _refused(_resigned(data)).reason == "malformed"


def test_unknown_mti_and_wrong_mac() -> None:
    err = _refused(b"0220" + GOOD[4:])
    assert isinstance(err, iso8583.UnknownMti) and err.field39 == "12"
    assert isinstance(_refused(GOOD[:-1] + bytes([GOOD[-1] ^ 1])), iso8583.BadMac)
    other = iso8583.MacKeys()
    other.install(8, bytes(range(32)))
    with pytest.raises(iso8583.BadMac):  # a key generation we do not hold
        iso8583.decode_message(iso8583.encode_message(REQ, now=NOW, keys=other), KEYS)
    with pytest.raises(iso8583.BadMac):
        iso8583.decode_message(GOOD, None)


def test_frame_over_the_limit_closes_and_others_do_not() -> None:
    conn = iso8583.Connection(KEYS)
    bad = iso8583.frame(b"0999" + GOOD[4:])
    conn.receive_data(bad + iso8583.frame(GOOD) + b"\x03\xff")
    with pytest.raises(iso8583.UnknownMti) as info:
        conn.next_event()
    assert not info.value.closes_connection
    assert conn.next_event() == REQ
    with pytest.raises(iso8583.FrameTooLarge) as too_large:
        conn.next_event()
    assert too_large.value.closes_connection and conn.broken
    assert conn.next_event() is iso8583.CLOSED


def test_frame_split_anywhere_and_eof() -> None:
    data = iso8583.frame(GOOD)
    conn = iso8583.Connection(KEYS)
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        ev = conn.next_event()
        assert (ev == REQ) if i == len(data) - 1 else (ev is iso8583.NEED_DATA)
    conn.receive_data(data[:5])
    conn.receive_data(b"")
    with pytest.raises(iso8583.MalformedMessage):
        conn.next_event()


def test_local_misuse_is_local() -> None:
    with pytest.raises(iso8583.Iso8583LocalError):
        iso8583.encode_message(REQ, now=NOW, keys=iso8583.MacKeys())  # no key yet
    with pytest.raises(iso8583.Iso8583LocalError):
        iso8583.wrap_key(bytes(16), bytes(32))
    assert "bytes" not in repr(KEYS) or "\\x" not in repr(KEYS)  # never the keys


def _decode_or_refuse(data: bytes) -> None:
    with contextlib.suppress(iso8583.Iso8583RemoteError):
        iso8583.decode_message(data, KEYS)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(1, 255)),
                      max_size=4), cut=st.integers(0, len(GOOD)), tail=st.binary(max_size=16))
def test_damaged_messages_only_raise_remote_errors(
        flips: list[tuple[int, int]], cut: int, tail: bytes) -> None:
    data = bytearray(GOOD[:cut])
    for i, x in flips:
        if i < len(data):
            data[i] ^= x
    _decode_or_refuse(bytes(data) + tail)
    _decode_or_refuse(_resigned(bytes(data) + tail) if len(data) + len(tail) >= 8 else b"")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_streams_only_raise_remote_errors(data: bytes) -> None:
    conn = iso8583.Connection(KEYS)
    if data:
        conn.receive_data(data)
    conn.receive_data(b"")
    for _ in range(len(data) + 2):
        try:
            ev = conn.next_event()
        except iso8583.Iso8583RemoteError:
            continue
        if ev is iso8583.CLOSED:
            return
        assert not isinstance(ev, iso8583.Signal)


def test_an_empty_secondary_bitmap_is_malformed() -> None:
    sign_on = iso8583.encode_message(
        iso8583.NetworkRequest(code=iso8583.NetworkCode.SIGN_ON, stan=1), now=NOW)
    # Same fields, but field 70 (the only one past 64) dropped: a secondary bitmap of zeros.
    empty = bytearray(sign_on[:-3])
    empty[12:20] = bytes(8)
    err = _refused(bytes(empty))
    assert err.reason == "malformed" and "secondary" in err.message
