"""The switch's error tree. Declines are results, not exceptions."""

import asyncpg


class SwitchError(Exception):
    """Root of every error the switch raises on purpose."""


class ConfigError(SwitchError):
    """A setting is missing or wrong; the message names the setting."""


class JournalError(SwitchError):
    """A group commit failed; nothing in its batch was acknowledged."""


class RecoveryError(SwitchError):
    """The state in PostgreSQL cannot be loaded (schema, checkpoint or journal is not sound)."""


DATABASE_FAILURES: tuple[type[Exception], ...] = (
    # Refused, reset or unreachable; TimeoutError (a deadline ran out) is an OSError too.
    OSError,
    # What the server said, ConnectionDoesNotExistError (ended mid-query) among them.
    asyncpg.PostgresError,
    # A connection that is already closed: "cannot call Transaction.__aexit__()" and the like.
    asyncpg.InterfaceError,
    # The driver's protocol state after a connection broke mid-operation.
    asyncpg.InternalClientError,
)
"""What a call to PostgreSQL raises when the database or the connection to it fails (a backend
ended by pg_terminate_backend or a restart, a network fault). Every place that calls PostgreSQL
catches exactly these, and nothing else: any other exception is a bug."""
