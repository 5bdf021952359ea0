"""Bank card numbers at rest: masked for people, sealed for the bank link.

A bound bank card's number (PAN) is shown and logged only masked: the first six digits (the
bank's BIN), stars, the last four ("622202******1234"). The full number is kept sealed with
AES-256-GCM under the site's bank-card key (configuration: `bank_card_key`, else derived from
the master secret with HKDF-SHA-256, info b"onecard/bank-card-key"), with the account id as
associated data, so a sealed number copied onto another account does not open. Sans-IO: the
admin API seals, the switch opens when it talks to the bank.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocols.ocp._mac import hkdf

BANK_CARD_KEY_INFO = b"onecard/bank-card-key"
PAN_DIGITS_MIN = 12
PAN_DIGITS_MAX = 19
_NONCE_BYTES = 12
_AAD = struct.Struct(">4sI")


class PanError(ValueError):
    """Not a card number, or a sealed number that does not open under this key and account."""


def bank_card_key(master_secret: bytes, configured_hex: str = "") -> bytes:
    """The 32-byte bank-card key: the configured one, else derived from the master secret."""
    if configured_hex:
        key = bytes.fromhex(configured_hex)
        if len(key) != 32:
            raise PanError("bank_card_key must be 32 bytes of hex")
        return key
    return hkdf(b"", master_secret, BANK_CARD_KEY_INFO, 32)


def check_pan(pan: str) -> str:
    """The card number if it is 12..19 digits with a valid Luhn check digit; else PanError."""
    if not (PAN_DIGITS_MIN <= len(pan) <= PAN_DIGITS_MAX and pan.isascii() and pan.isdigit()):
        raise PanError(f"a bank card number is {PAN_DIGITS_MIN} to {PAN_DIGITS_MAX} digits")
    total = 0
    for i, ch in enumerate(reversed(pan)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    if total % 10:
        raise PanError("the bank card number's check digit is wrong")
    return pan


def mask_pan(pan: str) -> str:
    """"6222021234567890123" -> "622202*********0123"."""
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def seal_pan(key: bytes, account_id: int, pan: str, nonce: bytes | None = None) -> bytes:
    nonce = os.urandom(_NONCE_BYTES) if nonce is None else nonce
    return nonce + AESGCM(key).encrypt(nonce, pan.encode("ascii"),
                                       _AAD.pack(b"pan1", account_id))


def open_pan(key: bytes, account_id: int, sealed: bytes) -> str:
    try:
        return AESGCM(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:],
                                   _AAD.pack(b"pan1", account_id)).decode("ascii")
    except (InvalidTag, ValueError):
        raise PanError("the sealed bank card number does not open") from None
