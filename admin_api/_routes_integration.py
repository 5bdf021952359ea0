"""The Web Service interface for integrators: API keys, the events stream, bulk people sync.

API keys are made by a platform or tenant admin for one org node and a set of scopes; the key
is shown once and only its SHA-256 is kept. A request signed with a key
(`Authorization: Bearer ock_...` or `X-Api-Key: ock_...`, `_routes_auth.actor_of`) acts as a
log-in of role "integration" bound to the key's node whose permissions are the key's scopes:
every route's permission and subtree checks apply to it as to anyone.

`GET /integration/events` pages through everything that happened in the key's subtree, in one
stream: transactions (journal rows of the subtree's people) and changes (audit rows of people,
cards and nodes). Each source is read in its commit order (journal `lsn`: one writer, batches
committed one after another; `audit_log.id`: drawn under the outbox's advisory lock,
migrations/sql/0005_integration.sql), so "everything up to position N of a source" never gains
a row later. The cursor is the pair (lsn, audit id) of what the client has been given: durable
(database positions, valid across restarts of anything) and exact (the next page holds every
event after it, once). A page merges the heads of both sources by time.

`PUT /integration/people` creates or updates people by external id (per tenant), all of them or
none; a repeat of the same request changes nothing and says so.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Annotated, Any, Final, Literal

import asyncpg
import msgspec
from litestar import get, post, put
from litestar.datastructures import State
from litestar.params import Parameter
from msgspec import Meta

from admin_api._auth import INTEGRATION_ROLE, PERMISSIONS, Actor, new_api_key
from admin_api._problems import FieldError, Problem
from admin_api._routes_bulk import both_paths
from admin_api._routes_import import NewPerson, create_people_tx
from admin_api._routes_people import ExternalId, Name, PersonOut, person_out
from admin_api._routes_queries import CODE_NAMES, KIND_NAMES
from admin_api._store import change
from admin_api._types import is_ascii_number

SCOPES: Final = tuple(sorted(PERMISSIONS[INTEGRATION_ROLE]))
Scope = Annotated[str, Meta(pattern="^(" + "|".join(s.replace(".", r"\.") for s in SCOPES)
                            + ")$", description="one of " + ", ".join(SCOPES))]
NodeId = Annotated[int, Meta(ge=1, le=2**31 - 1)]
KeyId = Annotated[int, Parameter(ge=1, le=2**31 - 1, description="an API key's id")]

EVENTS_SCAN_MAX: Final = 100_000
"""Positions of each source one events request looks through (a quiet subtree of a busy site
still answers quickly; its cursor moves on past what it does not see)."""
EVENT_ENTITIES: Final = ("person", "card", "org_node", "voucher_batch")
"""Audit entities on the events stream (log-ins and API keys are not). voucher_batch: a
day's journal vouchers, published for the finance system (docs/finance.md)."""
SYNC_MAX: Final = 1000
"""People in one sync request."""


# -- API keys ----------------------------------------------------------------------------------


class ApiKeyIn(msgspec.Struct, forbid_unknown_fields=True):
    node_id: NodeId
    """The key sees and changes only this node's subtree."""
    name: Name
    """What the key is for ("HR sync", "access control")."""
    scopes: Annotated[list[Scope], Meta(min_length=1, max_length=len(SCOPES))]
    expires_at: dt.datetime | None = None
    """Refused from then on; none: until revoked."""


class ApiKeyOut(msgspec.Struct):
    id: int
    node_id: int
    name: str
    scopes: list[str]
    key_prefix: str
    """The key's first characters, to tell keys apart."""
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


class ApiKeyCreated(msgspec.Struct):
    key: str
    """The key itself: shown this once, never again (only its SHA-256 is kept)."""
    api_key: ApiKeyOut


_KEY_COLUMNS = "k.id, k.node_id, k.name, k.scopes, k.key_prefix, k.created_at, k.expires_at," \
               " k.revoked_at, n.path"


def _key_out(r: asyncpg.Record) -> ApiKeyOut:
    return ApiKeyOut(id=r["id"], node_id=r["node_id"], name=r["name"], scopes=list(r["scopes"]),
                     key_prefix=r["key_prefix"], created_at=r["created_at"],
                     expires_at=r["expires_at"], revoked_at=r["revoked_at"])


@post("/api-keys", opt={"permission": "api_keys.write"}, tags=["integration"],
      summary="Make an API key for a node of your subtree (the key is shown once)")
async def create_api_key(data: ApiKeyIn, actor: Actor, state: State) -> ApiKeyCreated:
    scopes = sorted(set(data.scopes))
    beyond = [s for s in scopes if not actor.can(s)]
    if beyond:
        raise Problem(403, "forbidden", "a key gets no permission its maker lacks: "
                      + ", ".join(beyond))
    if data.expires_at is not None and data.expires_at.tzinfo is None:
        raise Problem(422, "unprocessable", "expires_at needs a time zone (e.g. ...+08:00)")
    key, digest = new_api_key()
    async with change(state.pool, actor) as tx:
        path = await tx.conn.fetchval("SELECT path FROM org_nodes WHERE id = $1", data.node_id)
        actor.require_node(list(path) if path else None, f"node {data.node_id}")
        key_id = await tx.conn.fetchval(
            "INSERT INTO api_keys (node_id, name, scopes, key_sha256, key_prefix, created_by,"
            " expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            data.node_id, data.name, scopes, digest, key[:12], actor.user_id or None,
            data.expires_at)
        row = await tx.conn.fetchrow(f"SELECT {_KEY_COLUMNS} FROM api_keys k JOIN org_nodes n"
                                     " ON n.id = k.node_id WHERE k.id = $1", key_id)
        out = _key_out(row)
        tx.audit("api_key.create", "api_key", key_id, list(path), after=out)
    return ApiKeyCreated(key=key, api_key=out)


@get("/api-keys", opt={"permission": "api_keys.read"}, tags=["integration"],
     summary="The API keys of your subtree (never the keys themselves)")
async def list_api_keys(actor: Actor, state: State) -> list[ApiKeyOut]:
    rows = await state.pool.fetch(
        f"SELECT {_KEY_COLUMNS} FROM api_keys k JOIN org_nodes n ON n.id = k.node_id"
        " WHERE $1 = ANY(n.path) ORDER BY k.id LIMIT 1000", actor.node_id)
    return [_key_out(r) for r in rows]


@post("/api-keys/{key_id:int}/revoke", opt={"permission": "api_keys.write"},
      tags=["integration"], status_code=200,
      summary="Revoke an API key: refused from the next request on")
async def revoke_api_key(key_id: KeyId, actor: Actor, state: State) -> ApiKeyOut:
    async with change(state.pool, actor) as tx:
        row = await tx.conn.fetchrow(
            f"SELECT {_KEY_COLUMNS} FROM api_keys k JOIN org_nodes n ON n.id = k.node_id"
            " WHERE k.id = $1 FOR UPDATE OF k", key_id)
        actor.require_node(list(row["path"]) if row else None, f"API key {key_id}")
        before = _key_out(row)
        if before.revoked_at is not None:
            return before
        revoked_at = await tx.conn.fetchval(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 RETURNING revoked_at", key_id)
        after = msgspec.structs.replace(before, revoked_at=revoked_at)
        tx.audit("api_key.revoke", "api_key", key_id, list(row["path"]), before=before,
                 after=after)
    return after


# -- events ------------------------------------------------------------------------------------


class TransactionEvent(msgspec.Struct, tag_field="type", tag="transaction"):
    """A journal row of one of the subtree's people: approved or declined, as decided."""

    cursor: str
    """Resume here to get the events after this one."""
    at: dt.datetime
    lsn: int
    person_id: int
    account_id: int
    card_no: int
    kind: str
    result: str
    terminal_id: int
    txn_seq: int
    merchant_id: int
    amount_fen: int
    main_delta_fen: int
    subsidy_delta_fen: int
    main_balance_fen: int
    subsidy_balance_fen: int


class ChangeRecord(msgspec.Struct, tag_field="type", tag="change"):
    """A change of a person, a card or a node, as the audit trail has it."""

    cursor: str
    at: dt.datetime
    audit_id: int
    action: str
    """E.g. person.create, person.update, card.issue, card.report_loss, card.unfreeze."""
    entity: str
    entity_id: str
    username: str
    role: str
    before: Any
    after: Any


class EventPage(msgspec.Struct):
    items: list[TransactionEvent | ChangeRecord]
    cursor: str
    """Pass it back as `cursor` for the events after this page; keep it to resume later."""
    has_more: bool
    """False: you are at the end for now; ask again later with `cursor`."""


def encode_cursor(lsn: int, audit_id: int) -> str:
    return base64.urlsafe_b64encode(f"1:{lsn}:{audit_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, lsn, audit_id = raw.split(":")
        if version != "1" or not is_ascii_number(lsn) or not is_ascii_number(audit_id):
            raise ValueError(raw)
        return int(lsn), int(audit_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Problem(400, "invalid-request", "the cursor is not one this API gave out",
                      errors=[FieldError("cursor", "not a cursor of GET /integration/events")]
                      ) from None


_JOURNAL_EVENTS = (
    "SELECT j.lsn, j.committed_at, j.kind, j.code, j.terminal_id, j.txn_seq, j.card_no,"
    " j.account_id, p.id AS person_id, j.merchant_id, j.amount_fen, j.main_delta_fen,"
    " j.subsidy_delta_fen, j.main_fen, j.subsidy_fen"
    " FROM journal j JOIN people p ON p.account_id = j.account_id"
    " JOIN org_nodes n ON n.id = p.node_id"
    " WHERE j.lsn > $1 AND j.lsn <= $2 AND $3 = ANY(n.path) AND ($4 OR j.kind <> 3)"
    " ORDER BY j.lsn LIMIT $5"
)
_AUDIT_EVENTS = (
    "SELECT id, at, action, entity, entity_id, username, role, before::text, after::text"
    " FROM audit_log WHERE id > $1 AND id <= $2 AND $3 = ANY(node_path)"
    " AND entity = ANY($4::text[]) ORDER BY id LIMIT $5"
)


def _json(text: str | None) -> Any:
    return msgspec.json.decode(text) if text else None


@get("/integration/events", opt={"permission": "events.read"}, tags=["integration"],
     summary="Everything that happened in your subtree, in order, from a durable cursor",
     description=(
         "Transactions (approved and declined; inquiries with `inquiries=true`) of the "
         "subtree's people and changes of its people, cards and nodes, as one stream. Start "
         "without `cursor` (from the beginning), then pass the answer's `cursor` back. The "
         "cursor is durable: resume with it tomorrow, after any restart, and you get exactly "
         "the events after it. `has_more` false: nothing more for now."))
async def events(actor: Actor, state: State,
                 cursor: Annotated[str | None, Parameter(max_length=100)] = None,
                 limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
                 inquiries: bool = False) -> EventPage:
    lsn, audit_id = decode_cursor(cursor) if cursor else (0, 0)
    pool: asyncpg.Pool = state.pool
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                        readonly=True):
        # One snapshot: in it, every position up to each source's max is final (commit
        # order), so the cursor may move up to there even past rows the subtree does not see.
        top_lsn = await conn.fetchval("SELECT coalesce(max(lsn), 0) FROM journal")
        top_audit = await conn.fetchval("SELECT coalesce(max(id), 0) FROM audit_log")
        lsn_hi = max(lsn, min(top_lsn, lsn + EVENTS_SCAN_MAX))
        audit_hi = max(audit_id, min(top_audit, audit_id + EVENTS_SCAN_MAX))
        journal = await conn.fetch(_JOURNAL_EVENTS, lsn, lsn_hi, actor.node_id, inquiries,
                                   limit)
        audit = await conn.fetch(_AUDIT_EVENTS, audit_id, audit_hi, actor.node_id,
                                 list(EVENT_ENTITIES), limit)
    items: list[TransactionEvent | ChangeRecord] = []
    i = j = 0
    while len(items) < limit and (i < len(journal) or j < len(audit)):
        take_journal = j >= len(audit) or (
            i < len(journal) and journal[i]["committed_at"] <= audit[j]["at"])
        if take_journal:
            r = journal[i]
            i += 1
            lsn = r["lsn"]
            items.append(TransactionEvent(
                cursor=encode_cursor(lsn, audit_id), at=r["committed_at"], lsn=lsn,
                person_id=r["person_id"], account_id=r["account_id"], card_no=r["card_no"],
                kind=KIND_NAMES.get(r["kind"], str(r["kind"])),
                result=CODE_NAMES.get(r["code"], str(r["code"])), terminal_id=r["terminal_id"],
                txn_seq=r["txn_seq"], merchant_id=r["merchant_id"], amount_fen=r["amount_fen"],
                main_delta_fen=r["main_delta_fen"], subsidy_delta_fen=r["subsidy_delta_fen"],
                main_balance_fen=r["main_fen"], subsidy_balance_fen=r["subsidy_fen"]))
        else:
            r = audit[j]
            j += 1
            audit_id = r["id"]
            items.append(ChangeRecord(
                cursor=encode_cursor(lsn, audit_id), at=r["at"], audit_id=audit_id,
                action=r["action"], entity=r["entity"], entity_id=r["entity_id"],
                username=r["username"], role=r["role"], before=_json(r["before"]),
                after=_json(r["after"])))
    # A source read to its end (fewer rows than asked, all given out) is done up to its
    # window's top; else the cursor stays at the last row given out.
    if i == len(journal) and len(journal) < limit:
        lsn = lsn_hi
    if j == len(audit) and len(audit) < limit:
        audit_id = audit_hi
    return EventPage(items=items, cursor=encode_cursor(lsn, audit_id),
                     has_more=lsn < top_lsn or audit_id < top_audit)


# -- bulk people sync --------------------------------------------------------------------------


class SyncPerson(msgspec.Struct, forbid_unknown_fields=True):
    external_id: ExternalId
    """The person's id in your system: unique in a tenant, the key of the sync."""
    name: Name
    node_id: NodeId
    """Where the person belongs (a tenant or a department of it); its tenant is where
    `external_id` is looked up."""
    phone: Annotated[str, Meta(max_length=32)] | None = None
    """None: left as it is (empty for a new person)."""
    class_id: Annotated[int, Meta(ge=1, le=255)] | None = None
    """Required to create a person; an existing person's class cannot change here."""


class SyncIn(msgspec.Struct, forbid_unknown_fields=True):
    people: Annotated[list[SyncPerson], Meta(min_length=1, max_length=SYNC_MAX)]


SyncResult = Literal["created", "updated", "unchanged"]


class SyncItem(msgspec.Struct):
    external_id: str
    person_id: int
    result: SyncResult


class SyncOut(msgspec.Struct):
    created: int
    updated: int
    unchanged: int
    items: list[SyncItem]
    """One per person of the request, in its order."""


@put("/integration/people", opt={"permission": "people.sync"}, tags=["integration"],
     status_code=200,
     summary="Create or update people by external id: idempotent, all of them or none",
     description=(
         f"At most {SYNC_MAX} people. A person whose external id is new in the node's tenant "
         "is created (with an empty account, on the change feed); one that exists is updated "
         "(name, phone, node within the tenant) if anything differs, else left alone. The "
         "same request twice changes nothing the second time (every item `unchanged`). Any "
         "bad item: 422 naming each (`people[3].node_id`), and nothing is changed."))
async def sync_people(data: SyncIn, actor: Actor, state: State) -> SyncOut:
    errors: list[FieldError] = []
    async with change(state.pool, actor) as tx:
        conn = tx.conn
        node_ids = sorted({p.node_id for p in data.people})
        nodes = {r["id"]: r for r in await conn.fetch(
            "SELECT id, kind, tenant_id, path FROM org_nodes WHERE id = ANY($1::integer[])",
            node_ids) if actor.sees(list(r["path"]))}
        classes = {r["id"] for r in await conn.fetch("SELECT id FROM identity_classes")}
        seen: dict[tuple[int, str], int] = {}
        keys: list[tuple[int, str] | None] = []
        for i, p in enumerate(data.people):
            node = nodes.get(p.node_id)
            key = None
            if node is None:
                errors.append(FieldError(f"people[{i}].node_id",
                                         f"no node {p.node_id} in your part of the organisation"))
            elif node["tenant_id"] is None:
                errors.append(FieldError(f"people[{i}].node_id", "people belong to a tenant or "
                                         f"one of its departments, not to a {node['kind']}"))
            else:
                key = (node["tenant_id"], p.external_id)
                first = seen.setdefault(key, i)
                if first != i:
                    errors.append(FieldError(f"people[{i}].external_id", f"external_id "
                                             f"{p.external_id!r} is also people[{first}]"))
            keys.append(key)
        wanted = [k for k in keys if k is not None]
        existing = {(r["tenant_id"], r["external_id"]): r for r in await conn.fetch(
            "SELECT p.id, p.node_id, p.tenant_id, p.name, p.class_id, p.external_id, p.phone,"
            " p.account_id, a.status AS account_status, n.path"
            " FROM people p JOIN accounts a ON a.id = p.account_id"
            " JOIN org_nodes n ON n.id = p.node_id"
            " WHERE (p.tenant_id, p.external_id) IN"
            "  (SELECT * FROM unnest($1::integer[], $2::text[]))"
            " ORDER BY p.id FOR UPDATE OF p",
            [k[0] for k in wanted], [k[1] for k in wanted])}
        new: list[tuple[int, NewPerson]] = []
        updates: list[tuple[int, asyncpg.Record, PersonOut, PersonOut]] = []
        results: list[tuple[SyncResult, int]] = [("unchanged", 0)] * len(data.people)
        for i, (p, key) in enumerate(zip(data.people, keys, strict=True)):
            if key is None:
                continue
            old = existing.get(key)
            node = nodes[p.node_id]
            if old is None:
                if p.class_id is None:
                    errors.append(FieldError(f"people[{i}].class_id", "a new person needs an "
                                             "identity class"))
                elif p.class_id not in classes:
                    errors.append(FieldError(f"people[{i}].class_id",
                                             f"no identity class {p.class_id}"))
                else:
                    new.append((i, NewPerson(
                        row=i, name=p.name, node_id=p.node_id, tenant_id=node["tenant_id"],
                        path=list(node["path"]), class_id=p.class_id,
                        external_id=p.external_id, phone=p.phone or "")))
                continue
            if not actor.sees(list(old["path"])):
                errors.append(FieldError(f"people[{i}].external_id", f"external_id "
                                         f"{p.external_id!r} is taken in this tenant"))
                continue
            if p.class_id is not None and p.class_id != old["class_id"]:
                errors.append(FieldError(f"people[{i}].class_id", "an existing person's class "
                                         "cannot change here (the switch would not learn it)"))
                continue
            before = person_out(old)
            after = msgspec.structs.replace(
                before, name=p.name, node_id=p.node_id,
                phone=old["phone"] if p.phone is None else p.phone)
            if after == before:
                results[i] = ("unchanged", old["id"])
            else:
                updates.append((i, old, before, after))
        if errors:
            raise Problem(422, "unprocessable", f"{len(errors)} of the people cannot be synced; "
                          "nothing was changed", errors=errors)
        created = await create_people_tx(tx, [n for _, n in new])
        for (i, _), (person, _card) in zip(new, created, strict=True):
            results[i] = ("created", person.id)
        if updates:
            await conn.executemany(
                "UPDATE people SET name = $2, phone = $3, node_id = $4, updated_at = now()"
                " WHERE id = $1", [(a.id, a.name, a.phone, a.node_id) for *_, a in updates])
            await conn.executemany(
                "UPDATE accounts SET holder_name = $2 WHERE id = $1",
                [(a.account_id, a.name) for _, _, b, a in updates if a.name != b.name])
        for i, old, before, after in updates:
            tx.audit("person.update", "person", old["id"],
                     both_paths(list(old["path"]), list(nodes[after.node_id]["path"])),
                     before=before, after=after)
            results[i] = ("updated", old["id"])
    items = [SyncItem(external_id=p.external_id, person_id=pid, result=result)
             for p, (result, pid) in zip(data.people, results, strict=True)]
    return SyncOut(created=sum(r == "created" for r, _ in results),
                   updated=sum(r == "updated" for r, _ in results),
                   unchanged=sum(r == "unchanged" for r, _ in results), items=items)


ROUTES = [create_api_key, list_api_keys, revoke_api_key, events, sync_people]
