"""The /iclock/* endpoints (docs/adms.md): registration, record upload, command poll, replies.

Every request names its device by `SN`; a serial number that no operator registered (POST
/adms/devices on the admin API), or a disabled one, is refused 403 with nothing stored.
Uploads are idempotent: a record is one row per (device, PIN, local time), so a device that
resends a batch (it does, after a lost answer) changes nothing the second time. Users and their
biometric templates go down as commands (admin_api/adms/_sync.py): what the device should
hold compared with what it was told before, the difference queued; templates enrolled at a
device come up in OPERLOG/BIODATA uploads, are kept, and so reach the person's other devices.
Template bytes never reach a log line.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import asyncpg
import msgspec
import structlog
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State

from admin_api.adms import _sync
from protocols import adms

reconcile_users = _sync.reconcile

RECONCILE_EVERY_SECONDS: Final = 5.0
"""A device polls every few seconds; its users are compared at most this often."""
RESEND_AFTER_SECONDS: Final = 60.0
"""A batch handed out and not acknowledged within this long is handed out again."""
TEXT: Final = "text/plain"
_CREDENTIAL_KIND: Final = {1: 3, 15: 2, 4: 1, 0: 1}
"""ADMS verify mode -> access credential kind: fingerprint 3, face 2, card (and the rest) 1."""

log = structlog.get_logger("onecard.adms")


class AdmsStatistics(msgspec.Struct, frozen=True):
    requests: int
    refused: int
    """Unknown or disabled serial numbers, and malformed bodies."""
    records_new: int
    records_repeated: int
    commands_sent: int
    commands_refused: int
    """Acknowledged with a Return other than 0 (retried, then failed)."""
    templates_stored: int
    """Templates uploaded by devices and kept (new, changed or repeated)."""
    templates_refused: int
    """Templates uploaded for a PIN that names nobody of the device's subtree: not kept."""


class _Counters:
    def __init__(self) -> None:
        self.requests = self.refused = self.records_new = self.records_repeated = 0
        self.commands_sent = self.commands_refused = 0
        self.templates_stored = self.templates_refused = 0

    def statistics(self) -> AdmsStatistics:
        return AdmsStatistics(self.requests, self.refused, self.records_new,
                              self.records_repeated, self.commands_sent, self.commands_refused,
                              self.templates_stored, self.templates_refused)


def _text(body: str, status: int = 200) -> Response[str]:
    return Response(body, status_code=status, media_type=TEXT)


async def _device(request: Request[Any, Any, Any], state: State) -> asyncpg.Record | Response[str]:
    """The registered, enabled device the request names, or the refusal to answer."""
    counters: _Counters = state.counters
    counters.requests += 1
    serial_no = request.query_params.get("SN")
    if not adms.valid_serial(serial_no):
        counters.refused += 1
        return _text("ERROR: SN missing or malformed", 400)
    row = await state.pool.fetchrow(
        "SELECT d.serial_no, d.tenant_id, d.node_id, d.terminal_id, d.door_id, d.enabled,"
        " d.attlog_stamp,"
        " d.operlog_stamp, d.synced_at, t.utc_offset_s FROM adms_devices d"
        " JOIN tenants t ON t.id = d.tenant_id WHERE d.serial_no = $1", serial_no)
    if row is None or not row["enabled"]:
        counters.refused += 1
        log.warning("adms.device_refused", serial_no=serial_no,
                    reason="unknown" if row is None else "disabled")
        return _text("ERROR: unknown device", 403)
    return row


async def _reconcile_if_due(state: State, device: asyncpg.Record) -> None:
    synced = device["synced_at"]
    if synced is None or (dt.datetime.now(dt.UTC) - synced).total_seconds() >= \
            state.reconcile_seconds:
        n = await _sync.reconcile(state.pool, device["serial_no"])
        if n:
            log.info("adms.users_queued", serial_no=device["serial_no"], commands=n)


@get("/iclock/cdata", media_type=TEXT)
async def register(request: Request[Any, Any, Any], state: State) -> Response[str]:
    """The device's first contact after power-on: it learns where to resume (the stamps)."""
    device = await _device(request, state)
    if isinstance(device, Response):
        return device
    firmware = (request.query_params.get("pushver") or "")[:32]
    major = firmware.split(".", 1)[0]
    biodata = major.isascii() and major.isdigit() and len(major) <= 3 and int(major) >= 3
    await state.pool.execute(
        "UPDATE adms_devices SET last_seen_at = now(), firmware = $2,"
        " bio_dialect = CASE WHEN $3 THEN 'biodata' ELSE bio_dialect END WHERE serial_no = $1",
        device["serial_no"], firmware, biodata)
    await _sync.rebooted(state.pool, device["serial_no"])
    await _reconcile_if_due(state, device)
    return _text(adms.format_options(device["serial_no"], attlog_stamp=device["attlog_stamp"],
                                     operlog_stamp=device["operlog_stamp"],
                                     utc_offset_s=device["utc_offset_s"]))


async def _body(request: Request[Any, Any, Any]) -> str:
    raw = await request.body()
    if len(raw) > adms.BODY_BYTES_MAX:
        raise adms.AdmsError(f"body above {adms.BODY_BYTES_MAX} bytes")
    return raw.decode("utf-8", errors="replace")


def _stamp(request: Request[Any, Any, Any]) -> int:
    text = request.query_params.get("Stamp") or "0"
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 12 else 0


async def _store_attlog(state: State, device: asyncpg.Record, records: list[adms.AttRecord],
                        stamp: int) -> int:
    """Insert the records (each once); the number new."""
    offset = dt.timedelta(seconds=device["utc_offset_s"])
    pins = sorted({int(r.pin) for r in records if r.pin.isdigit() and len(r.pin) <= 9})
    async with state.pool.acquire() as conn, conn.transaction():
        # A PIN names a person of the device's own subtree, or nobody: another tenant's
        # person id is never mapped.
        people = {str(r["id"]): r["account_id"] for r in await conn.fetch(
            "SELECT p.id, p.account_id FROM people p JOIN org_nodes n ON n.id = p.node_id"
            " WHERE p.id = ANY($1::integer[]) AND $2 = ANY(n.path)", pins, device["node_id"])}
        rows = await conn.fetch(
            "INSERT INTO adms_records (serial_no, pin, local_time, at, status, verify, person_id)"
            " SELECT $1, r.pin, r.local_time, r.local_time AT TIME ZONE 'UTC' - $2::interval,"
            " r.status, r.verify, r.person_id"
            " FROM unnest($3::text[], $4::timestamp[], $5::smallint[], $6::smallint[],"
            " $7::integer[]) AS r(pin, local_time, status, verify, person_id)"
            " ON CONFLICT (serial_no, pin, local_time) DO NOTHING"
            " RETURNING id, pin, at, status, verify",
            device["serial_no"], offset, [r.pin for r in records],
            [r.local_time for r in records], [max(-32768, min(32767, r.status)) for r in records],
            [max(-32768, min(32767, r.verify)) for r in records],
            [int(r.pin) if r.pin in people else None for r in records])
        if rows and device["door_id"] is not None and device["terminal_id"] is not None:
            # The device opened the door itself: each new record is an access record of its
            # door (source 2), once, in this transaction (docs/adms.md).
            await conn.executemany(
                "INSERT INTO access_decisions (terminal_id, source, txn_seq, tenant_id, door_id,"
                " area_id, reader_no, direction, credential_kind, credential, account_id, code,"
                " decided_ms, committed_at) SELECT $1, 2, $2, $3, d.id, coalesce(d.area_id, 0),"
                " 1, $4, $5, $6, $7, 0, $8, now() FROM doors d WHERE d.id = $9"
                " ON CONFLICT ON CONSTRAINT access_decision_once DO NOTHING",
                [(device["terminal_id"], r["id"], device["tenant_id"],
                  1 if r["status"] == 1 else 0, _CREDENTIAL_KIND.get(r["verify"], 1),
                  f"adms:{r['pin']}", people.get(r["pin"], 0),
                  int(r["at"].timestamp() * 1000), device["door_id"]) for r in rows])
        await conn.execute(
            "UPDATE adms_devices SET attlog_stamp = greatest(attlog_stamp, $2),"
            " last_seen_at = now() WHERE serial_no = $1", device["serial_no"], stamp)
    return len(rows)


@post("/iclock/cdata", media_type=TEXT, status_code=200)
async def upload(request: Request[Any, Any, Any], state: State) -> Response[str]:
    """Records pushed by the device: `table=ATTLOG` is stored; the templates of `table=OPERLOG`,
    `BIODATA`, `BIOPHOTO` (FP, FACE, BIODATA, BIOPHOTO lines) are kept; other lines
    acknowledged only."""
    device = await _device(request, state)
    if isinstance(device, Response):
        return device
    counters: _Counters = state.counters
    table = request.query_params.get("table", "")
    try:
        body = await _body(request)
        if table == "ATTLOG":
            records = adms.parse_attlog(body)
        elif table.upper() in ("OPERLOG", "BIODATA", "BIOPHOTO"):
            upload = adms.parse_templates(body)
            # Only a push 3.x device knows the BIODATA and BIOPHOTO tables.
            biodata = table.upper() != "OPERLOG" or any(
                t.bio_type in (adms.PHOTO, 9) for t in upload.templates) or "BIODATA " in body
            return await _templates_uploaded(state, device, upload, biodata=biodata)
        else:
            lines = [ln for ln in body.splitlines() if ln.strip()]
            return _text(f"OK: {len(lines)}")
    except adms.AdmsError as exc:
        counters.refused += 1
        log.warning("adms.upload_refused", serial_no=device["serial_no"], error=str(exc))
        return _text(f"ERROR: {exc}", 400)
    new = await _store_attlog(state, device, records, _stamp(request)) if records else 0
    counters.records_new += new
    counters.records_repeated += len(records) - new
    return _text(f"OK: {len(records)}")


async def _templates_uploaded(state: State, device: asyncpg.Record, upload: adms.TemplateUpload,
                              *, biodata: bool) -> Response[str]:
    counters: _Counters = state.counters
    kept = refused = 0
    if upload.templates:
        kept, refused = await _sync.store_templates(state.pool, device, upload.templates,
                                                    biodata=biodata)
    counters.templates_stored += kept
    counters.templates_refused += refused
    if kept or refused:
        # Counts only: a template is personal data and never reaches a log.
        log.info("adms.templates_uploaded", serial_no=device["serial_no"], stored=kept,
                 unknown_pin=refused)
    return _text(f"OK: {len(upload.templates) + upload.other_lines}")


@get("/iclock/getrequest", media_type=TEXT)
async def poll(request: Request[Any, Any, Any], state: State) -> Response[str]:
    """The device's poll: commands waiting for it (user sync), oldest first, or "OK"."""
    device = await _device(request, state)
    if isinstance(device, Response):
        return device
    await _reconcile_if_due(state, device)
    commands = await _sync.hand_out(state.pool, device["serial_no"], state.resend_seconds)
    await state.pool.execute("UPDATE adms_devices SET last_seen_at = now() WHERE serial_no = $1",
                             device["serial_no"])
    state.counters.commands_sent += len(commands)
    return _text(adms.format_commands(commands))


@post("/iclock/devicecmd", media_type=TEXT, status_code=200)
async def command_replies(request: Request[Any, Any, Any], state: State) -> Response[str]:
    """The device's answers to commands: Return=0 done, another code retried (then failed)."""
    device = await _device(request, state)
    if isinstance(device, Response):
        return device
    try:
        replies = adms.parse_devicecmd(await _body(request))
    except adms.AdmsError as exc:
        state.counters.refused += 1
        return _text(f"ERROR: {exc}", 400)
    if replies:
        await _sync.acknowledge(state.pool, device["serial_no"], replies)
        state.counters.commands_refused += sum(1 for r in replies if r.return_code != 0)
    return _text("OK")


@get("/iclock/statistics", media_type="application/json", include_in_schema=False)
async def statistics(state: State) -> AdmsStatistics:
    return state.counters.statistics()


def create_adms_app(dsn: str, *, pool: asyncpg.Pool | None = None,
                    reconcile_seconds: float = RECONCILE_EVERY_SECONDS,
                    resend_seconds: float = RESEND_AFTER_SECONDS) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own = pool is None
        app.state.pool = pool or await asyncpg.create_pool(
            dsn, min_size=1, max_size=4, server_settings={"application_name": "onecard-adms"})
        try:
            yield
        finally:
            if own:
                await app.state.pool.close()

    return Litestar(
        route_handlers=[register, upload, poll, command_replies, statistics],
        lifespan=[lifespan],
        state=State({"counters": _Counters(), "reconcile_seconds": reconcile_seconds,
                     "resend_seconds": resend_seconds}),
        request_max_body_size=adms.BODY_BYTES_MAX,
        openapi_config=None,
        debug=False,
    )
