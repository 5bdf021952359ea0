"""Bad input never costs money or data (architecture invariant 7), against the running switch.

Each case gets its documented response code or a closed connection, a structured log line and
a counter, and changes no balance and no journal row beyond a recorded decline.
"""

from __future__ import annotations

import struct
import urllib.request
from collections.abc import Iterator

import msgspec
import pytest

from protocols import ocp
from tests.switch_site import FREE_CANTEEN_TERMINAL, Site, free_port

RC = ocp.ResponseCode


@pytest.fixture(scope="module")
def site(pg_server, migrated_template) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    s = Site(pg_server.new_database(template=migrated_template))
    s.metrics_port = free_port()  # type: ignore[attr-defined]
    s.start(extra_env={"ONECARD_METRICS_PORT": str(s.metrics_port)})  # type: ignore[attr-defined]
    try:
        yield s
    finally:
        s.stop()


def _counter(site: Site, code: str) -> float:
    url = f"http://127.0.0.1:{site.metrics_port}/metrics"  # type: ignore[attr-defined]
    text = urllib.request.urlopen(url, timeout=30).read().decode()
    for line in text.splitlines():
        if line.startswith(f'onecard_protocol_errors_total{{code="{code}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _money(site: Site) -> tuple[int, int]:
    (row,) = site.fetch("SELECT count(*) AS n, coalesce(sum(amount_fen), 0) AS s FROM journal")
    return row["n"], row["s"]


def _frame(body: list[object], *, sequence: int = 0, flags: int = 0, version: int = 1) -> bytes:
    payload = msgspec.msgpack.encode(body)
    return struct.pack(">IBBI", 6 + len(payload), version, flags, sequence) + payload


def _closed_with(site: Site, data: bytes, *, sign_on: bool) -> list[object]:
    c = site.client(FREE_CANTEEN_TERMINAL, sign_on=sign_on)
    c.send_raw(data)
    if sign_on:
        answers = c.read_until_closed()
    else:
        raw = b""
        while chunk := c.sock.recv(4096):
            raw += chunk
        answers = [msgspec.msgpack.decode(raw[10:])] if len(raw) > 10 else []
    c.close()
    return answers


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("oversized length prefix", struct.pack(">I", 1 << 30) + b"\x01", RC.FRAME_TOO_LARGE),
        ("length prefix below the header", struct.pack(">I", 2) + b"\x01\x00", RC.MALFORMED_FRAME),
        ("unknown version", _frame([1, 1, b"n" * 16], version=9), RC.UNSUPPORTED_VERSION),
        ("garbage body", struct.pack(">IBBI", 10, 1, 0, 0) + b"\xc1\xc1\xc1\xc1",
         RC.MALFORMED_FRAME),
        ("purchase before sign-on", _frame([16, 1, 1, 100, 0]), RC.NOT_SIGNED_ON),
    ],
)
def test_bad_frames_before_sign_on_get_their_code_and_change_nothing(
    site: Site, name: str, data: bytes, code: int
) -> None:
    before, counted = _money(site), _counter(site, RC(code).name.lower())
    answers = _closed_with(site, data, sign_on=False)
    assert answers and answers[0][:2] == [31, code], (name, answers)  # type: ignore[index]
    assert _money(site) == before
    assert _counter(site, RC(code).name.lower()) == counted + 1


def test_replayed_and_skipped_sequences_close_the_session(site: Site) -> None:
    card = site.card()
    for offset in (0, 2):  # replayed (same sequence again), skipped (one missing)
        c = site.client(FREE_CANTEEN_TERMINAL)
        good = c.conn.send(ocp.Purchase(1, card["card_no"], 1, 0))
        next_ok = c.conn.send(ocp.Purchase(2, card["card_no"], 1, 0))
        c.send_raw(good)
        assert c.next_message().code == RC.APPROVED
        before = _money(site)
        c.send_raw(good if offset == 0 else c.conn.send(ocp.Purchase(3, card["card_no"], 1, 0)))
        del next_ok
        answers = c.read_until_closed()
        assert [a.code for a in answers] == [RC.SEQUENCE_ERROR]  # type: ignore[attr-defined]
        assert _money(site) == before
        c.close()
        site.fetch("DELETE FROM journal WHERE terminal_id = $1", FREE_CANTEEN_TERMINAL)


def test_absurd_fields_are_refused_per_request_and_the_session_goes_on(site: Site) -> None:
    c = site.client(5)  # a free-amount canteen till with a fresh counter
    card = site.card(skip=3)
    before = _money(site)
    counted = _counter(site, "invalid_field")
    # send() does not check field limits (receive does), so this is what a buggy terminal sends:
    # authentic, well-sequenced frames with absurd fields.
    for bad in (ocp.Purchase(1, card["card_no"], -5, 0),
                ocp.Purchase(2, card["card_no"], 10**12, 0),
                ocp.Purchase(3, 0, 100, 0),
                ocp.Purchase(0, card["card_no"], 100, 0)):
        err = c.request(bad)
        assert isinstance(err, ocp.Error) and err.code == RC.INVALID_FIELD, err
        assert err.txn_seq == bad.txn_seq
    assert _money(site) == before
    assert _counter(site, "invalid_field") == counted + 4
    assert isinstance(c.request(ocp.Heartbeat(0)), ocp.HeartbeatAck)
    # The same session still works.
    assert c.request(ocp.Purchase(4, card["card_no"], 100, 0)).code == RC.APPROVED
    c.close()


class _Short:
    """What a terminal built against a shorter schema sends: a Purchase without amount_fen
    (named Purchase, so the Connection frames it like one)."""

    class Purchase(ocp.Message, tag=16, frozen=True):
        txn_seq: int
        card_no: int


def test_a_missing_field_is_refused_naming_it_and_changes_nothing(site: Site) -> None:
    c = site.client(6)
    card = site.card(skip=4)
    before = _money(site)
    err = c.request(_Short.Purchase(1, card["card_no"]))
    assert err == ocp.Error(RC.INVALID_FIELD, 1, "invalid field $.amount_fen")
    assert _money(site) == before and site.journal(6, 1) == []
    # txn_seq 1 was not used up, and the session goes on.
    assert c.request(ocp.Purchase(1, card["card_no"], 100, 0)).code == RC.APPROVED
    c.close()


class _NotUtf8:
    """An Error whose detail is a MessagePack str of bytes that are not UTF-8."""

    class Error(ocp.Message, tag=31, frozen=True):
        code: int
        txn_seq: int
        detail: msgspec.Raw


def test_a_string_that_is_not_utf8_is_malformed_and_closes_the_session(site: Site) -> None:
    """docs/protocol.md section 4: invalid UTF-8 makes the body invalid MessagePack, a
    connection error even in a session (not INVALID_FIELD)."""
    c = site.client(7)
    before = _money(site)
    c.send(_NotUtf8.Error(RC.UNKNOWN_MESSAGE, 0, msgspec.Raw(b"\xa2\xff\xfe")))
    answers = c.read_until_closed()
    c.close()
    assert [(type(a), a.code) for a in answers] == [(ocp.Error, RC.MALFORMED_FRAME)]
    assert _money(site) == before
