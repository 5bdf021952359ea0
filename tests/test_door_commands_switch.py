"""The switch's door command bookkeeping (switch/_door_commands.py) on its own: a stand-in
runtime (readers, sessions, the journal's access batch) and no sockets, for what the end to
end tests in tests/test_door_commands.py cannot make happen on purpose: a process's mode-hold
ids, an ack from the wrong terminal, an Error whose txn_seq is a request's, a recovery round
with commands still waiting, and the reader index.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from protocols import ocp
from switch import limits
from switch._access import Door, Reader
from switch._door_commands import DoorCommands

A = ocp.DoorCommandAction
RC = ocp.ResponseCode


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    warning = info


class Session:
    def __init__(self, terminal_id: int) -> None:
        self.terminal_id = terminal_id
        self.closed = False
        self.is_door = True
        self.sent: list[ocp.DoorCommand] = []

    def send_door_command(self, msg: ocp.DoorCommand) -> bool:
        self.sent.append(msg)
        return True


class Journal:
    def __init__(self) -> None:
        self.access_batch = SimpleNamespace(commands={})

    def wake_access(self) -> None:
        pass


def door(door_id: int, mode: int = 0, tenant_id: int = 1) -> Door:
    return Door(door_id=door_id, tenant_id=tenant_id, area_id=1, areas=(1,), apb=0,
                apb_seconds=0, elevator=False, all_floors=0, mode=mode, mode_time_zone=None,
                multi_card_count=0, multi_card_window_s=0, open_ms=4000, interlocked=(),
                by_person={}, by_node={}, by_class={})


def runtime(readers: dict[tuple[int, int], Reader]) -> Any:
    doors = {r.door.door_id: r.door for r in readers.values()}
    return SimpleNamespace(
        log=Log(), sessions={}, journal=Journal(),
        access=SimpleNamespace(readers=readers,
                               tenants={1: SimpleNamespace(doors=doors)}))


def test_each_process_starts_its_mode_hold_ids_at_a_random_place() -> None:
    starts = {DoorCommands(runtime({}))._next_sync_id for _ in range(20)}
    assert len(starts) > 15, "a switch restart must not begin at the same id"
    assert all(limits.DOOR_MODE_SYNC_ID_BOTTOM <= s <= limits.DOOR_MODE_SYNC_ID_TOP
               for s in starts)
