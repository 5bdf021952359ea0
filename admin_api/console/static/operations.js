// Operations: the switch's and the bank link's state, throughput and latency now, terminals
// online (this log-in's by kind for everyone; the whole switch's for a platform log-in), pushed every few seconds by GET /operations/live (the switch's /readyz and /metrics,
// read by the API). Throughput, latency and terminals are the whole switch's: only a
// platform log-in gets them.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  if (!OC.requireLogin()) return;
  const $ = (id) => document.getElementById(id);
  const chart = echarts.init($("ops-chart"));
  const points = [];  // [time text, requests per second], the last POINTS_MAX scrapes
  const POINTS_MAX = 90;
  let last = null;
  let liveState = "";

  function value(id, text, ok) {
    const box = $(id);
    box.textContent = text;
    box.className = "oc-value" + (ok === true ? " oc-ok" : ok === false ? " oc-error" : "");
  }

  function ms(x) { return x === null || x === undefined ? "–" : x.toFixed(x < 10 ? 3 : 1); }

  function render(s) {
    last = s;
    const sw = !s.configured ? OC.t("ops.not_configured")
      : !s.reachable ? OC.t("ops.unreachable")
      : (s.ready ? OC.t("ops.ready") : OC.t("ops.not_ready")) + " (" + s.phase + ")";
    value("ops-switch", sw, s.configured ? s.ready : undefined);
    $("ops-switch").dataset.ready = String(s.ready);
    value("ops-bank", OC.label("bank", s.bank) +
      (s.bank === "up" ? " · " + s.bank_connections : ""), s.bank === "up" ? true
      : s.bank === "down" ? false : undefined);
    value("ops-api", OC.t(s.api_connected ? "sales.connected" : "sales.disconnected"),
          s.api_connected);
    value("ops-doors", s.doors_online + " / " + s.doors);
    // This log-in's terminals by kind, signed on of all (terminal_presence, any log-in).
    const site = document.querySelector("#ops-site-terminals tbody");
    site.textContent = "";
    const kinds = Object.keys(s.terminals || {}).sort();
    for (const kind of kinds) {
      site.append(OC.el("tr", { "data-kind": kind }, [
        OC.el("th", { scope: "row", text: OC.label("terminal_kind", kind) }),
        OC.el("td", { "class": "num ops-online", text: String(s.terminals[kind].online) }),
        OC.el("td", { "class": "num ops-total", text: String(s.terminals[kind].total) })]));
    }
    if (kinds.length === 0) {
      site.append(OC.el("tr", {}, [OC.el("td", { colspan: 3, text: OC.t("ops.no_terminals") })]));
    }
    const f = s.switch;
    $("ops-switch-figures").hidden = !f;
    $("ops-platform-only").hidden = !!f || !s.reachable;
    if (!f) return;
    value("ops-rate", f.requests_per_s.toFixed(1));
    value("ops-approved", f.approved_per_s.toFixed(1));
    value("ops-p50", ms(f.p50_ms));
    value("ops-p99", ms(f.p99_ms));
    $("ops-journal").textContent = f.lsn === null ? "–"
      : OC.t("ops.lsn", { lsn: f.lsn.toLocaleString(), durable: f.durable_lsn.toLocaleString() });
    const body = document.querySelector("#ops-terminals tbody");
    body.textContent = "";
    for (const kind of Object.keys(f.terminals).sort()) {
      body.append(OC.el("tr", { "data-kind": kind }, [
        OC.el("th", { scope: "row", text: kind }),
        OC.el("td", { "class": "num", text: String(f.terminals[kind]) })]));
    }
    chart.setOption({
      animation: false,
      tooltip: { trigger: "axis" },
      grid: { left: 50, right: 20, top: 20, bottom: 30 },
      xAxis: { type: "category", data: points.map((p) => p[0]) },
      yAxis: { type: "value", minInterval: 1 },
      series: [{ name: OC.t("ops.rate"), type: "line", showSymbol: false,
                 data: points.map((p) => p[1]) }],
    });
  }

  function showState() {
    const box = $("live-state");
    box.dataset.state = liveState;
    box.textContent = liveState === "live" ? OC.t("sales.live")
      : liveState === "reconnecting" ? OC.t("sales.reconnecting") : "";
  }

  OC.stream("/operations/live", (name, data) => {
    if (name !== "status") return;
    if (data.switch) {
      points.push([new Date(data.at * 1000).toLocaleTimeString(OC.lang(), { hour12: false }),
                   data.switch.requests_per_s]);
      if (points.length > POINTS_MAX) points.shift();
    }
    render(data);
  }, (state) => { liveState = state; showState(); });
  document.addEventListener("oc:lang", () => { if (last) render(last); showState(); });
  window.addEventListener("resize", () => chart.resize());
});
