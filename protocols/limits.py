"""Wire limits of the OCP terminal protocol.

Every number a peer can make us buffer, count or store has a maximum here, named with its unit
then `_MAX`. `docs/protocol.md` quotes these values (its tables are rendered from this module), so
changing one is a protocol change. Relations between them are asserted at import.
"""

from typing import Final

# Frame layout (docs/protocol.md, "Frames").
LENGTH_FIELD_BYTES: Final = 4
"""Size of the big-endian length prefix that starts every frame."""
HEADER_BYTES: Final = 6
"""version (1) + flags (1) + sequence (4): the bytes after the length prefix and before the body."""
FRAME_BYTES_MAX: Final = 16384
"""Largest frame, counting the length prefix itself."""
NONCE_BYTES: Final = 16
"""Size of the sign-on nonces, terminal and switch."""
MAC_BYTES: Final = 16
"""Size of the MAC trailer (truncated HMAC-SHA-256)."""
KEY_BYTES: Final = 32
"""Size of a terminal key and of each session key."""

FRAME_LENGTH_MIN: Final = HEADER_BYTES
"""Smallest value of the length prefix (a header and an empty body; the body check then fails)."""
FRAME_LENGTH_MAX: Final = FRAME_BYTES_MAX - LENGTH_FIELD_BYTES
"""Largest value of the length prefix."""

# Field limits (docs/protocol.md, "Messages").
AMOUNT_FEN_MAX: Final = 10_000_000
"""Largest amount of one purchase or reversal: 100,000.00 yuan."""
TXN_SEQ_MAX: Final = 2**32 - 1
"""Largest terminal transaction counter (txn_seq), and largest frame sequence."""
SEQUENCE_MAX: Final = 2**32 - 1
"""Largest frame sequence number; a session never wraps it."""
TERMINAL_ID_MAX: Final = 2**31 - 1
MERCHANT_ID_MAX: Final = 32_768
"""Largest merchant account id (canteen, shop, or system account such as the cash desk): the
switch's balance cache holds merchants by id, at most this many."""
CARD_NO_MAX: Final = 2**63 - 1
DETAIL_CHARS_MAX: Final = 200
"""Longest `Error.detail`, in Unicode code points."""
FIRMWARE_CHARS_MAX: Final = 64
"""Longest `SignOnConfirm.firmware`, in Unicode code points."""
TIME_MS_MAX: Final = 2**63 - 1
"""Largest wall-clock time in milliseconds since the Unix epoch (int64)."""
BALANCE_FEN_MIN: Final = -(2**63)
BALANCE_FEN_MAX: Final = 2**63 - 1
"""Balances are int64 fen; the ledger keeps them far smaller."""
HEARTBEAT_INTERVAL_SECONDS_MAX: Final = 3600
"""Largest heartbeat interval the switch may announce."""
CODE_MAX: Final = 255
"""Response codes are small non-negative integers; unknown ones are still decoded."""
TERMINAL_KIND_MAX: Final = 255
PROTOCOL_VERSION_MAX: Final = 255
TXN_SEQ_WINDOW: Final = 256
"""A request this far or further below the highest txn_seq seen, and not journaled, is
answered TXN_SEQ_TOO_OLD."""

# Phone QR codes (protocols/qr.py; docs/protocol.md, "Phone QR codes").
QR_CHARS_MAX: Final = 128
"""Longest `QrPurchase.qr`, the scanned text, in characters (a version 1 code has 58)."""
QR_NONCE_BYTES: Final = 8
"""Size of a QR code's random nonce: with the card number, it names the code for single use."""
QR_MAC_BYTES: Final = 10
"""Size of a QR code's MAC (truncated HMAC-SHA-256): checked online, one guess per request."""
QR_LIFETIME_SECONDS_MAX: Final = 300
"""Longest validity of a QR code (expires_s - issued_s); a longer one is malformed."""
QR_CLOCK_SKEW_SECONDS: Final = 10
"""Clock difference allowed between the issuer of a QR code and the switch, either way."""

# Door access (docs/protocol.md, "Door access"; docs/access.md).
READER_NO_MAX: Final = 16
"""Readers of one door terminal (a controller with up to 16 readers: reader_no 1..16)."""
CREDENTIAL_CHARS_MAX: Final = 128
"""Longest `AccessRequest.credential` (a face or fingerprint template id, or a QR text)."""
PIN_CHARS_MAX: Final = 12
"""Longest PIN typed at a door (digits)."""
FLOOR_NO_MAX: Final = 62
"""Elevator floors are bits 0..62 of a floor mask (an int64 on the wire and in PostgreSQL)."""
OPEN_MS_MAX: Final = 60_000
"""Longest lock release a door is told."""

# Offline access lists and upload (docs/protocol.md, "Offline operation").
ACCESS_LIST_VERSION_MAX: Final = 2**53 - 1
"""Largest access list version (the switch's, increasing; exact as a JSON number too)."""
ACCESS_ENTRIES_PER_FRAME_MAX: Final = 256
"""Entries (or removals) in one AccessListSnapshot part or AccessListDelta (an entry takes at
most 34 bytes)."""
ACCESS_LIST_PARTS_MAX: Final = 1024
"""Parts of one snapshot: a door's list holds at most 262_144 credentials."""
OFFLINE_RECORDS_PER_UPLOAD_MAX: Final = 256
"""Records in one OfflineUpload (at most 40 bytes each)."""
INTERVALS_MAX: Final = 32
"""Intervals of one time zone in a snapshot."""
TIME_ZONES_MAX: Final = 16
"""Time zones in a snapshot (the ones its entries name)."""
HOLIDAYS_MAX: Final = 366
"""Holiday dates in a snapshot."""
EPOCH_SECONDS_MAX: Final = 2**32 - 1
"""Largest Unix time in seconds an access entry may carry (year 2106)."""
# Kiosk top-up (docs/protocol.md, "Kiosk top-up").
PIN_BLOCK_BYTES: Final = 40
"""Size of `Topup.pin_block`: a 12-byte AES-GCM nonce, the 12-byte sealed PIN field and the
16-byte tag (protocols/ocp/_pin.py)."""
PIN_DIGITS_MIN: Final = 4
PIN_DIGITS_MAX: Final = 8
"""A cardholder PIN is 4 to 8 decimal digits."""
BANK_CODE_CHARS_MAX: Final = 4
"""Longest `TopupResult.bank_code` (ISO 8583 field 39 is 2 characters)."""

# Relations.
assert FRAME_LENGTH_MIN <= FRAME_LENGTH_MAX
assert FRAME_LENGTH_MAX < 2**32, "the length prefix is a uint32"
assert SEQUENCE_MAX == 2**32 - 1, "the frame sequence is a uint32"
assert TXN_SEQ_MAX <= 2**32 - 1
assert TERMINAL_ID_MAX < 2**32, "derive_terminal_key packs terminal_id as a uint32"
assert CARD_NO_MAX <= 2**63 - 1, "card numbers are int64 in the ledger and PostgreSQL"
# Sums of TXN_SEQ_MAX amounts cannot overflow int64 (style.md, "Money is int64 fen").
assert AMOUNT_FEN_MAX * TXN_SEQ_MAX < 2**63 - 1
# The largest message (an Error with a full detail in 4-byte UTF-8, or a SignOnConfirm with full
# firmware) fits in a frame with room to spare: a valid message never hits FRAME_BYTES_MAX.
assert LENGTH_FIELD_BYTES + HEADER_BYTES + 64 + 4 * DETAIL_CHARS_MAX + MAC_BYTES < FRAME_BYTES_MAX
assert LENGTH_FIELD_BYTES + HEADER_BYTES + 64 + 4 * FIRMWARE_CHARS_MAX + MAC_BYTES < FRAME_BYTES_MAX
assert 0 < MAC_BYTES <= 32, "MAC is a truncated HMAC-SHA-256"
assert NONCE_BYTES >= 16
assert 0 < TXN_SEQ_WINDOW < TXN_SEQ_MAX
assert 0 < QR_CLOCK_SKEW_SECONDS < QR_LIFETIME_SECONDS_MAX < 2**16
assert QR_MAC_BYTES >= 8 and QR_NONCE_BYTES >= 8
assert (ACCESS_ENTRIES_PER_FRAME_MAX * 34 + TIME_ZONES_MAX * (INTERVALS_MAX * 8 + 8)
        + HOLIDAYS_MAX * 5 + 64 < FRAME_LENGTH_MAX - HEADER_BYTES - MAC_BYTES), \
    "the largest snapshot part fits a frame"
assert OFFLINE_RECORDS_PER_UPLOAD_MAX * 40 + 64 < FRAME_LENGTH_MAX - HEADER_BYTES - MAC_BYTES, \
    "the largest upload fits a frame"
