"""Bank exceptions: reversal advices the bank never acknowledged, resolved by finance.

After `bank_advice_tries_max` unacknowledged tries the switch (switch/_topup.py) hands a
reversal advice to a person: a document of type `bank_exception` (status submitted, no lines,
`bank_topup_id` naming the top-up), the advice and the top-up in state `exception`. Nobody
knows whether the bank debited the salary card; someone calls the bank, then chooses here:

- retry (the bank link is back): the advice goes back to `pending` with tries 1 (its next send
  is a repeat, 0421), the top-up to `reversal_pending`; the switch's repeater sends it and the
  bank's acknowledgement ends the top-up `reversed` (or, unacknowledged again, a new exception).
- credit (the bank confirms it debited the salary card): the document's one line credits the
  top-up's amount to the wallet from the bank clearing account at the switch (its admin
  terminal, under the txn_seq drawn at approval: once); the top-up ends `approved` with `lsn`
  that credit's journal row (so the bank file's line matches it), the advice `resolved`.
- write_off (the bank confirms nothing was debited): nothing moves; the top-up ends `reversed`
  (as when the bank answers 25 to an advice), the advice `resolved`.

Choosing is `POST /bank-exceptions/{id}/resolve` (finance.write), with a note: the step
`resolve` of the document, a new version submitted again. It is approved through `POST
/documents/{id}/approve` by someone else (documents.approve: the finance role, or an admin;
never whoever chose, nor a log-in they made), its last approval executes it once. A rejected
or failed resolution leaves the exception open to choose again. The money moves once however
often either request is posted: the document row is locked for each step, its state moves only
forward, and the credit's txn_seq is drawn once with the approval.

A top-up the reconciliation with the bank's file (admin_api/finance/_reconcile.py) also found
is resolved in one place only: a bank exception is not resolved while a reconciliation
exception of its top-up moves (or moved) money for it, and that exception moves no money
(credit or reverse) while the bank exception is open or chose a credit (a write-off closes
it).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Final, Literal

import asyncpg
import msgspec
from litestar import Response, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from msgspec import Meta

from admin_api._auth import Actor
from admin_api._downloads import DownloadOperation, Format, download_all, rows_wanted
from admin_api._problems import Problem
from admin_api._routes_documents import Status, Step, _doc, _levels, _move_to, _step
from admin_api._routes_merchants import tenant_in_scope
from admin_api._store import Change, change
from admin_api._types import AfterId, Id, Limit

BankAction = Literal["retry", "credit", "write_off"]
BankExceptionStatus = Literal["open", "resolving", "resolved"]
LIVE: Final = ["submitted", "approved", "executed"]
"""A document in one of these states is resolving (or resolved) its case."""


class BankExceptionOut(msgspec.Struct):
    """A reversal advice the bank never acknowledged, and how it is being resolved."""

    id: int
    """The bank_exception document's id."""
    tenant_id: int
    status: str
    """open (no resolution chosen, or a rejected or failed one), resolving (chosen, waiting
    for approval or being carried out), resolved (executed)."""
    document_status: str
    version: int
    title: str
    reason: str
    """The switch's words: the tries and the last error."""
    created_at: dt.datetime
    topup_id: int
    rrn: str
    stan: int
    terminal_id: int
    txn_seq: int
    account_id: int
    card_no: int
    amount_fen: int
    topup_state: str
    advice_state: str | None
    advice_tries: int | None
    advice_last_error: str | None
    action: str | None
    """The current version's resolution: retry, credit or write_off (null: none chosen)."""
    note: str | None
    proposed_by: str | None
    proposed_at: dt.datetime | None
    credited_fen: int
    """What the document credited (0 but for an executed credit)."""


class BankExceptionPage(msgspec.Struct):
    items: list[BankExceptionOut]
    next_after: int | None


class BankResolveIn(msgspec.Struct, forbid_unknown_fields=True):
    action: BankAction
    """retry: send the advice again (the bank link is back); credit: the bank debited the salary
    card, credit the wallet from the bank clearing account; write_off: the bank debited
    nothing, close with nothing moved."""
    note: Annotated[str, Meta(min_length=1, max_length=2000)]
    """Why: whom at the bank you spoke to, their reference."""


_SELECT: Final = """
SELECT d.id, d.tenant_id, d.status AS document_status, d.version, d.title, d.reason,
       d.created_at, d.node_path,
       CASE WHEN d.status = 'executed' THEN 'resolved'
            WHEN d.status = 'approved' OR (d.status = 'submitted' AND r.document_id IS NOT NULL)
            THEN 'resolving' ELSE 'open' END AS status,
       t.id AS topup_id, t.rrn, t.stan, t.terminal_id, t.txn_seq, t.account_id, t.card_no,
       t.amount_fen, t.state AS topup_state, v.state AS advice_state, v.tries AS advice_tries,
       v.last_error AS advice_last_error, r.action, r.note, u.username AS proposed_by,
       r.proposed_at,
       coalesce((SELECT sum(l.done_fen) FROM document_lines l WHERE l.document_id = d.id
                 AND l.result_code = 0), 0)::bigint AS credited_fen
FROM documents d
JOIN bank_topups t ON t.id = d.bank_topup_id
LEFT JOIN bank_advices v ON v.topup_id = t.id
LEFT JOIN bank_exception_resolutions r ON r.document_id = d.id AND r.version = d.version
LEFT JOIN admin_users u ON u.id = r.proposed_by
"""


def _out(r: Any) -> BankExceptionOut:
    return BankExceptionOut(**{f: r[f] for f in BankExceptionOut.__struct_fields__})


async def _one(conn: Any, actor: Actor, exception_id: int) -> Any:
    row = await conn.fetchrow(_SELECT + " WHERE d.id = $1 AND d.doc_type = 'bank_exception'",
                              exception_id)
    actor.require_node(list(row["node_path"]) if row else None,
                       f"bank exception {exception_id}")
    return row


@get("/tenants/{tenant_id:int}/bank-exceptions", opt={"permission": "finance.read"},
     tags=["finance"], operation_class=DownloadOperation,
     summary="Reversal advices the bank never acknowledged (bank exceptions): a JSON page, or a "
     "CSV / XLSX download")
async def list_bank_exceptions(
        tenant_id: Id, actor: Actor, state: State,
        status: Annotated[BankExceptionStatus | None, Parameter(
            description="open, resolving or resolved")] = None,
        after: AfterId = 0, limit: Limit = 100, format: Format = "json"
) -> Response[BankExceptionPage]:
    await tenant_in_scope(state.pool, actor, tenant_id)
    wanted = rows_wanted(format, limit)
    rows = await state.pool.fetch(
        f"SELECT * FROM ({_SELECT} WHERE d.tenant_id = $1 AND d.doc_type = 'bank_exception'"
        " AND d.id > $2) x WHERE ($3::text IS NULL OR x.status = $3) ORDER BY x.id LIMIT $4",
        tenant_id, after, status, wanted + 1)
    items = [_out(r) for r in rows[:wanted]]
    if format != "json":
        return await download_all(format, f"tenant-{tenant_id}-bank-exceptions", items,
                                  BankExceptionOut.__struct_fields__, more=len(rows) > wanted,
                                  what="bank exceptions: narrow the selection (status, after)")
    return Response(BankExceptionPage(items=items,
                                      next_after=items[-1].id if len(rows) > limit else None))


@get("/bank-exceptions/{bank_exception_id:int}", opt={"permission": "finance.read"},
     tags=["finance"], summary="A bank exception: its top-up, advice and resolution")
async def get_bank_exception(bank_exception_id: Id, actor: Actor, state: State
                             ) -> BankExceptionOut:
    return _out(await _one(state.pool, actor, bank_exception_id))


@post("/bank-exceptions/{bank_exception_id:int}/resolve", opt={"permission": "finance.write"},
      tags=["finance"], status_code=200,
      summary="Choose how a bank exception ends (retry, credit or write off), with a note; "
      "another person's approval of its document carries it out, once")
async def resolve_bank_exception(bank_exception_id: Id, data: BankResolveIn, actor: Actor,
                                 state: State) -> BankExceptionOut:
    if actor.user_id <= 0:
        raise Problem(403, "forbidden", "documents need a log-in, not an API key")
    async with change(state.pool, actor) as tx:
        await _one(tx.conn, actor, bank_exception_id)  # 404 outside the subtree
        doc = await _doc(tx.conn, actor, bank_exception_id, lock=True)
        path = list(doc["node_path"])
        chosen = await tx.conn.fetchrow(
            "SELECT action FROM bank_exception_resolutions WHERE document_id = $1"
            " AND version = $2", doc["id"], doc["version"])
        if doc["status"] == Status.EXECUTED:
            raise Problem(409, "conflict", f"bank exception {doc['id']} is resolved "
                          f"({chosen['action'] if chosen else 'closed'}): it is resolved once")
        if doc["status"] == Status.APPROVED or (doc["status"] == Status.SUBMITTED and chosen):
            raise Problem(409, "conflict", f"bank exception {doc['id']} is being resolved "
                          f"({chosen['action'] if chosen else ''}, {doc['status']}): it is "
                          "resolved once; a rejection lets you choose again")
        if doc["status"] not in (Status.SUBMITTED, Status.REJECTED, Status.FAILED):
            raise Problem(409, "conflict", f"bank exception {doc['id']} is {doc['status']}")
        topup = await tx.conn.fetchrow("SELECT * FROM bank_topups WHERE id = $1 FOR UPDATE",
                                       doc["bank_topup_id"])
        advice = await tx.conn.fetchrow("SELECT * FROM bank_advices WHERE topup_id = $1",
                                        doc["bank_topup_id"])
        if (topup["state"] != "exception" or advice is None or advice["state"] != "exception"
                or advice["document_id"] != doc["id"]):
            raise Problem(409, "conflict", f"top-up {topup['id']} is {topup['state']} (its "
                          "advice is no longer this exception's): nothing to resolve here")
        other = await tx.conn.fetchrow(
            "SELECT e.id, d.id AS document_id FROM reconciliation_exceptions e JOIN documents d"
            " ON d.id = e.document_id WHERE e.topup_id = $1 AND d.status = ANY($2::text[])"
            " AND d.lines_count > 0 LIMIT 1", topup["id"], LIVE)
        if other is not None:
            raise Problem(409, "conflict", f"top-up {topup['id']} is resolved through "
                          f"reconciliation exception {other['id']} (document "
                          f"{other['document_id']}): it is resolved in one place only")
        if await tx.conn.fetchval("SELECT true FROM document_lines WHERE document_id = $1"
                                  " AND result_code = 0", doc["id"]):
            raise Problem(409, "conflict", "this exception's document has moved money")
        person = None
        if data.action == "credit":
            person = await tx.conn.fetchval("SELECT id FROM people WHERE account_id = $1",
                                            topup["account_id"])
            if person is None:
                raise Problem(409, "conflict", f"account {topup['account_id']} has no person "
                              "in the admin API (onecard admin-init adopts accounts)")
        amount = topup["amount_fen"] if person is not None else 0
        version = doc["version"] + 1
        await tx.conn.execute("DELETE FROM document_lines WHERE document_id = $1", doc["id"])
        if person is not None:
            await tx.conn.execute(
                "INSERT INTO document_lines (document_id, line_no, person_id, wallet,"
                " amount_fen, note) VALUES ($1, 1, $2, 0, $3, $4)", doc["id"], person, amount,
                f"bank exception rrn {topup['rrn']}")
        await tx.conn.execute(
            "INSERT INTO bank_exception_resolutions (document_id, version, action, note,"
            " proposed_by) VALUES ($1, $2, $3, $4, $5)", doc["id"], version, data.action,
            data.note, actor.user_id)
        await _move_to(tx.conn, doc, Step.RESOLVE, Status.SUBMITTED,
                       ", version = $3, approved_levels = 0, levels = $4, total_fen = $5,"
                       " lines_count = $6, failure = '', submitted_at = now(),"
                       " decided_at = NULL", version,
                       await _levels(tx.conn, doc["tenant_id"], "bank_exception"), amount,
                       0 if person is None else 1)
        await _step(tx, doc, 0, Step.RESOLVE, data.note[:500], version=version)
        tx.audit("bank_exception.resolve", "bank_exception", doc["id"], path,
                 before={"status": doc["status"], "version": doc["version"]},
                 after={"status": Status.SUBMITTED, "version": version,
                        "action": data.action, "amount_fen": amount, "person_id": person,
                        "note": data.note})
        row = await _one(tx.conn, actor, bank_exception_id)
    return _out(row)


async def close_bank_exception(tx: Change, doc: asyncpg.Record) -> None:
    """The executed bank_exception document's resolution, applied to its top-up and advice (in
    the transaction that marks the document executed: once)."""
    topup_id = doc["bank_topup_id"]
    action = await tx.conn.fetchval("SELECT action FROM bank_exception_resolutions WHERE"
                                    " document_id = $1 AND version = $2", doc["id"],
                                    doc["version"])
    before = await tx.conn.fetchrow(
        "SELECT t.state AS topup_state, v.state AS advice_state FROM bank_topups t"
        " LEFT JOIN bank_advices v ON v.topup_id = t.id WHERE t.id = $1 FOR UPDATE OF t",
        topup_id)
    if action == "retry":
        topup_state, advice_state, lsn = "reversal_pending", "pending", None
        # tries 1: the repeater's next send is a repeat (0421), due now.
        await tx.conn.execute(
            "UPDATE bank_advices SET state = 'pending', tries = 1, next_at = now(),"
            " updated_at = now() WHERE topup_id = $1 AND state = 'exception'", topup_id)
        await tx.conn.execute(
            "UPDATE bank_topups SET state = 'reversal_pending', updated_at = now()"
            " WHERE id = $1 AND state = 'exception'", topup_id)
    else:
        advice_state = "resolved"
        topup_state = "approved" if action == "credit" else "reversed"
        lsn = None
        if action == "credit":
            lsn = await tx.conn.fetchval(
                "SELECT j.lsn FROM document_lines l JOIN journal j ON j.terminal_id ="
                " l.terminal_id AND j.txn_seq = l.txn_seq AND j.code = 0 WHERE l.document_id"
                " = $1 AND l.result_code = 0", doc["id"])
        await tx.conn.execute(
            "UPDATE bank_advices SET state = 'resolved', updated_at = now()"
            " WHERE topup_id = $1 AND state = 'exception'", topup_id)
        await tx.conn.execute(
            "UPDATE bank_topups SET state = $2, code = CASE WHEN $3::bigint IS NULL THEN code"
            " ELSE 0 END, lsn = coalesce($3, lsn), updated_at = now()"
            " WHERE id = $1 AND state = 'exception'", topup_id, topup_state, lsn)
    tx.audit("bank_exception.close", "bank_topup", topup_id, list(doc["node_path"]),
             before=dict(before) if before else None,
             after={"action": action, "topup_state": topup_state,
                    "advice_state": advice_state, "lsn": lsn, "document_id": doc["id"]})


async def bank_exception_conflict(conn: Any, topup_id: int | None) -> str | None:
    """Why a reconciliation exception of this top-up may not move money (credit or reverse),
    or None: its bank exception is open (resolve that one), or chose or carried out a
    credit."""
    if topup_id is None:
        return None
    row = await conn.fetchrow(
        "SELECT d.id, d.status, r.action, t.state FROM documents d JOIN bank_topups t"
        " ON t.id = d.bank_topup_id LEFT JOIN bank_exception_resolutions r"
        " ON r.document_id = d.id AND r.version = d.version WHERE d.doc_type = 'bank_exception'"
        " AND d.bank_topup_id = $1 AND (t.state = 'exception' OR (r.action = 'credit'"
        " AND d.status = ANY($2::text[]))) ORDER BY d.id DESC LIMIT 1", topup_id, LIVE)
    if row is None:
        return None
    if row["action"] == "credit" and row["status"] in LIVE:
        return (f"top-up {topup_id} is credited by bank exception {row['id']} "
                f"({row['status']}): it is resolved in one place only; write this one off")
    return (f"top-up {topup_id} is bank exception {row['id']}, not resolved yet: resolve it "
            f"there (POST /bank-exceptions/{row['id']}/resolve)")


ROUTES = [list_bank_exceptions, get_bank_exception, resolve_bank_exception]
