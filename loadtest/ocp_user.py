"""locust users that speak OCP to the switch: one user is one POS terminal.

Imported only by locust (through `loadtest/locustfile.py`): importing locust monkey-patches the
standard library for gevent, so `import loadtest` never imports this module.

What a user does:

- on start it takes a terminal of its own from this process's pool (no two users share one),
  connects and signs on (`sign-on`); txn_seq continues after `SignOnResult.last_txn_seq`;
- its tasks, by weight: `purchase` 20 (amount 0 at a fixed-price till, a random amount at a
  free-amount till; a share of them with a lost card), `inquiry` 4 (balance of a random card),
  `reversal` 1 (undo this terminal's latest approved purchase, when it has one);
- between tasks it thinks `--ocp-think-min-seconds`..`--ocp-think-max-seconds`; a session idle
  for the switch's heartbeat interval sends a `heartbeat`;
- a lost connection is signed on again at the next task, after a back-off while that fails;
- on stop it signs off and gives its terminal back.

Every request fires one locust request event (request_type `OCP`), so locust's statistics,
charts and CSV work, and every request is counted exactly once:

- approved: `purchase`, `inquiry`, `reversal`, `sign-on`, `heartbeat`; not a failure;
- declined (a result with a code other than APPROVED: insufficient funds, lost card, ...):
  `purchase declined:INSUFFICIENT_FUNDS`, `reversal declined:ALREADY_REVERSED`, ...; not a
  failure;
- answered with an `Error` (BUSY, SYSTEM_ERROR, TXN_SEQ_TOO_OLD, ...): a failure of the
  request's name, `ErrorAnswer`;
- no answer within `--ocp-timeout-seconds`: a failure, `AnswerTimeout`; the user reconnects;
- connection refused, reset or closed, or a frame that breaks the protocol: a failure,
  `SessionLost`; the user reconnects;
- sign-on refused (unknown or disabled terminal, wrong key): a `sign-on` failure,
  `SignOnRefused`;
- more users than this process has terminals: a `sign-on` failure, `NoFreeTerminal`, and the
  user stops.

A decline is the switch working: it is journaled like an approval and answered as fast, so it
is not a failure; its own row keeps it visible, with its count and latency per response code.

Where terminals and cards come from: the standalone process (or the master) reads the site's
catalog from PostgreSQL once at start (`--ocp-dsn`, `loadtest.site_catalog`, in a child
process), derives each terminal's key from `--ocp-master-secret` and its `key_version`, and at
each test start gives every worker a disjoint share of the terminals (a custom locust message,
sent before the master's spawn messages). Workers need neither the database nor the secret.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Callable
from typing import Any, Final

import gevent
import msgspec
from gevent.lock import BoundedSemaphore
from locust import User, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from loadtest.load_plan import (
    DEFAULT_HOST,
    LoadPlan,
    TerminalGrant,
    TerminalPool,
    build_plan,
    parse_ocp_host,
    split_plan,
)
from loadtest.ocp_session import OcpSession, SessionError, code_name
from loadtest.site_catalog import parse_id_range, read_site_catalog_subprocess
from protocols import ocp

REQUEST_TYPE: Final = "OCP"
PLAN_MESSAGE: Final = "onecard_load_plan"
RECENT_PURCHASES_MAX: Final = 8
"""Approved purchases a terminal remembers as candidates for a reversal."""
RECONNECT_BACKOFF_SECONDS_MAX: Final = 5.0

Request = ocp.Purchase | ocp.Reversal | ocp.BalanceInquiry

log = logging.getLogger(__name__)


class NoFreeTerminal(Exception):
    """Every terminal of this process is held by another user: start fewer users."""


class ErrorAnswer(Exception):
    """The switch answered the request with an Error (a protocol or system error)."""


POOL: Final = TerminalPool()
_site_plan: LoadPlan | None = None
"""Standalone or master: the whole site's plan, read once at start."""


# --- locust wiring ---------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    parser.add_argument("--ocp-dsn", env_var="ONECARD_DSN", default="",
                        include_in_web_ui=False,
                        help="the site's PostgreSQL, to read terminals and cards (standalone or "
                             "master only; env ONECARD_DSN)")
    parser.add_argument("--ocp-master-secret", env_var="ONECARD_MASTER_SECRET", default="",
                        include_in_web_ui=False, is_secret=True,
                        help="the site master secret as hex (standalone or master only; env "
                             "ONECARD_MASTER_SECRET)")
    parser.add_argument("--ocp-terminal-ids", default="", include_in_web_ui=False,
                        help="use only terminals FIRST-LAST (default: every enabled POS)")
    parser.add_argument("--ocp-timeout-seconds", type=float, default=10.0,
                        help="deadline of one request or sign-on")
    parser.add_argument("--ocp-think-min-seconds", type=float, default=0.5,
                        help="shortest pause between a terminal's requests")
    parser.add_argument("--ocp-think-max-seconds", type=float, default=2.0,
                        help="longest pause between a terminal's requests")
    parser.add_argument("--ocp-amount-min-fen", type=int, default=300,
                        help="smallest amount at a free-amount till")
    parser.add_argument("--ocp-amount-max-fen", type=int, default=2500,
                        help="largest amount at a free-amount till")
    parser.add_argument("--ocp-lost-card-share", type=float, default=0.01,
                        help="share of purchases made with a card reported lost")


@events.init.add_listener
def _on_init(environment: Environment, **_kwargs: Any) -> None:
    global _site_plan
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message(PLAN_MESSAGE, _on_plan_message)
        return
    opts = environment.parsed_options
    if opts is None:  # used as a library, without locust's command line
        return
    try:
        parse_ocp_host(environment.host or PosTerminalUser.host)
        parse_id_range(opts.ocp_terminal_ids)
        if not opts.ocp_dsn:
            raise ValueError("give --ocp-dsn or set ONECARD_DSN (the site's PostgreSQL)")
        try:
            secret = bytes.fromhex(opts.ocp_master_secret)
        except ValueError:
            raise ValueError("--ocp-master-secret / ONECARD_MASTER_SECRET is not hex") from None
        if not 32 <= len(secret) <= 64:
            raise ValueError("give the site master secret (32-64 bytes as hex) with "
                             "--ocp-master-secret or ONECARD_MASTER_SECRET")
        catalog = read_site_catalog_subprocess(opts.ocp_dsn, opts.ocp_terminal_ids)
        if not catalog.terminals or not catalog.cards:
            raise ValueError(f"the site has {len(catalog.terminals)} enabled POS terminals and "
                             f"{len(catalog.cards)} active cards: seed it first")
    except (ValueError, RuntimeError, OSError) as exc:
        log.error("onecard: %s", exc)
        sys.exit(2)
    _site_plan = build_plan(catalog, secret)
    log.info("onecard: %d terminals (%d fixed-price), %d cards, %d lost cards",
             len(catalog.terminals), sum(t.fixed_price for t in catalog.terminals),
             len(catalog.cards), len(catalog.lost_cards))


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_kwargs: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner) or _site_plan is None:
        return
    if isinstance(runner, MasterRunner):
        workers = sorted(runner.clients.ready + runner.clients.spawning + runner.clients.running,
                         key=lambda w: w.id)
        for worker, part in zip(workers, split_plan(_site_plan, len(workers)), strict=True):
            runner.send_message(PLAN_MESSAGE, msgspec.to_builtins(part), client_id=worker.id)
        log.info("onecard: %d terminals shared among %d workers",
                 len(_site_plan.terminals), len(workers))
    else:
        POOL.load(_site_plan)


def _on_plan_message(environment: Environment, msg: Any, **_kwargs: Any) -> None:
    POOL.load(msgspec.convert(msg.data, LoadPlan))
    log.info("onecard: %d terminals for this worker", len(POOL.plan.terminals))


# --- The user --------------------------------------------------------------------------------


class PosTerminalUser(User):
    """One POS terminal at a canteen or shop till. See the module docstring."""

    host = DEFAULT_HOST

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        opts = environment.parsed_options
        self._timeout_seconds: float = getattr(opts, "ocp_timeout_seconds", 10.0)
        self._grant: TerminalGrant | None = None
        self._session: OcpSession | None = None
        self._lock = BoundedSemaphore()
        self._heartbeat: gevent.Greenlet | None = None
        self._recent: list[tuple[int, int]] = []  # approved purchases: (txn_seq, card_no)
        self._failures_in_row = 0

    def wait_time(self) -> float:
        opts = self.environment.parsed_options
        low = getattr(opts, "ocp_think_min_seconds", 0.5)
        high = max(low, getattr(opts, "ocp_think_max_seconds", 2.0))
        return random.uniform(low, high)

    def on_start(self) -> None:
        grant = POOL.take()
        if grant is None:
            self._fire("sign-on", 0.0, 0, NoFreeTerminal(
                f"all {len(POOL.plan.terminals)} terminals of this process are in use"))
            raise StopUser()
        self._grant = grant
        host, port = parse_ocp_host(self.host)
        self._session = OcpSession(host, port, grant.terminal_id, bytes.fromhex(grant.key_hex),
                                   last_txn_seq=POOL.last_txn_seq(grant.terminal_id),
                                   firmware="locust")
        with self._lock:
            self._sign_on()
        self._heartbeat = gevent.spawn(self._heartbeat_loop)

    def on_stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.kill(block=False)
        session, grant = self._session, self._grant
        if session is not None and grant is not None:
            session.sign_off()
            POOL.give_back(grant, session.txn_seq)
        self._session = self._grant = None

    # --- Tasks -----------------------------------------------------------------------------

    @task(20)
    def purchase(self) -> None:
        assert self._grant is not None
        opts = self.environment.parsed_options
        plan = POOL.plan
        lost_share = getattr(opts, "ocp_lost_card_share", 0.01)
        if plan.lost_cards and random.random() < lost_share:
            card = random.choice(plan.lost_cards)
        else:
            card = random.choice(plan.cards)
        if self._grant.fixed_price:
            amount = 0  # the till's fixed price
        else:
            amount = random.randint(getattr(opts, "ocp_amount_min_fen", 300),
                                    getattr(opts, "ocp_amount_max_fen", 2500))
        now_ms = int(time.time() * 1000)
        answer, seq = self._call("purchase", lambda s: ocp.Purchase(s, card, amount, now_ms))
        if isinstance(answer, ocp.PurchaseResult) and answer.code == 0:
            self._recent.append((seq, card))
            del self._recent[:-RECENT_PURCHASES_MAX]

    @task(4)
    def inquiry(self) -> None:
        card = random.choice(POOL.plan.cards)
        self._call("inquiry", lambda s: ocp.BalanceInquiry(s, card))

    @task(1)
    def reversal(self) -> None:
        if not self._recent:
            return
        original, card = self._recent.pop()
        self._call("reversal", lambda s: ocp.Reversal(s, original, card, 0))

    # --- Requests and events ---------------------------------------------------------------

    def _call(self, name: str, build: Callable[[int], Request]) -> tuple[Any, int]:
        """Send one request built by `build(txn_seq)`; fire its event; (answer or None, seq)."""
        if not self._wait_signed_on():
            return None, 0
        with self._lock:
            session = self._session
            if session is None or not session.open:
                return None, 0
            seq = session.next_txn_seq()
            msg = build(seq)
            bytes0 = session.bytes_in
            t0 = time.perf_counter()
            try:
                answer = session.request(msg, self._timeout_seconds)
            except SessionError as exc:
                self._fire(name, _ms_since(t0), 0, exc, seq)
                return None, seq
            elapsed_ms = _ms_since(t0)
            size = session.bytes_in - bytes0
        code = answer.code
        context = {"terminal_id": session.terminal_id, "txn_seq": seq, "code": code}
        if isinstance(answer, ocp.Error):
            self._fire(name, elapsed_ms, size, ErrorAnswer(f"Error {code_name(code)}"), seq,
                       context)
        elif code == 0:
            self._fire(name, elapsed_ms, size, None, seq, context)
        else:
            self._fire(f"{name} declined:{code_name(code)}", elapsed_ms, size, None, seq, context)
        return answer, seq

    def _wait_signed_on(self) -> bool:
        """Sign on again if the session was lost, after a back-off while that keeps failing."""
        session = self._session
        if session is None:
            return False
        if session.open:
            return True
        if self._failures_in_row:
            gevent.sleep(min(RECONNECT_BACKOFF_SECONDS_MAX,
                             0.1 * 2 ** min(self._failures_in_row, 10)))
        with self._lock:
            if not session.open:
                self._sign_on()
        return session.open

    def _sign_on(self) -> None:
        """Sign on (the lock held); fires `sign-on`."""
        session = self._session
        assert session is not None
        t0 = time.perf_counter()
        try:
            session.sign_on(self._timeout_seconds)
        except SessionError as exc:
            self._failures_in_row += 1
            self._fire("sign-on", _ms_since(t0), 0, exc)
            return
        self._failures_in_row = 0
        self._fire("sign-on", _ms_since(t0), session.bytes_in, None)

    def _heartbeat_loop(self) -> None:
        """Keep an idle session alive: a Heartbeat once nothing was sent for an interval."""
        while True:
            session = self._session
            if session is None:
                return
            due = session.last_sent + session.heartbeat_interval_seconds
            now = time.monotonic()
            if not session.open or now < due:
                gevent.sleep(max(due - now, 0.5) if session.open else 1.0)
                continue
            with self._lock:
                if not session.open or time.monotonic() < (
                        session.last_sent + session.heartbeat_interval_seconds):
                    continue
                bytes0 = session.bytes_in
                t0 = time.perf_counter()
                try:
                    session.heartbeat(self._timeout_seconds)
                except SessionError as exc:
                    self._fire("heartbeat", _ms_since(t0), 0, exc)
                else:
                    self._fire("heartbeat", _ms_since(t0), session.bytes_in - bytes0, None)

    def _fire(self, name: str, response_time_ms: float, response_length: int,
              exception: Exception | None, txn_seq: int = 0,
              context: dict[str, Any] | None = None) -> None:
        if context is None:
            context = {"terminal_id": self._grant.terminal_id if self._grant else 0,
                       "txn_seq": txn_seq}
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=response_time_ms,
            response_length=response_length,
            response=None,
            context=context,
            exception=exception,
        )


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


__all__ = [
    "PLAN_MESSAGE",
    "POOL",
    "REQUEST_TYPE",
    "ErrorAnswer",
    "NoFreeTerminal",
    "PosTerminalUser",
]
