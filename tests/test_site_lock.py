"""One switch per database: the site lock (switch/_site_lock.py), with real switch processes."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import migrations
from migrations._runner import ADVISORY_LOCK_KEY
from onecard.harness import SwitchProcess
from protocols import ocp
from switch._site_lock import SITE_LOCK_KEY
from tests.switch_site import FREE_CANTEEN_TERMINAL, Site

RC = ocp.ResponseCode
HELD = "another switch owns this database's journal (site lock held by onecard-switch-lock pid"


def _wait_for(what: str, check: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {seconds} s: {what}")
        time.sleep(0.05)


def _lock_backends(site: Site, pid: int) -> list[dict[str, object]]:
    """The lock connection of the switch process `pid`: its backend and what it waits on."""
    rows = site.fetch("SELECT pid, wait_event_type FROM pg_stat_activity"
                      " WHERE application_name = $1", f"onecard-switch-lock pid {pid}")
    return [dict(r) for r in rows]


def _events(switch: SwitchProcess) -> list[str]:
    lines = switch.log_path.read_text(errors="replace").splitlines()
    return [json.loads(line)["event"] for line in lines if line.startswith("{")]


def _buy(site: Site, switch: SwitchProcess, txn_seq: int, card_no: int) -> int:
    site.switch = switch
    till = site.client(FREE_CANTEEN_TERMINAL)
    try:
        return int(till.request(ocp.Purchase(txn_seq, card_no, 100)).code)
    finally:
        till.close()


def test_a_second_switch_on_the_same_database_refuses_to_start(site: Site) -> None:
    assert site.switch is not None
    first = site.switch
    second = SwitchProcess(site.dsn, site.master.hex())
    try:
        second.start()
    except RuntimeError:
        pass
    else:
        raise AssertionError("a second switch started on the same database")
    assert second.proc is not None and second.proc.returncode == 1
    lines = second.log_path.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"onecard switch: {HELD}"), lines
    assert f"pid {first.proc.pid if first.proc else 0} " in lines[0]  # names the holder
    # The first one never noticed.
    card = site.card()["card_no"]
    assert _buy(site, first, 1, card) == RC.APPROVED


def test_a_switch_that_loses_the_lock_stops_answering_and_cannot_collide(site: Site) -> None:
    """A loses its lock connection while B waits for the lock: B takes over (ending A's journal
    backend before it reads the journal), A drops its terminals and, finding the lock taken,
    exits with one line. Nothing A acknowledged is lost; every purchase is journaled once."""
    a = site.switch
    assert a is not None and a.proc is not None
    card = site.card()["card_no"]
    assert _buy(site, a, 1, card) == RC.APPROVED
    site.switch = a
    till = site.client(FREE_CANTEEN_TERMINAL)

    b = SwitchProcess(site.dsn, site.master.hex())
    started: list[BaseException | None] = []
    starter = threading.Thread(target=lambda: started.append(_start(b)))
    starter.start()
    try:
        _wait_for("B waits for the site lock", lambda: b.proc is not None and any(
            r["wait_event_type"] == "Lock" for r in _lock_backends(site, b.proc.pid)))
        [a_lock] = _lock_backends(site, a.proc.pid)
        site.fetch("SELECT pg_terminate_backend($1)", a_lock["pid"])

        assert till.read_until_closed() == []  # A stopped answering: its terminals dropped
        starter.join(60)
        assert started == [None], started  # B took the lock and serves
        assert a.wait(60) == 1
        [said] = [line for line in a.log_path.read_text().splitlines()
                  if line.startswith("onecard switch:")]
        assert said.startswith(f"onecard switch: {HELD} {b.proc.pid} "), said  # type: ignore[union-attr]
        assert "switch.site_lock_lost" in _events(a)

        assert _buy(site, b, 2, card) == RC.APPROVED
        rows = site.fetch("SELECT txn_seq FROM journal WHERE terminal_id = $1 ORDER BY txn_seq",
                          FREE_CANTEEN_TERMINAL)
        assert [r["txn_seq"] for r in rows] == [1, 2]
    finally:
        till.close()
        starter.join(60)
        b.stop()
        site.switch = None


def test_a_switch_that_loses_the_lock_alone_takes_it_again_and_recovers(site: Site) -> None:
    a = site.switch
    assert a is not None and a.proc is not None
    card = site.card()["card_no"]
    till = site.client(FREE_CANTEEN_TERMINAL)
    assert till.request(ocp.Purchase(1, card, 100)).code == RC.APPROVED
    [lock] = _lock_backends(site, a.proc.pid)
    site.fetch("SELECT pg_terminate_backend($1)", lock["pid"])
    assert till.read_until_closed() == []
    till.close()
    _wait_for("A serves again", lambda: _events(a).count("switch.listening") == 2)
    assert _lock_backends(site, a.proc.pid)  # holding a new lock connection
    assert _buy(site, a, 2, card) == RC.APPROVED
    assert "switch.site_lock_lost" in _events(a)


def _start(switch: SwitchProcess) -> BaseException | None:
    try:
        switch.start()
    except BaseException as exc:  # reported to the test's thread
        return exc
    return None


def test_the_site_lock_key_is_no_other_advisory_lock_of_the_schema() -> None:
    # The change outbox serialises its writers with pg_advisory_xact_lock(0x0CA2D0002): the
    # site lock on that key made every admin-side change wait for the switch to stop.
    sql = " ".join(p.read_text() for p in Path(migrations.__file__).parent.glob("sql/*.sql"))
    taken = {int(k) for k in re.findall(r"pg_advisory_xact_lock\((\d+)\)", sql)}
    assert taken and SITE_LOCK_KEY not in taken | {ADVISORY_LOCK_KEY}
