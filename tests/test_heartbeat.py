"""A terminal that falls silent for three heartbeat intervals is told IDLE_TIMEOUT and
disconnected; heartbeats keep a session."""

from __future__ import annotations

import time

from protocols import ocp
from tests.ocp_client import OcpClient
from tests.switch_site import FREE_CANTEEN_TERMINAL, Site


def _received_until_closed(client: OcpClient, talker: OcpClient) -> list[object]:
    """Every message the silent client gets until the switch closes it, while the talker keeps
    its own session alive with heartbeats."""
    client.sock.settimeout(0.2)
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "a silent connection was never closed"
        assert isinstance(talker.request(ocp.Heartbeat(0)), ocp.HeartbeatAck)
        try:
            data = client.sock.recv(65536)
        except TimeoutError:
            continue
        client.conn.receive_data(data)
        if not data:
            break
    events = []
    while (ev := client.conn.next_event()) is not ocp.NEED_DATA:
        events.append(ev)
        if ev is ocp.CLOSED:
            return events
    raise AssertionError(events)


def test_silent_sessions_are_closed_with_idle_timeout_and_heartbeats_keep_them(
        db_dsn: str) -> None:
    site = Site(db_dsn)
    site.start(extra_env={"ONECARD_HEARTBEAT_INTERVAL_SECONDS": "1"})
    try:
        talker = site.client(FREE_CANTEEN_TERMINAL)
        assert talker.sign_on_result.heartbeat_interval_s == 1
        silent = site.client(FREE_CANTEEN_TERMINAL + 1)
        # docs/protocol.md section 8: a closing Error (MAC'd, in the session) says why.
        idle = ocp.Error(ocp.ResponseCode.IDLE_TIMEOUT, 0,
                         "nothing received for 3 heartbeat intervals")
        assert _received_until_closed(silent, talker) == [idle, ocp.CLOSED]
        # A connection that never signs on gets the same Error, plain.
        assert site.switch is not None
        mute = OcpClient(site.switch.host, site.switch.port, FREE_CANTEEN_TERMINAL + 2, b"")
        # (Its Connection expects an answer to a SignOn, which is never sent.)
        mute.conn.start_sign_on(FREE_CANTEEN_TERMINAL + 2, bytes(32), bytes(16))
        assert _received_until_closed(mute, talker) == [idle, ocp.CLOSED]
        # The talker, which kept sending heartbeats, is still served.
        card = site.card()
        assert talker.request(ocp.Purchase(1, card["card_no"], 10, 0)).code == 0
        talker.close()
        silent.close()
        mute.close()
        assert "ocp.idle_timeout" in site.switch.log_tail(100)
    finally:
        site.stop()
