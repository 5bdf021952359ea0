"""What an operator sees of a real switch: per-stage latency histograms, terminals by kind,
balance-cache gauges, and logs that name each request and each security event."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from onecard.cli import main as onecard_main
from onecard.status import quantile
from protocols import ocp
from tests.switch_site import FREE_CANTEEN_TERMINAL, SUPERMARKET_TERMINAL, Site, free_port

RC = ocp.ResponseCode
UNKNOWN_CARD_NO = 1_234_567


def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _log_events(site: Site) -> list[dict[str, object]]:
    assert site.switch is not None
    lines = site.switch.log_path.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _wait_for(what: str, check: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {seconds} s: {what}")
        time.sleep(0.05)


def test_status_quantiles_interpolate_like_histogram_quantile() -> None:
    inf = float("inf")
    assert quantile(0.5, [(1.0, 0), (2.0, 10), (inf, 10)]) == 1.5
    assert quantile(0.99, [(0.001, 90), (0.01, 100), (inf, 100)]) == 0.001 + 0.009 * 9 / 10
    assert quantile(0.99, [(0.001, 0), (inf, 5)]) == 0.001  # all above the top bucket


def test_stage_histograms_terminals_by_kind_and_request_ids_in_logs(
    db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    site = Site(db_dsn)
    # Time every request, so the histogram counts can be checked exactly.
    site.start(extra_env={"ONECARD_METRICS_PORT": str(port),
                          "ONECARD_LATENCY_SAMPLE_EVERY": "1"})
    try:
        card = site.card()["card_no"]
        pos = site.client(FREE_CANTEEN_TERMINAL)
        shop = site.client(SUPERMARKET_TERMINAL)
        for seq in range(1, 6):
            assert pos.request(ocp.Purchase(seq, card, 100, 0)).code == RC.APPROVED
        assert pos.request(ocp.BalanceInquiry(6, card)).code == RC.APPROVED
        declined = pos.request(ocp.Purchase(7, UNKNOWN_CARD_NO, 100, 0))
        assert declined.code == RC.UNKNOWN_CARD

        m = _samples(port)
        stage = "onecard_request_stage_duration_seconds_count"
        for name in ("decode", "authorize", "commit_wait"):
            assert m[(stage, (("stage", name),))] == 7, name
        e2e = "onecard_request_duration_seconds_count"
        assert m[(e2e, (("type", "purchase"),))] == 6
        assert m[(e2e, (("type", "inquiry"),))] == 1
        # End to end contains its stages: the sums can be compared, the samples are the same.
        total = m[("onecard_request_duration_seconds_sum", (("type", "purchase"),))] + m[
            ("onecard_request_duration_seconds_sum", (("type", "inquiry"),))]
        parts = sum(m[("onecard_request_stage_duration_seconds_sum", (("stage", s),))]
                    for s in ("decode", "authorize", "commit_wait"))
        assert 0 < parts <= total
        assert m[("onecard_terminals_connected", (("kind", "pos"),))] == 2
        _wait_for("balance-cache gauges",
                  lambda: _samples(port).get(("onecard_ledger_cards", ()), 0) > 0)
        m = _samples(port)
        assert m[("onecard_ledger_accounts", ())] == 300
        assert m[("onecard_ledger_holds_outstanding", ())] == 0
        # The event-loop lag probe runs (every 10 ms) and keeps its largest lag.
        assert m[("onecard_event_loop_lag_seconds_count", ())] > 0
        assert 0 < m[("onecard_event_loop_lag_max_seconds", ())] < 60
        assert m[("onecard_requests_total", (("code", "unknown_card"), ("type", "purchase")))] == 1
        assert onecard_main(["status", "--url", f"http://127.0.0.1:{port}"]) == 0
        shown = capsys.readouterr().out
        assert "terminals by kind     pos 2" in shown
        assert "commit_wait" in shown and "end to end" in shown and "accounts 300" in shown

        # A frame whose MAC does not verify: a security event, logged with its reason.
        frame = bytearray(shop.conn.send(ocp.Purchase(1, card, 100, 0)))
        frame[-1] ^= 0xFF
        shop.send_raw(bytes(frame))
        answers = shop.read_until_closed()
        assert [getattr(a, "code", None) for a in answers] == [RC.BAD_MAC]
        _wait_for("terminal gauge after the close", lambda: _samples(port)[
            ("onecard_terminals_connected", (("kind", "pos"),))] == 1)
        pos.close()
        shop.close()
    finally:
        site.stop()

    events = _log_events(site)
    # Declines are counted, and summed up in one line (at the latest when the switch stops);
    # the details of each are in its journal row, found by its request id.
    declines = [e for e in events if e["event"] == "requests.declined"]
    assert [(e["total"], e["codes"]) for e in declines] == [(1, {"unknown_card": 1})]
    (row,) = site.journal(FREE_CANTEEN_TERMINAL, 7)
    assert row["code"] == RC.UNKNOWN_CARD
    security = [e for e in events if e["event"] == "ocp.security_violation"]
    assert [(e["reason"], e["terminal_id"]) for e in security] == [
        ("bad_mac", SUPERMARKET_TERMINAL)]
    # Approved purchases are not logged at info level.
    assert not [e for e in events if e["event"] == "request.approved"]
    text = site.switch.log_path.read_text() if site.switch else ""
    assert site.master.hex() not in text  # the master secret is never logged
