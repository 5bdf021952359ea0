"""Who may do what: roles, permissions, passwords, access tokens, the log-in rate limit.

Every route names one permission (`opt={"permission": ...}`); the guard in `_app` refuses a
request whose log-in's role lacks it (403) and the app refuses to start with a route that names
none. The subtree check (分权分域) is the second half: a handler resolves the node its object
belongs to and calls `Actor.require_node` (404 outside the actor's subtree: an object the
actor may not see is one that does not exist for them).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import Counter, OrderedDict, deque
from typing import Final

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from admin_api._problems import Problem

ROLES: Final = (
    "platform_admin", "tenant_admin", "card_office", "cashier", "finance", "auditor",
    "merchant_viewer", "cardholder", "parent", "security_desk", "reception",
)
STAFF_ROLES: Final = frozenset(ROLES) - {"cardholder", "parent"}
INTEGRATION_ROLE: Final = "integration"
"""The role of a request signed with an API key (admin_api/_routes_integration.py)."""
API_KEY_PREFIX: Final = "ock_"
"""Every API key starts with this, so a bearer token is known for a key or a log-in's token."""

_ALL_STAFF: Final = frozenset({
    "org.read", "org.write", "users.read", "users.write", "people.read", "people.write",
    "cards.read", "cards.write", "money.counter", "merchants.read", "merchants.write",
    "reports.read", "audit.read", "documents.read", "documents.write", "documents.approve",
    "events.read", "people.sync", "api_keys.read", "api_keys.write",
    "finance.read", "finance.write",
    "settlement.read", "settlement.confirm",
    *("access.read", "access.write", "access.lockdown", "access.control", "alarms.ack",
      "visitors.read", "visitors.write", "patrol.read", "patrol.write"),
})
PERMISSIONS: Final[dict[str, frozenset[str]]] = {
    "platform_admin": _ALL_STAFF,
    "tenant_admin": _ALL_STAFF,
    "card_office": frozenset({
        "org.read", "people.read", "people.write", "cards.read", "cards.write",
        "money.counter", "merchants.read", "reports.read", "documents.read", "documents.write",
    }),
    "cashier": frozenset({"org.read", "people.read", "cards.read", "money.counter"}),
    "finance": frozenset({
        "org.read", "people.read", "cards.read", "merchants.read", "reports.read",
        "documents.read", "documents.approve", "settlement.read", "settlement.confirm",
        "finance.read", "finance.write",
    }),
    "auditor": frozenset({
        "org.read", "users.read", "people.read", "cards.read", "merchants.read",
        "reports.read", "audit.read", "documents.read", "events.read", "api_keys.read",
        "settlement.read", "finance.read",
        "access.read", "visitors.read", "patrol.read",
    }),
    "merchant_viewer": frozenset({"merchants.read", "reports.read"}),
    # Access control (admin_api/access/, docs/access-admin.md): the security desk watches
    # doors and alarms, acknowledges them, locks a site down, opens or locks a door remotely
    # (access.control: door commands) and reads patrols; reception issues and ends visitor
    # passes.
    "security_desk": frozenset({
        "org.read", "people.read", "cards.read", "access.read", "access.lockdown",
        "access.control", "alarms.ack", "visitors.read", "patrol.read",
    }),
    "reception": frozenset({"org.read", "people.read", "access.read", "visitors.read",
                            "visitors.write"}),
    "cardholder": frozenset({"self"}),
    "parent": frozenset({"self"}),
    INTEGRATION_ROLE: frozenset({"events.read", "people.sync", "people.read", "cards.read",
                                 "org.read"}),
}
"""Role -> the permissions it has. "self": the cardholder's own (or a parent's child's) data.
"integration" is an API key's role: not a log-in role (not in ROLES, POST /users refuses it);
a key may use only the scopes it was created with, a subset of these."""

ALL_PERMISSIONS: Final = frozenset().union(*PERMISSIONS.values())
PUBLIC: Final = "public"
"""The permission of the few routes anyone may call (log-in, health)."""

_hasher = PasswordHasher()  # argon2id, the library's (RFC 9106) defaults
_DUMMY_HASH: Final = _hasher.hash("onecard: a password nobody has")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


_HASHING = asyncio.Semaphore(4)
"""argon2 takes 64 MiB and tens of ms per check: a burst of log-ins queues here instead of
filling the thread pool and the memory."""


async def verify_password(stored_hash: str | None, password: str) -> bool:
    """Constant work whether or not the user exists (no user-name probing by timing); at most
    four checks at once."""

    def check() -> bool:
        try:
            return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async with _HASHING:
        return await asyncio.to_thread(check)


def new_token() -> tuple[str, bytes]:
    """(the token to hand out, the SHA-256 to store)."""
    token = secrets.token_urlsafe(32)
    return token, token_sha256(token)


def token_sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_api_key() -> tuple[str, bytes]:
    """(the API key to show once, the SHA-256 to store). 256 random bits."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, token_sha256(key)


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """The log-in behind a request."""

    user_id: int
    username: str
    role: str
    node_id: int
    node_path: list[int]
    person_id: int | None = None
    children: list[int] = []
    """People a parent may see."""
    client_ip: str = ""
    api_key_id: int | None = None
    """Set when the request is signed with an API key (role "integration")."""
    scopes: tuple[str, ...] = ()
    """An API key's scopes: it may use these permissions of its role, no others."""

    def can(self, permission: str) -> bool:
        if permission not in PERMISSIONS.get(self.role, frozenset()):
            return False
        return self.api_key_id is None or permission in self.scopes

    def permissions(self) -> list[str]:
        return sorted(p for p in PERMISSIONS.get(self.role, frozenset()) if self.can(p))

    def require(self, permission: str) -> None:
        if not self.can(permission):
            raise Problem(403, "forbidden", f"a {self.role} may not do this ({permission})")

    def sees(self, node_path: list[int] | None) -> bool:
        """Is a node with this path in the actor's subtree?"""
        return node_path is not None and self.node_id in node_path

    def require_node(self, node_path: list[int] | None, what: str) -> None:
        if not self.sees(node_path):
            raise Problem(404, "not-found", f"no {what} in your part of the organisation")

    def sees_person(self, person_id: int) -> bool:
        """For "self" routes: the cardholder themself, or a parent's linked child."""
        if self.role == "cardholder":
            return self.person_id == person_id
        if self.role == "parent":
            return person_id in self.children
        return False


class LoginLimiter:
    """Failed log-ins per key (user name, client address) in a sliding window, in memory.

    An attempt counts when it starts, before its password is checked: `attempt` checks the
    limit and counts the attempt as pending in one step (no await in between), and the limit
    holds failures and pending attempts together, so guesses sent in parallel cannot all pass
    the check while their passwords are being hashed. `finished` turns the pending attempt
    into a failure, or, for the right password, clears the user name's failures.

    Bounded: at most `keys_max` keys of failures are tracked; the least recently failed are
    forgotten. Per process: with several admin API processes the limit is per process
    (documented).
    """

    def __init__(self, failures_max: int, window_seconds: float, keys_max: int = 100_000, *,
                 address_failures_max: int | None = None) -> None:
        self.failures_max = failures_max
        self.address_failures_max = address_failures_max or failures_max
        self.window = window_seconds
        self.keys_max = keys_max
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._pending: Counter[str] = Counter()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        q = self._failures.get(key)
        if q is None:
            return None
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[key]
            return None
        return q

    def _max(self, key: str) -> int:
        return self.address_failures_max if key.startswith("ip:") else self.failures_max

    def attempt(self, keys: list[str]) -> int:
        """0: the attempt may check its password, and is pending against every key (call
        `finished` after the check, always). Else the seconds until a log-in may be tried
        again: the window's rest when the key's failures fill it, 1 while attempts of the key
        are being checked."""
        now = time.monotonic()
        wait = 0.0
        for key in keys:
            q = self._recent(key, now)
            failed = len(q) if q else 0
            if q and failed >= self._max(key):
                wait = max(wait, q[0] + self.window - now)
            elif failed + self._pending[key] >= self._max(key):
                wait = max(wait, 1.0)
        if wait > 0:
            return int(wait) + 1 if wait > 1 else 1
        self._pending.update(keys)
        return 0

    def finished(self, keys: list[str], ok: bool | None) -> None:
        """The pending attempt's password was checked: right (`ok`: the first key's, the
        user name's, failures are forgotten) or wrong (a failure of every key); None: it
        could not be checked (an error), nothing is counted."""
        self._pending.subtract(keys)
        for key in keys:
            if self._pending[key] <= 0:
                del self._pending[key]
        if ok is None:
            return
        if ok:
            self._failures.pop(keys[0], None)
            return
        now = time.monotonic()
        for key in keys:
            q = self._failures.get(key)
            if q is None:
                q = self._failures[key] = deque(maxlen=self._max(key))
            q.append(now)
            self._failures.move_to_end(key)
        while len(self._failures) > self.keys_max:
            self._failures.popitem(last=False)
