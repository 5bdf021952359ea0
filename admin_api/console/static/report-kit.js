// What the reports and finance pages share (window.OCR), on top of console.js and office.js:
// the site and day controls, a section's table from rows and columns, and the export buttons
// (CSV/XLSX of the same API route, fetched with the token and saved from a blob), and the
// sections themselves, built from the list each page declares (`sections`).
// Text only, never HTML.
"use strict";
(function () {
  // The tenants of the log-in's subtree (GET /org/nodes), into a <select>; `?tenant=N` chosen.
  async function tenants(select) {
    if (!OC.can("org.read")) return [];
    const nodes = await OC.api("GET", "/org/nodes");
    const list = nodes.filter((n) => n.kind === "tenant");
    for (const n of list) select.append(OC.el("option", { value: n.tenant_id, text: n.name }));
    const wanted = OC.params().get("tenant");
    if (wanted && list.some((n) => String(n.tenant_id) === wanted)) select.value = wanted;
    return list;
  }

  // yyyy-mm-dd `days` after the day `iso` (calendar arithmetic in UTC: no time zone moves it).
  function addDays(iso, days) {
    const d = new Date(iso + "T00:00:00Z");
    d.setUTCDate(d.getUTCDate() + days);
    return d.toISOString().slice(0, 10);
  }

  // The first day of the month `months` before the one of `iso`.
  function monthStart(iso, months) {
    const d = new Date(iso.slice(0, 7) + "-01T00:00:00Z");
    d.setUTCMonth(d.getUTCMonth() - months);
    return d.toISOString().slice(0, 10);
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
    const s = q.toString();
    return s ? "?" + s : "";
  }

  // Every page of a JSON list paged by `after` / `next_after`, up to `most` items.
  async function all(path, params, most) {
    const items = [];
    let after = null;
    for (;;) {
      const p = Object.assign({}, params);
      if (after !== null) p.after = after;
      const page = await OC.api("GET", path + query(p));
      items.push(...page.items);
      after = page.next_after;
      if (after === null || after === undefined || items.length >= (most || 10000)) return items;
    }
  }

  // Fill a section's table body: rows of cells ([text, numeric?]).
  function fill(tableId, rows, emptyKey) {
    const table = document.getElementById(tableId);
    const body = table.querySelector("tbody");
    body.textContent = "";
    const columns = table.querySelectorAll("thead th").length;
    if (!rows.length) {
      body.append(OC.el("tr", {}, [OC.el("td", { colspan: columns, "class": "oc-note",
                                                 "data-i18n": emptyKey || "rep.none",
                                                 text: OC.t(emptyKey || "rep.none") })]));
      return;
    }
    for (const row of rows) {
      body.append(OC.el("tr", {}, row.map(([text, num]) =>
        OC.el("td", { "class": num ? "num" : null, text: text === null || text === undefined ? "" : String(text) }))));
    }
  }

  // CSV and XLSX buttons for a section; `path()` gives the route and query without format.
  function exports(containerId, name, path, messageId) {
    const box = document.getElementById(containerId);
    box.textContent = "";
    for (const format of ["csv", "xlsx"]) {
      box.append(OC.el("button", {
        type: "button", "class": "oc-export", "data-format": format,
        "data-i18n": "rep.export_" + format, text: OC.t("rep.export_" + format),
        onclick: async () => {
          const [route, params] = path();
          try {
            await OCX.download(route + query(Object.assign({}, params, { format: format })),
                               name() + "." + format);
          } catch (err) {
            OC.fail(messageId, err);
          }
        } }));
    }
  }

  // A table of a section: `columns` are [catalogue key, numeric?]; the body is filled later.
  function table(id, columns) {
    return OC.el("table", { id: "table-" + id }, [
      OC.el("thead", {}, [OC.el("tr", {}, columns.map(([key, num]) =>
        OC.el("th", { scope: "col", "class": num ? "num" : null, "data-i18n": key })))]),
      OC.el("tbody")]);
  }

  // One report section from its description: {id, title (catalogue key), chart (a chart of the
  // same name), note (a key), message (a status line `<id>-message`), columns, more (further
  // tables under an <h3>: [{id, title, columns}])}. Ids: sec-, h-, chart-, export-, table-<id>.
  function section(d) {
    const parts = [OC.el("h2", { id: "h-" + d.id, "data-i18n": d.title })];
    if (d.chart) {
      parts.push(OC.el("div", { "class": "oc-chart", id: "chart-" + d.id, role: "img",
                                "data-i18n-label": d.title }));
    }
    if (d.note) parts.push(OC.el("p", { "class": "oc-note", "data-i18n": d.note }));
    if (d.message) {
      parts.push(OC.el("p", { id: d.id + "-message", "class": "oc-message", role: "status" }));
    }
    for (const t of [d].concat(d.more || [])) {
      if (t !== d) parts.push(OC.el("h3", { id: "h-" + t.id, "data-i18n": t.title }));
      parts.push(OC.el("div", { "class": "oc-buttons", id: "export-" + t.id }), table(t.id, t.columns));
    }
    return OC.el("section", { "class": "oc-report", id: "sec-" + d.id,
                              "aria-labelledby": "h-" + d.id }, parts);
  }

  // Put the page's sections where the element `placeholderId` is: each item a section's
  // description, or an array of them side by side (.oc-pair). Called by the page's script as
  // it loads (before DOMContentLoaded), so console.js translates them with the rest.
  function sections(placeholderId, list) {
    const nodes = list.map((item) => Array.isArray(item)
      ? OC.el("div", { "class": "oc-pair" }, item.map(section)) : section(item));
    document.getElementById(placeholderId).replaceWith(...nodes);
  }

  function chart(id) {
    const node = document.getElementById(id);
    const c = echarts.init(node);
    window.addEventListener("resize", () => c.resize());
    return c;
  }

  window.OCR = { tenants, addDays, monthStart, query, all, fill, exports, chart, sections };
})();
