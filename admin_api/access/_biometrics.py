"""Biometric templates of a person (enrol, list, delete) and the ADMS devices' command queues.

A template is opaque bytes (a fingerprint or a face, in the format of the devices' algorithm),
kept for one person of the caller's subtree and pushed by `onecard adms` to the devices whose
doors that person may open (docs/adms.md "Templates"). The bytes go in once, base64, at most
protocols/adms.py TEMPLATE_BYTES_MAX; they never come out of this API (a listing shows the
slot, the size and where it was enrolled), never reach the audit log or a log line. Deleting
one takes it off every device at their next poll.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Final, Literal

import asyncpg
import msgspec
from litestar import delete, get, post
from litestar.datastructures import State
from litestar.params import Parameter
from msgspec import Meta

from admin_api._auth import Actor
from admin_api._problems import Problem
from admin_api._routes_people import person_in_scope
from admin_api._store import change
from admin_api._types import Id
from admin_api.adms import reconcile_users
from protocols import adms

BiometricId = Annotated[int, Parameter(ge=1, le=2**62, description="a template's id")]
SerialNo = Annotated[str, Parameter(pattern=r"^[A-Za-z0-9_-]{1,32}$", max_length=32,
                                    description="the device's serial number (SN)")]
COMMANDS_LISTED_MAX: Final = 1_000


class BiometricIn(msgspec.Struct, forbid_unknown_fields=True):
    bio_type: Literal[0, 1, 2, 9]
    """The ADMS biometric Type: 1 fingerprint, 2 face (near-infrared), 9 visible-light face;
    0 a comparison photo (a JPEG visible-light face devices make their template from)."""
    data: Annotated[str, Meta(min_length=4, max_length=adms.TEMPLATE_TEXT_CHARS_MAX,
                              pattern=r"^[A-Za-z0-9+/]+={0,2}$")]
    """The template, base64 (at most 65,536 bytes decoded). Opaque: passed to the devices
    unchanged."""
    no: Annotated[int, Meta(ge=0, le=adms.FINGER_NO_MAX)] = 0
    """The finger (0..9) of a fingerprint; 0 for a face."""
    index: Annotated[int, Meta(ge=0, le=adms.TEMPLATE_INDEX_MAX)] = 0
    """The template's index within the finger or face (a near-infrared face has several)."""
    major_ver: Annotated[int, Meta(ge=0, le=999)] = 0
    """The algorithm's major version (ADMS MajorVer: 10 for ZKFinger VX10, ...)."""
    minor_ver: Annotated[int, Meta(ge=0, le=999)] = 0
    format: Annotated[int, Meta(ge=0, le=99)] = 0


class BiometricOut(msgspec.Struct):
    id: int
    person_id: int
    bio_type: int
    kind: str
    """fingerprint, face, face_visible or face_photo."""
    no: int
    index: int
    major_ver: int
    minor_ver: int
    format: int
    size_bytes: int
    enrolled_at_device: str | None
    """The serial number of the device it was enrolled at; None: through this API."""
    created_at: dt.datetime


class CommandOut(msgspec.Struct):
    id: int
    summary: str
    """The command without its template."""
    status: str
    """pending, sent (handed out, not yet acknowledged), done or failed."""
    attempts: int
    return_code: int | None
    created_at: dt.datetime
    sent_at: dt.datetime | None
    done_at: dt.datetime | None


class SyncIn(msgspec.Struct, forbid_unknown_fields=True):
    full: bool = False
    """Forget what the device was told: everything is sent again (a replaced or wiped
    device)."""


class SyncOut(msgspec.Struct):
    serial_no: str
    queued: int


_SELECT: Final = (
    "SELECT id, person_id, bio_type, no, idx, major_ver, minor_ver, format,"
    " octet_length(data) AS size_bytes, source_serial_no, created_at FROM biometric_templates")


def _out(r: asyncpg.Record) -> BiometricOut:
    return BiometricOut(id=r["id"], person_id=r["person_id"], bio_type=r["bio_type"],
                        kind=adms.BIO_TYPES[r["bio_type"]], no=r["no"], index=r["idx"],
                        major_ver=r["major_ver"], minor_ver=r["minor_ver"], format=r["format"],
                        size_bytes=r["size_bytes"], enrolled_at_device=r["source_serial_no"],
                        created_at=r["created_at"])


@post("/people/{person_id:int}/biometrics", opt={"permission": "cards.write"}, tags=["cards"],
      summary="Enrol a fingerprint or face template (replaces the one in the same slot); "
      "pushed to the ADMS devices of the doors the person may open")
async def enrol_biometric(person_id: Id, data: BiometricIn, actor: Actor, state: State
                          ) -> BiometricOut:
    try:
        template = adms.decode_template(data.data)
    except adms.AdmsError:
        raise Problem(422, "unprocessable", "data is not a base64 template of 1..65536 bytes")\
            from None
    no = data.no if data.bio_type == 1 else 0
    index = 0 if data.bio_type == adms.PHOTO else data.index
    async with change(state.pool, actor) as tx:
        person = await person_in_scope(tx.conn, actor, person_id, lock=True)
        old = await tx.conn.fetchrow(
            _SELECT + " WHERE person_id = $1 AND bio_type = $2 AND no = $3 AND idx = $4"
            " FOR UPDATE", person_id, data.bio_type, no, index)
        if old is not None:
            await tx.conn.execute("DELETE FROM biometric_templates WHERE id = $1", old["id"])
        row = await tx.conn.fetchrow(
            "INSERT INTO biometric_templates (tenant_id, person_id, bio_type, no, idx,"
            " major_ver, minor_ver, format, data, created_by)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
            person["tenant_id"], person_id, data.bio_type, no, index, data.major_ver,
            data.minor_ver, data.format, template, actor.user_id if actor.user_id > 0 else None)
        out = _out(await tx.conn.fetchrow(_SELECT + " WHERE id = $1", row["id"]))
        # The audit row names the slot and the size, never the bytes.
        tx.audit("biometric.enrol", "biometric", out.id, list(person["path"]),
                 before=_out(old) if old is not None else None, after=out)
    return out


@get("/people/{person_id:int}/biometrics", opt={"permission": "cards.read"}, tags=["cards"],
     summary="A person's biometric templates (slot, size, origin; never the bytes)")
async def list_biometrics(person_id: Id, actor: Actor, state: State) -> list[BiometricOut]:
    await person_in_scope(state.pool, actor, person_id)
    return [_out(r) for r in await state.pool.fetch(
        _SELECT + " WHERE person_id = $1 ORDER BY bio_type, no, idx", person_id)]


@delete("/people/{person_id:int}/biometrics/{biometric_id:int}",
        opt={"permission": "cards.write"}, tags=["cards"], status_code=204,
        summary="Delete a biometric template: taken off every ADMS device at its next poll")
async def delete_biometric(person_id: Id, biometric_id: BiometricId, actor: Actor,
                           state: State) -> None:
    async with change(state.pool, actor) as tx:
        person = await person_in_scope(tx.conn, actor, person_id, lock=True)
        old = await tx.conn.fetchrow(_SELECT + " WHERE id = $1 AND person_id = $2 FOR UPDATE",
                                     biometric_id, person_id)
        if old is None:
            raise Problem(404, "not-found", f"person {person_id} has no template "
                          f"{biometric_id}")
        await tx.conn.execute("DELETE FROM biometric_templates WHERE id = $1", biometric_id)
        tx.audit("biometric.delete", "biometric", biometric_id, list(person["path"]),
                 before=_out(old))


async def _device_in_scope(conn: asyncpg.Connection | asyncpg.Pool, actor: Actor,
                           serial_no: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT d.serial_no, n.path FROM adms_devices d JOIN org_nodes n ON n.id = d.node_id"
        " WHERE d.serial_no = $1", serial_no)
    actor.require_node(list(row["path"]) if row else None, f"ADMS device {serial_no}")
    return row


@get("/adms/devices/{serial_no:str}/commands", opt={"permission": "access.read"},
     tags=["access"], summary="An ADMS device's command queue: what it has not acknowledged "
     "(pending, sent) and what failed, oldest first; `all` adds the done ones")
async def device_commands(serial_no: SerialNo, actor: Actor, state: State,
                          status: Literal["open", "all"] = "open") -> list[CommandOut]:
    await _device_in_scope(state.pool, actor, serial_no)
    rows = await state.pool.fetch(
        "SELECT id, summary, status, attempts, return_code, created_at, sent_at, done_at"
        " FROM adms_commands WHERE serial_no = $1 AND ($2 OR status <> 'done')"
        " ORDER BY id LIMIT $3", serial_no, status == "all", COMMANDS_LISTED_MAX)
    return [CommandOut(id=r["id"], summary=r["summary"], status=r["status"],
                       attempts=r["attempts"], return_code=r["return_code"],
                       created_at=r["created_at"], sent_at=r["sent_at"], done_at=r["done_at"])
            for r in rows]


@post("/adms/devices/{serial_no:str}/sync", opt={"permission": "access.write"},
      tags=["access"], summary="Compare an ADMS device's users and templates now and queue "
      "the difference (`full`: send everything again)")
async def sync_device(serial_no: SerialNo, data: SyncIn, actor: Actor, state: State
                      ) -> SyncOut:
    async with change(state.pool, actor) as tx:
        device = await _device_in_scope(tx.conn, actor, serial_no)
        tx.audit("adms.sync", "adms_device", serial_no, list(device["path"]),
                 after={"full": data.full})
    return SyncOut(serial_no=serial_no,
                   queued=await reconcile_users(state.pool, serial_no, full=data.full))


ROUTES = [enrol_biometric, list_biometrics, delete_biometric, device_commands, sync_device]
