"""The web console seen from outside, over HTTP and without a browser: what `onecard demo` shows
of it (its `console` section) and what `onecard bench` loads it with (its console phase).

A page is its static file plus the data calls its script makes first (PAGES, from
admin_api/console/static/*.js). A log-in may use a page when every one of those calls answers
200 with its token, and is refused it when one answers 401 or 403; the page file itself is
public (it holds no data). A live call (server-sent events) counts as answered at its first
event. The live lag is from a purchase answered at a till to the first `sales` event whose id
(the journal's lsn it counts up to) reaches that purchase's lsn (live_lags).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Final, NamedTuple

import asyncpg
import httpx
import msgspec

from protocols import ocp

TIMEOUT: Final = httpx.Timeout(30.0)
LIVE_LAG_LIMIT_MS: Final = 5_000.0
"""The demo's check: a purchase shows on the live sales stream within this (the streams poll
the journal every live_poll_seconds, 1 s by default)."""


class Page(NamedTuple):
    name: str
    path: str
    calls: tuple[str, ...]
    """The data calls the page's script makes first, in order: {tenant} is the first tenant of
    GET /org/nodes, {person} the first person of the log-in's own search, {self} the first of
    GET /self/people. A path with /live is a stream of server-sent events."""


PAGES: Final = (
    Page("people", "/console/people.html", ("/people/search?q=",)),
    Page("person", "/console/person.html", ("/people/{person}", "/people/{person}/balance",
                                            "/people/{person}/cards",
                                            "/people/{person}/recent?limit=20")),
    Page("sales", "/console/sales.html", ("/org/nodes", "/tenants/{tenant}/live")),
    Page("screen", "/console/screen.html", ("/org/nodes", "/tenants/{tenant}/screen/live")),
    Page("security", "/console/security.html", ("/access/alarms/live?doors=true",
                                                "/access/areas", "/access/lockdowns")),
    Page("operations", "/console/operations.html", ("/operations/live",)),
    Page("approvals", "/console/approvals.html", ("/approvals/inbox",)),
    Page("cashier", "/console/cashier.html", ("/people/search?limit=20&q=holder",)),
    Page("merchants", "/console/merchants.html", ("/merchants?limit=1000",)),
    Page("reports", "/console/reports.html", ("/org/nodes", "/tenants/{tenant}/summary?limit=1",
                                              "/merchants?limit=1000")),
    Page("finance", "/console/finance.html", ("/org/nodes",
                                              "/tenants/{tenant}/finance/settlement")),
    Page("phone", "/m/", ("/self/people", "/self/people/{self}/balance",
                          "/self/people/{self}/cards")),
)
REFUSED: Final = (401, 403)
NOT_THEIRS: Final = 404
"""What a page's call answers a log-in whose subtree holds nothing for it (another park's
person, no tenant): the API's own scope check, not a fault."""


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank q-quantile (0 < q <= 1) of `values`, rounded to 0.01; 0 when empty."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), int(q * len(ordered) + 0.999999)))
    return round(ordered[rank - 1], 2)


def live_lags(answers: Iterable[tuple[float, int]], events: Iterable[tuple[float, int]]
              ) -> list[float]:
    """For each purchase (answered at monotonic time t, journaled at lsn), the ms until the
    first event of one stream (arrived at t, id = lsn counted up to) that counts it; a purchase
    no event counted is left out. An event may arrive before the till read its answer (the
    commit precedes the answer): 0 ms."""
    evs = sorted(events, key=lambda e: (e[1], e[0]))
    # The earliest arrival among events with id >= lsn: a suffix minimum over ids.
    first_at = [0.0] * len(evs)
    best = float("inf")
    for i in range(len(evs) - 1, -1, -1):
        best = min(best, evs[i][0])
        first_at[i] = best
    ids = [e[1] for e in evs]
    out = []
    for answered, lsn in answers:
        i = bisect.bisect_left(ids, lsn)
        if i < len(evs):
            out.append(round(max(0.0, first_at[i] - answered) * 1000, 2))
    return out


class SseEvent(NamedTuple):
    at: float
    """time.monotonic() when its last line arrived."""
    event: str
    id: str | None
    data: str


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """The events of a text/event-stream response as they arrive (comments skipped)."""
    event, event_id = "message", None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield SseEvent(time.monotonic(), event, event_id, "\n".join(data))
            event, event_id = "message", None
            data = []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "id":
                event_id = value
            elif name == "data":
                data.append(value)


async def log_in(client: httpx.AsyncClient, username: str, password: str) -> str | None:
    """The log-in's access token, or None when refused."""
    r = await client.post("/auth/login", json={"username": username, "password": password})
    return str(r.json()["access_token"]) if r.status_code == 200 else None


class Call(NamedTuple):
    status: int
    body: Any


async def call(client: httpx.AsyncClient, token: str, path: str) -> Call:
    """GET `path` with the token; a live path answers its first event's data."""
    headers = {"Authorization": f"Bearer {token}"}
    if "/live" not in path.split("?")[0]:
        r = await client.get(path, headers=headers)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") \
            else None
        return Call(r.status_code, body)
    async with client.stream("GET", path, headers=headers) as r:
        if r.status_code != 200:
            await r.aread()
            return Call(r.status_code, None)
        async for ev in sse_events(r):
            return Call(200, msgspec.json.decode(ev.data) if ev.data else None)
    return Call(599, None)  # ended before its first event


class PageVisit(msgspec.Struct):
    status: int
    """200 when the page file and every first call answered 200, else the first other code."""
    ms: float
    """From asking for the page file to the last first call's answer (its first event)."""


async def visit(client: httpx.AsyncClient, token: str, page: Page, fill: dict[str, int]
                ) -> PageVisit:
    """The page as its script loads it: the file, then its first calls in order, the
    placeholders filled from the answers so far (a {tenant} from /org/nodes)."""
    t0 = time.perf_counter()
    r = await client.get(page.path)
    status = r.status_code
    values = dict(fill)
    if status == 200:
        for template in page.calls:
            path = template.format(**values) if "{" in template else template
            answer = await call(client, token, path)
            status = answer.status
            if status != 200:
                break
            if path == "/org/nodes":
                tenants = [n["tenant_id"] for n in answer.body if n["kind"] == "tenant"]
                if not tenants:
                    status = 404
                    break
                values["tenant"] = tenants[0]
            elif path == "/self/people":
                if not answer.body:
                    status = 404
                    break
                values["self"] = answer.body[0]["id"]
    return PageVisit(status=status, ms=round((time.perf_counter() - t0) * 1000, 2))


class RoleView(msgspec.Struct):
    role: str
    allowed: list[str]
    refused: list[str]
    other: dict[str, int]
    """Pages answered neither 200 nor 401/403: 404 (nothing of the log-in's to show), or a
    fault the demo fails on (anything else)."""


class ConsoleFigures(msgspec.Struct):
    url: str
    pages: list[str]
    roles: dict[str, RoleView]
    """By log-in (user name)."""
    matrix: dict[str, dict[str, int]]
    """Log-in -> page -> status (200 may use, 401/403 refused)."""
    first_data_p50_ms: float
    first_data_max_ms: float
    first_data_by_page: dict[str, dict[str, float]]
    """Per page over the log-ins that may use it: p50_ms, max_ms."""
    other_park_campus_people: int
    """People of the campus (tenant 1) in east.admin's answers (a search of everyone, a search
    by a campus card number): must be 0."""
    own_park_people: int
    """People campus.admin's search of everyone answers (not 0: the check above means
    something)."""
    live_lag_ms: float
    """A purchase answered at a till now -> the live sales stream's event counting it."""
    live_lag_limit_ms: float = LIVE_LAG_LIMIT_MS

    def failures(self) -> list[str]:
        out = [f"{user}: {page} answered {code}" for user, v in self.roles.items()
               for page, code in v.other.items() if code != NOT_THEIRS]
        if self.other_park_campus_people != 0:
            out.append(f"east.admin sees {self.other_park_campus_people} campus people")
        if self.own_park_people == 0:
            out.append("campus.admin sees no people")
        if not 0 <= self.live_lag_ms <= self.live_lag_limit_ms:
            out.append(f"live sales lag {self.live_lag_ms} ms")
        return out


class Till:
    """One till's OCP connection, a request at a time (a probe, not the load)."""

    def __init__(self, terminal_id: int, key: bytes) -> None:
        self.terminal_id, self.key = terminal_id, key
        self.conn = ocp.Connection(ocp.Role.TERMINAL)
        self.transport: Any = None
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.seq = 0

    async def open(self, host: str, port: int) -> Till:
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: _TillProtocol(self), host, port)
        async with asyncio.timeout(30):
            result = await self.messages.get()
        if not (isinstance(result, ocp.SignOnResult) and result.code == 0):
            raise RuntimeError(f"till {self.terminal_id} not signed on: {result}")
        self.seq = result.last_txn_seq
        return self

    async def purchase(self, card_no: int, amount_fen: int) -> tuple[int, int, float]:
        """(txn_seq, code, monotonic time the answer was read)."""
        self.seq += 1
        self.transport.write(self.conn.send(ocp.Purchase(self.seq, card_no, amount_fen)))
        async with asyncio.timeout(30):
            answer = await self.messages.get()
        return self.seq, int(answer.code), time.monotonic()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _TillProtocol(asyncio.Protocol):
    def __init__(self, till: Till) -> None:
        self.till = till

    def connection_made(self, transport: Any) -> None:
        t = self.till
        t.transport = transport
        transport.write(t.conn.start_sign_on(t.terminal_id, t.key, os.urandom(16)))

    def data_received(self, data: bytes) -> None:
        t = self.till
        t.conn.receive_data(data)
        while (ev := t.conn.next_event()) is not ocp.NEED_DATA:
            if isinstance(ev, ocp.SignOnChallenge):
                t.transport.write(t.conn.send(ocp.SignOnConfirm(0, 3, "console")))
            elif ev is ocp.CLOSED:
                break
            elif not isinstance(ev, ocp.HeartbeatAck):
                t.messages.put_nowait(ev)


async def lsn_of(conn: asyncpg.Connection, terminal_id: int, txn_seq: int) -> int | None:
    value = await conn.fetchval("SELECT lsn FROM journal WHERE terminal_id = $1 AND txn_seq = $2",
                                terminal_id, txn_seq)
    return None if value is None else int(value)


async def live_sales_lag(client: httpx.AsyncClient, token: str, till: Till, cards: list[int],
                         dsn: str, tenant_id: int = 1) -> float:
    """Open the tenant's live sales stream, make one purchase at `till` (the first of `cards`
    approved), and measure until an event of the stream counts it (ms)."""
    headers = {"Authorization": f"Bearer {token}"}
    events: list[tuple[float, int]] = []
    first = asyncio.Event()
    counted = asyncio.Event()
    target: list[int] = []

    async def read() -> None:
        async with client.stream("GET", f"/tenants/{tenant_id}/live", headers=headers) as r:
            r.raise_for_status()
            async for ev in sse_events(r):
                if ev.event == "sales" and ev.id is not None:
                    events.append((ev.at, int(ev.id)))
                    first.set()
                    if target and int(ev.id) >= target[0]:
                        counted.set()
                        return

    reader = asyncio.create_task(read())
    conn = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(30):
            await first.wait()
        for card in cards[:20]:
            seq, code, answered = await till.purchase(card, 500)
            if code == 0:
                break
        lsn = await lsn_of(conn, till.terminal_id, seq)
        if lsn is None:
            raise RuntimeError(f"purchase {till.terminal_id}/{seq} not in the journal")
        target.append(lsn)
        if any(i >= lsn for _, i in events):
            counted.set()
        async with asyncio.timeout(LIVE_LAG_LIMIT_MS / 1000 + 30):
            await counted.wait()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        await conn.close()
    lags = live_lags([(answered, lsn)], events)
    return lags[0] if lags else -1.0


async def probe_console(url: str, password: str, users: list[tuple[str, str]], dsn: str,
                        till: Till, cards: list[int]) -> ConsoleFigures:
    """Every demo log-in against every page (PAGES), the other park's clerk's view of the
    campus's people, and the live sales stream's lag behind a purchase."""
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
        tokens = {}
        for user, _ in users:
            token = await log_in(client, user, password)
            if token is None:
                raise RuntimeError(f"demo log-in {user} refused")
            tokens[user] = token
        conn = await asyncpg.connect(dsn)
        try:
            student = await conn.fetchval(
                "SELECT p.id FROM people p JOIN admin_users u ON u.person_id = p.id"
                " WHERE u.username = 'student'")
            campus_card = await conn.fetchval(
                "SELECT c.card_no FROM cards c JOIN people p ON p.account_id = c.account_id"
                " WHERE p.tenant_id = 1 AND c.status = 0 ORDER BY c.card_no LIMIT 1")
        finally:
            await conn.close()
        matrix: dict[str, dict[str, int]] = {}
        times: dict[str, list[float]] = {p.name: [] for p in PAGES}
        for user, _ in users:
            fill: dict[str, int] = {}
            found = await call(client, tokens[user], "/people/search?limit=1")
            # The first person the log-in's own search finds; nobody found: the campus's
            # student (another park's clerk gets the API's 404, the protection shown).
            items = found.body["items"] if found.status == 200 else []
            fill["person"] = items[0]["id"] if items else student
            row = matrix[user] = {}
            for page in PAGES:
                v = await visit(client, tokens[user], page, fill)
                row[page.name] = v.status
                if v.status == 200:
                    times[page.name].append(v.ms)
        roles = {user: RoleView(
            role=role, allowed=[p for p, s in matrix[user].items() if s == 200],
            refused=[p for p, s in matrix[user].items() if s in REFUSED],
            other={p: s for p, s in matrix[user].items() if s != 200 and s not in REFUSED})
            for user, role in users}
        east, mine = tokens.get("east.admin"), tokens.get("campus.admin")
        other_park = own = 0
        if east is not None:
            for path in ("/people/search?limit=100", f"/people/search?q={campus_card}"):
                answer = await call(client, east, path)
                if answer.status == 200:
                    other_park += sum(1 for p in answer.body["items"] if p["tenant_id"] == 1)
        if mine is not None:
            answer = await call(client, mine, "/people/search?limit=100")
            own = len(answer.body["items"]) if answer.status == 200 else 0
        lag = await live_sales_lag(client, tokens["campus.admin"], till, cards, dsn)
    every = [ms for v in times.values() for ms in v]
    return ConsoleFigures(
        url=url, pages=[p.name for p in PAGES], roles=roles, matrix=matrix,
        first_data_p50_ms=percentile(every, 0.5), first_data_max_ms=max(every, default=0.0),
        first_data_by_page={name: {"p50_ms": percentile(v, 0.5), "max_ms": max(v, default=0.0)}
                            for name, v in times.items()},
        other_park_campus_people=other_park, own_park_people=own, live_lag_ms=lag)


def render(c: ConsoleFigures) -> list[str]:
    allowed = sum(len(v.allowed) for v in c.roles.values())
    refused = sum(len(v.refused) for v in c.roles.values())
    other = sum(len(v.other) for v in c.roles.values())
    return [
        f"  console                   {len(c.pages)} pages x {len(c.roles)} log-ins over HTTP: "
        f"{allowed} may use, {refused} refused (401/403), {other} other (404: none of theirs); "
        f"first data p50 {c.first_data_p50_ms:.0f} ms, max {c.first_data_max_ms:.0f} ms",
        f"      east.admin sees {c.other_park_campus_people} of the campus's people (campus.admin "
        f"{c.own_park_people}); a till's purchase on the live sales stream in "
        f"{c.live_lag_ms:.0f} ms (limit {c.live_lag_limit_ms:.0f}); CONSOLE CHECKS: "
        + ("passed" if not c.failures() else "FAILED: " + "; ".join(c.failures())),
    ]


# --- the bench's console load (run in a process of its own: onecard/bench_console.py) ---

OPERATOR_PAGES: Final = (
    ("people", ("/people/search?q={card}",)),
    ("person", ("/people/{person}", "/people/{person}/balance", "/people/{person}/cards",
                "/people/{person}/recent?limit=20")),
    ("sales", ("/tenants/1/sales/hourly",)),
    ("reports", ("/tenants/1/summary?limit=1",)),
    ("merchants", ("/merchants?limit=1000",)),
    ("approvals", ("/approvals/inbox",)),
)
"""The main pages' data calls an operator cycles through (the sales page's first event is the
body of /sales/hourly, asked for directly: the streams are loaded apart)."""
STREAM_PATHS: Final = ("/tenants/1/live", "/tenants/1/live", "/tenants/1/live",
                       "/access/alarms/live?doors=true", "/operations/live")
"""Stream i reads STREAM_PATHS[i % 5]: three of five sales, one alarms, one operations."""


class ConsoleLoadPlan(msgspec.Struct):
    url: str
    password: str
    dsn: str
    switch_host: str
    switch_port: int
    till_id: int
    till_key_hex: str
    cards: list[int]
    operators: int
    streams: int
    seconds: float
    think_seconds: float = 1.0
    """Mean pause between an operator's pages (a busy office: a page a second each)."""
    till_interval_seconds: float = 0.1


class ConsoleLoad(msgspec.Struct):
    requests: int
    failed: int
    seconds: float
    page_ms: dict[str, list[float]]
    live_lags_ms: list[float]
    streams_open: int
    stream_events: int
    probe_purchases: int


async def _operator(client: httpx.AsyncClient, token: str, people: list[int], cards: list[int],
                    until: float, think: float, page_ms: dict[str, list[float]],
                    counts: list[int], rnd: random.Random) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    n = rnd.randrange(len(OPERATOR_PAGES))
    while time.monotonic() < until:
        name, calls = OPERATOR_PAGES[n % len(OPERATOR_PAGES)]
        n += 1
        values = {"person": rnd.choice(people), "card": rnd.choice(cards)}
        t0 = time.perf_counter()
        ok = True
        for template in calls:
            try:
                r = await client.get(template.format(**values), headers=headers)
                counts[0] += 1
                ok = ok and r.status_code == 200
            except httpx.HTTPError:
                counts[0] += 1
                ok = False
        if ok:
            page_ms.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
        else:
            counts[1] += 1
        await asyncio.sleep(think * (0.5 + rnd.random()))


async def _stream(client: httpx.AsyncClient, token: str, path: str, until: float,
                  opened: Callable[[], None], events: list[tuple[float, int]],
                  counts: list[int]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with contextlib.suppress(httpx.HTTPError, TimeoutError):
        async with asyncio.timeout(max(0.0, until - time.monotonic())), \
                client.stream("GET", path, headers=headers) as r:
            if r.status_code != 200:
                return
            opened()
            async for ev in sse_events(r):
                counts[2] += 1
                if ev.event == "sales" and ev.id is not None:
                    events.append((ev.at, int(ev.id)))


async def _till_loop(plan: ConsoleLoadPlan, until: float,
                     answers: list[tuple[int, float]]) -> None:
    till = await Till(plan.till_id, bytes.fromhex(plan.till_key_hex)).open(
        plan.switch_host, plan.switch_port)
    try:
        n = 0
        while time.monotonic() < until:
            seq, _, answered = await till.purchase(plan.cards[n % len(plan.cards)], 300)
            answers.append((seq, answered))
            n += 1
            await asyncio.sleep(plan.till_interval_seconds)
    finally:
        till.close()


async def run_console_load(plan: ConsoleLoadPlan, ready: Callable[[], None]) -> ConsoleLoad:
    """Log in, open plan.streams live streams, call `ready`, then for plan.seconds: plan.operators
    operators cycling through OPERATOR_PAGES, and a probe till buying every
    till_interval_seconds whose purchases are matched against the sales streams' events."""
    limits = httpx.Limits(max_connections=plan.operators + plan.streams + 8,
                          max_keepalive_connections=plan.operators + plan.streams + 8)
    async with httpx.AsyncClient(base_url=plan.url, timeout=TIMEOUT, limits=limits) as client:
        campus = [await log_in(client, "campus.admin", plan.password)
                  for _ in range(plan.operators)]
        platform = await log_in(client, "admin", plan.password)
        if platform is None or any(t is None for t in campus):
            raise RuntimeError("the bench's console log-ins were refused")
        tokens = [t for t in campus if t is not None]
        found = await call(client, tokens[0], "/people/search?limit=100")
        people = [p["id"] for p in found.body["items"]]
        opened = [0]
        counts = [0, 0, 0]
        page_ms: dict[str, list[float]] = {}
        sales_events: list[list[tuple[float, int]]] = [[] for _ in range(plan.streams)]
        all_open = asyncio.Event()

        def one_opened() -> None:
            opened[0] += 1
            if opened[0] >= plan.streams:
                all_open.set()

        far = time.monotonic() + plan.seconds + 60
        streams = [asyncio.create_task(_stream(
            client, platform if "operations" in STREAM_PATHS[i % len(STREAM_PATHS)]
            else tokens[i % len(tokens)], STREAM_PATHS[i % len(STREAM_PATHS)], far, one_opened,
            sales_events[i], counts)) for i in range(plan.streams)]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await all_open.wait()
        ready()
        start = time.monotonic()
        until = start + plan.seconds
        answers: list[tuple[int, float]] = []
        rnd = random.Random(7)
        await asyncio.gather(
            _till_loop(plan, until, answers),
            *(_operator(client, tokens[i], people, plan.cards, until, plan.think_seconds,
                        page_ms, counts, random.Random(rnd.random()))
              for i in range(plan.operators)))
        elapsed = time.monotonic() - start
        # Give the streams a poll or two to count the last purchases, then close them.
        await asyncio.sleep(2.5)
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    conn = await asyncpg.connect(plan.dsn)
    try:
        rows = await conn.fetch("SELECT txn_seq, lsn FROM journal WHERE terminal_id = $1"
                                " AND txn_seq = ANY($2::bigint[])", plan.till_id,
                                [s for s, _ in answers])
    finally:
        await conn.close()
    lsn = {r["txn_seq"]: r["lsn"] for r in rows}
    journaled = [(t, lsn[s]) for s, t in answers if s in lsn]
    lags = [lag for evs in sales_events if evs for lag in live_lags(journaled, evs)]
    return ConsoleLoad(requests=counts[0], failed=counts[1], seconds=round(elapsed, 2),
                       page_ms=page_ms, live_lags_ms=lags, streams_open=opened[0],
                       stream_events=counts[2], probe_purchases=len(answers))


__all__ = ["LIVE_LAG_LIMIT_MS", "PAGES", "ConsoleFigures", "ConsoleLoad", "ConsoleLoadPlan",
           "Page", "PageVisit", "RoleView", "Till", "call", "live_lags", "live_sales_lag",
           "log_in", "percentile", "probe_console", "render", "run_console_load", "sse_events",
           "visit"]
