"""`onecard status`: a running switch's state in a terminal, from its operator HTTP port."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def render_status(base_url: str) -> tuple[bool, str]:
    """(ready, text) for the switch whose operator port is at base_url."""
    base = base_url.rstrip("/")
    code, body = _get(base + "/readyz")
    state = json.loads(body)
    lines = [f"switch at {base}: {'READY' if code == 200 else 'NOT READY'} ({state['phase']})"]
    if state.get("ready"):
        lines.append(f"  terminals signed on   {state['terminals']}")
        lag = state["lsn"] - state["durable_lsn"]
        lines.append(f"  journal lsn           {state['lsn']:,} decided, "
                     f"{state['durable_lsn']:,} durable ({lag} in flight)")
    _, metrics = _get(base + "/metrics")
    requests: dict[tuple[str, str], float] = {}
    errors: dict[str, float] = {}
    batches = rows = 0.0
    for family in text_string_to_metric_families(metrics.decode()):
        for sample in family.samples:
            if sample.name == "onecard_requests_total":
                requests[(sample.labels["type"], sample.labels["code"])] = sample.value
            elif sample.name == "onecard_protocol_errors_total":
                errors[sample.labels["code"]] = sample.value
            elif sample.name == "onecard_journal_batch_rows_count":
                batches = sample.value
            elif sample.name == "onecard_journal_batch_rows_sum":
                rows = sample.value
    if requests:
        lines.append("  requests answered since start:")
        for (kind, name), n in sorted(requests.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {kind:<10} {name:<28} {n:>12,.0f}")
    if errors:
        lines.append("  refused for protocol or security reasons:")
        for name, n in sorted(errors.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {name:<39} {n:>12,.0f}")
    if batches:
        lines.append(f"  group commits         {batches:,.0f} ({rows / batches:.1f} rows each)")
    return code == 200, "\n".join(lines)
