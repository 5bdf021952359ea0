"""Money at the counter, through the switch: the admin terminal, txn_seq, system accounts.

The admin API never writes a balance. Each movement is an OCP request of the site's admin
terminal (kind 6) to the switch (`_switch_client.SwitchClient`), decided and journaled there
like a purchase. This module gives every movement its txn_seq (drawn from `admin_txn_seq` and
stored before the switch is asked, so a retry after any failure reuses it and the switch
answers the original result) and reads the outcome of a txn_seq from the journal when the
switch no longer remembers it.

A stored txn_seq is replaced only when the switch calls it too old (nothing moved under it,
nor ever can), and only by compare-and-set: of two requests that both found it too old, one
stores a fresh txn_seq and asks with it, the other answers 409. So whatever the interleaving,
and across admin API processes, at most one txn_seq of a movement can ever move money.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Final

import asyncpg
import msgspec
import structlog

from admin_api._problems import Problem
from admin_api._settings import AdminSettings
from admin_api._switch_client import SwitchClient, SwitchError, SwitchRefused, SwitchUnavailable
from protocols import ocp

ADMIN_TERMINAL_KIND: Final = 6
PURPOSES: Final = ("cash_desk", "subsidy_fund", "adjustments", "bank_clearing")
CODE_NAMES: Final = {int(c): c.name for c in ocp.ResponseCode}
APPROVED: Final = int(ocp.ResponseCode.APPROVED)
TXN_SEQ_TOO_OLD: Final = int(ocp.ResponseCode.TXN_SEQ_TOO_OLD)
_RENEWALS_MAX: Final = 3

log = structlog.get_logger("onecard.admin.money")


class Outcome(msgspec.Struct, frozen=True):
    """What the switch decided for one txn_seq."""

    txn_seq: int
    code: int
    amount_fen: int
    main_fen: int
    subsidy_fen: int

    @property
    def approved(self) -> bool:
        return self.code == APPROVED

    @property
    def result(self) -> str:
        return CODE_NAMES.get(self.code, str(self.code))


class Money:
    """The admin API's one admin terminal. `start()` at app start, `close()` at its end."""

    def __init__(self, settings: AdminSettings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.client: SwitchClient | None = None
        self.terminal_id = 0
        self.why_not = "the admin API has not started its switch client"
        self._sign_on: asyncio.Task[None] | None = None
        self._held: weakref.WeakValueDictionary[Hashable, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    async def start(self) -> None:
        s = self.settings
        row = await self.pool.fetchrow(
            "SELECT id, key_version, status FROM terminals WHERE kind = $1"
            " AND ($2 = 0 OR id = $2) ORDER BY id LIMIT 1", ADMIN_TERMINAL_KIND,
            s.switch_terminal_id)
        if row is None:
            self.why_not = ("no admin terminal: register a terminal of kind admin (onecard "
                            "admin-init does) or set switch_terminal_id")
            return
        if s.switch_terminal_key:
            key = bytes.fromhex(s.switch_terminal_key)
        elif s.master_secret:
            key = ocp.derive_terminal_key(s.master_secret_bytes, row["id"], row["key_version"])
        else:
            self.why_not = ("no key for the admin terminal: set master_secret (or "
                            "switch_terminal_key)")
            return
        self.terminal_id = row["id"]
        # Every txn_seq drawn from now on is above what this terminal ever journaled.
        # Only forward, and only when the journal is ahead (after a restore): a read-then-set
        # while another process draws could otherwise move the sequence back.
        await self.pool.execute(
            "SELECT setval('admin_txn_seq', m) FROM (SELECT coalesce(max(txn_seq), 0) AS m"
            " FROM journal WHERE terminal_id = $1) j"
            " WHERE m > (SELECT last_value FROM admin_txn_seq)", self.terminal_id)
        self.client = SwitchClient(s.switch_host, s.switch_port, self.terminal_id, key,
                                   timeout=s.switch_timeout_seconds)
        # Sign on in the background: the API serves everything else while the switch is away,
        # and a money request waits for the session (up to the timeout) or answers 503.
        self._sign_on = asyncio.create_task(self._sign_on_once(), name="admin-switch-sign-on")

    async def _sign_on_once(self) -> None:
        assert self.client is not None
        try:
            last = await self.client.start()
        except SwitchUnavailable as exc:
            log.warning("admin.switch_unavailable", error=str(exc), terminal_id=self.terminal_id)
        else:
            log.info("admin.switch_signed_on", terminal_id=self.terminal_id, last_txn_seq=last)

    async def close(self) -> None:
        if self._sign_on is not None:
            self._sign_on.cancel()
        if self.client is not None:
            await self.client.close()

    def connected(self) -> float:
        """1.0 while the admin terminal is signed on (the metric), else 0.0."""
        return 1.0 if self.client is not None and self.client.connected else 0.0

    def require(self) -> SwitchClient:
        if self.client is None:
            raise Problem(503, "switch-unavailable", self.why_not)
        return self.client

    def lock(self, key: Hashable) -> asyncio.Lock:
        """The lock of one movement in this process (e.g. a log-in's Idempotency-Key): its
        repeats wait here, holding no database connection, and then read the first answer."""
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = asyncio.Lock()
        return held

    async def next_txn_seq(self, conn: asyncpg.Connection | asyncpg.Pool) -> int:
        self.require()
        return int(await conn.fetchval("SELECT nextval('admin_txn_seq')"))

    async def journaled(self, txn_seq: int, terminal_id: int | None = None) -> Outcome | None:
        """The outcome of (terminal, txn_seq) if the switch journaled it (durable), else None.
        The terminal is the one the movement was stored with (default: this process's)."""
        row = await self.pool.fetchrow(
            "SELECT code, amount_fen, main_fen, subsidy_fen FROM journal"
            " WHERE terminal_id = $1 AND txn_seq = $2", terminal_id or self.terminal_id, txn_seq)
        if row is None:
            return None
        charged = row["amount_fen"] if row["code"] == APPROVED else 0
        return Outcome(txn_seq, row["code"], charged, row["main_fen"], row["subsidy_fen"])

    async def ask(self, kind: str, txn_seq: int, card_no: int, wallet: int, amount_fen: int,
                  merchant_id: int = 0, *, terminal_id: int | None = None,
                  renew: Callable[[int, int], Awaitable[bool]] | None = None) -> Outcome:
        """Credit, debit or transfer (kind), exactly once per (terminal, txn_seq): the
        terminal the movement was stored with, which must be this process's unless the
        journal already has it. Raises Problem 503 when the switch cannot answer now (the
        outcome is unknown: a retry reuses txn_seq), 409 when another process started it, 502
        when the switch refused it without deciding it. A txn_seq the switch calls too old
        (it searched its journal: nothing moved) is replaced by a fresh one, stored by
        `renew(old, fresh)` only if the stored txn_seq is still `old` (compare-and-set: it
        answers whether it stored), and asked again; a request that loses that race answers
        409 (the winner carries the movement)."""
        client = self.require()
        terminal = terminal_id or self.terminal_id
        known = await self.journaled(txn_seq, terminal)
        if known is not None:
            return known
        if terminal != self.terminal_id:
            raise Problem(409, "in-progress", f"this movement was started by another admin API "
                          f"process (admin terminal {terminal}) and is not in the journal: repeat "
                          "it there (or once that process has stopped, ask an operator)")
        for _ in range(_RENEWALS_MAX):
            try:
                if kind == "credit":
                    answer: Any = await client.credit(txn_seq, card_no, wallet, amount_fen,
                                                      merchant_id)
                elif kind == "debit":
                    answer = await client.debit(txn_seq, card_no, wallet, amount_fen,
                                                merchant_id)
                else:
                    answer = await client.transfer(txn_seq, card_no, wallet, amount_fen)
            except SwitchUnavailable as exc:
                raise Problem(503, "switch-unavailable",
                              f"the switch did not answer ({exc}); whether the money moved is "
                              "not known yet: repeat the request with the same Idempotency-Key"
                              ) from None
            except SwitchRefused as exc:
                if exc.code == TXN_SEQ_TOO_OLD and renew is not None:
                    fresh = await self.next_txn_seq(self.pool)
                    if not await renew(txn_seq, fresh):
                        raise Problem(409, "in-progress", "another request renewed this "
                                      "movement's txn_seq meanwhile and carries it: repeat the "
                                      "request in a moment for its answer") from None
                    txn_seq = fresh
                    continue
                raise Problem(502, "switch-refused", f"the switch refused the request: {exc}; "
                              "nothing moved") from None
            except SwitchError as exc:
                raise Problem(409, "in-progress", f"{exc}: the same request is in progress"
                              ) from None
            return Outcome(txn_seq, answer.code, answer.amount_fen, answer.main_fen,
                           answer.subsidy_fen)
        raise Problem(503, "switch-unavailable", "the switch kept calling fresh txn_seqs too old; "
                      "nothing moved: repeat the request")


async def system_account(conn: Any, tenant_id: int, purpose: str) -> int:
    merchant = await conn.fetchval(
        "SELECT merchant_id FROM system_accounts WHERE tenant_id = $1 AND purpose = $2",
        tenant_id, purpose)
    if merchant is None:
        raise Problem(409, "no-system-account", f"tenant {tenant_id} has no {purpose} account "
                      "(onecard admin-init creates one for every tenant)")
    return int(merchant)


async def card_of(conn: Any, account_id: int) -> int:
    """The account's card the switch knows it by: its newest card that is not cancelled."""
    card = await conn.fetchval(
        "SELECT card_no FROM cards WHERE account_id = $1 AND status = 0"
        " ORDER BY issued_at DESC, card_no DESC LIMIT 1", account_id)
    if card is None:
        raise Problem(409, "no-card", f"account {account_id} has no card that is not cancelled: "
                      "issue one first (money moves through the switch, which knows cards)")
    return int(card)


_PURPOSE_NAMES: Final = {"cash_desk": "card office cash desk", "subsidy_fund": "subsidy fund",
                         "bank_clearing": "bank clearing",
                         "adjustments": "manual adjustments"}
MERCHANTS_MAX: Final = 32_768


async def ensure_system_accounts(conn: asyncpg.Connection, tenant_id: int, node_id: int | None,
                                 emit: Any) -> list[int]:
    """Give the tenant each system account it lacks; `emit(event)` puts the change on the
    feed (the caller's transaction). An existing system merchant named like one is adopted.
    Returns the merchant ids created."""
    from admin_api._store import next_id
    from protocols.changes import MerchantOpened

    created = []
    for purpose in PURPOSES:
        if await conn.fetchval("SELECT true FROM system_accounts WHERE tenant_id = $1"
                               " AND purpose = $2", tenant_id, purpose):
            continue
        name = _PURPOSE_NAMES[purpose]
        merchant = await conn.fetchval(
            "SELECT m.id FROM merchants m WHERE m.tenant_id = $1 AND m.kind = 'system'"
            " AND m.name = $2 AND NOT EXISTS (SELECT 1 FROM system_accounts s"
            " WHERE s.merchant_id = m.id) ORDER BY m.id LIMIT 1", tenant_id, name)
        if merchant is None:
            merchant = await next_id(conn, "merchants", MERCHANTS_MAX)
            await conn.execute(
                "INSERT INTO merchants (id, tenant_id, name, kind, node_id) VALUES"
                " ($1, $2, $3, 'system', $4)", merchant, tenant_id, name, node_id)
            emit(MerchantOpened(merchant, tenant_id))
            created.append(merchant)
        await conn.execute("INSERT INTO system_accounts VALUES ($1, $2, $3)", tenant_id,
                           purpose, merchant)
    return created


async def ensure_admin_terminal(conn: asyncpg.Connection, emit: Any) -> int:
    """The site's admin terminal (kind admin), registered once; its id."""
    from admin_api._store import next_id
    from protocols.changes import TerminalUpserted

    tid = await conn.fetchval("SELECT id FROM terminals WHERE kind = $1 ORDER BY id LIMIT 1",
                              ADMIN_TERMINAL_KIND)
    if tid is not None:
        return int(tid)
    merchant = await conn.fetchval("SELECT merchant_id FROM system_accounts"
                                   " WHERE purpose = 'cash_desk' ORDER BY tenant_id LIMIT 1")
    if merchant is None:
        raise Problem(409, "no-system-account", "no tenant has a cash desk yet")
    tid = await next_id(conn, "terminals", 2**31 - 1)
    await conn.execute("INSERT INTO terminals (id, merchant_id, kind, name) VALUES"
                       " ($1, $2, $3, 'admin API')", tid, merchant, ADMIN_TERMINAL_KIND)
    emit(TerminalUpserted(tid, merchant, ADMIN_TERMINAL_KIND, 1, True))
    return int(tid)
