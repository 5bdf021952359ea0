"""The bank's daily top-up file (docs/bank-link.md has its layout; docs/finance.md the import).

    business_date,rrn,stan,terminal_id,card_token,amount_fen,field39,auth_code
    2026-12-01,000000000001,000001,7,tok-41a9,5000,00,A1B2C3

One line per top-up the bank approved and did not reverse, UTF-8, LF line ends. `read_bank_file`
checks every line before anything is written and raises `BankFileError` with every problem
found (up to ERRORS_SHOWN_MAX), each naming its line: a file is taken whole or not at all.
Pure: no I/O, no database; the route and `onecard reconcile` share it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Final

import msgspec

HEADER: Final = "business_date,rrn,stan,terminal_id,card_token,amount_fen,field39,auth_code"
COLUMNS: Final = tuple(HEADER.split(","))
BANK_FILE_BYTES_MAX: Final = 16 * 1024 * 1024
"""Bytes of one file: 200,000 lines of about 70 bytes are 14 MB."""
BANK_FILE_LINES_MAX: Final = 200_000
"""Data lines of one file (the header not counted): a day of 18 kiosks at one top-up every
five seconds each is about 300,000 at most; a site that tops up more splits by tenant."""
AMOUNT_FEN_MAX: Final = 10_000_000_000
"""fen of one line (100 million yuan): anything above is a broken number, not a top-up."""
ERRORS_SHOWN_MAX: Final = 100
"""Problems listed in one refusal (the count says how many there were)."""
APPROVED: Final = "00"

_RRN: Final = re.compile(r"[0-9A-Za-z]{1,12}")
_DIGITS: Final = re.compile(r"[0-9]{1,10}")
_TOKEN: Final = re.compile(r"[\x21-\x7e]{1,64}")
"""Field 102 as the bank sends it: printable ASCII, no space (and no comma: the separator)."""
_AUTH: Final = re.compile(r"[0-9A-Za-z ]{0,6}")
_DATE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class BankLine(msgspec.Struct, frozen=True):
    line_no: int
    """The file's line number (the header is line 1)."""
    rrn: str
    stan: int
    terminal_id: int
    card_token: str
    amount_fen: int
    field39: str
    auth_code: str


class BankFile(msgspec.Struct, frozen=True):
    business_date: dt.date
    sha256: bytes
    lines: list[BankLine]

    @property
    def total_fen(self) -> int:
        return sum(line.amount_fen for line in self.lines)


class BankFileProblem(msgspec.Struct, frozen=True):
    line: int
    """1 is the header; 0: the file as a whole."""
    message: str


class BankFileError(Exception):
    """The file is refused, whole: `problems` says why, line by line."""

    def __init__(self, problems: list[BankFileProblem], count: int | None = None) -> None:
        self.problems = problems[:ERRORS_SHOWN_MAX]
        self.count = count if count is not None else len(problems)
        first = problems[0]
        where = f"line {first.line}: " if first.line else ""
        more = f" (and {self.count - 1} more)" if self.count > 1 else ""
        super().__init__(f"{where}{first.message}{more}")


def read_bank_file(data: bytes, business_date: dt.date) -> BankFile:
    """The file's lines, every one checked, for the business day it must be of."""

    def refuse(message: str) -> BankFileError:
        return BankFileError([BankFileProblem(0, message)])

    if len(data) > BANK_FILE_BYTES_MAX:
        raise refuse(f"the file is {len(data)} bytes, more than {BANK_FILE_BYTES_MAX}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise refuse(f"not UTF-8 (byte {exc.start})") from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a BOM some tools write: harmless, not data
    if "\r" in text:
        raise refuse("line ends must be LF alone: the file has CR characters")
    if not text:
        raise refuse("the file is empty: even a day without top-ups has the header line")
    rows = text.split("\n")
    if rows[-1] == "":
        rows.pop()  # the last line's LF
    if rows[0] != HEADER:
        raise BankFileError([BankFileProblem(1, f"the header must be exactly {HEADER!r}")])
    if len(rows) - 1 > BANK_FILE_LINES_MAX:
        raise refuse(f"{len(rows) - 1} lines, more than {BANK_FILE_LINES_MAX}")
    problems: list[BankFileProblem] = []
    lines: list[BankLine] = []
    seen: dict[str, int] = {}
    for n, row in enumerate(rows[1:], start=2):
        before = len(problems)

        def bad(message: str, n: int = n) -> None:
            problems.append(BankFileProblem(n, message))

        cells = row.split(",")
        if len(cells) != len(COLUMNS):
            bad(f"{len(cells)} fields, not {len(COLUMNS)}")
            continue
        date, rrn, stan, terminal, token, amount, field39, auth = cells
        if not _DATE.fullmatch(date):
            bad(f"business_date {date[:20]!r} is not YYYY-MM-DD")
        elif date != business_date.isoformat():
            bad(f"business_date {date} is not the day imported ({business_date})")
        if not _RRN.fullmatch(rrn):
            bad(f"rrn {rrn[:20]!r} is not 1 to 12 letters or digits")
        elif rrn in seen:
            bad(f"rrn {rrn} again (first on line {seen[rrn]})")
        else:
            seen[rrn] = n
        if not (_DIGITS.fullmatch(stan) and 1 <= int(stan) <= 999_999):
            bad(f"stan {stan[:20]!r} is not a number from 1 to 999999")
        if not (_DIGITS.fullmatch(terminal) and 1 <= int(terminal) <= 2**31 - 1):
            bad(f"terminal_id {terminal[:20]!r} is not a terminal number")
        if not _TOKEN.fullmatch(token):
            bad("card_token is not 1 to 64 printable ASCII characters without spaces")
        if not (_DIGITS.fullmatch(amount) and 1 <= int(amount) <= AMOUNT_FEN_MAX):
            bad(f"amount_fen {amount[:20]!r} is not a whole number of fen from 1 to "
                f"{AMOUNT_FEN_MAX}")
        if field39 != APPROVED:
            bad(f"field39 {field39[:20]!r}: the file lists approved top-ups only ({APPROVED})")
        if not _AUTH.fullmatch(auth):
            bad(f"auth_code {auth[:20]!r} is not up to 6 letters or digits")
        if len(problems) == before:
            lines.append(BankLine(n, rrn, int(stan), int(terminal), token, int(amount),
                                  field39, auth))
    if problems:
        raise BankFileError(problems)
    return BankFile(business_date, hashlib.sha256(data).digest(), lines)


def write_bank_file(business_date: dt.date, lines: list[tuple[str, int, int, str, int, str]]
                    ) -> bytes:
    """A file in the bank's layout: (rrn, stan, terminal_id, card_token, amount_fen,
    auth_code) per approved top-up. The simulator's and the demo's."""
    out = [HEADER]
    for rrn, stan, terminal, token, amount, auth in lines:
        out.append(f"{business_date.isoformat()},{rrn},{stan:06d},{terminal},{token},{amount},"
                   f"{APPROVED},{auth}")
    return ("\n".join(out) + "\n").encode()
