#!/usr/bin/env python3
"""Print the ```bank-vector blocks of docs/bank-link.md, appendix A, for review.

    python docs/make_bank_link_vectors.py

The vectors in the spec are frozen: tests/test_bank_link_docs.py checks each one byte for byte
against protocols/iso8583, so a change to the wire format fails there until the spec changes.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocols import iso8583

KEK = bytes(range(32))
"""RFC 3394 section 4.6's KEK."""
MAC_KEY = bytes.fromhex("00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f")
"""RFC 3394 section 4.6's key data: wrapped under KEK it is that section's ciphertext."""
GENERATION = 1
NOW = dt.datetime(2026, 12, 2, 3, 4, 5, tzinfo=dt.UTC)
LOCAL = dt.datetime(2026, 12, 2, 11, 4, 5)


def vector_messages() -> list[tuple[str, str, iso8583.Message]]:
    """(name, direction, message) in the order of a short day on the link."""
    topup = iso8583.TopupRequest(
        terminal_id=5001, stan=2, rrn="000000000001", amount_fen=10_000, card_token="TOK-1",
        account_ref="A-42", local_datetime=LOCAL, tenant_id=1)
    net = iso8583.NetworkCode
    advice = iso8583.ReversalAdvice.of(topup)
    return [
        ("01-sign-on", "s2b", iso8583.NetworkRequest(code=net.SIGN_ON, stan=1)),
        ("02-sign-on-answer", "b2s",
         iso8583.NetworkResponse(code=net.SIGN_ON, stan=1, field39="00")),
        ("03-key-exchange", "s2b", iso8583.NetworkRequest(
            code=net.KEY_EXCHANGE, stan=2, key_generation=GENERATION,
            wrapped_key=iso8583.wrap_key(KEK, MAC_KEY))),
        ("04-key-exchange-answer", "b2s", iso8583.NetworkResponse(
            code=net.KEY_EXCHANGE, stan=2, field39="00", key_generation=GENERATION)),
        ("05-topup", "s2b", topup),
        ("06-topup-approved", "b2s", iso8583.TopupResponse(
            terminal_id=5001, stan=2, rrn="000000000001", amount_fen=10_000, field39="00",
            auth_code="000001")),
        ("07-topup-declined", "b2s", iso8583.TopupResponse(
            terminal_id=5001, stan=2, rrn="000000000001", amount_fen=10_000, field39="51",
            reason="insufficient funds")),
        ("08-reversal-advice", "s2b", advice),
        ("09-reversal-advice-repeat", "s2b", msgspec.structs.replace(advice, repeat=True)),
        ("10-reversal-answer", "b2s", iso8583.ReversalResponse(
            terminal_id=5001, stan=2, rrn="000000000001", field39="00")),
        ("11-echo", "b2s", iso8583.NetworkRequest(code=net.ECHO, stan=7)),
        ("12-echo-answer", "s2b", iso8583.NetworkResponse(code=net.ECHO, stan=7, field39="00")),
        ("13-cutover", "b2s", iso8583.NetworkRequest(
            code=net.CUTOVER, stan=8, business_date=dt.date(2026, 12, 3))),
        ("14-cutover-answer", "s2b", iso8583.NetworkResponse(
            code=net.CUTOVER, stan=8, field39="00", business_date=dt.date(2026, 12, 3))),
    ]


def keys() -> iso8583.MacKeys:
    k = iso8583.MacKeys()
    k.install(GENERATION, MAC_KEY)
    return k


def render() -> str:
    out = []
    k = keys()
    for name, direction, msg in vector_messages():
        data = iso8583.encode_frame(msg, now=NOW, keys=k)
        body = msgspec.json.encode(msgspec.to_builtins(msg)).decode()
        lines = [f"name: day/{name}", f"direction: {direction}",
                 f"mti: {iso8583.mti_of(msg)}", f"type: {type(msg).__name__}",
                 f"message: {body}"]
        hx = data.hex()
        lines += [f"hex: {hx[i:i + 64]}" for i in range(0, len(hx), 64)]
        out.append("```bank-vector\n" + "\n".join(lines) + "\n```")
    return "\n\n".join(out)


if __name__ == "__main__":
    print(render())
