"""locust users for the admin API (FastHttpUser): staff at work, and cardholders on their phones.

Imported only by locust (through `loadtest/locustfile_admin.py`): importing locust
monkey-patches the standard library for gevent, so `import loadtest` never imports this module.
The locust-free parts (log-ins, the users file, request names) are in `loadtest.admin_plan`.

Every user logs in once at start (`POST /auth/login`; again only when its token is about to
expire, or after a 401), thinks `--admin-think-min-seconds`..`--admin-think-max-seconds` between
tasks, and logs out at stop. It starts with two rounds of its tasks, back to back in the order
declared, the first taking every variant (a CSV download, a top-up repeated with the same key)
and the second none, and then picks its tasks by weight and its variants by their shares: so
even a short run makes every kind of request. Until a log-in has worked once its users try it
one at a time, and one the API refuses (a wrong password, a disabled or locked-out name) is not
tried again: the others stop with `NoLogin`, since every failed try counts towards the API's
lock-out of that name (`login_failures_max`), the real staff's included. What each does, by
weight:

- `CardOfficeUser` (a card office clerk): looks a person up by name and opens them (5),
  reads a statement (4) and a balance (4), lists a person's cards and sometimes a card's
  history (2), enrols a new person and issues them a card (1), and reports one of the cards
  it issued lost, or unfreezes it (1). It changes only the people it enrolled: the site's
  cardholders keep their cards working.
- `CashierUser` (the cash desk): reads a person's balance, then takes cash: a top-up with a
  fresh `Idempotency-Key` (6); a share (`--admin-same-key-share`) is sent again with the same
  key and must be answered as a replay (`Idempotent-Replay: true`, the same txn_seq); a
  top-up answered 503 or not at all is repeated with the same key (at most 3 times, 1 s
  apart), as the API asks. Looks a person up by name (2).
- `CardholderUser` (self-service): balance (5), transactions (3), cards (1).
- `AuditorUser`: pages through the audit trail and then follows its tail (4), filters it by
  action (2) and by person (1).
- `ReportsUser` (a merchant viewer or finance): a merchant's transactions today (4), a
  merchant's daily summary of the week by meal (2), a tenant's monthly summary by merchant
  (1), a tenant's exceptions today (1); a share (`--admin-csv-share`) as CSV downloads.

Distributed, the master sends its options to the workers with each spawn message (the
password included, in clear: keep the master port on loopback or a network you trust), and each
worker reads its log-ins from them when its first user starts; a users file must exist at the
same path on every worker.

Ids come from the API at start, as each role sees them: people (`GET /people`, pages, at most
`--admin-people-max`, closed accounts left out), org nodes and classes (to enrol), the
cardholder's own people (`GET /self/people`), merchants (`GET /merchants`) and the tenants
whose reports the log-in may read. Those of one log-in are read once per process.

Requests are named by method and route template, as the admin API's metrics label them
(`GET /people/{person_id}/statement`), with a variant in brackets where it differs:
`POST /people/{person_id}/topups (same key)`, `GET /merchants/{merchant_id}/transactions (csv)`.
A request is a failure when its status is not the one its task expects (`HTTP 503
switch-unavailable`: the status and the problem's type), when no answer came (`no answer:
...`), or when a repeat with the same key was not a replay. Money moves through the switch:
without a running switch every top-up fails with 503.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlencode

import gevent
from gevent.lock import BoundedSemaphore
from locust import FastHttpUser, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import WorkerRunner

from loadtest.admin_plan import (
    DEFAULT_HOST,
    DEFAULT_USERNAMES,
    ROLES,
    Login,
    LoginPool,
    build_logins,
    fill,
    parse_http_host,
    request_name,
    topup_amounts,
    usable_people,
)

TOKEN_MARGIN_SECONDS: Final = 30.0
"""Log in again this long before the token expires."""
SAME_KEY_RETRIES_MAX: Final = 3
SAME_KEY_RETRY_PAUSE_SECONDS: Final = 1.0
CARD_NO_BASE: Final = 7_000_000_000_000_000
"""Cards issued by the load test: CARD_NO_BASE + a random number below 10**15."""
AUDIT_ACTIONS: Final = ("money.topup", "card.issue", "card.report_loss", "card.unfreeze",
                        "person.create", "user.create")

log = logging.getLogger(__name__)

LOGINS: Final = LoginPool()
_discovered: dict[tuple[str, str], Any] = {}
_discovery_lock = BoundedSemaphore()
_first_log_in: dict[Login, BoundedSemaphore] = {}
"""Until a log-in has worked once, its users try it one at a time (a refusal stops the rest)."""


class NoLogin(Exception):
    """No log-in for this role: give one (--admin-<role>-users with --admin-password, or a
    users file), or leave the role's user class out."""


class NothingToWorkOn(Exception):
    """The log-in sees nothing this role works on (no people, no merchants)."""


class BadAnswer(Exception):
    """The expected status, but not the expected answer: a request repeated with the same
    Idempotency-Key that was not answered as a replay of the first."""


# --- locust wiring ---------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument("--admin-password", env_var="ONECARD_LOAD_ADMIN_PASSWORD", default="",
                        include_in_web_ui=False, is_secret=True,
                        help="the password of the --admin-*-users log-ins (env "
                             "ONECARD_LOAD_ADMIN_PASSWORD)")
    for role in ROLES:
        flag = role.replace("_", "-")
        parser.add_argument(f"--admin-{flag}-users", default=DEFAULT_USERNAMES[role],
                            include_in_web_ui=False,
                            help=f"log-ins of the {role} users, comma-separated (default: the "
                                 "demo's)")
    parser.add_argument("--admin-users-file", default="", include_in_web_ui=False,
                        help="CSV of log-ins, header role,username,password; replaces the "
                             "options' log-ins of each role it names")
    parser.add_argument("--admin-think-min-seconds", type=float, default=1.0,
                        help="shortest pause between a user's tasks")
    parser.add_argument("--admin-think-max-seconds", type=float, default=4.0,
                        help="longest pause between a user's tasks")
    parser.add_argument("--admin-people-max", type=int, default=2000,
                        help="people a card office or cashier log-in reads at start")
    parser.add_argument("--admin-topup-min-fen", type=int, default=1000,
                        help="smallest cash top-up (amounts are multiples of 10 yuan)")
    parser.add_argument("--admin-topup-max-fen", type=int, default=20000,
                        help="largest cash top-up")
    parser.add_argument("--admin-same-key-share", type=float, default=0.1,
                        help="share of top-ups sent a second time with the same key")
    parser.add_argument("--admin-csv-share", type=float, default=0.2,
                        help="share of reports downloaded as CSV")


def _opt(environment: Environment, name: str, default: Any) -> Any:
    return getattr(environment.parsed_options, name, default)


def _logins_from(opts: Any) -> dict[str, list[Login]]:
    """The log-ins of the options (ValueError when there are none or they are wrong)."""
    logins = build_logins({role: getattr(opts, f"admin_{role}_users") for role in ROLES},
                          opts.admin_password, opts.admin_users_file)
    topup_amounts(opts.admin_topup_min_fen, opts.admin_topup_max_fen)
    if not logins:
        raise ValueError("no log-ins: give --admin-password (or ONECARD_LOAD_ADMIN_PASSWORD) for "
                         "the --admin-*-users log-ins, or --admin-users-file")
    return logins


def _load_logins(opts: Any) -> None:
    LOGINS.load(_logins_from(opts))
    log.info("onecard: admin API log-ins by role: %s",
             ", ".join(f"{role} {len(LOGINS.logins.get(role, []))}" for role in ROLES))


@events.init.add_listener
def _on_init(environment: Environment, **_kwargs: Any) -> None:
    opts = environment.parsed_options
    if opts is None:  # used as a library, without locust's command line
        return
    if isinstance(environment.runner, WorkerRunner):
        return  # the master's options come with its spawn message: read at the users' start
    try:
        if environment.host:
            parse_http_host(environment.host)
        _load_logins(opts)
    except ValueError as exc:  # UsersFileError included
        log.error("onecard: %s", exc)
        sys.exit(2)


# --- What every user does --------------------------------------------------------------------


class Answer:
    """A request's outcome: its status (0: no answer) and, when it was as expected, its body."""

    def __init__(self, status: int, ok: bool, data: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.ok = ok
        self.data = data
        self.headers = headers or {}


class AdminApiUser(FastHttpUser):
    """A log-in of one role. See the module docstring."""

    abstract = True
    host = DEFAULT_HOST
    role: str = ""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.login: Login | None = None
        self._token = ""
        self._token_until = 0.0
        self._forced_variant: bool | None = None
        """In the first two rounds: whether every request takes its variant."""

    def wait_time(self) -> float:
        low = _opt(self.environment, "admin_think_min_seconds", 1.0)
        high = max(low, _opt(self.environment, "admin_think_max_seconds", 4.0))
        return random.uniform(low, high)

    def on_start(self) -> None:
        if not LOGINS.logins:  # a worker: the master's options arrived with its spawn message
            try:
                _load_logins(self.environment.parsed_options)
            except ValueError as exc:
                self._fail("POST /auth/login", NoLogin(str(exc)))
                raise StopUser() from None
        self.login = LOGINS.take(self.role)
        if self.login is None:
            self._fail("POST /auth/login", NoLogin(f"no log-in for role {self.role} (or every "
                                                   "one was refused)"))
            raise StopUser()
        if not self._log_in():
            raise StopUser()
        self.prepare()
        # Back to back, with no pause: a pause is where locust may stop a user, and a graceful
        # stop (--stop-timeout) lets the two rounds finish.
        for forced in (True, False):
            self._forced_variant = forced
            for each_task in dict.fromkeys(self.tasks):  # declared order, once each
                each_task(self)  # type: ignore[operator]
        self._forced_variant = None

    def prepare(self) -> None:
        """What the role reads before its first task (ids to work on); StopUser if nothing."""

    def takes_variant(self, share_option: str, default: float) -> bool:
        """Whether this request takes its variant: always in the first round, never in the
        second, then the option's share of the time."""
        if self._forced_variant is not None:
            return self._forced_variant
        return random.random() < _opt(self.environment, share_option, default)

    def on_stop(self) -> None:
        if self._token:
            self.call("POST", "/auth/logout", expect=(204,))
            self._token = ""

    # --- Requests --------------------------------------------------------------------------

    def _log_in(self) -> bool:
        login = self.login
        assert login is not None
        self._token = ""
        if login in LOGINS.accepted:
            return self._log_in_now(login)
        with _first_log_in.setdefault(login, BoundedSemaphore()):
            if login in LOGINS.refused:
                self._fail("POST /auth/login", NoLogin(f"{login} was refused: not tried again"))
                return False
            return self._log_in_now(login)

    def _log_in_now(self, login: Login) -> bool:
        body = {"username": login.username, "password": login.password}
        answer = self.call("POST", "/auth/login", body=body, auth=False)
        if not answer.ok:
            if 400 <= answer.status < 500:  # a wrong password, a disabled or locked-out log-in
                LOGINS.refuse(login)
            return False
        LOGINS.accept(login)
        self._token = answer.data["access_token"]
        self._token_until = time.monotonic() + answer.data["expires_in"] - TOKEN_MARGIN_SECONDS
        return True

    def call(self, method: str, route: str, *, params: dict[str, Any] | None = None,
             body: Any = None, headers: dict[str, str] | None = None, variant: str = "",
             expect: tuple[int, ...] = (200,), check: Callable[[Answer], str | None] | None = None,
             auth: bool = True, **path: int | str) -> Answer:
        """One request, named by its route template; a failure unless its status is in
        `expect` and `check` (if given) finds nothing wrong."""
        if auth and (not self._token or time.monotonic() > self._token_until) and not (
                self._log_in()):
            return Answer(0, False)
        url = fill(route, **path)
        if params:
            url += "?" + urlencode(params)
        sent = dict(headers or {})
        if auth:
            sent["Authorization"] = f"Bearer {self._token}"
        with self.client.request(method, url, name=request_name(method, route, variant),
                                 headers=sent, json=body, catch_response=True) as resp:
            status = resp.status_code or 0
            if status == 0:
                error = getattr(resp, "error", None)
                resp.failure(f"no answer: {type(error).__name__ if error else 'unknown'}")
                return Answer(0, False)
            if status not in expect:
                if status == 401 and auth:
                    self._token_until = 0.0  # log in again before the next request
                resp.failure(f"HTTP {status} {_problem_type(resp)}")
                return Answer(status, False)
            data: Any = None
            content_type = resp.headers.get("content-type", "") if resp.headers else ""
            if resp.content and "json" in content_type:
                try:
                    data = resp.json()
                except ValueError:
                    resp.failure(f"HTTP {status}: not JSON")
                    return Answer(status, False)
            answer = Answer(status, True, data,
                            {k.lower(): v for k, v in (resp.headers or {}).items()})
            why = check(answer) if check is not None else None
            if why is not None:
                resp.failure(BadAnswer(why))
                answer.ok = False
            else:
                resp.success()
            return answer

    def _fail(self, name: str, exc: Exception) -> None:
        self.environment.events.request.fire(
            request_type=name.partition(" ")[0], name=name, response_time=0.0,
            response_length=0, response=None, context={}, exception=exc)

    def discovered(self, what: str, read: Callable[[], Any]) -> Any:
        """What `read()` returns, once per log-in and process."""
        assert self.login is not None
        key = (self.login.username, what)
        with _discovery_lock:
            if key not in _discovered:
                value = read()
                if not value:
                    return value  # not kept: the next user of this log-in tries again
                _discovered[key] = value
            return _discovered[key]

    def people(self) -> list[tuple[int, str]]:
        """(id, name) of the people this log-in works on: `GET /people`, pages of 500."""

        def read() -> list[tuple[int, str]]:
            most = _opt(self.environment, "admin_people_max", 2000)
            out: list[tuple[int, str]] = []
            after = 0
            while len(out) < most:
                page = self.call("GET", "/people", params={"after": after,
                                                           "limit": min(500, most)})
                if not page.ok:
                    break
                usable = set(usable_people(page.data["items"]))
                out += [(p["id"], p["name"]) for p in page.data["items"] if p["id"] in usable]
                after = page.data["next_after"]
                if after is None:
                    break
            return out[:most]

        people = self.discovered("people", read)
        if not people:
            self._fail("GET /people", NothingToWorkOn(f"{self.login} sees no person"))
            raise StopUser()
        return list(people)


def _problem_type(resp: Any) -> str:
    """The problem's slug (`switch-unavailable`) of an RFC 9457 answer, else the reason."""
    try:
        body = resp.json()
    except Exception:  # not JSON: an HTML error page, a proxy's answer
        return "(not a problem document)"
    kind = body.get("type", "") if isinstance(body, dict) else ""
    return str(kind).rsplit("/", 1)[-1] or "(no type)"


# --- The roles -------------------------------------------------------------------------------


class CardOfficeUser(AdminApiUser):
    """A card office clerk. See the module docstring."""

    role = "card_office"
    weight = 3

    def prepare(self) -> None:
        self._people = self.people()
        self._enrol_at = self.discovered("enrol", self._enrol_targets)
        self._own_cards: dict[int, bool] = {}  # card_no -> reported lost

    def _enrol_targets(self) -> tuple[list[int], list[int]] | None:
        """(nodes people may belong to, class ids): tenants and departments, every class."""
        nodes = self.call("GET", "/org/nodes")
        classes = self.call("GET", "/classes")
        if not nodes.ok or not classes.ok:
            return None
        node_ids = [n["id"] for n in nodes.data if n["tenant_id"] is not None]
        class_ids = [c["id"] for c in classes.data]
        return (node_ids, class_ids) if node_ids and class_ids else None

    def _person(self) -> int:
        return random.choice(self._people)[0]

    @task(5)
    def look_up(self) -> None:
        person_id, name = random.choice(self._people)
        found = self.call("GET", "/people", params={"q": name, "limit": 20})
        if found.ok:
            self.call("GET", "/people/{person_id}", person_id=person_id)

    @task(4)
    def statement(self) -> None:
        self.call("GET", "/people/{person_id}/statement", params={"limit": 50},
                  person_id=self._person())

    @task(4)
    def balance(self) -> None:
        self.call("GET", "/people/{person_id}/balance", person_id=self._person())

    @task(2)
    def cards(self) -> None:
        cards = self.call("GET", "/people/{person_id}/cards", person_id=self._person())
        if cards.ok and cards.data and random.random() < 0.5:
            self.call("GET", "/cards/{card_no}/history", params={"limit": 50},
                      card_no=cards.data[-1]["card_no"])

    @task(1)
    def enrol_and_issue_card(self) -> None:
        if not self._enrol_at:
            return
        nodes, classes = self._enrol_at
        person = self.call("POST", "/people", expect=(201,), body={
            "node_id": random.choice(nodes), "class_id": random.choice(classes),
            "name": f"locust {uuid.uuid4().hex[:10]}"})
        if not person.ok:
            return
        card_no = CARD_NO_BASE + random.randrange(10**15)
        card = self.call("POST", "/people/{person_id}/cards", expect=(201,),
                         body={"card_no": card_no, "card_type": "standard"},
                         person_id=person.data["id"])
        if card.ok:
            self._own_cards[card_no] = False

    @task(1)
    def report_loss_or_unfreeze(self) -> None:
        if not self._own_cards:
            self.enrol_and_issue_card()
            return
        card_no = random.choice(list(self._own_cards))
        if self._own_cards[card_no]:
            if self.call("POST", "/cards/{card_no}/unfreeze", card_no=card_no).ok:
                self._own_cards[card_no] = False
        elif self.call("POST", "/cards/{card_no}/report-loss", card_no=card_no).ok:
            self._own_cards[card_no] = True


class CashierUser(AdminApiUser):
    """The cash desk. See the module docstring."""

    role = "cashier"
    weight = 3

    def prepare(self) -> None:
        self._people = self.people()
        self._amounts = topup_amounts(_opt(self.environment, "admin_topup_min_fen", 1000),
                                      _opt(self.environment, "admin_topup_max_fen", 20000))

    @task(6)
    def top_up(self) -> None:
        person_id = random.choice(self._people)[0]
        if not self.call("GET", "/people/{person_id}/balance", person_id=person_id).ok:
            return
        body = {"amount_fen": random.choice(self._amounts), "note": "locust"}
        key = uuid.uuid4().hex
        route = "/people/{person_id}/topups"
        first = self.call("POST", route, body=body, headers={"Idempotency-Key": key},
                          expect=(201,), person_id=person_id)
        retries = 0
        while not first.ok and first.status in (0, 503) and retries < SAME_KEY_RETRIES_MAX:
            # Whether the money moved is not known: repeat with the same key, as the API asks.
            gevent.sleep(SAME_KEY_RETRY_PAUSE_SECONDS)
            retries += 1
            first = self.call("POST", route, body=body, headers={"Idempotency-Key": key},
                              expect=(201,), variant="same key", person_id=person_id)
        if not first.ok or not self.takes_variant("admin_same_key_share", 0.1):
            return

        def is_replay(again: Answer) -> str | None:
            if again.headers.get("idempotent-replay") != "true":
                return "a repeat with the same key was not a replay (no Idempotent-Replay)"
            if again.data.get("txn_seq") != first.data.get("txn_seq"):
                return "a replay answered another txn_seq than the first answer"
            return None

        self.call("POST", route, body=body, headers={"Idempotency-Key": key}, expect=(201,),
                  variant="same key", check=is_replay, person_id=person_id)

    @task(2)
    def look_up(self) -> None:
        _, name = random.choice(self._people)
        self.call("GET", "/people", params={"q": name, "limit": 20})


class CardholderUser(AdminApiUser):
    """A cardholder's phone app (self-service). See the module docstring."""

    role = "cardholder"
    weight = 8

    def prepare(self) -> None:
        me = self.call("GET", "/self/people")
        self._mine = [p["id"] for p in me.data] if me.ok else []
        if not self._mine:
            self._fail("GET /self/people", NothingToWorkOn(f"{self.login} has no person"))
            raise StopUser()

    @task(5)
    def balance(self) -> None:
        self.call("GET", "/self/people/{person_id}/balance", person_id=random.choice(self._mine))

    @task(3)
    def transactions(self) -> None:
        self.call("GET", "/self/people/{person_id}/transactions", params={"limit": 20},
                  person_id=random.choice(self._mine))

    @task(1)
    def cards(self) -> None:
        self.call("GET", "/self/people/{person_id}/cards", person_id=random.choice(self._mine))


class AuditorUser(AdminApiUser):
    """An auditor reading the audit trail. See the module docstring."""

    role = "auditor"
    weight = 1

    def prepare(self) -> None:
        self._after = 0
        self._people_seen: list[str] = []

    @task(4)
    def follow(self) -> None:
        page = self.call("GET", "/audit", params={"after": self._after, "limit": 100})
        if not page.ok:
            return
        items = page.data["items"]
        if items:
            self._after = items[-1]["id"]
            self._people_seen += [i["entity_id"] for i in items if i["entity"] == "person"]
            del self._people_seen[:-200]

    @task(2)
    def by_action(self) -> None:
        self.call("GET", "/audit", params={"action": random.choice(AUDIT_ACTIONS),
                                           "limit": 50})

    @task(1)
    def by_person(self) -> None:
        if self._people_seen:
            self.call("GET", "/audit", params={"entity": "person", "limit": 50,
                                               "entity_id": random.choice(self._people_seen)})


class ReportsUser(AdminApiUser):
    """A merchant viewer (or finance) reading reports. See the module docstring."""

    role = "reports"
    weight = 1

    def prepare(self) -> None:
        merchants = self.discovered("merchants", self._merchants)
        if not merchants:
            self._fail("GET /merchants", NothingToWorkOn(f"{self.login} sees no merchant"))
            raise StopUser()
        self._merchants_ids: list[int] = merchants[0]
        self._tenants: list[int] = self.discovered("tenants", lambda: self._tenants_of(
            merchants[1])) or []

    def _merchants(self) -> tuple[list[int], list[int]] | None:
        """(merchant ids, their tenants): the non-system merchants, else all."""
        page = self.call("GET", "/merchants", params={"limit": 1000})
        if not page.ok or not page.data["items"]:
            return None
        items = page.data["items"]
        shops = [m for m in items if m["kind"] != "system"] or items
        return [m["id"] for m in shops], sorted({m["tenant_id"] for m in shops})

    def _tenants_of(self, tenant_ids: list[int]) -> list[int]:
        """The tenants whose reports this log-in may read (a department's may not: 404)."""
        return [t for t in tenant_ids
                if self.call("GET", "/tenants/{tenant_id}/summary", expect=(200, 404),
                             tenant_id=t).status == 200]

    def _format(self) -> tuple[dict[str, str], str]:
        if self.takes_variant("admin_csv_share", 0.2):
            return {"format": "csv"}, "csv"
        return {}, ""

    @task(4)
    def merchant_transactions(self) -> None:
        fmt, variant = self._format()
        self.call("GET", "/merchants/{merchant_id}/transactions",
                  params={"limit": 100, **fmt}, variant=variant,
                  merchant_id=random.choice(self._merchants_ids))

    @task(2)
    def merchant_summary(self) -> None:
        fmt, variant = self._format()
        week_ago = (dt.date.today() - dt.timedelta(days=6)).isoformat()
        self.call("GET", "/merchants/{merchant_id}/summary",
                  params={"period": "day", "from_day": week_ago, "by_meal": "true", **fmt},
                  variant=variant, merchant_id=random.choice(self._merchants_ids))

    @task(1)
    def tenant_summary(self) -> None:
        if self._tenants:
            self.call("GET", "/tenants/{tenant_id}/summary",
                      params={"period": "month", "by_merchant": "true"},
                      tenant_id=random.choice(self._tenants))

    @task(1)
    def tenant_exceptions(self) -> None:
        if self._tenants:
            self.call("GET", "/tenants/{tenant_id}/exceptions", params={"limit": 100},
                      tenant_id=random.choice(self._tenants))


USER_CLASSES: Final = (CardOfficeUser, CashierUser, CardholderUser, AuditorUser, ReportsUser)

__all__ = [
    "LOGINS",
    "USER_CLASSES",
    "AdminApiUser",
    "AuditorUser",
    "BadAnswer",
    "CardOfficeUser",
    "CardholderUser",
    "CashierUser",
    "NoLogin",
    "NothingToWorkOn",
    "ReportsUser",
]
