"""The admin API's locust users, short and on loopback: a real admin API and switch on a seeded
site (tests/admin_site.py), a log-in of every role, locust as a subprocess (never imported
here: it monkey-patches the standard library for gevent), its CSV checked against the journal,
the audit trail and the API's own metrics. No assertion on timing or throughput.

The locust-free parts of the users (log-ins, the users file, request names) are tested in this
process.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtest.admin_plan import (
    Login,
    LoginPool,
    UsersFileError,
    build_logins,
    fill,
    parse_http_host,
    parse_users_file,
    request_name,
    route_of,
    topup_amounts,
    usable_people,
)
from tests.admin_site import PASSWORD, AdminSite

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtest" / "locustfile_admin.py"
LOCUST_SECONDS_MAX = 120
"""Deadline of one locust process (it runs for a few seconds)."""
CREDIT, APPROVED = 8, 0
CARD_NO_BASE = 7_000_000_000_000_000  # loadtest/admin_user.py CARD_NO_BASE
TOPUPS = "POST /people/{person_id}/topups"
TOPUPS_SAME_KEY = TOPUPS + " (same key)"
LOGINS = [  # (role of the load test, username, API role)
    ("card_office", "load.card.office", "card_office"),
    ("cashier", "load.cashier.a", "cashier"),
    ("cashier", "load.cashier.b", "card_office"),
    ("cardholder", "load.student", "cardholder"),
    ("auditor", "load.auditor", "auditor"),
    ("reports", "load.canteen.viewer", "merchant_viewer"),
]


def _locust_cmd(*args: str) -> list[str]:
    if importlib.util.find_spec("locust") is None:
        pytest.fail("locust is not installed: pip install -e '.[test]'")
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--only-summary", *args]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "ONECARD_LOAD_ADMIN_PASSWORD"}


def _stats(prefix: Path) -> dict[str, dict[str, Any]]:
    """The final statistics by request name, from `--json-file PREFIX` (PREFIX.json). The CSV
    is rewritten every second while locust runs and not at the end, so it can miss the last
    second's requests; the JSON (like the printed summary) is written after the users stop."""
    entries = json.loads(Path(f"{prefix}.json").read_text())
    return {e["name"]: e for e in entries}


def _error_report(output: str) -> dict[str, int]:
    """Error -> occurrences, from the error report locust prints once its users have stopped
    (without --json-file). The failures CSV is rewritten only while locust runs, so a failure
    in its last second may be missing there."""
    assert "Error report" in output, output[-4000:]
    report = output.split("Error report", 1)[1]
    return {m[2]: int(m[1]) for m in re.finditer(r"(?m)^\s*(\d+)\s+(\S.*?)\s*$", report)}


def _csv_stats(prefix: Path) -> dict[str, dict[str, str]]:
    with open(f"{prefix}_stats.csv", newline="") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def _rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _count(stats: dict[str, dict[str, Any]], name: str) -> int:
    row = stats.get(name)
    return int(row["num_requests"]) if row else 0


def _failures(stats: dict[str, dict[str, Any]], name: str | None = None) -> int:
    return sum(int(e["num_failures"]) for n, e in stats.items() if name in (None, n))


def _metrics(url: str) -> Counter[tuple[str, str, str]]:
    """onecard_admin_requests_total by (route, method, status)."""
    text = httpx.get(url + "/metrics", timeout=30).text
    out: Counter[tuple[str, str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != "onecard_admin_requests":
            continue
        for s in family.samples:
            if s.name.endswith("_total"):
                key = (s.labels["route"], s.labels["method"], s.labels["status"])
                out[key] += int(s.value)
    return out


@pytest.fixture
def admin_site(db_dsn: str) -> Iterator[AdminSite]:
    s = AdminSite(db_dsn)
    s.start()
    s.start_admin()
    try:
        yield s
    finally:
        s.close()


def _users_file(site: AdminSite, path: Path) -> Path:
    """A log-in of every role, made through the API by root, written as a users file."""
    root = site.api()
    campus = site.tenant_node(1)
    student = site.fetch(
        "SELECT p.id FROM people p JOIN accounts a ON a.id = p.account_id"
        " WHERE a.tenant_id = 1 AND a.status = 0 AND EXISTS (SELECT 1 FROM cards c"
        " WHERE c.account_id = a.id AND c.status = 0) ORDER BY p.id LIMIT 1")[0]["id"]
    lines = ["role,username,password"]
    for role, username, api_role in LOGINS:
        body: dict[str, Any] = {"username": username, "password": PASSWORD, "role": api_role,
                                "node_id": campus}
        if api_role == "cardholder":
            body["person_id"] = student
        root.ok("POST", "/users", body, status=201)
        lines.append(f'{role},{username},"{PASSWORD}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def _admin_credits(site: AdminSite) -> tuple[int, int]:
    """(approved credits, their fen) journaled by the admin terminal."""
    row = site.fetch(
        "SELECT count(*) AS n, coalesce(sum(amount_fen), 0)::bigint AS fen FROM journal"
        " WHERE terminal_id = $1 AND kind = $2 AND code = $3",
        site.boot.admin_terminal_id, CREDIT, APPROVED)[0]
    return int(row["n"]), int(row["fen"])


def _audited(site: AdminSite, action: str, username_like: str = "load.%") -> int:
    return int(site.fetch("SELECT count(*) AS n FROM audit_log WHERE action = $1"
                          " AND username LIKE $2", action, username_like)[0]["n"])


def test_headless_admin_run_checked_against_the_journal(admin_site: AdminSite,
                                                        tmp_path: Path) -> None:
    site = admin_site
    assert site.admin is not None
    users_file = _users_file(site, tmp_path / "users.csv")
    assert _admin_credits(site) == (0, 0)
    prefix = tmp_path / "admin"
    users = 10
    out = subprocess.run(
        _locust_cmd(
            "--headless", "-u", str(users), "-r", str(users), "--run-time", "8s",
            "--stop-timeout", "15", "--host", site.admin.url, "--csv", str(prefix),
            "--json-file", str(prefix),
            "--admin-users-file", str(users_file),
            "--admin-think-min-seconds", "0.05", "--admin-think-max-seconds", "0.2",
            # No share of variants: each user's first round still takes every variant (a CSV
            # download, a repeat with the same key) and its second none, so each is seen.
            "--admin-same-key-share", "0", "--admin-csv-share", "0",
        ),
        env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=LOCUST_SECONDS_MAX,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert ("onecard: admin API log-ins by role: card_office 1, cashier 2, cardholder 1, "
            "auditor 1, reports 1") in out.stderr, out.stderr[-4000:]

    stats = _stats(prefix)
    assert _failures(stats) == 0, out.stderr[-4000:]
    assert _rows(f"{prefix}_failures.csv") == []
    assert _rows(f"{prefix}_exceptions.csv") == []
    assert _count(stats, "POST /auth/login") == users, "one log-in per user, none repeated"

    # Every request is named by a route of the API (as its OpenAPI document and its metrics
    # name them), never by a path with ids in it.
    paths = httpx.get(site.admin.url + "/docs/openapi.json", timeout=30).json()["paths"]
    for name, row in stats.items():
        method, route = route_of(name)
        assert method.lower() in paths.get(route, {}), name
        assert row["method"] == method
    assert set(_csv_stats(prefix)) - {"Aggregated"} <= set(stats)

    # Every role worked, and every kind of request was made (the users' first two rounds).
    for name in ("GET /people/{person_id}/statement", "GET /people/{person_id}/balance",
                 "POST /people", "POST /people/{person_id}/cards", TOPUPS, TOPUPS_SAME_KEY,
                 "GET /self/people/{person_id}/balance",
                 "GET /self/people/{person_id}/transactions", "GET /audit",
                 "GET /merchants/{merchant_id}/transactions",
                 "GET /merchants/{merchant_id}/transactions (csv)"):
        assert _count(stats, name) > 0, (name, sorted(stats))

    # Money: every top-up locust counted is one approved credit of the admin terminal, audited
    # once, with one idempotency key; the repeats with the same key moved nothing.
    topups = _count(stats, TOPUPS)
    credits, _fen = _admin_credits(site)
    assert credits == topups
    assert _audited(site, "money.topup") == topups
    keys = site.fetch("SELECT count(*) AS n FROM idempotency_keys WHERE status_code = 201")
    assert keys[0]["n"] == topups

    # Cards: each issued card is a card of the load test's range, audited; loss reports and
    # unfreezes as counted.
    issued = _count(stats, "POST /people/{person_id}/cards")
    cards = site.fetch("SELECT count(*) AS n FROM cards WHERE card_no >= $1", CARD_NO_BASE)
    assert cards[0]["n"] == issued == _audited(site, "card.issue")
    assert _count(stats, "POST /people") == _audited(site, "person.create")
    assert _count(stats, "POST /cards/{card_no}/report-loss") == _audited(
        site, "card.report_loss")
    assert _count(stats, "POST /cards/{card_no}/unfreeze") == _audited(site, "card.unfreeze")

    # The API's metrics saw the same requests, none of them answered 5xx.
    metrics = _metrics(site.admin.url)
    assert not [k for k, n in metrics.items() if k[2].startswith("5") and n], metrics
    assert metrics[("/people/{person_id}/topups", "POST", "201")] == (
        topups + _count(stats, TOPUPS_SAME_KEY))
    for name in stats:
        method, route = route_of(name)
        seen = sum(n for (r, m, _s), n in metrics.items() if (r, m) == (route, method))
        assert seen >= _count(stats, name), (name, seen)

    assert site.stop() == 0
    report = site.audit()
    assert report.conserved, report


def test_money_without_a_switch_is_a_503_retried_with_the_same_key(
        db_dsn: str, tmp_path: Path) -> None:
    site = AdminSite(db_dsn)
    site.start()
    # A money request waits for the switch up to this long, then answers 503.
    site.start_admin(ONECARD_ADMIN_SWITCH_TIMEOUT_SECONDS="1")
    try:
        _run_without_a_switch(site, tmp_path)
    finally:
        site.close()


def _run_without_a_switch(site: AdminSite, tmp_path: Path) -> None:
    assert site.admin is not None
    users_file = _users_file(site, tmp_path / "users.csv")
    assert site.stop() == 0  # the switch; the admin API runs on
    prefix = tmp_path / "noswitch"
    out = subprocess.run(
        _locust_cmd(
            "--headless", "-u", "2", "-r", "2", "--run-time", "4s", "--stop-timeout", "20",
            "--host", site.admin.url, "--csv", str(prefix), "--json-file", str(prefix),
            "--admin-users-file",
            str(users_file), "--admin-think-min-seconds", "0.1",
            "--admin-think-max-seconds", "0.2", "CashierUser",
        ),
        env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=LOCUST_SECONDS_MAX,
    )
    assert out.returncode == 1, out.stderr[-4000:]  # locust: failures
    failures = _rows(f"{prefix}_failures.csv")
    assert failures, out.stderr[-4000:]
    assert {f["Name"] for f in failures} == {TOPUPS, TOPUPS_SAME_KEY}, failures
    assert all("HTTP 503 switch-unavailable" in f["Error"] for f in failures), failures
    stats = _stats(prefix)
    assert _failures(stats, TOPUPS) == _count(stats, TOPUPS) > 0
    assert _count(stats, TOPUPS_SAME_KEY) >= _count(stats, TOPUPS)  # repeated, as asked
    assert _failures(stats) == _count(stats, TOPUPS) + _count(stats, TOPUPS_SAME_KEY)
    assert _admin_credits(site) == (0, 0)

    # A wrong password: the first user's log-in is refused, the others do not try it again
    # (each failed try counts towards locking the user name out for the real cashier).
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("role,username,password\ncashier,load.cashier.a,not the password\n")
    out = subprocess.run(
        _locust_cmd("--headless", "-u", "3", "-r", "3", "--run-time", "2s", "--host",
                    site.admin.url, "--admin-users-file", str(wrong), "CashierUser"),
        env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=LOCUST_SECONDS_MAX,
    )
    assert out.returncode == 1, out.stderr[-4000:]
    errors = _error_report(out.stdout + out.stderr)
    assert sum(errors.values()) == 3 and all("POST /auth/login: " in e for e in errors)
    assert sum(n for e, n in errors.items() if "HTTP 401 not-authenticated" in e) == 1, errors
    assert sum(n for e, n in errors.items() if "NoLogin" in e) == 2, errors
    assert _metrics(site.admin.url)[("/auth/login", "POST", "401")] == 1


def test_no_log_ins_is_a_clear_refusal(tmp_path: Path) -> None:
    out = subprocess.run(
        _locust_cmd("--headless", "-u", "1", "--run-time", "1s",
                    "--host", "http://127.0.0.1:9"),
        env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=LOCUST_SECONDS_MAX,
    )
    assert out.returncode == 2, out.stderr[-4000:]
    assert "no log-ins: give --admin-password" in out.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("role,username,password\nclerk,someone,pw\n")
    out = subprocess.run(
        _locust_cmd("--headless", "-u", "1", "--run-time", "1s", "--host",
                    "http://127.0.0.1:9", "--admin-users-file", str(bad)),
        env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=LOCUST_SECONDS_MAX,
    )
    assert out.returncode == 2 and "row 2: role 'clerk' is not one of" in out.stderr


# --- The locust-free parts, in this process ---------------------------------------------------


def test_importing_the_admin_plan_never_imports_locust() -> None:
    code = ("import sys, loadtest, loadtest.admin_plan; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('locust', 'gevent')); "
            "assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr


def test_users_file_and_options() -> None:
    text = ("role,username,password\n# the counter\ncashier,c1,\"correct horse, battery\"\n"
            "\ncashier,c2,pw2\nauditor,a1,pw3\n")
    got = parse_users_file(text)
    assert got == {"cashier": [Login("c1", "correct horse, battery"), Login("c2", "pw2")],
                   "auditor": [Login("a1", "pw3")]}
    assert "correct" not in repr(got)  # passwords never in a repr (locust logs users)
    for bad, why in [("username,password\nx,y\n", "first row"),
                     ("role,username,password\nclerk,x,y\n", "role 'clerk'"),
                     ("role,username,password\ncashier,x\n", "exactly"),
                     ("role,username,password\ncashier,x,y,z\n", "exactly"),
                     ("role,username,password\ncashier,,y\n", "empty"),
                     ("role,username,password\n", "no log-ins")]:
        with pytest.raises(UsersFileError, match=why):
            parse_users_file(bad)

    names = {"card_office": "card.office", "cashier": "cashier, cashier2", "cardholder": "",
             "auditor": "auditor", "reports": "canteen.viewer"}
    logins = build_logins(names, "pw")
    assert logins["cashier"] == [Login("cashier", "pw"), Login("cashier2", "pw")]
    assert "cardholder" not in logins
    assert build_logins(names, "") == {}  # no password: no log-ins from the options


def test_users_file_replaces_the_roles_it_names(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_bytes("\ufeffrole,username,password\ncashier,z,q\n".encode())  # Excel's BOM
    names = {"cashier": "cashier", "auditor": "auditor"}
    logins = build_logins(names, "pw", str(path))
    assert logins == {"cashier": [Login("z", "q")], "auditor": [Login("auditor", "pw")]}
    with pytest.raises(UsersFileError, match="cannot read"):
        build_logins(names, "pw", str(tmp_path / "missing.csv"))

    pool = LoginPool(logins | {"cardholder": [Login("s1", "a"), Login("s2", "b")]})
    assert [pool.take("cardholder") for _ in range(3)] == [
        Login("s1", "a"), Login("s2", "b"), Login("s1", "a")]
    assert pool.take("reports") is None
    # A log-in the API refused is not tried again (each try counts towards its lock-out).
    pool.refuse(Login("s2", "b"))
    assert [pool.take("cardholder") for _ in range(3)] == [Login("s1", "a")] * 3
    pool.accept(Login("s1", "a"))
    assert pool.accepted == {Login("s1", "a")}
    pool.refuse(Login("s1", "a"))
    assert pool.take("cardholder") is None and not pool.accepted


def test_request_names_are_route_templates() -> None:
    route = "/people/{person_id}/statement"
    assert fill(route, person_id=17) == "/people/17/statement"
    with pytest.raises(ValueError):
        fill(route, card_no=1)
    with pytest.raises(ValueError):
        fill("/people", person_id=1)
    assert request_name("GET", route) == "GET /people/{person_id}/statement"
    name = request_name("POST", "/people/{person_id}/topups", "same key")
    assert name == "POST /people/{person_id}/topups (same key)"
    assert route_of(name) == ("POST", "/people/{person_id}/topups")
    assert route_of("GET /audit") == ("GET", "/audit")


def test_hosts_amounts_and_people() -> None:
    assert parse_http_host("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert parse_http_host(None) == "http://127.0.0.1:8080"
    for bad in ("ocp://127.0.0.1:7700", "127.0.0.1:8080", "http://h:1/api"):
        with pytest.raises(ValueError):
            parse_http_host(bad)
    assert topup_amounts(1000, 5000) == [1000, 2000, 3000, 4000, 5000]
    assert topup_amounts(1500, 1800) == [1500]
    assert topup_amounts(1, 2500) == [1000, 2000]
    with pytest.raises(ValueError):
        topup_amounts(0, 10)
    people = [{"id": 1, "account_status": "active"}, {"id": 2, "account_status": "closed"},
              {"id": 3, "account_status": "lost"}]
    assert usable_people(people) == [1, 3]
