"""Finance routes: the bank's daily file and its reconciliation, exceptions and their
resolution, bank exceptions (advices the bank never acknowledged, _bankexc.py), bank top-ups
and the top-ups the switch refused itself, and journal vouchers for the finance system
(docs/finance.md).

Every route needs finance.read or finance.write and checks the tenant (or the exception) is in
the caller's subtree (404 otherwise). What changes something is audited. No route here moves
money: a resolution is a document (`documents`, type `reconciliation` or `bank_exception`) that
the approvers approve through `/documents/{id}/approve`, whose last approval carries it out at
the switch.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Final, Literal

import asyncpg
import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import RequestBody
from litestar.params import Parameter
from msgspec import Meta

from admin_api._auth import Actor
from admin_api._downloads import (
    DownloadOperation,
    Format,
    download,
    download_all,
    rows_wanted,
)
from admin_api._problems import MEDIA_TYPE, FieldError, Problem, ProblemBody
from admin_api._routes_documents import (
    Status,
    Step,
    _doc,
    _levels,
    _move_to,
    _step,
)
from admin_api._routes_import import ImportRejected, _ImportOperation, _upload
from admin_api._routes_merchants import tenant_in_scope
from admin_api._routes_queries import CODE_NAMES
from admin_api._store import change
from admin_api._types import INT32_MAX, AfterId, Id, IdField, Limit, optional_bounds
from admin_api.finance._bankexc import ROUTES as BANK_EXCEPTION_ROUTES
from admin_api.finance._bankexc import bank_exception_conflict
from admin_api.finance._bankfile import (
    BANK_FILE_BYTES_MAX,
    BANK_FILE_LINES_MAX,
    HEADER,
    BankFileError,
    read_bank_file,
)
from admin_api.finance._reconcile import (
    FileResult,
    ReconcileConflict,
    ReconcileRefused,
    business_day,
    file_result,
    reconcile,
)
from admin_api.finance._reports import ROUTES as REPORT_ROUTES
from admin_api.finance._vouchers import VOUCHER_LINES_MAX, VoucherLine, day_vouchers

Action = Literal["credit", "reverse", "write_off"]
ExceptionStatus = Literal["open", "resolving", "resolved"]

# -- the bank's file ---------------------------------------------------------------------------


def bank_file_problem(exc: BankFileError) -> Problem:
    return Problem(422, "bad-bank-file", f"the bank file is refused, nothing was changed: {exc}",
                   errors=[FieldError(field=f"line {p.line}" if p.line else "file",
                                      message=p.message) for p in exc.problems])


class _BankFileOperation(_ImportOperation):
    def __post_init__(self) -> None:
        super().__post_init__()
        assert isinstance(self.request_body, RequestBody)
        self.request_body.description = (
            "The bank's daily top-up file (docs/bank-link.md): UTF-8, LF line ends, the header "
            f"line `{HEADER}`, one line per approved top-up; at most {BANK_FILE_LINES_MAX} "
            f"lines and {BANK_FILE_BYTES_MAX} bytes. Multipart (field \"file\") or the body "
            "(text/csv).")
        self.request_body.content.pop(
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", None)


@post("/tenants/{tenant_id:int}/bank-files/{business_date:date}",
      opt={"permission": "finance.write"}, tags=["finance"], status_code=200,
      summary="Import the bank's top-up file of a business day and reconcile it (all or "
      "nothing)",
      description=(
          "Every line is checked first; a bad file (header, numbers, a repeated RRN, another "
          "day's lines, too large) is refused with 422 and `errors` per line, and nothing is "
          "written. The same file again answers its first import (`repeated`); another file "
          "for a day already imported is 409. Matching by RRN: matched, ours_only, bank_only, "
          "amount_differs; each difference is an exception to resolve."),
      request_max_body_size=BANK_FILE_BYTES_MAX, operation_class=_BankFileOperation,
      responses={413: ResponseSpec(ProblemBody, media_type=MEDIA_TYPE, generate_examples=False,
                                   description=f"More than {BANK_FILE_BYTES_MAX} bytes")})
async def import_bank_file(tenant_id: Id, business_date: dt.date,
                           request: Request[Any, Any, Any], actor: Actor,
                           state: State) -> FileResult:
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    try:
        data = await _upload(request)
    except ImportRejected:  # a multipart form without its "file" field
        raise Problem(422, "bad-bank-file", "send the bank file in the form field \"file\" "
                      "(or as a text/csv body); nothing was changed") from None
    try:
        bank_file = read_bank_file(data, business_date)
    except BankFileError as exc:
        raise bank_file_problem(exc) from None
    async with change(state.pool, actor) as tx:
        try:
            out = await reconcile(tx.conn, tenant_id, list(tenant["path"]), bank_file,
                                  actor.username)
        except ReconcileConflict as exc:
            raise Problem(409, "conflict", str(exc)) from None
        except ReconcileRefused as exc:
            raise Problem(422, "bad-bank-file", str(exc)) from None
        if not out.repeated:
            tx.audit("bank_file.import", "bank_file", out.id, list(tenant["path"]), after=out)
    return out


class FilePage(msgspec.Struct):
    items: list[FileResult]
    next_after: int | None


@get("/tenants/{tenant_id:int}/bank-files", opt={"permission": "finance.read"},
     tags=["finance"], summary="The bank files imported for a tenant, with their matching")
async def list_bank_files(tenant_id: Id, actor: Actor, state: State, after: AfterId = 0,
                          limit: Limit = 100) -> FilePage:
    await tenant_in_scope(state.pool, actor, tenant_id)
    rows = await state.pool.fetch("SELECT * FROM bank_files WHERE tenant_id = $1 AND id > $2"
                                  " ORDER BY id LIMIT $3", tenant_id, after, limit + 1)
    items = [file_result(r) for r in rows[:limit]]
    return FilePage(items=items, next_after=items[-1].id if len(rows) > limit else None)


# -- exceptions --------------------------------------------------------------------------------


class ExceptionOut(msgspec.Struct):
    """A difference with the bank. expected_fen = bank_amount_fen - our_amount_fen: what a
    credit (> 0) or a reverse (< 0) moves."""

    id: int
    tenant_id: int
    business_date: dt.date
    kind: str
    rrn: str
    status: str
    """open (no document, or a rejected or failed one), resolving, resolved."""
    bank_amount_fen: int
    our_amount_fen: int
    expected_fen: int
    topup_id: int | None
    topup_state: str | None
    account_id: int | None
    card_no: int | None
    document_id: int | None
    document_status: str | None
    file_id: int
    created_at: dt.datetime


class ExceptionPage(msgspec.Struct):
    items: list[ExceptionOut]
    next_after: int | None


_EXC_SELECT: Final = (
    "SELECT e.*, d.status AS document_status, CASE WHEN d.id IS NULL"
    " OR d.status IN ('rejected', 'failed') THEN 'open' WHEN d.status = 'executed'"
    " THEN 'resolved' ELSE 'resolving' END AS status"
    " FROM reconciliation_exceptions e LEFT JOIN documents d ON d.id = e.document_id"
)


def _exc_out(r: Any) -> ExceptionOut:
    return ExceptionOut(
        id=r["id"], tenant_id=r["tenant_id"], business_date=r["business_date"], kind=r["kind"],
        rrn=r["rrn"], status=r["status"], bank_amount_fen=r["bank_amount_fen"],
        our_amount_fen=r["our_amount_fen"],
        expected_fen=r["bank_amount_fen"] - r["our_amount_fen"], topup_id=r["topup_id"],
        topup_state=r["topup_state"], account_id=r["account_id"], card_no=r["card_no"],
        document_id=r["document_id"], document_status=r["document_status"],
        file_id=r["file_id"], created_at=r["created_at"])


@get("/tenants/{tenant_id:int}/reconciliation-exceptions", opt={"permission": "finance.read"},
     tags=["finance"], operation_class=DownloadOperation,
     summary="Differences with the bank's files: a JSON page, or a CSV / XLSX download")
async def list_exceptions(
        tenant_id: Id, actor: Actor, state: State,
        status: Annotated[ExceptionStatus | None, Parameter(description="open, resolving or "
                                                            "resolved")] = None,
        business_date: Annotated[dt.date | None, Parameter(
            description="Only this business day's")] = None,
        after: AfterId = 0, limit: Limit = 100, format: Format = "json"
) -> Response[ExceptionPage]:
    await tenant_in_scope(state.pool, actor, tenant_id)
    wanted = rows_wanted(format, limit)
    rows = await state.pool.fetch(
        f"SELECT * FROM ({_EXC_SELECT} WHERE e.tenant_id = $1 AND e.id > $2"
        " AND ($3::date IS NULL OR e.business_date = $3)) x"
        " WHERE ($4::text IS NULL OR x.status = $4) ORDER BY x.id LIMIT $5",
        tenant_id, after, business_date, status, wanted + 1)
    items = [_exc_out(r) for r in rows[:wanted]]
    if format != "json":
        return await download_all(
            format, f"tenant-{tenant_id}-reconciliation-exceptions", items,
            ExceptionOut.__struct_fields__, more=len(rows) > wanted,
            what="exceptions: narrow the selection (status, business_date, after)")
    return Response(ExceptionPage(items=items,
                                  next_after=items[-1].id if len(rows) > limit else None))


class ResolveIn(msgspec.Struct, forbid_unknown_fields=True):
    action: Action
    """credit: the wallet gets expected_fen from the bank clearing account (expected > 0);
    reverse: the wallet pays -expected_fen back to it (expected < 0); write_off: nothing
    moves, the difference is closed in the books."""
    comment: Annotated[str, Meta(max_length=2000)] = ""
    person_id: IdField | None = None
    """Whose wallet, when the exception names no account (a bank line with no top-up of
    ours); else it must be the account's person or absent."""


@post("/reconciliation-exceptions/{exception_id:int}/resolve",
      opt={"permission": "finance.write"}, tags=["finance"], status_code=200,
      summary="Draft and submit the document that resolves a difference (credit, reverse or "
      "write off); its approval carries it out, once")
async def resolve_exception(exception_id: Id, data: ResolveIn, actor: Actor, state: State
                            ) -> ExceptionOut:
    if actor.user_id <= 0:
        raise Problem(403, "forbidden", "documents need a log-in, not an API key")
    async with change(state.pool, actor) as tx:
        e = await tx.conn.fetchrow("SELECT * FROM reconciliation_exceptions WHERE id = $1"
                                   " FOR UPDATE", exception_id)
        actor.require_node(list(e["node_path"]) if e else None, f"exception {exception_id}")
        if e["document_id"] is not None:
            doc_status = await tx.conn.fetchval("SELECT status FROM documents WHERE id = $1",
                                                e["document_id"])
            if doc_status not in (Status.REJECTED, Status.FAILED):
                raise Problem(409, "conflict", f"exception {exception_id} is "
                              f"{'resolved' if doc_status == Status.EXECUTED else 'being resolved'}"
                              f" by document {e['document_id']} ({doc_status}): it is resolved "
                              "once")
        expected = e["bank_amount_fen"] - e["our_amount_fen"]
        amount = {"credit": expected, "reverse": expected, "write_off": 0}[data.action]
        if data.action == "credit" and expected <= 0:
            raise Problem(422, "unprocessable", f"nothing to credit: the bank has "
                          f"{e['bank_amount_fen']} fen, we credited {e['our_amount_fen']}")
        if data.action == "reverse" and expected >= 0:
            raise Problem(422, "unprocessable", f"nothing to reverse: the bank has "
                          f"{e['bank_amount_fen']} fen, we credited {e['our_amount_fen']}")
        person = None
        if amount != 0:
            # One place resolves a top-up: its bank exception, if it has one (the row lock
            # orders this against POST /bank-exceptions/{id}/resolve).
            await tx.conn.execute("SELECT 1 FROM bank_topups WHERE id = $1 FOR UPDATE",
                                  e["topup_id"])
            why = await bank_exception_conflict(tx.conn, e["topup_id"])
            if why is not None:
                raise Problem(409, "conflict", why)
            person = await _person(tx.conn, actor, e, data.person_id)
        tenant = e["tenant_id"]
        path = list(e["node_path"])
        title = f"Bank reconciliation {e['business_date']} RRN {e['rrn']}: {data.action}"
        doc_id = await tx.conn.fetchval(
            "INSERT INTO documents (tenant_id, node_id, node_path, doc_type, title, reason,"
            " levels, total_fen, lines_count, created_by) VALUES"
            " ($1, $2, $3, 'reconciliation', $4, $5, $6, $7, $8, $9) RETURNING id",
            tenant, path[-1], path, title, data.comment,
            await _levels(tx.conn, tenant, "reconciliation"), abs(amount),
            0 if person is None else 1, actor.user_id)
        if person is not None:
            await tx.conn.execute(
                "INSERT INTO document_lines (document_id, line_no, person_id, wallet, amount_fen,"
                " note) VALUES ($1, 1, $2, 0, $3, $4)", doc_id, person, amount,
                f"{e['kind']} rrn {e['rrn']}")
        doc = await _doc(tx.conn, actor, doc_id, lock=True)
        await _move_to(tx.conn, doc, Step.SUBMIT, Status.SUBMITTED, ", submitted_at = now()")
        await _step(tx, doc, 0, Step.SUBMIT, data.comment[:500])
        await tx.conn.execute("UPDATE reconciliation_exceptions SET document_id = $2"
                              " WHERE id = $1", exception_id, doc_id)
        tx.audit("document.create", "document", doc_id, path,
                 after={"doc_type": "reconciliation", "title": title, "amount_fen": amount,
                        "person_id": person})
        tx.audit("reconciliation.resolve", "reconciliation_exception", exception_id, path,
                 before={"document_id": e["document_id"]},
                 after={"document_id": doc_id, "action": data.action, "amount_fen": amount})
        row = await tx.conn.fetchrow(_EXC_SELECT + " WHERE e.id = $1", exception_id)
    return _exc_out(row)


async def _person(conn: Any, actor: Actor, e: Any, person_id: int | None) -> int:
    """The person whose main wallet a resolution moves money in."""
    if e["account_id"] is not None:
        row = await conn.fetchrow("SELECT p.id, n.path FROM people p JOIN org_nodes n"
                                  " ON n.id = p.node_id WHERE p.account_id = $1",
                                  e["account_id"])
        if row is None:
            raise Problem(409, "conflict", f"account {e['account_id']} has no person in the "
                          "admin API (onecard admin-init adopts accounts)")
        if person_id is not None and person_id != row["id"]:
            raise Problem(422, "unprocessable", f"the top-up was to person {row['id']}'s "
                          "account: leave person_id out or name that person")
        return int(row["id"])
    if person_id is None:
        raise Problem(422, "unprocessable", "the bank's line matches no top-up of ours: name "
                      "the person (person_id) whose wallet is credited, or write it off")
    row = await conn.fetchrow("SELECT p.tenant_id, n.path FROM people p JOIN org_nodes n"
                              " ON n.id = p.node_id WHERE p.id = $1", person_id)
    actor.require_node(list(row["path"]) if row else None, f"person {person_id}")
    if row["tenant_id"] != e["tenant_id"]:
        raise Problem(422, "unprocessable", "the person belongs to another tenant")
    return person_id


# -- bank top-ups ------------------------------------------------------------------------------


class TopupOut(msgspec.Struct):
    id: int
    created_at: dt.datetime
    terminal_id: int
    txn_seq: int
    rrn: str
    stan: int
    account_id: int
    card_no: int
    amount_fen: int
    state: str
    field39: str | None
    credited_fen: int
    """What the journal credited for it (0: nothing)."""
    result: str | None
    """The journal's answer to the top-up's request, if it has one."""


class TopupPage(msgspec.Struct):
    tenant_id: int
    from_day: dt.date
    to_day: dt.date
    items: list[TopupOut]
    next_after: int | None


_TopupState = Annotated[str | None, Parameter(max_length=20, pattern=(
    "^(sent|approved|declined|unknown|reversal_pending|reversed|exception)$"))]
_DayParam = Annotated[dt.date | None, Parameter(description="First local day (default: "
                                                "yesterday)")]
_ToDayParam = Annotated[dt.date | None, Parameter(description="Last local day, included "
                                                  "(default: from_day)")]
_DAYS_MAX: Final = 400


async def _days(conn: Any, tenant: Any, from_day: dt.date | None, to_day: dt.date | None
                ) -> tuple[dt.date, dt.date, dt.datetime, dt.datetime]:
    """Business days from_day..to_day (default: yesterday's local date) and their UTC span."""
    today = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=tenant["utc_offset_s"])).date()
    first = from_day or today - dt.timedelta(days=1)
    last = to_day or first
    if first > last:
        raise Problem(422, "unprocessable", "from_day is after to_day")
    a = await business_day(conn, tenant["id"], first)
    b = await business_day(conn, tenant["id"], last)
    if a is None or b is None or (last - first).days >= _DAYS_MAX:
        raise Problem(422, "unprocessable", f"days from 1970-01-02 to 9998-12-31, at most "
                      f"{_DAYS_MAX}")
    return first, last, a[0], b[1]


@get("/tenants/{tenant_id:int}/bank-topups", opt={"permission": "finance.read"},
     tags=["finance"], operation_class=DownloadOperation,
     summary="A tenant's bank top-ups (圈存) by local day and state, with what the journal "
     "credited: a JSON page, or a CSV / XLSX download")
async def list_topups(tenant_id: Id, actor: Actor, state: State, from_day: _DayParam = None,
                      to_day: _ToDayParam = None, topup_state: _TopupState = None,
                      after: Annotated[int, Parameter(ge=0, le=10**18)] = 0,
                      limit: Limit = 100, format: Format = "json") -> Response[TopupPage]:
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    first, last, start, end = await _days(state.pool, tenant, from_day, to_day)
    wanted = rows_wanted(format, limit)
    rows = await state.pool.fetch(
        "SELECT t.*, coalesce(j.amount_fen, 0) AS credited_fen, j.code FROM bank_topups t"
        " LEFT JOIN journal j ON j.terminal_id = t.terminal_id AND j.txn_seq = t.txn_seq"
        " WHERE t.tenant_id = $1 AND t.created_at >= $2 AND t.created_at < $3 AND t.id > $4"
        " AND ($5::text IS NULL OR t.state = $5) ORDER BY t.id LIMIT $6", tenant_id, start, end,
        after, topup_state, wanted + 1)
    items = [TopupOut(id=r["id"], created_at=r["created_at"], terminal_id=r["terminal_id"],
                      txn_seq=r["txn_seq"], rrn=r["rrn"], stan=r["stan"],
                      account_id=r["account_id"], card_no=r["card_no"],
                      amount_fen=r["amount_fen"], state=r["state"], field39=r["field39"],
                      credited_fen=r["credited_fen"] if r["code"] == 0 else 0,
                      result=None if r["code"] is None
                      else CODE_NAMES.get(r["code"], str(r["code"])))
             for r in rows[:wanted]]
    if format != "json":
        return await download_all(format, f"tenant-{tenant_id}-bank-topups-{first}_{last}",
                                  items, TopupOut.__struct_fields__, more=len(rows) > wanted,
                                  what="top-ups: narrow the days")
    return Response(TopupPage(tenant_id=tenant_id, from_day=first, to_day=last, items=items,
                              next_after=items[-1].id if len(rows) > limit else None))


class RefusalOut(msgspec.Struct):
    id: int
    created_at: dt.datetime
    terminal_id: int
    """The kiosk (99999999: an automatic top-up, 自动圈存)."""
    txn_seq: int
    account_id: int
    card_no: int
    amount_fen: int
    auto: bool
    code: int
    """The OCP response code the switch answered (docs/protocol.md)."""
    result: str
    """Its name: PIN_INCORRECT, NO_BANK_CARD, TOPUP_DAILY_LIMIT_EXCEEDED, ..."""


class RefusalPage(msgspec.Struct):
    tenant_id: int
    from_day: dt.date
    to_day: dt.date
    items: list[RefusalOut]
    next_after: int | None


@get("/tenants/{tenant_id:int}/bank-topup-refusals", opt={"permission": "finance.read"},
     tags=["finance"], operation_class=DownloadOperation,
     summary="A tenant's top-ups the switch refused itself, before asking the bank (wrong or "
     "locked PIN, no bound bank card, a cap, top-up off or the link down, ...), by local day "
     "and response code: a JSON page, or a CSV / XLSX download")
async def list_refusals(tenant_id: Id, actor: Actor, state: State, from_day: _DayParam = None,
                        to_day: _ToDayParam = None,
                        code: Annotated[int | None, optional_bounds(
                            1, 255, "Only this code (1..255)")] = None,
                        after: Annotated[int, Parameter(ge=0, le=10**18)] = 0,
                        limit: Limit = 100, format: Format = "json") -> Response[RefusalPage]:
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    first, last, start, end = await _days(state.pool, tenant, from_day, to_day)
    wanted = rows_wanted(format, limit)
    rows = await state.pool.fetch(
        "SELECT * FROM bank_topup_refusals WHERE tenant_id = $1 AND created_at >= $2"
        " AND created_at < $3 AND id > $4 AND ($5::int IS NULL OR code = $5) ORDER BY id"
        " LIMIT $6", tenant_id, start, end, after, code,
        wanted + 1)
    items = [RefusalOut(id=r["id"], created_at=r["created_at"], terminal_id=r["terminal_id"],
                        txn_seq=r["txn_seq"], account_id=r["account_id"], card_no=r["card_no"],
                        amount_fen=r["amount_fen"], auto=r["auto"], code=r["code"],
                        result=CODE_NAMES.get(r["code"], str(r["code"])))
             for r in rows[:wanted]]
    if format != "json":
        return await download_all(
            format, f"tenant-{tenant_id}-bank-topup-refusals-{first}_{last}", items,
            RefusalOut.__struct_fields__, more=len(rows) > wanted,
            what="refusals: narrow the days")
    return Response(RefusalPage(tenant_id=tenant_id, from_day=first, to_day=last, items=items,
                                next_after=items[-1].id if len(rows) > limit else None))


# -- vouchers ----------------------------------------------------------------------------------


class VoucherPage(msgspec.Struct):
    tenant_id: int
    business_date: dt.date
    debit_fen: int
    credit_fen: int
    """The day's totals: always equal."""
    items: list[VoucherLine]
    next_after: int | None
    """Lines so far: pass as `after` for the next page; null on the last page."""


async def _vouchers(pool: asyncpg.Pool, tenant: Any, day: dt.date) -> list[VoucherLine]:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                        readonly=True):
        lines = await day_vouchers(conn, tenant["id"], day)
    if len(lines) > VOUCHER_LINES_MAX:
        raise Problem(422, "unprocessable", f"more than {VOUCHER_LINES_MAX} voucher lines")
    return lines


@get("/tenants/{tenant_id:int}/vouchers/{business_date:date}",
     opt={"permission": "finance.read"}, tags=["finance"], operation_class=DownloadOperation,
     summary="A day's postings as journal vouchers (account, debit, credit, reference) for the "
     "finance system: a JSON page, or the CSV / XLSX of docs/finance.md")
async def get_vouchers(tenant_id: Id, business_date: dt.date, actor: Actor, state: State,
                       after: Annotated[int, Parameter(ge=0, le=INT32_MAX)] = 0,
                       limit: Limit = 1000, format: Format = "json") -> Response[VoucherPage]:
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    lines = await _vouchers(state.pool, tenant, business_date)
    if format != "json":
        return await download(format, f"tenant-{tenant_id}-vouchers-{business_date}", lines,
                              VoucherLine.__struct_fields__)
    page = lines[after:after + limit]
    return Response(VoucherPage(
        tenant_id=tenant_id, business_date=business_date,
        debit_fen=sum(v.debit_fen for v in lines), credit_fen=sum(v.credit_fen for v in lines),
        items=page, next_after=after + limit if len(lines) > after + limit else None))


class Published(msgspec.Struct):
    tenant_id: int
    business_date: dt.date
    vouchers: int
    lines: int
    audit_id: int
    """The event's position on GET /integration/events (a change of entity voucher_batch)."""
    repeated: bool
    """True: these very vouchers were published before; nothing new on the feed."""


PUBLISHED_LINES_MAX: Final = 5_000
"""Lines of one day that go on the events feed in one event (more: the CSV only). A site of
50 merchants and two parks books about 1,500; an event stays under about 1.5 MB."""


@post("/tenants/{tenant_id:int}/vouchers/{business_date:date}/publish",
      opt={"permission": "finance.write"}, tags=["finance"], status_code=200,
      summary="Put a day's vouchers on the integration events feed (once per content)")
async def publish_vouchers(tenant_id: Id, business_date: dt.date, actor: Actor, state: State
                           ) -> Published:
    tenant = await tenant_in_scope(state.pool, actor, tenant_id)
    bounds = await business_day(state.pool, tenant_id, business_date)
    if bounds is None or dt.datetime.now(dt.UTC) < bounds[1]:
        raise Problem(422, "unprocessable", f"business day {business_date} has not ended yet "
                      "(its cutover): a day's vouchers are published after it")
    lines = await _vouchers(state.pool, tenant, business_date)
    if len(lines) > PUBLISHED_LINES_MAX:
        raise Problem(422, "unprocessable", f"{len(lines)} voucher lines, more than one event "
                      f"holds ({PUBLISHED_LINES_MAX}): fetch the CSV")
    body = msgspec.to_builtins(lines)
    entity_id = f"{tenant_id}/{business_date}"
    path = list(tenant["path"])
    async with change(state.pool, actor) as tx:
        await tx.conn.execute("SELECT pg_advisory_xact_lock($1, $2)", 0x0CA2D014, tenant_id)
        last = await tx.conn.fetchrow(
            "SELECT id, after FROM audit_log WHERE entity = 'voucher_batch' AND entity_id = $1"
            " ORDER BY id DESC LIMIT 1", entity_id)
        vouchers = len({v.voucher_no for v in lines})
        if last is not None and msgspec.json.decode(last["after"])["lines"] == body:
            return Published(tenant_id=tenant_id, business_date=business_date,
                             vouchers=vouchers, lines=len(lines), audit_id=last["id"],
                             repeated=True)
        tx.audit("vouchers.publish", "voucher_batch", entity_id, path,
                 after={"tenant_id": tenant_id, "business_date": business_date.isoformat(),
                        "lines": body})
    audit_id = await state.pool.fetchval(
        "SELECT id FROM audit_log WHERE entity = 'voucher_batch' AND entity_id = $1"
        " ORDER BY id DESC LIMIT 1", entity_id)
    return Published(tenant_id=tenant_id, business_date=business_date, vouchers=vouchers,
                     lines=len(lines), audit_id=audit_id, repeated=False)


ROUTES = [import_bank_file, list_bank_files, list_exceptions, resolve_exception, list_topups,
          list_refusals, get_vouchers, publish_vouchers, *BANK_EXCEPTION_ROUTES, *REPORT_ROUTES]
