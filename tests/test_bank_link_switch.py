"""The switch process with the bank link configured: it signs on to the bank host at start,
/readyz says whether top-ups are available beside (not inside) readiness, and purchases go on
unchanged while the bank is gone."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from onecard.status import render_status
from protocols import iso8583, ocp
from terminals_sim.bank_host import BankHostThread
from tests.switch_site import FREE_CANTEEN_TERMINAL, Site, free_port

KEK = bytes(range(0x20, 0x40))
DEADLINE = 30.0


def _readyz(base: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _bank_connections(base: str) -> object:
    bank = _readyz(base)[1].get("bank")
    return bank.get("connections") if isinstance(bank, dict) else None


def _until(cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_switch_signs_on_and_readyz_reports_topups(db_dsn: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    bank = BankHostThread(KEK).start()
    site = Site(db_dsn)
    site.start(extra_env={
        "ONECARD_METRICS_PORT": str(port), "ONECARD_BANK_HOST": "127.0.0.1",
        "ONECARD_BANK_PORT": str(bank.port), "ONECARD_BANK_KEK": KEK.hex(),
        "ONECARD_BANK_RESPONSE_TIMEOUT_SECONDS": "1",
    })
    try:
        _until(lambda: _readyz(base)[1].get("topups_available") is True)
        ready, text = render_status(base)
        assert ready and "bank link             UP: 1 connection(s)" in text
        assert bank.host.signed_on_connections == 1 and bank.host.keys.current is not None
        assert any(m.code is iso8583.NetworkCode.KEY_EXCHANGE
                   for m in bank.host.received_of(iso8583.NetworkRequest))
        bank.stop()  # the bank goes away: top-ups are not available, purchases are
        _until(lambda: _readyz(base)[1].get("topups_available") is False)
        code, state = _readyz(base)
        assert code == 200 and state["ready"] is True
        c = site.client(FREE_CANTEEN_TERMINAL)
        assert c.request(ocp.Purchase(1, site.card()["card_no"], 100, 0)).code == 0
        c.close()
    finally:
        site.stop()
        bank.stop()


def test_switch_without_bank_settings_reports_disabled(db_dsn: str) -> None:
    port = free_port()
    site = Site(db_dsn)
    site.start(extra_env={"ONECARD_METRICS_PORT": str(port)})
    try:
        code, state = _readyz(f"http://127.0.0.1:{port}")
        assert code == 200 and state["bank"] == "disabled" and state["topups_available"] is False
    finally:
        site.stop()


def test_a_stopping_switch_signs_off(db_dsn: str) -> None:
    bank = BankHostThread(KEK).start()
    port = free_port()
    site = Site(db_dsn)
    site.start(extra_env={"ONECARD_BANK_HOST": "127.0.0.1", "ONECARD_BANK_PORT": str(bank.port),
                          "ONECARD_BANK_KEK": KEK.hex(), "ONECARD_BANK_CONNECTIONS": "2",
                          "ONECARD_METRICS_PORT": str(port)})
    try:
        # Signed on as the switch sees it (after the key exchange), not only as the bank does.
        _until(lambda: _bank_connections(f"http://127.0.0.1:{port}") == 2)
        assert site.stop() == 0
        codes = [m.code for m in bank.host.received_of(iso8583.NetworkRequest)]
        assert codes.count(iso8583.NetworkCode.SIGN_OFF) == 2
    finally:
        bank.stop()
