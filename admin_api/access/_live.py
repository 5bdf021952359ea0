"""Alarms live: a server-sent event stream for the security desk, the console and dashboards.

`GET /access/alarms/live[?node_id=N]` answers `text/event-stream` (docs/access-admin.md,
"Alarms live"):

- first an event `snapshot`: the active alarms (open or acknowledged, not cleared) of the
  subtree, newest first, at most LIVE_ALARMS_MAX, as a JSON list of AlarmOut;
- then an event `alarm` (one AlarmOut) for every alarm that appears in the subtree or changes
  state — raised, acknowledged, cleared — and a comment line (`: keep-alive`) when nothing
  happened for LIVE_KEEPALIVE_SECONDS, so proxies keep the connection open.

The stream compares states, not positions: every `live_poll_seconds` it reads the subtree's
active alarms and what it has sent; an alarm new to it or in another state is sent, and one
that left the active set is read once more for its final state. So nothing is missed whoever
wrote the alarm (the switch's group commit, the patrol checker, the ADMS edge) and in whatever
order their transactions committed, and a client that reconnects simply gets a new snapshot.

The stream ends after `live_max_seconds` (300 by default; the event's `retry` field tells an
EventSource to reconnect after a second), so that a log-out, a disabled user or a token past
its lifetime stops it: the reconnection is authenticated again. At most `live_streams_max`
streams are open per process; one more is a 503 `busy`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Final

import msgspec
from litestar import get
from litestar.datastructures import State
from litestar.response import ServerSentEvent, ServerSentEventMessage

from admin_api._auth import Actor
from admin_api._problems import Problem
from admin_api._store import subtree_root
from admin_api._types import OptionalId
from admin_api.access._monitor import _ALARM_SELECT, AlarmOut, _alarm_out

LIVE_ALARMS_MAX: Final = 500
"""Active alarms in a snapshot and in each poll (newest first)."""
LIVE_KEEPALIVE_SECONDS: Final = 15.0
RETRY_MS: Final = 1000
"""What the stream asks an EventSource to wait before it reconnects."""

_ACTIVE = (_ALARM_SELECT + " WHERE $1 = ANY(coalesce(dn.path, tn.path))"
           " AND a.state <> 'cleared' ORDER BY a.id DESC LIMIT $2")
_BY_ID = _ALARM_SELECT + " WHERE a.id = ANY($1::bigint[])"


def _message(event: str, data: object, event_id: int | None = None) -> ServerSentEventMessage:
    return ServerSentEventMessage(data=msgspec.json.encode(data).decode(), event=event,
                                  id=None if event_id is None else str(event_id),
                                  retry=RETRY_MS)


async def _alarm_events(state: State, scope: int) -> AsyncIterator[ServerSentEventMessage | str]:
    settings = state.settings
    pool = state.pool
    sent: dict[int, str] = {}
    """alarm id -> the state this stream last sent, for the alarms it holds active."""
    rows = await pool.fetch(_ACTIVE, scope, LIVE_ALARMS_MAX)
    snapshot = [_alarm_out(r) for r in rows]
    sent.update((a.id, a.state) for a in snapshot)
    yield _message("snapshot", snapshot)
    ends = time.monotonic() + settings.live_max_seconds
    quiet_since = time.monotonic()
    while True:
        await asyncio.sleep(settings.live_poll_seconds)
        now = time.monotonic()
        if now >= ends:
            return
        rows = await pool.fetch(_ACTIVE, scope, LIVE_ALARMS_MAX)
        active = {r["id"]: r for r in rows}
        changed: list[AlarmOut] = [_alarm_out(r) for i, r in active.items()
                                   if sent.get(i) != r["state"]]
        gone = [i for i in sent if i not in active]
        if gone:
            changed.extend(_alarm_out(r) for r in await pool.fetch(_BY_ID, gone))
            for i in gone:
                del sent[i]
        sent.update((a.id, a.state) for a in changed if a.state != "cleared")
        for alarm in sorted(changed, key=lambda a: a.id):
            yield _message("alarm", alarm, alarm.id)
        if changed:
            quiet_since = now
        elif now - quiet_since >= LIVE_KEEPALIVE_SECONDS:
            quiet_since = now
            yield ": keep-alive\n\n"


class _Streams:
    """Open streams of this process, against `live_streams_max`."""

    def __init__(self) -> None:
        self.open = 0


_STREAMS = _Streams()


async def _counted(state: State, scope: int) -> AsyncIterator[ServerSentEventMessage | str]:
    """The stream, counted while it runs (its body starts only when the response is sent: a
    client gone before that holds nothing). Two requests racing for the last place: the
    second's stream ends at once, empty."""
    if _STREAMS.open >= state.settings.live_streams_max:
        return
    _STREAMS.open += 1
    state.metrics.live_streams.inc()
    try:
        async for event in _alarm_events(state, scope):
            yield event
    finally:
        _STREAMS.open -= 1
        state.metrics.live_streams.dec()


@get("/access/alarms/live", opt={"permission": "access.read"}, tags=["access"],
     media_type="text/event-stream",
     summary="Alarms of your subtree as they are raised, acknowledged and cleared "
     "(server-sent events: a snapshot, then each change)")
async def alarms_live(actor: Actor, state: State, node_id: OptionalId = None) -> ServerSentEvent:
    scope = await subtree_root(state.pool, actor, node_id)
    if _STREAMS.open >= state.settings.live_streams_max:
        raise Problem(503, "busy", "too many live streams are open; try again later",
                      headers={"Retry-After": "5"})
    return ServerSentEvent(_counted(state, scope),
                           headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


ROUTES = [alarms_live]
