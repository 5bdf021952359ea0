from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from migrations import apply_migrations
from onecard.demo import configured_redis_url
from onecard.privateredis import remove_keys
from switch._access_journal import ALARMS_STREAM_PREFIX
from switch._outbox import STREAM_KEY_PREFIX
from tests.console_browser import browser, shots  # noqa: F401  (the console's browser tests)
from tests.pg import TestServer
from tests.switch_site import Site


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TestServer]:
    server = TestServer()
    try:
        yield server
    finally:
        try:
            server.close()
        finally:
            remove_streams(server.databases)


def remove_streams(databases: list[str]) -> None:
    """Delete the change-feed streams the switches of this run made in the system Redis: one
    per test database (`onecard:changes:<database>`, names unique to the run)."""
    remove_keys(configured_redis_url(), [STREAM_KEY_PREFIX + name for name in databases]
                + [ALARMS_STREAM_PREFIX + name for name in databases])


@pytest.fixture(scope="session")
def migrated_template(pg_server: TestServer) -> str:
    """A database with the schema applied, used as the template of per-test databases."""
    dsn = pg_server.new_database()

    async def migrate() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()

    asyncio.run(migrate())
    return dsn.rsplit("/", 1)[1]


@pytest.fixture
def db_dsn(pg_server: TestServer, migrated_template: str) -> str:
    """A fresh, migrated database of its own for one test."""
    return pg_server.new_database(template=migrated_template)


@pytest.fixture
def empty_db_dsn(pg_server: TestServer) -> str:
    return pg_server.new_database()


@pytest.fixture
def site(db_dsn: str) -> Iterator[Site]:
    """The default seeded site (300 cardholders, 10 POS) with its switch running."""
    s = Site(db_dsn)
    s.start()
    try:
        yield s
    finally:
        if s.switch is not None:
            s.switch.stop()
