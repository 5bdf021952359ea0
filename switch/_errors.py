"""The switch's error tree. Declines are results, not exceptions."""

from __future__ import annotations

import errno
import socket

import asyncpg


class SwitchError(Exception):
    """Root of every error the switch raises on purpose."""


class ConfigError(SwitchError):
    """A setting is missing or wrong; the message names the setting."""


class JournalError(SwitchError):
    """A group commit failed; nothing in its batch was acknowledged."""


class RecoveryError(SwitchError):
    """The state in PostgreSQL cannot be loaded (schema, checkpoint or journal is not sound)."""


class StartupError(SwitchError):
    """The switch cannot serve, and retrying would not change that: a port in use, a database
    that does not exist or refuses us, a schema at another version, another switch owning the
    site's journal. The message is the one line an operator sees."""


class SiteLockLost(SwitchError):
    """The connection holding the site lock was lost, and the lock with it (switch/_site_lock.py):
    the switch stops answering until it holds the lock again."""


def is_transient(exc: BaseException) -> bool:
    """Whether retrying can fix a failure of the database or of the way to it: a connection
    refused, reset or timed out, or dropped mid-operation; a server starting, shutting down or
    out of connections (SQLSTATE classes 08, 53, 57). Anything else is permanent: a database
    that does not exist, a role or password refused, a malformed DSN, a host name that does
    not resolve, a missing table or privilege."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc.sqlstate)[:2] in ("08", "53", "57")
    if isinstance(exc, asyncpg.ClientConfigurationError):  # a malformed DSN
        return False
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.InternalClientError)):
        return True  # the connection went away mid-operation
    return isinstance(exc, OSError) and not isinstance(exc, socket.gaierror)


def listen_failure(exc: OSError, what: str, host: str, port: int) -> StartupError:
    """One line for a port the switch cannot listen on."""
    reason = _LISTEN_REASONS.get(exc.errno or 0) or " ".join(str(exc).split())
    return StartupError(f"cannot listen on {host}:{port} ({what}): {reason}")


_LISTEN_REASONS = {
    errno.EADDRINUSE: "the port is in use (another process listens there)",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.EADDRNOTAVAIL: "this machine has no such address",
}
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
