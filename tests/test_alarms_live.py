"""Alarms live (GET /access/alarms/live, server-sent events): a real switch and admin API
process, a door on real TCP. A lost card at the door raises an alarm the desk's open stream
shows within seconds; its acknowledgement shows as a change; the desk of another park sees
nothing of it; a stream ends by itself after live_max_seconds (docs/access-admin.md)."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from onecard.harness import free_port
from onecard.seed import CANTEEN_FREE
from protocols import ocp
from tests.admin_site import PASSWORD, AdminSite, new_card_no

RC = ocp.ResponseCode


@pytest.fixture(scope="module")
def desk(pg_server: Any, migrated_template: str) -> Iterator[dict[str, Any]]:
    site = AdminSite(pg_server.new_database(template=migrated_template))
    site.start(extra_env={"ONECARD_PORT": str(free_port())})
    site.start_admin(ONECARD_ADMIN_LIVE_POLL_SECONDS="0.1", ONECARD_ADMIN_LIVE_MAX_SECONDS="4",
                     ONECARD_ADMIN_LIVE_STREAMS_MAX="3")
    root = site.api()
    campus, other = site.tenant_node(1), site.tenant_node(2)
    terminal = root.ok("POST", f"/merchants/{CANTEEN_FREE}/terminals",
                       {"kind": "door", "name": "gate controller"})["terminal"]
    door = root.ok("POST", "/access/doors", {"node_id": campus, "name": "East gate"})
    root.ok("POST", "/access/readers", {"terminal_id": terminal["id"], "reader_no": 1,
                                        "door_id": door["id"]})
    for username, node in (("desk.one", campus), ("desk.two", other)):
        root.ok("POST", "/users", {"username": username, "password": PASSWORD,
                                   "role": "security_desk", "node_id": node})
    try:
        yield {"site": site, "root": root, "campus": campus, "terminal": terminal, "door": door}
    finally:
        site.close()


class Stream:
    """A stream read by a thread, its events parsed onto a queue. With `reconnect`, it opens
    again when the server ends it, as an EventSource does (a new snapshot follows)."""

    def __init__(self, url: str, token: str, reconnect: bool = False) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.ended = threading.Event()
        self._closed = False
        self._reconnect = reconnect
        self._client = httpx.Client(base_url=url, timeout=httpx.Timeout(30, read=60))
        self._response: httpx.Response | None = None
        self._token = token
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                self._read()
                if not self._reconnect or self._closed:
                    return
        except Exception:
            if not self._closed:
                raise
        finally:
            self.ended.set()

    def _read(self) -> None:
        with self._client.stream("GET", "/access/alarms/live",
                                 headers={"Authorization": f"Bearer {self._token}"}) as r:
            self._response = r
            assert r.status_code == 200, r.status_code
            event, data = "message", ""
            for line in r.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    data += line.split(":", 1)[1].strip()
                elif line == "" and data:
                    self.events.put((event, json.loads(data)))
                    event, data = "message", ""

    def next(self, seconds: float = 15.0) -> tuple[str, Any]:
        return self.events.get(timeout=seconds)

    def alarm(self, alarm_id: int | None, state: str, seconds: float = 15.0) -> dict[str, Any]:
        """The first alarm (of this id, if given) in `state`, from an event or a snapshot."""
        deadline = time.monotonic() + seconds
        while True:
            event, data = self.next(max(0.1, deadline - time.monotonic()))
            for a in data if event == "snapshot" else [data]:
                if a["state"] == state and alarm_id in (None, a["id"]):
                    return dict(a)

    def close(self) -> None:
        """Hang up (the server sees the connection end) and wait for the reader."""
        self._closed = True
        if self._response is not None:
            self._response.close()
        self._thread.join(30)
        self._client.close()


def _streams_open(site: AdminSite) -> float:
    text = httpx.get(f"{site.admin.url}/metrics").text  # type: ignore[union-attr]
    [line] = [x for x in text.splitlines() if x.startswith("onecard_admin_live_streams ")]
    return float(line.split()[1])


def _wait_no_streams(site: AdminSite) -> None:
    deadline = time.monotonic() + 30
    while _streams_open(site) != 0:
        assert time.monotonic() < deadline, "streams left open"
        time.sleep(0.05)


def _token(site: AdminSite, username: str) -> str:
    return site.api(username).token


def test_an_alarm_and_its_acknowledgement_are_pushed_to_the_desk_only(
        desk: dict[str, Any]) -> None:
    site: AdminSite = desk["site"]
    root = desk["root"]
    mine = Stream(site.admin.url, _token(site, "desk.one"), reconnect=True)  # type: ignore[union-attr]
    theirs = Stream(site.admin.url, _token(site, "desk.two"), reconnect=True)  # type: ignore[union-attr]
    try:
        assert mine.next() == ("snapshot", [])
        assert theirs.next() == ("snapshot", [])
        person = root.ok("POST", "/people", {"node_id": desk["campus"], "name": "Lost Li",
                                             "class_id": 2})
        card_no = new_card_no()
        root.ok("POST", f"/people/{person['id']}/cards", {"card_no": card_no})
        root.ok("POST", f"/cards/{card_no}/report-loss")
        client = site.client(desk["terminal"]["id"])
        try:
            deadline = time.monotonic() + 15
            seq = 1
            while True:  # until the switch has the card (the change feed) and says it is lost
                answer = client.request(ocp.AccessRequest(seq, 1, 0, 1, card_no))
                seq += 1
                if answer.code == RC.CARD_LOST:
                    break
                assert time.monotonic() < deadline, answer
        finally:
            client.close()
        alarm = mine.alarm(None, "open")
        assert alarm["door_id"] == desk["door"]["id"] and alarm["card_no"] == card_no
        desk_one = site.api("desk.one")
        desk_one.ok("POST", f"/access/alarms/{alarm['id']}/acknowledge",
                    {"note": "card taken from the finder at the gate"})
        # An illegal-card alarm is momentary: its acknowledgement clears it (access.md).
        acked = mine.alarm(alarm["id"], "cleared")
        assert acked["note"] == "card taken from the finder at the gate"
        assert acked["acknowledged_at"] is not None
        # The other park's desk saw nothing: empty snapshots (it reconnects every 4 s here).
        while not theirs.events.empty():
            assert theirs.next() == ("snapshot", [])
        # A new stream starts without it (cleared alarms are not active).
        again = Stream(site.admin.url, _token(site, "desk.one"))  # type: ignore[union-attr]
        try:
            assert again.next() == ("snapshot", [])
        finally:
            again.close()
    finally:
        mine.close()
        theirs.close()


def test_streams_are_limited_refused_without_the_role_and_end_by_themselves(
        desk: dict[str, Any]) -> None:
    site: AdminSite = desk["site"]
    url = site.admin.url  # type: ignore[union-attr]
    # A cashier may not read alarms; nobody without a token.
    cashier = site.api()
    cashier.ok("POST", "/users", {"username": "till.only", "password": PASSWORD,
                                  "role": "cashier", "node_id": desk["campus"]})
    with httpx.Client(base_url=url) as http:
        r = http.get("/access/alarms/live",
                     headers={"Authorization": f"Bearer {_token(site, 'till.only')}"})
        assert r.status_code == 403
        assert http.get("/access/alarms/live").status_code == 401
    _wait_no_streams(site)  # the other test's streams are gone
    streams = [Stream(url, _token(site, "desk.one")) for _ in range(3)]
    try:
        for s in streams:
            assert s.next()[0] == "snapshot"
        with httpx.Client(base_url=url) as http:
            r = http.get("/access/alarms/live",
                         headers={"Authorization": f"Bearer {_token(site, 'desk.one')}"})
            assert r.status_code == 503 and r.json()["type"].endswith("busy"), r.text
        assert _streams_open(site) == 3
        # live_max_seconds (4 s here): each stream ends by itself.
        for s in streams:
            assert s.ended.wait(30), "the stream did not end"
        _wait_no_streams(site)
    finally:
        for s in streams:
            s.close()
