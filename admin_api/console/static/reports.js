// Reports with charts: sales by day or month (line), per merchant and per meal (bar), by
// payment kind, by wallet and by result (pie), declines and exceptions (table). Every chart is also a
// table and a CSV/XLSX export of the API route it comes from (GET /tenants/{id}/summary,
// /tenants/{id}/exceptions, /tenants/{id}/sales/by-wallet, with `format=`). Chart scales are the only floats: text is OC.yuan.
"use strict";
// The sections, each a chart (most), its table and its exports (report-kit.js builds them).
OCR.sections("rep-sections", [
  { id: "sales", title: "rep.sales", chart: true,
    columns: [["rep.col_period"], ["col.purchases", true], ["col.declined", true], ["col.sales", true]] },
  [{ id: "merchant", title: "rep.by_merchant", chart: true,
     columns: [["col.merchant"], ["col.purchases", true], ["col.sales", true]] },
   { id: "meal", title: "rep.by_meal", chart: true,
     columns: [["rep.col_meal"], ["col.purchases", true], ["col.sales", true]] }],
  [{ id: "kind", title: "rep.by_kind", chart: true,
     columns: [["col.kind"], ["rep.col_count", true], ["col.sales", true]] },
   { id: "wallet", title: "rep.by_wallet", chart: true,
     columns: [["rep.col_wallet"], ["rep.col_count", true], ["col.sales", true]] },
   { id: "result", title: "rep.by_result", chart: true,
     columns: [["rep.col_category"], ["rep.col_count", true]] }],
  { id: "exceptions", title: "rep.exceptions", note: "rep.exceptions_note",
    columns: [["col.time"], ["col.merchant"], ["col.card_no"], ["col.kind"], ["rep.col_category"],
              ["col.result"], ["rep.col_amount", true]] },
]);

document.addEventListener("DOMContentLoaded", async () => {
  if (!OC.requireLogin()) return;
  const MSG = "rep-message";
  const SALE_KINDS = ["purchase", "reversal", "capture"];
  const form = document.getElementById("rep-form");
  const select = document.getElementById("tenant");
  const period = document.getElementById("period");
  const fromDay = document.getElementById("from-day");
  const toDay = document.getElementById("to-day");
  const charts = {};
  for (const name of ["sales", "merchant", "meal", "kind", "wallet", "result"]) charts[name] = OCR.chart("chart-" + name);
  let merchants = {};
  let last = null;

  let today = null;  // the tenant's local day (the API's, not the browser's)

  function defaults() {
    if (!today) return;
    toDay.value = today;
    fromDay.value = period.value === "month" ? OCR.monthStart(today, 11) : OCR.addDays(today, -6);
  }

  function range() {
    return { period: period.value, from_day: fromDay.value, to_day: toDay.value };
  }

  function summaryPath(extra) {
    return () => ["/tenants/" + select.value + "/summary", Object.assign(range(), extra || {})];
  }

  function fileName(what) {
    return () => "tenant-" + select.value + "-" + what + "-" + fromDay.value + "_" + toDay.value;
  }

  function merchantName(id) { return merchants[id] || ("#" + id); }

  // Sums of summary rows by a key: approved purchases and captures, declines, net sales.
  function sums(rows, keyOf) {
    const out = new Map();
    for (const r of rows) {
      const key = keyOf(r);
      if (!out.has(key)) out.set(key, { key: key, purchases: 0, declined: 0, net: 0, count: 0, amount: 0 });
      const s = out.get(key);
      s.count += r.count;
      s.amount += r.amount_fen;
      if (SALE_KINDS.indexOf(r.kind) < 0) continue;
      s.net += r.merchant_delta_fen;
      if (r.category === "approved" && r.kind !== "reversal") s.purchases += r.count;
      if (r.category !== "approved" && r.kind === "purchase") s.declined += r.count;
    }
    return [...out.values()];
  }

  function bar(chart, labels, values, name) {
    chart.setOption({
      animation: false, tooltip: { trigger: "axis" },
      grid: { left: 60, right: 20, top: 30, bottom: 40 },
      xAxis: { type: "category", data: labels, axisLabel: { interval: 0, rotate: labels.length > 6 ? 30 : 0 } },
      yAxis: { type: "value", name: name },
      series: [{ name: name, type: "bar", data: values }],
    }, true);
  }

  function pie(chart, items) {
    chart.setOption({
      animation: false, tooltip: { trigger: "item" },
      series: [{ type: "pie", radius: ["35%", "65%"], data: items }],
    }, true);
  }

  function render() {
    if (!last) return;
    const rows = last.rows;
    // Sales over time: a line of net sales and one of purchases.
    // Every day (month) of the range, those with no row at 0: the line shows the quiet ones.
    const found = new Map(sums(rows, (r) => r.period).map((s) => [s.key, s]));
    const byPeriod = [];
    for (let d = last.from; d <= last.to; d = last.period === "month" ? OCR.monthStart(d, -1) : OCR.addDays(d, 1)) {
      const key = last.period === "month" ? d.slice(0, 7) : d;
      byPeriod.push(found.get(key) || { key: key, purchases: 0, declined: 0, net: 0, count: 0, amount: 0 });
    }
    charts.sales.setOption({
      animation: false, tooltip: { trigger: "axis" },
      legend: { data: [OC.t("col.sales"), OC.t("col.purchases")] },
      grid: { left: 60, right: 60, top: 40, bottom: 30 },
      xAxis: { type: "category", data: byPeriod.map((s) => s.key) },
      yAxis: [{ type: "value", name: OC.t("col.sales") },
              { type: "value", name: OC.t("col.purchases"), minInterval: 1 }],
      series: [
        { name: OC.t("col.sales"), type: "line", data: byPeriod.map((s) => s.net / 100) },
        { name: OC.t("col.purchases"), type: "line", yAxisIndex: 1, data: byPeriod.map((s) => s.purchases) },
      ],
    }, true);
    OCR.fill("table-sales", byPeriod.map((s) => [[s.key], [s.purchases, true], [s.declined, true],
                                                   [OC.yuan(s.net), true]]));
    // Per merchant and per meal: bars of net sales.
    const byMerchant = sums(rows, (r) => r.merchant_id).filter((s) => s.key !== null)
      .sort((a, b) => b.net - a.net);
    bar(charts.merchant, byMerchant.map((s) => merchantName(s.key)), byMerchant.map((s) => s.net / 100), OC.t("col.sales"));
    OCR.fill("table-merchant", byMerchant.map((s) => [[merchantName(s.key)], [s.purchases, true],
                                                        [OC.yuan(s.net), true]]));
    const byMeal = sums(rows, (r) => r.meal === null ? "" : r.meal);
    const mealName = (key) => key === "" ? OC.t("rep.no_meal") : key;
    bar(charts.meal, byMeal.map((s) => mealName(s.key)), byMeal.map((s) => s.net / 100), OC.t("col.sales"));
    OCR.fill("table-meal", byMeal.map((s) => [[mealName(s.key)], [s.purchases, true], [OC.yuan(s.net), true]]));
    // By payment kind (approved rows of the merchants) and by result (every row's category).
    const approved = rows.filter((r) => r.category === "approved");
    const byKind = sums(approved, (r) => r.kind).filter((s) => s.count > 0);
    pie(charts.kind, byKind.map((s) => ({ name: OC.label("kind", s.key), value: Math.abs(s.amount) / 100 })));
    OCR.fill("table-kind", byKind.map((s) => [[OC.label("kind", s.key)], [s.count, true],
                                               [OC.yuan(s.amount), true]]));
    // By the cardholder's wallet (GET /tenants/{id}/sales/by-wallet).
    const wallets = last.wallets.filter((w) => w.count > 0 || w.amount_fen !== 0);
    pie(charts.wallet, wallets.map((w) => ({ name: OC.label("rep.wallet", w.wallet), value: Math.abs(w.amount_fen) / 100 })));
    OCR.fill("table-wallet", wallets.map((w) => [[OC.label("rep.wallet", w.wallet)], [w.count, true],
                                                  [OC.yuan(w.amount_fen), true]]));
    const byResult = sums(rows, (r) => r.category);
    pie(charts.result, byResult.map((s) => ({ name: OC.label("rep.category", s.key), value: s.count })));
    OCR.fill("table-result", byResult.map((s) => [[OC.label("rep.category", s.key)], [s.count, true]]));
    // Declines and exceptions.
    OCR.fill("table-exceptions", last.exceptions.map((x) => [
      [x.local_day + " " + x.local_time], [merchantName(x.merchant_id)], [x.card_no],
      [OC.label("kind", x.kind)], [OC.label("rep.category", x.category)], [x.result],
      [OC.yuan(x.amount_fen), true]]), "rep.no_exceptions");
    if (last.more) OC.message(MSG, "rep.more_exceptions", { n: last.exceptions.length });
  }

  async function load() {
    OC.message(MSG, "rep.loading");
    try {
      const [rows, exc, wallets] = await Promise.all([
        OCR.all("/tenants/" + select.value + "/summary",
                Object.assign(range(), { by_merchant: "true", by_meal: "true", limit: 1000 })),
        OC.api("GET", "/tenants/" + select.value + "/exceptions" +
               OCR.query({ from_day: fromDay.value, to_day: toDay.value, limit: 200 })),
        OC.api("GET", "/tenants/" + select.value + "/sales/by-wallet" +
               OCR.query({ from_day: fromDay.value, to_day: toDay.value })),
      ]);
      const month = period.value === "month";
      last = { rows: rows, exceptions: exc.items, wallets: wallets.items, more: exc.next_after_lsn !== null,
               period: period.value, to: toDay.value,
               from: month ? OCR.monthStart(fromDay.value, 0) : fromDay.value };
      OC.message(MSG, null);
      render();
    } catch (err) {
      OC.fail(MSG, err);
    }
  }

  OCR.exports("export-sales", fileName("sales"), summaryPath(), MSG);
  OCR.exports("export-merchant", fileName("by-merchant"), summaryPath({ by_merchant: "true" }), MSG);
  OCR.exports("export-meal", fileName("by-meal"), summaryPath({ by_meal: "true" }), MSG);
  OCR.exports("export-kind", fileName("by-kind"), summaryPath(), MSG);
  OCR.exports("export-wallet", fileName("by-wallet"),
              () => ["/tenants/" + select.value + "/sales/by-wallet",
                     { from_day: fromDay.value, to_day: toDay.value }], MSG);
  OCR.exports("export-result", fileName("by-result"), summaryPath(), MSG);
  OCR.exports("export-exceptions", fileName("exceptions"),
              () => ["/tenants/" + select.value + "/exceptions",
                     { from_day: fromDay.value, to_day: toDay.value }], MSG);

  document.addEventListener("oc:lang", render);
  period.addEventListener("change", defaults);
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });

  let list = [];
  try {
    list = await OCR.tenants(select);
    if (OC.can("merchants.read")) {
      for (const m of await OCR.all("/merchants", { limit: 100 })) merchants[m.id] = m.name;
    }
  } catch (err) {
    OC.fail(MSG, err);
    return;
  }
  if (list.length === 0) {
    OC.message(MSG, "rep.no_tenant");
    return;
  }
  async function start() {
    try {
      // A summary without days answers the tenant's today as its to_day.
      today = (await OC.api("GET", "/tenants/" + select.value + "/summary?limit=1")).to_day;
    } catch (err) {
      OC.fail(MSG, err);
      return;
    }
    const p = OC.params();
    if (p.get("period") === "month") period.value = "month";
    defaults();
    if (p.get("from_day")) fromDay.value = p.get("from_day");
    if (p.get("to_day")) toDay.value = p.get("to_day");
    load();
  }
  select.addEventListener("change", start);
  start();
});
