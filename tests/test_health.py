"""The operator's port: liveness, readiness after recovery, metrics, and `onecard status`."""

from __future__ import annotations

import json
import urllib.request

from onecard.cli import main as onecard_main
from protocols import ocp
from tests.switch_site import FREE_CANTEEN_TERMINAL, Site, free_port


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read()


def test_health_readiness_metrics_and_status(db_dsn: str, capsys) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    site = Site(db_dsn)
    site.start(extra_env={"ONECARD_METRICS_PORT": str(port)})
    try:
        c = site.client(FREE_CANTEEN_TERMINAL)
        assert c.request(ocp.Purchase(1, site.card()["card_no"], 100, 0)).code == 0
        assert _get(base + "/healthz")[0] == 200
        code, body = _get(base + "/readyz")
        state = json.loads(body)
        assert code == 200 and state["ready"] and state["phase"] == "serving"
        assert state["terminals"] == 1 and state["durable_lsn"] == state["lsn"] >= 1
        _, metrics = _get(base + "/metrics")
        assert b'onecard_requests_total{code="approved",type="purchase"} 1.0' in metrics
        assert onecard_main(["status", "--url", base]) == 0
        out = capsys.readouterr().out
        assert "READY (serving)" in out and "purchase" in out and "approved" in out
        c.close()
    finally:
        site.stop()
    assert onecard_main(["status", "--url", base]) == 2  # nothing listens any more


def test_readyz_is_503_while_the_switch_is_not_serving() -> None:
    import urllib.error

    from switch._health import start_health_server

    class Recovering:
        def readiness(self) -> dict[str, object]:
            return {"ready": False, "phase": "recovering"}

    port = free_port()
    server = start_health_server("127.0.0.1", port, Recovering())
    try:
        try:
            _get(f"http://127.0.0.1:{port}/readyz")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            assert json.loads(exc.read()) == {"ready": False, "phase": "recovering"}
        else:
            raise AssertionError("a recovering switch reported ready")
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    finally:
        server.shutdown()
