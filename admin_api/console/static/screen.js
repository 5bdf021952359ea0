// The big screen: a site's day at a glance, full screen, pushed live by
// GET /tenants/{id}/screen/live (transactions, sales per canteen as an ECharts bar, top-ups,
// door arrivals, active alarms). /console/screen.html?tenant=N picks the site.
"use strict";
document.addEventListener("DOMContentLoaded", async () => {
  if (!OC.requireLogin()) return;
  const $ = (id) => document.getElementById(id);
  const chart = echarts.init($("screen-chart"), "dark");
  const select = $("tenant");
  let live = null;
  let last = null;
  let liveState = "";

  function tick() {
    $("screen-clock").textContent = new Date().toLocaleTimeString(OC.lang(), { hour12: false });
  }
  tick();
  setInterval(tick, 1000);

  function render(s) {
    last = s;
    delete $("screen-name").dataset.i18n;  // the site's name, not a catalogue text
    $("screen-name").textContent = s.name;
    $("screen-purchases").textContent = String(s.purchases);
    $("screen-amount").textContent = OC.yuan(s.amount_fen);
    $("screen-topups").textContent = String(s.topups);
    $("screen-topup-fen").textContent = OC.yuan(s.topup_fen);
    $("screen-arrivals").textContent = s.arrivals === null ? "–" : String(s.arrivals);
    $("screen-people").textContent = s.people_in === null ? ""
      : OC.t("screen.people_in", { n: s.people_in });
    $("screen-alarms").textContent = s.alarms_active === null ? "–" : String(s.alarms_active);
    const names = s.canteens.map((c) => c.name);
    chart.setOption({
      animation: false,
      backgroundColor: "transparent",
      textStyle: { fontSize: 16 },
      tooltip: { trigger: "axis" },
      grid: { left: 20, right: 40, top: 20, bottom: 20, containLabel: true },
      xAxis: { type: "value" },
      yAxis: { type: "category", data: names, inverse: true, axisLabel: { fontSize: 18 } },
      series: [{ name: OC.t("screen.sales"), type: "bar",
                 label: { show: true, position: "right", fontSize: 18,
                          formatter: (p) => OC.yuan(s.canteens[p.dataIndex].amount_fen) },
                 // chart scale only; every text is OC.yuan of integer fen
                 data: s.canteens.map((c) => c.amount_fen / 100) }],
    });
  }

  function showState() {
    const box = $("live-state");
    box.dataset.state = liveState;
    box.textContent = liveState === "live" ? OC.t("sales.live")
      : liveState === "reconnecting" ? OC.t("sales.reconnecting") : "";
  }

  function watch(tenantId) {
    if (live) live.stop();
    live = OC.stream("/tenants/" + tenantId + "/screen/live", (name, data) => {
      if (name === "screen") render(data);
    }, (state) => { liveState = state; showState(); });
  }

  $("screen-full").addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else document.documentElement.requestFullscreen().catch(() => {});
  });
  document.addEventListener("oc:lang", () => { if (last) render(last); showState(); });
  window.addEventListener("resize", () => chart.resize());

  let tenants = [];
  if (OC.can("org.read")) {
    try {
      tenants = (await OC.api("GET", "/org/nodes")).filter((n) => n.kind === "tenant");
    } catch (err) {
      OC.fail("screen-message", err);
      return;
    }
  }
  if (tenants.length === 0) {
    OC.message("screen-message", "sales.no_tenant");
    return;
  }
  for (const n of tenants) select.append(OC.el("option", { value: n.tenant_id, text: n.name }));
  const wanted = OC.params().get("tenant");
  if (wanted && tenants.some((n) => String(n.tenant_id) === wanted)) select.value = wanted;
  select.hidden = tenants.length < 2;
  select.addEventListener("change", () => {
    history.replaceState(null, "", "?tenant=" + select.value);
    watch(select.value);
  });
  watch(select.value);
});
