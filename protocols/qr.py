"""Phone QR codes: short-lived signed tokens the cardholder's app shows and a POS scans.

Sans-IO and clock-free: whoever checks the time passes `now_s`. The normative format is
docs/protocol.md, "Phone QR codes"; in short, a version 1 token is 35 bytes, big-endian:

    offset size field
         0    1 version      1
         1    8 card_no      1 .. 2**63-1
         9    4 issued_s     Unix seconds (u32)
        13    4 expires_s    issued_s < expires_s <= issued_s + QR_LIFETIME_SECONDS_MAX
        17    8 nonce        random, from the issuer's CSPRNG
        25   10 mac          first 10 bytes of HMAC-SHA-256(qr_key, bytes 0..24)

and its text, what the QR code holds, is `"OC"` followed by the RFC 4648 base32 of those bytes
(upper case, no padding: 35 bytes are exactly 56 characters), 58 characters from the QR
alphanumeric alphabet. `qr_key = HMAC-SHA-256(site master secret, "onecard qr v1")`: a switch
and the admin API derive it from the master secret they already hold; a terminal never needs
it. The token gives integrity, not secrecy: its card number is readable by anyone who scans it
(`parse`, which a terminal uses for its receipt and a reversal).

`verify` is `authenticate` (format and MAC, no clock) then `check_time`. Every failure is a
`QrError`: `QrMalformed`, `QrBadMac` or `QrExpired`; nothing else escapes the decoder.
"""

from __future__ import annotations

import base64
import hmac
import re
import struct
from typing import Final

import msgspec

from protocols import limits

VERSION: Final = 1
PREFIX: Final = "OC"
"""Every OneCard QR text starts with this, so a till that also reads other payment codes can
tell ours apart without a key."""
QR_KEY_LABEL: Final = b"onecard qr v1"
_BODY = struct.Struct(">BQII8s")
"""version, card_no, issued_s, expires_s, nonce: the bytes the MAC covers."""
BODY_BYTES: Final = _BODY.size
TOKEN_BYTES: Final = BODY_BYTES + limits.QR_MAC_BYTES
TEXT_CHARS: Final = len(PREFIX) + TOKEN_BYTES * 8 // 5
_U32_MAX: Final = 2**32 - 1
_BASE32 = re.compile(r"[A-Z2-7]*", re.ASCII)

assert limits.QR_NONCE_BYTES == 8, "the layout above"
assert TOKEN_BYTES % 5 == 0, "base32 without padding or spare bits: one text per token"
assert TEXT_CHARS <= limits.QR_CHARS_MAX


class QrError(ValueError):
    """A QR text that may not pay. The subclass says why; the message says more."""


class QrMalformed(QrError):
    """Not a OneCard QR code of a version we know, or its fields break the format's rules."""


class QrBadMac(QrError):
    """Well-formed, but not signed with this site's QR key: forged, altered or another site's."""


class QrExpired(QrError):
    """Authentic, but not valid at this time: expired, or issued in the future (beyond the
    allowed clock skew)."""


class QrToken(msgspec.Struct, frozen=True):
    """The fields of a QR code."""

    card_no: int
    issued_s: int
    expires_s: int
    nonce: bytes


def derive_qr_key(master_secret: bytes) -> bytes:
    """The site's 32-byte QR key: HMAC-SHA-256(master_secret, "onecard qr v1")."""
    if len(master_secret) < limits.KEY_BYTES:
        raise ValueError(f"master secret must be at least {limits.KEY_BYTES} bytes")
    return hmac.digest(master_secret, QR_KEY_LABEL, "sha256")


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.digest(key, body, "sha256")[: limits.QR_MAC_BYTES]


def _fields_problem(card_no: int, issued_s: int, expires_s: int) -> str | None:
    if not 1 <= card_no <= limits.CARD_NO_MAX:
        return f"card_no {card_no} is out of range"
    if not 0 <= issued_s < expires_s <= _U32_MAX:
        return "expires_s must be after issued_s"
    if expires_s - issued_s > limits.QR_LIFETIME_SECONDS_MAX:
        return f"valid for more than {limits.QR_LIFETIME_SECONDS_MAX} s"
    return None


def issue(key: bytes, card_no: int, expires_s: int, nonce: bytes, *, issued_s: int) -> str:
    """The QR text for `card_no`, valid from `issued_s` to `expires_s` (Unix seconds).

    `nonce` MUST be QR_NONCE_BYTES fresh random bytes (os.urandom / secrets): a switch lets
    each (card_no, nonce) pay once. Raises ValueError for arguments outside the format.
    """
    if len(key) != limits.KEY_BYTES:
        raise ValueError(f"the QR key is {limits.KEY_BYTES} bytes (derive_qr_key)")
    if len(nonce) != limits.QR_NONCE_BYTES:
        raise ValueError(f"nonce must be {limits.QR_NONCE_BYTES} bytes")
    problem = _fields_problem(card_no, issued_s, expires_s)
    if problem is not None:
        raise ValueError(problem)
    body = _BODY.pack(VERSION, card_no, issued_s, expires_s, nonce)
    return PREFIX + base64.b32encode(body + _mac(key, body)).decode("ascii")


def _decode(text: object) -> tuple[bytes, bytes]:
    """(body, mac) of a version 1 text, or QrMalformed. Checks length before anything else."""
    if not isinstance(text, str):
        raise QrMalformed("a QR code is text")
    if len(text) > limits.QR_CHARS_MAX:
        raise QrMalformed(f"longer than {limits.QR_CHARS_MAX} characters")
    if not text.startswith(PREFIX):
        raise QrMalformed("not a OneCard QR code")
    letters = text[len(PREFIX):]
    if not letters or len(letters) % 8 or not _BASE32.fullmatch(letters):
        raise QrMalformed("not base32 (A-Z, 2-7, no padding)")
    raw = base64.b32decode(letters)
    if raw[0] != VERSION:
        raise QrMalformed(f"QR code version {raw[0]} is not supported")
    if len(raw) != TOKEN_BYTES:
        raise QrMalformed(f"a version {VERSION} QR code is {TOKEN_BYTES} bytes, not {len(raw)}")
    return raw[:BODY_BYTES], raw[BODY_BYTES:]


def _fields(body: bytes) -> QrToken:
    _version, card_no, issued_s, expires_s, nonce = _BODY.unpack(body)
    problem = _fields_problem(card_no, issued_s, expires_s)
    if problem is not None:
        raise QrMalformed(problem)
    return QrToken(card_no, issued_s, expires_s, nonce)


def parse(text: str) -> QrToken:
    """The fields of a QR text WITHOUT checking its MAC: for a terminal's receipt and for the
    card_no of a Reversal. Never decide anything on it. Raises QrMalformed."""
    body, _mac_bytes = _decode(text)
    return _fields(body)


def authenticate(key: bytes, text: str) -> QrToken:
    """Format and MAC, no clock: QrMalformed or QrBadMac, else the token's fields. The MAC is
    compared in constant time and checked before the fields are read."""
    body, mac = _decode(text)
    if not hmac.compare_digest(mac, _mac(key, body)):
        raise QrBadMac("the QR code's MAC does not verify")
    return _fields(body)


def check_time(token: QrToken, now_s: int) -> None:
    """QrExpired unless `issued_s - skew <= now_s <= expires_s + skew` (QR_CLOCK_SKEW_SECONDS)."""
    skew = limits.QR_CLOCK_SKEW_SECONDS
    if now_s > token.expires_s + skew:
        raise QrExpired(f"the QR code expired at {token.expires_s}")
    if now_s < token.issued_s - skew:
        raise QrExpired(f"the QR code is not valid before {token.issued_s}")


def verify(key: bytes, text: str, now_s: int) -> QrToken:
    """`authenticate` then `check_time`: the token's fields, or a QrError saying why not."""
    token = authenticate(key, text)
    check_time(token, now_s)
    return token


def forget_after(token: QrToken) -> int:
    """The last second at which `check_time` can still pass: a switch keeps a used nonce until
    then, and may forget it after."""
    return token.expires_s + limits.QR_CLOCK_SKEW_SECONDS


__all__ = [
    "BODY_BYTES",
    "PREFIX",
    "TEXT_CHARS",
    "TOKEN_BYTES",
    "VERSION",
    "QrBadMac",
    "QrError",
    "QrExpired",
    "QrMalformed",
    "QrToken",
    "authenticate",
    "check_time",
    "derive_qr_key",
    "forget_after",
    "issue",
    "parse",
    "verify",
]
