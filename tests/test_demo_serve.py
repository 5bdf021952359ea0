"""`onecard demo --serve`: the whole system comes up, answers as documented, and goes away."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import redis

from onecard.demo import configured_redis_url
from tests import pg


def test_demo_serve_prints_addresses_and_log_ins_that_work_and_stops_cleanly(
        pg_server: pg.TestServer) -> None:
    database = f"{pg_server.run_tag}_serve"  # not a user's own demo database on this server
    pg_server.databases.append(database)
    proc = subprocess.Popen(
        [sys.executable, "-m", "onecard", "demo", "--serve", "--dsn", pg_server.admin_dsn,
         "--database", database, "--accounts", "500", "--terminals", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    client = redis.Redis.from_url(configured_redis_url())
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while not any("simulated purchases per second" in line for line in lines):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        text = "".join(lines)
        url = re.search(r"admin API\s+(http://\S+)", text).group(1)  # type: ignore[union-attr]
        password = re.search(r"password for all: (\S+)", text).group(1)  # type: ignore[union-attr]
        for role in ("platform_admin", "tenant_admin", "card_office", "cashier", "finance",
                     "auditor", "merchant_viewer", "cardholder", "parent"):
            assert role in text
        console = re.search(r"console\s+(http://\S+)", text).group(1)  # type: ignore[union-attr]
        assert console == f"{url}/console/"
        phone = re.search(r"phone pages\s+(http://\S+)", text).group(1)  # type: ignore[union-attr]
        assert phone == f"{url}/m/"
        with httpx.Client(base_url=url, timeout=30) as http:
            assert http.get("/docs/openapi.json").status_code == 200
            assert 'id="login-form"' in http.get("/console/").text
            assert 'id="m-login"' in http.get("/m/").text
            token = http.post("/auth/login", json={"username": "student",
                                                   "password": password}).json()["access_token"]
            http.headers["Authorization"] = f"Bearer {token}"
            [me] = http.get("/self/people").json()
            balance = http.get(f"/self/people/{me['id']}/balance").json()
            assert balance["balance_fen"] == balance["main_fen"] + balance["subsidy_fen"]
            # The phone page's QR code: the demo's student pays with it.
            qr = http.get(f"/self/people/{me['id']}/qr/svg")
            assert qr.status_code == 200 and qr.json()["svg"].startswith("<svg"), qr.text
        # The run's own stream (the admin-init changes went through it), not a shared one.
        stream = re.search(r"change feed .*, stream (onecard:changes:demo-\w+) \(removed",
                           text).group(1)  # type: ignore[union-attr]
        while not client.exists(stream):
            assert time.monotonic() < deadline, f"{stream} never appeared in Redis"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, rest
    assert "stopped" in rest
    assert not client.exists(stream), f"{stream} was left in Redis"
    client.close()
