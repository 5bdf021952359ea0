"""The conventional design: the benchmark's baseline, a small OCP server of its own.

`onecard bench` compares the switch with how a typical one-card server works: the same protocol
(OCP through `protocols.ocp.Connection`: the same sign-on, keys and MACs, so the same load
generator drives both), but each purchase is its own task and its own SQL transaction through
an asyncpg pool: UPDATE the balance row, INSERT the journal row, COMMIT, answer. It keeps no
limits, no double entry and no idempotency beyond the journal's unique key, and writes to
tables of its own (`conv_balances`, `conv_journal`, the same columns and indexes as `journal`,
made by SETUP_SQL), so the real journal never sees its rows. It is not part of the switch.

    python -m onecard.conventional --pool-size 16 --ready-file PATH

reads ONECARD_DSN, ONECARD_MASTER_SECRET (hex), ONECARD_HOST and ONECARD_PORT (0: any free
port), writes {host, port, pid} to the ready file once it listens, and stops on SIGTERM. The
bench starts it as a child process (ConventionalProcess), like the switch, so that it does not
share the generator's process. Purchases, heartbeats and sign-off are served; every other
request is refused with UNEXPECTED_MESSAGE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from typing import Any

import asyncpg

from onecard.harness import SwitchProcess, run_fast, write_ready_file
from protocols import ocp

SETUP_SQL = """
CREATE TABLE IF NOT EXISTS conv_balances (
    account_id integer PRIMARY KEY, main_fen bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS conv_journal (LIKE journal INCLUDING ALL);
CREATE SEQUENCE IF NOT EXISTS conv_lsn;
"""

UPDATE_SQL = (
    "UPDATE conv_balances SET main_fen = main_fen - $2 WHERE account_id = $1 AND main_fen >= $2"
    " RETURNING main_fen"
)
INSERT_SQL = (
    "INSERT INTO conv_journal (lsn, kind, code, terminal_id, txn_seq, ref_txn_seq, card_no,"
    " account_id, merchant_id, tenant_id, merchant_tenant_id, amount_fen, main_delta_fen,"
    " subsidy_delta_fen, merchant_delta_fen, held_delta_fen, main_fen, subsidy_fen, expires_s,"
    " now_s) VALUES (nextval('conv_lsn'), 1, $1, $2, $3, 0, $4, $5, $6, 1, 1, $7, $8, 0, $9, 0,"
    " $10, 0, 0, $11)"
)
TERMINAL_ENABLED = 0
HEARTBEAT_INTERVAL_S = 30
_RC = ocp.ResponseCode


class ConventionalServer:
    """Terminals (id -> (merchant id, key)), cards (card_no -> account id), the pool, and one
    task per purchase in flight."""

    def __init__(self, pool: asyncpg.Pool, master: bytes, terminals: list[Any],
                 cards: dict[int, int]) -> None:
        self.pool = pool
        self.terminals = {
            r["id"]: (r["merchant_id"], ocp.derive_terminal_key(master, r["id"], r["key_version"]))
            for r in terminals if r["status"] == TERMINAL_ENABLED
        }
        self.cards = cards
        self.tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def create(cls, dsn: str, master: bytes, pool_size: int) -> ConventionalServer:
        pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
        async with pool.acquire() as conn:
            terminals = await conn.fetch(
                "SELECT id, merchant_id, key_version, status FROM terminals")
            cards = {r[0]: r[1] for r in await conn.fetch("SELECT card_no, account_id FROM cards")}
        return cls(pool, master, terminals, cards)

    def submit(self, session: _Session, ev: ocp.Purchase) -> None:
        """A task per request: what the conventional design does."""
        task = asyncio.get_running_loop().create_task(self._purchase(session, ev))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _purchase(self, session: _Session, ev: ocp.Purchase) -> None:
        account = self.cards.get(ev.card_no, 0)
        amount = ev.amount_fen
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                balance = await conn.fetchval(UPDATE_SQL, account, amount) if account else None
                code = _RC.APPROVED if balance is not None else (
                    _RC.INSUFFICIENT_FUNDS if account else _RC.UNKNOWN_CARD)
                await conn.execute(
                    INSERT_SQL, code, session.terminal_id, ev.txn_seq, ev.card_no, account,
                    session.merchant_id, amount, -amount if code == 0 else 0,
                    amount if code == 0 else 0, balance or 0, int(time.time()),
                )
        except (OSError, asyncpg.PostgresError):
            # Not committed: the terminal retries with the same txn_seq.
            session.send(ocp.Error(_RC.SYSTEM_ERROR, ev.txn_seq, "retry with the same txn_seq"))
            return
        balance = balance or 0
        session.send(ocp.PurchaseResult(ev.txn_seq, code, amount if code == 0 else 0, balance,
                                        balance, 0))

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await self.pool.close()


class _Session(asyncio.Protocol):
    """One terminal connection: sign-on, then purchases handed to the server."""

    def __init__(self, server: ConventionalServer) -> None:
        self._server = server
        self._conn = ocp.Connection(ocp.Role.SWITCH)
        self._transport: asyncio.Transport | None = None
        self._pending = 0
        self.terminal_id = 0
        self.merchant_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def send(self, msg: ocp.Message) -> None:
        if self._transport is not None:
            self._transport.write(self._conn.send(msg))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        conn.receive_data(data)
        while True:
            try:
                ev = conn.next_event()
            except ocp.OcpRemoteError as exc:
                with contextlib.suppress(ocp.OcpError):
                    self.send(ocp.Error(exc.response_code, exc.txn_seq, str(exc)[:200]))
                if exc.closes_connection:
                    self.close()
                    return
                continue
            if ev is ocp.NEED_DATA:
                return
            if ev is ocp.CLOSED or isinstance(ev, ocp.SignOff):
                self.close()
                return
            if isinstance(ev, ocp.Purchase):
                self._server.submit(self, ev)
            elif isinstance(ev, ocp.SignOn):
                self._sign_on(ev)
            elif isinstance(ev, ocp.SignOnConfirm):
                self.terminal_id, self.merchant_id = self._pending, self._server.terminals[
                    self._pending][0]
                self.send(ocp.SignOnResult(_RC.APPROVED, int(time.time() * 1000), 0,
                                           HEARTBEAT_INTERVAL_S))
            elif isinstance(ev, ocp.Heartbeat):
                self.send(ocp.HeartbeatAck(int(time.time() * 1000)))
            elif not isinstance(ev, ocp.Error):
                self.send(ocp.Error(_RC.UNEXPECTED_MESSAGE, getattr(ev, "txn_seq", 0),
                                    "the conventional baseline serves purchases only"))

    def _sign_on(self, ev: ocp.SignOn) -> None:
        terminal = self._server.terminals.get(ev.terminal_id)
        if terminal is None:
            self.send(ocp.Error(_RC.UNKNOWN_TERMINAL, 0, "terminal cannot sign on"))
            self.close()
            return
        self._pending = ev.terminal_id
        assert self._transport is not None
        self._transport.write(self._conn.accept_sign_on(terminal[1], os.urandom(16)))


async def serve(dsn: str, master: bytes, host: str, port: int, pool_size: int,
                ready_file: str | None) -> None:
    """Serve until SIGTERM or SIGINT."""
    server = await ConventionalServer.create(dsn, master, pool_size)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: _Session(server), host, port, backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready_file:
        write_ready_file(ready_file, listener.sockets[0].getsockname()[:2])
    try:
        await stop.wait()
    finally:
        listener.close()
        await server.close()


class ConventionalProcess(SwitchProcess):
    """`python -m onecard.conventional` as a child process on a free port."""

    module = "onecard.conventional"

    def start(self, ready_deadline_seconds: float = 120.0) -> ConventionalProcess:
        return self._start([], ready_deadline_seconds)  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onecard.conventional",
                                     description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pool-size", type=int, default=16, help="asyncpg pool size")
    parser.add_argument("--ready-file", help="write {host, port, pid} as JSON here once listening")
    args = parser.parse_args(argv)
    env = os.environ
    run_fast(serve(env["ONECARD_DSN"], bytes.fromhex(env["ONECARD_MASTER_SECRET"]),
                   env.get("ONECARD_HOST", "127.0.0.1"), int(env.get("ONECARD_PORT", "0")),
                   args.pool_size, args.ready_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
