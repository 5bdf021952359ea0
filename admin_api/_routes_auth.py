"""Log-in, log-out, who am I, and admin log-ins (users)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import Request, get, post, put
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from msgspec import Meta

from admin_api._auth import (
    API_KEY_PREFIX,
    INTEGRATION_ROLE,
    PUBLIC,
    ROLES,
    Actor,
    LoginLimiter,
    hash_password,
    new_token,
    token_sha256,
    verify_password,
)
from admin_api._passwords import PASSWORD_MAX, PASSWORD_MIN, weak
from admin_api._problems import MEDIA_TYPE, Problem, ProblemBody
from admin_api._settings import AdminSettings
from admin_api._store import change, node_path
from admin_api._types import Id, IdField

Username = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9._@-]{2,63}$",
                               description="3-64 characters: a-z, 0-9, . _ @ -")]
Password = Annotated[str, Meta(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX,
                               description="at least 10 characters, not a common password, "
                               "not containing the user name")]


class LoginIn(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, Meta(min_length=1, max_length=64)]
    password: Annotated[str, Meta(min_length=1, max_length=256)]


class PasswordChangeIn(msgspec.Struct, forbid_unknown_fields=True):
    old_password: Annotated[str, Meta(min_length=1, max_length=PASSWORD_MAX)]
    new_password: Password


class TokenOut(msgspec.Struct):
    access_token: str
    token_type: str
    expires_in: int
    role: str
    node_id: int
    locale: str | None = None
    """The log-in's language (`zh-CN`, `en`), null when never chosen: PUT /auth/me/preferences."""


Locale = Literal["zh-CN", "en"]


class PreferencesIn(msgspec.Struct, forbid_unknown_fields=True):
    locale: Locale | None
    """The pages' language; null: none chosen (the browser's)."""


class PreferencesOut(msgspec.Struct):
    locale: Locale | None


class MeOut(msgspec.Struct):
    user_id: int
    username: str
    role: str
    node_id: int
    node_path: list[int]
    person_id: int | None
    children: list[int]
    permissions: list[str]
    locale: str | None = None
    """The log-in's language, null when never chosen (an API key: null)."""


class UserIn(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: Password
    role: Annotated[str, Meta(pattern="^(" + "|".join(ROLES) + ")$")]
    node_id: IdField
    person_id: IdField | None = None
    """The cardholder's own person (role cardholder)."""
    children: list[IdField] = []
    """The people a parent may see (role parent)."""


class UserOut(msgspec.Struct):
    id: int
    username: str
    role: str
    node_id: int
    person_id: int | None
    disabled: bool


def _bearer(request: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def actor_of(request: ASGIConnection[Any, Any, Any, Any], pool: asyncpg.Pool) -> Actor:
    """The log-in behind the request's bearer token (or the API key behind `X-Api-Key` or a
    bearer token that is a key), or 401."""
    token = _bearer(request)
    api_key = request.headers.get("x-api-key")
    if api_key is not None or (token is not None and token.startswith(API_KEY_PREFIX)):
        return await _api_key_actor(request, pool, api_key if api_key is not None else token)
    if token is None or len(token) > 200:
        raise Problem(401, "not-authenticated", "send Authorization: Bearer <access token>",
                      headers={"WWW-Authenticate": "Bearer"})
    row = await pool.fetchrow(
        "SELECT u.id, u.username, u.role, u.node_id, n.path, u.person_id,"
        " array(SELECT person_id FROM parent_links p WHERE p.user_id = u.id"
        "       ORDER BY person_id) AS children"
        " FROM admin_tokens t JOIN admin_users u ON u.id = t.user_id"
        " JOIN org_nodes n ON n.id = u.node_id"
        " WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL AND t.expires_at > now()"
        " AND NOT u.disabled",
        token_sha256(token),
    )
    if row is None:
        raise Problem(401, "not-authenticated", "the access token is unknown, expired or revoked",
                      headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    client = request.client.host if request.client else ""
    return Actor(user_id=row["id"], username=row["username"], role=row["role"],
                 node_id=row["node_id"], node_path=list(row["path"]),
                 person_id=row["person_id"], children=list(row["children"]), client_ip=client)


async def _api_key_actor(request: ASGIConnection[Any, Any, Any, Any], pool: asyncpg.Pool,
                         key: str | None) -> Actor:
    """An API key acts like a log-in of role "integration" bound to the key's node, with the
    key's scopes as its permissions (admin_api/_routes_integration.py makes and revokes keys)."""
    row = None
    if key and key.startswith(API_KEY_PREFIX) and len(key) <= 200:
        row = await pool.fetchrow(
            "SELECT k.id, k.name, k.node_id, k.scopes, n.path FROM api_keys k"
            " JOIN org_nodes n ON n.id = k.node_id WHERE k.key_sha256 = $1"
            " AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())",
            token_sha256(key))
    if row is None:
        raise Problem(401, "not-authenticated", "the API key is unknown, expired or revoked",
                      headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    client = request.client.host if request.client else ""
    return Actor(user_id=0, username=f"api-key:{row['id']}", role=INTEGRATION_ROLE,
                 node_id=row["node_id"], node_path=list(row["path"]), client_ip=client,
                 api_key_id=row["id"], scopes=tuple(row["scopes"]))


def _require_strong(password: str, username: str, field: str) -> None:
    why = weak(password, username)
    if why is not None:
        raise Problem(422, "weak-password", f"{field}: {why}")


def _attempt(limiter: LoginLimiter, keys: list[str]) -> None:
    """Count a password check before it is made (429 past the limit); the caller then calls
    `limiter.finished` whatever happens."""
    wait = limiter.attempt(keys)
    if wait:
        raise Problem(429, "too-many-requests",
                      f"too many failed log-ins; try again in {wait} s",
                      headers={"Retry-After": str(wait)})


@post("/auth/login", opt={"permission": PUBLIC}, tags=["auth"], status_code=200,
      summary="Log in: a short-lived access token")
async def login(data: LoginIn, request: Request[Any, Any, Any], state: State) -> TokenOut:
    pool: asyncpg.Pool = state.pool
    settings: AdminSettings = state.settings
    client = request.client.host if request.client else ""
    keys = ["user:" + data.username.lower(), "ip:" + client]
    _attempt(state.login_limiter, keys)
    right = None
    try:
        row = await pool.fetchrow(
            "SELECT u.id, u.username, u.password_hash, u.role, u.node_id, u.disabled, n.path,"
            " u.locale"
            " FROM admin_users u JOIN org_nodes n ON n.id = u.node_id WHERE u.username = $1",
            data.username.lower(),
        )
        ok = await verify_password(row["password_hash"] if row else None, data.password)
        right = ok and not row["disabled"]
    finally:
        state.login_limiter.finished(keys, right)
    # The audit row of the attempt: never the password, and for a user name that does not
    # exist not what was typed either (often a password typed into the wrong field).
    if row is None:
        who = Actor(user_id=0, username="(no such user)", role="", client_ip=client,
                    node_id=0, node_path=[await pool.fetchval(
                        "SELECT id FROM org_nodes WHERE parent_id IS NULL")])
    else:
        who = Actor(user_id=row["id"], username=row["username"], role=row["role"],
                    node_id=row["node_id"], node_path=list(row["path"]), client_ip=client)
    if not right:
        reason = ("no such user" if row is None else "wrong password" if not ok
                  else "log-in disabled")
        async with change(pool, who) as tx:
            tx.audit("auth.login_failed", "user", who.user_id or "", who.node_path,
                     after={"reason": reason})
        state.log.warning("admin.login_failed", user_id=who.user_id or None, reason=reason,
                          client_ip=client)
        raise Problem(401, "not-authenticated", "wrong user name or password")
    token, digest = new_token()
    async with change(pool, who) as tx:
        await tx.conn.execute(
            "INSERT INTO admin_tokens (token_sha256, user_id, expires_at)"
            " VALUES ($1, $2, now() + make_interval(secs => $3))",
            digest, row["id"], float(settings.token_seconds),
        )
        tx.audit("auth.login", "user", row["id"], who.node_path)
    return TokenOut(access_token=token, token_type="Bearer", expires_in=settings.token_seconds,
                    role=row["role"], node_id=row["node_id"], locale=row["locale"])


@post("/auth/password", opt={"permission": "any"}, tags=["auth"], status_code=204,
      summary="Change your own password (the old one is required); your other tokens end",
      responses={429: ResponseSpec(ProblemBody, media_type=MEDIA_TYPE, generate_examples=False,
                                   description="Too many wrong old passwords; Retry-After "
                                   "says when to try again")})
async def change_password(data: PasswordChangeIn, request: Request[Any, Any, Any],
                          state: State, actor: Actor) -> None:
    if actor.api_key_id is not None:
        raise Problem(409, "conflict", "an API key has no password")
    client = request.client.host if request.client else ""
    keys = ["user:" + actor.username, "ip:" + client]
    _attempt(state.login_limiter, keys)
    right = None
    try:
        stored = await state.pool.fetchval(
            "SELECT password_hash FROM admin_users WHERE id = $1", actor.user_id)
        right = await verify_password(stored, data.old_password)
    finally:
        state.login_limiter.finished(keys, right)
    if not right:
        raise Problem(403, "forbidden", "old_password is not your current password")
    _require_strong(data.new_password, actor.username, "new_password")
    if data.new_password == data.old_password:
        raise Problem(422, "weak-password", "new_password: not the old password")
    digest = await hash_password(data.new_password)
    token = _bearer(request)
    assert token is not None
    async with change(state.pool, actor) as tx:
        await tx.conn.execute("UPDATE admin_users SET password_hash = $2 WHERE id = $1",
                              actor.user_id, digest)
        revoked = await tx.conn.fetchval(
            "WITH r AS (UPDATE admin_tokens SET revoked_at = now() WHERE user_id = $1"
            " AND revoked_at IS NULL AND token_sha256 <> $2 RETURNING 1) SELECT count(*) FROM r",
            actor.user_id, token_sha256(token))
        tx.audit("user.password_change", "user", actor.user_id, actor.node_path,
                 after={"other_tokens_revoked": revoked})


@post("/auth/logout", opt={"permission": "any"}, tags=["auth"], status_code=204,
      summary="Revoke the access token of this request")
async def logout(request: Request[Any, Any, Any], state: State, actor: Actor) -> None:
    if actor.api_key_id is not None:
        raise Problem(409, "conflict", "an API key is not logged out: an admin revokes it "
                      f"(POST /api-keys/{actor.api_key_id}/revoke)")
    token = _bearer(request)
    assert token is not None
    await state.pool.execute(
        "UPDATE admin_tokens SET revoked_at = now() WHERE token_sha256 = $1", token_sha256(token)
    )


@get("/auth/me", opt={"permission": "any"}, tags=["auth"], summary="Who am I")
async def me(actor: Actor, state: State) -> MeOut:
    locale = None
    if actor.api_key_id is None:
        locale = await state.pool.fetchval("SELECT locale FROM admin_users WHERE id = $1",
                                           actor.user_id)
    return MeOut(user_id=actor.user_id, username=actor.username, role=actor.role,
                 node_id=actor.node_id, node_path=actor.node_path, person_id=actor.person_id,
                 children=actor.children, permissions=actor.permissions(), locale=locale)


@put("/auth/me/preferences", opt={"permission": "any"}, tags=["auth"],
     summary="Set your own preferences: the console's language (audited)")
async def set_preferences(data: PreferencesIn, actor: Actor, state: State) -> PreferencesOut:
    """Only the caller's own log-in: there is no user id to name. An API key has none."""
    if actor.api_key_id is not None:
        raise Problem(409, "conflict", "an API key has no preferences")
    async with change(state.pool, actor) as tx:
        before = await tx.conn.fetchval(
            "SELECT locale FROM admin_users WHERE id = $1 FOR UPDATE", actor.user_id)
        await tx.conn.execute("UPDATE admin_users SET locale = $2 WHERE id = $1",
                              actor.user_id, data.locale)
        tx.audit("user.preferences", "user", actor.user_id, actor.node_path,
                 before={"locale": before}, after={"locale": data.locale})
    return PreferencesOut(locale=data.locale)


def _user_out(r: asyncpg.Record) -> UserOut:
    return UserOut(id=r["id"], username=r["username"], role=r["role"], node_id=r["node_id"],
                   person_id=r["person_id"], disabled=r["disabled"])


@post("/users", opt={"permission": "users.write"}, tags=["users"],
      summary="Create an admin log-in bound to a node of your subtree")
async def create_user(data: UserIn, actor: Actor, state: State) -> UserOut:
    pool: asyncpg.Pool = state.pool
    path = await node_path(pool, data.node_id)
    actor.require_node(path, f"node {data.node_id}")
    assert path is not None
    if data.role == "platform_admin" and (actor.role != "platform_admin" or len(path) != 1):
        raise Problem(403, "forbidden", "only a platform admin creates platform admins, and "
                      "only at the platform node")
    if (data.role == "cardholder") != (data.person_id is not None):
        raise Problem(422, "unprocessable", "person_id is given for a cardholder, and only "
                      "for a cardholder")
    if data.children and data.role != "parent":
        raise Problem(422, "unprocessable", "children are given for a parent only")
    people = [data.person_id] if data.person_id else list(data.children)
    for pid in people:
        ppath = await pool.fetchval(
            "SELECT n.path FROM people p JOIN org_nodes n ON n.id = p.node_id WHERE p.id = $1",
            pid)
        actor.require_node(list(ppath) if ppath else None, f"person {pid}")
    _require_strong(data.password, data.username, "password")
    digest = await hash_password(data.password)
    async with change(pool, actor) as tx:
        row = await tx.conn.fetchrow(
            "INSERT INTO admin_users (username, node_id, role, password_hash, person_id,"
            " created_by) VALUES ($1, $2, $3, $4, $5, $6)"
            " RETURNING id, username, role, node_id, person_id, disabled",
            data.username, data.node_id, data.role, digest, data.person_id,
            actor.user_id or None,
        )
        for pid in data.children:
            await tx.conn.execute("INSERT INTO parent_links VALUES ($1, $2)", row["id"], pid)
        out = _user_out(row)
        tx.audit("user.create", "user", row["id"], path,
                 after={**msgspec.to_builtins(out), "children": data.children})
    return out


@get("/users", opt={"permission": "users.read"}, tags=["users"],
     summary="Admin log-ins of your subtree")
async def list_users(actor: Actor, state: State) -> list[UserOut]:
    rows = await state.pool.fetch(
        "SELECT u.id, u.username, u.role, u.node_id, u.person_id, u.disabled"
        " FROM admin_users u JOIN org_nodes n ON n.id = u.node_id"
        " WHERE $1 = ANY(n.path) ORDER BY u.id LIMIT 1000", actor.node_id)
    return [_user_out(r) for r in rows]


@post("/users/{user_id:int}/disable", opt={"permission": "users.write"}, tags=["users"],
      status_code=200, summary="Disable a log-in and revoke its tokens")
async def disable_user(user_id: Id, actor: Actor, state: State) -> UserOut:
    pool: asyncpg.Pool = state.pool
    async with change(pool, actor) as tx:
        row = await tx.conn.fetchrow(
            "SELECT u.id, u.username, u.role, u.node_id, u.person_id, u.disabled, n.path"
            " FROM admin_users u JOIN org_nodes n ON n.id = u.node_id WHERE u.id = $1 FOR UPDATE"
            " OF u", user_id)
        actor.require_node(list(row["path"]) if row else None, f"user {user_id}")
        if row["id"] == actor.user_id:
            raise Problem(409, "conflict", "you cannot disable your own log-in")
        if row["role"] == "platform_admin" and actor.role != "platform_admin":
            raise Problem(403, "forbidden", "only a platform admin disables a platform admin")
        await tx.conn.execute("UPDATE admin_users SET disabled = true WHERE id = $1", user_id)
        await tx.conn.execute("UPDATE admin_tokens SET revoked_at = now()"
                              " WHERE user_id = $1 AND revoked_at IS NULL", user_id)
        before = _user_out(row)
        after = msgspec.structs.replace(before, disabled=True)
        tx.audit("user.disable", "user", user_id, list(row["path"]), before=before, after=after)
    return after


ROUTES = [login, logout, change_password, me, set_preferences, create_user, list_users,
          disable_user]
