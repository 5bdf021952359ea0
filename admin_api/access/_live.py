"""Alarms live: a server-sent event stream for the security desk, the console and dashboards.

`GET /access/alarms/live[?node_id=N][&doors=true]` answers `text/event-stream`
(docs/access-admin.md, "Alarms live"):

- first an event `snapshot`: the active alarms (open or acknowledged, not cleared) of the
  subtree, newest first, at most LIVE_ALARMS_MAX, as a JSON list of AlarmOut;
- with `doors=true`, then an event `doors`: the live state of the subtree's doors (the body of
  GET /access/door-states), and later an event `door` (one DoorStateOut) for every door whose
  state, online flag, alarm, tamper or lock fault changes (the security desk's e-map);
- then an event `alarm` (one AlarmOut) for every alarm that appears in the subtree or changes
  state — raised, acknowledged, cleared — and a comment line (`: keep-alive`) when nothing
  happened for a while, so proxies keep the connection open.

The stream compares states, not positions: every `live_poll_seconds` it reads the subtree's
active alarms and what it has sent; an alarm new to it or in another state is sent, and one
that left the active set is read once more for its final state. So nothing is missed whoever
wrote the alarm (the switch's group commit, the patrol checker, the ADMS edge) and in whatever
order their transactions committed, and a client that reconnects simply gets a new snapshot.
Door states are compared the same way.

Lifetime, token recheck, keep-alives and the per-process limit (503 `busy`) are the shared
mechanics of admin_api/_live.py (settings live_poll_seconds, live_max_seconds,
live_streams_max).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from litestar import Request, get
from litestar.datastructures import State
from litestar.params import Parameter
from litestar.response import ServerSentEvent

from admin_api._auth import Actor
from admin_api._live import Event, live_response, message
from admin_api._store import subtree_root
from admin_api._types import OptionalId
from admin_api.access._monitor import _ALARM_SELECT, AlarmOut, _alarm_out, door_states_of

LIVE_ALARMS_MAX: Final = 500
"""Active alarms in a snapshot and in each poll (newest first)."""

_ACTIVE = (_ALARM_SELECT + " WHERE $1 = ANY(coalesce(dn.path, tn.path))"
           " AND a.state <> 'cleared' ORDER BY a.id DESC LIMIT $2")
_BY_ID = _ALARM_SELECT + " WHERE a.id = ANY($1::bigint[])"


class _AlarmPoll:
    """What one stream has sent, and the next events to send."""

    def __init__(self, state: State, scope: int, doors: bool) -> None:
        self.pool = state.pool
        self.scope = scope
        self.doors = doors
        self.sent: dict[int, str] | None = None
        """alarm id -> the state this stream last sent, for the alarms it holds active."""
        self.door_sent: dict[int, tuple[Any, ...]] | None = None

    async def __call__(self) -> list[Event]:
        rows = await self.pool.fetch(_ACTIVE, self.scope, LIVE_ALARMS_MAX)
        events: list[Event] = []
        if self.sent is None:
            snapshot = [_alarm_out(r) for r in rows]
            self.sent = {a.id: a.state for a in snapshot}
            events.append(message("snapshot", snapshot))
        else:
            sent = self.sent
            active = {r["id"]: r for r in rows}
            changed: list[AlarmOut] = [_alarm_out(r) for i, r in active.items()
                                       if sent.get(i) != r["state"]]
            gone = [i for i in sent if i not in active]
            if gone:
                changed.extend(_alarm_out(r) for r in await self.pool.fetch(_BY_ID, gone))
                for i in gone:
                    del sent[i]
            sent.update((a.id, a.state) for a in changed if a.state != "cleared")
            events.extend(message("alarm", a, a.id) for a in sorted(changed, key=lambda a: a.id))
        if self.doors:
            first = self.door_sent is None
            door_sent = self.door_sent = self.door_sent or {}
            states = await door_states_of(self.pool, self.scope, None)
            fresh = []
            for d in states:
                key = (d.state, d.online, d.alarm, d.tamper, d.lock_fault)
                if door_sent.get(d.door_id) != key:
                    door_sent[d.door_id] = key
                    fresh.append(d)
            if first:
                events.append(message("doors", states))
            else:
                events.extend(message("door", d) for d in fresh)
        return events


@get("/access/alarms/live", opt={"permission": "access.read"}, tags=["access"],
     media_type="text/event-stream",
     summary="Alarms of your subtree as they are raised, acknowledged and cleared "
     "(server-sent events: a snapshot, then each change); with doors=true, door states too")
async def alarms_live(actor: Actor, state: State, request: Request[Any, Any, Any],
                      node_id: OptionalId = None,
                      doors: Annotated[bool, Parameter(
                          description="Also the doors' live states: a `doors` event, then a "
                          "`door` event per change")] = False) -> ServerSentEvent:
    scope = await subtree_root(state.pool, actor, node_id)
    return live_response(request, state, _AlarmPoll(state, scope, doors))


ROUTES = [alarms_live]
