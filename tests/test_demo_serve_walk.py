"""A newcomer tries `onecard demo --serve` by hand (issue 13's last requirement).

`python -m onecard demo --serve` runs as a real process (on the test PostgreSQL, a database of
this run's own, a small campus), and the test reads what it printed: the console's address,
the password of the demo log-ins and which log-in walks which journey. With nothing else, in
Chromium, it walks every journey: the sales page moves live with the demo's tills; the card
office issues a card, the demo's till buys with it, the card is reported lost and its next
purchase is refused; a cancellation is approved and carried out; the security desk waits for
an alarm of the demo's door trickle, finds it on the e-map and acknowledges it; a parent sees
only their child; a cashier's double click tops up once; a clerk of the other park finds
nothing of the campus. Then SIGTERM: the demo exits 0 and leaves no child process behind.
Screenshots as in tests/test_console.py (ONECARD_CONSOLE_SHOTS, else a temporary directory).
The browser, its contexts, the log-in, screenshots and waiting are tests/console_browser.py's.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onecard.harness import free_port
from tests import console_browser as cb
from tests import pg

# A walk of a minute or more: in the slow pass (`python -m pytest -m slow`, run by .ci/run).
pytestmark = pytest.mark.slow

READY_SECONDS = 240
"""How long the demo may take to print its addresses (seeding, two processes; a busy box)."""
WIDE = {"width": 1280, "height": 900}
"""The desktop viewport of the walk."""
POLL_SECONDS = 0.2
"""A poll's pace (each poll asks the API), not a wait for something to have happened."""
ALARM_MS = 180_000
"""The demo's first alarm comes 10 s after it is ready, then one a minute."""
NOTE = "Checked on the camera: a student left it open"


class Demo:
    """`onecard demo --serve` as a child process, its output read by a thread."""

    def __init__(self, server: pg.TestServer) -> None:
        self.database = f"{server.run_tag}_walk"
        server.databases.append(self.database)  # dropped (and its alarm stream removed) at the end
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "onecard", "demo", "--serve", "--dsn", server.admin_dsn,
             "--database", self.database, "--accounts", "1000", "--terminals", "10",
             "--admin-port", str(free_port())],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.started = time.monotonic()
        self.ready_seconds = 0.0
        """From the start to the line that says the demo is ready (or to its output's end)."""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if "simulated purchases per second" in line:
                self._set_ready()
        self._set_ready()

    def _set_ready(self) -> None:
        if not self.ready.is_set():
            self.ready_seconds = time.monotonic() - self.started
            self.ready.set()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def children(self) -> list[int]:
        """The demo's child processes now (Linux /proc)."""
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == self.proc.pid:
                    out.append(int(entry))
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            raise
        finally:
            self._reader.join(30)


@pytest.fixture(scope="module")
def demo(pg_server: pg.TestServer) -> Iterator[Demo]:
    d = Demo(pg_server)
    try:
        yield d
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(30)


@pytest.fixture(scope="module")
def console_url(demo: Demo) -> str:
    """The console's address the demo printed, once it is ready (before the browser starts)."""
    assert demo.ready.wait(READY_SECONDS), f"not ready in {READY_SECONDS} s:\n{demo.text}"
    assert demo.proc.poll() is None, demo.text
    return _printed(demo.text, r"console\s+(http://\S+)/console/")


class Walk:
    """What the demo printed, and the browser contexts to walk with it: one per log-in."""

    def __init__(self, contexts: cb.Contexts, text: str) -> None:
        self.contexts = contexts
        self.password = _printed(text, r"password for all: (\S+)")
        journeys = text.split("journeys", 1)[1]
        self.journeys = {m[1]: m[2] for m in re.finditer(r"^    (\S+)\s+(.+)$", journeys, re.M)}

    def log_in(self, username: str, start: str = "/console/") -> Any:
        """A page in a fresh context (a phone's under /m/) logged in as `username`."""
        page = self.contexts.new(**(cb.PHONE if start.startswith("/m/") else {"viewport": WIDE}))
        cb.log_in(page, username, start, password=self.password)
        return page


def _printed(text: str, pattern: str) -> str:
    m = re.search(pattern, text)
    assert m is not None, f"the demo did not print {pattern!r}:\n{text}"
    return m[1]


def _recent(page: Any, person_id: int) -> list[dict[str, Any]]:
    """The person's latest statement lines, read with the page's own log-in."""
    return list(page.evaluate(
        "(id) => fetch('/people/' + id + '/recent?limit=50', {headers: {Authorization: "
        "'Bearer ' + OC.token()}}).then((r) => r.json())", person_id))


def test_a_newcomer_walks_every_journey_of_the_serving_demo(
        demo: Demo, browser: Any, console_url: str, shots: Path) -> None:
    assert demo.ready.wait(READY_SECONDS), f"not ready in {READY_SECONDS} s:\n{demo.text}"
    assert demo.proc.poll() is None, demo.text
    ready_s = demo.ready_seconds
    expect = cb.playwright_expect()
    with cb.open_contexts(browser, console_url) as contexts:
        walk = Walk(contexts, demo.text)
        for who in ("card.office", "campus.admin", "security.desk", "parent", "cashier",
                    "east.office"):
            assert who in walk.journeys, (who, walk.journeys)
        _walk(walk, expect, shots)
    children = demo.children()
    assert len(children) >= 2, "the switch and the admin API run as children"
    code = demo.stop()
    assert code == 0, demo.text
    assert "stopped" in demo.text
    assert "Traceback" not in demo.text and "was destroyed" not in demo.text, demo.text
    left = [pid for pid in children if os.path.exists(f"/proc/{pid}")]
    assert not left, f"child processes left behind: {left}"
    walked_s = time.monotonic() - demo.started
    (shots / "demo-walk-seconds.txt").write_text(
        f"ready {ready_s:.1f} s, walk and stop {walked_s - ready_s:.1f} s\n")


def _walk(walk: Walk, expect: Any, shots: Path) -> None:
    # -- the sales page moves with the demo's tills, no reload
    sales = walk.log_in("campus.admin")
    sales.goto("/console/sales.html")
    expect(sales.locator("#live-state")).to_have_attribute("data-state", "live")
    expect(sales.locator("#sales-purchases")).not_to_have_text("–")
    before = sales.locator("#sales-purchases").inner_text()
    expect(sales.locator("#sales-purchases")).not_to_have_text(before)
    sales.screenshot(path=str(shots / "walk-sales.png"), full_page=True)

    # -- a parent sees only their child (whom the student log-in is)
    parent = walk.log_in("parent", start="/m/")
    expect(parent.locator("#m-name")).not_to_have_text("")
    child = parent.locator("#m-name").inner_text()
    expect(parent.locator("#m-child option")).to_have_count(1)
    expect(parent.locator("#m-qr-section")).to_be_hidden()
    parent.screenshot(path=str(shots / "walk-parent.png"), full_page=True)
    student = walk.log_in("student", start="/m/")
    expect(student.locator("#m-name")).to_have_text(child)

    # -- the card office: people to work with (active, with a card), the child left alone
    office = walk.log_in("card.office")
    office.goto("/console/people.html")
    office.get_by_label("Name, card number, external id or department").fill("holder")
    office.get_by_role("button", name="Search").click()
    rows = office.locator("#people-table tbody tr:has(.oc-status-active)")
    expect(rows.first).to_be_visible()
    people = []
    for i in range(min(rows.count(), 10)):
        link = rows.nth(i).get_by_role("link")
        name = link.inner_text()
        cards = re.findall(r"\d{6,}", rows.nth(i).inner_text())
        if name != child and cards:
            href = link.get_attribute("href") or ""
            people.append((name, int(href.rsplit("=", 1)[1]), int(cards[-1])))
    assert len(people) >= 3, people
    (issued_to, issued_id, _), (leaver, leaver_id, _), (holder, holder_id, holder_card) = \
        people[:3]

    # -- the card office issues a card; the demo's till buys with it
    card_no = 800_000_000_000 + time.time_ns() % 100_000_000_000
    office.goto(f"/console/person.html?id={issued_id}")
    expect(office.locator("#person-name")).to_have_text(issued_to)
    office.get_by_label("Card number", exact=True).fill(str(card_no))
    office.get_by_role("button", name="Issue card").click()
    expect(office.locator("#issue-message")).to_contain_text(f"Card {card_no} is issued")
    expect(office.locator(f'tr[data-card="{card_no}"] .card-status')).to_have_text("active")
    cb.until("the demo's till buys with the new card", lambda: any(
        e["card_no"] == card_no and e["kind"] == "purchase" and e["result"] == "APPROVED"
        for e in _recent(office, issued_id)), seconds=90, poll_seconds=POLL_SECONDS)

    # -- reported lost: the till's next purchase with it is refused
    office.locator(f'tr[data-card="{card_no}"]').get_by_role("button",
                                                             name="Report lost").click()
    expect(office.locator(f'tr[data-card="{card_no}"] .card-status')).to_have_text("lost")
    cb.until("the next purchase with the lost card is refused", lambda: any(
        e["card_no"] == card_no and e["result"] == "CARD_LOST"
        for e in _recent(office, issued_id)), seconds=90, poll_seconds=POLL_SECONDS)
    office.reload()
    expect(office.locator("#txns-table tbody")).to_contain_text("card lost")
    office.screenshot(path=str(shots / "walk-card-lost.png"), full_page=True)

    # -- a cancellation, approved by the approvers and carried out
    office.goto(f"/console/person.html?id={leaver_id}")
    expect(office.locator("#person-name")).to_have_text(leaver)
    office.get_by_label("Document title").fill(f"{leaver} leaves")
    office.get_by_label("Reason").fill("graduated")
    office.get_by_role("button", name="Submit cancellation for approval").click()
    expect(office.locator("#cancel-message")).to_contain_text("is waiting")
    doc_id = int(re.search(r"document (\d+)", office.locator("#cancel-message").inner_text())[1])
    outcome = ""
    for approver in ("finance.a", "finance.b"):
        page = walk.log_in(approver)
        page.goto("/console/approvals.html")
        page.get_by_role("link", name=f"Open document {doc_id}").click()
        expect(page.locator("#doc-lines tbody")).to_contain_text(leaver)
        page.get_by_label("Note with your decision").fill("balance checked")
        page.screenshot(path=str(shots / f"walk-approve-{approver}.png"), full_page=True)
        page.get_by_role("button", name="Approve").click()
        expect(page.locator("#inbox-message")).to_contain_text(f"Document {doc_id} is now")
        outcome = page.locator("#inbox-message").inner_text()
        if "carried out" in outcome:
            break
    assert f"Document {doc_id} is now carried out." == outcome

    # -- a cashier's double click tops up once
    cashier = walk.log_in("cashier")
    cashier.get_by_role("link", name="Cashier").click()
    cashier.get_by_label("Name, card number, external id or department").fill(str(holder_card))
    cashier.get_by_label("Name, card number, external id or department").press("Enter")
    expect(cashier.locator("#counter-name")).to_contain_text(holder)
    sent: list[str] = []
    cashier.on("request", lambda r: sent.append(r.headers.get("idempotency-key", ""))
               if r.method == "POST" and r.url.endswith("/topups") else None)
    cashier.get_by_label("Amount (yuan)").first.fill("12.34")
    cashier.get_by_role("button", name="Top up").dblclick()
    expect(cashier.locator("#topup-message")).to_contain_text("Topped up 12.34 yuan")
    assert len(sent) in (1, 2) and len(set(sent)) == 1, sent
    topups = [e for e in _recent(cashier, holder_id)
              if e["kind"] == "credit" and e["amount_fen"] == 1_234]
    assert len(topups) == 1, topups
    cashier.screenshot(path=str(shots / "walk-cashier.png"), full_page=True)

    # -- a clerk of the other park finds nothing of the campus
    east = walk.log_in("east.office")
    east.goto("/console/people.html")
    for words in (holder, str(holder_card)):
        east.get_by_label("Name, card number, external id or department").fill(words)
        east.get_by_role("button", name="Search").click()
        expect(east.locator("#people-message")).to_have_text(
            "Nobody in your part of the organisation matches.")
    east.goto(f"/console/person.html?id={holder_id}")
    expect(east.locator("#person-message")).to_have_text(
        "No such person in your part of the organisation.")
    assert holder not in east.content()
    east.screenshot(path=str(shots / "walk-other-park.png"))

    # -- the security desk: an alarm of the demo's doors, found on the e-map, acknowledged
    desk = walk.log_in("security.desk")
    desk.goto("/console/security.html")
    expect(desk.locator("#live-state")).to_have_attribute("data-state", "live")
    expect(desk.locator("#plan")).to_be_visible()
    expect(desk.locator("#doors-table tbody tr").first).to_be_visible()
    expect(desk.locator('#alarms-table tbody tr[data-state="open"]').first).to_be_visible(
        timeout=ALARM_MS)
    areas = desk.locator("#area option").evaluate_all(
        "(os) => os.map((o) => [o.value, o.textContent])")
    marker = None
    for value, name in areas:  # the area whose plan shows a door with an open alarm
        desk.locator("#area").select_option(value)
        expect(desk.locator("#plan")).to_have_attribute("alt", f"Floor plan of {name}")
        expect(desk.locator(".desk-door").first).to_be_visible()
        if desk.locator('.desk-door[data-alarm="open"]').count():
            marker = desk.locator('.desk-door[data-alarm="open"]').first
            break
    assert marker is not None, "no door of any plan shows the open alarm"
    desk.screenshot(path=str(shots / "walk-desk-alarm.png"), full_page=True)
    marker.click()
    dialog = desk.get_by_role("dialog")
    expect(dialog).to_be_visible()
    alarm_id = int(re.findall(r"\d+", desk.locator("#ack-title").inner_text())[0])
    desk.get_by_label("What was found and done").fill(NOTE)
    desk.get_by_role("button", name="Confirm").click()
    expect(desk.locator("#desk-message")).to_contain_text("is acknowledged")
    # A refused card ends with its acknowledgement; a door forced or held open when the demo's
    # controller reports it closed, which it does once the alarm is acknowledged.
    expect(desk.locator(f'#alarms-table tr[data-alarm="{alarm_id}"]')).to_have_count(0)
    desk.screenshot(path=str(shots / "walk-desk.png"), full_page=True)
    # The desk opens a door once, remotely: the demo's controller carries it out and acks.
    command = desk.evaluate(
        "() => fetch('/access/doors', {headers: {Authorization: 'Bearer ' +"
        " OC.token()}}).then((r) => r.json()).then((ds) => fetch('/access/doors/' +"
        " ds[0].id + '/commands', {method: 'POST', headers: {Authorization:"
        " 'Bearer ' + OC.token(), 'content-type': 'application/json'}, body:"
        " JSON.stringify({action: 'open_once'})})).then((r) => r.json())")
    cb.until("the demo's door carries out the desk's open once", lambda: desk.evaluate(
        "(id) => fetch('/access/door-commands/' + id, {headers: {Authorization: 'Bearer ' +"
        " OC.token()}}).then((r) => r.json()).then((c) => c.state)", command["id"]) == "done",
        poll_seconds=POLL_SECONDS)
