"""Import of people (and their first cards) from a CSV or XLSX file: all rows or none.

    POST /people/import            multipart (field "file") or the file as the body
    POST /people/import?dry_run=true

Every row is checked first (its fields, its node and class in the caller's subtree, external
ids, card numbers and chip UIDs unused in the database and in the file); if any row is bad the
answer is 422 with a per-row report and nothing is written. Otherwise every row is applied in
ONE transaction (`_store.change`): accounts, people, cards, an audit row per person and per
card, and the change events (AccountOpened, CardBound) the switches need, in the file's order.
The rows are written set-wise (COPY), not one `create_person_tx` at a time: the same rows, audit
rows and events, about four times faster (docs/admin_api.md, "Import of people").
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import re
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
import msgspec
from litestar import Request, Response, post
from litestar.datastructures import State, UploadFile
from litestar.enums import RequestEncodingType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType

from admin_api._auth import Actor
from admin_api._problems import MEDIA_TYPE, PROBLEM_BASE, Problem, ProblemBody
from admin_api._routes_people import (
    ACCOUNTS_MAX,
    CARD_NO_MAX,
    CardOut,
    PersonOut,
    card_taken,
    chip_taken,
)
from admin_api._store import Change, change, next_id
from admin_api._types import is_ascii_number
from protocols.changes import AccountOpened, CardBound

IMPORT_ROWS_MAX: Final = 50_000
"""Data rows of one file (the header not counted)."""
IMPORT_BODY_MAX: Final = 16 * 1024 * 1024
"""Bytes of one upload: 50,000 rows of every column fit in about 8 MiB of CSV."""
LINES_MAX: Final = 1_048_576
"""Lines of a file, blank ones included (a worksheet's rows in Excel)."""
XLSX_UNPACKED_MAX: Final = 64 * 1024 * 1024
"""Bytes of an XLSX file's parts once unpacked, declared and actual (checked before openpyxl
reads it: a zip bomb is refused unread). 50,000 rows of every column are about 31 MiB."""
XLSX_PART_MAX: Final = 16 * 1024 * 1024
"""Bytes of one part other than a worksheet (the shared strings: openpyxl holds them all)."""
XLSX_PARTS_MAX: Final = 1000
"""Parts (zip members) of one XLSX file."""
XLSX_COLUMNS_MAX: Final = 32
"""Columns of a worksheet that are read; cells to their right are not."""
ERRORS_SHOWN_MAX: Final = 1000
"""Errors listed in a 422 answer; `error_count` counts them all."""

XLSX_MEDIA_TYPE: Final = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
COLUMNS: Final = ("external_id", "name", "node", "class", "phone", "card_no", "printed_no",
                  "chip_uid", "card_type", "valid_until")
REQUIRED: Final = ("name", "node", "class")
ALIASES: Final = {"node_id": "node", "class_id": "class"}
CARD_COLUMNS: Final = ("printed_no", "chip_uid", "card_type", "valid_until")
CARD_TYPES: Final = ("standard", "special_shaped", "electronic_student_id", "temporary")
_CHIP_UID = re.compile(r"[0-9A-F]{8,20}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_READER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onecard-import")
"""Reads uploaded files, one at a time (so one file's memory at a time), and not in the
default executor: that one hashes passwords, and a log-in must not wait for a workbook."""


# -- the answers -------------------------------------------------------------------------------


class RowError(msgspec.Struct, frozen=True):
    row: int
    """The row as a spreadsheet numbers it: the header is row 1, the first person row 2; 0 is
    the file as a whole (not CSV or XLSX, empty)."""
    column: str
    """The column's name as in the header ("" for the whole row or file)."""
    message: str


class ImportProblem(msgspec.Struct, frozen=True):
    """RFC 9457 problem details with the per-row report: nothing was written."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    rows: int
    error_count: int
    errors: list[RowError]


class ImportedPerson(msgspec.Struct, frozen=True):
    row: int
    person_id: int
    account_id: int
    external_id: str | None
    card_no: int | None


class ImportResult(msgspec.Struct, frozen=True):
    dry_run: bool
    """True: every row is valid, and nothing was written."""
    rows: int
    people_created: int
    cards_issued: int
    people: list[ImportedPerson]
    """What each row became (empty on a dry run)."""


class ImportRejected(Exception):
    def __init__(self, rows: int, errors: list[RowError]) -> None:
        super().__init__(f"{len(errors)} errors")
        self.rows = rows
        self.errors = errors


def _rejected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, ImportRejected)
    errors = sorted(exc.errors, key=lambda e: (e.row, COLUMNS.index(e.column)
                                               if e.column in COLUMNS else -1))
    body = ImportProblem(
        type=PROBLEM_BASE + "import-rejected", title="Unprocessable request", status=422,
        detail=f"{len(errors)} error(s) in {exc.rows} row(s); nothing was imported",
        instance=request.url.path, rows=exc.rows, error_count=len(errors),
        errors=errors[:ERRORS_SHOWN_MAX])
    return Response(msgspec.json.encode(body), status_code=422, media_type=MEDIA_TYPE)


# -- reading the file --------------------------------------------------------------------------


@dataclass
class Sheet:
    header: list[str]
    rows: list[tuple[int, list[Any]]]
    """(spreadsheet row number, cells); blank rows left out."""


def _cells_to_sheet(lines: Iterable[Iterable[Any]]) -> Sheet:
    numbered = enumerate(lines, start=1)
    header: list[str] = []
    for _, cells in numbered:
        values = list(cells)
        if any(v not in (None, "") for v in values):
            header = [str(v or "").strip().lstrip("\ufeff").lower() for v in values]
            break
    if not header:
        raise ImportRejected(0, [RowError(0, "", "the file is empty: the first row names the "
                                          "columns, e.g. " + ",".join(COLUMNS[:5]))])
    while header and header[-1] == "":
        header.pop()
    rows: list[tuple[int, list[Any]]] = []
    for n, cells in numbered:  # the same counter: row numbers go on after the header's
        if n > LINES_MAX:
            raise Problem(413, "too-large", f"at most {LINES_MAX} lines per file (blank ones "
                          "included)")
        values = list(cells)
        if values.count(None) == len(values) or all(
                v is None or (isinstance(v, str) and not v.strip()) for v in values):
            continue
        if len(rows) >= IMPORT_ROWS_MAX:
            raise Problem(413, "too-large", f"at most {IMPORT_ROWS_MAX} rows per file; split it")
        rows.append((n, values))
    return Sheet(header, rows)


def read_csv(data: bytes) -> Sheet:
    """UTF-8 (with or without a BOM), else GB18030 (what Excel saves as CSV in China)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("gb18030")
        except UnicodeDecodeError:
            raise ImportRejected(0, [RowError(0, "", "the file is neither UTF-8 nor GB18030 "
                                              "text, nor an XLSX workbook")]) from None
    first_line = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first_line.count)  # what the header is separated by
    try:
        return _cells_to_sheet(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise ImportRejected(0, [RowError(0, "", f"not a CSV file: {exc}")]) from None


def _too_large(what: str, limit: int) -> Problem:
    return Problem(413, "too-large", f"{what}; at most {limit} bytes (an XLSX file of "
                   f"{IMPORT_ROWS_MAX} people unpacks to about 31 MiB)")


def check_unpacked(data: bytes) -> None:
    """The zip's parts within their limits, as declared and as they really unpack (each is
    unpacked here, without keeping it), before openpyxl reads any of them."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            parts = z.infolist()
            if len(parts) > XLSX_PARTS_MAX:
                raise Problem(413, "too-large", f"the workbook has {len(parts)} parts; at most "
                              f"{XLSX_PARTS_MAX}")
            declared = sum(part.file_size for part in parts)
            if declared > XLSX_UNPACKED_MAX:
                raise _too_large(f"the workbook unpacks to {declared} bytes", XLSX_UNPACKED_MAX)
            for part in parts:
                limit = (XLSX_UNPACKED_MAX if part.filename.startswith("xl/worksheets/")
                         else XLSX_PART_MAX)
                if part.file_size > limit:
                    raise _too_large(f"{part.filename} unpacks to {part.file_size} bytes", limit)
                with z.open(part) as f:
                    # zipfile unpacks at most the declared size, a MiB at a time, and at the
                    # end the CRC says whether that was the whole part: openpyxl, which reads
                    # with zipfile too, will never see more.
                    while f.read(1024 * 1024):
                        pass
    except Problem:
        raise
    except Exception as exc:  # a damaged zip: BadZipFile, zlib.error, EOFError, RuntimeError
        # (encrypted), NotImplementedError (an unknown compression), lzma and bz2 errors...
        raise ImportRejected(0, [RowError(0, "", f"not an XLSX workbook: {exc}")]) from None


def read_xlsx(data: bytes) -> Sheet:
    """The first worksheet, its first XLSX_COLUMNS_MAX columns; formulas count with their cached
    values."""
    import openpyxl

    check_unpacked(data)
    try:
        wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds on a damaged file
        raise ImportRejected(0, [RowError(0, "", f"not a readable XLSX workbook: "
                                          f"{type(exc).__name__}")]) from None
    try:
        if not wb.worksheets:
            raise ImportRejected(0, [RowError(0, "", "the workbook has no worksheet")])
        sheet = wb.worksheets[0]
        sheet.reset_dimensions()  # a declared XFD1048576 would pad every row to 16,384 cells
        return _cells_to_sheet(sheet.iter_rows(max_col=XLSX_COLUMNS_MAX, values_only=True))
    finally:
        wb.close()


def read_sheet(data: bytes) -> Sheet:
    if data.startswith(b"PK\x03\x04"):
        return read_xlsx(data)
    return read_csv(data)


# -- checking the rows -------------------------------------------------------------------------


@dataclass
class NewCard:
    card_no: int
    printed_no: str = ""
    chip_uid: str | None = None
    card_type: str = "standard"
    valid_until: dt.date | None = None


@dataclass
class NewPerson:
    """A person to create, checked: node and class resolved, in the caller's subtree."""

    row: int
    name: str
    node_id: int
    tenant_id: int
    path: list[int]
    class_id: int
    external_id: str | None = None
    phone: str = ""
    card: NewCard | None = None


@dataclass
class _Row:
    n: int
    cells: dict[str, str]
    errors: list[RowError] = field(default_factory=list)

    def error(self, column: str, message: str) -> None:
        self.errors.append(RowError(self.n, column, message))


def _text(value: Any) -> str:
    """A cell as text: numbers without a spurious ".0", dates as ISO dates."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return repr(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value).strip()


class Directory:
    """The caller's subtree (nodes by id and by path of names) and the identity classes."""

    def __init__(self, actor: Actor, nodes: list[asyncpg.Record], names: dict[int, str],
                 classes: list[asyncpg.Record]) -> None:
        self.actor = actor
        self.nodes = {r["id"]: r for r in nodes}
        self.by_path: dict[str, set[int]] = {}
        for r in nodes:
            path = list(r["path"])
            full = [names[i] for i in path]  # from the platform
            mine = [names[i] for i in path[path.index(actor.node_id) + 1:]]  # below the caller
            for key in {_path_key(full), _path_key(full[1:]), _path_key(mine)} - {""}:
                self.by_path.setdefault(key, set()).add(r["id"])
        self.classes = {r["id"]: r["name"] for r in classes}
        self.class_by_name: dict[str, set[int]] = {}
        for r in classes:
            self.class_by_name.setdefault(r["name"].strip().casefold(), set()).add(r["id"])

    @classmethod
    async def load(cls, conn: asyncpg.Connection | asyncpg.Pool, actor: Actor) -> Directory:
        nodes = await conn.fetch(
            "SELECT id, kind, name, tenant_id, path FROM org_nodes WHERE $1 = ANY(path)",
            actor.node_id)
        ids = {i for r in nodes for i in r["path"]}
        names = {r["id"]: r["name"] for r in await conn.fetch(
            "SELECT id, name FROM org_nodes WHERE id = ANY($1::integer[])", list(ids))}
        classes = await conn.fetch("SELECT id, name FROM identity_classes")
        return cls(actor, nodes, names, classes)

    def node(self, ref: str) -> tuple[asyncpg.Record | None, str]:
        if is_ascii_number(ref):
            found = self.nodes.get(int(ref))
            return found, "" if found else f"no node {ref} in your part of the organisation"
        ids = self.by_path.get(_path_key(ref.split("/")), set())
        if len(ids) > 1:
            return None, (f"{ref!r} names {len(ids)} nodes (ids "
                          f"{', '.join(map(str, sorted(ids)))}): give the id")
        if not ids:
            return None, f"no node {ref!r} in your part of the organisation"
        return self.nodes[next(iter(ids))], ""

    def class_id(self, ref: str) -> tuple[int | None, str]:
        if is_ascii_number(ref):
            return (int(ref), "") if int(ref) in self.classes else (
                None, f"no identity class {ref}")
        ids = self.class_by_name.get(ref.strip().casefold(), set())
        if len(ids) != 1:
            return None, (f"no identity class named {ref!r}" if not ids
                          else f"{ref!r} names several identity classes: give the id")
        return next(iter(ids)), ""


def _path_key(names: list[str]) -> str:
    return "/".join(" ".join(n.split()).casefold() for n in names)


def check_header(header: list[str]) -> tuple[list[str], list[RowError]]:
    columns = [ALIASES.get(h, h) for h in header]
    errors = []
    seen: set[str] = set()
    for i, name in enumerate(columns):
        if name == "":
            errors.append(RowError(1, "", f"column {i + 1} has no name"))
        elif name not in COLUMNS:
            errors.append(RowError(1, name, f"unknown column {header[i]!r}; the columns are "
                                   + ", ".join(COLUMNS)))
        elif name in seen:
            errors.append(RowError(1, name, f"column {name!r} appears twice"))
        seen.add(name)
    errors += [RowError(1, name, f"column {name!r} is missing") for name in REQUIRED
               if name not in seen]
    return columns, errors


def check_row(row: _Row, directory: Directory) -> NewPerson | None:
    """The row's own fields, its node and class; None when it has an error (in row.errors).
    What the database would refuse is refused here, so a dry run answers as the import would."""
    c = row.cells
    for column, text in c.items():
        if control := _CONTROL.search(text):
            row.error(column, f"a control character (U+{ord(control.group()):04X}) is not "
                      "allowed")
    name = c.get("name", "")
    if not name:
        row.error("name", "a name is required")
    elif len(name) > 200:
        row.error("name", "at most 200 characters")
    external_id = c.get("external_id") or None
    if external_id is not None and len(external_id) > 64:
        row.error("external_id", "at most 64 characters")
    phone = c.get("phone", "")
    if len(phone) > 32:
        row.error("phone", "at most 32 characters")
    node, tenant_id, path = None, 0, []
    if not c.get("node"):
        row.error("node", "a node (its id, or its path of names like Campus/Physics) is "
                  "required")
    else:
        node, message = directory.node(c["node"])
        if node is None:
            row.error("node", message)
        elif node["tenant_id"] is None:
            row.error("node", f"people belong to a tenant or one of its departments, not to "
                      f"a {node['kind']}")
            node = None
        else:
            tenant_id, path = node["tenant_id"], list(node["path"])
    class_id = None
    if not c.get("class"):
        row.error("class", "an identity class (its id or name) is required")
    else:
        class_id, message = directory.class_id(c["class"])
        if class_id is None:
            row.error("class", message)
    card = _check_card(row)
    if row.errors or node is None or class_id is None:
        return None
    return NewPerson(row=row.n, name=name, node_id=node["id"], tenant_id=tenant_id, path=path,
                     class_id=class_id, external_id=external_id, phone=phone, card=card)


def _check_card(row: _Row) -> NewCard | None:
    c = row.cells
    raw = c.get("card_no", "")
    if not raw:
        for column in CARD_COLUMNS:
            if c.get(column):
                row.error(column, "a card field without a card_no")
        return None
    card = NewCard(card_no=0)
    if not is_ascii_number(raw, 19):
        hint = (" (a spreadsheet keeps only 15 digits of a number: store card numbers as text)"
                if re.match(r"^[0-9.]+(e\+?[0-9]+)?$", raw, re.I) else "")
        row.error("card_no", f"not a card number: {raw!r}{hint}")
    elif not 1 <= int(raw) <= CARD_NO_MAX:
        row.error("card_no", f"a card number is 1 .. {CARD_NO_MAX}")
    else:
        card.card_no = int(raw)
    card.printed_no = c.get("printed_no", "")
    if len(card.printed_no) > 32:
        row.error("printed_no", "at most 32 characters")
    chip = c.get("chip_uid", "").upper()
    if chip:
        if not _CHIP_UID.fullmatch(chip):
            row.error("chip_uid", "8 to 20 hex digits")
        card.chip_uid = chip
    card_type = c.get("card_type", "") or "standard"
    if card_type not in CARD_TYPES:
        row.error("card_type", "one of " + ", ".join(CARD_TYPES))
    card.card_type = card_type
    valid = c.get("valid_until", "")
    if valid:
        try:
            card.valid_until = dt.date.fromisoformat(valid[:10] if "T" in valid else valid)
        except ValueError:
            row.error("valid_until", f"not a date (YYYY-MM-DD): {valid!r}")
    return card


async def check_unused(conn: asyncpg.Connection | asyncpg.Pool, people: list[NewPerson]
                       ) -> list[RowError]:
    """External ids (per tenant), card numbers and chip UIDs: unused in the database and given
    once in the file."""
    errors: list[RowError] = []
    ext_first: dict[tuple[int, str], int] = {}
    card_first: dict[int, int] = {}
    chip_first: dict[str, int] = {}
    for p in people:
        if p.external_id is not None:
            first = ext_first.setdefault((p.tenant_id, p.external_id), p.row)
            if first != p.row:
                errors.append(RowError(p.row, "external_id", f"external_id {p.external_id!r} "
                                       f"is also in row {first}"))
        if p.card is not None:
            first = card_first.setdefault(p.card.card_no, p.row)
            if first != p.row:
                errors.append(RowError(p.row, "card_no", f"card {p.card.card_no} is also in "
                                       f"row {first}"))
            if p.card.chip_uid is not None:
                first = chip_first.setdefault(p.card.chip_uid, p.row)
                if first != p.row:
                    errors.append(RowError(p.row, "chip_uid", f"chip UID {p.card.chip_uid} is "
                                           f"also in row {first}"))
    taken_ext = {(r["tenant_id"], r["external_id"]) for r in await conn.fetch(
        "SELECT tenant_id, external_id FROM people WHERE external_id = ANY($1::text[])",
        list({e for _, e in ext_first}))}
    taken_cards = {r["card_no"] for r in await conn.fetch(
        "SELECT card_no FROM cards WHERE card_no = ANY($1::bigint[])", list(card_first))}
    taken_chips = {r["chip_uid"] for r in await conn.fetch(
        "SELECT chip_uid FROM cards WHERE chip_uid = ANY($1::text[])", list(chip_first))}
    for key, row in ext_first.items():
        if key in taken_ext:
            errors.append(RowError(row, "external_id", f"external_id {key[1]!r} is taken in "
                                   "this tenant"))
    for card_no, row in card_first.items():
        if card_no in taken_cards:
            errors.append(RowError(row, "card_no", card_taken(card_no)))
    for chip, row in chip_first.items():
        if chip in taken_chips:
            errors.append(RowError(row, "chip_uid", chip_taken(chip)))
    return errors


async def check_sheet(conn: asyncpg.Connection | asyncpg.Pool, actor: Actor, sheet: Sheet
                      ) -> list[NewPerson]:
    """Every row checked; ImportRejected with every error found, else the people to create."""
    columns, errors = check_header(sheet.header)
    if errors:
        raise ImportRejected(len(sheet.rows), errors)
    directory = await Directory.load(conn, actor)
    people: list[NewPerson] = []
    for n, values in sheet.rows:
        if len(values) > len(columns) and any(_text(v) for v in values[len(columns):]):
            errors.append(RowError(n, "", f"{len(values)} cells, but the header names "
                                   f"{len(columns)} columns"))
            continue
        row = _Row(n, {col: _text(v) for col, v in zip(columns, values, strict=False)})
        person = check_row(row, directory)
        errors += row.errors
        if person is not None:
            people.append(person)
    if any(p.card for p in people) and not actor.can("cards.write"):
        raise Problem(403, "forbidden", f"a {actor.role} may not issue cards (cards.write)")
    errors += await check_unused(conn, people)
    if errors:
        raise ImportRejected(len(sheet.rows), errors)
    return people


# -- writing -----------------------------------------------------------------------------------


async def create_people_tx(tx: Change, people: list[NewPerson]
                           ) -> list[tuple[PersonOut, CardOut | None]]:
    """`create_person_tx` (and `_bind_card`) for many people at once, in the caller's
    transaction: the same rows, the same audit rows (person.create, card.issue) and the same
    change events (AccountOpened, then CardBound, person by person), written with COPY.
    Nodes, classes, external ids and cards must have been checked (`check_sheet`)."""
    if not people:
        return []
    conn = tx.conn
    first = await next_id(conn, "accounts", ACCOUNTS_MAX)
    if first + len(people) - 1 > ACCOUNTS_MAX:
        raise Problem(409, "capacity", f"no room for {len(people)} more accounts "
                      f"(at most {ACCOUNTS_MAX})")
    account_ids = range(first, first + len(people))
    person_ids = [r[0] for r in await conn.fetch(
        "SELECT nextval(pg_get_serial_sequence('people', 'id')) FROM generate_series(1, $1)",
        len(people))]
    now = await conn.fetchval("SELECT now()")
    await conn.copy_records_to_table(
        "accounts", columns=["id", "tenant_id", "class_id", "holder_name"],
        records=[(a, p.tenant_id, p.class_id, p.name) for a, p in zip(account_ids, people,
                                                                        strict=True)])
    await conn.copy_records_to_table(
        "people", columns=["id", "node_id", "tenant_id", "external_id", "name", "class_id",
                           "account_id", "phone", "created_at", "updated_at"],
        records=[(i, p.node_id, p.tenant_id, p.external_id, p.name, p.class_id, a, p.phone, now,
                  now) for i, a, p in zip(person_ids, account_ids, people, strict=True)])
    cards = [(p.card.card_no, a, p.card.printed_no, p.card.chip_uid, p.card.card_type,
              p.card.valid_until, now)
             for a, p in zip(account_ids, people, strict=True) if p.card is not None]
    if cards:
        await conn.copy_records_to_table(
            "cards", columns=["card_no", "account_id", "printed_no", "chip_uid", "card_type",
                              "valid_until", "issued_at"], records=cards)
    out: list[tuple[PersonOut, CardOut | None]] = []
    for pid, account_id, p in zip(person_ids, account_ids, people, strict=True):
        person = PersonOut(id=pid, node_id=p.node_id, tenant_id=p.tenant_id, name=p.name,
                           class_id=p.class_id, external_id=p.external_id, phone=p.phone,
                           account_id=account_id, account_status="active")
        tx.audit("person.create", "person", pid, p.path, after=person)
        tx.event(AccountOpened(account_id, p.tenant_id, p.class_id))
        card = None
        if p.card is not None:
            card = CardOut(card_no=p.card.card_no, person_id=pid, account_id=account_id,
                           status="active", account_status="active",
                           printed_no=p.card.printed_no, chip_uid=p.card.chip_uid,
                           card_type=p.card.card_type, valid_until=p.card.valid_until,
                           issued_at=now, cancelled_at=None, cancel_reason=None)
            tx.audit("card.issue", "card", p.card.card_no, p.path, after=card)
            tx.event(CardBound(p.card.card_no, account_id))
        out.append((person, card))
    return out


# -- the route ---------------------------------------------------------------------------------


@dataclass
class _ImportOperation(Operation):
    """The request body is a file, not JSON: document the three ways to send it."""

    def __post_init__(self) -> None:
        binary = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
        self.request_body = RequestBody(
            required=True,
            description="A CSV (UTF-8 or GB18030; comma, semicolon or tab) or XLSX file (its "
                        "first worksheet). The first row names the columns: "
                        + ", ".join(COLUMNS) + "; name, node and class are required.",
            content={
                RequestEncodingType.MULTI_PART: OpenAPIMediaType(schema=Schema(
                    type=OpenAPIType.OBJECT, properties={"file": binary}, required=["file"])),
                "text/csv": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING)),
                XLSX_MEDIA_TYPE: OpenAPIMediaType(schema=binary),
            })


async def _upload(request: Request[Any, Any, Any]) -> bytes:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == RequestEncodingType.MULTI_PART:
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ImportRejected(0, [RowError(0, "", "send the file in the form field "
                                              "\"file\"")])
        return await upload.read()
    if content_type in ("application/json", RequestEncodingType.URL_ENCODED):
        raise Problem(415, "unsupported-media-type", "send a CSV or XLSX file: multipart "
                      "(field \"file\") or as the body (text/csv or " + XLSX_MEDIA_TYPE + ")")
    return await request.body()


@post("/people/import", opt={"permission": "people.write"}, tags=["people"], status_code=200,
      summary="Import people (and their first cards) from CSV or XLSX: every row or none",
      description=(
          "Every row is checked first; if any is bad the answer is 422 with `errors`, one per "
          "problem (`row` as a spreadsheet numbers it, `column`, `message`), and nothing is "
          "written. Otherwise all rows are applied in one transaction, audited and on the "
          f"change feed. `dry_run=true` only checks. At most {IMPORT_ROWS_MAX} rows and "
          f"{IMPORT_BODY_MAX // (1024 * 1024)} MiB. Rows with a card_no need cards.write too."),
      request_max_body_size=IMPORT_BODY_MAX, operation_class=_ImportOperation,
      exception_handlers={ImportRejected: _rejected},
      responses={
          422: ResponseSpec(ImportProblem, media_type=MEDIA_TYPE, generate_examples=False,
                            description="Bad rows (or header, or file): the per-row report; "
                                        "nothing was written"),
          413: ResponseSpec(ProblemBody, media_type=MEDIA_TYPE, generate_examples=False,
                            description=f"More than {IMPORT_ROWS_MAX} rows or "
                                        f"{IMPORT_BODY_MAX} bytes"),
          415: ResponseSpec(ProblemBody, media_type=MEDIA_TYPE, generate_examples=False,
                            description="Not a file (JSON or a URL-encoded form)")})
async def import_people(request: Request[Any, Any, Any], actor: Actor, state: State,
                        dry_run: bool = False) -> ImportResult:
    data = await _upload(request)
    if not data.strip():
        raise ImportRejected(0, [RowError(0, "", "the file is empty")])
    sheet = await asyncio.get_running_loop().run_in_executor(_READER, read_sheet, data)
    if dry_run:
        async with state.pool.acquire() as conn:
            people = await check_sheet(conn, actor, sheet)
        return ImportResult(dry_run=True, rows=len(sheet.rows), people_created=0,
                            cards_issued=0, people=[])
    async with change(state.pool, actor) as tx:
        people = await check_sheet(tx.conn, actor, sheet)
        created = await create_people_tx(tx, people)
    return ImportResult(
        dry_run=False, rows=len(sheet.rows), people_created=len(created),
        cards_issued=sum(card is not None for _, card in created),
        people=[ImportedPerson(row=p.row, person_id=out.id, account_id=out.account_id,
                               external_id=out.external_id,
                               card_no=card.card_no if card else None)
                for p, (out, card) in zip(people, created, strict=True)])


ROUTES = [import_people]
