#!/usr/bin/env python3
"""atheris harness for the phone QR code decoder (protocols/qr.py).

    pip install atheris && python fuzz/fuzz_qr.py [libFuzzer options]
    python fuzz/fuzz_qr.py --random N      # without atheris: N random and mutated inputs

The first input byte chooses how the rest becomes a QR text: as UTF-8 (any text a scanner could
hand over), as "OC" + base32 of the bytes (well-formed base32 of any length), or as a valid
token XORed with the bytes and re-encoded (near misses). `parse`, `authenticate` and
`check_time` may only return or raise QrError; a text that authenticates is the one text of its
token (re-issuing it gives the same characters).
"""

from __future__ import annotations

import base64
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _harness  # fuzz/_harness.py: fuzz/ is sys.path[0] when run as a script

from protocols import qr

KEY = qr.derive_qr_key(bytes(range(32)))
VALID = qr.issue(KEY, 6222000000001234, 1_700_000_060, bytes(range(0xE0, 0xE8)),
                 issued_s=1_700_000_000)
VALID_RAW = base64.b32decode(VALID[len(qr.PREFIX):])


def text_of(data: bytes) -> str:
    if not data:
        return ""
    selector, rest = data[0] % 3, data[1:]
    if selector == 0:
        return rest.decode("utf-8", "replace")
    if selector == 1:
        return qr.PREFIX + base64.b32encode(rest).decode("ascii").rstrip("=")
    mixed = bytes(a ^ b for a, b in zip(VALID_RAW, rest.ljust(len(VALID_RAW), b"\0"),
                                        strict=False)) + rest[len(VALID_RAW):]
    return qr.PREFIX + base64.b32encode(mixed).decode("ascii").rstrip("=")


def test_one_input(data: bytes) -> None:
    text = text_of(data)
    with contextlib.suppress(qr.QrError):
        qr.parse(text)
    try:
        token = qr.authenticate(KEY, text)
    except qr.QrError:
        return
    again = qr.issue(KEY, token.card_no, token.expires_s, token.nonce, issued_s=token.issued_s)
    assert again == text, (text, again)
    for now_s in (0, token.issued_s, token.expires_s, 2**40):
        with contextlib.suppress(qr.QrExpired):
            qr.check_time(token, now_s)


def _seed_corpus() -> list[bytes]:
    return [b"\x00" + VALID.encode(), b"\x01" + VALID_RAW, b"\x02" + bytes(len(VALID_RAW))]


def main() -> None:
    _harness.main(test_one_input, _seed_corpus, max_random_len=80, max_mutations=3)


if __name__ == "__main__":
    main()
