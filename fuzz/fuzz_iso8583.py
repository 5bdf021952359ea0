#!/usr/bin/env python3
"""atheris harness for the bank link's ISO 8583 decoder (protocols/iso8583).

    pip install atheris && python fuzz/fuzz_iso8583.py [libFuzzer options]
    python fuzz/fuzz_iso8583.py --random N      # without atheris: N random and mutated inputs

The first input byte chooses whether the stream is fed at once or a byte at a time, and
whether the MAC is re-computed after the mutation (so the fuzzer gets past the MAC check to
the field checks); the rest is a stream of frames. Anything but messages, NEED_DATA, CLOSED or
an Iso8583RemoteError is a crash.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _harness  # fuzz/_harness.py: fuzz/ is sys.path[0] when run as a script

from protocols import iso8583

KEY = bytes(range(32))
NOW = dt.datetime(2026, 12, 2, 3, 4, 5, tzinfo=dt.UTC)


def _keys() -> iso8583.MacKeys:
    keys = iso8583.MacKeys()
    keys.install(1, KEY)
    return keys


def _seed_corpus() -> list[bytes]:
    keys = _keys()
    req = iso8583.TopupRequest(
        terminal_id=5001, stan=2, rrn="000000000001", amount_fen=10_000, card_token="TOK-1",
        account_ref="A-42", local_datetime=dt.datetime(2026, 12, 2, 11, 4, 5), tenant_id=1)
    net = iso8583.NetworkCode
    messages: list[iso8583.Message] = [
        req, iso8583.ReversalAdvice.of(req),
        iso8583.TopupResponse(terminal_id=5001, stan=2, rrn="000000000001", amount_fen=10_000,
                              field39="00", auth_code="000001"),
        iso8583.ReversalResponse(terminal_id=5001, stan=2, rrn="000000000001", field39="00"),
        iso8583.NetworkRequest(code=net.KEY_EXCHANGE, stan=1, key_generation=2,
                               wrapped_key=iso8583.wrap_key(KEY, KEY)),
        iso8583.NetworkResponse(code=net.CUTOVER, stan=1, field39="00",
                                business_date=dt.date(2026, 12, 3)),
    ]
    frames = [iso8583.encode_frame(m, now=NOW, keys=keys) for m in messages]
    return [bytes([i % 4]) + f for i, f in enumerate(frames)] + [b"\x00" + b"".join(frames)]


def _remac(stream: bytes) -> bytes:
    """Each whole frame's last 8 bytes replaced by a MAC that verifies."""
    out, i = bytearray(), 0
    while i + 2 <= len(stream):
        n = int.from_bytes(stream[i : i + 2], "big")
        body = stream[i + 2 : i + 2 + n]
        if len(body) < n or n < 20:
            break
        out += stream[i : i + 2] + body[:-8] + iso8583.cmac(KEY, body[:-8])
        i += 2 + n
    return bytes(out + stream[i:])


def test_one_input(data: bytes) -> None:
    if not data:
        return
    selector, stream = data[0], data[1:]
    if selector & 2:
        stream = _remac(stream)
    conn = iso8583.Connection(_keys())
    chunks = [stream[i : i + 1] for i in range(len(stream))] if selector & 1 else [stream]
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        while True:
            try:
                ev = conn.next_event()
            except iso8583.Iso8583RemoteError:
                if conn.broken:
                    return
                continue
            if ev is iso8583.NEED_DATA:
                break
            if ev is iso8583.CLOSED:
                return
            assert not isinstance(ev, iso8583.Signal)


def main() -> None:
    _harness.main(test_one_input, _seed_corpus, max_random_len=200, max_mutations=4)


if __name__ == "__main__":
    main()
