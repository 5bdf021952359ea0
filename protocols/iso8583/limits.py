"""Wire limits of the bank link (docs/bank-link.md, "Framing" and "Fields").

Changing one is a change of the bank-link spec. Relations are asserted at import.
"""

from typing import Final

LENGTH_FIELD_BYTES: Final = 2
"""Size of the big-endian length header that starts every frame (it counts the bytes after it)."""
FRAME_BYTES_MAX: Final = 1024
"""Largest frame, counting the length header: a longer announced length is refused before
anything of the message is buffered, and the connection is closed."""
MESSAGE_BYTES_MAX: Final = FRAME_BYTES_MAX - LENGTH_FIELD_BYTES
MESSAGE_BYTES_MIN: Final = 12
"""MTI (4) and primary bitmap (8): anything shorter cannot be a message."""
MAC_BYTES: Final = 8
"""Field 128: the leftmost 64 bits of AES-CMAC (NIST SP 800-38B allows Tlen >= 64)."""
MAC_KEY_BYTES: Final = 32
"""A MAC key is an AES-256 key."""
KEK_BYTES: Final = 32
"""The key-encryption key is an AES-256 key."""
WRAPPED_KEY_BYTES: Final = MAC_KEY_BYTES + 8
"""RFC 3394 adds one 64-bit block to the wrapped key."""
KEY_GENERATION_MAX: Final = 10**16 - 1
"""Field 53 is n16."""
STAN_MAX: Final = 999_999
"""Field 11 is n6; 000000 is never used."""
RRN_CHARS: Final = 12
AMOUNT_FEN_MAX: Final = 10**12 - 1
"""Field 4 is n12; the switch's own cap on a top-up is far smaller."""
TERMINAL_ID_MAX: Final = 99_999_999
"""Field 41 is 8 decimal digits."""
TENANT_ID_MAX: Final = 10**15 - 1
"""Field 42 is 15 decimal digits."""
TOKEN_CHARS_MAX: Final = 28
"""Fields 102 and 103 (LLVAR ans..28)."""
REASON_CHARS_MAX: Final = 25
"""Field 44 (LLVAR ans..25)."""

assert FRAME_BYTES_MAX <= 2**16 - 1 + LENGTH_FIELD_BYTES, "the length header is a uint16"
assert 8 <= MAC_BYTES <= 16
assert WRAPPED_KEY_BYTES == MAC_KEY_BYTES + 8
