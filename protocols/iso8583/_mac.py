"""MAC and key handling (docs/bank-link.md, "MAC and keys").

- MAC: AES-CMAC (NIST SP 800-38B, RFC 4493) under the current 32-byte MAC key, over the packed
  message from the first byte of the MTI to the last byte before field 128 (bit 128 is set in
  the bitmap that is MAC'd); field 128 holds its leftmost MAC_BYTES bytes.
- Keys travel only wrapped: AES key wrap (RFC 3394) under the 32-byte key-encryption key (KEK)
  that both sides hold out of band. Unwrapping checks the RFC's integrity value.
- A key has a generation (field 53). `MacKeys` holds the current one and the one before, so an
  answer MAC'd under the key replaced a moment ago still verifies.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from protocols.iso8583 import limits
from protocols.iso8583._errors import BadKey, Iso8583LocalError

KEYS_KEPT = 3
"""The current key, the one before it, and one announced but not yet current."""


def cmac(key: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """The leftmost MAC_BYTES bytes of AES-CMAC(key, data)."""
    c = CMAC(algorithms.AES(key))
    c.update(bytes(data))
    return c.finalize()[: limits.MAC_BYTES]


def wrap_key(kek: bytes, key: bytes) -> bytes:
    """`key` wrapped under `kek` (RFC 3394)."""
    if len(kek) != limits.KEK_BYTES or len(key) != limits.MAC_KEY_BYTES:
        raise Iso8583LocalError("the KEK and the MAC key are 32 bytes each")
    return aes_key_wrap(kek, key)


def unwrap_key(kek: bytes, wrapped: bytes) -> bytes:
    """The key inside `wrapped`; BadKey when it was not wrapped under `kek` or is damaged."""
    if len(wrapped) != limits.WRAPPED_KEY_BYTES:
        raise BadKey(f"a wrapped key is {limits.WRAPPED_KEY_BYTES} bytes, not {len(wrapped)}")
    try:
        return aes_key_unwrap(kek, wrapped)
    except (InvalidUnwrap, ValueError):
        raise BadKey("the wrapped key does not unwrap under the KEK") from None


class MacKeys:
    """The MAC keys of one bank link, by generation: the current one (used to send) and the
    one before it. Shared by every connection of the link. Each key's CMAC context is keyed
    once and copied per message (the AES key schedule is not redone per MAC)."""

    __slots__ = ("_contexts", "_keys", "current")

    def __init__(self) -> None:
        self._keys: dict[int, bytes] = {}
        self._contexts: dict[int, CMAC] = {}
        self.current: int | None = None

    def install(self, generation: int, key: bytes, *, current: bool = True) -> None:
        """Make `key` the current key (sending from now on), keeping the previous one; with
        `current=False`, only accept messages MAC'd under it (a key announced in a key
        exchange whose answer has not arrived: the peer may already use it)."""
        if len(key) != limits.MAC_KEY_BYTES or not 0 <= generation <= limits.KEY_GENERATION_MAX:
            raise Iso8583LocalError("a MAC key is 32 bytes, its generation n16")
        self._keys[generation] = bytes(key)
        self._contexts[generation] = CMAC(algorithms.AES(key))
        if current:
            self.current = generation
        for old in sorted(self._keys)[:-KEYS_KEPT]:
            if old not in (generation, self.current):
                del self._keys[old], self._contexts[old]

    def clear(self) -> None:
        self._keys.clear()
        self._contexts.clear()
        self.current = None

    def _mac(self, generation: int, data: bytes | bytearray) -> bytes:
        c = self._contexts[generation].copy()
        c.update(bytes(data))
        return c.finalize()[: limits.MAC_BYTES]

    def key(self, generation: int) -> bytes | None:
        return self._keys.get(generation)

    def __contains__(self, generation: object) -> bool:
        return generation in self._keys

    def sign(self, data: bytes | bytearray) -> tuple[int, bytes]:
        if self.current is None:
            raise Iso8583LocalError("no MAC key yet (key exchange first)")
        return self.current, self._mac(self.current, data)

    def verify(self, generation: int, data: bytes | bytearray, mac: bytes) -> bool:
        if generation not in self._contexts:
            return False
        return hmac.compare_digest(self._mac(generation, data), mac)

    def __repr__(self) -> str:  # never the keys themselves
        return f"MacKeys(generations={sorted(self._keys)}, current={self.current})"
