"""ops/check_prometheus.py without Prometheus: the parts that decide what it asks and how it
judges the answers. The real run needs a prometheus binary, which CI does not install, so it is a
documented manual check (docs/operations.md, "Checking the dashboards with a real Prometheus");
nothing here skips."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest

from tests.switch_site import Site, free_port

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "ops" / "grafana" / "dashboards").glob("*.json"))


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_prometheus", ROOT / "ops" / "check_prometheus.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


cp = _load()
VARIABLES = re.compile(r"\$\{?\w+|\[\[\w+")


def _titles() -> set[str]:
    return {str(p.get("title")) for path in DASHBOARDS
            for p in cp.dashboard_panels(json.loads(path.read_text()))}


def test_every_target_of_every_dashboard_is_a_query() -> None:
    assert DASHBOARDS
    queries = cp.all_dashboard_queries()
    targets = sum(len(p.get("targets", [])) for path in DASHBOARDS
                  for p in cp.dashboard_panels(json.loads(path.read_text())))
    assert len(queries) == targets > 0
    assert {q.dashboard for q in queries} == {p.name for p in DASHBOARDS}
    for q in queries:
        assert q.expr, f"{q.dashboard}: {q.panel} [{q.ref_id}] has no expr"
    # refIds are what the report names: unique within a panel.
    keys = [(q.dashboard, q.panel_id, q.panel, q.ref_id) for q in queries]
    assert len(keys) == len(set(keys))


def test_rows_are_walked_into() -> None:
    dashboard = {"panels": [
        {"type": "row", "title": "r", "panels": [
            {"title": "inner", "targets": [{"refId": "A", "expr": "up"}]}]},
        {"title": "outer", "targets": [{"expr": "up"}, {"refId": "Z"}]},
    ]}
    assert [p["title"] for p in cp.dashboard_panels(dashboard)] == ["r", "inner", "outer"]


def test_rows_and_missing_exprs_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"panels": [
        {"type": "row", "title": "r", "panels": [
            {"id": 7, "title": "inner", "targets": [{"refId": "A", "expr": "up"}]}]},
        {"title": "outer", "targets": [{"expr": "up"}, {"refId": "Z", "expr": " "}]},
    ]}))
    got = [(q.panel, q.ref_id, q.expr) for q in cp.dashboard_queries(path)]
    assert got == [("inner", "A", "up"), ("outer", "A", "up"), ("outer", "Z", None)]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_is_left_with_no_grafana_variable(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    variables = cp.grafana_variables(dashboard, job="onecard-switch", instance="127.0.0.1:9107")
    for q in cp.dashboard_queries(path):
        promql = cp.substitute(q.expr, variables)
        assert not VARIABLES.findall(promql), (q.panel, promql)
        assert not cp.unknown_variables(q.expr, variables), (q.panel, q.expr)
        if "$" not in q.expr and "[[" not in q.expr:
            assert promql == q.expr


def test_grafana_variable_syntaxes_are_substituted_like_grafana() -> None:
    dashboard = {"templating": {"list": [
        {"name": "site", "type": "custom", "current": {"value": "east"}},
        {"name": "code", "type": "query", "current": {"value": ["$__all"]}, "allValue": ".+"},
        {"name": "two", "type": "custom", "current": {"value": ["a", "b.c"]}},
        {"name": "job", "type": "query", "current": {"value": "something-else"}},
    ]}}
    v = cp.grafana_variables(dashboard, job="onecard-switch", instance="h:1", rate_interval="15s")
    expr = ('sum(rate(x{job="$job",instance=~"${instance:regex}",site="[[site]]",'
            'code=~"$code",two=~"$two"}[$__rate_interval]))')
    assert cp.substitute(expr, v) == (
        'sum(rate(x{job="onecard-switch",instance=~"h:1",site="east",code=~".+",'
        'two=~"(a|b\\.c)"}[15s]))')
    assert cp.substitute("increase(x[$__range])", v) == "increase(x[3600s])"
    # Unknown names stay as written (Prometheus then refuses them); $1 is label_replace's.
    assert cp.substitute("rate(x[$nope])", v) == "rate(x[$nope])"
    assert cp.unknown_variables("rate(x[$nope])", v) == ["nope"]
    assert cp.unknown_variables('label_replace(x, "a", "$1", "b", "(.*)")', v) == []


def test_the_may_be_empty_lists_name_only_panels_that_exist_and_say_why() -> None:
    titles = _titles()
    for title, reason in cp.MAY_BE_EMPTY.items():
        assert title in titles, f"{title!r} is not a dashboard panel"
        assert len(reason.strip()) > 20, title


def test_a_metrics_page_declares_series_with_no_sample_yet() -> None:
    text = ("# HELP onecard_requests_total r\n# TYPE onecard_requests_total counter\n"
            "# HELP onecard_x_seconds x\n# TYPE onecard_x_seconds histogram\n"
            "# HELP onecard_g g\n# TYPE onecard_g gauge\nonecard_g 1.0\n")
    assert cp.exported_series(text) >= {
        "onecard_requests_total", "onecard_x_seconds_bucket", "onecard_x_seconds_sum",
        "onecard_x_seconds_count", "onecard_g"}


def _empty(expr: str) -> object:
    return cp.QueryResult("d.json", 1, "p", "A", expr, expr, status=cp.STATUS_EMPTY)


def test_on_a_target_empty_is_allowed_only_for_metrics_the_target_exports() -> None:
    exported = {cp.JOB_SWITCH: {"onecard_requests_total"},
                cp.JOB_ADMIN: {"onecard_admin_requests_total"}}
    quiet = _empty("sum(rate(onecard_requests_total[1m]))")
    unknown = _empty("sum(rate(onecard_requests_total[1m])) / sum(onecard_nope)")
    wrong_job = _empty("sum(rate(onecard_admin_requests_total[1m])) + onecard_requests_total")
    cp.allow_quiet([quiet, unknown, wrong_job], exported)
    assert quiet.may_be_empty == cp.QUIET_TARGET and quiet.passed
    assert not unknown.passed and not wrong_job.passed


def test_every_switch_query_may_be_empty_on_a_quiet_switch(db_dsn: str) -> None:
    """`--target` on a quiet site: a switch that has served nothing declares every metric the
    dashboards read, so their empty answers pass; the check failed there before."""
    port = free_port()
    site = Site(db_dsn)
    site.start(extra_env={"ONECARD_METRICS_PORT": str(port)})
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            exported = {cp.JOB_SWITCH: cp.exported_series(resp.read().decode())}
    finally:
        assert site.stop() == 0
    results = [_empty(q.expr) for q in cp.all_dashboard_queries()
               if cp.query_job(q.expr) == cp.JOB_SWITCH]
    assert len(results) > 20
    cp.allow_quiet(results, exported)
    assert cp.judge(results), [r.expr for r in results if not r.passed]


def _vector(*values: str) -> dict[str, object]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [1.0, v]} for v in values]}}


def test_answers_are_classified() -> None:
    assert cp.classify(_vector("1.5", "0")) == ("OK", 2, [1.5, 0.0], None)
    assert cp.classify(_vector("0"))[0] == "OK"  # a flat zero line is data
    assert cp.classify(_vector("+Inf"))[0] == "OK"
    assert cp.classify(_vector("NaN", "NaN"))[:2] == ("EMPTY", 2)  # quantile of nothing
    assert cp.classify(_vector()) == ("EMPTY", 0, [], None)
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}}
    assert cp.classify(scalar)[0] == "OK"
    bad = {"status": "error", "errorType": "bad_data", "error": "parse error: unexpected"}
    assert cp.classify(bad) == ("ERROR", 0, [], "parse error: unexpected")


def _result(status: str, allowed: str | None = None) -> object:
    return cp.QueryResult("d.json", 1, "p", "A", "up", "up", status=status, may_be_empty=allowed)


def test_the_verdict() -> None:
    assert not cp.judge([])
    assert cp.judge([_result("OK"), _result("OK", "why")])
    assert cp.judge([_result("OK"), _result("EMPTY", "why")])
    assert not cp.judge([_result("OK"), _result("EMPTY")])
    assert not cp.judge([_result("ERROR", "why")])  # a bad query is never excused
    table = cp.render_table([_result("OK"), _result("EMPTY", "why"), _result("EMPTY")])
    assert "EMPTY*" in table and "allowed: why" in table and "NOT allowed" in table


def test_the_temporary_scrape_config_keeps_the_jobs_and_replaces_the_targets() -> None:
    text = (ROOT / "ops" / "prometheus.yml").read_text()
    assert cp.job_names(text) == [cp.JOB_SWITCH, cp.JOB_ADMIN] == [
        "onecard-switch", "onecard-admin"]
    out = cp.scrape_config(text, {cp.JOB_SWITCH: "127.0.0.1:45678",
                                  cp.JOB_ADMIN: "127.0.0.1:45679"})
    assert cp.job_names(out) == cp.job_names(text)
    switch, admin = out.split("job_name:")[1:]
    assert 'targets: ["127.0.0.1:45678"]' in switch and 'targets: ["127.0.0.1:45679"]' in admin
    jobs_part = out.split("scrape_configs:", 1)[1]
    assert "9107" not in jobs_part and "8080" not in jobs_part
    assert set(re.findall(r"(?:scrape|evaluation)_interval:\s*(\S+)", out)) == {"1s"}
    assert out.count("metrics_path: /metrics") == 2

    # A job without a target (--target without --admin-target) is left out.
    only = cp.scrape_config(text, {cp.JOB_SWITCH: "127.0.0.1:45678"})
    assert cp.job_names(only) == [cp.JOB_SWITCH]
    assert "8080" not in only.split("scrape_configs:", 1)[1]
    with pytest.raises(ValueError, match="no job"):
        cp.scrape_config(text, {"onecard-bank-link": "127.0.0.1:1"})


def test_each_query_is_asked_of_the_job_whose_metrics_it_reads() -> None:
    jobs = {q.dashboard: set() for q in cp.all_dashboard_queries()}
    for q in cp.all_dashboard_queries():
        jobs[q.dashboard].add(cp.query_job(q.expr))
    assert jobs["onecard-switch.json"] == {cp.JOB_SWITCH}
    assert jobs["onecard-admin-api.json"] == {cp.JOB_ADMIN}


def test_an_admin_target_goes_with_a_switch_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert cp.main(["--admin-target", "127.0.0.1:8080"]) == 2
    assert "--admin-target goes with --target" in capsys.readouterr().err
    assert cp.main(["--target", "127.0.0.1:9107", "--admin-target", "http://x"]) == 2
    assert "--admin-target wants HOST:PORT" in capsys.readouterr().err


def test_no_prometheus_is_a_clear_failure_not_a_pass(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cp, "find_prometheus", lambda explicit=None: None)
    assert cp.main([]) == 2
    err = capsys.readouterr().err
    assert "no prometheus binary" in err and "--install" in err
    assert "Nothing was checked" in err
