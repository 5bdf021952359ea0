"""Merchants (canteens, shops, services such as showers, system accounts), their terminals, and
a tenant's meal windows.

A merchant belongs to an org node (its tenant's node or a department of it) and is seen by the
log-ins of that node's ancestors: a merchant_viewer bound to a node sees the merchants of its
subtree. Merchant and terminal ids stay dense (`_store.next_id`): the switch's balance cache
indexes merchants by id.

Terminal keys are derived from the site master secret (`protocols.ocp.derive_terminal_key`,
docs/protocol.md "Keys and MAC"): nothing here stores a key. Registering a terminal, and
re-keying it (key_version + 1, which revokes the old key), answers the key once; no GET shows
it. Every change goes out on the change feed (TerminalUpserted, MerchantOpened,
MerchantConfigured, TenantConfigured), so a running switch ends a re-keyed or disabled
terminal's session and refuses its old key, and sells at a merchant's new price, within about a
second.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import get, patch, post, put
from litestar.datastructures import CacheControlHeader, State
from litestar.params import Parameter
from msgspec import Meta

from admin_api._auth import Actor
from admin_api._problems import Problem
from admin_api._store import change, next_id, subtree_root
from admin_api._types import AfterId, Id, IdField, Limit, OptionalId
from protocols import ocp
from protocols.changes import (
    MerchantConfigured,
    MerchantOpened,
    TenantConfigured,
    TerminalUpserted,
)
from protocols.limits import AMOUNT_FEN_MAX, MERCHANT_ID_MAX, TERMINAL_ID_MAX

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Fen = Annotated[int, Meta(ge=0, le=AMOUNT_FEN_MAX)]
FeeRate = Annotated[int, Meta(ge=0, le=10_000)]
"""Basis points of the amount: 60 is 0.6 %."""

MerchantKind = Literal["canteen", "shop", "service", "system"]
Mode = Literal["free", "fixed"]
SpendOrder = Literal["subsidy_first", "main_first", "main_only"]
SettlementCycle = Literal["daily", "weekly", "monthly"]
TerminalKind = Literal["pos", "kiosk", "door", "attendance", "water", "admin"]

MODES: dict[int, Mode] = {0: "free", 1: "fixed"}
SPEND_ORDERS: dict[int, SpendOrder] = {0: "subsidy_first", 1: "main_first", 2: "main_only"}
TERMINAL_KINDS: dict[int, TerminalKind] = {1: "pos", 2: "kiosk", 3: "door", 4: "attendance",
                                           5: "water", 6: "admin"}
TERMINAL_STATUS = {0: "enabled", 1: "disabled"}
_MODE_IDS = {v: k for k, v in MODES.items()}
_ORDER_IDS = {v: k for k, v in SPEND_ORDERS.items()}
_TERMINAL_KIND_IDS = {v: k for k, v in TERMINAL_KINDS.items()}
_NO_STORE = CacheControlHeader(no_store=True)
"""Answers that carry a key: no cache anywhere may keep them."""


class MerchantIn(msgspec.Struct, forbid_unknown_fields=True):
    node_id: IdField
    """The tenant node or department the merchant belongs to."""
    name: Name
    kind: MerchantKind = "canteen"
    """canteen, shop (a supermarket), service (showers, water, laundry), system (the cash desk,
    the subsidy fund: counterparties of counter money, no POS)."""
    mode: Mode = "free"
    """free: the till keys in the amount; fixed: every purchase costs fixed_amount_fen."""
    fixed_amount_fen: Fen = 0
    spend_order: SpendOrder = "subsidy_first"
    """Which wallet pays first."""
    fee_rate_bp: FeeRate = 0
    settlement_cycle: SettlementCycle = "daily"


class MerchantPatch(msgspec.Struct, forbid_unknown_fields=True):
    """The fields to change; the others stay."""

    name: Name | None = None
    kind: MerchantKind | None = None
    mode: Mode | None = None
    fixed_amount_fen: Fen | None = None
    spend_order: SpendOrder | None = None
    fee_rate_bp: FeeRate | None = None
    settlement_cycle: SettlementCycle | None = None


class MerchantOut(msgspec.Struct):
    id: int
    tenant_id: int
    node_id: int
    name: str
    kind: str
    mode: Mode
    fixed_amount_fen: int
    spend_order: SpendOrder
    fee_rate_bp: int
    settlement_cycle: str


class MerchantPage(msgspec.Struct):
    items: list[MerchantOut]
    next_after: int | None


class TerminalIn(msgspec.Struct, forbid_unknown_fields=True):
    kind: TerminalKind = "pos"
    """admin terminals (counter money) belong to system merchants, the others to the rest."""
    name: Annotated[str, Meta(max_length=200)] = ""


class TerminalOut(msgspec.Struct):
    id: int
    merchant_id: int
    kind: TerminalKind
    name: str
    key_version: int
    status: str


class TerminalView(TerminalOut):
    """A terminal as the list and detail routes show it: with whether it is signed on to the
    switch now (terminal_presence, written by the switch; docs/operations.md "Terminals
    online")."""

    online: bool = False
    online_since: datetime | None = None
    """When `online` last changed (None: the switch has never seen the terminal)."""
    signed_on_at: datetime | None = None
    """Its last sign-on."""
    peer: str | None = None
    """ip:port of its last session: only for log-ins that manage terminals (merchants.write);
    None for the others, and before a first sign-on."""


class TerminalPage(msgspec.Struct):
    items: list[TerminalView]
    next_after: int | None


class TerminalKey(msgspec.Struct):
    """A terminal and its key: shown this once, never again (load it into the terminal now)."""

    terminal: TerminalOut
    key_hex: str
    """The 32-byte OCP terminal key of (terminal id, key_version), hex."""


class MealWindow(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=40, pattern=r"^[^=+\-@\t\r\n]")]
    start_minute: Annotated[int, Meta(ge=0, le=1439)]
    """Minutes of the tenant's local day, [start, end)."""
    end_minute: Annotated[int, Meta(ge=1, le=1440)]


class MealWindowsIn(msgspec.Struct, forbid_unknown_fields=True):
    windows: Annotated[list[MealWindow], Meta(max_length=8)]


class MealWindowsOut(msgspec.Struct):
    tenant_id: int
    utc_offset_s: int
    windows: list[MealWindow]


# -- looking things up, in the caller's subtree ---------------------------------------------------

_MERCHANT_SELECT = (
    "SELECT m.id, m.tenant_id, coalesce(m.node_id, tn.id) AS node_id, m.name, m.kind, m.mode,"
    " m.fixed_amount_fen, m.spend_order, m.fee_rate_bp, m.settlement_cycle,"
    " coalesce(n.path, tn.path) AS path, t.utc_offset_s"
    " FROM merchants m JOIN tenants t ON t.id = m.tenant_id"
    " LEFT JOIN org_nodes n ON n.id = m.node_id"
    " LEFT JOIN org_nodes tn ON tn.kind = 'tenant' AND tn.tenant_id = m.tenant_id"
)
"""A merchant made before the admin API (node_id NULL) belongs to its tenant's node."""
_TERMINAL_SELECT = (
    "SELECT te.id, te.merchant_id, te.kind, te.name, te.key_version, te.status,"
    " m.tenant_id, m.kind AS merchant_kind, coalesce(n.path, tn.path) AS path, t.utc_offset_s"
    " FROM terminals te JOIN merchants m ON m.id = te.merchant_id"
    " JOIN tenants t ON t.id = m.tenant_id"
    " LEFT JOIN org_nodes n ON n.id = m.node_id"
    " LEFT JOIN org_nodes tn ON tn.kind = 'tenant' AND tn.tenant_id = m.tenant_id"
)


def merchant_out(r: asyncpg.Record) -> MerchantOut:
    return MerchantOut(id=r["id"], tenant_id=r["tenant_id"], node_id=r["node_id"],
                       name=r["name"], kind=r["kind"], mode=MODES[r["mode"]],
                       fixed_amount_fen=r["fixed_amount_fen"],
                       spend_order=SPEND_ORDERS[r["spend_order"]],
                       fee_rate_bp=r["fee_rate_bp"], settlement_cycle=r["settlement_cycle"])


def terminal_out(r: asyncpg.Record) -> TerminalOut:
    return TerminalOut(id=r["id"], merchant_id=r["merchant_id"], kind=TERMINAL_KINDS[r["kind"]],
                       name=r["name"], key_version=r["key_version"],
                       status=TERMINAL_STATUS[r["status"]])


def _path(r: asyncpg.Record | None) -> list[int] | None:
    return list(r["path"]) if r is not None and r["path"] is not None else None


async def merchant_in_scope(conn: Any, actor: Actor, merchant_id: int, *, lock: bool = False
                            ) -> asyncpg.Record:
    row = await conn.fetchrow(_MERCHANT_SELECT + " WHERE m.id = $1"
                              + (" FOR UPDATE OF m" if lock else ""), merchant_id)
    actor.require_node(_path(row), f"merchant {merchant_id}")
    return row


async def terminal_in_scope(conn: Any, actor: Actor, terminal_id: int, *, lock: bool = False
                            ) -> asyncpg.Record:
    row = await conn.fetchrow(_TERMINAL_SELECT + " WHERE te.id = $1"
                              + (" FOR UPDATE OF te" if lock else ""), terminal_id)
    actor.require_node(_path(row), f"terminal {terminal_id}")
    return row


async def tenant_in_scope(conn: Any, actor: Actor, tenant_id: int, *, inside_ok: bool = False
                          ) -> asyncpg.Record:
    """The tenant (id, utc_offset_s, node id and path) if its node is in the actor's subtree;
    with `inside_ok`, also if the actor is bound to a node inside the tenant (a department's
    log-in may read its tenant's settings, not its data)."""
    row = await conn.fetchrow(
        "SELECT t.id, t.utc_offset_s, n.id AS node_id, n.path FROM tenants t"
        " JOIN org_nodes n ON n.kind = 'tenant' AND n.tenant_id = t.id WHERE t.id = $1",
        tenant_id)
    if row is not None and inside_ok and row["node_id"] in actor.node_path:
        return row
    actor.require_node(_path(row), f"tenant {tenant_id}")
    return row


def _check_price(mode: Mode, fixed_amount_fen: int) -> None:
    if mode == "fixed" and fixed_amount_fen < 1:
        raise Problem(422, "unprocessable", "a fixed-amount merchant needs fixed_amount_fen >= 1")
    if mode == "free" and fixed_amount_fen != 0:
        raise Problem(422, "unprocessable", "a free-amount merchant has no fixed_amount_fen "
                      "(give 0, or mode fixed)")


def _opened(r: asyncpg.Record | MerchantOut) -> MerchantOpened:
    if isinstance(r, MerchantOut):
        return MerchantOpened(r.id, r.tenant_id, _MODE_IDS[r.mode], r.fixed_amount_fen,
                              _ORDER_IDS[r.spend_order], 0)
    return MerchantOpened(r["id"], r["tenant_id"], r["mode"], r["fixed_amount_fen"],
                          r["spend_order"], 0)


def _configured(m: MerchantOut) -> MerchantConfigured:
    return MerchantConfigured(m.id, _MODE_IDS[m.mode], m.fixed_amount_fen,
                              _ORDER_IDS[m.spend_order])


# -- merchants -------------------------------------------------------------------------------------


@post("/merchants", opt={"permission": "merchants.write"}, tags=["merchants"],
      summary="Open a merchant (a canteen, a shop, a service, a system account) at a node")
async def create_merchant(data: MerchantIn, actor: Actor, state: State) -> MerchantOut:
    _check_price(data.mode, data.fixed_amount_fen)
    async with change(state.pool, actor) as tx:
        node = await tx.conn.fetchrow("SELECT kind, tenant_id, path FROM org_nodes WHERE id = $1",
                                      data.node_id)
        actor.require_node(_path(node), f"node {data.node_id}")
        if node["tenant_id"] is None:
            raise Problem(422, "unprocessable", "merchants belong to a tenant or one of its "
                          f"departments, not to a {node['kind']}")
        merchant_id = await next_id(tx.conn, "merchants", MERCHANT_ID_MAX)
        # Opened while switches run, a merchant starts at 0 (the switch refuses another
        # opening balance): its money comes from purchases.
        await tx.conn.execute(
            "INSERT INTO merchants (id, tenant_id, name, kind, mode, fixed_amount_fen,"
            " spend_order, opening_balance_fen, node_id, fee_rate_bp, settlement_cycle)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10)",
            merchant_id, node["tenant_id"], data.name, data.kind, _MODE_IDS[data.mode],
            data.fixed_amount_fen, _ORDER_IDS[data.spend_order], data.node_id, data.fee_rate_bp,
            data.settlement_cycle)
        row = await tx.conn.fetchrow(_MERCHANT_SELECT + " WHERE m.id = $1", merchant_id)
        out = merchant_out(row)
        tx.audit("merchant.create", "merchant", merchant_id, list(node["path"]), after=out)
        tx.event(_opened(out))
    return out


@get("/merchants", opt={"permission": "merchants.read"}, tags=["merchants"],
     summary="Merchants of your subtree (or of one node's subtree), by id, paged")
async def list_merchants(actor: Actor, state: State, node_id: OptionalId = None,
                         kind: MerchantKind | None = None,
                         q: Annotated[str | None, Parameter(max_length=100)] = None,
                         after: AfterId = 0, limit: Limit = 100) -> MerchantPage:
    scope = await subtree_root(state.pool, actor, node_id)
    rows = await state.pool.fetch(
        _MERCHANT_SELECT + " WHERE $1 = ANY(coalesce(n.path, tn.path)) AND m.id > $2"
        " AND ($3::text IS NULL OR m.kind = $3)"
        " AND ($4::text IS NULL OR m.name ILIKE '%' || $4 || '%')"
        " ORDER BY m.id LIMIT $5", scope, after, kind, q, limit + 1)
    items = [merchant_out(r) for r in rows[:limit]]
    return MerchantPage(items=items, next_after=items[-1].id if len(rows) > limit else None)


@get("/merchants/{merchant_id:int}", opt={"permission": "merchants.read"}, tags=["merchants"],
     summary="One merchant")
async def get_merchant(merchant_id: Id, actor: Actor, state: State) -> MerchantOut:
    return merchant_out(await merchant_in_scope(state.pool, actor, merchant_id))


@patch("/merchants/{merchant_id:int}", opt={"permission": "merchants.write"},
       tags=["merchants"], summary="Change a merchant's name, kind, price, spend order, fee or "
       "settlement cycle")
async def update_merchant(merchant_id: Id, data: MerchantPatch, actor: Actor, state: State
                          ) -> MerchantOut:
    async with change(state.pool, actor) as tx:
        row = await merchant_in_scope(tx.conn, actor, merchant_id, lock=True)
        before = merchant_out(row)
        changes = {f: v for f in MerchantPatch.__struct_fields__
                   if (v := getattr(data, f)) is not None}
        if "kind" in changes and (changes["kind"] == "system") != (before.kind == "system"):
            raise Problem(409, "conflict", "a system account stays one, and a merchant never "
                          "becomes one: open a new merchant")
        if changes.get("mode") == "free" and "fixed_amount_fen" not in changes:
            changes["fixed_amount_fen"] = 0
        after = msgspec.structs.replace(before, **changes)
        _check_price(after.mode, after.fixed_amount_fen)
        if after == before:
            return before  # nothing to do, nothing audited
        await tx.conn.execute(
            "UPDATE merchants SET name = $2, kind = $3, mode = $4, fixed_amount_fen = $5,"
            " spend_order = $6, fee_rate_bp = $7, settlement_cycle = $8 WHERE id = $1",
            merchant_id, after.name, after.kind, _MODE_IDS[after.mode], after.fixed_amount_fen,
            _ORDER_IDS[after.spend_order], after.fee_rate_bp, after.settlement_cycle)
        tx.audit("merchant.update", "merchant", merchant_id, list(row["path"]), before=before,
                 after=after)
        if _configured(after) != _configured(before):
            # What the switch holds of a merchant changed: every running switch sells at the
            # new price and spend order within about a second (docs/admin_api.md).
            tx.event(_configured(after))
    return after


# -- terminals -------------------------------------------------------------------------------------


def _key_hex(state: State, terminal_id: int, key_version: int) -> str:
    secret: str = state.settings.master_secret
    if not secret:
        raise Problem(503, "not-configured", "the admin API has no master_secret (setting "
                      "ONECARD_ADMIN_MASTER_SECRET): it cannot issue terminal keys")
    return ocp.derive_terminal_key(bytes.fromhex(secret), terminal_id, key_version).hex()


def _upserted(r: asyncpg.Record | TerminalOut) -> TerminalUpserted:
    if isinstance(r, TerminalOut):
        return TerminalUpserted(r.id, r.merchant_id, _TERMINAL_KIND_IDS[r.kind], r.key_version,
                                r.status == "enabled")
    return TerminalUpserted(r["id"], r["merchant_id"], r["kind"], r["key_version"],
                            r["status"] == 0)


def _not_own_terminal(state: State, terminal_id: int) -> None:
    """The admin API's own admin terminal (the one it moves money as) is not disabled or
    re-keyed under its feet: it derived that key when it started."""
    money = getattr(state, "money", None)
    own = {state.settings.switch_terminal_id, getattr(money, "terminal_id", 0)} - {0}
    if terminal_id in own:
        raise Problem(409, "conflict", f"terminal {terminal_id} is the admin API's own terminal: "
                      "disabling or re-keying it would cut the API off the switch")


@post("/merchants/{merchant_id:int}/terminals", opt={"permission": "merchants.write"},
      tags=["terminals"], cache_control=_NO_STORE,
      summary="Register a terminal at a merchant; the answer holds its key, shown this once")
async def register_terminal(merchant_id: Id, data: TerminalIn, actor: Actor, state: State
                            ) -> TerminalKey:
    async with change(state.pool, actor) as tx:
        merchant = await merchant_in_scope(tx.conn, actor, merchant_id, lock=True)
        if data.kind == "admin" and actor.role != "platform_admin":
            # An admin terminal moves money with no document and no approval: only the
            # platform registers one (a second admin API process needs one).
            raise Problem(403, "forbidden", "only a platform admin registers an admin terminal")
        if (data.kind == "admin") != (merchant["kind"] == "system"):
            raise Problem(422, "unprocessable", "admin terminals (counter money) belong to system "
                          "merchants, and only they do")
        terminal_id = await next_id(tx.conn, "terminals", TERMINAL_ID_MAX)
        key_hex = _key_hex(state, terminal_id, 1)
        row = await tx.conn.fetchrow(
            "INSERT INTO terminals (id, merchant_id, kind, name, key_version, status)"
            " VALUES ($1, $2, $3, $4, 1, 0) RETURNING *",
            terminal_id, merchant_id, _TERMINAL_KIND_IDS[data.kind], data.name)
        out = terminal_out(row)
        tx.audit("terminal.register", "terminal", terminal_id, list(merchant["path"]), after=out)
        tx.event(_upserted(out))
    return TerminalKey(terminal=out, key_hex=key_hex)


def terminal_view(r: asyncpg.Record, presence: asyncpg.Record | None, actor: Actor
                  ) -> TerminalView:
    """`r` a terminals row, `presence` its terminal_presence row (None: never signed on)."""
    out = terminal_out(r)
    view = TerminalView(id=out.id, merchant_id=out.merchant_id, kind=out.kind, name=out.name,
                        key_version=out.key_version, status=out.status)
    if presence is not None and presence["since"] is not None:
        view.online = bool(presence["online"])
        view.online_since = presence["since"]
        view.signed_on_at = presence["signed_on_at"]
        if actor.can("merchants.write") and presence["peer"]:
            view.peer = presence["peer"]
    return view


@get("/merchants/{merchant_id:int}/terminals", opt={"permission": "merchants.read"},
     tags=["terminals"], summary="A merchant's terminals, by id, paged (never their keys), "
     "with whether each is signed on; ?online=true|false keeps those that are (not)")
async def list_terminals(merchant_id: Id, actor: Actor, state: State, after: AfterId = 0,
                         limit: Limit = 100, online: bool | None = None) -> TerminalPage:
    await merchant_in_scope(state.pool, actor, merchant_id)
    rows = await state.pool.fetch(
        "SELECT te.*, p.online, p.since, p.signed_on_at, p.peer FROM terminals te"
        " LEFT JOIN terminal_presence p ON p.terminal_id = te.id"
        " WHERE te.merchant_id = $1 AND te.id > $2"
        " AND ($4::bool IS NULL OR coalesce(p.online, false) = $4)"
        " ORDER BY te.id LIMIT $3",
        merchant_id, after, limit + 1, online)
    items = [terminal_view(r, r, actor) for r in rows[:limit]]
    return TerminalPage(items=items, next_after=items[-1].id if len(rows) > limit else None)


@get("/terminals/{terminal_id:int}", opt={"permission": "merchants.read"}, tags=["terminals"],
     summary="One terminal (never its key), with whether it is signed on")
async def get_terminal(terminal_id: Id, actor: Actor, state: State) -> TerminalView:
    row = await terminal_in_scope(state.pool, actor, terminal_id)
    presence = await state.pool.fetchrow(
        "SELECT online, since, signed_on_at, peer FROM terminal_presence"
        " WHERE terminal_id = $1", terminal_id)
    return terminal_view(row, presence, actor)


async def _set_status(state: State, actor: Actor, terminal_id: int, status: int, action: str
                      ) -> TerminalOut:
    async with change(state.pool, actor) as tx:
        row = await terminal_in_scope(tx.conn, actor, terminal_id, lock=True)
        before = terminal_out(row)
        if row["status"] == status:
            return before  # already so: nothing to do, nothing audited
        if status != 0:
            _not_own_terminal(state, terminal_id)
        await tx.conn.execute("UPDATE terminals SET status = $2 WHERE id = $1", terminal_id,
                              status)
        after = msgspec.structs.replace(before, status=TERMINAL_STATUS[status])
        tx.audit(action, "terminal", terminal_id, list(row["path"]), before=before, after=after)
        tx.event(_upserted(after))
    return after


@post("/terminals/{terminal_id:int}/disable", opt={"permission": "merchants.write"},
      tags=["terminals"], status_code=200,
      summary="Disable a terminal: its session ends and it cannot sign on (within a second)")
async def disable_terminal(terminal_id: Id, actor: Actor, state: State) -> TerminalOut:
    return await _set_status(state, actor, terminal_id, 1, "terminal.disable")


@post("/terminals/{terminal_id:int}/enable", opt={"permission": "merchants.write"},
      tags=["terminals"], status_code=200, summary="Enable a disabled terminal again")
async def enable_terminal(terminal_id: Id, actor: Actor, state: State) -> TerminalOut:
    return await _set_status(state, actor, terminal_id, 0, "terminal.enable")


@post("/terminals/{terminal_id:int}/rekey", opt={"permission": "merchants.write"},
      tags=["terminals"], status_code=200, cache_control=_NO_STORE,
      summary="Issue a terminal a new key (key_version + 1); the old key stops working at once")
async def rekey_terminal(terminal_id: Id, actor: Actor, state: State) -> TerminalKey:
    async with change(state.pool, actor) as tx:
        row = await terminal_in_scope(tx.conn, actor, terminal_id, lock=True)
        _not_own_terminal(state, terminal_id)
        before = terminal_out(row)
        if before.key_version >= 2**31 - 1:
            raise Problem(409, "capacity", f"terminal {terminal_id} has used every key version")
        after = msgspec.structs.replace(before, key_version=before.key_version + 1)
        key_hex = _key_hex(state, terminal_id, after.key_version)
        await tx.conn.execute("UPDATE terminals SET key_version = $2 WHERE id = $1",
                              terminal_id, after.key_version)
        tx.audit("terminal.rekey", "terminal", terminal_id, list(row["path"]), before=before,
                 after=after)
        tx.event(_upserted(after))
    return TerminalKey(terminal=after, key_hex=key_hex)


# -- meal windows ----------------------------------------------------------------------------------


async def meal_windows_of(conn: Any, tenant_id: int) -> list[MealWindow]:
    rows = await conn.fetch(
        "SELECT name, start_minute, end_minute FROM tenant_meal_windows WHERE tenant_id = $1"
        " ORDER BY idx", tenant_id)
    return [MealWindow(r["name"], r["start_minute"], r["end_minute"]) for r in rows]


def checked_meal_windows(windows: list[MealWindow]) -> list[MealWindow]:
    """The windows in time order; 422 when one ends before it starts, two overlap or two
    share a name."""
    windows = sorted(windows, key=lambda w: w.start_minute)
    for n, w in enumerate(windows):
        if w.start_minute >= w.end_minute:
            raise Problem(422, "unprocessable", f"meal window {w.name!r} ends before it starts")
        if n and windows[n - 1].end_minute > w.start_minute:
            raise Problem(422, "unprocessable",
                          f"meal windows {windows[n - 1].name!r} and {w.name!r} overlap")
    if len({w.name for w in windows}) != len(windows):
        raise Problem(422, "unprocessable", "two meal windows have the same name")
    return windows


async def insert_meal_windows(conn: Any, tenant_id: int, windows: list[MealWindow]) -> None:
    await conn.executemany(
        "INSERT INTO tenant_meal_windows (tenant_id, idx, name, start_minute, end_minute)"
        " VALUES ($1, $2, $3, $4, $5)",
        [(tenant_id, n, w.name, w.start_minute, w.end_minute) for n, w in enumerate(windows)])


@get("/tenants/{tenant_id:int}/meal-windows", opt={"permission": "merchants.read"},
     tags=["merchants"], summary="A tenant's meal windows (local time), which meal limits and "
     "reports use")
async def get_meal_windows(tenant_id: Id, actor: Actor, state: State) -> MealWindowsOut:
    tenant = await tenant_in_scope(state.pool, actor, tenant_id, inside_ok=True)
    return MealWindowsOut(tenant_id=tenant_id, utc_offset_s=tenant["utc_offset_s"],
                          windows=await meal_windows_of(state.pool, tenant_id))


@put("/tenants/{tenant_id:int}/meal-windows", opt={"permission": "merchants.write"},
     tags=["merchants"], summary="Replace a tenant's meal windows (at most 8, not overlapping)")
async def set_meal_windows(tenant_id: Id, data: MealWindowsIn, actor: Actor, state: State
                           ) -> MealWindowsOut:
    windows = checked_meal_windows(data.windows)
    async with change(state.pool, actor) as tx:
        tenant = await tx.conn.fetchrow(
            "SELECT t.id, t.utc_offset_s, n.path FROM tenants t JOIN org_nodes n"
            " ON n.kind = 'tenant' AND n.tenant_id = t.id WHERE t.id = $1 FOR UPDATE OF t",
            tenant_id)
        actor.require_node(_path(tenant), f"tenant {tenant_id}")
        before = MealWindowsOut(tenant_id, tenant["utc_offset_s"],
                                await meal_windows_of(tx.conn, tenant_id))
        after = MealWindowsOut(tenant_id, tenant["utc_offset_s"], windows)
        if after == before:
            return before
        await tx.conn.execute("DELETE FROM tenant_meal_windows WHERE tenant_id = $1", tenant_id)
        await insert_meal_windows(tx.conn, tenant_id, windows)
        tx.audit("tenant.meal_windows", "tenant", tenant_id, list(tenant["path"]),
                 before=before, after=after)
        tx.event(TenantConfigured(tenant_id, tenant["utc_offset_s"],
                                  [(w.start_minute, w.end_minute) for w in windows]))
    return after


ROUTES = [create_merchant, list_merchants, get_merchant, update_merchant, register_terminal,
          list_terminals, get_terminal, disable_terminal, enable_terminal, rekey_terminal,
          get_meal_windows, set_meal_windows]
