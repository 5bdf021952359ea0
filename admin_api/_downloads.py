"""Downloads: a list of msgspec Structs as CSV (UTF-8 with a BOM) or XLSX, and the OpenAPI
operation that documents them. Shared by the reports, statements and documents; imports no
route module, so every route module may import it."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
from collections.abc import Sequence
from typing import Any, Final, Literal

import msgspec
from litestar import Response
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Schema,
)

from admin_api._problems import Problem

Format = Literal["json", "csv", "xlsx"]
EXPORT_ROWS_MAX: Final = 100_000
"""The most rows a download of a listing holds (the JSON pages read `limit` at a time)."""


def yuan(fen: int) -> str:
    """Fen as yuan text, from integers only: -1505 -> "-15.05"."""
    whole, cents = divmod(abs(fen), 100)
    return f"{'-' if fen < 0 else ''}{whole}.{cents:02d}"


def _text(value: Any) -> Any:
    """A cell: numbers stay numbers; text that a spreadsheet would run as a formula is quoted."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def table(items: Sequence[msgspec.Struct]) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of a download: the JSON fields in order, each `*_fen` column followed by
    its `*_yuan` twin."""
    if not items:
        return [], []
    fields = list(type(items[0]).__struct_fields__)
    header: list[str] = []
    for f in fields:
        header.append(f)
        if f.endswith("_fen"):
            header.append(f[:-4] + "_yuan")
    rows = []
    for item in items:
        d = msgspec.to_builtins(item)
        row = []
        for f in fields:
            row.append(_text(d[f]))
            if f.endswith("_fen"):
                row.append(yuan(d[f]))
        rows.append(row)
    return header, rows


def _csv(header: list[str], rows: list[list[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return ("\ufeff" + out.getvalue()).encode()  # the BOM: spreadsheets then read UTF-8


def _xlsx(title: str, header: list[str], rows: list[list[Any]]) -> bytes:
    from openpyxl import Workbook
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    def cell(value: Any) -> Any:
        # A spreadsheet's numbers are doubles: integers past 2**53 (long card numbers) as text.
        if isinstance(value, int) and abs(value) >= 2**53:
            return str(value)
        # XML has no control characters but tab, LF and CR: the others (in a title, a name)
        # are shown as U+FFFD, the replacement character, rather than fail the download.
        if isinstance(value, str):
            return ILLEGAL_CHARACTERS_RE.sub("\ufffd", value)
        return value

    wb = Workbook(write_only=True)
    ws = wb.create_sheet(title[:31])
    ws.append(header)
    for row in rows:
        ws.append([cell(v) for v in row])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


_MEDIA = {"csv": "text/csv",  # Litestar adds "; charset=utf-8" to text types
          "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


@dataclasses.dataclass
class DownloadOperation(Operation):
    """The OpenAPI operation of a report: its 200 answer is JSON, or a CSV or XLSX download."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse) and ok.content is not None:
            ok.content["text/csv"] = OpenAPIMediaType(schema=Schema(
                type=OpenAPIType.STRING, description="?format=csv: UTF-8 with a BOM, a header "
                "row, every *_fen column followed by its *_yuan twin"))
            ok.content[_MEDIA["xlsx"]] = OpenAPIMediaType(schema=Schema(
                type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY,
                description="?format=xlsx: one sheet, the CSV's rows"))
            ok.headers = {**(ok.headers or {}), "Content-Disposition": OpenAPIHeader(
                schema=Schema(type=OpenAPIType.STRING),
                description="Downloads: attachment; filename=\"<report>-<from>_<to>.<format>\"")}


async def download(fmt: Format, name: str, items: Sequence[msgspec.Struct],
                   fields: Sequence[str]) -> Response[Any]:
    """A CSV or XLSX file of `items` (or of just a header when there are none)."""

    def build() -> bytes:
        header, rows = table(items)
        if not header:
            header = [h for f in fields for h in ((f, f[:-4] + "_yuan") if f.endswith("_fen")
                                                  else (f,))]
        return _csv(header, rows) if fmt == "csv" else _xlsx(name, header, rows)

    content = await asyncio.to_thread(build)
    return Response(content=content, media_type=_MEDIA[fmt], headers={
        "Content-Disposition": f'attachment; filename="{name}.{fmt}"',
        "Cache-Control": "no-store"})


def rows_wanted(fmt: Format, limit: int) -> int:
    """How many rows a listing answers: a JSON page's `limit`, or all a download may hold.
    Read one more, to know whether more follow (`download_all`'s `more`)."""
    return limit if fmt == "json" else EXPORT_ROWS_MAX


async def download_all(fmt: Format, name: str, items: Sequence[msgspec.Struct],
                       fields: Sequence[str], *, more: bool, what: str) -> Response[Any]:
    """The download of a listing's `items`, all of them (`rows_wanted`); a 422 when `more`
    rows follow: "more than EXPORT_ROWS_MAX `what`" (what they are, and how to narrow them)."""
    if more:
        raise Problem(422, "unprocessable", f"more than {EXPORT_ROWS_MAX} {what}")
    return await download(fmt, name, items, fields)


# -- transactions ----------------------------------------------------------------------------------
