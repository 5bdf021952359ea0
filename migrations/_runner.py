"""Apply the numbered SQL migrations to a PostgreSQL database (asyncpg)."""

from __future__ import annotations

import re
from importlib import resources
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    import asyncpg

# Any constant key works, as long as every process that migrates uses the same one.
ADVISORY_LOCK_KEY = 0x0C_A2D_0001
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The schema cannot be brought to (or is not at) the version this code expects."""


class Migration(msgspec.Struct, frozen=True):
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("migrations").joinpath("sql").iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration files must be numbered 1..n without gaps: {versions}")
    return found


SCHEMA_VERSION = len(available_migrations())


async def schema_version(conn: asyncpg.Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def apply_migrations(conn: asyncpg.Connection) -> list[Migration]:
    """Bring the database to SCHEMA_VERSION; return the migrations applied now."""
    applied = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", ADVISORY_LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await schema_version(conn)
        if current > SCHEMA_VERSION:
            raise MigrationError(
                f"database schema is at version {current}, newer than this code "
                f"({SCHEMA_VERSION}); upgrade the code"
            )
        for migration in available_migrations()[current:]:
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied.append(migration)
    return applied


async def check_schema(conn: asyncpg.Connection) -> None:
    """Raise MigrationError unless the database is at exactly SCHEMA_VERSION."""
    current = await schema_version(conn)
    if current != SCHEMA_VERSION:
        raise MigrationError(
            f"database schema is at version {current}, this code needs {SCHEMA_VERSION}: "
            "run `onecard migrate`"
        )
