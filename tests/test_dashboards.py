"""The Grafana dashboards shipped in ops/ query only what the switch and the admin API
export, and name no datasource of their own: they import into any Grafana (the DS_PROMETHEUS
input) and work provisioned (the DS_PROMETHEUS datasource variable)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from admin_api._app import ROUTES, Metrics
from switch import _metrics

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "ops" / "grafana" / "dashboards").glob("*.json"))
DATASOURCE_UID = "onecard-prometheus"
"""The provisioned datasource (ops/grafana/provisioning/datasources/onecard.yml)."""
DATASOURCE_REF = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def _exported_names() -> set[str]:
    """Every series name the switch (the global registry) and the admin API (its own) export."""
    names = set()
    families = [*REGISTRY.collect(), *Metrics().registry.collect()]
    for family in families:
        if not family.name.startswith("onecard_"):
            continue
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def _admin_routes() -> set[str]:
    """The admin API's route templates as its metrics label them (`/people/{person_id}`)."""
    return {re.sub(r":\w+}", "}", path) for handler in ROUTES for path in handler.paths}


ADMIN_LABELS = {"method": {"GET", "POST", "PUT", "PATCH", "DELETE"},
                "status": {str(s) for s in range(100, 600)}}


def _queries(dashboard: dict[str, object]) -> list[tuple[str, dict[str, object], str]]:
    out = []
    for panel in dashboard["panels"]:  # type: ignore[attr-defined]
        for target in panel.get("targets", []):
            out.append((panel["title"], panel, target["expr"]))
    return out


def test_there_is_a_dashboard() -> None:
    assert DASHBOARDS, "ops/grafana/dashboards holds no dashboard"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_names_an_exported_metric_and_known_labels(path: Path) -> None:
    exported = _exported_names()
    dashboard = json.loads(path.read_text())
    codes = set(_metrics.CODE_NAMES.values())
    types = set(_metrics.REQUEST_TYPES.values())
    known = {"code": codes, "type": types, "stage": set(_metrics.STAGES),
             "kind": set(_metrics.TERMINAL_KINDS.values())}
    queries = _queries(dashboard)
    assert queries
    for title, panel, expr in queries:
        used = set(re.findall(r"\bonecard_[a-z0-9_]+", expr))
        assert used, f"{title}: {expr!r} names no onecard metric"
        assert used <= exported, f"{title}: {sorted(used - exported)} are not exported"
        for label, value in re.findall(r'\b(code|type|stage|kind)!?=~?"([^"]+)"', expr):
            assert value in known[label], f"{title}: {label}={value}"
        # The admin API's labels: an exact value must exist, a regex must match one.
        admin_known = {**ADMIN_LABELS, "route": _admin_routes() | {"unmatched"}}
        for label, op, value in re.findall(r'\b(method|status|route)(!?=~?)"([^"]+)"', expr):
            if "~" in op:
                assert any(re.fullmatch(value, v) for v in admin_known[label]), (
                    f"{title}: {label}=~{value} matches no {label}")
            else:
                assert value in admin_known[label], f"{title}: {label}={value}"
        assert panel["datasource"] == DATASOURCE_REF, title


def _datasource_refs(node: object) -> list[object]:
    """Every `datasource` value anywhere in a dashboard (panels, targets, variables)."""
    if isinstance(node, dict):
        own = [node["datasource"]] if "datasource" in node else []
        return own + [r for v in node.values() for r in _datasource_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _datasource_refs(v)]
    return []


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_importable_anywhere_and_provisioned_here(path: Path) -> None:
    text = path.read_text()
    dashboard = json.loads(text)
    # Import (Dashboards > New > Import) asks for the Prometheus datasource and puts its uid
    # wherever ${DS_PROMETHEUS} is written.
    (ds_input,) = dashboard["__inputs"]
    assert {k: ds_input[k] for k in ("name", "type", "pluginId")} == {
        "name": "DS_PROMETHEUS", "type": "datasource", "pluginId": "prometheus"}
    # Provisioning does not read __inputs: there ${DS_PROMETHEUS} is the dashboard's datasource
    # variable, which starts at the default Prometheus (the provisioned one).
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"], variable["current"]) == (
        "DS_PROMETHEUS", "prometheus", {})
    refs = _datasource_refs(dashboard["panels"])
    assert refs and all(ref == DATASOURCE_REF for ref in refs), refs
    assert DATASOURCE_UID not in text  # no datasource uid is hard-wired


def test_the_scrape_config_and_provisioning_agree() -> None:
    prometheus = (ROOT / "ops" / "prometheus.yml").read_text()
    assert "job_name: onecard-switch" in prometheus and "/metrics" in prometheus
    # The admin API on its default port (admin_api/_settings.py), its metrics at /metrics.
    assert "job_name: onecard-admin" in prometheus and '"127.0.0.1:8080"' in prometheus
    datasource = (ROOT / "ops" / "grafana" / "provisioning" / "datasources" / "onecard.yml")
    text = datasource.read_text()
    assert f"uid: {DATASOURCE_UID}" in text and "type: prometheus" in text
    assert "isDefault: true" in text  # what the dashboards' DS_PROMETHEUS variable starts at


def test_every_panel_is_explained_in_the_operations_guide() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            title = panel["title"]
            assert f"| {title} |" in guide, f"{title} is not in docs/operations.md"
