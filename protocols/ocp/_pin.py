"""The cardholder PIN on the wire: sealed with AES-256-GCM under the session's PIN key.

OCP frames are MAC'd, not encrypted, so a PIN never travels in a body as text. Each session has
a PIN key derived with the MAC keys (docs/protocol.md section 4.7):

    k_pin = HKDF-Expand(PRK, b"onecard/ocp/v1 pin", 32)

(PRK as for k_t2s and k_s2t: HKDF-Extract(terminal_nonce || switch_nonce, terminal_key)). The
kiosk seals the PIN field (one length byte, the ASCII digits, zero padding to 12 bytes) with a
fresh random 12-byte nonce and, as associated data, the request it authorises:
u32be(terminal_id) || u32be(txn_seq) || u64be(card_no) || u64be(amount_fen). The block is
nonce || ciphertext || tag (40 bytes). A block copied into another request, another session or
another terminal does not open.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocols import limits
from protocols.ocp._errors import OcpError
from protocols.ocp._mac import hkdf_expand, hkdf_extract

SESSION_INFO_PIN = b"onecard/ocp/v1 pin"
PIN_FIELD_BYTES = 12
PIN_NONCE_BYTES = 12
_AAD = struct.Struct(">IIQQ")

assert PIN_NONCE_BYTES + PIN_FIELD_BYTES + 16 == limits.PIN_BLOCK_BYTES
assert 1 + limits.PIN_DIGITS_MAX <= PIN_FIELD_BYTES


class PinBlockInvalid(OcpError):
    """The PIN block does not open under this session's PIN key for this request (altered,
    copied from another request or session), or holds no well-formed PIN."""


def derive_pin_key(terminal_key: bytes, terminal_nonce: bytes, switch_nonce: bytes) -> bytes:
    """k_pin of one session (section 4.7): HKDF-Expand(PRK, b"onecard/ocp/v1 pin", 32)."""
    prk = hkdf_extract(terminal_nonce + switch_nonce, terminal_key)
    return hkdf_expand(prk, SESSION_INFO_PIN, limits.KEY_BYTES)


def _aad(terminal_id: int, txn_seq: int, card_no: int, amount_fen: int) -> bytes:
    return _AAD.pack(terminal_id, txn_seq, card_no, amount_fen)


def is_valid_pin(pin: str) -> bool:
    return (limits.PIN_DIGITS_MIN <= len(pin) <= limits.PIN_DIGITS_MAX and pin.isascii()
            and pin.isdigit())


def seal_pin(pin_key: bytes, pin: str, *, terminal_id: int, txn_seq: int, card_no: int,
             amount_fen: int, nonce: bytes) -> bytes:
    """The kiosk's side: the 40-byte pin_block of a Topup. `nonce` MUST be 12 fresh random
    bytes for every block."""
    if not is_valid_pin(pin):
        raise ValueError(f"a PIN is {limits.PIN_DIGITS_MIN}..{limits.PIN_DIGITS_MAX} digits")
    if len(nonce) != PIN_NONCE_BYTES:
        raise ValueError(f"nonce must be {PIN_NONCE_BYTES} bytes")
    field = bytes((len(pin),)) + pin.encode("ascii")
    field = field.ljust(PIN_FIELD_BYTES, b"\0")
    sealed = AESGCM(pin_key).encrypt(nonce, field,
                                     _aad(terminal_id, txn_seq, card_no, amount_fen))
    return nonce + sealed


def open_pin(pin_key: bytes, block: bytes, *, terminal_id: int, txn_seq: int, card_no: int,
             amount_fen: int) -> str:
    """The switch's side: the PIN in `block`, or PinBlockInvalid."""
    if len(block) != limits.PIN_BLOCK_BYTES:
        raise PinBlockInvalid("pin_block has the wrong length")
    try:
        field = AESGCM(pin_key).decrypt(block[:PIN_NONCE_BYTES], block[PIN_NONCE_BYTES:],
                                        _aad(terminal_id, txn_seq, card_no, amount_fen))
    except InvalidTag:
        raise PinBlockInvalid("pin_block does not open for this request") from None
    n = field[0]
    pin = field[1:1 + n]
    if any(field[1 + n:]) or not is_valid_pin(pin.decode("ascii", "replace")):
        raise PinBlockInvalid("pin_block holds no well-formed PIN")
    return pin.decode("ascii")
