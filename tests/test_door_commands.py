"""Door commands end to end (issue 13): the security desk opens or locks a door remotely.

A real admin API and switch process, real TCP, PostgreSQL and Redis (the change feed carries
the command to the switch). Door terminals are the test's own OCP clients driven by the
simulator's DoorControl (terminals_sim), as a door controller would be:

- a door online: open_once through the API reaches it as DoorCommand with its reader and
  open_ms, the ack makes the command 'done', and the command is audited;
- a door offline: 'offline', and when it signs on later it does not get the command;
- a door that does not implement tag 36 answers UNKNOWN_MESSAGE: 'unsupported', and its
  connection stays open; a door that never answers: 'expired', a late ack changes nothing;
- a till never gets a command, and its DoorCommandAck is refused NOT_PERMITTED;
- reception may not (403); a door of another park is not found (404); bad bodies are 400 and
  leave no row and no outbox entry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio

from onecard.harness import free_port
from onecard.seed import CANTEEN_FREE
from protocols import ocp
from terminals_sim import DoorControl, DoorTerminal
from tests.admin_site import PASSWORD, AdminSite
from tests.ocp_client import OcpClient
from tests.switch_site import FREE_CANTEEN_TERMINAL

RC = ocp.ResponseCode


def wait_for(check: Callable[[], Any], *, seconds: float = 20.0, what: str = "") -> Any:
    """Poll `check` until it returns something true."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def desk(pg_server: Any, migrated_template: str) -> Iterator[dict[str, Any]]:
    site = AdminSite(pg_server.new_database(template=migrated_template))
    site.start(extra_env={"ONECARD_PORT": str(free_port())})
    site.start_admin()
    root = site.api()
    campus = site.tenant_node(1)
    terminals = {
        name: root.ok("POST", f"/merchants/{CANTEEN_FREE}/terminals",
                      {"kind": "door", "name": name})["terminal"]
        for name in ("main controller", "annex controller", "old controller",
                     "mute controller", "sim controller")
    }
    doors = {}
    for name, terminal, reader_no in (("Lobby", "main controller", 2),
                                      ("Annex", "annex controller", 1),
                                      ("Archive", "old controller", 1),
                                      ("Cellar", "mute controller", 1),
                                      ("Garden", "sim controller", 1)):
        door = root.ok("POST", "/access/doors", {"node_id": campus, "name": name,
                                                 "open_ms": 4000})
        root.ok("POST", "/access/readers", {"terminal_id": terminals[terminal]["id"],
                                            "reader_no": reader_no, "door_id": door["id"],
                                            "direction": "in"})
        doors[name] = door
    other_park = root.ok("POST", "/access/doors", {"node_id": site.tenant_node(2),
                                                   "name": "East gate"})
    root.ok("POST", "/users", {"username": "desk.officer", "password": PASSWORD,
                               "role": "security_desk", "node_id": campus})
    root.ok("POST", "/users", {"username": "front.desk", "password": PASSWORD,
                               "role": "reception", "node_id": campus})
    wait_readers_loaded(site, root, terminals["sim controller"]["id"], doors["Garden"]["id"])
    try:
        yield {"site": site, "root": root, "desk": site.api("desk.officer"),
               "reception": site.api("front.desk"), "terminals": terminals, "doors": doors,
               "other_park": other_park}
    finally:
        site.close()


def wait_readers_loaded(site: AdminSite, root: Any, terminal_id: int, door_id: int) -> None:
    """Until the switch has loaded the readers made above: it sends a command for the door
    of the reader made last (so every earlier one is loaded too) instead of finding it
    'offline'. A 'normal' to a door in mode normal changes nothing; the door acks it."""
    client = site.client(terminal_id)

    def probe() -> bool:
        cmd = root.ok("POST", f"/access/doors/{door_id}/commands", {"action": "normal"})

        def settled() -> Any:
            got = root.ok("GET", f"/access/door-commands/{cmd['id']}")
            return got if got["state"] != "pending" else None
        if wait_for(settled, what="a probe command settles")["state"] != "sent":
            return False  # 'offline' (or 'expired'): the rules are not loaded yet
        msg = client.next_message()
        assert isinstance(msg, ocp.DoorCommand) and msg.command_id == cmd["id"], msg
        client.send(ocp.DoorCommandAck(msg.command_id, 0))
        return True
    try:
        wait_for(probe, seconds=60, what="the switch loads the door readers")
    finally:
        client.close()


def door_client(desk: dict[str, Any], name: str) -> OcpClient:
    return desk["site"].client(desk["terminals"][name]["id"])


def command(desk: dict[str, Any], door: str, body: dict[str, Any]) -> dict[str, Any]:
    r = desk["desk"].post(f"/access/doors/{desk['doors'][door]['id']}/commands", body)
    assert r.status_code == 202, r.text
    out = r.json()
    assert out["state"] == "pending"
    return out  # type: ignore[no-any-return]


def state_becomes(desk: dict[str, Any], command_id: int, *states: str) -> dict[str, Any]:
    """Until the command is in one of `states`."""
    def check() -> Any:
        got = desk["desk"].ok("GET", f"/access/door-commands/{command_id}")
        return got if got["state"] in states else None
    return wait_for(check,  # type: ignore[no-any-return]
                    what=f"command {command_id} {' or '.join(states)}")


def heartbeat_is_next(client: OcpClient) -> None:
    """Nothing was queued for this terminal before a heartbeat's ack (no DoorCommand)."""
    client.send(ocp.Heartbeat(int(time.time() * 1000)))
    msg = client.next_message()
    assert isinstance(msg, ocp.HeartbeatAck), msg


def test_open_once_reaches_the_door_is_acked_done_and_audited(desk: dict[str, Any]) -> None:
    client = door_client(desk, "main controller")
    till = desk["site"].client(FREE_CANTEEN_TERMINAL)
    control = DoorControl(readers={2})
    try:
        cmd = command(desk, "Lobby", {"action": "open_once", "note": "courier at the door"})
        msg = client.next_message()
        assert msg == ocp.DoorCommand(cmd["id"], 2, ocp.DoorCommandAction.OPEN_ONCE, 4000)
        client.send(control.command(msg, now_ms=int(time.time() * 1000)))
        done = state_becomes(desk, cmd["id"], "done")
        assert done["ack_code"] == 0 and done["open_ms"] == 4000
        assert done["terminal_id"] == desk["terminals"]["main controller"]["id"]
        assert done["reader_no"] == 2
        assert control.opened and control.opened[0][0] == 2
        # An explicit open_ms, then hold locked (open_ms 0 on the wire) and normal.
        cmd2 = command(desk, "Lobby", {"action": "open_once", "open_ms": 12000})
        msg = client.next_message()
        assert (msg.command_id, msg.open_ms) == (cmd2["id"], 12000)
        client.send(control.command(msg))
        state_becomes(desk, cmd2["id"], "done")
        cmd3 = command(desk, "Lobby", {"action": "hold_locked"})
        msg = client.next_message()
        assert (msg.action, msg.open_ms) == (ocp.DoorCommandAction.HOLD_LOCKED, 0)
        client.send(control.command(msg))
        state_becomes(desk, cmd3["id"], "done")
        assert not control.may_open(2)
        # The audit row names who asked, what and why.
        [audit] = desk["site"].fetch(
            "SELECT * FROM audit_log WHERE action = 'access.door_command'"
            " AND after->>'id' = $1", str(cmd["id"]))
        assert audit["username"] == "desk.officer" and audit["entity"] == "door"
        assert audit["entity_id"] == str(desk["doors"]["Lobby"]["id"])
        listed = desk["desk"].ok("GET", f"/access/doors/{desk['doors']['Lobby']['id']}/commands"
                                 "?limit=2")
        assert [c["id"] for c in listed] == [cmd3["id"], cmd2["id"]]
        # A till never got one; its DoorCommandAck is refused with the command_id.
        heartbeat_is_next(till)
        till.send(ocp.DoorCommandAck(cmd["id"], 0))
        refusal = till.next_message()
        assert isinstance(refusal, ocp.Error) and refusal.code == RC.NOT_PERMITTED
        assert refusal.txn_seq == cmd["id"]
        heartbeat_is_next(till)
        assert desk["desk"].ok("GET", f"/access/door-commands/{cmd['id']}")["state"] == "done"
    finally:
        client.close()
        till.close()


def test_an_offline_door_is_not_sent_the_command_later(desk: dict[str, Any]) -> None:
    cmd = command(desk, "Annex", {"action": "open_once"})
    state_becomes(desk, cmd["id"], "offline")
    client = door_client(desk, "annex controller")
    try:
        # The switch settled the command (offline) before this sign-on: nothing is queued
        # for the door, before or after its first heartbeat.
        heartbeat_is_next(client)
        heartbeat_is_next(client)
        assert desk["desk"].ok("GET", f"/access/door-commands/{cmd['id']}")["state"] == "offline"
    finally:
        client.close()


def test_a_door_without_tag_36_makes_it_unsupported_and_stays_connected(
        desk: dict[str, Any]) -> None:
    client = door_client(desk, "old controller")
    try:
        cmd = command(desk, "Archive", {"action": "hold_open"})
        msg = client.next_message()
        assert isinstance(msg, ocp.DoorCommand) and msg.command_id == cmd["id"]
        # What an older door's codec says of a tag it does not know (rule 4.2.2).
        client.send(ocp.Error(RC.UNKNOWN_MESSAGE, cmd["id"], "unknown message tag 36"))
        got = state_becomes(desk, cmd["id"], "unsupported")
        assert got["ack_code"] == RC.UNKNOWN_MESSAGE
        heartbeat_is_next(client)
    finally:
        client.close()


def test_a_door_that_never_acks_expires_and_a_late_ack_changes_nothing(
        desk: dict[str, Any]) -> None:
    client = door_client(desk, "mute controller")
    try:
        cmd = command(desk, "Cellar", {"action": "open_once"})
        msg = client.next_message()
        assert isinstance(msg, ocp.DoorCommand)
        # 'sent' lasts only until the ack deadline (5 s): a slow poll may see 'expired' first.
        state_becomes(desk, cmd["id"], "sent", "expired")
        state_becomes(desk, cmd["id"], "expired")
        client.send(ocp.DoorCommandAck(cmd["id"], 0))
        heartbeat_is_next(client)  # ignored: no answer, connection open
        assert desk["desk"].ok("GET", f"/access/door-commands/{cmd['id']}")["state"] == "expired"
    finally:
        client.close()


def test_roles_parks_and_bad_bodies(desk: dict[str, Any]) -> None:
    lobby = desk["doors"]["Lobby"]["id"]

    def counts() -> tuple[int, int]:
        [row] = desk["site"].fetch(
            "SELECT (SELECT count(*) FROM door_commands) AS commands,"
            " (SELECT count(*) FROM change_outbox WHERE kind = 'door_command') AS events")
        return row["commands"], row["events"]

    before = counts()
    r = desk["reception"].post(f"/access/doors/{lobby}/commands", {"action": "open_once"})
    assert r.status_code == 403, r.text
    other = desk["other_park"]["id"]
    r = desk["desk"].post(f"/access/doors/{other}/commands", {"action": "open_once"})
    assert r.status_code == 404, r.text
    assert desk["desk"].get(f"/access/doors/{other}/commands").status_code == 404
    for body in ({"action": "explode"}, {}, {"action": "open_once", "open_ms": 999},
                 {"action": "open_once", "open_ms": 0},
                 {"action": "open_once", "open_ms": 30_001},
                 {"action": "hold_open", "open_ms": 2000},
                 {"action": "normal", "door": 1}, {"action": "open_once", "note": "x" * 501},
                 [1, 2]):
        r = desk["desk"].post(f"/access/doors/{lobby}/commands", body)
        assert r.status_code == 400, (body, r.status_code, r.text)
    assert desk["desk"].post("/access/doors/99999999/commands",
                             {"action": "normal"}).status_code == 404
    assert counts() == before
    # A command of another park is not found either.
    cmd = desk["root"].ok("POST", f"/access/doors/{other}/commands", {"action": "normal"})
    foreign = desk["desk"].get(f"/access/door-commands/{cmd['id']}")
    missing = desk["desk"].get("/access/door-commands/99999999")
    assert foreign.status_code == missing.status_code == 404
    # Byte for byte the same answer but for the id: no command id, no door id is learnt.
    assert (foreign.content.replace(str(cmd["id"]).encode(), b"N")
            == missing.content.replace(b"99999999", b"N")), (foreign.text, missing.text)
    assert desk["root"].ok("GET", f"/access/door-commands/{cmd['id']}")["door_id"] == other


def test_a_door_mode_of_free_or_locked_is_held_at_the_door(desk: dict[str, Any]) -> None:
    """Second part of issue 13: a door set to mode 'locked' (or 'free') is told to hold
    locked (open) at once, again at each sign-on of its terminal, and told NORMAL when its
    mode goes back; none of these is an operator's command (no door_commands row)."""
    annex = desk["doors"]["Annex"]["id"]
    root = desk["root"]
    [before] = desk["site"].fetch("SELECT count(*) AS n FROM door_commands WHERE door_id = $1",
                                  annex)
    client = door_client(desk, "annex controller")
    try:
        heartbeat_is_next(client)
        root.ok("POST", f"/access/doors/{annex}/mode", {"mode": "locked"})
        msg = client.next_message()
        assert isinstance(msg, ocp.DoorCommand), msg
        assert (msg.reader_no, msg.action) == (1, ocp.DoorCommandAction.HOLD_LOCKED)
        assert msg.command_id > 2**32 - 1_000_001
        client.send(ocp.DoorCommandAck(msg.command_id, 0))
        heartbeat_is_next(client)
    finally:
        client.close()
    client = door_client(desk, "annex controller")  # signs on again: held locked at once
    try:
        msg = client.next_message()
        assert isinstance(msg, ocp.DoorCommand), msg
        assert (msg.reader_no, msg.action) == (1, ocp.DoorCommandAction.HOLD_LOCKED)
        client.send(ocp.DoorCommandAck(msg.command_id, 0))
        root.ok("POST", f"/access/doors/{annex}/mode", {"mode": "free"})
        msg = client.next_message()
        assert msg.action == ocp.DoorCommandAction.HOLD_OPEN
        client.send(ocp.DoorCommandAck(msg.command_id, 0))
        root.ok("POST", f"/access/doors/{annex}/mode", {"mode": "normal"})
        msg = client.next_message()
        assert msg.action == ocp.DoorCommandAction.NORMAL
        client.send(ocp.DoorCommandAck(msg.command_id, 0))
        heartbeat_is_next(client)
    finally:
        client.close()
    client = door_client(desk, "annex controller")  # normal: nothing at sign-on
    try:
        heartbeat_is_next(client)
    finally:
        client.close()
    [after] = desk["site"].fetch("SELECT count(*) AS n FROM door_commands WHERE door_id = $1",
                                 annex)
    assert after["n"] == before["n"]


def test_the_simulated_door_terminal_obeys_and_reports_its_door(desk: dict[str, Any]) -> None:
    """terminals_sim.DoorTerminal (a trio task on a real connection): open_once is done, and
    the door reports opened then closed (journaled door events) like a real pass."""
    site: AdminSite = desk["site"]
    assert site.switch is not None
    tid = desk["terminals"]["sim controller"]["id"]
    # A lock that took commands on an earlier session, every id up to past this test's (all
    # answered LOCK_FAULT): ids are unique within a session only (protocol.md 4.5), so the
    # terminal forgets them at sign-on and carries out the new command with an old id.
    control = DoorControl(readers={1}, lock_fault=True)
    [top] = site.fetch("SELECT coalesce(max(id), 0) + 50 AS n FROM door_commands")
    for cid in range(1, top["n"]):
        control.command(ocp.DoorCommand(cid, 1, ocp.DoorCommandAction.OPEN_ONCE, 1000))
    control.lock_fault = False
    door = DoorTerminal(site.switch.host, site.switch.port, tid, site.key(tid), control)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            trio.run(door.run)
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)

    thread = threading.Thread(target=run, name="door-terminal", daemon=True)
    thread.start()
    try:
        assert door.signed_on.wait(30), failures
        cmd = command(desk, "Garden", {"action": "open_once", "open_ms": 1000})
        state_becomes(desk, cmd["id"], "done")
        garden = desk["doors"]["Garden"]["id"]

        def events() -> list[int]:
            return [r["event"] for r in site.fetch(
                "SELECT event FROM access_door_events WHERE door_id = $1 ORDER BY txn_seq",
                garden)]
        wait_for(lambda: events() == [ocp.DoorEventCode.OPENED, ocp.DoorEventCode.CLOSED],
                 what="opened and closed journaled")
        assert door.control.opened[0][0] == 1 and door.acks == 1
    finally:
        door.stop()
        thread.join(30)
    assert not failures, failures


def test_a_command_is_never_sent_again_after_a_switch_restart(desk: dict[str, Any]) -> None:
    """Sent, not acknowledged, then the switch is SIGKILLed: after the restart the door signs
    on again and gets nothing; the command ends 'expired' (at most once)."""
    site: AdminSite = desk["site"]
    client = door_client(desk, "mute controller")
    try:
        cmd = command(desk, "Cellar", {"action": "open_once"})
        msg = client.next_message()
        assert isinstance(msg, ocp.DoorCommand) and msg.command_id == cmd["id"]
        state_becomes(desk, cmd["id"], "sent", "expired")
    finally:
        client.close()
    assert site.switch is not None
    site.switch.kill()
    # A fresh port: the killed switch's may not be free to bind again yet (TIME_WAIT, or
    # taken by another test's process meanwhile); the door clients follow site.switch.port.
    site.start(extra_env={"ONECARD_PORT": str(free_port())})
    client = door_client(desk, "mute controller")
    try:
        state_becomes(desk, cmd["id"], "expired")
        heartbeat_is_next(client)
        heartbeat_is_next(client)
    finally:
        client.close()
