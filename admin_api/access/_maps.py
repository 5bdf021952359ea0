"""The security desk's e-map: a floor plan per area, and where each door is on it.

A plan is a PNG or JPEG image (at most PLAN_BYTES_MAX bytes), sent base64 in a JSON body and
stored in the database (migrations/sql/0021_emap.sql). Its type is sniffed from its first
bytes, never taken from the client: anything else is 415 and nothing is stored. A door's place
is (x, y) in hundredths of a percent of the plan's width and height (0..10000 each). Uploading
a plan and placing doors need `access.write`; reading them `access.read`; every change is
audited (the plan by its size and SHA-256, not its bytes). The switch does not use either, so
no change event is sent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Annotated, Any, Final

import asyncpg
import msgspec
from litestar import Response, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from msgspec import Meta

from admin_api._auth import Actor
from admin_api._problems import MEDIA_TYPE, Problem, ProblemBody
from admin_api._store import change
from admin_api._types import Id
from admin_api.access._scope import NODE_JOIN, in_scope

PLAN_BYTES_MAX: Final = 1024 * 1024
"""Bytes of one floor plan image (a request body is at most 2 MiB, base64 included)."""
_PNG: Final = b"\x89PNG\r\n\x1a\n"
_JPEG: Final = b"\xff\xd8\xff"
Place = Annotated[int, Meta(ge=0, le=10_000)]


def sniff(image: bytes) -> str | None:
    """The image's type from its first bytes: image/png, image/jpeg, or None."""
    if image.startswith(_PNG) and len(image) > len(_PNG) + 8 and image[12:16] == b"IHDR":
        return "image/png"
    if image.startswith(_JPEG) and len(image) > 4:
        return "image/jpeg"
    return None


class PlanIn(msgspec.Struct, forbid_unknown_fields=True):
    image: bytes
    """The PNG or JPEG file, base64 (standard alphabet, with padding)."""


class PlanOut(msgspec.Struct):
    area_id: int
    content_type: str
    """Sniffed from the bytes: image/png or image/jpeg."""
    bytes: int
    sha256: str
    uploaded_at: dt.datetime


class DoorPlace(msgspec.Struct):
    door_id: int
    name: str
    x: int | None
    y: int | None
    """Hundredths of a percent of the plan's width and height; None: not placed."""


class AreaMap(msgspec.Struct):
    area_id: int
    name: str
    plan: PlanOut | None
    doors: list[DoorPlace]
    """The area's doors in your subtree, placed or not."""


class PlaceIn(msgspec.Struct, forbid_unknown_fields=True):
    x: Place | None
    y: Place | None
    """Both, or both null (take the door off the plan)."""


def _plan_out(r: asyncpg.Record) -> PlanOut:
    return PlanOut(area_id=r["area_id"], content_type=r["content_type"], bytes=r["size"],
                   sha256=r["sha256"], uploaded_at=r["uploaded_at"])


_PLAN_META = ("SELECT area_id, content_type, length(image) AS size, sha256, uploaded_at"
              " FROM access_area_plans WHERE area_id = $1")


@post("/access/areas/{area_id:int}/plan", opt={"permission": "access.write"}, tags=["access"],
      status_code=200, summary="Upload an area's floor plan (PNG or JPEG, base64) for the e-map",
      description=f"The image replaces the area's plan. At most {PLAN_BYTES_MAX} bytes (else "
      "413); its type is sniffed from its bytes (anything but PNG or JPEG is 415). Nothing is "
      "stored when it is refused. Door places are kept (they are fractions of the plan).",
      responses={
          413: ResponseSpec(ProblemBody, media_type=MEDIA_TYPE, generate_examples=False,
                            description=f"More than {PLAN_BYTES_MAX} bytes"),
          415: ResponseSpec(ProblemBody, media_type=MEDIA_TYPE, generate_examples=False,
                            description="Not a PNG or JPEG image")})
async def upload_plan(area_id: Id, data: PlanIn, actor: Actor, state: State) -> PlanOut:
    if len(data.image) > PLAN_BYTES_MAX:
        raise Problem(413, "too-large", f"a floor plan is at most {PLAN_BYTES_MAX} bytes; "
                      "nothing was stored")
    content_type = sniff(data.image)
    if content_type is None:
        raise Problem(415, "unsupported-media-type", "a floor plan is a PNG or JPEG image; "
                      "nothing was stored")
    digest = hashlib.sha256(data.image).hexdigest()
    async with change(state.pool, actor) as tx:
        area = await in_scope(tx.conn, actor, "access_areas", area_id, lock=True)
        before = await tx.conn.fetchrow(_PLAN_META, area_id)
        await tx.conn.execute(
            "INSERT INTO access_area_plans (area_id, tenant_id, content_type, image, sha256,"
            " uploaded_by) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (area_id) DO UPDATE"
            " SET content_type = $3, image = $4, sha256 = $5, uploaded_by = $6,"
            " uploaded_at = now()", area_id, area["tenant_id"], content_type, data.image,
            digest, actor.user_id or None)
        out = _plan_out(await tx.conn.fetchrow(_PLAN_META, area_id))
        tx.audit("access.upload_plan", "access_area", area_id, list(area["path"]),
                 before=_plan_out(before) if before else None, after=out)
    return out


@get("/access/areas/{area_id:int}/plan", opt={"permission": "access.read"}, tags=["access"],
     summary="An area's floor plan image (image/png or image/jpeg)",
     media_type="image/png",
     responses={200: ResponseSpec(None, media_type="image/*", generate_examples=False,
                                  description="The image as uploaded")})
async def get_plan(area_id: Id, actor: Actor, state: State) -> Response[bytes]:
    await in_scope(state.pool, actor, "access_areas", area_id)
    row = await state.pool.fetchrow(
        "SELECT content_type, image, sha256 FROM access_area_plans WHERE area_id = $1", area_id)
    if row is None:
        raise Problem(404, "not-found", f"area {area_id} has no floor plan")
    return Response(content=bytes(row["image"]), media_type=row["content_type"],
                    headers={"Cache-Control": "private, no-cache", "ETag": f'"{row["sha256"]}"',
                             "X-Content-Type-Options": "nosniff"})


async def _map(conn: Any, actor: Actor, area: asyncpg.Record) -> AreaMap:
    plan = await conn.fetchrow(_PLAN_META, area["id"])
    doors = await conn.fetch(
        f"SELECT x.id, x.name, x.map_x, x.map_y FROM doors x{NODE_JOIN}"
        " WHERE x.area_id = $1 AND $2 = ANY(n.path)"
        " ORDER BY x.id LIMIT 10000", area["id"], actor.node_id)
    return AreaMap(area_id=area["id"], name=area["name"],
                   plan=_plan_out(plan) if plan else None,
                   doors=[DoorPlace(door_id=d["id"], name=d["name"], x=d["map_x"], y=d["map_y"])
                          for d in doors])


@get("/access/areas/{area_id:int}/map", opt={"permission": "access.read"}, tags=["access"],
     summary="An area's e-map: its plan (if any) and where its doors are on it")
async def area_map(area_id: Id, actor: Actor, state: State) -> AreaMap:
    area = await in_scope(state.pool, actor, "access_areas", area_id)
    return await _map(state.pool, actor, area)


@post("/access/doors/{door_id:int}/place", opt={"permission": "access.write"}, tags=["access"],
      status_code=200, summary="Place a door on its area's floor plan (or take it off)")
async def place_door(door_id: Id, data: PlaceIn, actor: Actor, state: State) -> DoorPlace:
    if (data.x is None) != (data.y is None):
        raise Problem(422, "unprocessable", "give both x and y, or neither")
    async with change(state.pool, actor) as tx:
        door = await in_scope(tx.conn, actor, "doors", door_id, lock=True)
        if data.x is not None and door["area_id"] is None:
            raise Problem(422, "unprocessable", "the door has no area: give it one first")
        before = DoorPlace(door_id=door_id, name=door["name"], x=door["map_x"], y=door["map_y"])
        await tx.conn.execute("UPDATE doors SET map_x = $2, map_y = $3 WHERE id = $1",
                              door_id, data.x, data.y)
        out = DoorPlace(door_id=door_id, name=door["name"], x=data.x, y=data.y)
        tx.audit("access.place_door", "door", door_id, list(door["path"]), before=before,
                 after=out)
    return out


ROUTES = [upload_plan, get_plan, area_map, place_door]

__all__ = ["PLAN_BYTES_MAX", "ROUTES", "AreaMap", "DoorPlace", "PlanOut", "sniff"]
