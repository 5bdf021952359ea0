#!/usr/bin/env python3
"""atheris harness for the OCP Connection (h11 fuzz/afl-server.py in spirit).

    pip install atheris && python fuzz/fuzz_ocp.py [libFuzzer options]
    python fuzz/fuzz_ocp.py --random N      # without atheris: N random and mutated inputs

The first input byte chooses the target (fresh switch, signed-on switch, signed-on terminal) and
whether to feed one byte at a time; the rest is the stream. Anything but events, NEED_DATA,
CLOSED or an OcpRemoteError is a crash.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _harness  # fuzz/_harness.py: fuzz/ is sys.path[0] when run as a script

from protocols import ocp

KEY = bytes(range(32))
T_NONCE = bytes(range(0xA0, 0xB0))
S_NONCE = bytes(range(0xB0, 0xC0))


def _signed_on() -> tuple[ocp.Connection, ocp.Connection]:
    t, s = ocp.Connection(ocp.Role.TERMINAL), ocp.Connection(ocp.Role.SWITCH)
    s.receive_data(t.start_sign_on(1001, KEY, T_NONCE))
    s.next_event()
    t.receive_data(s.accept_sign_on(KEY, S_NONCE))
    t.next_event()
    s.receive_data(t.send(ocp.SignOnConfirm(0)))
    s.next_event()
    t.receive_data(s.send(ocp.SignOnResult(0, 0, 0, 30)))
    t.next_event()
    return t, s


def _seed_corpus() -> list[bytes]:
    t, _s = _signed_on()
    frames = [
        t.send(ocp.Purchase(1, 99, 500)),
        t.send(ocp.Reversal(2, 1, 99, 0)),
        t.send(ocp.BalanceInquiry(3, 99)),
        t.send(ocp.Heartbeat(1)),
        t.send(ocp.QrPurchase(4, "OC" + "A" * 56, 500)),
    ]
    fresh = ocp.Connection(ocp.Role.TERMINAL).start_sign_on(1001, KEY, T_NONCE)
    return [b"\x00" + fresh, b"\x01" + b"".join(frames), b"\x03" + frames[0]]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    selector, stream = data[0], data[1:]
    target = selector % 3
    if target == 0:
        conn = ocp.Connection(ocp.Role.SWITCH)
    else:
        t, s = _signed_on()
        conn = s if target == 1 else t
    chunks = [stream[i : i + 1] for i in range(len(stream))] if selector & 4 else [stream]
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        while True:
            try:
                ev = conn.next_event()
            except ocp.OcpRemoteError as exc:
                if exc.closes_connection:
                    assert conn.state is ocp.State.ERROR
                    conn.send(ocp.Error(exc.response_code))
                    return
                continue
            if ev is ocp.NEED_DATA:
                break
            if ev is ocp.CLOSED:
                return
            assert isinstance(ev, ocp.Message)


def main() -> None:
    _harness.main(test_one_input, _seed_corpus, max_random_len=64, max_mutations=4)


if __name__ == "__main__":
    main()
