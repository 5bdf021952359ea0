"""A terminal that falls silent for three heartbeat intervals is disconnected."""

from __future__ import annotations

import time

from protocols import ocp
from tests.switch_site import FREE_CANTEEN_TERMINAL, Site


def test_silent_sessions_are_closed_and_heartbeats_keep_them(db_dsn: str) -> None:
    site = Site(db_dsn)
    site.start(extra_env={"ONECARD_HEARTBEAT_INTERVAL_SECONDS": "1"})
    try:
        talker = site.client(FREE_CANTEEN_TERMINAL)
        assert talker.sign_on_result.heartbeat_interval_s == 1
        silent = site.client(FREE_CANTEEN_TERMINAL + 1)
        silent.sock.settimeout(0.2)
        deadline = time.monotonic() + 60
        closed = False
        while not closed:
            assert time.monotonic() < deadline, "a silent session was never closed"
            assert isinstance(talker.request(ocp.Heartbeat(0)), ocp.HeartbeatAck)
            try:
                closed = silent.sock.recv(1) == b""
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed = True
        # The talker, which kept sending heartbeats, is still served.
        card = site.card()
        assert talker.request(ocp.Purchase(1, card["card_no"], 10, 0)).code == 0
        talker.close()
        silent.close()
        assert "ocp.idle_timeout" in site.switch.log_tail(100)  # type: ignore[union-attr]
    finally:
        site.stop()
