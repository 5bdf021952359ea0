"""Pieces the demo, the benchmark and the tests share: a fresh database on a server, and the
switch as a real child process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from migrations import apply_migrations

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_fast(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on uvloop: the load generator shares the cores with the switch and
    PostgreSQL, and the default loop's pure-Python transports cost it a third of its CPU."""
    import uvloop

    return uvloop.run(coro)


def write_ready_file(path: str, address: tuple[str, int]) -> None:
    """{host, port, pid} as JSON at `path`, whole or not at all: what SwitchProcess waits for."""
    with open(path + ".tmp", "w") as f:
        json.dump({"host": address[0], "port": address[1], "pid": os.getpid()}, f)
    os.replace(path + ".tmp", path)


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


async def fresh_database(admin_dsn: str, name: str) -> str:
    """Drop and create database `name`, apply migrations, return its DSN."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = with_database(admin_dsn, name)
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    return dsn


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU process `pid` has used so far (Linux /proc; 0.0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SwitchProcess:
    """`onecard switch` as a child process on a free port."""

    module = "onecard"
    """What runs: `python -m <module> <command> --ready-file PATH <args>`."""

    def __init__(self, dsn: str, master_secret_hex: str, *, extra_env: dict[str, str] | None = None,
                 log_path: Path | None = None, args: list[str] | None = None,
                 own_session: bool = False) -> None:
        """own_session: start it in a session (and process group) of its own, so that a Ctrl-C
        typed at the terminal, which goes to the whole foreground process group, does not
        stop it behind its parent's back; the parent stops it with stop()."""
        self.dsn = dsn
        self.master_secret_hex = master_secret_hex
        self.extra_env = extra_env or {}
        self.args = args or []
        self.own_session = own_session
        self._dir = tempfile.mkdtemp(prefix="onecard-switch-")
        self.ready_file = os.path.join(self._dir, "ready.json")
        self.log_path = log_path or Path(self._dir) / "switch.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.host = "127.0.0.1"
        self.port = 0

    def start(self, ready_deadline_seconds: float = 120.0) -> SwitchProcess:
        return self._start(["switch"], ready_deadline_seconds)

    def _start(self, command: list[str], ready_deadline_seconds: float) -> SwitchProcess:
        if os.path.exists(self.ready_file):
            os.unlink(self.ready_file)
        env = dict(os.environ)
        env.update(
            ONECARD_DSN=self.dsn,
            ONECARD_MASTER_SECRET=self.master_secret_hex,
            ONECARD_PORT="0",
            ONECARD_HOST="127.0.0.1",
        )
        env.update(self.extra_env)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, *command, "--ready-file", self.ready_file,
             *self.args],
            env=env,
            stdout=self._log,
            stderr=self._log,
            start_new_session=self.own_session,
        )
        name = " ".join([self.module, *command])
        deadline = time.monotonic() + ready_deadline_seconds
        while not os.path.exists(self.ready_file):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {self.proc.returncode} before it was ready:\n"
                    + self.log_tail()
                )
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"{name} not ready in time:\n" + self.log_tail())
            time.sleep(0.05)
        with open(self.ready_file) as f:
            info = json.load(f)
        self.host, self.port = info["host"], info["port"]
        return self

    def cpu_seconds(self) -> float:
        """User + system CPU the switch process has used so far (Linux /proc)."""
        assert self.proc is not None
        return process_cpu_seconds(self.proc.pid)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, deadline_seconds: float = 60.0) -> int:
        """SIGTERM: drain, final checkpoint, exit. Returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(deadline_seconds)

    def kill(self) -> None:
        """SIGKILL: the crash a power cut would be."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.wait(30)

    def wait(self, deadline_seconds: float) -> int:
        assert self.proc is not None
        try:
            code = self.proc.wait(deadline_seconds)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(30)
        self._log.close()
        return code


class AdminProcess(SwitchProcess):
    """`onecard admin` (the admin HTTP API) as a child process on a free port."""

    def start(self, ready_deadline_seconds: float = 60.0) -> AdminProcess:
        env_extra = {"ONECARD_ADMIN_PORT": "0", "ONECARD_ADMIN_HOST": "127.0.0.1"}
        self.extra_env = {**env_extra, **self.extra_env}
        return self._start(["admin"], ready_deadline_seconds)  # type: ignore[return-value]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class AdmsProcess(SwitchProcess):
    """`onecard adms` (the ZKTeco ADMS push edge) as a child process on a free port."""

    def start(self, ready_deadline_seconds: float = 60.0) -> AdmsProcess:
        self.extra_env = {"ONECARD_ADMS_PORT": "0", "ONECARD_ADMS_HOST": "127.0.0.1",
                          **self.extra_env}
        return self._start(["adms"], ready_deadline_seconds)  # type: ignore[return-value]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
