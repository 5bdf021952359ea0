"""Documents (单据) with multi-level approval: refunds, adjustments, subsidy batches, cancellations.

A document is drafted, submitted, approved level by level (each level by a different person,
never by whoever drafted it), and executes once, when the last level approves: every line is
a movement at the switch under a txn_seq drawn in the approving transaction, so a document that
could not finish (the switch was down) executes again with the same txn_seqs and nothing moves
twice. A rejected document can be revised (a new version, approval starts over) and submitted
again. Every step is recorded (`approval_steps`) and audited. The states (`Status`), the steps
(`Step`) and which step leads from which state to which (`TRANSITIONS`) are one table below: a
new kind of document adds rows there, and every state change goes through `_move_to`.

What a line does when executed:

| type | line | the switch |
| --- | --- | --- |
| refund | person, amount > 0 | debit the main wallet to the tenant's cash desk (cash paid out) |
| adjustment | person, wallet, amount != 0 | + credit from / - debit to the adjustments account |
| subsidy_batch | person, amount > 0 | credit the subsidy wallet from the subsidy fund |
| cancellation | person (two lines: main, subsidy) | balances refunded, then account closed |
| reconciliation | person, amount != 0 (none: write-off) | + credit from / - debit to clearing |
| bank_exception | person, amount > 0 (credit), or none | + credit from the bank clearing account |

A reconciliation document is drafted and submitted by `POST /reconciliation-exceptions/{id}/
resolve` (admin_api/finance), never through `POST /documents`, and is not revised (a rejected
one is replaced by resolving the exception again).

A bank_exception document is opened by the switch (a reversal advice the bank never
acknowledged: status submitted, no lines) and waits for a person to choose how it ends: `POST
/bank-exceptions/{id}/resolve` (admin_api/finance/_bankexc.py) is the step `resolve`, a new
version submitted again with its choice (retry, credit, write_off) and, for a credit, one line.
It is approved like any document (never by whoever chose), and its execution, besides the
line, closes the top-up and its advice. It is not revised through `/revise`.

A cancellation's main balance is paid out at the cash desk (a negative one is collected there),
its subsidy goes back to the subsidy fund; then the account is closed and its cards cancelled.

A cancellation freezes the account when submitted (no spending while it waits; a rejection
unfreezes it) and refunds exactly the balances the approvers saw: if they changed meanwhile,
execution fails without moving anything and the document must be revised.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import io
from pathlib import Path
from typing import Annotated, Any, Final, Literal, NamedTuple

import asyncpg
import msgspec
from litestar import Response, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from msgspec import Meta

from admin_api._auth import Actor
from admin_api._downloads import DownloadOperation, Format, download
from admin_api._money import Money, Outcome, card_of, system_account
from admin_api._problems import Problem
from admin_api._routes_people import person_in_scope
from admin_api._routes_queries import balance_of
from admin_api._store import Change, change, node_path
from admin_api._types import AfterId, Id, IdField, Limit, OptionalId
from admin_api.settlement import execute_payouts, on_approved
from protocols.changes import AccountStatusChanged, CardCancelled

DocType = Literal["refund", "adjustment", "subsidy_batch", "cancellation"]
PolicyDocType = Literal["refund", "adjustment", "subsidy_batch", "cancellation",
                        "reconciliation", "bank_exception"]
DEFAULT_LEVELS: Final = {"refund": 1, "adjustment": 2, "subsidy_batch": 2, "cancellation": 2,
                         "settlement": 1, "reconciliation": 2, "bank_exception": 1}
"""A 'settlement' document has no lines: it is requested by POST
/tenants/{id}/settlements/{day}/confirm and pays out through admin_api/settlement."""
LINES_MAX: Final = 10_000
AMOUNT_MAX: Final = 10_000_000
WALLETS: Final = {"main": 0, "subsidy": 1}
WALLET_NAMES: Final = {0: "main", 1: "subsidy"}
Comment = Annotated[str, Meta(max_length=500)]


class Status(enum.StrEnum):
    """A document's state (`documents.status`)."""

    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXECUTED = "executed"
    FAILED = "failed"


class Step(enum.StrEnum):
    """What moves a document from one state to another (`approval_steps.decision`)."""

    SUBMIT = "submit"
    APPROVE = "approve"
    REJECT = "reject"
    REVISE = "revise"
    EXECUTE = "execute"
    RESOLVE = "resolve"
    """A bank exception's resolution chosen: a new version, submitted again."""


class Transition(NamedTuple):
    sources: frozenset[Status]
    """The states the step is taken from (else 409)."""
    targets: frozenset[Status]
    """The states it may lead to."""


TRANSITIONS: Final[dict[Step, Transition]] = {
    Step.SUBMIT: Transition(frozenset({Status.DRAFT}), frozenset({Status.SUBMITTED})),
    # Approved at the last level; submitted (one more level approved) before it.
    Step.APPROVE: Transition(frozenset({Status.SUBMITTED}),
                             frozenset({Status.SUBMITTED, Status.APPROVED})),
    Step.REJECT: Transition(frozenset({Status.SUBMITTED}), frozenset({Status.REJECTED})),
    Step.REVISE: Transition(frozenset({Status.DRAFT, Status.REJECTED, Status.FAILED}),
                            frozenset({Status.DRAFT})),
    Step.EXECUTE: Transition(frozenset({Status.APPROVED}),
                             frozenset({Status.EXECUTED, Status.FAILED})),
    # A bank exception: the switch's submitted document (no resolution yet), or a rejected
    # or failed resolution, gets a (new) resolution.
    Step.RESOLVE: Transition(frozenset({Status.SUBMITTED, Status.REJECTED, Status.FAILED}),
                             frozenset({Status.SUBMITTED})),
}
"""Every state change of a document: a new kind of document adds rows here, not literals."""
PENDING: Final = [str(s) for s in (Status.DRAFT, Status.SUBMITTED, Status.APPROVED)]
"""The states in which a document has yet to move money (a cancellation holds its accounts)."""


class LineIn(msgspec.Struct, forbid_unknown_fields=True):
    person_id: IdField
    amount_fen: Annotated[int, Meta(ge=-AMOUNT_MAX, le=AMOUNT_MAX)] = 0
    """fen; > 0 for refunds and subsidies, either sign for adjustments, ignored for
    cancellations (the balances are taken when the document is drafted)."""
    wallet: Literal["main", "subsidy"] = "main"
    note: Annotated[str, Meta(max_length=200)] = ""


class DocumentIn(msgspec.Struct, forbid_unknown_fields=True):
    doc_type: DocType
    title: Annotated[str, Meta(min_length=1, max_length=200)]
    lines: Annotated[list[LineIn], Meta(min_length=1, max_length=LINES_MAX)]
    reason: Annotated[str, Meta(max_length=2000)] = ""


class ReviseIn(msgspec.Struct, forbid_unknown_fields=True):
    title: Annotated[str, Meta(min_length=1, max_length=200)]
    lines: Annotated[list[LineIn], Meta(min_length=1, max_length=LINES_MAX)]
    reason: Annotated[str, Meta(max_length=2000)] = ""


class DecisionIn(msgspec.Struct, forbid_unknown_fields=True):
    comment: Comment = ""


class PolicyIn(msgspec.Struct, forbid_unknown_fields=True):
    node_id: IdField
    """The tenant's node."""
    doc_type: PolicyDocType
    levels: Annotated[int, Meta(ge=1, le=5)]


class PolicyOut(msgspec.Struct):
    tenant_id: int
    doc_type: str
    levels: int


class LineOut(msgspec.Struct):
    line_no: int
    person_id: int
    person_name: str
    wallet: str
    amount_fen: int
    note: str
    txn_seq: int | None
    result: str | None
    done_fen: int | None


class StepOut(msgspec.Struct):
    version: int
    level: int
    username: str
    decision: str
    comment: str
    at: dt.datetime


class DocumentOut(msgspec.Struct):
    id: int
    tenant_id: int
    node_id: int
    doc_type: str
    title: str
    reason: str
    status: str
    version: int
    levels: int
    approved_levels: int
    total_fen: int
    lines_count: int
    created_by: str
    created_at: dt.datetime
    failure: str
    lines: list[LineOut] = []
    steps: list[StepOut] = []


class DocumentPage(msgspec.Struct):
    items: list[DocumentOut]
    next_after: int | None


_DOC_SELECT = (
    "SELECT d.*, coalesce(u.username, 'switch') AS creator FROM documents d"
    " LEFT JOIN admin_users u ON u.id = d.created_by"
)


async def _doc(conn: Any, actor: Actor, doc_id: int, *, lock: bool = False) -> asyncpg.Record:
    row = await conn.fetchrow(_DOC_SELECT + " WHERE d.id = $1" + (" FOR UPDATE OF d" if lock
                                                                 else ""), doc_id)
    actor.require_node(list(row["node_path"]) if row else None, f"document {doc_id}")
    return row


async def _locked(tx: Change, actor: Actor, doc_id: int, step: Step, why: str = ""
                  ) -> asyncpg.Record:
    """The document, locked for `step`; 409 unless it is in a state the step is taken from
    (`why` ends the message)."""
    doc = await _doc(tx.conn, actor, doc_id, lock=True)
    if doc["status"] not in TRANSITIONS[step].sources:
        raise Problem(409, "conflict", f"document {doc_id} is {doc['status']}{why}")
    return doc


async def _move_to(conn: Any, doc: asyncpg.Record, step: Step, to: Status, sets: str = "",
                   *args: Any) -> None:
    """Take `step` from the document's state to `to`, which TRANSITIONS must allow; `sets`
    adds columns to the UPDATE (parameters from $3 on: `args`). Conditional on the state the
    document was read in, so a step never applies to a document another request moved on."""
    assert doc["status"] in TRANSITIONS[step].sources and to in TRANSITIONS[step].targets, (
        step, doc["status"], to)
    await conn.execute(f"UPDATE documents SET status = $2{sets} WHERE id = $1"
                       f" AND status = ${len(args) + 3}", doc["id"], to, *args, doc["status"])


async def _out(conn: Any, row: asyncpg.Record, *, full: bool = True) -> DocumentOut:
    out = DocumentOut(
        id=row["id"], tenant_id=row["tenant_id"], node_id=row["node_id"],
        doc_type=row["doc_type"], title=row["title"], reason=row["reason"],
        status=row["status"], version=row["version"], levels=row["levels"],
        approved_levels=row["approved_levels"], total_fen=row["total_fen"],
        lines_count=row["lines_count"], created_by=row["creator"],
        created_at=row["created_at"], failure=row["failure"])
    if not full:
        return out
    lines = await conn.fetch(
        "SELECT l.*, p.name FROM document_lines l JOIN people p ON p.id = l.person_id"
        " WHERE l.document_id = $1 ORDER BY l.line_no", row["id"])
    steps = await conn.fetch(
        "SELECT s.version, s.level, u.username, s.decision, s.comment, s.at FROM approval_steps s"
        " JOIN admin_users u ON u.id = s.user_id WHERE s.document_id = $1 ORDER BY s.id",
        row["id"])
    from admin_api._money import CODE_NAMES

    out.lines = [LineOut(line_no=r["line_no"], person_id=r["person_id"], person_name=r["name"],
                         wallet=WALLET_NAMES[r["wallet"]], amount_fen=r["amount_fen"],
                         note=r["note"], txn_seq=r["txn_seq"],
                         result=None if r["result_code"] is None
                         else CODE_NAMES.get(r["result_code"], str(r["result_code"])),
                         done_fen=r["done_fen"]) for r in lines]
    out.steps = [StepOut(version=r["version"], level=r["level"], username=r["username"],
                         decision=r["decision"], comment=r["comment"], at=r["at"])
                 for r in steps]
    return out


async def pending_cancellation(conn: Any, account_id: int, *, exclude: int = 0) -> int | None:
    """The id of a cancellation holding this account (submitted or approved), if any."""
    doc = await conn.fetchval(
        "SELECT d.id FROM documents d JOIN document_lines l ON l.document_id = d.id"
        " JOIN people p ON p.id = l.person_id WHERE p.account_id = $1"
        " AND d.doc_type = 'cancellation' AND d.status = ANY($3::text[])"
        " AND d.id <> $2 LIMIT 1", account_id, exclude, PENDING)
    return int(doc) if doc is not None else None


async def _lines(tx: Change, doc_type: str, lines: list[LineIn], exclude: int = 0
                 ) -> tuple[int, list[int], list[tuple[int, int, int, int, str]]]:
    """Check the lines: (tenant, node path of the document, [(person, wallet, amount, ...)])."""
    tenant = None
    paths: list[list[int]] = []
    rows: list[tuple[int, int, int, int, str]] = []
    seen: set[tuple[int, int]] = set()
    for i, line in enumerate(lines):
        try:
            person = await person_in_scope(tx.conn, tx.actor, line.person_id)
        except Problem:
            raise Problem(404, "not-found", f"lines[{i}]: no person {line.person_id} in your "
                          "part of the organisation") from None
        if tenant is None:
            tenant = person["tenant_id"]
        elif person["tenant_id"] != tenant:
            raise Problem(422, "unprocessable", f"lines[{i}]: every line of a document belongs "
                          "to one tenant (it is settled there)")
        paths.append(list(person["path"]))
        if doc_type == "cancellation":
            if any(p == line.person_id for p, _ in seen):
                raise Problem(422, "unprocessable", f"lines[{i}]: person {line.person_id} twice")
            if person["account_status"] == 3:
                raise Problem(409, "conflict", f"lines[{i}]: the account is already closed")
            if await pending_cancellation(tx.conn, person["account_id"], exclude=exclude):
                raise Problem(409, "conflict", f"lines[{i}]: person {line.person_id} is already "
                              "in a cancellation that waits for approval")
            balance = await balance_of(tx.conn, person)
            seen.add((line.person_id, 0))
            rows.append((line.person_id, 0, balance.main_fen, person["account_id"], line.note))
            rows.append((line.person_id, 1, balance.subsidy_fen, person["account_id"],
                         line.note))
            continue
        amount, wallet = line.amount_fen, WALLETS[line.wallet]
        if doc_type in ("refund", "subsidy_batch") and amount <= 0:
            raise Problem(422, "unprocessable", f"lines[{i}].amount_fen must be above 0")
        if doc_type == "adjustment" and amount == 0:
            raise Problem(422, "unprocessable", f"lines[{i}].amount_fen must not be 0")
        if doc_type == "refund":
            wallet = 0
            # A refund pays out money the person has, never their overdraft credit: all of
            # this document's refunds of the person together.
            have = (await balance_of(tx.conn, person)).main_fen
            asked = amount + sum(r[2] for r in rows if r[0] == line.person_id)
            if asked > have:
                raise Problem(422, "unprocessable", f"lines[{i}]: refunds of {asked} fen are "
                              f"more than the {max(have, 0)} fen in the main wallet")
        if doc_type == "subsidy_batch":
            wallet = 1
        rows.append((line.person_id, wallet, amount, person["account_id"], line.note))
    assert tenant is not None
    # The document belongs to the deepest node all its people share.
    common = paths[0]
    for p in paths[1:]:
        n = 0
        while n < min(len(common), len(p)) and common[n] == p[n]:
            n += 1
        common = common[:n]
    return tenant, common, rows


async def _write_lines(tx: Change, doc_id: int, rows: list[tuple[int, int, int, int, str]]
                       ) -> None:
    await tx.conn.execute("DELETE FROM document_lines WHERE document_id = $1", doc_id)
    await tx.conn.executemany(
        "INSERT INTO document_lines (document_id, line_no, person_id, wallet, amount_fen, note)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        [(doc_id, n, person, wallet, amount, note)
         for n, (person, wallet, amount, _, note) in enumerate(rows, 1)])


async def _levels(conn: Any, tenant_id: int, doc_type: str) -> int:
    levels = await conn.fetchval("SELECT levels FROM approval_policies WHERE tenant_id = $1"
                                 " AND doc_type = $2", tenant_id, doc_type)
    return int(levels or DEFAULT_LEVELS[doc_type])


async def _step(tx: Change, doc: asyncpg.Record, level: int, decision: Step, comment: str,
                version: int | None = None) -> None:
    await tx.conn.execute(
        "INSERT INTO approval_steps (document_id, version, level, user_id, decision, comment)"
        " VALUES ($1, $2, $3, $4, $5, $6)", doc["id"], version or doc["version"], level,
        tx.actor.user_id, decision, comment)


def _staff(actor: Actor) -> None:
    if actor.user_id <= 0:
        raise Problem(403, "forbidden", "documents need a log-in, not an API key")


@post("/documents", opt={"permission": "documents.write"}, tags=["documents"],
      summary="Draft a refund, adjustment, subsidy batch or cancellation")
async def create_document(data: DocumentIn, actor: Actor, state: State) -> DocumentOut:
    _staff(actor)
    async with change(state.pool, actor) as tx:
        tenant, path, rows = await _lines(tx, data.doc_type, data.lines)
        levels = await _levels(tx.conn, tenant, data.doc_type)
        total = sum(abs(r[2]) for r in rows)
        doc_id = await tx.conn.fetchval(
            "INSERT INTO documents (tenant_id, node_id, node_path, doc_type, title, reason,"
            " levels, total_fen, lines_count, created_by) VALUES"
            " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            tenant, path[-1], path, data.doc_type, data.title, data.reason, levels, total,
            len(rows), actor.user_id)
        await _write_lines(tx, doc_id, rows)
        out = await _out(tx.conn, await _doc(tx.conn, actor, doc_id))
        tx.audit("document.create", "document", doc_id, path, after=out)
        return out


class DocumentRow(msgspec.Struct):
    """One document in an export."""

    id: int
    tenant_id: int
    doc_type: str
    title: str
    status: str
    version: int
    approved_levels: int
    levels: int
    total_fen: int
    lines_count: int
    created_by: str
    created_at: dt.datetime
    failure: str


EXPORT_ROWS_MAX: Final = 100_000
_EXECUTE_LOCK: Final = 0x0CA2D010
"""Advisory lock class of a document's execution (the second key is the document id)."""


@get("/documents", opt={"permission": "documents.read"}, tags=["documents"],
     operation_class=DownloadOperation,
     summary="Documents of your subtree by id: a JSON page, or a CSV / XLSX download")
async def list_documents(actor: Actor, state: State,
                         status: Annotated[str | None, Parameter(max_length=20)] = None,
                         doc_type: Annotated[str | None, Parameter(max_length=20)] = None,
                         person_id: OptionalId = None,
                         after: AfterId = 0, limit: Limit = 100,
                         format: Format = "json") -> Response[DocumentPage]:
    """`person_id`: only the documents with a line of that person (404 when the person is not
    in your subtree, as the person routes answer); still only documents of your subtree."""
    export = format != "json"
    if person_id is not None:
        await person_in_scope(state.pool, actor, person_id)
    rows = await state.pool.fetch(
        _DOC_SELECT + " WHERE $1 = ANY(d.node_path) AND d.id > $2"
        " AND ($3::text IS NULL OR d.status = $3) AND ($4::text IS NULL OR d.doc_type = $4)"
        " AND ($6::int IS NULL OR EXISTS (SELECT 1 FROM document_lines l"
        "  WHERE l.document_id = d.id AND l.person_id = $6))"
        " ORDER BY d.id LIMIT $5", actor.node_id, after, status, doc_type,
        EXPORT_ROWS_MAX + 1 if export else limit + 1, person_id)
    if export:
        if len(rows) > EXPORT_ROWS_MAX:
            raise Problem(422, "unprocessable", f"more than {EXPORT_ROWS_MAX} documents: narrow "
                          "the selection (status, doc_type, person_id, after)")
        items = [DocumentRow(**{f: r[f] for f in DocumentRow.__struct_fields__
                                if f != "created_by"}, created_by=r["creator"]) for r in rows]
        return await download(format, "documents", items, DocumentRow.__struct_fields__)
    page = [await _out(state.pool, r, full=False) for r in rows[:limit]]
    return Response(DocumentPage(items=page,
                                 next_after=page[-1].id if len(rows) > limit else None))


@get("/documents/{doc_id:int}", opt={"permission": "documents.read"}, tags=["documents"],
     summary="A document with its lines and every approval step")
async def get_document(doc_id: Id, actor: Actor, state: State) -> DocumentOut:
    return await _out(state.pool, await _doc(state.pool, actor, doc_id))


async def _set_frozen(tx: Change, doc: asyncpg.Record, freeze: bool) -> None:
    """A cancellation holds its accounts frozen while it waits for approval. Conditional
    updates in account order: a loss report meanwhile is never overwritten."""
    accounts = await tx.conn.fetch(
        "SELECT DISTINCT p.account_id FROM document_lines l JOIN people p ON p.id = l.person_id"
        " WHERE l.document_id = $1 ORDER BY p.account_id", doc["id"])
    for a in accounts:
        changed = await tx.conn.fetchval(
            "UPDATE accounts SET status = $2 WHERE id = $1 AND status = $3 RETURNING id",
            a["account_id"], 1 if freeze else 0, 0 if freeze else 1)
        if changed is not None:
            tx.event(AccountStatusChanged(a["account_id"], 1 if freeze else 0))


@post("/documents/{doc_id:int}/submit", opt={"permission": "documents.write"},
      tags=["documents"], status_code=200, summary="Submit a draft for approval")
async def submit_document(doc_id: Id, data: DecisionIn, actor: Actor, state: State
                          ) -> DocumentOut:
    _staff(actor)
    async with change(state.pool, actor) as tx:
        doc = await _locked(tx, actor, doc_id, Step.SUBMIT, ", not a draft")
        froze = False
        if doc["doc_type"] == "cancellation":
            froze = bool(await tx.conn.fetchval(
                "SELECT bool_or(a.status = 0) FROM document_lines l JOIN people p"
                " ON p.id = l.person_id JOIN accounts a ON a.id = p.account_id"
                " WHERE l.document_id = $1", doc_id))
            await _set_frozen(tx, doc, True)
        await _move_to(tx.conn, doc, Step.SUBMIT, Status.SUBMITTED,
                       ", submitted_at = now(), failure = '', froze_account = $3", froze)
        await _step(tx, doc, 0, Step.SUBMIT, data.comment)
        out = await _out(tx.conn, await _doc(tx.conn, actor, doc_id))
        tx.audit("document.submit", "document", doc_id, list(doc["node_path"]),
                 before={"status": doc["status"]}, after={"status": Status.SUBMITTED})
        return out


@post("/documents/{doc_id:int}/approve", opt={"permission": "documents.approve",
                                              "switch": True},
      tags=["documents"], status_code=200,
      summary="Approve the next level; the last level executes the document (once)")
async def approve_document(doc_id: Id, data: DecisionIn, actor: Actor, state: State
                           ) -> DocumentOut:
    _staff(actor)
    money: Money = state.money
    async with change(state.pool, actor) as tx:
        doc = await _locked(tx, actor, doc_id, Step.APPROVE,
                            ": only a submitted document is approved")
        await _bank_exception_chosen(tx.conn, doc)
        if doc["created_by"] == actor.user_id:
            raise Problem(403, "forbidden", "nobody approves a document they drafted")
        if await tx.conn.fetchval(
                "SELECT true FROM approval_steps WHERE document_id = $1 AND version = $2"
                " AND user_id = $3 AND decision = $4", doc_id, doc["version"],
                actor.user_id, Step.APPROVE):
            raise Problem(403, "forbidden", "each level is approved by a different person")
        if await tx.conn.fetchval(
                "SELECT true FROM approval_steps WHERE document_id = $1 AND version = $2"
                " AND user_id = $3 AND decision = ANY($4::text[])", doc_id,
                doc["version"], actor.user_id, [Step.SUBMIT, Step.REVISE, Step.RESOLVE]):
            raise Problem(403, "forbidden", "nobody approves a version they revised, "
                          "submitted or resolved")
        await _independent(tx, doc, state.settings.approver_cooling_off_seconds)
        level = doc["approved_levels"] + 1
        await _step(tx, doc, level, Step.APPROVE, data.comment)
        final = level >= doc["levels"]
        after = Status.APPROVED if final else Status.SUBMITTED
        await _move_to(tx.conn, doc, Step.APPROVE, after, ", approved_levels = $3,"
                       " decided_at = CASE WHEN $4 THEN now() ELSE decided_at END", level, final)
        if final:
            # The txn_seqs of the movements, drawn and stored with the approval.
            money.require()
            if doc["doc_type"] == "settlement":
                await on_approved(tx, money, doc)
            count = await tx.conn.fetchval(
                "SELECT count(*) FROM document_lines WHERE document_id = $1", doc_id)
            for n in range(1, count + 1):
                await tx.conn.execute(
                    "UPDATE document_lines SET terminal_id = $3, txn_seq = $4"
                    " WHERE document_id = $1 AND line_no = $2", doc_id, n, money.terminal_id,
                    await money.next_txn_seq(tx.conn))
        tx.audit("document.approve", "document", doc_id, list(doc["node_path"]),
                 before={"status": doc["status"], "approved_levels": doc["approved_levels"]},
                 after={"status": after, "approved_levels": level})
    if final:
        return await _execute(state, actor, doc_id)
    return await _out(state.pool, await _doc(state.pool, actor, doc_id))


async def _bank_exception_chosen(conn: Any, doc: asyncpg.Record) -> None:
    """409 for a bank exception whose current version has no resolution chosen yet."""
    if doc["doc_type"] != "bank_exception":
        return
    if not await conn.fetchval("SELECT true FROM bank_exception_resolutions WHERE"
                               " document_id = $1 AND version = $2", doc["id"], doc["version"]):
        raise Problem(409, "conflict", f"bank exception {doc['id']} has no resolution yet: "
                      f"choose one first (POST /bank-exceptions/{doc['id']}/resolve)")


async def _independent(tx: Change, doc: asyncpg.Record, cooling_off_seconds: int) -> None:
    """403 unless the approver is a second person: a log-in at least the cooling-off period
    old, not made (directly or through log-ins it made) by the drafter or by anyone who
    submitted, revised or approved this version."""
    row = await tx.conn.fetchrow(
        "WITH RECURSIVE makers(id) AS ("
        "  SELECT created_by FROM admin_users WHERE id = $1"
        "  UNION SELECT u.created_by FROM admin_users u JOIN makers m ON u.id = m.id),"
        " round(id) AS (SELECT $2::int UNION SELECT user_id FROM approval_steps"
        "  WHERE document_id = $3 AND version = $4)"
        " SELECT (SELECT u.username FROM makers m JOIN round r ON r.id = m.id"
        "         JOIN admin_users u ON u.id = m.id LIMIT 1) AS maker,"
        " (SELECT created_at > now() - make_interval(secs => $5) FROM admin_users"
        "  WHERE id = $1) AS young",
        tx.actor.user_id, doc["created_by"], doc["id"], doc["version"],
        float(cooling_off_seconds))
    if row["maker"] is not None:
        raise Problem(403, "forbidden", f"your log-in was made by {row['maker']} (or by a "
                      "log-in they made), who drafted, submitted, revised or approved this "
                      "document: a second person approves it")
    if row["young"]:
        raise Problem(403, "forbidden", "your log-in is younger than the approver cooling-off "
                      f"period ({cooling_off_seconds} s): it approves documents once it is older")


@post("/documents/{doc_id:int}/reject", opt={"permission": "documents.approve"},
      tags=["documents"], status_code=200, summary="Reject a submitted document")
async def reject_document(doc_id: Id, data: DecisionIn, actor: Actor, state: State
                          ) -> DocumentOut:
    _staff(actor)
    async with change(state.pool, actor) as tx:
        doc = await _locked(tx, actor, doc_id, Step.REJECT)
        await _bank_exception_chosen(tx.conn, doc)
        if doc["created_by"] == actor.user_id:
            raise Problem(403, "forbidden", "nobody decides on a document they drafted")
        if doc["froze_account"]:
            await _set_frozen(tx, doc, False)
        await _move_to(tx.conn, doc, Step.REJECT, Status.REJECTED,
                       ", decided_at = now(), froze_account = false")
        await _step(tx, doc, doc["approved_levels"] + 1, Step.REJECT, data.comment)
        tx.audit("document.reject", "document", doc_id, list(doc["node_path"]),
                 before={"status": doc["status"]}, after={"status": Status.REJECTED,
                                                          "comment": data.comment})
        return await _out(tx.conn, await _doc(tx.conn, actor, doc_id))


@post("/documents/{doc_id:int}/revise", opt={"permission": "documents.write"},
      tags=["documents"], status_code=200,
      summary="Revise a rejected (or failed) document: a new version, back to draft")
async def revise_document(doc_id: Id, data: ReviseIn, actor: Actor, state: State
                          ) -> DocumentOut:
    _staff(actor)
    async with change(state.pool, actor) as tx:
        doc = await _locked(tx, actor, doc_id, Step.REVISE)
        if doc["doc_type"] == "reconciliation":
            raise Problem(409, "conflict", "a reconciliation document is not revised: resolve "
                          "its exception again (POST /reconciliation-exceptions/{id}/resolve)")
        if doc["doc_type"] == "bank_exception":
            raise Problem(409, "conflict", "a bank exception is not revised: choose its "
                          "resolution again (POST /bank-exceptions/{id}/resolve)")
        if doc["doc_type"] == "settlement":
            raise Problem(409, "conflict", "a settlement document is not revised: request the "
                          "day's confirmation again (POST /tenants/{id}/settlements/{day}/confirm)")
        if doc["status"] == Status.FAILED and await tx.conn.fetchval(
                "SELECT true FROM document_lines WHERE document_id = $1 AND result_code = 0",
                doc_id):
            raise Problem(409, "conflict", "part of this document has moved money: it cannot be "
                          "revised; draft a new document for the rest")
        before = await _out(tx.conn, doc)
        tenant, path, rows = await _lines(tx, doc["doc_type"], data.lines, exclude=doc_id)
        if tenant != doc["tenant_id"]:
            raise Problem(422, "unprocessable", "a revision stays in the document's tenant")
        await _write_lines(tx, doc_id, rows)
        await _move_to(
            tx.conn, doc, Step.REVISE, Status.DRAFT, ", version = version + 1, approved_levels"
            " = 0, title = $3, reason = $4, total_fen = $5, lines_count = $6, failure = '',"
            " node_id = $7, node_path = $8", data.title, data.reason,
            sum(abs(r[2]) for r in rows), len(rows), path[-1], path)
        await _step(tx, doc, 0, Step.REVISE, "", version=doc["version"] + 1)
        out = await _out(tx.conn, await _doc(tx.conn, actor, doc_id))
        tx.audit("document.revise", "document", doc_id, path, before=before, after=out)
        return out


@post("/documents/{doc_id:int}/execute", opt={"permission": "documents.approve",
                                              "switch": True},
      tags=["documents"], status_code=200,
      summary="Carry out an approved document that could not finish (same txn_seqs: once)")
async def execute_document(doc_id: Id, actor: Actor, state: State) -> DocumentOut:
    _staff(actor)
    doc = await _doc(state.pool, actor, doc_id)
    if doc["status"] not in TRANSITIONS[Step.EXECUTE].sources:
        raise Problem(409, "conflict", f"document {doc_id} is {doc['status']}: only an approved "
                      "document that has not finished is executed")
    return await _execute(state, actor, doc_id)


async def _execute(state: State, actor: Actor, doc_id: int) -> DocumentOut:
    """Every line not yet answered goes to the switch under its own (terminal, txn_seq).
    One execution of a document at a time (an advisory lock): a second one answers 409."""
    async with state.pool.acquire() as guard:
        if not await guard.fetchval("SELECT pg_try_advisory_lock($1, $2)", _EXECUTE_LOCK,
                                    doc_id):
            raise Problem(409, "in-progress", f"document {doc_id} is being carried out by "
                          "another request right now; look again in a moment")
        try:
            return await _execute_locked(state, actor, doc_id)
        finally:
            await guard.execute("SELECT pg_advisory_unlock($1, $2)", _EXECUTE_LOCK, doc_id)


async def _record(state: State, actor: Actor, doc_id: int, line_no: int, out: Outcome) -> None:
    async with change(state.pool, actor) as tx:
        await tx.conn.execute(
            "UPDATE document_lines SET result_code = $3, done_fen = $4, txn_seq = $5"
            " WHERE document_id = $1 AND line_no = $2", doc_id, line_no, out.code,
            out.amount_fen, out.txn_seq)


async def _execute_locked(state: State, actor: Actor, doc_id: int) -> DocumentOut:
    money: Money = state.money
    pool = state.pool
    doc = await _doc(pool, actor, doc_id)
    if doc["status"] not in TRANSITIONS[Step.EXECUTE].sources:
        return await _out(pool, doc)  # another execution finished it meanwhile
    if doc["doc_type"] == "settlement":
        failure = await execute_payouts(state, actor, doc_id)
        if failure:
            return await _fail(state, actor, doc, failure)
    select = ("SELECT l.*, p.account_id, p.tenant_id FROM document_lines l JOIN people p"
              " ON p.id = l.person_id WHERE l.document_id = $1 ORDER BY l.line_no")
    # First what the journal already has (an answer lost to a timeout, a crash): recorded,
    # never asked again, and never mistaken for a balance that changed.
    for line in await pool.fetch(select, doc_id):
        if line["result_code"] is None and line["txn_seq"] is not None:
            known = await money.journaled(line["txn_seq"], line["terminal_id"])
            if known is not None:
                await _record(state, actor, doc_id, line["line_no"], known)
    lines = await pool.fetch(select, doc_id)
    kind = doc["doc_type"]
    for line in lines:
        if line["result_code"] is not None or line["amount_fen"] == 0:
            continue
        have = await balance_of(pool, {"id": line["person_id"], "account_id": line["account_id"],
                                       "account_status": 1})
        now = have.main_fen if line["wallet"] == 0 else have.subsidy_fen
        if kind == "cancellation" and now != line["amount_fen"]:
            return await _fail(state, actor, doc, f"the {WALLET_NAMES[line['wallet']]} balance "
                               f"of person {line['person_id']} is {now} fen, not the "
                               f"{line['amount_fen']} fen approved: revise")
        if kind == "refund" and now < line["amount_fen"]:
            return await _fail(state, actor, doc, f"person {line['person_id']} has {now} fen in "
                               f"the main wallet, less than the {line['amount_fen']} fen refund "
                               "(a refund never pays out overdraft credit)")
    for line in lines:
        if line["result_code"] is not None or line["amount_fen"] == 0:
            continue
        line_no = line["line_no"]

        async def renew(old: int, fresh: int, line_no: int = line_no) -> bool:
            return bool(await pool.fetchval(
                "UPDATE document_lines SET txn_seq = $5 WHERE document_id = $1"
                " AND line_no = $2 AND terminal_id = $3 AND txn_seq = $4"
                " AND result_code IS NULL RETURNING true", doc_id, line_no, money.terminal_id,
                old, fresh))

        try:
            out = await _move(pool, money, kind, line, renew)
        except Problem as exc:
            if exc.status in (409, 502, 503) and exc.slug in ("in-progress", "switch-refused",
                                                              "switch-unavailable"):
                # Nothing decided for this line (or not known yet): the document stays
                # approved, and POST /documents/{id}/execute carries on from here.
                raise Problem(exc.status, exc.slug, f"document {doc_id} is approved and will be "
                              f"carried out once: {exc.detail.split(';')[0]}; POST "
                              f"/documents/{doc_id}/execute again later") from None
            return await _fail(state, actor, doc, exc.detail)
        await _record(state, actor, doc_id, line_no, out)
    results = await pool.fetch("SELECT result_code, amount_fen FROM document_lines"
                               " WHERE document_id = $1", doc_id)
    declined = [r for r in results if r["amount_fen"] != 0 and r["result_code"] != 0]
    async with change(pool, actor) as tx:
        failure = (f"{len(declined)} of {len(results)} lines were declined by the switch"
                   if declined else "")
        if kind == "cancellation" and not declined:
            failure = await _close_accounts(tx, doc_id)
        if kind == "bank_exception" and not failure:
            from admin_api.finance._bankexc import close_bank_exception

            await close_bank_exception(tx, doc)
        status = Status.FAILED if failure else Status.EXECUTED
        await _move_to(tx.conn, doc, Step.EXECUTE, status,
                       ", executed_at = now(), failure = $3", failure)
        await _step(tx, doc, doc["levels"], Step.EXECUTE, failure)
        tx.audit("document.execute", "document", doc_id, list(doc["node_path"]),
                 before={"status": doc["status"]}, after={"status": status, "failure": failure})
    return await _out(pool, await _doc(pool, actor, doc_id))


async def _move(pool: asyncpg.Pool, money: Money, kind: str, line: asyncpg.Record,
                renew: Any) -> Outcome:
    card = await card_of(pool, line["account_id"])
    amount, wallet, seq = line["amount_fen"], line["wallet"], line["txn_seq"]
    tenant = line["tenant_id"]
    where = {"terminal_id": line["terminal_id"], "renew": renew}
    if kind == "refund":
        return await money.ask("debit", seq, card, 0, amount,
                               await system_account(pool, tenant, "cash_desk"), **where)
    if kind == "subsidy_batch":
        return await money.ask("credit", seq, card, 1, amount,
                               await system_account(pool, tenant, "subsidy_fund"), **where)
    if kind in ("reconciliation", "bank_exception"):
        account = await system_account(pool, tenant, "bank_clearing")
        if amount > 0:
            return await money.ask("credit", seq, card, 0, amount, account, **where)
        return await money.ask("debit", seq, card, 0, -amount, account, **where)
    if kind == "adjustment":
        account = await system_account(pool, tenant, "adjustments")
        if amount > 0:
            return await money.ask("credit", seq, card, wallet, amount, account, **where)
        return await money.ask("debit", seq, card, wallet, -amount, account, **where)
    # cancellation: the balance goes back where it came from.
    purpose = "cash_desk" if wallet == 0 else "subsidy_fund"
    account = await system_account(pool, tenant, purpose)
    if amount > 0:
        return await money.ask("debit", seq, card, wallet, amount, account, **where)
    return await money.ask("credit", seq, card, wallet, -amount, account, **where)


async def _close_accounts(tx: Change, doc_id: int) -> str:
    """Close the refunded accounts and cancel their cards; "" when done, else why not (money
    arrived after the refund: a credit is allowed on a frozen account). Nothing is closed then:
    the accounts stay frozen, and a new cancellation refunds the rest."""
    rows = await tx.conn.fetch(
        "SELECT a.id, a.opening_main_fen + a.opening_subsidy_fen"
        " + coalesce((SELECT sum(main_delta_fen + subsidy_delta_fen) FROM journal j"
        "             WHERE j.account_id = a.id), 0) AS balance"
        " FROM accounts a WHERE a.id IN (SELECT p.account_id FROM document_lines l JOIN people p"
        " ON p.id = l.person_id WHERE l.document_id = $1) ORDER BY a.id FOR UPDATE OF a", doc_id)
    left = [r for r in rows if r["balance"] != 0]
    if left:
        return (f"{len(left)} account(s) still hold money after the refund (it arrived during "
                "the cancellation): not closed; draft a new cancellation for the rest")
    for r in rows:
        account = r["id"]
        await tx.conn.execute("UPDATE accounts SET status = 3 WHERE id = $1", account)
        tx.event(AccountStatusChanged(account, 3))
        cards = await tx.conn.fetch(
            "UPDATE cards SET status = 1, cancelled_at = now(), cancel_reason = 'cancelled'"
            " WHERE account_id = $1 AND status = 0 RETURNING card_no", account)
        for c in cards:
            tx.event(CardCancelled(c["card_no"], account))
    return ""


async def _fail(state: State, actor: Actor, doc: asyncpg.Record, why: str) -> DocumentOut:
    async with change(state.pool, actor) as tx:
        await _move_to(tx.conn, doc, Step.EXECUTE, Status.FAILED, ", failure = $3", why[:500])
        await _step(tx, doc, doc["levels"], Step.EXECUTE, why[:500])
        tx.audit("document.fail", "document", doc["id"], list(doc["node_path"]),
                 before={"status": doc["status"]}, after={"status": Status.FAILED,
                                                          "failure": why})
    return await _out(state.pool, await _doc(state.pool, actor, doc["id"]))


@post("/approval-policies", opt={"permission": "org.write"}, tags=["documents"],
      status_code=200, summary="Set how many approval levels a document type needs in a tenant")
async def set_policy(data: PolicyIn, actor: Actor, state: State) -> PolicyOut:
    path = await node_path(state.pool, data.node_id)
    actor.require_node(path, f"node {data.node_id}")
    async with change(state.pool, actor) as tx:
        node = await tx.conn.fetchrow("SELECT kind, tenant_id FROM org_nodes WHERE id = $1",
                                      data.node_id)
        if node["kind"] != "tenant":
            raise Problem(422, "unprocessable", "approval levels are set per tenant: give the "
                          "tenant's node")
        before = await _levels(tx.conn, node["tenant_id"], data.doc_type)
        if data.levels < before and actor.node_id == data.node_id:
            raise Problem(403, "forbidden", f"fewer approval levels ({before} to {data.levels}) "
                          "are set by an admin above the tenant (its agent or the platform); "
                          "the tenant's own admins may only add levels")
        await tx.conn.execute(
            "INSERT INTO approval_policies VALUES ($1, $2, $3) ON CONFLICT (tenant_id, doc_type)"
            " DO UPDATE SET levels = EXCLUDED.levels", node["tenant_id"], data.doc_type,
            data.levels)
        assert path is not None
        tx.audit("policy.set", "approval_policy", f"{node['tenant_id']}/{data.doc_type}", path,
                 before={"levels": before}, after={"levels": data.levels})
        return PolicyOut(tenant_id=node["tenant_id"], doc_type=data.doc_type,
                         levels=data.levels)


# -- printing ------------------------------------------------------------------------------------

_FONTS: Final = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)


def _yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100:,}.{abs(fen) % 100:02d}"


def render_pdf(doc: DocumentOut) -> bytes:
    """A printable document: header, lines, every approval step. Uses a Unicode font found on
    the system (CJK first); without one, characters outside Latin-1 print as '?'."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    font = next((f for f in _FONTS if Path(f).exists()), None)
    if font:
        pdf.add_font("body", "", font)
        family = "body"

        def text(s: str) -> str:
            return s
    else:
        family = "helvetica"

        def text(s: str) -> str:
            return s.encode("latin-1", "replace").decode("latin-1")

    pdf.set_font(family, size=15)
    pdf.cell(0, 10, text(f"{doc.doc_type.replace('_', ' ').title()} No. {doc.id}: {doc.title}"),
             new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, size=9)
    for label, value in (("Status", f"{doc.status} (version {doc.version})"),
                         ("Tenant", str(doc.tenant_id)), ("Drafted by", doc.created_by),
                         ("Drafted at", doc.created_at.strftime("%Y-%m-%d %H:%M UTC")),
                         ("Approval", f"{doc.approved_levels} of {doc.levels} levels"),
                         ("Total", f"{_yuan(doc.total_fen)} yuan in {doc.lines_count} lines"),
                         ("Reason", doc.reason or "-")):
        pdf.cell(35, 6, text(label))
        pdf.multi_cell(0, 6, text(value), new_x="LMARGIN", new_y="NEXT")
    if doc.failure:
        pdf.multi_cell(0, 6, text(f"Failure: {doc.failure}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    widths = (10, 60, 20, 30, 30, 40)
    pdf.set_font(family, size=9)
    for w, h in zip(widths, ("#", "Person", "Wallet", "Amount (yuan)", "Result", "Note"),
                    strict=True):
        pdf.cell(w, 7, h, border=1)
    pdf.ln()
    for line in doc.lines:
        cells = (str(line.line_no), f"{line.person_name} ({line.person_id})", line.wallet,
                 _yuan(line.amount_fen), line.result or "-", line.note)
        for w, c in zip(widths, cells, strict=True):
            pdf.cell(w, 6, text(c)[:40], border=1)
        pdf.ln()
    pdf.ln(3)
    pdf.set_font(family, size=11)
    pdf.cell(0, 8, "Approval steps", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, size=9)
    for s in doc.steps:
        pdf.multi_cell(0, 6, text(f"{s.at.strftime('%Y-%m-%d %H:%M')}  v{s.version}  level "
                                  f"{s.level}  {s.decision:<8} {s.username}  {s.comment}"),
                       new_x="LMARGIN", new_y="NEXT")
    out = io.BytesIO()
    pdf.output(out)
    return out.getvalue()


@get("/documents/{doc_id:int}/pdf", opt={"permission": "documents.read"}, tags=["documents"],
     summary="The document as a PDF to print and sign", media_type="application/pdf")
async def document_pdf(doc_id: Id, actor: Actor, state: State) -> Response[bytes]:
    doc = await _out(state.pool, await _doc(state.pool, actor, doc_id))
    pdf = await asyncio.to_thread(render_pdf, doc)  # 10,000 lines take a second: not on the loop
    return Response(pdf, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="document-{doc_id}.pdf"'})


ROUTES = [create_document, list_documents, get_document, submit_document, approve_document,
          reject_document, revise_document, execute_document, set_policy, document_pdf]
