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
    bank = state.get("bank")
    if isinstance(bank, dict):
        lines.append(f"  bank link             {'UP' if bank.get('available') else 'DOWN'}: "
                     f"{bank.get('connections', 0)} connection(s) signed on, "
                     f"{bank.get('pending', 0)} request(s) pending; top-ups "
                     f"{'available' if state.get('topups_available') else 'unavailable'}")
    elif bank == "disabled":
        lines.append("  bank link             not configured (no top-ups)")
    _, metrics = _get(base + "/metrics")
    requests: dict[tuple[str, str], float] = {}
    errors: dict[str, float] = {}
    batches = rows = 0.0
    kinds: dict[str, float] = {}
    gauges: dict[str, float] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(metrics.decode()):
        for sample in family.samples:
            if sample.name == "onecard_request_stage_duration_seconds_bucket":
                buckets.setdefault(sample.labels["stage"], []).append(
                    (float(sample.labels["le"]), sample.value))
            elif sample.name == "onecard_request_duration_seconds_bucket":
                buckets.setdefault("end to end", []).append(
                    (float(sample.labels["le"]), sample.value))
            elif sample.name == "onecard_terminals_connected":
                kinds[sample.labels["kind"]] = sample.value
            elif sample.name in _GAUGES:
                gauges[sample.name] = sample.value
            elif sample.name == "onecard_requests_total":
                requests[(sample.labels["type"], sample.labels["code"])] = sample.value
            elif sample.name == "onecard_protocol_errors_total":
                errors[sample.labels["code"]] = sample.value
            elif sample.name == "onecard_journal_batch_rows_count":
                batches = sample.value
            elif sample.name == "onecard_journal_batch_rows_sum":
                rows = sample.value
    if kinds:
        lines.append("  terminals by kind     " + ", ".join(
            f"{kind} {n:,.0f}" for kind, n in sorted(kinds.items()) if n))
    if gauges:
        lines.append("  balance cache         " + ", ".join(
            f"{label} {gauges[name]:,.0f}" for name, label in _GAUGES.items() if name in gauges))
    if any(b[-1][1] for b in buckets.values()):
        lines.append("  latency since start (sampled)   p50        p99        requests timed")
        for stage in ("decode", "authorize", "commit_wait", "end to end"):
            merged = _merge(buckets.get(stage, []))
            if merged and merged[-1][1]:
                lines.append(f"    {stage:<28} {_ms(quantile(0.5, merged)):>9} "
                             f"{_ms(quantile(0.99, merged)):>10} {merged[-1][1]:>16,.0f}")
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


_GAUGES = {
    "onecard_ledger_accounts": "accounts",
    "onecard_ledger_cards": "cards",
    "onecard_ledger_holds_outstanding": "holds",
    "onecard_ledger_memory_bytes": "bytes",
}


def _merge(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Cumulative buckets of several label sets (end to end is kept per type) added up."""
    total: dict[float, float] = {}
    for le, n in points:
        total[le] = total.get(le, 0.0) + n
    return sorted(total.items())


def quantile(q: float, cumulative: list[tuple[float, float]]) -> float:
    """The q-quantile of a cumulative histogram [(le, count)...], interpolated inside a bucket
    the way PromQL's histogram_quantile does (the +Inf bucket answers its lower bound)."""
    count = cumulative[-1][1]
    rank = q * count
    lower_le, lower_n = 0.0, 0.0
    for le, n in cumulative:
        if n >= rank:
            if le == float("inf"):
                return lower_le
            if n == lower_n:
                return le
            return lower_le + (le - lower_le) * (rank - lower_n) / (n - lower_n)
        lower_le, lower_n = le, n
    return lower_le


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms" if seconds < 0.01 else f"{seconds * 1000:.1f} ms"


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base_url: str) -> Samples:
    """Every sample of a switch's /metrics: (name, sorted labels) -> value."""
    _, body = _get(base_url.rstrip("/") + "/metrics")
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def histogram_between(before: Samples, after: Samples, name: str,
                      **match: str) -> list[tuple[float, float]]:
    """The cumulative buckets of histogram `name` observed between two scrapes, summed over the
    label sets that carry every `match` label."""
    buckets: dict[float, float] = {}
    for (sample, labels), value in after.items():
        if sample != name + "_bucket":
            continue
        d = dict(labels)
        if any(d.get(k) != v for k, v in match.items()):
            continue
        le = float(d["le"])
        buckets[le] = buckets.get(le, 0.0) + value - before.get((sample, labels), 0.0)
    return sorted(buckets.items())


def switch_figures(before: Samples, after: Samples) -> dict[str, float]:
    """What the switch's own metrics say about a measured interval (latencies in ms)."""
    out: dict[str, float] = {}

    def q(key: str, buckets: list[tuple[float, float]]) -> None:
        if buckets and buckets[-1][1] > 0:
            out[key + "_p50_ms"] = round(quantile(0.5, buckets) * 1000, 3)
            out[key + "_p99_ms"] = round(quantile(0.99, buckets) * 1000, 3)

    q("end_to_end", histogram_between(before, after, "onecard_request_duration_seconds"))
    for stage in ("decode", "authorize", "commit_wait", "commit_queue", "commit", "answer"):
        q(stage, histogram_between(before, after, "onecard_request_stage_duration_seconds",
                                   stage=stage))
    q("group_commit", histogram_between(before, after, "onecard_journal_commit_duration_seconds"))
    for stage in ("prepare", "postgres", "release"):
        q("group_commit_" + stage, histogram_between(
            before, after, "onecard_journal_commit_stage_duration_seconds", stage=stage))
    lag = histogram_between(before, after, "onecard_event_loop_lag_seconds")
    q("loop_lag", lag)
    if lag and lag[-1][1] > 0:
        # The largest lag lies in the first bucket that holds every sample: its bound.
        out["loop_lag_max_le_ms"] = round(
            next(le for le, n in lag if n == lag[-1][1]) * 1000, 3)
    key_sum = ("onecard_journal_batch_rows_sum", ())
    key_count = ("onecard_journal_batch_rows_count", ())
    commits = after.get(key_count, 0.0) - before.get(key_count, 0.0)
    if commits:
        out["rows_per_commit"] = round(
            (after.get(key_sum, 0.0) - before.get(key_sum, 0.0)) / commits, 1)
        out["group_commits"] = commits
        key_sum = ("onecard_journal_batch_bytes_sum", ())
        key_count = ("onecard_journal_batch_bytes_count", ())
        n = after.get(key_count, 0.0) - before.get(key_count, 0.0)
        if n:
            out["bytes_per_commit"] = round(
                (after.get(key_sum, 0.0) - before.get(key_sum, 0.0)) / n)
    return out
