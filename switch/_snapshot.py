"""A checkpoint's snapshot of the balance cache, taken in a forked child (issue 14).

Taking the snapshot (tens of MB of idempotency windows at a thousand terminals) and the balance
columns (three lists of a million ints at a million accounts) held the event loop for 50-340
ms on every checkpoint: every request in flight waited as long, once a minute. A forked child
sees the cache exactly as it was at the fork, copy-on-write, while the parent goes on deciding;
it writes the snapshot into a pipe and exits. The parent holds the loop only for the fork
itself (page tables: a few ms for a few hundred MB) and reads the pipe from a thread.

The child only runs the ledger's own code and writes to the pipe, then leaves with os._exit:
no event loop, no logging, no connection of the parent's is touched. If fork fails (no memory,
a platform without fork) the snapshot is taken in-process, as before.
"""

from __future__ import annotations

import array
import asyncio
import os
import signal
import struct
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ledger_ext import Ledger

_HEADER = struct.Struct("<4q")  # state bytes, accounts, merchants, total_fen
_READ_CHUNK = 1 << 20


class SnapshotError(Exception):
    """The forked child did not deliver a whole snapshot."""


class Snapshot(NamedTuple):
    """What a checkpoint stores, all of one state of the cache (lsn is the caller's)."""

    state: bytes | memoryview
    account_ids: Sequence[int]
    main_fen: Sequence[int]
    subsidy_fen: Sequence[int]
    merchants: list[tuple[int, int]]
    total_fen: int


def take_in_process(ledger: Ledger) -> Snapshot:
    """The snapshot on this thread: holds the event loop for as long as it takes."""
    state = ledger.snapshot()
    account_ids, main, subsidy = ledger.balance_columns()
    return Snapshot(state, account_ids, main, subsidy, ledger.merchant_balances(),
                    ledger.total_fen())


def _child(ledger: Ledger, w: int) -> None:
    """In the forked child: the snapshot into the pipe, as the header, the state, then the
    balance columns and the merchants as native int64 arrays."""
    snap = take_in_process(ledger)
    flat = array.array("q")
    for merchant_id, balance in snap.merchants:
        flat.append(merchant_id)
        flat.append(balance)
    parts = [
        _HEADER.pack(len(snap.state), len(snap.account_ids), len(snap.merchants),
                     snap.total_fen),
        snap.state,
        array.array("q", snap.account_ids).tobytes(),
        array.array("q", snap.main_fen).tobytes(),
        array.array("q", snap.subsidy_fen).tobytes(),
        flat.tobytes(),
    ]
    for part in parts:
        view = memoryview(part)
        while view:
            view = view[os.write(w, view[:_READ_CHUNK]):]


def _read_exactly(fd: int, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = os.readv(fd, [view[got:got + _READ_CHUNK]])
        if k == 0:
            raise SnapshotError(f"the snapshot child ended after {got} of {n} bytes")
        got += k
    return buf


def _read_snapshot(fd: int) -> Snapshot:
    """In a worker thread: the child's output, parsed (os.readv releases the GIL)."""
    state_len, accounts, merchants, total = _HEADER.unpack(_read_exactly(fd, _HEADER.size))
    state = _read_exactly(fd, state_len)
    columns = []
    for _ in range(3):
        col = array.array("q")
        col.frombytes(_read_exactly(fd, 8 * accounts))
        columns.append(col)
    flat = array.array("q")
    flat.frombytes(_read_exactly(fd, 16 * merchants))
    if os.read(fd, 1):
        raise SnapshotError("the snapshot child wrote more than it announced")
    pairs = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
    return Snapshot(memoryview(state).toreadonly(), columns[0], columns[1], columns[2], pairs,
                    total)


def fork(ledger: Ledger) -> tuple[int, int] | None:
    """Fork a child that writes the snapshot of the cache as it is now into a pipe; returns
    (pid, read end), or None when fork failed (take the snapshot in-process then). Nothing
    may change the cache between the caller's reading of its lsn and this call."""
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return None
    if pid == 0:  # the child: nothing of the parent's but the ledger and the pipe
        code = 1
        try:
            # A signal meant for the switch must not reach its loop through the wakeup fd
            # this child shares with it.
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            os.close(r)
            _child(ledger, w)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


async def receive(child: tuple[int, int]) -> Snapshot:
    """The snapshot from the child `fork` started, read in a worker thread while this loop
    goes on serving; SnapshotError if the child did not deliver all of it."""
    pid, r = child
    loop = asyncio.get_running_loop()
    try:
        snap = await loop.run_in_executor(None, _read_snapshot, r)
    finally:
        os.close(r)
        _, status = await loop.run_in_executor(None, os.waitpid, pid, 0)
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        raise SnapshotError(f"the snapshot child ended with status {status}")
    return snap
