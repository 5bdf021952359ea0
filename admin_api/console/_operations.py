"""The operations page's figures: the switch's and the bank link's state, throughput and
latency now, terminals online. Read from the switch's operator HTTP port (`/readyz` and
`/metrics`, setting switch_status_url) and from the admin API's own terminal session.

`GET /operations/status` answers them once; `GET /operations/live` pushes them (server-sent
events, admin_api/_live.py): a `status` event at once and then every SCRAPE_SECONDS. Rates and
latencies are those of the interval between the last two scrapes of this process (shared by
every caller, so many open pages do not multiply the scrapes).

The switch is shared by every site: its figures (throughput, latency, terminals, the journal)
are shown only to a log-in bound to the platform's node. A site's log-in sees whether the
switch and the bank link are up, its own doors online, and its own terminals online by kind
(terminal_presence, written by the switch; docs/operations.md "Terminals online").
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any, Final

import msgspec
from litestar import Request, get
from litestar.datastructures import State
from litestar.response import ServerSentEvent
from prometheus_client.parser import text_string_to_metric_families

from admin_api._auth import Actor
from admin_api._live import Event, live_response, message
from admin_api._routes_merchants import TERMINAL_KINDS

SCRAPE_SECONDS: Final = 2.0
"""The shortest interval between two scrapes of the switch (and the rate's window)."""
SCRAPE_TIMEOUT_SECONDS: Final = 2.0

_APPROVED: Final = "approved"
"""The code label of an approved request in onecard_requests_total."""
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class SwitchFigures(msgspec.Struct):
    """The whole switch (every site): for a platform log-in only."""

    terminals: dict[str, int]
    """Terminals signed on, by kind (pos, door, ...)."""
    requests_per_s: float
    """Requests answered per second over the last interval."""
    approved_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    """End-to-end latency of the sampled requests (the switch's latency_sample_every) over
    the last interval (None: none in it)."""
    lsn: int | None
    durable_lsn: int | None


class KindCount(msgspec.Struct):
    online: int
    total: int


class OpsStatus(msgspec.Struct):
    at: float
    """Unix time of the scrape."""
    configured: bool
    """switch_status_url is set: the switch's own figures can be read."""
    reachable: bool
    """The switch's operator port answered."""
    ready: bool
    phase: str
    bank: str
    """up, down, disabled (no bank link configured), unknown."""
    bank_connections: int
    bank_pending: int
    topups_available: bool
    api_connected: bool
    """The admin API's own terminal is signed on (counter top-ups, transfers)."""
    doors: int
    """Doors of your subtree."""
    doors_online: int
    """Of them, those whose terminal is signed on."""
    switch: SwitchFigures | None
    """The switch's figures, for a platform log-in; None otherwise."""
    terminals: dict[str, KindCount] = msgspec.field(default_factory=dict)
    """Terminals of your subtree by kind (pos, kiosk, door, attendance, water, admin; kinds
    with none are left out): how many are signed on to the switch now, of how many."""


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_SECONDS) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _scrape(base: str) -> tuple[dict[str, Any], Samples] | None:
    try:
        _, ready = _get(base + "/readyz")
        _, metrics = _get(base + "/metrics")
        samples: Samples = {}
        for family in text_string_to_metric_families(metrics.decode()):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return json.loads(ready), samples
    except (OSError, ValueError):
        return None


def quantile(q: float, cumulative: list[tuple[float, float]]) -> float:
    """The q-quantile of a cumulative histogram, as PromQL's histogram_quantile."""
    count = cumulative[-1][1]
    rank = q * count
    lower_le, lower_n = 0.0, 0.0
    for le, n in cumulative:
        if n >= rank:
            if le == float("inf"):
                return lower_le
            if n == lower_n:
                return le
            return lower_le + (le - lower_le) * (rank - lower_n) / (n - lower_n)
        lower_le, lower_n = le, n
    return lower_le


def _total(samples: Samples, name: str, **match: str) -> float:
    return sum(v for (n, labels), v in samples.items() if n == name
               and all(dict(labels).get(k) == want for k, want in match.items()))


def _figures(ready: dict[str, Any], before: Samples, after: Samples, seconds: float
             ) -> SwitchFigures:
    buckets: dict[float, float] = {}
    for (name, labels), value in after.items():
        if name == "onecard_request_duration_seconds_bucket":
            le = float(dict(labels)["le"])
            buckets[le] = buckets.get(le, 0.0) + value - before.get((name, labels), 0.0)
    cumulative = sorted(buckets.items())
    some = bool(cumulative) and cumulative[-1][1] > 0
    span = max(seconds, 1e-3)
    terminals = {dict(labels).get("kind", "?"): int(v) for (n, labels), v in after.items()
                 if n == "onecard_terminals_connected"}
    return SwitchFigures(
        terminals=terminals,
        requests_per_s=round((_total(after, "onecard_requests_total")
                              - _total(before, "onecard_requests_total")) / span, 2),
        approved_per_s=round((_total(after, "onecard_requests_total", code=_APPROVED)
                              - _total(before, "onecard_requests_total", code=_APPROVED))
                             / span, 2),
        p50_ms=round(quantile(0.5, cumulative) * 1000, 3) if some else None,
        p99_ms=round(quantile(0.99, cumulative) * 1000, 3) if some else None,
        lsn=ready.get("lsn"), durable_lsn=ready.get("durable_lsn"))


class _Sampler:
    """The last two scrapes of this process."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.at = 0.0
        self.ready: dict[str, Any] | None = None
        self.before: tuple[float, Samples] | None = None
        self.after: tuple[float, Samples] | None = None

    async def read(self, base: str) -> None:
        async with self.lock:
            now = time.monotonic()
            if self.at and now - self.at < SCRAPE_SECONDS:
                return
            self.at = now
            got = await asyncio.to_thread(_scrape, base)
            if got is None:
                self.ready, self.before, self.after = None, None, None
                return
            self.ready = got[0]
            self.before, self.after = self.after, (now, got[1])


_SAMPLER: Final = _Sampler()


async def _platform(state: State, actor: Actor) -> bool:
    return bool(await state.pool.fetchval(
        "SELECT kind = 'platform' FROM org_nodes WHERE id = $1", actor.node_id))


async def status_of(state: State, actor: Actor, platform: bool) -> OpsStatus:
    base = state.settings.switch_status_url.rstrip("/")
    ready: dict[str, Any] = {}
    switch = None
    if base:
        await _SAMPLER.read(base)
        ready = _SAMPLER.ready or {}
        if platform and _SAMPLER.ready is not None and _SAMPLER.after is not None:
            before = _SAMPLER.before or (_SAMPLER.after[0], _SAMPLER.after[1])
            switch = _figures(ready, before[1], _SAMPLER.after[1],
                              _SAMPLER.after[0] - before[0])
    bank_state = ready.get("bank")
    if isinstance(bank_state, dict):
        bank = "up" if bank_state.get("available") else "down"
    else:
        bank = "disabled" if bank_state == "disabled" else "unknown"
        bank_state = {}
    doors = await state.pool.fetchrow(
        "SELECT count(*) AS n, count(*) FILTER (WHERE s.online) AS online FROM doors x"
        " JOIN org_nodes n ON n.id = x.node_id"
        " LEFT JOIN access_door_states s ON s.door_id = x.id WHERE $1 = ANY(n.path)",
        actor.node_id)
    kinds = await state.pool.fetch(
        "SELECT te.kind, count(*) AS total, count(*) FILTER (WHERE p.online) AS online"
        " FROM terminals te JOIN merchants m ON m.id = te.merchant_id"
        " LEFT JOIN org_nodes n ON n.id = m.node_id"
        " LEFT JOIN org_nodes tn ON tn.kind = 'tenant' AND tn.tenant_id = m.tenant_id"
        " LEFT JOIN terminal_presence p ON p.terminal_id = te.id"
        " WHERE $1 = ANY(coalesce(n.path, tn.path)) GROUP BY te.kind ORDER BY te.kind",
        actor.node_id)
    return OpsStatus(
        at=time.time(), configured=bool(base), reachable=bool(ready),
        ready=bool(ready.get("ready")), phase=str(ready.get("phase", "unknown")), bank=bank,
        bank_connections=int(bank_state.get("connections", 0)),
        bank_pending=int(bank_state.get("pending", 0)),
        topups_available=bool(ready.get("topups_available")),
        api_connected=bool(state.money.connected()), doors=doors["n"],
        doors_online=doors["online"], switch=switch,
        terminals={TERMINAL_KINDS.get(r["kind"], str(r["kind"])): KindCount(r["online"], r["total"])
                   for r in kinds})


@get("/operations/status", opt={"permission": "reports.read"}, tags=["operations"],
     summary="The switch's and the bank link's state now (throughput, latency and terminals "
     "for a platform log-in)")
async def operations_status(actor: Actor, state: State) -> OpsStatus:
    return await status_of(state, actor, await _platform(state, actor))


class _OpsPoll:
    def __init__(self, state: State, actor: Actor, platform: bool) -> None:
        self.state, self.actor, self.platform = state, actor, platform
        self.last = 0.0

    async def __call__(self) -> list[Event]:
        now = time.monotonic()
        if self.last and now - self.last < SCRAPE_SECONDS:
            return []
        self.last = now
        return [message("status", await status_of(self.state, self.actor, self.platform))]


@get("/operations/live", opt={"permission": "reports.read"}, tags=["operations"],
     media_type="text/event-stream",
     summary="The body of GET /operations/status pushed every few seconds (server-sent events)",
     description=f"A `status` event at once and then every {SCRAPE_SECONDS:g} s; the stream "
     "ends after live_max_seconds (reconnect) and soon after the token is revoked.")
async def operations_live(actor: Actor, state: State,
                          request: Request[Any, Any, Any]) -> ServerSentEvent:
    platform = await _platform(state, actor)
    return live_response(request, state, _OpsPoll(state, actor, platform))


ROUTES = [operations_status, operations_live]
