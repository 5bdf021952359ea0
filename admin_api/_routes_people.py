"""People (cardholders), their accounts, cards and other credentials; the card lifecycle.

Every change goes out on the change feed in its own transaction (`_store.change`), so a card
reported lost is refused by every switch within about a second and a new card works as soon.
Losing a card is an account state (the switch refuses every card of a lost account). A new
identity class goes out too (AccountClassChanged): its limits apply from the next purchase.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import get, post
from litestar.datastructures import State
from litestar.params import Parameter
from msgspec import Meta

from admin_api._auth import Actor
from admin_api._problems import Problem
from admin_api._store import Change, change, next_id, node_path, subtree_root
from admin_api._types import BIG_MAX, AfterId, CardNoParam, Id, IdField, Limit, OptionalId
from protocols.changes import (
    AccessChanged,
    AccountClassChanged,
    AccountOpened,
    AccountStatusChanged,
    CardBound,
    CardCancelled,
)

ACCOUNTS_MAX = 50_000_000
CARD_NO_MAX = BIG_MAX
CardNo = Annotated[int, Meta(ge=1, le=CARD_NO_MAX)]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
ExternalId = Annotated[str, Meta(min_length=1, max_length=64)]

AccountStatus = Literal["active", "frozen", "lost", "closed"]
ACCOUNT_STATUS: dict[int, AccountStatus] = {0: "active", 1: "frozen", 2: "lost", 3: "closed"}
CardStatus = Literal[AccountStatus, "cancelled"]


def card_status(card: int, account: int) -> CardStatus:
    """What a card does at a terminal, in the accounts' words: "cancelled" when the card is
    dead for good (replaced, expired, its account cancelled), else its account's status (a
    loss or a freeze is on the account, so every card of it is refused alike)."""
    return "cancelled" if card == 1 else ACCOUNT_STATUS[account]


CardType = Literal["standard", "special_shaped", "electronic_student_id", "temporary"]


ClassId = Annotated[int, Meta(ge=1, le=255)]


class PersonIn(msgspec.Struct, forbid_unknown_fields=True):
    node_id: IdField
    """The tenant or department the person belongs to."""
    name: Name
    class_id: ClassId
    external_id: ExternalId | None = None
    """The person's id in the HR or academic system (unique in the tenant)."""
    phone: Annotated[str, Meta(max_length=32)] = ""


class PersonOut(msgspec.Struct):
    id: int
    node_id: int
    tenant_id: int
    name: str
    class_id: int
    external_id: str | None
    phone: str
    account_id: int
    account_status: str


class ClassChangeIn(msgspec.Struct, forbid_unknown_fields=True):
    class_id: ClassId
    """The identity class (student, staff, visitor...: GET /classes) from now on."""


class PersonPage(msgspec.Struct):
    items: list[PersonOut]
    next_after: int | None
    """Pass as `after` for the next page; null on the last page."""


class CardIn(msgspec.Struct, forbid_unknown_fields=True):
    card_no: CardNo
    """The number the terminals read from the card."""
    printed_no: Annotated[str, Meta(max_length=32)] = ""
    chip_uid: Annotated[str, Meta(pattern=r"^[0-9A-F]{8,20}$")] | None = None
    card_type: CardType = "standard"
    valid_until: dt.date | None = None


class CardOut(msgspec.Struct):
    card_no: int
    person_id: int
    account_id: int
    status: CardStatus
    """"active" (it spends), "frozen", "lost", "closed" (its account's status) or "cancelled"
    (this card never works again; `cancel_reason` says why)."""
    account_status: str
    printed_no: str
    chip_uid: str | None
    card_type: str
    valid_until: dt.date | None
    issued_at: dt.datetime
    cancelled_at: dt.datetime | None
    cancel_reason: str | None


class ReplaceIn(msgspec.Struct, forbid_unknown_fields=True):
    new_card: CardIn


class CredentialIn(msgspec.Struct, forbid_unknown_fields=True):
    kind: Literal["face", "fingerprint"]
    template_id: Annotated[str, Meta(min_length=1, max_length=128)]


class CredentialOut(msgspec.Struct):
    id: int
    person_id: int
    kind: str
    template_id: str


_PERSON_SELECT = (
    "SELECT p.id, p.node_id, p.tenant_id, p.name, p.class_id, p.external_id, p.phone,"
    " p.account_id, a.status AS account_status, n.path"
    " FROM people p JOIN accounts a ON a.id = p.account_id JOIN org_nodes n ON n.id = p.node_id"
)
_CARD_SELECT = (
    "SELECT c.card_no, p.id AS person_id, c.account_id, c.status, a.status AS account_status,"
    " c.printed_no, c.chip_uid, c.card_type, c.valid_until, c.issued_at, c.cancelled_at,"
    " c.cancel_reason, n.path, p.node_id"
    " FROM cards c JOIN accounts a ON a.id = c.account_id"
    " JOIN people p ON p.account_id = c.account_id JOIN org_nodes n ON n.id = p.node_id"
)


def person_out(r: asyncpg.Record) -> PersonOut:
    return PersonOut(id=r["id"], node_id=r["node_id"], tenant_id=r["tenant_id"], name=r["name"],
                     class_id=r["class_id"], external_id=r["external_id"], phone=r["phone"],
                     account_id=r["account_id"],
                     account_status=ACCOUNT_STATUS[r["account_status"]])


def card_out(r: asyncpg.Record) -> CardOut:
    return CardOut(card_no=r["card_no"], person_id=r["person_id"], account_id=r["account_id"],
                   status=card_status(r["status"], r["account_status"]),
                   account_status=ACCOUNT_STATUS[r["account_status"]],
                   printed_no=r["printed_no"], chip_uid=r["chip_uid"], card_type=r["card_type"],
                   valid_until=r["valid_until"], issued_at=r["issued_at"],
                   cancelled_at=r["cancelled_at"], cancel_reason=r["cancel_reason"])


async def person_in_scope(conn: Any, actor: Actor, person_id: Id, *, lock: bool = False
                          ) -> asyncpg.Record:
    row = await conn.fetchrow(_PERSON_SELECT + " WHERE p.id = $1"
                              + (" FOR UPDATE OF a" if lock else ""), person_id)
    actor.require_node(list(row["path"]) if row else None, f"person {person_id}")
    return row


async def card_in_scope(conn: Any, actor: Actor, card_no: CardNoParam, *, lock: bool = False
                        ) -> asyncpg.Record:
    row = await conn.fetchrow(_CARD_SELECT + " WHERE c.card_no = $1"
                              + (" FOR UPDATE OF c, a" if lock else ""), card_no)
    actor.require_node(list(row["path"]) if row else None, f"card {card_no}")
    return row


async def create_person_tx(tx: Change, data: PersonIn) -> PersonOut:
    """Person + account (0 fen: money comes through the switch) + the change event."""
    node = await tx.conn.fetchrow("SELECT kind, tenant_id, path FROM org_nodes WHERE id = $1",
                                  data.node_id)
    tx.actor.require_node(list(node["path"]) if node else None, f"node {data.node_id}")
    if node["tenant_id"] is None:
        raise Problem(422, "unprocessable", "people belong to a tenant or one of its departments, "
                      f"not to a {node['kind']}")
    if not await tx.conn.fetchval("SELECT true FROM identity_classes WHERE id = $1",
                                  data.class_id):
        raise Problem(422, "unprocessable", f"no identity class {data.class_id}")
    account_id = await next_id(tx.conn, "accounts", ACCOUNTS_MAX)
    await tx.conn.execute(
        "INSERT INTO accounts (id, tenant_id, class_id, holder_name) VALUES ($1, $2, $3, $4)",
        account_id, node["tenant_id"], data.class_id, data.name)
    row = await tx.conn.fetchrow(
        "INSERT INTO people (node_id, tenant_id, external_id, name, class_id, account_id, phone)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        data.node_id, node["tenant_id"], data.external_id, data.name, data.class_id, account_id,
        data.phone)
    out = PersonOut(id=row["id"], node_id=data.node_id, tenant_id=node["tenant_id"],
                    name=data.name, class_id=data.class_id, external_id=data.external_id,
                    phone=data.phone, account_id=account_id, account_status="active")
    tx.audit("person.create", "person", out.id, list(node["path"]), after=out)
    tx.event(AccountOpened(account_id, node["tenant_id"], data.class_id))
    return out


@post("/people", opt={"permission": "people.write"}, tags=["people"],
      summary="Add a person (a cardholder) with an empty account")
async def create_person(data: PersonIn, actor: Actor, state: State) -> PersonOut:
    async with change(state.pool, actor) as tx:
        # The node first: a 409 about another tenant's external id would tell what it holds.
        actor.require_node(await node_path(tx.conn, data.node_id), f"node {data.node_id}")
        if data.external_id is not None and await tx.conn.fetchval(
                "SELECT true FROM people p JOIN org_nodes n ON n.id = $1"
                " WHERE p.tenant_id = n.tenant_id AND p.external_id = $2",
                data.node_id, data.external_id):
            raise Problem(409, "conflict", f"external_id {data.external_id!r} is taken in this "
                          "tenant")
        return await create_person_tx(tx, data)


@get("/people", opt={"permission": "people.read"}, tags=["people"],
     summary="People of your subtree (or of one node's subtree), by id, paged")
async def list_people(actor: Actor, state: State, node_id: OptionalId = None,
                      q: Annotated[str | None, Parameter(max_length=100)] = None,
                      after: AfterId = 0, limit: Limit = 100) -> PersonPage:
    scope = await subtree_root(state.pool, actor, node_id)
    rows = await state.pool.fetch(
        _PERSON_SELECT + " WHERE $1 = ANY(n.path) AND p.id > $2"
        " AND ($3::text IS NULL OR p.name ILIKE '%' || $3 || '%' OR p.external_id = $3)"
        " ORDER BY p.id LIMIT $4", scope, after, q, limit + 1)
    items = [person_out(r) for r in rows[:limit]]
    return PersonPage(items=items, next_after=items[-1].id if len(rows) > limit else None)


@get("/people/{person_id:int}", opt={"permission": "people.read"}, tags=["people"],
     summary="One person")
async def get_person(person_id: Id, actor: Actor, state: State) -> PersonOut:
    return person_out(await person_in_scope(state.pool, actor, person_id))


async def require_class(conn: asyncpg.Connection, class_id: int) -> None:
    if not await conn.fetchval("SELECT true FROM identity_classes WHERE id = $1", class_id):
        raise Problem(422, "unprocessable", f"no identity class {class_id}")


async def set_class_tx(tx: Change, rows: list[asyncpg.Record], class_id: int) -> list[int]:
    """Move people (rows of _PERSON_SELECT, accounts locked) to `class_id`: people and accounts
    rows, an audit row and an AccountClassChanged each. Those already in it are left alone.
    The ids of the people changed."""
    todo = [r for r in rows if r["class_id"] != class_id]
    for r in todo:
        before = person_out(r)
        tx.audit("person.set_class", "person", r["id"], list(r["path"]), before=before,
                 after=msgspec.structs.replace(before, class_id=class_id))
        tx.event(AccountClassChanged(r["account_id"], class_id))
    if todo:
        await tx.conn.execute(
            "UPDATE people SET class_id = $2, updated_at = now() WHERE id = ANY($1::integer[])",
            [r["id"] for r in todo], class_id)
        await tx.conn.execute(
            "UPDATE accounts SET class_id = $2 WHERE id = ANY($1::integer[])",
            [r["account_id"] for r in todo], class_id)
    return [r["id"] for r in todo]


@post("/people/{person_id:int}/class", opt={"permission": "people.write"}, tags=["people"],
      status_code=200, summary="Move a person to another identity class (its limits apply at "
      "every switch within about a second)")
async def set_person_class(person_id: Id, data: ClassChangeIn, actor: Actor, state: State
                           ) -> PersonOut:
    async with change(state.pool, actor) as tx:
        person = await person_in_scope(tx.conn, actor, person_id, lock=True)
        await require_class(tx.conn, data.class_id)
        await set_class_tx(tx, [person], data.class_id)
        return msgspec.structs.replace(person_out(person), class_id=data.class_id)


@post("/people/{person_id:int}/cards", opt={"permission": "cards.write"}, tags=["cards"],
      summary="Issue a card to a person (works at every switch within about a second)")
async def issue_card(person_id: Id, data: CardIn, actor: Actor, state: State) -> CardOut:
    async with change(state.pool, actor) as tx:
        person = await person_in_scope(tx.conn, actor, person_id, lock=True)
        if person["account_status"] == 3:
            raise Problem(409, "conflict", "the account is closed")
        return await _bind_card(tx, person, data, "card.issue")


def card_taken(card_no: int) -> str:
    """The one answer to a card number in use anywhere: the switch knows a card by its number
    alone, so a number is used once on the site, and which tenant has it is not said."""
    return (f"card number {card_no} is taken (a card number is used once on the site and never "
            "reused)")


def chip_taken(chip_uid: str) -> str:
    """As `card_taken`, for a chip UID."""
    return f"chip UID {chip_uid} is taken (a chip UID is on one card of the site)"


async def _bind_card(tx: Change, person: asyncpg.Record, data: CardIn, action: str) -> CardOut:
    if await tx.conn.fetchval("SELECT true FROM cards WHERE card_no = $1", data.card_no):
        raise Problem(409, "conflict", card_taken(data.card_no))
    if data.chip_uid is not None and await tx.conn.fetchval(
            "SELECT true FROM cards WHERE chip_uid = $1", data.chip_uid):
        raise Problem(409, "conflict", chip_taken(data.chip_uid))
    await tx.conn.execute(
        "INSERT INTO cards (card_no, account_id, printed_no, chip_uid, card_type, valid_until)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        data.card_no, person["account_id"], data.printed_no, data.chip_uid, data.card_type,
        data.valid_until)
    row = await tx.conn.fetchrow(_CARD_SELECT + " WHERE c.card_no = $1", data.card_no)
    out = card_out(row)
    tx.audit(action, "card", data.card_no, list(person["path"]), after=out)
    tx.event(CardBound(data.card_no, person["account_id"]))
    return out


@get("/people/{person_id:int}/cards", opt={"permission": "cards.read"}, tags=["cards"],
     summary="A person's cards, the dead ones included")
async def person_cards(person_id: Id, actor: Actor, state: State) -> list[CardOut]:
    await person_in_scope(state.pool, actor, person_id)
    rows = await state.pool.fetch(_CARD_SELECT + " WHERE p.id = $1 ORDER BY c.issued_at",
                                  person_id)
    return [card_out(r) for r in rows]


@get("/cards/{card_no:int}", opt={"permission": "cards.read"}, tags=["cards"],
     summary="One card")
async def get_card(card_no: CardNoParam, actor: Actor, state: State) -> CardOut:
    return card_out(await card_in_scope(state.pool, actor, card_no))


async def require_not_held(conn: Any, account_id: int) -> None:
    """A cancellation waiting for approval (or being carried out) holds the account frozen: it
    is not unfrozen or given a new card until that document is rejected or done."""
    doc = await conn.fetchval(
        "SELECT d.id FROM documents d JOIN document_lines l ON l.document_id = d.id"
        " JOIN people p ON p.id = l.person_id WHERE p.account_id = $1"
        " AND d.doc_type = 'cancellation' AND d.status IN ('submitted', 'approved') LIMIT 1",
        account_id)
    if doc is not None:
        raise Problem(409, "held-by-cancellation", f"the account is held by cancellation "
                      f"document {doc}: reject it first")


async def set_account_status(tx: Change, card: asyncpg.Record, status: int, action: str
                             ) -> CardOut:
    before = card_out(card)
    await tx.conn.execute("UPDATE accounts SET status = $2 WHERE id = $1", card["account_id"],
                          status)
    after = msgspec.structs.replace(before, status=card_status(card["status"], status),
                                    account_status=ACCOUNT_STATUS[status])
    tx.audit(action, "card", card["card_no"], list(card["path"]), before=before, after=after)
    tx.event(AccountStatusChanged(card["account_id"], status))
    return after


@post("/cards/{card_no:int}/report-loss", opt={"permission": "cards.write"}, tags=["cards"],
      status_code=200, summary="Report a card lost (挂失): refused everywhere within a second")
async def report_loss(card_no: CardNoParam, actor: Actor, state: State) -> CardOut:
    async with change(state.pool, actor) as tx:
        card = await card_in_scope(tx.conn, actor, card_no, lock=True)
        return await report_loss_tx(tx, card)


async def report_loss_tx(tx: Change, card: asyncpg.Record) -> CardOut:
    if card["status"] != 0:
        raise Problem(409, "conflict", f"card {card['card_no']} is cancelled")
    if card["account_status"] == 2:
        return card_out(card)  # already lost: nothing to do, nothing audited
    if card["account_status"] == 3:
        raise Problem(409, "conflict", "the account is closed")
    return await set_account_status(tx, card, 2, "card.report_loss")


@post("/cards/{card_no:int}/unfreeze", opt={"permission": "cards.write"}, tags=["cards"],
      status_code=200, summary="Cancel a loss report (解挂): the card works again")
async def unfreeze(card_no: CardNoParam, actor: Actor, state: State) -> CardOut:
    async with change(state.pool, actor) as tx:
        card = await card_in_scope(tx.conn, actor, card_no, lock=True)
        if card["status"] != 0:
            raise Problem(409, "conflict", f"card {card_no} is cancelled; it never works again")
        if card["account_status"] != 2:
            raise Problem(409, "conflict", "the card is not reported lost")
        await require_not_held(tx.conn, card["account_id"])
        return await set_account_status(tx, card, 0, "card.unfreeze")


@post("/cards/{card_no:int}/replace", opt={"permission": "cards.write"}, tags=["cards"],
      summary="Replace a card (补卡): the account moves to the new card, the old one is dead")
async def replace_card(card_no: CardNoParam, data: ReplaceIn, actor: Actor, state: State
                       ) -> CardOut:
    async with change(state.pool, actor) as tx:
        old = await card_in_scope(tx.conn, actor, card_no, lock=True)
        if old["status"] != 0:
            raise Problem(409, "conflict", f"card {card_no} is already cancelled")
        if old["account_status"] == 3:
            raise Problem(409, "conflict", "the account is closed")
        await require_not_held(tx.conn, old["account_id"])
        before = card_out(old)
        await tx.conn.execute(
            "UPDATE cards SET status = 1, cancelled_at = now(), cancel_reason = 'replaced'"
            " WHERE card_no = $1", card_no)
        tx.audit("card.cancel", "card", card_no, list(old["path"]), before=before,
                 after=msgspec.structs.replace(before, status="cancelled",
                                               cancel_reason="replaced"))
        tx.event(CardCancelled(card_no, old["account_id"]))
        person = await person_in_scope(tx.conn, actor, old["person_id"])
        new = await _bind_card(tx, person, data.new_card, "card.replace")
        if old["account_status"] in (1, 2):
            # A replaced lost card: the account works again, with the new card only.
            new_row = await tx.conn.fetchrow(_CARD_SELECT + " WHERE c.card_no = $1",
                                             data.new_card.card_no)
            new = await set_account_status(tx, new_row, 0, "card.unfreeze")
        return new


@post("/people/{person_id:int}/credentials", opt={"permission": "cards.write"},
      tags=["cards"], summary="Add a face or fingerprint template id")
async def add_credential(person_id: Id, data: CredentialIn, actor: Actor, state: State
                         ) -> CredentialOut:
    async with change(state.pool, actor) as tx:
        person = await person_in_scope(tx.conn, actor, person_id, lock=True)
        row = await tx.conn.fetchrow(
            "INSERT INTO credentials (person_id, kind, template_id) VALUES ($1, $2, $3)"
            " RETURNING id", person_id, data.kind, data.template_id)
        out = CredentialOut(id=row["id"], person_id=person_id, kind=data.kind,
                            template_id=data.template_id)
        tx.audit("credential.add", "credential", row["id"], list(person["path"]), after=out)
        # The switch reads the template ids of the people an access change lists.
        tx.event(AccessChanged(person["tenant_id"], [person_id]))
        return out


@get("/people/{person_id:int}/credentials", opt={"permission": "cards.read"}, tags=["cards"],
     summary="A person's face and fingerprint template ids")
async def list_credentials(person_id: Id, actor: Actor, state: State) -> list[CredentialOut]:
    await person_in_scope(state.pool, actor, person_id)
    rows = await state.pool.fetch(
        "SELECT id, person_id, kind, template_id FROM credentials WHERE person_id = $1"
        " ORDER BY id", person_id)
    return [CredentialOut(id=r["id"], person_id=r["person_id"], kind=r["kind"],
                          template_id=r["template_id"]) for r in rows]


ROUTES = [create_person, list_people, get_person, set_person_class, issue_card, person_cards,
          get_card, report_loss, unfreeze, replace_card, add_credential, list_credentials]
