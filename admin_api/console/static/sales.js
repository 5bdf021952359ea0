// Today's sales by hour: an ECharts line and the same figures as a table, pushed live by the
// API's server-sent events (GET /tenants/{id}/live) as the switch journals each purchase.
"use strict";
document.addEventListener("DOMContentLoaded", async () => {
  if (!OC.requireLogin()) return;
  const select = document.getElementById("tenant");
  const chart = echarts.init(document.getElementById("sales-chart"));
  let live = null;
  let last = null;
  let liveState = "";

  function render(sales) {
    last = sales;
    document.getElementById("sales-purchases").textContent = String(sales.purchases);
    document.getElementById("sales-amount").textContent = OC.yuan(sales.amount_fen);
    document.getElementById("sales-declined").textContent = String(sales.declined);
    const hours = sales.hours.map((h) => String(h.hour).padStart(2, "0") + ":00");
    chart.setOption({
      animation: false,
      tooltip: { trigger: "axis" },
      legend: { data: [OC.t("sales.amount"), OC.t("sales.purchases")] },
      grid: { left: 60, right: 60, top: 40, bottom: 30 },
      xAxis: { type: "category", data: hours },
      yAxis: [{ type: "value", name: OC.t("col.sales") },
              { type: "value", name: OC.t("col.purchases"), minInterval: 1 }],
      series: [
        { name: OC.t("sales.amount"), type: "line", smooth: false,
          data: sales.hours.map((h) => h.amount_fen / 100) },  // chart scale only; text is OC.yuan
        { name: OC.t("sales.purchases"), type: "line", yAxisIndex: 1, step: "middle",
          data: sales.hours.map((h) => h.purchases) },
      ],
    });
    const body = document.querySelector("#sales-table tbody");
    body.textContent = "";
    for (const h of sales.hours) {
      body.append(OC.el("tr", { "data-hour": h.hour }, [
        OC.el("th", { scope: "row", text: hours[h.hour] }),
        OC.el("td", { "class": "num", text: String(h.purchases) }),
        OC.el("td", { "class": "num", text: String(h.declined) }),
        OC.el("td", { "class": "num", text: OC.yuan(h.amount_fen) }),
      ]));
    }
    setSwitch(sales.switch_connected);
    showState();
  }

  function setSwitch(connected) {
    const box = document.getElementById("switch-state");
    box.dataset.connected = connected ? "true" : "false";
    box.textContent = OC.t(connected ? "sales.connected" : "sales.disconnected");
    box.className = "oc-value " + (connected ? "oc-ok" : "oc-error");
  }

  function showState() {
    const box = document.getElementById("live-state");
    box.dataset.state = liveState;
    if (liveState === "live") {
      box.textContent = OC.t("sales.live") + (last ? " · " + OC.t("sales.updated") + " " +
        new Date().toLocaleTimeString(OC.lang(), { hour12: false }) : "");
    } else if (liveState === "reconnecting") {
      box.textContent = OC.t("sales.reconnecting");
    } else {
      box.textContent = "";
    }
  }

  function watch(tenantId) {
    if (live) live.stop();
    live = OC.stream("/tenants/" + tenantId + "/live", (name, data) => {
      if (name === "sales") render(data);
      else if (name === "switch") setSwitch(data.connected);
    }, (state) => { liveState = state; showState(); });
  }

  document.addEventListener("oc:lang", () => { if (last) render(last); });
  window.addEventListener("resize", () => chart.resize());

  let tenants = [];
  if (OC.can("org.read")) {
    try {
      const nodes = await OC.api("GET", "/org/nodes");
      tenants = nodes.filter((n) => n.kind === "tenant");
    } catch (err) {
      OC.fail("sales-message", err);
      return;
    }
  }
  if (tenants.length === 0) {
    OC.message("sales-message", "sales.no_tenant");
    return;
  }
  for (const n of tenants) select.append(OC.el("option", { value: n.tenant_id, text: n.name }));
  const wanted = OC.params().get("tenant");
  if (wanted && tenants.some((n) => String(n.tenant_id) === wanted)) select.value = wanted;
  select.addEventListener("change", () => watch(select.value));
  watch(select.value);
});
