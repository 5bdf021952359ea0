"""The mechanics every live stream (server-sent events) of the admin API shares.

A live route checks its caller and scope as any route does, then hands `live_response` a
`Poll`: a coroutine that answers the events to send now (the first call: the initial ones).
This module calls it every `live_poll_seconds` (admin_api/_settings.py) and

- ends the stream after `live_max_seconds` (the client reconnects, and so is authenticated
  again; each event carries `retry`, so an EventSource waits RETRY_MS before it does);
- checks every RECHECK_SECONDS that the log-in's token (or API key) still holds: a log-out, a
  disabled user or a revoked key ends the stream within that;
- sends a comment (`: keep-alive`) when nothing was sent for KEEPALIVE_SECONDS, so proxies keep
  the connection open;
- counts the streams open in this process against `live_streams_max` (and in the gauge
  onecard_admin_live_streams of the API's /metrics): one more is a 503
  `busy` with Retry-After (a stream's body starts only when the response is sent, so a client
  gone before that holds nothing; two requests racing for the last place: the second's stream
  ends at once, empty).

Routes using it: /access/alarms/live, /tenants/{id}/live, /tenants/{id}/screen/live,
/operations/live.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.response import ServerSentEvent, ServerSentEventMessage

from admin_api._problems import Problem
from admin_api._routes_auth import actor_of

RECHECK_SECONDS: Final = 10.0
"""How often a stream checks that its log-in's token still holds."""
KEEPALIVE_SECONDS: Final = 15.0
RETRY_MS: Final = 1000
"""What a stream asks an EventSource to wait before it reconnects."""
RETRY_AFTER: Final = "5"
"""Retry-After (seconds) of a 503 busy."""
HEADERS: Final = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}

Event = ServerSentEventMessage
Poll = Callable[[], Awaitable[list[Event]]]


def message(event: str, data: object, event_id: int | str | None = None) -> ServerSentEventMessage:
    """One event: `data` as JSON (msgspec encodes structs, dates and lists of them)."""
    return ServerSentEventMessage(data=msgspec.json.encode(data).decode(), event=event,
                                  id=None if event_id is None else str(event_id),
                                  retry=RETRY_MS)


class _Streams:
    """Open streams of this process, against `live_streams_max`."""

    def __init__(self) -> None:
        self.open = 0


STREAMS: Final = _Streams()


async def _run(request: Request[Any, Any, Any], state: State, poll: Poll
               ) -> AsyncIterator[Event]:
    settings = state.settings
    if STREAMS.open >= settings.live_streams_max:
        return
    STREAMS.open += 1
    state.metrics.live_streams.inc()  # onecard_admin_live_streams
    try:
        started = checked = quiet = time.monotonic()
        while True:
            events = await poll()
            for event in events:
                yield event
            now = time.monotonic()
            if events:
                quiet = now
            elif now - quiet >= KEEPALIVE_SECONDS:
                quiet = now
                yield ServerSentEventMessage(comment="keep-alive")
            await asyncio.sleep(settings.live_poll_seconds)
            now = time.monotonic()
            if now - started >= settings.live_max_seconds:
                return
            if now - checked >= RECHECK_SECONDS:
                try:
                    await actor_of(request, state.pool)
                except Problem:
                    return  # logged out, expired, revoked or disabled: nothing more
                checked = now
    finally:
        STREAMS.open -= 1
        state.metrics.live_streams.dec()


def live_response(request: Request[Any, Any, Any], state: State, poll: Poll) -> ServerSentEvent:
    """The stream of `poll`'s events, or 503 busy when this process has as many open as
    `live_streams_max` allows."""
    if STREAMS.open >= state.settings.live_streams_max:
        raise Problem(503, "busy", "too many live streams are open; try again later",
                      headers={"Retry-After": RETRY_AFTER})
    return ServerSentEvent(_run(request, state, poll), headers=dict(HEADERS))


__all__ = ["HEADERS", "KEEPALIVE_SECONDS", "RECHECK_SECONDS", "RETRY_MS", "STREAMS", "Event",
           "Poll", "live_response", "message"]
