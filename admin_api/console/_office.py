"""The JSON routes the console's card office, approvals and phone pages need that the API did
not have (issue 13, second slice): an approver's inbox, the cardholder's own bound bank card,
and the cardholder's QR code drawn as an SVG image.

Like admin_api/console/_routes.py: ordinary API routes, in the OpenAPI document, behind a
permission and the subtree (or "self") check, walked by tests/test_admin_access.py. They only
read; every change the pages make goes through the routes that already existed (and audit).
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Final

import msgspec
import segno
from litestar import get
from litestar.datastructures import CacheControlHeader, State
from litestar.openapi.datastructures import ResponseSpec

from admin_api._auth import Actor
from admin_api._problems import MEDIA_TYPE, Problem, ProblemBody
from admin_api._routes_documents import _DOC_SELECT, DocumentOut, Step, _out, _staff
from admin_api._routes_queries import self_qr
from admin_api._types import Id, Limit
from admin_api.bank._routes import _CARD_SQL, BankCardOut, _person
from admin_api.bank._routes import _out as bank_card_out

QR_SCALE: Final = 6
"""Pixels per QR module in the SVG (the page scales it; the image stays sharp)."""


class InboxItem(msgspec.Struct):
    document: DocumentOut
    """The document without its lines and steps (GET /documents/{id} has them)."""
    level: int
    """The approval level this log-in's decision would be (approved_levels + 1)."""
    can_approve: bool
    """False: this log-in may reject it but not approve it (`why_not` says why)."""
    why_not: str


@get("/approvals/inbox", opt={"permission": "documents.approve"}, tags=["documents"],
     summary="Documents of your subtree waiting for your decision at their next level",
     description="Submitted documents this log-in may decide now: not drafted by it, not "
     "already submitted, revised, resolved or approved by it in their current version (a "
     "bank exception only once its resolution is chosen). `can_approve` is false when "
     "POST /documents/{id}/approve would refuse this log-in (it was made by someone in the "
     "document's round, or is younger than the approver cooling-off period): it may still "
     "reject. Oldest first, at most `limit`.")
async def approvals_inbox(actor: Actor, state: State, limit: Limit = 100) -> list[InboxItem]:
    _staff(actor)
    acted = [str(s) for s in (Step.SUBMIT, Step.REVISE, Step.RESOLVE, Step.APPROVE)]
    rows = await state.pool.fetch(
        _DOC_SELECT + " WHERE $1 = ANY(d.node_path) AND d.status = 'submitted'"
        " AND d.created_by IS DISTINCT FROM $2"
        " AND NOT EXISTS (SELECT 1 FROM approval_steps s WHERE s.document_id = d.id"
        "  AND s.version = d.version AND s.user_id = $2 AND s.decision = ANY($3::text[]))"
        " AND (d.doc_type <> 'bank_exception' OR EXISTS (SELECT 1 FROM"
        "  bank_exception_resolutions r WHERE r.document_id = d.id AND r.version = d.version))"
        " ORDER BY d.id LIMIT $4", actor.node_id, actor.user_id, acted, limit)
    if not rows:
        return []
    # The same test as POST /documents/{id}/approve (_routes_documents._independent).
    me = await state.pool.fetchrow(
        "WITH RECURSIVE makers(id) AS ("
        "  SELECT created_by FROM admin_users WHERE id = $1"
        "  UNION SELECT u.created_by FROM admin_users u JOIN makers m ON u.id = m.id)"
        " SELECT array(SELECT id FROM makers WHERE id IS NOT NULL) AS makers,"
        " (SELECT created_at > now() - make_interval(secs => $2) FROM admin_users"
        "  WHERE id = $1) AS young",
        actor.user_id, float(state.settings.approver_cooling_off_seconds))
    makers = set(me["makers"])
    rounds: dict[int, set[int]] = {}
    for r in await state.pool.fetch(
            "SELECT s.document_id, s.user_id FROM approval_steps s JOIN documents d"
            " ON d.id = s.document_id AND d.version = s.version"
            " WHERE s.document_id = ANY($1::integer[])", [r["id"] for r in rows]):
        rounds.setdefault(r["document_id"], set()).add(r["user_id"])
    items = []
    for r in rows:
        round_ = rounds.get(r["id"], set()) | {r["created_by"]}
        why = ""
        if makers & round_:
            why = "made-by-round"
        elif me["young"]:
            why = "cooling-off"
        items.append(InboxItem(document=await _out(state.pool, r, full=False),
                               level=r["approved_levels"] + 1, can_approve=not why,
                               why_not=why))
    return items


@get("/self/people/{person_id:int}/bank-card", opt={"permission": "self"},
     tags=["self-service"], summary="My bound bank card (masked)")
async def self_bank_card(person_id: Id, actor: Actor, state: State) -> BankCardOut:
    person = await _person(state.pool, actor, person_id, own=True, lock=False)
    row = await state.pool.fetchrow(_CARD_SQL, person["account_id"])
    if row is None:
        raise Problem(404, "not-found", "no bank card is bound")
    return bank_card_out(person_id, row)


class QrImage(msgspec.Struct):
    person_id: int
    card_no: int
    token: str
    """The code's text, as GET /self/people/{person_id}/qr answers it."""
    svg: str
    """The code drawn as an SVG image (segno, error correction M)."""
    expires_at: dt.datetime
    expires_in: int
    """Seconds from now: fetch a new code before then."""


def qr_svg(token: str) -> str:
    out = io.BytesIO()
    segno.make(token, error="m", micro=False).save(
        out, kind="svg", scale=QR_SCALE, border=4, xmldecl=False, nl=False,
        title="QR code")
    return out.getvalue().decode()


@get("/self/people/{person_id:int}/qr/svg", opt={"permission": "self"}, tags=["self-service"],
     cache_control=CacheControlHeader(no_store=True),
     responses={503: ResponseSpec(ProblemBody, media_type=MEDIA_TYPE, generate_examples=False,
                                  description="The API has no master_secret: no QR codes")},
     summary="My QR code to pay with, drawn as an SVG image (for the phone page)",
     description="GET /self/people/{person_id}/qr (a fresh code: the same rules and answers) "
     "with the code drawn as an SVG image in `svg`.")
async def self_qr_svg(person_id: Id, actor: Actor, state: State) -> QrImage:
    code = await self_qr.fn(person_id=person_id, actor=actor, state=state)
    return QrImage(person_id=code.person_id, card_no=code.card_no, token=code.token,
                   svg=qr_svg(code.token), expires_at=code.expires_at,
                   expires_in=code.expires_in)


ROUTES = [approvals_inbox, self_bank_card, self_qr_svg]
