"""The one home of the OneCard database schema, shared by `switch/` and `admin_api/`.

Migrations are numbered SQL files in `migrations/sql/` (`NNNN_name.sql`), applied in order, each
in its own transaction, under an advisory lock so two processes never race. Applied versions are
recorded in `schema_migrations`. A file, once released, is never edited: a change is a new file.
"""

from migrations._runner import (
    SCHEMA_VERSION,
    Migration,
    MigrationError,
    apply_migrations,
    available_migrations,
    check_schema,
    schema_version,
)

__all__ = [
    "SCHEMA_VERSION",
    "Migration",
    "MigrationError",
    "apply_migrations",
    "available_migrations",
    "check_schema",
    "schema_version",
]
