"""Load tests with locust, short and on loopback: a real switch process on a seeded PostgreSQL
site, locust as a subprocess (never imported here: it monkey-patches the standard library for
gevent), its CSV checked against the journal. No assertion on timing or throughput.

The locust-free parts of the users (the blocking OCP session, the plan of terminals) are tested
in this process.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest.load_plan import LoadPlan, TerminalGrant, TerminalPool, parse_ocp_host, split_plan
from loadtest.ocp_session import OcpSession, SessionLost, SignOnRefused
from loadtest.site_catalog import parse_id_range
from protocols import ocp
from tests.switch_site import FIXED_CANTEEN_TERMINAL, FREE_CANTEEN_TERMINAL, Site, free_port

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
LOCUST_SECONDS_MAX = 120
"""Deadline of one locust process (it runs for a few seconds)."""
PROTOCOL_REQUESTS = ("purchase", "inquiry", "reversal")


def _locust_cmd(*args: str) -> list[str]:
    if importlib.util.find_spec("locust") is None:
        pytest.fail("locust is not installed: pip install -e '.[test]'")
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--only-summary", *args]


def _site_env(site: Site, *, with_secrets: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ONECARD_DSN", "ONECARD_MASTER_SECRET")}
    if with_secrets:
        env.update(ONECARD_DSN=site.dsn, ONECARD_MASTER_SECRET=site.master.hex())
    return env


def _stats(prefix: Path) -> dict[str, dict[str, Any]]:
    """The rows of locust's `_stats.csv`, by name (Aggregated included)."""
    with open(f"{prefix}_stats.csv", newline="") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def _rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _count(stats: dict[str, dict[str, Any]], name: str) -> int:
    row = stats.get(name)
    return int(row["Request Count"]) if row else 0


def _check_run(site: Site, prefix: Path, users: int) -> dict[str, dict[str, Any]]:
    """The checks every run must pass; returns the stats rows."""
    stats = _stats(prefix)
    assert _count(stats, "purchase") > 0, stats
    assert int(stats["Aggregated"]["Failure Count"]) == 0, stats
    assert _rows(f"{prefix}_failures.csv") == []
    assert _rows(f"{prefix}_exceptions.csv") == []
    assert _count(stats, "sign-on") == users, "one sign-on per user, none repeated"
    for name in stats:
        assert name in ("Aggregated", "sign-on", "heartbeat", *PROTOCOL_REQUESTS) or any(
            name.startswith(f"{kind} declined:") for kind in PROTOCOL_REQUESTS), name
    assert stats["purchase"]["Type"] == "OCP"

    # Every answer locust counted is a journal row of these terminals (the journal may hold a
    # few more: requests in flight when locust stopped its users).
    terminals = site.seed.terminals
    kinds = {"purchase": 1, "reversal": 2, "inquiry": 3}
    rows = site.fetch(
        "SELECT kind, code, count(*) AS n FROM journal WHERE terminal_id = ANY($1::int[])"
        " GROUP BY kind, code", terminals)
    journal = {(r["kind"], r["code"]): r["n"] for r in rows}
    for name, row in stats.items():
        kind_name, _, declined = name.partition(" declined:")
        if kind_name not in kinds:
            continue
        code = int(ocp.ResponseCode[declined]) if declined else 0
        assert journal.get((kinds[kind_name], code), 0) >= int(row["Request Count"]), (
            name, journal)
    answered = sum(int(r["Request Count"]) for n, r in stats.items()
                   if n.partition(" ")[0] in kinds)
    assert sum(journal.values()) >= answered > 0
    assert '"ocp.session_superseded"' not in site.switch.log_path.read_text(), (  # type: ignore[union-attr]
        "two users shared a terminal")
    return stats


def _stop_and_audit(site: Site) -> None:
    assert site.stop() == 0
    report = site.audit()
    assert report.conserved, report


def test_headless_locust_run_with_csv(db_dsn: str, tmp_path: Path) -> None:
    site = Site(db_dsn)
    switch = site.start()
    try:
        prefix = tmp_path / "run"
        users = 8
        out = subprocess.run(
            _locust_cmd(
                "--headless", "-u", str(users), "-r", str(users), "--run-time", "5s",
                "--host", f"ocp://{switch.host}:{switch.port}", "--csv", str(prefix),
                "--ocp-think-min-seconds", "0.02", "--ocp-think-max-seconds", "0.1",
                "--ocp-lost-card-share", "0.05",
            ),
            env=_site_env(site), cwd=tmp_path, capture_output=True, text=True,
            timeout=LOCUST_SECONDS_MAX,
        )
        assert out.returncode == 0, out.stderr[-4000:]
        assert "onecard: 10 terminals (2 fixed-price)" in out.stderr, out.stderr[-4000:]
        stats = _check_run(site, prefix, users)
        assert _count(stats, "inquiry") > 0, stats
    finally:
        if site.switch is not None and site.switch.proc is not None \
                and site.switch.proc.poll() is None:
            _stop_and_audit(site)


def test_distributed_locust_run_with_heartbeats(db_dsn: str, tmp_path: Path) -> None:
    """1 master + 2 workers on loopback. Workers get no DSN and no secret: the master sends
    each its own terminals. A heartbeat interval of 1 s and think times over 4 s: sessions
    stay up only because idle users send heartbeats (the switch drops a session silent for 3
    intervals)."""
    site = Site(db_dsn)
    switch = site.start(extra_env={"ONECARD_HEARTBEAT_INTERVAL_SECONDS": "1"})
    workers: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        port = free_port()
        prefix = tmp_path / "dist"
        users = 6
        master_log = tmp_path / "master.log"
        with open(master_log, "wb") as mlog:
            master = subprocess.Popen(
                _locust_cmd(
                    "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port",
                    str(port), "--expect-workers", "2", "--headless", "-u", str(users), "-r",
                    str(users), "--run-time", "7s",
                    "--host", f"ocp://{switch.host}:{switch.port}", "--csv", str(prefix),
                    "--ocp-think-min-seconds", "4.2", "--ocp-think-max-seconds", "4.8",
                ),
                env=_site_env(site), cwd=tmp_path, stdout=mlog, stderr=subprocess.STDOUT,
            )
            for i in range(2):
                logs.append(tmp_path / f"worker{i}.log")
                with open(logs[-1], "wb") as wlog:
                    workers.append(subprocess.Popen(
                        _locust_cmd("--worker", "--master-host", "127.0.0.1", "--master-port",
                                    str(port)),
                        env=_site_env(site, with_secrets=False), cwd=tmp_path, stdout=wlog,
                        stderr=subprocess.STDOUT,
                    ))
            try:
                code = master.wait(LOCUST_SECONDS_MAX)
            finally:
                if master.poll() is None:
                    master.kill()
        text = master_log.read_text(errors="replace")
        assert code == 0, text[-4000:]
        for worker, log in zip(workers, logs, strict=True):
            assert worker.wait(60) == 0, log.read_text(errors="replace")[-4000:]
            assert "onecard: 5 terminals for this worker" in log.read_text(errors="replace")
        assert "onecard: 10 terminals shared among 2 workers" in text
        stats = _check_run(site, prefix, users)
        assert _count(stats, "heartbeat") > 0, stats
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait(30)
        if site.switch is not None and site.switch.proc is not None \
                and site.switch.proc.poll() is None:
            _stop_and_audit(site)


# --- The locust-free parts, in this process ---------------------------------------------------


def test_importing_loadtest_never_imports_locust() -> None:
    code = ("import sys, loadtest, loadtest.ocp_session, loadtest.load_plan, "
            "loadtest.site_catalog; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('locust', 'gevent')); "
            "assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "locust" not in sys.modules and "gevent" not in sys.modules


def test_ocp_session_against_the_switch(site: Site) -> None:
    assert site.switch is not None
    host, port = site.switch.host, site.switch.port
    tid = FREE_CANTEEN_TERMINAL
    session = OcpSession(host, port, tid, site.key(tid))
    result = session.sign_on(10)
    assert result.code == 0 and session.open
    card = site.card()["card_no"]
    seq = session.next_txn_seq()
    answer = session.request(ocp.Purchase(seq, card, 500, 0), 10)
    assert isinstance(answer, ocp.PurchaseResult) and answer.code == 0 and answer.txn_seq == seq
    lost = site.seed.lost_cards[0]
    answer = session.request(ocp.Purchase(session.next_txn_seq(), lost, 500, 0), 10)
    assert isinstance(answer, ocp.PurchaseResult)
    assert answer.code == ocp.ResponseCode.CARD_LOST
    answer = session.request(ocp.BalanceInquiry(session.next_txn_seq(), card), 10)
    assert isinstance(answer, ocp.BalanceResult) and answer.code == 0
    answer = session.request(ocp.Reversal(session.next_txn_seq(), seq, card, 0), 10)
    assert isinstance(answer, ocp.ReversalResult) and answer.amount_fen == 500
    assert isinstance(session.heartbeat(10), ocp.HeartbeatAck)
    last = session.txn_seq
    session.sign_off()
    assert not session.open

    # A new session of the same terminal that forgot its counter continues after the switch's.
    again = OcpSession(host, port, tid, site.key(tid))
    assert again.sign_on(10).last_txn_seq == last
    assert again.next_txn_seq() == last + 1
    again.close()

    fixed = OcpSession(host, port, FIXED_CANTEEN_TERMINAL, site.key(FIXED_CANTEEN_TERMINAL))
    fixed.sign_on(10)
    answer = fixed.request(ocp.Purchase(fixed.next_txn_seq(), card, 0, 0), 10)
    assert isinstance(answer, ocp.PurchaseResult) and answer.code == 0 and answer.amount_fen > 0

    with pytest.raises(SignOnRefused):
        OcpSession(host, port, 999_999, site.key(999_999)).sign_on(10)
    with pytest.raises(SignOnRefused):
        OcpSession(host, port, tid, os.urandom(32)).sign_on(10)

    assert site.stop() == 0
    with pytest.raises(SessionLost):
        fixed.request(ocp.BalanceInquiry(fixed.next_txn_seq(), card), 10)
    assert not fixed.open
    with pytest.raises(SessionLost):
        OcpSession(host, port, tid, site.key(tid)).sign_on(10)


def test_plan_gives_each_terminal_to_one_user_at_a_time() -> None:
    grants = [TerminalGrant(t, "00" * 32, t % 5 == 2) for t in range(1, 11)]
    plan = LoadPlan(grants, [8_800_000_010], [])
    parts = split_plan(plan, 3)
    ids = [g.terminal_id for p in parts for g in p.terminals]
    assert sorted(ids) == list(range(1, 11)) and [len(p.terminals) for p in parts] == [4, 3, 3]

    pool = TerminalPool()
    pool.load(plan)
    taken = [pool.take() for _ in range(10)]
    assert [g.terminal_id for g in taken if g] == list(range(1, 11))
    assert pool.take() is None
    first = taken[0]
    assert first is not None
    pool.give_back(first, 41)
    pool.load(plan)  # a new test start while users hold terminals: they stay held
    assert pool.free == 1 and pool.last_txn_seq(1) == 41
    again = pool.take()
    assert again is not None and again.terminal_id == 1


def test_host_and_terminal_range_parsing() -> None:
    assert parse_ocp_host("ocp://10.0.0.5:7701") == ("10.0.0.5", 7701)
    assert parse_ocp_host("tcp://switch.example") == ("switch.example", 7700)
    assert parse_ocp_host("127.0.0.1:7702") == ("127.0.0.1", 7702)
    assert parse_ocp_host(None) == ("127.0.0.1", 7700)
    with pytest.raises(ValueError):
        parse_ocp_host("http://127.0.0.1:7700")
    assert parse_id_range("1-200") == (1, 200)
    assert parse_id_range("17") == (17, 17)
    assert parse_id_range("") == (1, 2**31 - 1)
    with pytest.raises(ValueError):
        parse_id_range("9-3")
