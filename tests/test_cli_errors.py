"""Every command says what stops it in one line on stderr, with a non-zero exit code, never a
traceback (docs/operations.md, "When it cannot start"). Real processes, a real PostgreSQL."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.pg import with_database
from tests.switch_site import free_port

if TYPE_CHECKING:
    from tests.pg import TestServer

SECRET = "ab" * 32


def onecard(*args: str, env: dict[str, str] | None = None, seconds: float = 120
            ) -> tuple[int, list[str]]:
    """Run `onecard ARGS`; its exit code and its stderr's lines."""
    done = subprocess.run([sys.executable, "-m", "onecard", *args], env=_env(env),
                          capture_output=True, text=True, timeout=seconds)
    return done.returncode, done.stderr.splitlines()


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without the ONECARD_ settings of whoever runs the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECARD_")}
    return {**env, "ONECARD_MASTER_SECRET": SECRET,
            "ONECARD_ADMIN_PASSWORD": "a long enough password", **(extra or {})}


def one_line(code: int, lines: list[str], command: str) -> str:
    assert code == 1, (code, lines)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"onecard {command}: "), lines
    return lines[0]


@pytest.fixture
def missing_db_dsn(pg_server: TestServer) -> str:
    return with_database(pg_server.admin_dsn, "onecard_no_such_database")


@pytest.fixture
def refused_dsn() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/onecard"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as s:
        yield s.getsockname()[1]


DATABASE_COMMANDS = [
    ["migrate"],
    ["admin-init"],
    ["admin", "--port", "0"],
    ["switch", "--port", "0"],
    ["demo", "--seconds", "1"],
    ["bench", "--seconds", "1", "--skip-conventional"],
]


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=lambda c: c[0])
def test_a_database_that_does_not_exist(command: list[str], missing_db_dsn: str) -> None:
    # (demo and bench take a server's DSN and make a database of their own on it)
    line = one_line(*onecard(*command, "--dsn", missing_db_dsn), command[0])
    assert 'database "onecard_no_such_database" does not exist' in line


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=lambda c: c[0])
def test_a_wrong_dsn(command: list[str], pg_server: TestServer) -> None:
    wrong_user = pg_server.admin_dsn.replace("postgres@", "no_such_role@", 1)
    line = one_line(*onecard(*command, "--dsn", wrong_user), command[0])
    assert 'role "no_such_role" does not exist' in line


@pytest.mark.parametrize("command", [c for c in DATABASE_COMMANDS if c[0] != "switch"],
                         ids=lambda c: c[0])
def test_nothing_answers_at_the_dsn(command: list[str], refused_dsn: str) -> None:
    line = one_line(*onecard(*command, "--dsn", refused_dsn), command[0])
    assert re.search("Connect call failed|Connection refused", line) and refused_dsn in line


@pytest.mark.parametrize("command", [["admin-init"], ["admin", "--port", "0"],
                                     ["switch", "--port", "0"]], ids=lambda c: c[0])
def test_a_database_not_migrated(command: list[str], empty_db_dsn: str) -> None:
    line = one_line(*onecard(*command, "--dsn", empty_db_dsn), command[0])
    assert "database schema is at version 0" in line and "run `onecard migrate`" in line


@pytest.mark.parametrize(("command", "what"), [
    (["switch", "--port", "{port}"], "(port)"),
    (["switch", "--port", "0", "--metrics-port", "{port}"], "(metrics_port)"),
    (["admin", "--port", "{port}"], "(admin port)"),
], ids=["switch", "switch-metrics", "admin"])
def test_a_port_in_use(command: list[str], what: str, db_dsn: str, busy_port: int) -> None:
    args = [a.format(port=busy_port) for a in command]
    line = one_line(*onecard(*args, "--dsn", db_dsn), command[0])
    assert line.endswith(f"cannot listen on 127.0.0.1:{busy_port} {what}: the port is in use "
                         "(another process listens there)"), line


def test_a_wrong_type_in_the_file_names_the_file(tmp_path: Path, db_dsn: str) -> None:
    f = tmp_path / "onecard.toml"
    f.write_text('[switch]\nport = "seventy"\n')
    code, lines = onecard("switch", "--config", str(f), "--dsn", db_dsn)
    assert (code, lines) == (2, [f"onecard switch: setting port ([switch] of {f}): "
                                 "Expected `int`, got `str`"])


def test_an_unknown_table_is_refused(tmp_path: Path, db_dsn: str) -> None:
    f = tmp_path / "onecard.toml"
    f.write_text('[swtich]\nport = 7000\n')
    code, lines = onecard("switch", "--config", str(f), "--dsn", db_dsn)
    assert code == 2 and len(lines) == 1 and "unknown table or key 'swtich'" in lines[0], lines


def test_the_switch_retries_a_database_that_does_not_answer_and_says_so(refused_dsn: str
                                                                         ) -> None:
    """Not answering may be a restart: the switch waits 1, 2, 4 ... s (at most 30) and logs
    each try; SIGTERM still stops it at once."""
    proc = subprocess.Popen([sys.executable, "-m", "onecard", "switch", "--port", "0"],
                            env=_env({"ONECARD_DSN": refused_dsn}), stderr=subprocess.PIPE,
                            text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr or ()],
                     daemon=True).start()
    try:
        tries = []
        deadline = time.monotonic() + 60
        while len(tries) < 3:
            event = json.loads(lines.get(timeout=max(0.0, deadline - time.monotonic())))
            if event["event"] == "switch.database_unavailable":
                tries.append(event)
        assert [t["retry_in_seconds"] for t in tries] == [1.0, 2.0, 4.0]
        assert re.search("Connect call failed|Connection refused", tries[0]["error"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()


def test_the_admin_settings_file_is_checked_the_same_way(tmp_path: Path, db_dsn: str) -> None:
    f = tmp_path / "onecard.toml"
    f.write_text('[admin]\nport = "eighty"\n')
    code, lines = onecard("admin", "--config", str(f), "--dsn", db_dsn)
    assert (code, lines) == (2, [f"onecard admin: setting port ([admin] of {f}): "
                                 "Expected `int`, got `str`"])
    f.write_text('[amdin]\nport = 8080\n')
    code, lines = onecard("admin", "--config", str(f), "--dsn", db_dsn)
    assert code == 2 and len(lines) == 1 and "unknown table or key 'amdin'" in lines[0], lines
