"""Any bytes, whole or one byte at a time, either decode to events or raise OcpRemoteError.

h11's fuzz/afl-server.py in hypothesis form: a fresh switch, a signed-on switch and a signed-on
terminal are fed random bytes and mutations of valid frames (bit flips, truncation, extension,
altered length prefixes). Anything but an event, NEED_DATA, CLOSED or an OcpRemoteError is a bug.
fuzz/fuzz_ocp.py runs the same check under atheris.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import ocp
from tests.ocp_pair import ConnectionPair, signed_on_pair


def feed(conn: ocp.Connection, chunks: list[bytes]) -> list:
    """Feed chunks then EOF; events seen. Raises only on a non-protocol failure (a bug)."""
    events: list = []
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        while True:
            try:
                ev = conn.next_event()
            except ocp.OcpRemoteError as exc:
                assert isinstance(exc.response_code, ocp.ResponseCode)
                if exc.closes_connection:
                    assert conn.state is ocp.State.ERROR
                    conn.send(ocp.Error(exc.response_code))
                    assert conn.state is ocp.State.CLOSED
                    return events
                assert isinstance(exc, ocp.InvalidField | ocp.UnknownMessage)
                assert conn.state is not ocp.State.ERROR
                continue
            if ev is ocp.NEED_DATA:
                break
            if ev is ocp.CLOSED:
                return events
            assert isinstance(ev, ocp.Message)
            events.append(ev)
    raise AssertionError("EOF must end in CLOSED or a protocol error")


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in [*points, len(data)]:
        if p > last:
            out.append(data[last:p])
            last = p
    return out


def session_frames(pair: ConnectionPair) -> bytes:
    return b"".join(
        [
            pair.terminal.send(ocp.Purchase(1, 99, 500)),
            pair.terminal.send(ocp.Reversal(2, 1, 99, 0)),
            pair.terminal.send(ocp.BalanceInquiry(3, 99)),
            pair.terminal.send(ocp.QrPurchase(4, "OC" + "A" * 56, 500)),
            pair.terminal.send(ocp.Heartbeat(5)),
            pair.terminal.send(ocp.SignOff()),
        ]
    )


FUZZ = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)


@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=10), st.booleans())
def test_random_bytes_to_fresh_switch(data: bytes, cuts: list[int], one_by_one: bool) -> None:
    chunks = [bytes([b]) for b in data] if one_by_one else split(data, cuts)
    feed(ocp.Connection(ocp.Role.SWITCH), chunks)


@FUZZ
@given(st.binary(max_size=300), st.booleans(), st.sampled_from(["switch", "terminal"]))
def test_random_bytes_after_sign_on(data: bytes, one_by_one: bool, side: str) -> None:
    pair = signed_on_pair()
    conn = pair.switch if side == "switch" else pair.terminal
    feed(conn, [bytes([b]) for b in data] if one_by_one else [data])


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "extend", "length", "byte", "insert"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=40))
        elif op == "length" and len(data) >= 4:
            new = draw(st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)))
            data[0:4] = new.to_bytes(4, "big")
        elif op == "byte" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@FUZZ
@given(st.data(), st.booleans())
def test_mutated_session_frames(data: st.DataObject, one_by_one: bool) -> None:
    pair = signed_on_pair()
    valid = session_frames(pair)
    blob = data.draw(mutated(valid))
    feed(pair.switch, [bytes([b]) for b in blob] if one_by_one else [blob])


@FUZZ
@given(st.data())
def test_mutated_sign_on_frames(data: st.DataObject) -> None:
    pair = ConnectionPair()
    sign_on = pair.terminal.start_sign_on(pair.terminal_id, pair.terminal_key, pair.terminal_nonce)
    feed(pair.switch, [data.draw(mutated(sign_on))])
    # The terminal side: a mutated challenge.
    pair = ConnectionPair()
    pair.switch.receive_data(
        pair.terminal.start_sign_on(pair.terminal_id, pair.terminal_key, pair.terminal_nonce)
    )
    assert isinstance(pair.switch.next_event(), ocp.SignOn)
    challenge = pair.switch.accept_sign_on(pair.terminal_key, pair.switch_nonce)
    feed(pair.terminal, [data.draw(mutated(challenge))])


def test_unmutated_session_frames_decode() -> None:
    pair = signed_on_pair()
    assert len(feed(pair.switch, [session_frames(pair)])) == 6


def test_deeply_nested_body_is_a_protocol_error() -> None:
    pair = signed_on_pair()
    body = b"\x91" * 10_000 + b"\x00"
    head = bytes([1, 1]) + (2).to_bytes(4, "big") + body
    k_t2s = ocp.derive_session_keys(pair.terminal_key, pair.terminal_nonce, pair.switch_nonce)[0]
    head += ocp.MacKey(k_t2s).mac(head)
    feed(pair.switch, [len(head).to_bytes(4, "big") + head])
