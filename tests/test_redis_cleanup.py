"""A test run leaves nothing in the system Redis: the change-feed stream of each of its
databases (`onecard:changes:<database>`, made by the switches the tests start) is deleted when
the run ends (tests/conftest.py, `pg_server`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

from onecard.demo import configured_redis_url

_INNER = '''
import asyncio, os, time
import asyncpg, redis
from onecard.demo import configured_redis_url
from switch._outbox import STREAM_KEY_PREFIX
from tests.change_writer import set_account_status

def test_a_switch_publishes_a_change(site):
    async def lose() -> None:
        conn = await asyncpg.connect(site.dsn)
        try:
            await set_account_status(conn, 1, 2)
        finally:
            await conn.close()

    asyncio.run(lose())
    key = STREAM_KEY_PREFIX + site.dsn.rsplit("/", 1)[1]
    client = redis.Redis.from_url(configured_redis_url())
    deadline = time.monotonic() + 60
    while not client.exists(key):
        assert time.monotonic() < deadline, "the switch did not publish the change"
        time.sleep(0.05)
    with open(os.environ["STREAM_KEY_FILE"], "a") as f:
        f.write(key + "\\n")
'''


def test_a_run_removes_the_streams_its_switches_made(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(_INNER)
    keys_file = tmp_path / "keys.txt"
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p",
         "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py")],
        cwd=root, capture_output=True, text=True, timeout=300,
        env={**os.environ, "STREAM_KEY_FILE": str(keys_file)})
    assert run.returncode == 0, run.stdout + run.stderr
    [key] = keys_file.read_text().split()  # it existed while the run went on
    client = redis.Redis.from_url(configured_redis_url())
    try:
        assert not client.exists(key), f"{key} was left in Redis"
    finally:
        client.close()
