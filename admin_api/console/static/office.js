// What the card office, approvals, cashier, merchants and phone pages share (window.OCX), on
// top of console.js: labelled form fields, tables, an Idempotency-Key per form fill, calls
// that send a file or read a PDF with the log-in's token. Text only, never HTML.
"use strict";
(function () {
  // A labelled control: <div><label for=id>…</label><control id=id></div>.
  function field(id, key, control) {
    control.id = id;
    if (!control.name) control.name = id;
    return OC.el("div", { "class": "oc-field" }, [
      OC.el("label", { "for": id, "data-i18n": key }), control]);
  }

  function input(attrs) { return OC.el("input", Object.assign({ autocomplete: "off" }, attrs || {})); }

  function select(options) {
    return OC.el("select", {}, options.map(([value, key]) =>
      OC.el("option", { value: value, "data-i18n": key })));
  }

  function button(key, attrs) {
    return OC.el("button", Object.assign({ type: "button", "data-i18n": key }, attrs || {}));
  }

  // A table with a header row of catalogue keys; returns { table, body }.
  function table(id, columns) {
    const body = OC.el("tbody");
    const head = OC.el("tr", {}, columns.map((c) => {
      const [key, num] = Array.isArray(c) ? c : [c, false];
      return OC.el("th", { scope: "col", "class": num ? "num" : null, "data-i18n": key });
    }));
    return { table: OC.el("table", { id: id }, [OC.el("thead", {}, [head]), body]), body: body };
  }

  function cell(text, num) { return OC.el("td", { "class": num ? "num" : null, text: text }); }

  function time(iso) { return iso ? new Date(iso).toLocaleString(OC.lang(), { hour12: false }) : ""; }

  // An Idempotency-Key for one filling of a form: made when the form is first touched, kept
  // through every submit of that filling (a double click, a retry after a time-out), and
  // dropped when the form is cleared after an answer. 128 random bits (getRandomValues works
  // on plain http too, unlike randomUUID).
  function idempotency(form) {
    let key = null;
    function make() {
      const bytes = new Uint8Array(16);
      crypto.getRandomValues(bytes);
      return "console-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    }
    form.addEventListener("input", () => { if (!key) key = make(); });
    return {
      key() { if (!key) key = make(); return key; },
      reset() { key = null; },
    };
  }

  // A JSON call with extra headers (the Idempotency-Key): as OC.api.
  async function call(method, path, body, headers) {
    const h = Object.assign({ "Accept": "application/json", "Authorization": "Bearer " + OC.token() },
                            headers || {});
    const init = { method: method, headers: h };
    if (body !== undefined) {
      h["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    if (r.status === 401) { OC.logout(false); throw new OC.ApiError(401, null); }
    const text = await r.text();
    const data = text ? JSON.parse(text) : null;
    if (!r.ok) throw new OC.ApiError(r.status, data);
    return { data: data, replay: r.headers.get("Idempotent-Replay") === "true" };
  }

  // A file to a route that takes a multipart upload (field "file").
  async function upload(path, file) {
    const form = new FormData();
    form.append("file", file);
    const r = await fetch(path, { method: "POST", body: form,
                                  headers: { "Authorization": "Bearer " + OC.token(),
                                             "Accept": "application/json" } });
    if (r.status === 401) { OC.logout(false); throw new OC.ApiError(401, null); }
    const text = await r.text();
    const data = text ? JSON.parse(text) : null;
    if (!r.ok) throw new OC.ApiError(r.status, data);
    return data;
  }

  // A download that needs the token (a PDF): fetched, then saved from a blob URL.
  async function download(path, filename) {
    const r = await fetch(path, { headers: { "Authorization": "Bearer " + OC.token() } });
    if (r.status === 401) { OC.logout(false); throw new OC.ApiError(401, null); }
    if (!r.ok) throw new OC.ApiError(r.status, null);
    const url = URL.createObjectURL(await r.blob());
    const a = OC.el("a", { href: url, download: filename, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // The API's own words for a refusal, after ours ("Something went wrong: <detail>").
  function refused(target, err) {
    if (err && err.status === 403) OC.message(target, "error.forbidden", null, "error");
    else OC.message(target, "office.refused", { detail: (err && err.message) || "" }, "error");
  }

  window.OCX = { field, input, select, button, table, cell, time, idempotency, call, upload,
                 download, refused };
})();
