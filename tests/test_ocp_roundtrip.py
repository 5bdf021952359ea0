"""Every OCP message round-trips through a ConnectionPair, for any valid field values.

The strategies are derived from the msgspec constraints themselves (msgspec.inspect), so a new
field or limit is covered without touching this file.
"""

from __future__ import annotations

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import ocp
from tests.ocp_pair import ConnectionPair, signed_on_pair


def _field_strategy(t: mi.Type) -> st.SearchStrategy:
    if isinstance(t, mi.IntType):
        lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else -(2**63))
        hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else 2**63 - 1)
        return st.integers(lo, hi)
    if isinstance(t, mi.BytesType):
        return st.binary(min_size=t.min_length or 0, max_size=t.max_length or 64)
    if isinstance(t, mi.StrType):
        if t.pattern == "^[0-9]*$":  # a PIN
            return st.text(alphabet="0123456789", max_size=t.max_length or 64)
        assert t.pattern is None, t
        return st.text(min_size=t.min_length or 0, max_size=t.max_length or 64)
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.ListType):  # offline lists: short ones (the limits are frame tests')
        return st.lists(_field_strategy(t.item_type), min_size=t.min_length or 0,
                        max_size=min(t.max_length or 3, 3))
    if isinstance(t, mi.StructType):
        return st.builds(t.cls, *[_field_strategy(f.type) for f in t.fields])
    raise AssertionError(f"no strategy for {t}")


def message_strategy(cls: type[ocp.Message]) -> st.SearchStrategy[ocp.Message]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return st.builds(cls, *[_field_strategy(f.type) for f in info.fields]).filter(_valid)


def _valid(msg: ocp.Message) -> bool:
    """The one rule across fields: a Reversal names an earlier txn_seq (section 9.2)."""
    return not isinstance(msg, ocp.Reversal) or msg.original_txn_seq < msg.txn_seq


def _by_direction(direction: ocp.Direction) -> list[type[ocp.Message]]:
    return [c for c in ocp.MESSAGE_TYPES if c.direction is direction]


T2S_SESSION = [ocp.Purchase, ocp.Reversal, ocp.BalanceInquiry, ocp.QrPurchase, ocp.Heartbeat,
               ocp.Credit, ocp.Debit, ocp.Transfer, ocp.AccessRequest, ocp.DoorEvent,
               ocp.AccessListRequest, ocp.OfflineUpload, ocp.Topup, ocp.DoorCommandAck]
S2T_SESSION = [ocp.PurchaseResult, ocp.ReversalResult, ocp.BalanceResult, ocp.HeartbeatAck,
               ocp.CreditResult, ocp.DebitResult, ocp.TransferResult, ocp.AccessResult,
               ocp.DoorEventAck, ocp.AccessListSnapshot, ocp.AccessListDelta,
               ocp.OfflineUploadResult, ocp.TopupResult, ocp.DoorCommand]
NON_CLOSING_CODES = [c for c, i in ocp.CODE_INFO.items() if not i.closes_connection and c >= 80]

any_request = st.one_of(*[message_strategy(c) for c in T2S_SESSION])
any_answer = st.one_of(
    *[message_strategy(c) for c in S2T_SESSION],
    st.builds(
        ocp.Error,
        st.sampled_from(NON_CLOSING_CODES),
        st.integers(0, 2**32 - 1),
        st.text(max_size=200),
    ),
)


def test_session_sets_cover_every_session_message() -> None:
    sign_on = {ocp.SignOn, ocp.SignOnChallenge, ocp.SignOnConfirm, ocp.SignOnResult, ocp.SignOff}
    assert set(_by_direction(ocp.Direction.T2S)) == set(T2S_SESSION) | {
        ocp.SignOn, ocp.SignOnConfirm, ocp.SignOff
    }
    assert set(_by_direction(ocp.Direction.S2T)) == set(S2T_SESSION) | {
        ocp.SignOnChallenge, ocp.SignOnResult
    }
    assert set(ocp.MESSAGE_TYPES) == set(T2S_SESSION) | set(S2T_SESSION) | sign_on | {ocp.Error}


@settings(max_examples=200)
@given(st.lists(any_request, min_size=1, max_size=20), st.booleans())
def test_requests_round_trip(reqs: list[ocp.Message], byte_at_a_time: bool) -> None:
    pair = signed_on_pair()
    assert pair.t2s(*reqs, byte_at_a_time=byte_at_a_time) == reqs


@settings(max_examples=200)
@given(st.lists(any_answer, min_size=1, max_size=20))
def test_answers_round_trip(answers: list[ocp.Message]) -> None:
    pair = signed_on_pair()
    assert pair.s2t(*answers) == answers


@settings(max_examples=100)
@given(
    message_strategy(ocp.SignOnConfirm),
    st.builds(
        ocp.SignOnResult,
        st.just(0),
        st.integers(0, 2**63 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(1, 3600),
    ),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=16, max_size=16),
    st.integers(1, 2**31 - 1),
)
def test_sign_on_round_trip(
    confirm: ocp.SignOnConfirm,
    result: ocp.SignOnResult,
    key: bytes,
    t_nonce: bytes,
    s_nonce: bytes,
    terminal_id: int,
) -> None:
    pair = ConnectionPair(
        terminal_id=terminal_id, terminal_key=key, terminal_nonce=t_nonce, switch_nonce=s_nonce
    )
    pair.sign_on(confirm=confirm, result=result)


@given(st.sampled_from(ocp.MESSAGE_TYPES).flatmap(message_strategy), st.integers(0, 2**32 - 1))
def test_encode_decode_frame(msg: ocp.Message, sequence: int) -> None:
    key = bytes(range(32))
    frame = ocp.encode_frame(msg, sequence=sequence, mac_key=key)
    assert ocp.decode_frame(frame, mac_key=key) == (sequence, msg)
    plain = ocp.encode_frame(msg, sequence=sequence)
    assert ocp.decode_frame(plain) == (sequence, msg)
    assert len(plain) + 16 == len(frame)


def test_trailing_unknown_fields_are_ignored() -> None:
    """Evolution rule: a receiver ignores trailing fields it does not know."""
    body = msgspec.msgpack.encode([16, 5, 77, 100, 0, "future field", [1, 2]])
    frame = len(body + b"123456").to_bytes(4, "big") + b"\x01\x00" + bytes(4) + body
    assert ocp.decode_frame(frame) == (0, ocp.Purchase(5, 77, 100, 0))


def _required_fields(cls: type[ocp.Message]) -> int:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return sum(f.required for f in info.fields)


@given(st.sampled_from([c for c in ocp.MESSAGE_TYPES if _required_fields(c)]).flatmap(
    lambda cls: st.tuples(message_strategy(cls), st.integers(0, _required_fields(cls) - 1))))
def test_a_missing_field_is_named_for_every_message(case: tuple[ocp.Message, int]) -> None:
    """A body cut short before a required field names that field (docs/protocol.md 4.1), for
    every message type: `$.<field>`, never just `$`."""
    msg, kept = case
    body = msgspec.msgpack.encode([msg.__struct_config__.tag,
                                   *(getattr(msg, f) for f in msg.__struct_fields__[:kept])])
    frame = len(body + b"123456").to_bytes(4, "big") + b"\x01\x00" + bytes(4) + body
    with pytest.raises(ocp.InvalidField) as info:
        ocp.decode_frame(frame)
    assert info.value.path == f"$.{msg.__struct_fields__[kept]}"


def test_defaults_fill_missing_trailing_fields() -> None:
    """An older peer's shorter message decodes with the appended fields' defaults."""
    body = msgspec.msgpack.encode([1, 42, bytes(16)])
    frame = len(body + b"123456").to_bytes(4, "big") + b"\x01\x00" + bytes(4) + body
    assert ocp.decode_frame(frame) == (0, ocp.SignOn(42, bytes(16), 1))
