"""Our ISO 8583 field specification, as data (docs/bank-link.md, "Fields").

`FIELDS` is the one table: for each field we use, its name, its ISO 8583 format and its length
rule. `SPEC` is the same table in the form `pyiso8583` reads, and the docs' field table is
checked against `FIELDS` by tests/test_bank_link_docs.py. A field not in this table is refused.

Formats: `n` digits, `an` letters and digits, `ans` printable ASCII (0x20-0x7E), `b` bytes.
Lengths: fixed, or LLVAR/LLLVAR with an ASCII decimal length prefix (2 or 3 digits) counting
bytes.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec


class FieldSpec(msgspec.Struct, frozen=True):
    number: int
    name: str
    format: str
    """"n", "an", "ans" or "b"."""
    length: str
    """"fixed", "LLVAR" or "LLLVAR"."""
    max_len: int
    """The length of a fixed field, the largest length of a variable one, in bytes."""


FIELDS: Final[tuple[FieldSpec, ...]] = (
    FieldSpec(3, "processing code", "n", "fixed", 6),
    FieldSpec(4, "amount, transaction (fen)", "n", "fixed", 12),
    FieldSpec(7, "transmission date and time, UTC (MMDDhhmmss)", "n", "fixed", 10),
    FieldSpec(11, "systems trace audit number (STAN)", "n", "fixed", 6),
    FieldSpec(12, "date and time, local transaction (YYMMDDhhmmss)", "n", "fixed", 12),
    FieldSpec(37, "retrieval reference number (RRN)", "an", "fixed", 12),
    FieldSpec(38, "authorization code", "an", "fixed", 6),
    FieldSpec(39, "response code", "an", "fixed", 2),
    FieldSpec(41, "card acceptor terminal id", "n", "fixed", 8),
    FieldSpec(42, "card acceptor id (tenant id)", "n", "fixed", 15),
    FieldSpec(44, "additional response data (reason)", "ans", "LLVAR", 25),
    FieldSpec(49, "currency code, transaction", "n", "fixed", 3),
    FieldSpec(53, "security related control information (MAC key generation)", "n", "fixed",
              16),
    FieldSpec(70, "network management information code", "n", "fixed", 3),
    FieldSpec(73, "date, action (business date, YYMMDD)", "n", "fixed", 6),
    FieldSpec(90, "original data elements", "n", "fixed", 42),
    FieldSpec(102, "account identification 1 (bank card token)", "ans", "LLVAR", 28),
    FieldSpec(103, "account identification 2 (OneCard account)", "ans", "LLVAR", 28),
    FieldSpec(120, "wrapped MAC key (RFC 3394)", "b", "LLLVAR", 64),
    FieldSpec(128, "message authentication code", "b", "fixed", 8),
)
FIELD_BY_NUMBER: Final = {f.number: f for f in FIELDS}

_LEN_TYPE = {"fixed": 0, "LLVAR": 2, "LLLVAR": 3}


def _pyiso_field(f: FieldSpec) -> dict[str, Any]:
    return {
        "data_enc": "b" if f.format == "b" else "ascii",
        "len_enc": "ascii",
        "len_type": _LEN_TYPE[f.length],
        "max_len": f.max_len,
        "desc": f.name,
    }


SPEC: Final[dict[str, dict[str, Any]]] = {
    "h": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 0,
          "desc": "no header"},
    "t": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 4,
          "desc": "message type indicator"},
    "p": {"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 8,
          "desc": "primary bitmap"},
    "1": {"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 8,
          "desc": "secondary bitmap"},
    **{str(f.number): _pyiso_field(f) for f in FIELDS},
}
"""The table above as pyiso8583 reads it: no header, ASCII MTI, binary bitmaps."""
