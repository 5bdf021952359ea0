"""Bulk operations over a selection of people: all of them or none.

    POST /people/bulk/report-loss   {"person_ids": [...]}  or  {"filter": {"node_id": ...}}
    POST /people/bulk/unfreeze
    POST /people/bulk/move          {..., "node_id": <department of the same tenant>}
    POST /people/bulk/class         {..., "class_id": <identity class>}

A selection is a list of person ids or a filter (a node's subtree, optionally one identity
class or one account status), at most BULK_MAX people, all in the caller's subtree. The people
are locked (their accounts, in id order, so two bulk operations never deadlock), every one is
checked, and only if none conflicts is anything changed: in one transaction, an audit row per
person and, for status and class changes, one AccountStatusChanged or AccountClassChanged per
account on the change feed.

Moving people to another tenant is not offered (an account belongs to its tenant in the
switch).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import asyncpg
import msgspec
from litestar import post
from litestar.datastructures import State
from msgspec import Meta

from admin_api._auth import Actor
from admin_api._problems import FieldError, Problem
from admin_api._routes_people import (
    _PERSON_SELECT,
    ACCOUNT_STATUS,
    ClassId,
    PersonOut,
    person_out,
    require_class,
    set_class_tx,
)
from admin_api._store import Change, change
from protocols.changes import AccountStatusChanged

BULK_MAX: Final = 10_000
"""People in one bulk operation."""
_STATUS_OF: Final = {name: code for code, name in ACCOUNT_STATUS.items()}

PersonId = Annotated[int, Meta(ge=1, le=2**31 - 1)]
NodeId = Annotated[int, Meta(ge=1, le=2**31 - 1)]


class PeopleFilter(msgspec.Struct, forbid_unknown_fields=True):
    node_id: NodeId
    """Everyone in this node's subtree..."""
    class_id: Annotated[int, Meta(ge=1, le=255)] | None = None
    """...of this identity class..."""
    account_status: Literal["active", "frozen", "lost", "closed"] | None = None
    """...whose account is in this state."""


class Selection(msgspec.Struct, forbid_unknown_fields=True):
    """Give `person_ids` or `filter`, not both."""

    person_ids: Annotated[list[PersonId], Meta(min_length=1, max_length=BULK_MAX)] | None = None
    filter: PeopleFilter | None = None


class MoveIn(msgspec.Struct, forbid_unknown_fields=True):
    node_id: NodeId
    """The node to move the people to: their own tenant or one of its departments."""
    person_ids: Annotated[list[PersonId], Meta(min_length=1, max_length=BULK_MAX)] | None = None
    filter: PeopleFilter | None = None


class BulkClassIn(msgspec.Struct, forbid_unknown_fields=True):
    class_id: ClassId
    """The identity class to move the people to."""
    person_ids: Annotated[list[PersonId], Meta(min_length=1, max_length=BULK_MAX)] | None = None
    filter: PeopleFilter | None = None


class BulkResult(msgspec.Struct):
    action: str
    selected: int
    changed: list[int]
    """Ids of the people changed (each audited)."""
    unchanged: list[int]
    """Ids of the people already as asked (nothing done, nothing audited)."""


async def select_people(conn: asyncpg.Connection, actor: Actor,
                        person_ids: list[int] | None, filter: PeopleFilter | None
                        ) -> list[asyncpg.Record]:
    """The selected people, their accounts locked in id order; 404 naming every person not in
    the caller's subtree (one that does not exist is reported the same way)."""
    if (person_ids is None) == (filter is None):
        raise Problem(422, "unprocessable", "select people by person_ids or by filter (one "
                      "of the two)")
    lock = " ORDER BY a.id FOR UPDATE OF a"
    if person_ids is not None:
        rows = await conn.fetch(_PERSON_SELECT + " WHERE p.id = ANY($1::integer[])" + lock,
                                list(set(person_ids)))
        found = {r["id"] for r in rows if actor.sees(list(r["path"]))}
        missing = [FieldError(f"person_ids[{i}]",
                              f"no person {pid} in your part of the organisation")
                   for i, pid in enumerate(person_ids) if pid not in found]
        if missing:
            raise Problem(404, "not-found", f"{len(missing)} of the people are not in your "
                          "part of the organisation; nothing was changed", errors=missing)
        return rows
    assert filter is not None
    path = await conn.fetchval("SELECT path FROM org_nodes WHERE id = $1", filter.node_id)
    actor.require_node(list(path) if path else None, f"node {filter.node_id}")
    status = None if filter.account_status is None else _STATUS_OF[filter.account_status]
    rows = await conn.fetch(
        _PERSON_SELECT + " WHERE $1 = ANY(n.path) AND ($2::smallint IS NULL OR p.class_id = $2)"
        " AND ($3::smallint IS NULL OR a.status = $3)" + lock + " LIMIT $4",
        filter.node_id, filter.class_id, status, BULK_MAX + 1)
    if len(rows) > BULK_MAX:
        raise Problem(422, "unprocessable", f"the filter selects more than {BULK_MAX} people; "
                      "narrow it (a smaller node, a class, a status)")
    return rows


def both_paths(old: list[int], new: list[int]) -> list[int]:
    """The audit row of a move carries the nodes of both paths (the old path, then the new
    path's other nodes): the auditors and API keys of either side see it."""
    return [*old, *(n for n in new if n not in old)]


def _conflicts(rows: list[asyncpg.Record], bad: dict[int, str]) -> None:
    if bad:
        errors = [FieldError(f"person {r['id']}", bad[r["id"]]) for r in rows if r["id"] in bad]
        raise Problem(409, "conflict", f"{len(errors)} of the people cannot be changed so; "
                      "nothing was changed", errors=errors)


async def _set_status(tx: Change, selected: list[asyncpg.Record], rows: list[asyncpg.Record],
                      status: int, action: str) -> BulkResult:
    """Set `rows` to `status`; the selected people already there are unchanged."""
    changed = []
    for r in rows:
        before = person_out(r)
        after = msgspec.structs.replace(before, account_status=ACCOUNT_STATUS[status])
        tx.audit(action, "person", r["id"], list(r["path"]), before=before, after=after)
        tx.event(AccountStatusChanged(r["account_id"], status))
        changed.append(r["id"])
    if changed:
        await tx.conn.execute("UPDATE accounts SET status = $2 WHERE id = ANY($1::integer[])",
                              [r["account_id"] for r in rows], status)
    return BulkResult(action=action, selected=len(selected), changed=changed,
                      unchanged=[r["id"] for r in selected if r["account_status"] == status])


@post("/people/bulk/report-loss", opt={"permission": "cards.write"}, tags=["people"],
      status_code=200,
      summary="Report the selected people's cards lost (挂失), all of them or none")
async def bulk_report_loss(data: Selection, actor: Actor, state: State) -> BulkResult:
    async with change(state.pool, actor) as tx:
        rows = await select_people(tx.conn, actor, data.person_ids, data.filter)
        _conflicts(rows, {r["id"]: "the account is closed" for r in rows
                          if r["account_status"] == 3})
        todo = [r for r in rows if r["account_status"] in (0, 1)]
        return await _set_status(tx, rows, todo, 2, "person.report_loss")


@post("/people/bulk/unfreeze", opt={"permission": "cards.write"}, tags=["people"],
      status_code=200,
      summary="Cancel the loss reports (解挂) of the selected people, all of them or none")
async def bulk_unfreeze(data: Selection, actor: Actor, state: State) -> BulkResult:
    async with change(state.pool, actor) as tx:
        rows = await select_people(tx.conn, actor, data.person_ids, data.filter)
        bad = {r["id"]: f"the account is {ACCOUNT_STATUS[r['account_status']]}, not lost"
               for r in rows if r["account_status"] in (1, 3)}
        # A lost account held by a cancellation waiting for approval stays as it is.
        held = await tx.conn.fetch(
            "SELECT DISTINCT p.id, d.id AS doc FROM documents d JOIN document_lines l"
            " ON l.document_id = d.id JOIN people p ON p.id = l.person_id"
            " WHERE p.id = ANY($1::integer[]) AND d.doc_type = 'cancellation'"
            " AND d.status IN ('submitted', 'approved')", [r["id"] for r in rows])
        bad.update({h["id"]: f"held by cancellation document {h['doc']}" for h in held})
        _conflicts(rows, bad)
        todo = [r for r in rows if r["account_status"] == 2]
        return await _set_status(tx, rows, todo, 0, "person.unfreeze")


@post("/people/bulk/move", opt={"permission": "people.write"}, tags=["people"],
      status_code=200,
      summary="Move the selected people to another node of their tenant, all of them or none")
async def bulk_move(data: MoveIn, actor: Actor, state: State) -> BulkResult:
    async with change(state.pool, actor) as tx:
        target = await tx.conn.fetchrow(
            "SELECT id, kind, tenant_id, path FROM org_nodes WHERE id = $1 FOR SHARE",
            data.node_id)
        actor.require_node(list(target["path"]) if target else None, f"node {data.node_id}")
        if target["tenant_id"] is None:
            raise Problem(422, "unprocessable", "people belong to a tenant or one of its "
                          f"departments, not to a {target['kind']}")
        rows = await select_people(tx.conn, actor, data.person_ids, data.filter)
        _conflicts(rows, {r["id"]: "a person stays in their tenant (the switch keeps the "
                          "account there)" for r in rows
                          if r["tenant_id"] != target["tenant_id"]})
        todo = [r for r in rows if r["node_id"] != data.node_id]
        for r in todo:
            before: PersonOut = person_out(r)
            tx.audit("person.move", "person", r["id"], both_paths(r["path"], target["path"]),
                     before=before,
                     after=msgspec.structs.replace(before, node_id=data.node_id))
        if todo:
            await tx.conn.execute(
                "UPDATE people SET node_id = $2, updated_at = now()"
                " WHERE id = ANY($1::integer[])", [r["id"] for r in todo], data.node_id)
    return BulkResult(action="person.move", selected=len(rows),
                      changed=[r["id"] for r in todo],
                      unchanged=[r["id"] for r in rows if r["node_id"] == data.node_id])


@post("/people/bulk/class", opt={"permission": "people.write"}, tags=["people"],
      status_code=200,
      summary="Move the selected people to another identity class, all of them or none")
async def bulk_class(data: BulkClassIn, actor: Actor, state: State) -> BulkResult:
    async with change(state.pool, actor) as tx:
        await require_class(tx.conn, data.class_id)
        rows = await select_people(tx.conn, actor, data.person_ids, data.filter)
        changed = await set_class_tx(tx, rows, data.class_id)
    return BulkResult(action="person.set_class", selected=len(rows), changed=changed,
                      unchanged=[r["id"] for r in rows if r["class_id"] == data.class_id])


ROUTES = [bulk_report_loss, bulk_unfreeze, bulk_move, bulk_class]
