"""PINs, bank cards and bank settings: every change audited and on the change feed.

A PIN is hashed with argon2id here (in a thread: tens of ms) and never stored, logged or
audited; a new PIN also unlocks one locked after too many wrong tries. A bank card's full
number is sealed (protocols/bank_card.py) with the site's bank-card key; only its masked form
is ever returned, audited or sent on the feed. The bank's token for the card is what the switch
sends to the bank.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from litestar import delete, get, post, put
from litestar.datastructures import State
from msgspec import Meta

from admin_api._auth import Actor
from admin_api._problems import Problem
from admin_api._store import Change, change
from admin_api._types import Id
from protocols.bank_card import PanError, bank_card_key, check_pan, mask_pan, seal_pan
from protocols.changes import BankCardChanged, BankSettingsChanged, PinChanged

FEN_MAX = 10_000_000
Fen = Annotated[int, Meta(ge=0, le=FEN_MAX)]
Pin = Annotated[str, Meta(pattern=r"^[0-9]{4,8}$")]


class PinIn(msgspec.Struct, forbid_unknown_fields=True):
    pin: Pin
    """4 to 8 digits: the cardholder's query/spending PIN, typed at kiosks."""


class BankCardIn(msgspec.Struct, forbid_unknown_fields=True):
    pan: Annotated[str, Meta(pattern=r"^[0-9]{12,19}$")]
    """The bank card's number (checked with its Luhn digit; kept sealed, shown masked)."""
    bank_token: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
    """The bank's token for the card, from the bank's enrolment: what the switch sends."""
    auto_threshold_fen: Fen = 0
    """Automatic top-up (自动圈存): when a purchase leaves the balance below this..."""
    auto_amount_fen: Fen = 0
    """...top up this much from the card, at most once a day. 0 and 0: off."""


class AutoTopupIn(msgspec.Struct, forbid_unknown_fields=True):
    auto_threshold_fen: Fen
    auto_amount_fen: Fen


class BankCardOut(msgspec.Struct):
    id: int
    person_id: int
    account_id: int
    pan_masked: str
    """Only ever the masked number: the first six and last four digits."""
    auto_threshold_fen: int
    auto_amount_fen: int
    bound_at: str


class BankSettingsIn(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool
    """Bank top-up at this tenant's kiosks on or off (off: TOPUP_NOT_AVAILABLE)."""
    single_max_fen: Fen = 100_000
    daily_card_max_fen: Fen = 200_000
    daily_account_max_fen: Fen = 300_000
    """Caps in fen (0: none of this kind): one top-up; a card's and an account's per day."""


class BankSettingsOut(BankSettingsIn):
    tenant_id: int = 0


_PERSON_SQL = ("SELECT p.id, p.account_id, p.tenant_id, n.path FROM people p"
               " JOIN org_nodes n ON n.id = p.node_id WHERE p.id = $1")
_CARD_SQL = ("SELECT id, account_id, pan_masked, auto_threshold_fen, auto_amount_fen, bound_at"
             " FROM bank_cards WHERE account_id = $1 AND unbound_at IS NULL")


async def _person(conn: Any, actor: Actor, person_id: int, *, own: bool, lock: bool = True
                  ) -> Any:
    row = await conn.fetchrow(_PERSON_SQL + (" FOR UPDATE OF p" if lock else ""), person_id)
    if own:
        if actor.role != "cardholder" or not actor.sees_person(person_id) or row is None:
            raise Problem(404, "not-found", f"no person {person_id} among yours (a cardholder "
                          "changes only their own PIN and bank card)")
    else:
        actor.require_node(list(row["path"]) if row else None, f"person {person_id}")
    return row


def _out(person_id: int, row: Any) -> BankCardOut:
    return BankCardOut(row["id"], person_id, row["account_id"], row["pan_masked"],
                       row["auto_threshold_fen"], row["auto_amount_fen"],
                       row["bound_at"].isoformat())


async def _set_pin(tx: Change, person: Any, pin: str) -> None:
    from argon2 import PasswordHasher

    pin_hash = await asyncio.get_running_loop().run_in_executor(None, PasswordHasher().hash, pin)
    await tx.conn.execute(
        "INSERT INTO cardholder_pins (account_id, pin_hash) VALUES ($1, $2)"
        " ON CONFLICT (account_id) DO UPDATE SET pin_hash = $2, failed_tries = 0,"
        " locked = false, updated_at = now()", person["account_id"], pin_hash)
    tx.audit("pin.set", "person", person["id"], list(person["path"]),
             after={"account_id": person["account_id"], "pin": "<set>"})
    tx.event(PinChanged(person["account_id"]))


async def _bind(tx: Change, state: State, person: Any, data: BankCardIn) -> BankCardOut:
    try:
        pan = check_pan(data.pan)
    except PanError as exc:
        raise Problem(422, "invalid-bank-card", str(exc)) from None
    if (data.auto_threshold_fen == 0) != (data.auto_amount_fen == 0):
        raise Problem(422, "invalid-auto-topup", "set both auto_threshold_fen and "
                      "auto_amount_fen, or neither")
    settings = state.settings
    if not settings.master_secret:
        raise Problem(409, "no-master-secret", "the admin API needs master_secret (or "
                      "bank_card_key) to seal bank card numbers")
    key = bank_card_key(settings.master_secret_bytes, settings.bank_card_key)
    account = person["account_id"]
    before = await tx.conn.fetchrow(_CARD_SQL + " FOR UPDATE", account)
    if before is not None:
        await tx.conn.execute("UPDATE bank_cards SET unbound_at = now() WHERE id = $1",
                              before["id"])
    row = await tx.conn.fetchrow(
        "INSERT INTO bank_cards (tenant_id, account_id, person_id, pan_masked, pan_encrypted,"
        " bank_token, auto_threshold_fen, auto_amount_fen) VALUES ($1, $2, $3, $4, $5, $6, $7,"
        " $8) RETURNING id, account_id, pan_masked, auto_threshold_fen, auto_amount_fen,"
        " bound_at", person["tenant_id"], account, person["id"], mask_pan(pan),
        seal_pan(key, account, pan), data.bank_token, data.auto_threshold_fen,
        data.auto_amount_fen)
    out = _out(person["id"], row)
    tx.audit("bank_card.bind", "person", person["id"], list(person["path"]),
             before=None if before is None else _out(person["id"], before), after=out)
    tx.event(BankCardChanged(account, True, out.pan_masked, out.auto_threshold_fen,
                             out.auto_amount_fen))
    return out


async def _unbind(tx: Change, person: Any) -> None:
    before = await tx.conn.fetchrow(_CARD_SQL + " FOR UPDATE", person["account_id"])
    if before is None:
        raise Problem(404, "not-found", f"person {person['id']} has no bank card bound")
    await tx.conn.execute("UPDATE bank_cards SET unbound_at = now() WHERE id = $1", before["id"])
    tx.audit("bank_card.unbind", "person", person["id"], list(person["path"]),
             before=_out(person["id"], before))
    tx.event(BankCardChanged(person["account_id"], False, before["pan_masked"]))


async def _auto(tx: Change, person: Any, data: AutoTopupIn) -> BankCardOut:
    if (data.auto_threshold_fen == 0) != (data.auto_amount_fen == 0):
        raise Problem(422, "invalid-auto-topup", "set both auto_threshold_fen and "
                      "auto_amount_fen, or neither (0 and 0: off)")
    before = await tx.conn.fetchrow(_CARD_SQL + " FOR UPDATE", person["account_id"])
    if before is None:
        raise Problem(409, "no-bank-card", "bind a bank card first")
    row = await tx.conn.fetchrow(
        "UPDATE bank_cards SET auto_threshold_fen = $2, auto_amount_fen = $3 WHERE id = $1"
        " RETURNING id, account_id, pan_masked, auto_threshold_fen, auto_amount_fen, bound_at",
        before["id"], data.auto_threshold_fen, data.auto_amount_fen)
    out = _out(person["id"], row)
    tx.audit("bank_card.auto_topup", "person", person["id"], list(person["path"]),
             before=_out(person["id"], before), after=out)
    tx.event(BankCardChanged(person["account_id"], True, out.pan_masked,
                             out.auto_threshold_fen, out.auto_amount_fen))
    return out


# -- the card office --------------------------------------------------------------------------


@put("/people/{person_id:int}/pin", opt={"permission": "cards.write"}, tags=["bank"],
     status_code=204, summary="Set a cardholder's query/spending PIN (unlocks it)")
async def set_pin(person_id: Id, data: PinIn, actor: Actor, state: State) -> None:
    async with change(state.pool, actor) as tx:
        await _set_pin(tx, await _person(tx.conn, actor, person_id, own=False), data.pin)


@post("/people/{person_id:int}/bank-card", opt={"permission": "cards.write"}, tags=["bank"],
      status_code=201, summary="Bind a bank card for 快速圈存 (replaces a bound one)")
async def bind_bank_card(person_id: Id, data: BankCardIn, actor: Actor, state: State
                         ) -> BankCardOut:
    async with change(state.pool, actor) as tx:
        return await _bind(tx, state, await _person(tx.conn, actor, person_id, own=False), data)


@get("/people/{person_id:int}/bank-card", opt={"permission": "cards.read"}, tags=["bank"],
     summary="The person's bound bank card (masked)")
async def get_bank_card(person_id: Id, actor: Actor, state: State) -> BankCardOut:
    person = await _person(state.pool, actor, person_id, own=False, lock=False)
    row = await state.pool.fetchrow(_CARD_SQL, person["account_id"])
    if row is None:
        raise Problem(404, "not-found", f"person {person_id} has no bank card bound")
    return _out(person_id, row)


@delete("/people/{person_id:int}/bank-card", opt={"permission": "cards.write"}, tags=["bank"],
        status_code=204, summary="Unbind the person's bank card")
async def unbind_bank_card(person_id: Id, actor: Actor, state: State) -> None:
    async with change(state.pool, actor) as tx:
        await _unbind(tx, await _person(tx.conn, actor, person_id, own=False))


@put("/people/{person_id:int}/bank-card/auto-topup", opt={"permission": "cards.write"},
     tags=["bank"], summary="Set automatic top-up (自动圈存): threshold and amount")
async def set_auto_topup(person_id: Id, data: AutoTopupIn, actor: Actor, state: State
                         ) -> BankCardOut:
    async with change(state.pool, actor) as tx:
        return await _auto(tx, await _person(tx.conn, actor, person_id, own=False), data)


# -- the cardholder (self-service) -------------------------------------------------------------


@put("/self/people/{person_id:int}/pin", opt={"permission": "self"}, tags=["self-service"],
     status_code=204, summary="Set my query/spending PIN")
async def self_set_pin(person_id: Id, data: PinIn, actor: Actor, state: State) -> None:
    async with change(state.pool, actor) as tx:
        await _set_pin(tx, await _person(tx.conn, actor, person_id, own=True), data.pin)


@post("/self/people/{person_id:int}/bank-card", opt={"permission": "self"},
      tags=["self-service"], status_code=201, summary="Bind my bank card (快速圈存)")
async def self_bind_bank_card(person_id: Id, data: BankCardIn, actor: Actor, state: State
                              ) -> BankCardOut:
    async with change(state.pool, actor) as tx:
        return await _bind(tx, state, await _person(tx.conn, actor, person_id, own=True), data)


@delete("/self/people/{person_id:int}/bank-card", opt={"permission": "self"},
        tags=["self-service"], status_code=204, summary="Unbind my bank card")
async def self_unbind_bank_card(person_id: Id, actor: Actor, state: State) -> None:
    async with change(state.pool, actor) as tx:
        await _unbind(tx, await _person(tx.conn, actor, person_id, own=True))


@put("/self/people/{person_id:int}/bank-card/auto-topup", opt={"permission": "self"},
     tags=["self-service"], summary="Set my automatic top-up (自动圈存)")
async def self_set_auto_topup(person_id: Id, data: AutoTopupIn, actor: Actor, state: State
                              ) -> BankCardOut:
    async with change(state.pool, actor) as tx:
        return await _auto(tx, await _person(tx.conn, actor, person_id, own=True), data)


# -- the tenant's bank settings ----------------------------------------------------------------


async def _tenant_path(conn: Any, actor: Actor, tenant_id: int) -> list[int]:
    path = await conn.fetchval("SELECT path FROM org_nodes WHERE kind = 'tenant'"
                               " AND tenant_id = $1", tenant_id)
    actor.require_node(list(path) if path is not None else None, f"tenant {tenant_id}")
    return list(path)


_SETTINGS_SQL = ("SELECT enabled, single_max_fen, daily_card_max_fen, daily_account_max_fen"
                 " FROM tenant_bank_settings WHERE tenant_id = $1")


def _settings_out(tenant_id: int, row: Any) -> BankSettingsOut:
    if row is None:
        return BankSettingsOut(enabled=True, tenant_id=tenant_id)
    return BankSettingsOut(enabled=row["enabled"], single_max_fen=row["single_max_fen"],
                           daily_card_max_fen=row["daily_card_max_fen"],
                           daily_account_max_fen=row["daily_account_max_fen"],
                           tenant_id=tenant_id)


@get("/tenants/{tenant_id:int}/bank-settings", opt={"permission": "org.read"}, tags=["bank"],
     summary="The tenant's bank top-up settings")
async def get_bank_settings(tenant_id: Id, actor: Actor, state: State) -> BankSettingsOut:
    await _tenant_path(state.pool, actor, tenant_id)
    return _settings_out(tenant_id, await state.pool.fetchrow(_SETTINGS_SQL, tenant_id))


@put("/tenants/{tenant_id:int}/bank-settings", opt={"permission": "org.write"}, tags=["bank"],
     summary="Switch bank top-up on or off for a tenant; set its caps")
async def set_bank_settings(tenant_id: Id, data: BankSettingsIn, actor: Actor, state: State
                            ) -> BankSettingsOut:
    async with change(state.pool, actor) as tx:
        path = await _tenant_path(tx.conn, actor, tenant_id)
        before = _settings_out(tenant_id, await tx.conn.fetchrow(_SETTINGS_SQL + " FOR UPDATE",
                                                                 tenant_id))
        await tx.conn.execute(
            "INSERT INTO tenant_bank_settings (tenant_id, enabled, single_max_fen,"
            " daily_card_max_fen, daily_account_max_fen) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (tenant_id) DO UPDATE SET enabled = $2, single_max_fen = $3,"
            " daily_card_max_fen = $4, daily_account_max_fen = $5, updated_at = now()",
            tenant_id, data.enabled, data.single_max_fen, data.daily_card_max_fen,
            data.daily_account_max_fen)
        after = _settings_out(tenant_id, await tx.conn.fetchrow(_SETTINGS_SQL, tenant_id))
        tx.audit("bank_settings.set", "tenant", tenant_id, path, before=before, after=after)
        tx.event(BankSettingsChanged(tenant_id, data.enabled, data.single_max_fen,
                                     data.daily_card_max_fen, data.daily_account_max_fen))
        return after


ROUTES = [set_pin, bind_bank_card, get_bank_card, unbind_bank_card, set_auto_topup,
          self_set_pin, self_bind_bank_card, self_unbind_bank_card, self_set_auto_topup,
          get_bank_settings, set_bank_settings]
