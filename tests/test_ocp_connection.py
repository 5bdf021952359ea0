"""The OCP Connection: sign-on, sessions, pipelining, and every protocol error it raises."""

from __future__ import annotations

import msgspec
import msgspec.inspect
import pytest

from protocols import limits, ocp
from tests.ocp_pair import (
    SWITCH_NONCE,
    TERMINAL_ID,
    TERMINAL_KEY,
    TERMINAL_NONCE,
    ConnectionPair,
    drain,
    signed_on_pair,
)

RC = ocp.ResponseCode
S = ocp.State


def purchase(txn_seq: int = 1, amount_fen: int = 1250) -> ocp.Purchase:
    return ocp.Purchase(txn_seq=txn_seq, card_no=4_000_000_001, amount_fen=amount_fen)


def result_for(req: ocp.Purchase) -> ocp.PurchaseResult:
    return ocp.PurchaseResult(req.txn_seq, RC.APPROVED, req.amount_fen, 8750, 8000, 750)


# --- sign-on ---------------------------------------------------------------------------------


def test_sign_on_states_and_sequences() -> None:
    pair = ConnectionPair()
    t, s = pair.terminal, pair.switch
    assert t.state is S.IDLE and s.state is S.IDLE
    data = t.start_sign_on(TERMINAL_ID, TERMINAL_KEY, TERMINAL_NONCE)
    assert t.state is S.AWAIT_CHALLENGE
    assert data[5] == 0, "SignOn is plain"
    assert drain(s, data) == [ocp.SignOn(TERMINAL_ID, TERMINAL_NONCE)]
    assert s.state is S.SIGN_ON_RECEIVED and not s.signed_on
    challenge = s.accept_sign_on(TERMINAL_KEY, SWITCH_NONCE)
    assert challenge[5] == ocp.FLAG_MAC and s.state is S.AWAIT_CONFIRM and s.signed_on
    assert drain(t, challenge) == [ocp.SignOnChallenge(SWITCH_NONCE)]
    assert t.state is S.CHALLENGED and t.signed_on
    confirm = ocp.SignOnConfirm(41, ocp.TerminalKind.POS, "fw")
    assert drain(s, t.send(confirm)) == [confirm]
    assert t.state is S.AWAIT_RESULT and s.state is S.CONFIRMED
    res = ocp.SignOnResult(RC.APPROVED, 5, 41, 30)
    assert drain(t, s.send(res)) == [res]
    assert t.state is S.READY and s.state is S.READY
    assert (t.send_sequence, t.receive_sequence) == (2, 2)
    assert (s.send_sequence, s.receive_sequence) == (2, 2)


def test_session_round_trip_and_statistics() -> None:
    pair = signed_on_pair()
    reqs = [
        purchase(1),
        ocp.Reversal(2, 1, 4_000_000_001, 0),
        ocp.BalanceInquiry(3, 4_000_000_001),
        ocp.Heartbeat(123),
    ]
    assert pair.t2s(*reqs) == reqs
    answers = [
        result_for(reqs[0]),
        ocp.ReversalResult(2, RC.APPROVED, 1250, 10000),
        ocp.BalanceResult(3, RC.APPROVED, 10000, 9000, 1000),
        ocp.HeartbeatAck(456),
        ocp.Error(RC.BUSY, 9, "later"),
    ]
    assert pair.s2t(*answers) == answers
    assert pair.terminal.state is S.READY and pair.switch.state is S.READY
    st = pair.switch.statistics()
    assert isinstance(st, ocp.Statistics)
    assert (st.frames_in, st.frames_out, st.errors) == (6, 7, 0)
    tt = pair.terminal.statistics()
    assert tt.bytes_out == st.bytes_in and tt.bytes_in == st.bytes_out
    with pytest.raises(AttributeError):
        st.frames_in = 0  # type: ignore[misc]


def test_pipelined_requests_right_after_confirm() -> None:
    pair = ConnectionPair()
    pair.to_switch(pair.terminal.start_sign_on(TERMINAL_ID, TERMINAL_KEY, TERMINAL_NONCE))
    pair.to_terminal(pair.switch.accept_sign_on(TERMINAL_KEY, SWITCH_NONCE))
    confirm = ocp.SignOnConfirm(0)
    reqs = [purchase(i) for i in range(1, 51)]
    events = pair.t2s(confirm, *reqs)
    assert events == [confirm, *reqs]
    assert pair.switch.state is S.CONFIRMED
    with pytest.raises(ocp.OcpLocalError):
        pair.switch.send(result_for(reqs[0]))  # SignOnResult comes first
    res = ocp.SignOnResult(RC.APPROVED, 0, 0, 30)
    assert pair.s2t(res, *[result_for(r) for r in reqs]) == [res, *map(result_for, reqs)]


@pytest.mark.parametrize("byte_at_a_time", [False, True])
def test_many_frames_one_chunk_or_byte_at_a_time(byte_at_a_time: bool) -> None:
    pair = signed_on_pair()
    reqs = [purchase(i, i * 7) for i in range(1, 201)]
    assert pair.t2s(*reqs, byte_at_a_time=byte_at_a_time) == reqs


def test_declined_sign_on_closes_both() -> None:
    pair = ConnectionPair()
    pair.sign_on(result=ocp.SignOnResult(RC.TERMINAL_DISABLED, 0, 0, 30))
    assert pair.terminal.state is S.CLOSED and pair.switch.state is S.CLOSED
    assert pair.terminal.next_event() is ocp.CLOSED
    with pytest.raises(ocp.OcpLocalError):
        pair.terminal.send(purchase())


def test_unknown_terminal_plain_error_and_close() -> None:
    pair = ConnectionPair()
    pair.to_switch(pair.terminal.start_sign_on(TERMINAL_ID, TERMINAL_KEY, TERMINAL_NONCE))
    data = pair.switch.send(ocp.Error(RC.UNKNOWN_TERMINAL, 0, "who?"))
    assert data[5] == 0 and pair.switch.state is S.CLOSED
    assert pair.to_terminal(data) == [ocp.Error(RC.UNKNOWN_TERMINAL, 0, "who?"), ocp.CLOSED]
    assert pair.terminal.state is S.CLOSED


def test_switch_may_refuse_before_anything_arrives() -> None:
    conn = ocp.Connection(ocp.Role.SWITCH)
    data = conn.send(ocp.Error(RC.BUSY))
    assert conn.state is S.CLOSED
    t = ocp.Connection(ocp.Role.TERMINAL)
    t.start_sign_on(TERMINAL_ID, TERMINAL_KEY, TERMINAL_NONCE)
    assert drain(t, data) == [ocp.Error(RC.BUSY), ocp.CLOSED]
    assert t.state is S.CLOSED


def test_terminal_with_wrong_key_rejects_the_challenge() -> None:
    pair = ConnectionPair(switch_key=bytes(32))
    pair.to_switch(pair.terminal.start_sign_on(TERMINAL_ID, TERMINAL_KEY, TERMINAL_NONCE))
    with pytest.raises(ocp.BadMac):
        pair.to_terminal(pair.switch.accept_sign_on(bytes(32), SWITCH_NONCE))
    assert pair.terminal.state is S.ERROR and not pair.terminal.signed_on
    err = pair.terminal.send(ocp.Error(RC.BAD_MAC))
    assert err[5] == 0, "no verified keys: the Error goes plain"
    assert pair.terminal.state is S.CLOSED
    # The switch accepts that plain Error while waiting for the confirm, and closes.
    assert drain(pair.switch, err) == [ocp.Error(RC.BAD_MAC), ocp.CLOSED]
    assert pair.switch.state is S.CLOSED


def test_switch_rejects_a_confirm_under_the_wrong_key() -> None:
    pair = ConnectionPair()
    pair.to_switch(pair.terminal.start_sign_on(TERMINAL_ID, TERMINAL_KEY, TERMINAL_NONCE))
    pair.to_terminal(pair.switch.accept_sign_on(TERMINAL_KEY, SWITCH_NONCE))
    forged = ocp.encode_frame(ocp.SignOnConfirm(0), sequence=1, mac_key=bytes(32))
    with pytest.raises(ocp.BadMac) as info:
        drain(pair.switch, forged)
    assert info.value.response_code == RC.BAD_MAC and info.value.closes_connection
    err = pair.switch.send(ocp.Error(RC.BAD_MAC))
    assert err[5] == ocp.FLAG_MAC, "session keys exist: the Error is MAC'd"
    assert drain(pair.terminal, err) == [ocp.Error(RC.BAD_MAC), ocp.CLOSED]
    assert pair.terminal.state is S.CLOSED


def test_sign_off_then_answers_then_eof() -> None:
    pair = signed_on_pair()
    assert pair.t2s(purchase(1), ocp.SignOff()) == [purchase(1), ocp.SignOff()]
    assert pair.terminal.state is S.SIGNED_OFF and pair.switch.state is S.SIGNED_OFF
    with pytest.raises(ocp.OcpLocalError):
        pair.terminal.send(purchase(2))
    assert pair.s2t(result_for(purchase(1))) == [result_for(purchase(1))]
    assert drain(pair.terminal, b"") == [ocp.CLOSED]
    assert pair.terminal.state is S.CLOSED


def test_request_after_sign_off_is_unexpected() -> None:
    pair = signed_on_pair()
    pair.t2s(ocp.SignOff())
    frame = ocp.encode_frame(purchase(5), sequence=3, mac_key=_k_t2s())
    with pytest.raises(ocp.UnexpectedMessage):
        pair.to_switch(frame)


def test_eof_between_frames_closes_and_inside_a_frame_is_malformed() -> None:
    pair = signed_on_pair()
    assert drain(pair.switch, b"") == [ocp.CLOSED]
    assert pair.switch.state is S.CLOSED
    pair = signed_on_pair()
    frame = pair.terminal.send(purchase())
    pair.switch.receive_data(frame[:-1])
    assert pair.switch.next_event() is ocp.NEED_DATA
    pair.switch.receive_data(b"")
    with pytest.raises(ocp.MalformedFrame):
        pair.switch.next_event()
    with pytest.raises(ocp.OcpLocalError):
        pair.switch.receive_data(b"x")


# --- protocol errors -------------------------------------------------------------------------


def _k_t2s() -> bytes:
    return ocp.derive_session_keys(TERMINAL_KEY, TERMINAL_NONCE, SWITCH_NONCE)[0]


def _after_error_one_error_then_closed(conn: ocp.Connection, code: int) -> None:
    assert conn.state is S.ERROR
    with pytest.raises(ocp.OcpLocalError):
        conn.next_event()
    with pytest.raises(ocp.OcpLocalError):
        conn.send(purchase())
    conn.send(ocp.Error(code))
    assert conn.state is S.CLOSED
    with pytest.raises(ocp.OcpLocalError):
        conn.send(ocp.Error(code))


def test_bad_mac() -> None:
    pair = signed_on_pair()
    frame = bytearray(pair.terminal.send(purchase()))
    frame[-1] ^= 1
    with pytest.raises(ocp.BadMac):
        pair.to_switch(bytes(frame))
    _after_error_one_error_then_closed(pair.switch, RC.BAD_MAC)
    assert pair.switch.statistics().errors == 1


def test_plain_frame_in_session_is_bad_mac() -> None:
    pair = signed_on_pair()
    with pytest.raises(ocp.BadMac):
        pair.to_switch(ocp.encode_frame(purchase(), sequence=2))


def test_reflected_frame_is_bad_mac() -> None:
    """A switch frame sent back to the switch fails: each direction has its own key."""
    pair = signed_on_pair()
    frame = pair.switch.send(ocp.HeartbeatAck(1))
    with pytest.raises(ocp.BadMac):
        pair.to_switch(frame)


@pytest.mark.parametrize("kind", ["replay", "skip", "repeat"])
def test_sequence_errors(kind: str) -> None:
    pair = signed_on_pair()
    first = pair.terminal.send(purchase(1))
    assert pair.to_switch(first) == [purchase(1)]
    if kind == "replay":
        frame = first
    elif kind == "repeat":
        frame = ocp.encode_frame(purchase(2), sequence=2, mac_key=_k_t2s())
    else:
        frame = ocp.encode_frame(purchase(2), sequence=4, mac_key=_k_t2s())
    with pytest.raises(ocp.SequenceError) as info:
        pair.to_switch(frame)
    assert info.value.response_code == RC.SEQUENCE_ERROR
    _after_error_one_error_then_closed(pair.switch, RC.SEQUENCE_ERROR)


def test_replay_into_a_new_session_is_bad_mac() -> None:
    pair = signed_on_pair()
    old = pair.terminal.send(purchase(1))
    other = ConnectionPair(switch_nonce=bytes(16))
    other.sign_on()
    with pytest.raises(ocp.BadMac):
        other.to_switch(old)


@pytest.mark.parametrize("mac", [False, True])
def test_purchase_before_sign_on(mac: bool) -> None:
    conn = ocp.Connection(ocp.Role.SWITCH)
    frame = ocp.encode_frame(purchase(), sequence=0, mac_key=bytes(32) if mac else None)
    with pytest.raises(ocp.NotSignedOn) as info:
        drain(conn, frame)
    assert info.value.response_code == RC.NOT_SIGNED_ON
    _after_error_one_error_then_closed(conn, RC.NOT_SIGNED_ON)


def test_purchase_while_awaiting_confirm_is_not_signed_on() -> None:
    pair = ConnectionPair()
    pair.to_switch(pair.terminal.start_sign_on(TERMINAL_ID, TERMINAL_KEY, TERMINAL_NONCE))
    pair.to_terminal(pair.switch.accept_sign_on(TERMINAL_KEY, SWITCH_NONCE))
    with pytest.raises(ocp.NotSignedOn):
        pair.to_switch(ocp.encode_frame(purchase(), sequence=1, mac_key=_k_t2s()))


def _awaiting_confirm() -> ConnectionPair:
    pair = ConnectionPair()
    pair.to_switch(pair.terminal.start_sign_on(TERMINAL_ID, TERMINAL_KEY, TERMINAL_NONCE))
    pair.to_terminal(pair.switch.accept_sign_on(TERMINAL_KEY, SWITCH_NONCE))
    return pair


@pytest.mark.parametrize("body", [
    ocp.encode_frame(ocp.SignOnConfirm(0), sequence=1)[10:],
    ocp.encode_frame(purchase(), sequence=1)[10:],
    ocp.encode_frame(ocp.Heartbeat(), sequence=1)[10:],
    b"\xc1",
], ids=["sign-on-confirm", "purchase", "heartbeat", "garbage"])
def test_a_plain_frame_where_the_confirm_is_due_is_bad_mac(body: bytes) -> None:
    """The switch holds k_t2s once it sent the challenge: a plain frame is BAD_MAC (86),
    whatever it carries, before any other check (docs/protocol.md section 3); only a plain
    Error is accepted there."""
    pair = _awaiting_confirm()
    with pytest.raises(ocp.BadMac):
        pair.to_switch(_raw_frame(body, sequence=1))
    _after_error_one_error_then_closed(pair.switch, RC.BAD_MAC)
    pair = _awaiting_confirm()
    error = ocp.Error(RC.BAD_MAC, 0, "challenge does not verify")
    assert pair.to_switch(ocp.encode_frame(error, sequence=1)) == [error, ocp.CLOSED]


def test_frame_while_sign_on_pending_is_unexpected() -> None:
    pair = ConnectionPair()
    data = pair.terminal.start_sign_on(TERMINAL_ID, TERMINAL_KEY, TERMINAL_NONCE)
    extra = ocp.encode_frame(ocp.SignOn(TERMINAL_ID, TERMINAL_NONCE), sequence=1)
    with pytest.raises(ocp.UnexpectedMessage):
        drain(pair.switch, data + extra)


def test_oversized_length_prefix_refused_before_body() -> None:
    conn = ocp.Connection(ocp.Role.SWITCH)
    conn.receive_data((limits.FRAME_LENGTH_MAX + 1).to_bytes(4, "big"))
    with pytest.raises(ocp.FrameTooLarge) as info:
        conn.next_event()
    assert info.value.response_code == RC.FRAME_TOO_LARGE
    assert conn.state is S.ERROR


def test_largest_length_prefix_waits_for_the_body() -> None:
    conn = ocp.Connection(ocp.Role.SWITCH)
    conn.receive_data(limits.FRAME_LENGTH_MAX.to_bytes(4, "big") + b"\x01\x00")
    assert conn.next_event() is ocp.NEED_DATA


@pytest.mark.parametrize("length", [0, 1, 5])
def test_short_length_prefix_is_malformed(length: int) -> None:
    conn = ocp.Connection(ocp.Role.SWITCH)
    with pytest.raises(ocp.MalformedFrame):
        drain(conn, length.to_bytes(4, "big") + bytes(length))


def test_version_and_flags() -> None:
    good = ocp.encode_frame(ocp.SignOn(TERMINAL_ID, TERMINAL_NONCE), sequence=0)
    bad_version = good[:4] + b"\x02" + good[5:]
    with pytest.raises(ocp.UnsupportedVersion):
        drain(ocp.Connection(ocp.Role.SWITCH), bad_version)
    bad_flags = good[:5] + b"\x02" + good[6:]
    with pytest.raises(ocp.MalformedFrame):
        drain(ocp.Connection(ocp.Role.SWITCH), bad_flags)


def test_unknown_tag_in_session_keeps_the_connection() -> None:
    pair = signed_on_pair()
    body = bytes([0x93, 0x28, 0xCD, 0x01, 0x2C, 0x05])  # [40, 300, 5]: tag 40 (door access)
    frame = _raw_frame(body, sequence=2, mac_key=_k_t2s())
    with pytest.raises(ocp.UnknownMessage) as info:
        pair.to_switch(frame)
    exc = info.value
    assert (exc.tag, exc.txn_seq, exc.closes_connection) == (40, 300, False)
    assert exc.response_code == RC.UNKNOWN_MESSAGE
    assert pair.switch.state is S.READY
    pair.switch.send(ocp.Error(RC.UNKNOWN_MESSAGE, exc.txn_seq))
    next_frame = ocp.encode_frame(purchase(1), sequence=3, mac_key=_k_t2s())
    assert pair.to_switch(next_frame) == [purchase(1)]


def test_unknown_tag_before_sign_on_closes() -> None:
    with pytest.raises(ocp.UnexpectedMessage):
        drain(ocp.Connection(ocp.Role.SWITCH), _raw_frame(b"\x92\x28\x01", sequence=0))


@pytest.mark.parametrize(
    ("msg", "path", "txn_seq"),
    [
        (ocp.Purchase(7, 1, -1), "$.amount_fen", 7),
        (ocp.Purchase(8, 1, limits.AMOUNT_FEN_MAX + 1), "$.amount_fen", 8),
        (ocp.Purchase(9, 1, 10**18), "$.amount_fen", 9),
        (ocp.Purchase(0, 1, 5), "$.txn_seq", 0),
        (ocp.Purchase(10, 0, 5), "$.card_no", 10),
        (ocp.Reversal(11, 0, 1, 5), "$.original_txn_seq", 11),
        (ocp.Reversal(13, 13, 1, 0), "$.original_txn_seq", 13),    # itself (section 9.2)
        (ocp.Reversal(14, 15, 1, 0), "$.original_txn_seq", 14),    # a later txn_seq
        (ocp.BalanceInquiry(12, -5), "$.card_no", 12),
        (ocp.Heartbeat(-1), "$.terminal_time_ms", 0),
        (ocp.Error(RC.INVALID_FIELD, -1), "$.txn_seq", 0),
    ],
)
def test_invalid_field_refuses_only_that_request(msg: ocp.Message, path: str, txn_seq: int) -> None:
    pair = signed_on_pair()
    with pytest.raises(ocp.InvalidField) as info:
        pair.t2s(msg)
    exc = info.value
    assert (exc.path, exc.txn_seq, exc.closes_connection) == (path, txn_seq, False)
    assert exc.response_code == RC.INVALID_FIELD
    assert pair.switch.state is S.READY
    pair.s2t(ocp.Error(RC.INVALID_FIELD, exc.txn_seq, exc.path))
    assert pair.t2s(purchase(20)) == [purchase(20)]


def test_wrong_type_is_invalid_field() -> None:
    pair = signed_on_pair()
    body = bytes([0x94, 0x10, 0x05, 0xA1, 0x78, 0x01])  # [16, 5, "x", 1]
    with pytest.raises(ocp.InvalidField) as info:
        pair.to_switch(_raw_frame(body, sequence=2, mac_key=_k_t2s()))
    assert (info.value.path, info.value.txn_seq) == ("$.card_no", 5)


@pytest.mark.parametrize("cls", [c for c in ocp.MESSAGE_TYPES if c.direction
                                 is ocp.Direction.T2S and c.__struct_fields__[:1] == ("txn_seq",)])
def test_a_request_missing_its_last_field_is_refused_naming_it(cls: type[ocp.Message]) -> None:
    """Every request cut short before its last required field: INVALID_FIELD naming that field
    (not `$`), with the request's txn_seq, and the session goes on."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    required = [f.name for f in info.fields if f.required]
    body = msgspec.msgpack.encode([cls.__struct_config__.tag, 77, *[1] * (len(required) - 2)])
    pair = signed_on_pair()
    with pytest.raises(ocp.InvalidField) as exc:
        pair.to_switch(_raw_frame(body, sequence=2, mac_key=_k_t2s()))
    assert (exc.value.path, exc.value.txn_seq) == (f"$.{required[-1]}", 77)
    assert pair.switch.state is S.READY


def test_invalid_field_before_sign_on_is_malformed() -> None:
    frame = ocp.encode_frame(ocp.SignOn(TERMINAL_ID, b"short"), sequence=0)
    with pytest.raises(ocp.MalformedFrame):
        drain(ocp.Connection(ocp.Role.SWITCH), frame)


@pytest.mark.parametrize("body", [b"\xc1", b"\x05", b"\x90", b"\x91\xa1x", b"\x92\x10"])
def test_garbage_body_in_session(body: bytes) -> None:
    pair = signed_on_pair()
    with pytest.raises((ocp.MalformedFrame, ocp.InvalidField)):
        pair.to_switch(_raw_frame(body, sequence=2, mac_key=_k_t2s()))


def test_wrong_direction_is_unexpected() -> None:
    pair = signed_on_pair()
    frame = ocp.encode_frame(result_for(purchase()), sequence=2, mac_key=_k_t2s())
    with pytest.raises(ocp.UnexpectedMessage):
        pair.to_switch(frame)
    # ...even when the wrong-direction message is also invalid.
    pair = signed_on_pair()
    bad = ocp.PurchaseResult(1, 0, -1, 0, 0, 0)
    with pytest.raises(ocp.UnexpectedMessage):
        pair.to_switch(ocp.encode_frame(bad, sequence=2, mac_key=_k_t2s()))


def test_terminal_rejects_requests_from_the_switch() -> None:
    pair = signed_on_pair()
    k_s2t = ocp.derive_session_keys(TERMINAL_KEY, TERMINAL_NONCE, SWITCH_NONCE)[1]
    with pytest.raises(ocp.UnexpectedMessage):
        pair.to_terminal(ocp.encode_frame(purchase(), sequence=2, mac_key=k_s2t))


def test_local_misuse() -> None:
    t = ocp.Connection(ocp.Role.TERMINAL)
    s = ocp.Connection(ocp.Role.SWITCH)
    with pytest.raises(ocp.OcpLocalError):
        t.send(purchase())  # not signed on
    with pytest.raises(ocp.OcpLocalError):
        t.send(ocp.SignOn(TERMINAL_ID, TERMINAL_NONCE))  # use start_sign_on
    with pytest.raises(ocp.OcpLocalError):
        s.start_sign_on(TERMINAL_ID, TERMINAL_KEY, TERMINAL_NONCE)
    with pytest.raises(ocp.OcpLocalError):
        t.accept_sign_on(TERMINAL_KEY, SWITCH_NONCE)
    with pytest.raises(ocp.OcpLocalError):
        s.accept_sign_on(TERMINAL_KEY, SWITCH_NONCE)  # no SignOn yet
    with pytest.raises(ocp.OcpLocalError):
        t.start_sign_on(TERMINAL_ID, b"short", TERMINAL_NONCE)
    with pytest.raises(ocp.OcpLocalError):
        t.start_sign_on(TERMINAL_ID, TERMINAL_KEY, b"short")
    with pytest.raises(ocp.OcpLocalError):
        t.start_sign_on(0, TERMINAL_KEY, TERMINAL_NONCE)
    assert t.state is S.IDLE and s.state is S.IDLE
    pair = signed_on_pair()
    with pytest.raises(ocp.OcpLocalError):
        pair.switch.send(purchase())  # wrong direction
    with pytest.raises(ocp.OcpLocalError):
        pair.terminal.send(result_for(purchase()))


def test_receive_buffer_is_capped() -> None:
    conn = ocp.Connection(ocp.Role.SWITCH)
    conn.receive_data(bytes(limits.FRAME_BYTES_MAX))
    with pytest.raises(ocp.OcpLocalError):
        conn.receive_data(b"\x00")


def test_sequence_never_wraps() -> None:
    pair = signed_on_pair()
    pair.terminal._tx_seq = limits.SEQUENCE_MAX  # type: ignore[attr-defined]
    pair.switch._rx_seq = limits.SEQUENCE_MAX  # type: ignore[attr-defined]
    assert pair.t2s(purchase(1)) == [purchase(1)]
    with pytest.raises(ocp.OcpLocalError):
        pair.terminal.send(purchase(2))


def test_closing_error_from_peer_closes() -> None:
    pair = signed_on_pair()
    assert pair.s2t(ocp.Error(RC.SHUTTING_DOWN)) == [ocp.Error(RC.SHUTTING_DOWN), ocp.CLOSED]
    assert pair.switch.state is S.CLOSED and pair.terminal.state is S.CLOSED
    pair = signed_on_pair()
    unknown_code = ocp.Error(next(c for c in range(1, 256) if c not in set(RC)))
    assert pair.t2s(unknown_code) == [unknown_code, ocp.CLOSED]
    assert pair.switch.state is S.CLOSED, "unknown codes are treated as closing"


def _raw_frame(body: bytes, *, sequence: int, mac_key: bytes | None = None) -> bytes:
    flags = 0 if mac_key is None else ocp.FLAG_MAC
    head = bytes([ocp.VERSION, flags]) + sequence.to_bytes(4, "big") + body
    if mac_key is not None:
        head += ocp.MacKey(mac_key).mac(head)
    return len(head).to_bytes(4, "big") + head
