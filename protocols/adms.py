"""The ZKTeco ADMS ("iclock") push protocol's text bodies: sans-IO parsing and formatting.

Attendance and door terminals that speak ADMS are HTTP clients: they poll the server and push
their records as tab-separated text. This module turns those bodies into Structs and back; it
never touches a socket or a clock. docs/adms.md is the subset we serve and its limits; the
HTTP side is admin_api/adms/.

    records = parse_attlog(body)          # AdmsError on a bad line: the whole upload refused
    text = format_commands([(7, user_update(pin="17", name="Li Lei", card_no=91000))])
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

import msgspec

RECORDS_PER_UPLOAD_MAX: Final = 10_000
"""ATTLOG lines in one POST; more is refused whole (a device sends at most a few hundred)."""
BODY_BYTES_MAX: Final = 1024 * 1024
"""Bytes of one device POST body."""
COMMANDS_PER_POLL_MAX: Final = 20
"""Commands handed out by one /iclock/getrequest."""
LINE_CHARS_MAX: Final = 512
PIN_CHARS_MAX: Final = 24
NAME_CHARS_MAX: Final = 24
"""A device's user name field (longer names are cut: the device would cut them too)."""

_SERIAL = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_PIN = re.compile(r"^[0-9A-Za-z]{1,24}$")


class AdmsError(ValueError):
    """A body that is not what the protocol says: the upload is refused whole."""


class AttRecord(msgspec.Struct, frozen=True):
    """One ATTLOG line: user PIN, the device's local time, status (check in/out...), verify
    mode (fingerprint, card, face...), work code."""

    pin: str
    local_time: dt.datetime
    status: int = 0
    verify: int = 0
    work_code: int = 0


class CommandReply(msgspec.Struct, frozen=True):
    """One line of /iclock/devicecmd: the command id and the device's return code (0 ok)."""

    command_id: int
    return_code: int
    command: str = ""


def valid_serial(serial_no: str | None) -> bool:
    return serial_no is not None and _SERIAL.match(serial_no) is not None


def _int(text: str, what: str, line_no: int) -> int:
    text = text.strip()
    if not text:
        return 0
    if not (text.lstrip("-").isascii() and text.lstrip("-").isdigit() and len(text) <= 9):
        raise AdmsError(f"line {line_no}: {what} {text[:16]!r} is not a number")
    return int(text)


def _lines(body: str) -> list[str]:
    if len(body) > BODY_BYTES_MAX:
        raise AdmsError(f"body above {BODY_BYTES_MAX} bytes")
    lines = [ln for ln in body.replace("\r\n", "\n").split("\n") if ln.strip()]
    if len(lines) > RECORDS_PER_UPLOAD_MAX:
        raise AdmsError(f"{len(lines)} lines: at most {RECORDS_PER_UPLOAD_MAX} per upload")
    for i, ln in enumerate(lines, 1):
        if len(ln) > LINE_CHARS_MAX:
            raise AdmsError(f"line {i}: longer than {LINE_CHARS_MAX} characters")
    return lines


def parse_attlog(body: str) -> list[AttRecord]:
    """The records of a `table=ATTLOG` upload: `PIN<TAB>YYYY-MM-DD HH:MM:SS<TAB>status<TAB>
    verify<TAB>workcode...` per line (fields after the fifth are ignored)."""
    out = []
    for i, line in enumerate(_lines(body), 1):
        fields = line.split("\t")
        if len(fields) < 2:
            raise AdmsError(f"line {i}: needs at least PIN and time")
        pin = fields[0].strip()
        if not _PIN.match(pin):
            raise AdmsError(f"line {i}: PIN {pin[:30]!r} is not 1..{PIN_CHARS_MAX} letters or "
                            "digits")
        try:
            at = dt.datetime.strptime(fields[1].strip(), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise AdmsError(f"line {i}: time {fields[1][:30]!r} is not YYYY-MM-DD HH:MM:SS"
                            ) from None
        rest = [_int(f, name, i) for f, name in zip(fields[2:5], ("status", "verify",
                                                                   "work code"), strict=False)]
        out.append(AttRecord(pin, at, *rest))
    return out


def parse_devicecmd(body: str) -> list[CommandReply]:
    """`ID=<id>&Return=<code>&CMD=<name>` per line."""
    out = []
    for i, line in enumerate(_lines(body), 1):
        fields = dict(part.split("=", 1) for part in line.strip().split("&") if "=" in part)
        if "ID" not in fields or "Return" not in fields:
            raise AdmsError(f"line {i}: needs ID= and Return=")
        command_id = _int(fields["ID"], "ID", i)
        if command_id < 1:
            raise AdmsError(f"line {i}: ID must be positive")
        out.append(CommandReply(command_id, _int(fields["Return"], "Return", i),
                                fields.get("CMD", "")[:32]))
    return out


def format_options(serial_no: str, *, attlog_stamp: int, operlog_stamp: int,
                   utc_offset_s: int, delay_s: int = 10) -> str:
    """The answer to a device's first GET /iclock/cdata: where to resume and how to behave.
    Realtime=1 (push each record at once), TransFlag asks for attendance and user changes."""
    hours = utc_offset_s // 3600
    return "\n".join([
        f"GET OPTION FROM: {serial_no}",
        f"ATTLOGStamp={attlog_stamp}",
        f"OPERLOGStamp={operlog_stamp}",
        "ATTPHOTOStamp=None",
        "ErrorDelay=30",
        f"Delay={delay_s}",
        "TransTimes=00:00;14:05",
        "TransInterval=1",
        "TransFlag=TransData AttLog OpLog EnrollUser ChgUser",
        f"TimeZone={hours}",
        "Realtime=1",
        "Encrypt=None",
        "",
    ])


def _clean(value: str, chars_max: int) -> str:
    """A field value a device line can carry: no tab, newline or '=' separators."""
    return re.sub(r"[\t\r\n=&]", " ", value)[:chars_max]


def user_update(*, pin: str, name: str, card_no: int | None, privilege: int = 0) -> str:
    """The command that creates or changes a user on the device (DATA UPDATE USERINFO)."""
    if not _PIN.match(pin):
        raise ValueError(f"bad PIN {pin!r}")
    card = "" if card_no is None else str(card_no)
    return (f"DATA UPDATE USERINFO PIN={pin}\tName={_clean(name, NAME_CHARS_MAX)}\t"
            f"Pri={privilege}\tPasswd=\tCard={card}\tGrp=1\tTZ=0000000000000000\tVerify=-1")


def user_delete(*, pin: str) -> str:
    if not _PIN.match(pin):
        raise ValueError(f"bad PIN {pin!r}")
    return f"DATA DELETE USERINFO PIN={pin}"


def format_commands(commands: list[tuple[int, str]]) -> str:
    """The answer to /iclock/getrequest: `C:<id>:<command>` per line, or "OK" for none."""
    if not commands:
        return "OK"
    return "".join(f"C:{cid}:{text}\n" for cid, text in commands)


def parse_commands(text: str) -> list[tuple[int, str]]:
    """The device side of format_commands (the emulator uses it)."""
    if text.strip() == "OK":
        return []
    out = []
    for line in text.splitlines():
        if not line.startswith("C:"):
            raise AdmsError(f"not a command line: {line[:40]!r}")
        _, cid, command = line.split(":", 2)
        out.append((int(cid), command))
    return out


def parse_user_command(command: str) -> dict[str, str]:
    """The fields of a DATA UPDATE/DELETE USERINFO command (the emulator applies them)."""
    head, _, rest = command.partition(" USERINFO ")
    fields = dict(f.split("=", 1) for f in rest.split("\t") if "=" in f)
    fields["op"] = head.split()[1] if len(head.split()) > 1 else ""
    return fields
