"""Who the admin API's locust users log in as, and how their requests are named.

No locust here (so the tests import it freely): `loadtest/admin_user.py` builds the log-ins of
each role from its command-line options or a users file, and names every request by its route
template, as the admin API's own metrics do (`onecard_admin_requests_total{route}`).

The roles are the staff (and cardholders) the users play; the API role that fits each:
`card_office` (look-ups, statements, balances, new cards, loss reports: role `card_office`),
`cashier` (cash top-ups: `cashier` or `card_office`), `cardholder` (a phone: balance,
transactions, cards: `cardholder`), `auditor` (the audit trail: `auditor`), `reports`
(merchant reports, CSV downloads: `merchant_viewer` or `finance`).
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

ROLES: Final = ("card_office", "cashier", "cardholder", "auditor", "reports")
DEFAULT_USERNAMES: Final[Mapping[str, str]] = {
    # The demo log-ins of `onecard demo --serve` (onecard/demo_serve.py), one password for all.
    "card_office": "card.office",
    "cashier": "cashier",
    "cardholder": "student",
    "auditor": "auditor",
    "reports": "canteen.viewer",
}
DEFAULT_HOST: Final = "http://127.0.0.1:8080"
_ROUTE_PARAM = re.compile(r"\{(\w+)\}")


class Login(msgspec.Struct, frozen=True):
    username: str
    password: str

    def __repr__(self) -> str:  # never the password
        return f"Login({self.username!r})"


class UsersFileError(ValueError):
    """A users file that cannot be used; the message names the line."""


def parse_users_file(text: str, source: str = "users file") -> dict[str, list[Login]]:
    """A CSV file with the header `role,username,password` and one log-in a row: the log-ins
    of each role it names (rows starting with `#` and blank rows are skipped)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    reader = csv.DictReader(lines)
    if reader.fieldnames is None or [f.strip() for f in reader.fieldnames] != [
            "role", "username", "password"]:
        raise UsersFileError(f"{source}: the first row must be `role,username,password`")
    out: dict[str, list[Login]] = {}
    for n, row in enumerate(reader, start=2):
        role = (row.get("role") or "").strip()
        username = (row.get("username") or "").strip()
        password = row.get("password") or ""
        if None in row or any(v is None for v in row.values()):
            raise UsersFileError(f"{source}, row {n}: want exactly role,username,password")
        if role not in ROLES:
            raise UsersFileError(f"{source}, row {n}: role {role!r} is not one of "
                                 f"{', '.join(ROLES)}")
        if not username or not password:
            raise UsersFileError(f"{source}, row {n}: empty username or password")
        out.setdefault(role, []).append(Login(username, password))
    if not out:
        raise UsersFileError(f"{source}: no log-ins")
    return out


def build_logins(usernames: Mapping[str, str], password: str,
                 users_file: str = "") -> dict[str, list[Login]]:
    """The log-ins of every role: `usernames[role]` (comma-separated) with `password`, then the
    users file's rows, which replace a role's log-ins wherever the file names that role."""
    out: dict[str, list[Login]] = {}
    for role in ROLES:
        names = [n.strip() for n in usernames.get(role, "").split(",") if n.strip()]
        if names and password:
            out[role] = [Login(n, password) for n in names]
    if users_file:
        try:
            text = Path(users_file).read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise UsersFileError(f"cannot read users file {users_file}: {exc}") from None
        out.update(parse_users_file(text, users_file))
    return out


class LoginPool:
    """Each role's log-ins, handed out round robin (several users may share one log-in). A
    log-in the API refused is not handed out again: each failed log-in counts towards the API's
    lock-out of the user name (`login_failures_max` in `login_window_seconds`), so twenty users
    trying a wrong password would lock the name out for the real staff too."""

    def __init__(self, logins: Mapping[str, list[Login]] | None = None) -> None:
        self._cycles: dict[str, Iterator[Login]] = {}
        self.logins: dict[str, list[Login]] = {}
        self.refused: set[Login] = set()
        self.accepted: set[Login] = set()
        self.load(logins or {})

    def load(self, logins: Mapping[str, list[Login]]) -> None:
        self.logins = {role: list(v) for role, v in logins.items() if v}
        self._cycles = {role: itertools.cycle(v) for role, v in self.logins.items()}
        self.refused = set()
        self.accepted = set()

    def take(self, role: str) -> Login | None:
        """The role's next log-in that was not refused, or None."""
        cycle = self._cycles.get(role)
        for _ in self.logins.get(role, []):
            assert cycle is not None
            login = next(cycle)
            if login not in self.refused:
                return login
        return None

    def refuse(self, login: Login) -> None:
        """The API refused this log-in (401, 429, 403): never hand it out again."""
        self.refused.add(login)
        self.accepted.discard(login)

    def accept(self, login: Login) -> None:
        """The API let this log-in in once: its other users need not wait for the first."""
        self.accepted.add(login)


def parse_http_host(host: str | None) -> str:
    """The admin API's base URL (`http://HOST:PORT`, no path), or ValueError."""
    url = (host or DEFAULT_HOST).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--host wants the admin API's URL, http://HOST:PORT, not {host!r}")
    if parts.path or parts.query:
        raise ValueError(f"--host wants no path: {host!r}")
    return url


def request_name(method: str, route: str, variant: str = "") -> str:
    """`GET /people/{person_id}/statement`: the method and the route template as the admin
    API's metrics label it; `variant` (`csv`, `same key`) is added in brackets."""
    return f"{method} {route}" + (f" ({variant})" if variant else "")


def fill(route: str, **params: int | str) -> str:
    """The route template with its parameters filled in: `fill("/people/{person_id}",
    person_id=7)` is `/people/7`. Every parameter must be given, and no other."""
    names = _ROUTE_PARAM.findall(route)
    if sorted(names) != sorted(params):
        raise ValueError(f"{route} takes {names}, not {sorted(params)}")
    return _ROUTE_PARAM.sub(lambda m: str(params[m.group(1)]), route)


def route_of(name: str) -> tuple[str, str]:
    """(method, route) of a request name made by `request_name` (its variant dropped)."""
    method, _, rest = name.partition(" ")
    return method, rest.split(" (", 1)[0]


def topup_amounts(min_fen: int, max_fen: int, step_fen: int = 1000) -> list[int]:
    """The cash amounts a cashier takes: whole multiples of `step_fen` (10 yuan) in range."""
    if not 1 <= min_fen <= max_fen:
        raise ValueError(f"top-up amounts {min_fen}..{max_fen} fen: want 1 <= min <= max")
    first = -(-min_fen // step_fen) * step_fen
    amounts = list(range(first, max_fen + 1, step_fen))
    return amounts or [min_fen]


def usable_people(items: Iterable[Mapping[str, Any]]) -> list[int]:
    """Person ids from `GET /people` items whose account is not closed (money and cards are
    refused on a closed account)."""
    return [int(p["id"]) for p in items if p.get("account_status") != "closed"]


__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_USERNAMES",
    "ROLES",
    "Login",
    "LoginPool",
    "UsersFileError",
    "build_logins",
    "fill",
    "parse_http_host",
    "parse_users_file",
    "request_name",
    "route_of",
    "topup_amounts",
    "usable_people",
]
