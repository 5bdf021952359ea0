"""The ZKTeco ADMS ("iclock") push protocol's text bodies: sans-IO parsing and formatting.

Attendance and door terminals that speak ADMS are HTTP clients: they poll the server and push
their records as tab-separated text. This module turns those bodies into Structs and back; it
never touches a socket or a clock. docs/adms.md is the subset we serve and its limits; the
HTTP side is admin_api/adms/.

    records = parse_attlog(body)          # AdmsError on a bad line: the whole upload refused
    text = format_commands([(7, user_update(pin="17", name="Li Lei", card_no=91000))])
    upload = parse_templates(body)        # FP / FACE / BIODATA lines of an OPERLOG upload
    command = template_update(template, dialect="biodata")

Biometric templates are opaque bytes: nothing here decodes them beyond base64, and a
Template's repr never shows them (they are personal data and must not reach a log).
"""

from __future__ import annotations

import base64
import binascii
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
TEMPLATE_BYTES_MAX: Final = 64 * 1024
"""Bytes of one biometric template (a fingerprint is ~1-2 KiB, a face ~2-8 KiB)."""
TEMPLATE_TEXT_CHARS_MAX: Final = (TEMPLATE_BYTES_MAX + 2) // 3 * 4
"""Its base64 text: 87,384 characters."""
TEMPLATE_LINE_CHARS_MAX: Final = TEMPLATE_TEXT_CHARS_MAX + 512
"""An upload line carrying a template (FP, FACE, BIODATA): the template and its fields."""
COMMAND_CHARS_MAX: Final = 90_000
"""One queued command (a template command is the longest)."""
POLL_CHARS_MAX: Final = 256 * 1024
"""Characters of one /iclock/getrequest answer: fewer commands when they are long (always at
least one), so a device's small HTTP buffer is never overrun."""
COMMAND_ATTEMPTS_MAX: Final = 5
"""Hand-outs of one command before it is 'failed': a refusal (Return other than 0) or a
command handed out and never acknowledged counts one each."""
BIO_TYPES: Final = {0: "face_photo", 1: "fingerprint", 2: "face", 9: "face_visible"}
"""Kinds served: the ADMS biometric `Type` values fingerprint (1), near-infrared face (2),
visible-light face (9); and 0, ours, for a comparison photo (the BIOPHOTO table: a JPEG a
visible-light face device makes its template from, whatever its algorithm version)."""
PHOTO: Final = 0
MULTI_BIO_DATA_SUPPORT: Final = ":".join("1" if t in BIO_TYPES and t else "0" for t in range(10))
"""`0:1:1:0:0:0:0:0:0:1`: a flag per biometric Type 0..9, the types a push 3.x device should
upload and accept (fingerprint, near-infrared face, visible-light face)."""
PHOTO_FOR_TYPE: Final = 9
"""The biometric Type a comparison photo is for, in BIOPHOTO commands."""
FINGER_NO_MAX: Final = 9
TEMPLATE_INDEX_MAX: Final = 15

_SERIAL = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_PIN = re.compile(r"^[0-9A-Za-z]{1,24}$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


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


def _lines(body: str, line_chars_max: int = LINE_CHARS_MAX) -> list[str]:
    if len(body) > BODY_BYTES_MAX:
        raise AdmsError(f"body above {BODY_BYTES_MAX} bytes")
    lines = [ln for ln in body.replace("\r\n", "\n").split("\n") if ln.strip()]
    if len(lines) > RECORDS_PER_UPLOAD_MAX:
        raise AdmsError(f"{len(lines)} lines: at most {RECORDS_PER_UPLOAD_MAX} per upload")
    for i, ln in enumerate(lines, 1):
        if len(ln) > line_chars_max:
            raise AdmsError(f"line {i}: longer than {line_chars_max} characters")
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
    Realtime=1 (push each record at once), TransFlag asks for attendance, user changes and
    enrolled fingerprints and faces; MultiBioDataSupport names the biometric types we keep."""
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
        "TransFlag=TransData AttLog OpLog EnrollUser ChgUser EnrollFP ChgFP FACE",
        f"MultiBioDataSupport={MULTI_BIO_DATA_SUPPORT}",
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


# -- biometric templates ---------------------------------------------------------------------

DIALECTS: Final = ("legacy", "biodata")
"""How a device takes templates: 'legacy' FINGERTMP (fingerprints) and FACE (near-infrared
faces), or 'biodata' the unified BIODATA table (every type, visible-light faces included)."""


class Template(msgspec.Struct, frozen=True):
    """One template of one user: its slot (PIN, ADMS Type, finger number, index), the
    algorithm's version and format, and the bytes (opaque)."""

    pin: str
    bio_type: int
    no: int = 0
    idx: int = 0
    major_ver: int = 0
    minor_ver: int = 0
    format: int = 0
    data: bytes = b""

    def __repr__(self) -> str:
        return (f"Template(pin={self.pin!r}, bio_type={self.bio_type}, no={self.no}, "
                f"idx={self.idx}, data=<{len(self.data)} bytes>)")

    __str__ = __repr__


class TemplateUpload(msgspec.Struct, frozen=True):
    """What an OPERLOG (or BIODATA) upload carried: the templates to store, and the count of
    lines acknowledged without being stored (users, operation log, photos, unserved types,
    templates marked invalid)."""

    templates: list[Template]
    other_lines: int


def _fields(rest: str) -> dict[str, str]:
    """`Key=value<TAB>Key=value...` with keys lower-cased and stripped (firmware spells them
    `PIN`, `Pin`, even `MinorVer `)."""
    out = {}
    for part in rest.split("\t"):
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip().lower()] = value.strip()
    return out


def _small(fields: dict[str, str], key: str, line_no: int, high: int) -> int:
    value = _int(fields.get(key, ""), key, line_no)
    if not 0 <= value <= high:
        raise AdmsError(f"line {line_no}: {key} {value} is not 0..{high}")
    return value


def decode_template(text: str, line_no: int = 0) -> bytes:
    """The bytes of a base64 template field; AdmsError if it is not base64 or too long."""
    if len(text) > TEMPLATE_TEXT_CHARS_MAX:
        raise AdmsError(f"line {line_no}: template above {TEMPLATE_BYTES_MAX} bytes")
    if not text or _BASE64.match(text) is None or len(text) % 4:
        raise AdmsError(f"line {line_no}: template is not base64")
    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise AdmsError(f"line {line_no}: template is not base64") from None
    if not 1 <= len(data) <= TEMPLATE_BYTES_MAX:
        raise AdmsError(f"line {line_no}: template is not 1..{TEMPLATE_BYTES_MAX} bytes")
    return data


def parse_templates(body: str) -> TemplateUpload:
    """The templates of an upload (`table=OPERLOG`, `BIODATA` or `BIOPHOTO`): `FP PIN=..<TAB>
    FID=..<TAB>Size=..<TAB>Valid=..<TAB>TMP=..`, `FACE PIN=..<TAB>FID=..<TAB>...<TAB>TMP=..`,
    `BIODATA Pin=..<TAB>No=..<TAB>Index=..<TAB>Valid=..<TAB>Duress=..<TAB>Type=..<TAB>MajorVer=..
    <TAB>MinorVer=..<TAB>Format=..<TAB>Tmp=..` and `BIOPHOTO PIN=..<TAB>FileName=..<TAB>Type=9
    <TAB>Size=..<TAB>Content=..` lines; any other line (USER, OPLOG, USERPIC...) is counted, not
    parsed. A malformed template line refuses the whole upload."""
    templates: list[Template] = []
    other = 0
    for i, line in enumerate(_lines(body, TEMPLATE_LINE_CHARS_MAX), 1):
        head, _, rest = line.strip().partition(" ")
        head = head.upper()
        if head not in ("FP", "FACE", "BIODATA", "BIOPHOTO"):
            other += 1
            continue
        fields = _fields(rest)
        if head == "BIOPHOTO":
            # The photo's own Type is the biometric it is for: only visible-light faces.
            if fields.get("type", str(PHOTO_FOR_TYPE)) != str(PHOTO_FOR_TYPE):
                other += 1
                continue
            fields["tmp"] = fields.get("content", "")
        pin = fields.get("pin", "")
        if not _PIN.match(pin):
            raise AdmsError(f"line {i}: PIN {pin[:30]!r} is not 1..{PIN_CHARS_MAX} letters or "
                            "digits")
        if head == "BIOPHOTO":
            bio_type, no, idx = PHOTO, 0, 0
            versions = (0, 0, 0)
        elif head == "FP":
            bio_type, no, idx = 1, _small(fields, "fid", i, FINGER_NO_MAX), 0
            versions = (0, 0, 0)
        elif head == "FACE":
            bio_type, no, idx = 2, 0, _small(fields, "fid", i, TEMPLATE_INDEX_MAX)
            versions = (0, 0, 0)
        else:
            bio_type = _int(fields.get("type", ""), "Type", i)
            no = _small(fields, "no", i, FINGER_NO_MAX)
            idx = _small(fields, "index", i, TEMPLATE_INDEX_MAX)
            versions = (_small(fields, "majorver", i, 999), _small(fields, "minorver", i, 999),
                        _small(fields, "format", i, 99))
        data = decode_template(fields.get("tmp", ""), i)
        if bio_type not in BIO_TYPES or fields.get("valid", "1") == "0":
            other += 1
            continue
        if bio_type != 1:
            no = 0
        templates.append(Template(pin, bio_type, no, idx, *versions, data=data))
    return TemplateUpload(templates, other)


def template_update(t: Template, *, dialect: str) -> str | None:
    """The command that puts the template (or comparison photo) on a device of that dialect;
    None when the dialect cannot carry its type (a visible-light face or a photo on a legacy
    device). `Size` is the length of the base64 text."""
    if not _PIN.match(t.pin):
        raise ValueError("bad PIN")
    tmp = base64.b64encode(t.data).decode("ascii")
    if t.bio_type == PHOTO:
        if dialect != "biodata":
            return None
        return (f"DATA UPDATE BIOPHOTO PIN={t.pin}\tType={PHOTO_FOR_TYPE}\tSize={len(tmp)}\t"
                f"Content={tmp}\tFormat=0\tUrl=\tPostBackTmpFlag=0")
    if dialect == "biodata":
        return (f"DATA UPDATE BIODATA Pin={t.pin}\tNo={t.no}\tIndex={t.idx}\tValid=1\t"
                f"Duress=0\tType={t.bio_type}\tMajorVer={t.major_ver}\tMinorVer={t.minor_ver}\t"
                f"Format={t.format}\tTmp={tmp}")
    if t.bio_type == 1:
        return f"DATA UPDATE FINGERTMP PIN={t.pin}\tFID={t.no}\tSize={len(tmp)}\tValid=1\tTMP={tmp}"
    if t.bio_type == 2:
        return f"DATA UPDATE FACE PIN={t.pin}\tFID={t.idx}\tSize={len(tmp)}\tValid=1\tTMP={tmp}"
    return None


def template_delete(*, pin: str, bio_type: int, no: int, idx: int, dialect: str) -> str | None:
    """The command that removes one slot from a device (legacy FACE: every face template of
    the user, the old table has no finer delete); None when the dialect has no such slot."""
    if not _PIN.match(pin):
        raise ValueError("bad PIN")
    if bio_type == PHOTO:
        return f"DATA DELETE BIOPHOTO PIN={pin}" if dialect == "biodata" else None
    if dialect == "biodata":
        return f"DATA DELETE BIODATA Pin={pin}\tType={bio_type}\tNo={no}\tIndex={idx}"
    if bio_type == 1:
        return f"DATA DELETE FINGERTMP PIN={pin}\tFID={no}"
    if bio_type == 2:
        return f"DATA DELETE FACE PIN={pin}"
    return None


_TEMPLATE_FIELD = re.compile(r"\t(TMP|Tmp|Content)=[^\t]*")


def command_summary(command: str) -> str:
    """The command without its template (what may be shown, and kept once acknowledged)."""
    return _TEMPLATE_FIELD.sub(lambda m: f"\t{m.group(1)}=<{len(m.group(0)) - len(m.group(1)) - 2}"
                               " chars>", command)[:512]


def parse_data_command(command: str) -> tuple[str, str, dict[str, str]]:
    """(`UPDATE`/`DELETE`, table, fields with lower-cased keys) of a `DATA ...` command (the
    emulator applies them); AdmsError for another command."""
    words = command.split(" ", 3)
    if len(words) < 3 or words[0] != "DATA":
        raise AdmsError(f"not a DATA command: {command[:40]!r}")
    return words[1], words[2].upper(), _fields(words[3] if len(words) > 3 else "")
