"""Statements, card histories, the audit trail, and the cardholder's own view (self-service).

Balances come from the journal: every row carries the wallets' balances after it, so a
statement's running balance is the journal's own, to the fen. What the journal shows is what
is durable; a purchase is answered only once it is, so nothing a cardholder was told is missing.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import Response, get, post
from litestar.datastructures import CacheControlHeader, State
from litestar.openapi import ResponseSpec
from litestar.params import Parameter

from admin_api._auth import Actor
from admin_api._downloads import DownloadOperation, download
from admin_api._problems import MEDIA_TYPE, Problem, ProblemBody
from admin_api._routes_people import (
    ACCOUNT_STATUS,
    CardOut,
    PersonOut,
    card_in_scope,
    card_out,
    person_in_scope,
    person_out,
    report_loss_tx,
)
from admin_api._store import change
from admin_api._types import After, CardNoParam, Id, Limit, OptionalId
from protocols import limits, ocp, qr

KIND_NAMES = {1: "purchase", 2: "reversal", 3: "inquiry", 4: "hold", 5: "capture",
              6: "release", 7: "expiry", 8: "credit", 9: "debit", 10: "transfer"}
CODE_NAMES = {int(c): c.name for c in ocp.ResponseCode}


class Entry(msgspec.Struct):
    """One journal row as a statement line. Amounts in fen; deltas are the wallet's change."""

    lsn: int
    at: dt.datetime
    kind: str
    result: str
    terminal_id: int
    txn_seq: int
    card_no: int
    merchant_id: int
    merchant: str
    amount_fen: int
    main_delta_fen: int
    subsidy_delta_fen: int
    main_balance_fen: int
    subsidy_balance_fen: int
    balance_fen: int


class Statement(msgspec.Struct):
    person_id: int
    account_id: int
    items: list[Entry]
    next_after_lsn: int | None


class Balance(msgspec.Struct):
    person_id: int
    account_id: int
    account_status: str
    main_fen: int
    subsidy_fen: int
    balance_fen: int
    as_of_lsn: int


class AuditEntry(msgspec.Struct):
    id: int
    at: dt.datetime
    username: str
    role: str
    client_ip: str
    action: str
    entity: str
    entity_id: str
    before: Any
    after: Any


class AuditPage(msgspec.Struct):
    items: list[AuditEntry]
    next_after: int | None


_ENTRY_SELECT = (
    "SELECT j.lsn, j.committed_at, j.kind, j.code, j.terminal_id, j.txn_seq, j.card_no,"
    " j.merchant_id, coalesce(m.name, '') AS merchant, j.amount_fen, j.main_delta_fen,"
    " j.subsidy_delta_fen, j.main_fen, j.subsidy_fen"
    " FROM journal j LEFT JOIN merchants m ON m.id = j.merchant_id"
)


def entry(r: asyncpg.Record) -> Entry:
    return Entry(lsn=r["lsn"], at=r["committed_at"], kind=KIND_NAMES.get(r["kind"], str(r["kind"])),
                 result=CODE_NAMES.get(r["code"], str(r["code"])), terminal_id=r["terminal_id"],
                 txn_seq=r["txn_seq"], card_no=r["card_no"], merchant_id=r["merchant_id"],
                 merchant=r["merchant"], amount_fen=r["amount_fen"],
                 main_delta_fen=r["main_delta_fen"], subsidy_delta_fen=r["subsidy_delta_fen"],
                 main_balance_fen=r["main_fen"], subsidy_balance_fen=r["subsidy_fen"],
                 balance_fen=r["main_fen"] + r["subsidy_fen"])


async def statement_of(pool: asyncpg.Pool, person: asyncpg.Record, after_lsn: int, limit: int,
                       with_inquiries: bool) -> Statement:
    rows = await pool.fetch(
        _ENTRY_SELECT + " WHERE j.account_id = $1 AND j.lsn > $2 AND ($3 OR j.kind <> 3)"
        " ORDER BY j.lsn LIMIT $4", person["account_id"], after_lsn, with_inquiries, limit + 1)
    items = [entry(r) for r in rows[:limit]]
    return Statement(person_id=person["id"], account_id=person["account_id"], items=items,
                     next_after_lsn=items[-1].lsn if len(rows) > limit else None)


async def balance_of(pool: Any, person: Any) -> Balance:
    """From the journal; `person` needs id, account_id and account_status."""
    row = await pool.fetchrow(
        "SELECT (a.opening_main_fen + coalesce(sum(j.main_delta_fen), 0))::bigint AS main,"
        " (a.opening_subsidy_fen + coalesce(sum(j.subsidy_delta_fen), 0))::bigint AS subsidy,"
        " coalesce(max(j.lsn), 0) AS lsn"
        " FROM accounts a LEFT JOIN journal j ON j.account_id = a.id"
        " WHERE a.id = $1 GROUP BY a.id", person["account_id"])
    return Balance(person_id=person["id"], account_id=person["account_id"],
                   account_status=ACCOUNT_STATUS[person["account_status"]],
                   main_fen=row["main"],
                   subsidy_fen=row["subsidy"], balance_fen=row["main"] + row["subsidy"],
                   as_of_lsn=row["lsn"])


EXPORT_ROWS_MAX = 100_000


async def _export(format: Any, name: str, rows: list[asyncpg.Record]) -> Response[Any]:
    if len(rows) > EXPORT_ROWS_MAX:
        raise Problem(422, "unprocessable", f"more than {EXPORT_ROWS_MAX} rows: download in parts "
                      "(after_lsn)")
    return await download(format, name, [entry(r) for r in rows], Entry.__struct_fields__)


Format = Annotated[Literal["json", "csv", "xlsx"], Parameter(
    description="json (a page), or csv / xlsx: a download of every row after after_lsn (at most "
    f"{EXPORT_ROWS_MAX})")]


@get("/people/{person_id:int}/statement", opt={"permission": "people.read"},
     tags=["reports"], operation_class=DownloadOperation,
     summary="A person's statement: every transaction, with running balance (JSON, CSV, XLSX)")
async def person_statement(person_id: Id, actor: Actor, state: State, after_lsn: After = 0,
                           limit: Limit = 200, inquiries: bool = False,
                           format: Format = "json") -> Response[Statement]:
    person = await person_in_scope(state.pool, actor, person_id)
    if format != "json":
        rows = await state.pool.fetch(
            _ENTRY_SELECT + " WHERE j.account_id = $1 AND j.lsn > $2 AND ($3 OR j.kind <> 3)"
            " ORDER BY j.lsn LIMIT $4", person["account_id"], after_lsn, inquiries,
            EXPORT_ROWS_MAX + 1)
        return await _export(format, f"statement-{person_id}", rows)
    return Response(await statement_of(state.pool, person, after_lsn, limit, inquiries))


@get("/people/{person_id:int}/balance", opt={"permission": "people.read"}, tags=["reports"],
     summary="A person's balance (main and subsidy wallets) as journaled")
async def person_balance(person_id: Id, actor: Actor, state: State) -> Balance:
    return await balance_of(state.pool, await person_in_scope(state.pool, actor, person_id))


@get("/cards/{card_no:int}/history", opt={"permission": "cards.read"}, tags=["reports"],
     operation_class=DownloadOperation,
     summary="A card's transactions (the account's other cards excluded; JSON, CSV, XLSX)")
async def card_history(card_no: CardNoParam, actor: Actor, state: State, after_lsn: After = 0,
                       limit: Limit = 200, format: Format = "json") -> Response[list[Entry]]:
    card = await card_in_scope(state.pool, actor, card_no)
    export = format != "json"
    rows = await state.pool.fetch(
        _ENTRY_SELECT + " WHERE j.account_id = $1 AND j.card_no = $2 AND j.lsn > $3"
        " ORDER BY j.lsn LIMIT $4", card["account_id"], card_no, after_lsn,
        EXPORT_ROWS_MAX + 1 if export else limit)
    if export:
        return await _export(format, f"card-{card_no}", rows)
    return Response([entry(r) for r in rows])


@get("/audit", opt={"permission": "audit.read"}, tags=["audit"],
     summary="The audit trail of your subtree, oldest first (read-only: no route changes it)")
async def audit_trail(actor: Actor, state: State,
                      entity: Annotated[str | None, Parameter(max_length=40)] = None,
                      entity_id: Annotated[str | None, Parameter(max_length=40)] = None,
                      action: Annotated[str | None, Parameter(max_length=60)] = None,
                      person_id: OptionalId = None,
                      after: After = 0, limit: Limit = 200) -> AuditPage:
    """`person_id`: only the rows about that person: the person (entity `person`), the
    cards of their account (`card`) and the documents with a line of theirs (`document`).
    404 when the person is not in your subtree, as the person routes answer."""
    subjects: list[tuple[str, str]] | None = None
    if person_id is not None:
        person = await person_in_scope(state.pool, actor, person_id)
        cards = await state.pool.fetch("SELECT card_no FROM cards WHERE account_id = $1",
                                       person["account_id"])
        docs = await state.pool.fetch(
            "SELECT DISTINCT document_id FROM document_lines WHERE person_id = $1", person_id)
        subjects = ([("person", str(person_id))] + [("card", str(r["card_no"])) for r in cards]
                    + [("document", str(r["document_id"])) for r in docs])
    rows = await state.pool.fetch(
        "SELECT id, at, username, role, client_ip, action, entity, entity_id,"
        " before::text, after::text FROM audit_log"
        " WHERE $1 = ANY(node_path) AND id > $2 AND ($3::text IS NULL OR entity = $3)"
        " AND ($4::text IS NULL OR entity_id = $4) AND ($5::text IS NULL OR action = $5)"
        " AND ($7::text[] IS NULL OR (entity, entity_id) IN"
        "  (SELECT * FROM unnest($7::text[], $8::text[])))"
        " ORDER BY id LIMIT $6", actor.node_id, after, entity, entity_id, action, limit + 1,
        None if subjects is None else [e for e, _ in subjects],
        None if subjects is None else [i for _, i in subjects])
    items = [
        AuditEntry(id=r["id"], at=r["at"], username=r["username"], role=r["role"],
                   client_ip=r["client_ip"], action=r["action"], entity=r["entity"],
                   entity_id=r["entity_id"],
                   before=msgspec.json.decode(r["before"]) if r["before"] else None,
                   after=msgspec.json.decode(r["after"]) if r["after"] else None)
        for r in rows[:limit]
    ]
    return AuditPage(items=items, next_after=items[-1].id if len(rows) > limit else None)


# -- self-service: the cardholder's phone app, and parents ----------------------------------------


async def _own_person(state: State, actor: Actor, person_id: Id) -> asyncpg.Record:
    if not actor.sees_person(person_id):
        raise Problem(404, "not-found", f"no person {person_id} among yours")
    row = await state.pool.fetchrow(
        "SELECT p.id, p.node_id, p.tenant_id, p.name, p.class_id, p.external_id, p.phone,"
        " p.account_id, a.status AS account_status FROM people p"
        " JOIN accounts a ON a.id = p.account_id WHERE p.id = $1", person_id)
    if row is None:
        raise Problem(404, "not-found", f"no person {person_id} among yours")
    return row


@get("/self/people", opt={"permission": "self"}, tags=["self-service"],
     summary="Me (a cardholder) or my children (a parent)")
async def self_people(actor: Actor, state: State) -> list[PersonOut]:
    ids = [actor.person_id] if actor.role == "cardholder" else actor.children
    return [person_out(await _own_person(state, actor, pid)) for pid in ids if pid is not None]


@get("/self/people/{person_id:int}/balance", opt={"permission": "self"},
     tags=["self-service"], summary="My (or my child's) balance")
async def self_balance(person_id: Id, actor: Actor, state: State) -> Balance:
    return await balance_of(state.pool, await _own_person(state, actor, person_id))


@get("/self/people/{person_id:int}/transactions", opt={"permission": "self"},
     tags=["self-service"], summary="My (or my child's) transactions, with running balance")
async def self_transactions(person_id: Id, actor: Actor, state: State, after_lsn: After = 0,
                            limit: Limit = 100) -> Statement:
    person = await _own_person(state, actor, person_id)
    return await statement_of(state.pool, person, after_lsn, limit, False)


@get("/self/people/{person_id:int}/cards", opt={"permission": "self"}, tags=["self-service"],
     summary="My (or my child's) cards")
async def self_cards(person_id: Id, actor: Actor, state: State) -> list[CardOut]:
    from admin_api._routes_people import _CARD_SELECT

    await _own_person(state, actor, person_id)
    rows = await state.pool.fetch(_CARD_SELECT + " WHERE p.id = $1 ORDER BY c.issued_at",
                                  person_id)
    return [card_out(r) for r in rows]


@post("/self/cards/{card_no:int}/report-loss", opt={"permission": "self"},
      tags=["self-service"], status_code=200,
      summary="Report my card lost: refused everywhere within a second")
async def self_report_loss(card_no: CardNoParam, actor: Actor, state: State) -> CardOut:
    from admin_api._routes_people import _CARD_SELECT

    if actor.role != "cardholder":
        raise Problem(403, "forbidden", "a cardholder reports their own card lost; a parent "
                      "asks the card office")
    async with change(state.pool, actor) as tx:
        card = await tx.conn.fetchrow(_CARD_SELECT + " WHERE c.card_no = $1 FOR UPDATE OF c, a",
                                      card_no)
        if card is None or card["person_id"] != actor.person_id:
            raise Problem(404, "not-found", f"no card {card_no} among yours")
        return await report_loss_tx(tx, card)


class QrCode(msgspec.Struct):
    """A phone QR code: show `token` as a QR code; a POS sends it to the switch (QrPurchase)."""

    person_id: int
    card_no: int
    """The card the code pays with: the account's most recently issued active card."""
    token: str
    """The QR code's text (58 characters of the QR alphanumeric alphabet). It pays once."""
    issued_at: dt.datetime
    expires_at: dt.datetime
    expires_in: int
    """Seconds from now: fetch a new code before then."""


_ACTIVE_CARD_SQL = (
    "SELECT c.card_no FROM cards c JOIN people p ON p.account_id = c.account_id"
    " JOIN tenants t ON t.id = p.tenant_id"
    " WHERE p.id = $1 AND c.status = 0 AND (c.valid_until IS NULL"
    " OR c.valid_until >= (now() + make_interval(secs => t.utc_offset_s))::date)"
    " ORDER BY c.issued_at DESC, c.card_no DESC LIMIT 1"
)


@get("/self/people/{person_id:int}/qr", opt={"permission": "self"}, tags=["self-service"],
     cache_control=CacheControlHeader(no_store=True),
     responses={503: ResponseSpec(ProblemBody, media_type=MEDIA_TYPE, generate_examples=False,
                                  description="The API has no master_secret: no QR codes")},
     summary="Show my QR code: pays once at a POS, in place of my card, for a minute")
async def self_qr(person_id: Id, actor: Actor, state: State) -> QrCode:
    """A fresh code on every call, signed with the site's QR key (docs/protocol.md section
    4.4). Only the cardholder themself: a parent is refused (403), because a code spends the
    account's money. 409 when the account is not active (lost, frozen, closed) or has no
    active card. Not audited (a read); nothing is stored: the switch lets each code pay once."""
    if actor.role != "cardholder":
        raise Problem(403, "forbidden", "only the cardholder gets a QR code to pay with; a "
                      "parent cannot pay with their child's account")
    person = await _own_person(state, actor, person_id)
    secret: str = state.settings.master_secret
    if not secret:
        raise Problem(503, "not-configured", "the admin API has no master_secret (setting "
                      "ONECARD_ADMIN_MASTER_SECRET): it cannot issue QR codes")
    status = person["account_status"]
    if status != 0:
        raise Problem(409, "account-not-active", f"the account is {ACCOUNT_STATUS[status]}: "
                      "it cannot pay, so there is no QR code")
    card_no = await state.pool.fetchval(_ACTIVE_CARD_SQL, person_id)
    if card_no is None:
        raise Problem(409, "no-active-card", "no active card to pay with: the card office "
                      "issues one")
    seconds: int = state.settings.qr_seconds
    now = int(time.time())
    token = qr.issue(qr.derive_qr_key(bytes.fromhex(secret)), card_no, now + seconds,
                     secrets.token_bytes(limits.QR_NONCE_BYTES), issued_s=now)
    return QrCode(person_id=person_id, card_no=card_no, token=token,
                  issued_at=dt.datetime.fromtimestamp(now, dt.UTC),
                  expires_at=dt.datetime.fromtimestamp(now + seconds, dt.UTC),
                  expires_in=seconds)


ROUTES = [person_statement, person_balance, card_history, audit_trail, self_people,
          self_balance, self_transactions, self_cards, self_report_loss, self_qr]
