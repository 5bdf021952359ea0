// Finance: a business day's settlement per merchant and its confirmation (a document another
// person approves: POST /tenants/{id}/settlements/{day}/confirm, then the approvals page),
// clearing between parks, bank top-ups and the switch's own refusals, reconciliation and bank
// exceptions with their resolutions (each a document approved by another person), and the
// float. Every table has the CSV/XLSX export of the route it comes from.
"use strict";
// The sections after the settlement (its figures and confirmation are in finance.html), each a
// table and its exports (report-kit.js builds them).
OCR.sections("fin-sections", [
  { id: "clearing", title: "fin.clearing",
    columns: [["fin.other_park"], ["fin.ours_there", true], ["fin.theirs_here", true], ["fin.net", true],
              ["fin.who_pays"]] },
  { id: "topups", title: "fin.topups",
    columns: [["col.time"], ["col.card_no"], ["fin.rrn"], ["rep.col_amount", true], ["fin.state"],
              ["fin.credited", true]],
    more: [{ id: "refusals", title: "fin.refusals",
             columns: [["col.time"], ["col.card_no"], ["rep.col_amount", true], ["fin.auto"],
                       ["col.result"]] }] },
  { id: "recon", title: "fin.recon", message: true,
    columns: [["fin.business_day"], ["col.kind"], ["fin.rrn"], ["col.card_no"], ["fin.bank_amount", true],
              ["fin.our_amount", true], ["fin.expected", true], ["col.status"], ["col.actions"]] },
  { id: "bankexc", title: "fin.bankexc", message: true,
    columns: [["col.time"], ["col.card_no"], ["fin.rrn"], ["rep.col_amount", true], ["fin.why"],
              ["col.status"], ["col.actions"]] },
  { id: "float", title: "fin.float",
    columns: [["fin.business_day"], ["fin.open_total", true], ["fin.bank_in", true], ["fin.cash_in", true],
              ["fin.cash_out", true], ["fin.subsidy_issued", true], ["fin.close_main", true],
              ["fin.close_subsidy", true], ["fin.close_total", true]] },
]);

document.addEventListener("DOMContentLoaded", async () => {
  if (!OC.requireLogin()) return;
  const MSG = "fin-message";
  const form = document.getElementById("fin-form");
  const select = document.getElementById("tenant");
  const dayInput = document.getElementById("business-day");
  const confirmForm = document.getElementById("confirm-form");
  let merchants = {};
  let last = null;

  const t = () => select.value;
  const day = () => dayInput.value;
  const oneDay = () => ({ from_day: day(), to_day: day() });
  const file = (what) => () => "tenant-" + t() + "-" + what + "-" + day();
  const time = (iso) => OCX.time(iso);
  function merchantName(id) { return id === null ? OC.t("fin.total") : (merchants[id] || ("#" + id)); }

  function exportsOf(id, what, route, params) {
    OCR.exports("export-" + id, file(what), () => ["/tenants/" + t() + route, params()], MSG);
  }
  exportsOf("settlement", "settlement", "/finance/settlement", oneDay);
  exportsOf("clearing", "clearing", "/finance/clearing", oneDay);
  exportsOf("topups", "bank-topups", "/bank-topups", oneDay);
  exportsOf("refusals", "bank-topup-refusals", "/bank-topup-refusals", oneDay);
  exportsOf("recon", "reconciliation-exceptions", "/reconciliation-exceptions", () => ({}));
  exportsOf("bankexc", "bank-exceptions", "/bank-exceptions", () => ({}));
  exportsOf("float", "float", "/finance/float", oneDay);

  // -- the day's settlement
  function renderSettlement(view) {
    const status = document.getElementById("settle-status");
    const note = document.getElementById("settle-note");
    confirmForm.hidden = true;
    if (view.error) {
      status.textContent = "–";
      status.dataset.status = "";
      for (const id of ["settle-sales", "settle-fees", "settle-net", "settle-balanced"]) {
        document.getElementById(id).textContent = "–";
      }
      OC.message(note, view.error === "day-open" ? "fin.day_open" :
                 view.error === "future-day" ? "fin.day_future" : "fin.no_settlement",
                 { detail: view.detail || "" });
      OCR.fill("table-settlement", []);
      return;
    }
    const s = view.settlement;
    status.dataset.status = view.status;
    status.textContent = OC.t("fin.status_" + view.status);
    document.getElementById("settle-sales").textContent = OC.yuan(s.totals.sales_fen);
    document.getElementById("settle-fees").textContent = OC.yuan(s.totals.fee_fen);
    document.getElementById("settle-net").textContent = OC.yuan(s.totals.net_fen);
    document.getElementById("settle-balanced").textContent = OC.t(s.balanced ? "fin.yes" : "fin.no");
    if (view.status === "open") {
      OC.message(note, OC.can("settlement.confirm") ? "fin.open_note" : "fin.open_note_ro");
      confirmForm.hidden = !OC.can("settlement.confirm");
    } else {
      OC.message(note, view.status === "pending" ? "fin.pending_note" : "fin.confirmed_note",
                 { doc: view.document_id });
      if (view.matches_stored === false) OC.message(note, "fin.changed_note", { doc: view.document_id }, "error");
    }
    const rows = s.merchants.map((m) => [[merchantName(m.merchant_id)], [m.count, true],
      [OC.yuan(m.gross_fen), true], [OC.yuan(m.reversals_fen), true], [OC.yuan(m.sales_fen), true],
      [OC.yuan(m.fee_fen), true], [OC.yuan(m.net_fen), true], [m.due_on]]);
    OCR.fill("table-settlement", rows, "fin.no_sales");
  }

  async function loadSettlement() {
    try {
      return await OC.api("GET", "/tenants/" + t() + "/settlements/" + day());
    } catch (err) {
      if (err.status === 409 || err.status === 422) {
        const type = (err.problem && err.problem.type) || "";
        return { error: type.split("/").pop(), detail: err.message };
      }
      throw err;
    }
  }

  confirmForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = document.getElementById("confirm-button");
    button.disabled = true;
    try {
      const view = await OC.api("POST", "/tenants/" + t() + "/settlements/" + day() + "/confirm",
                                { comment: document.getElementById("confirm-comment").value });
      document.getElementById("confirm-comment").value = "";
      last.settlement = view;
      render();
      OC.message(MSG, "fin.requested", { doc: view.document_id }, "ok");
    } catch (err) {
      OCX.refused(MSG, err);
    } finally {
      button.disabled = false;
    }
  });

  // -- resolutions: a small inline form per open exception
  function resolveForm(id, actions, needNote, send, messageId) {
    const actionSelect = OCX.select(actions.map((a) => [a, "fin.action_" + a]));
    const note = OCX.input({ maxlength: 2000 });
    const go = OCX.button("fin.resolve");
    const box = OC.el("div", { "class": "oc-inline" }, [
      OCX.field(messageId + "-action-" + id, "fin.action", actionSelect),
      OCX.field(messageId + "-note-" + id, "fin.note", note), go]);
    go.addEventListener("click", async () => {
      if (needNote && !note.value.trim()) {
        OC.message(messageId, "fin.note_needed", null, "error");
        return;
      }
      go.disabled = true;
      try {
        const out = await send(actionSelect.value, note.value.trim());
        OC.message(messageId, "fin.resolving", { id: id, doc: out.document_id || id }, "ok");
        await load();
      } catch (err) {
        OCX.refused(messageId, err);
      } finally {
        go.disabled = false;
      }
    });
    OC.applyI18n(box);
    return box;
  }

  function actionCell(row, status, form) {
    if (status !== "open" || !OC.can("finance.write")) return OC.el("td", { text: "" });
    return OC.el("td", {}, [form()]);
  }

  function renderRecon(items) {
    const body = document.querySelector("#table-recon tbody");
    OCR.fill("table-recon", [], "fin.no_recon");
    if (!items.length) return;
    body.textContent = "";
    for (const x of items) {
      body.append(OC.el("tr", { "data-id": x.id }, [
        OCX.cell(x.business_date), OCX.cell(OC.label("fin.recon_kind", x.kind)), OCX.cell(x.rrn),
        OCX.cell(x.card_no === null ? "" : String(x.card_no)),
        OCX.cell(OC.yuan(x.bank_amount_fen), true), OCX.cell(OC.yuan(x.our_amount_fen), true),
        OCX.cell(OC.yuan(x.expected_fen), true), OCX.cell(OC.label("fin.st", x.status)),
        actionCell(x, x.status, () => resolveForm(x.id, ["credit", "reverse", "write_off"], false,
          (action, note) => OC.api("POST", "/reconciliation-exceptions/" + x.id + "/resolve",
                                   { action: action, comment: note }), "recon-message")),
      ]));
    }
  }

  function renderBankExc(items) {
    const body = document.querySelector("#table-bankexc tbody");
    OCR.fill("table-bankexc", [], "fin.no_bankexc");
    if (!items.length) return;
    body.textContent = "";
    for (const x of items) {
      body.append(OC.el("tr", { "data-id": x.id }, [
        OCX.cell(time(x.created_at)), OCX.cell(String(x.card_no)), OCX.cell(x.rrn),
        OCX.cell(OC.yuan(x.amount_fen), true), OCX.cell(x.reason),
        OCX.cell(OC.label("fin.st", x.status) + (x.action ? " · " + OC.t("fin.action_" + x.action) : "")),
        actionCell(x, x.status, () => resolveForm(x.id, ["retry", "credit", "write_off"], true,
          (action, note) => OC.api("POST", "/bank-exceptions/" + x.id + "/resolve",
                                   { action: action, note: note }), "bankexc-message")),
      ]));
    }
  }

  function render() {
    if (!last) return;
    renderSettlement(last.settlement);
    // Parks by name: the other one's from the API's answer, this one's from the site choice.
    const park = (c, id) => id === c.other_tenant_id ? (c.other_tenant_name || "#" + id)
      : (select.selectedOptions[0] ? select.selectedOptions[0].textContent : "#" + id);
    OCR.fill("table-clearing", last.clearing.map((c) => [
      [c.other_tenant_name || "#" + c.other_tenant_id],
      [c.our_cards_there_count + " · " + OC.yuan(c.our_cards_there_fen), true],
      [c.their_cards_here_count + " · " + OC.yuan(c.their_cards_here_fen), true],
      [OC.yuan(c.net_fen), true],
      [OC.t("fin.pays", { debtor: park(c, c.debtor_tenant_id), creditor: park(c, c.creditor_tenant_id) })]]),
      "fin.no_clearing");
    OCR.fill("table-topups", last.topups.map((x) => [[time(x.created_at)], [x.card_no], [x.rrn],
      [OC.yuan(x.amount_fen), true], [OC.label("fin.topup", x.state)], [OC.yuan(x.credited_fen), true]]),
      "fin.no_topups");
    OCR.fill("table-refusals", last.refusals.map((x) => [[time(x.created_at)], [x.card_no],
      [OC.yuan(x.amount_fen), true], [OC.t(x.auto ? "fin.yes" : "fin.no")], [x.result]]),
      "fin.no_refusals");
    renderRecon(last.recon);
    renderBankExc(last.bankexc);
    OCR.fill("table-float", last.float.map((f) => [[f.business_day], [OC.yuan(f.open_total_fen), true],
      [OC.yuan(f.bank_topups_fen), true], [OC.yuan(f.cash_in_fen), true], [OC.yuan(f.cash_out_fen), true],
      [OC.yuan(f.subsidy_issued_fen), true], [OC.yuan(f.close_main_fen), true],
      [OC.yuan(f.close_subsidy_fen), true], [OC.yuan(f.close_total_fen), true]]), "fin.no_float");
  }

  // The float of a day that is not closed has no figures: the API refuses it (409).
  async function orNothing(promise) {
    try { return await promise; } catch (err) {
      if (err.status === 409 || err.status === 422) return [];
      throw err;
    }
  }

  async function load() {
    OC.message(MSG, "rep.loading");
    const base = "/tenants/" + t();
    try {
      const [settlement, clearing, topups, refusals, recon, bankexc, float] = await Promise.all([
        loadSettlement(),
        orNothing(OCR.all(base + "/finance/clearing", oneDay(), 1000)),
        OCR.all(base + "/bank-topups", oneDay(), 1000),
        OCR.all(base + "/bank-topup-refusals", oneDay(), 1000),
        OCR.all(base + "/reconciliation-exceptions", { limit: 100 }, 500),
        OCR.all(base + "/bank-exceptions", { limit: 100 }, 500),
        orNothing(OCR.all(base + "/finance/float", oneDay(), 1000)),
      ]);
      last = { settlement, clearing, topups, refusals, recon, bankexc, float };
      OC.message(MSG, null);
      render();
    } catch (err) {
      OC.fail(MSG, err);
    }
  }

  document.addEventListener("oc:lang", render);
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
  if (list.length === 0 || !OC.can("finance.read")) {
    OC.message(MSG, list.length === 0 ? "rep.no_tenant" : "error.forbidden");
    return;
  }
  async function start() {
    const wanted = OC.params().get("day");
    if (wanted) {
      dayInput.value = wanted;
    } else {
      try {
        // The settlement report without days answers the tenant's yesterday.
        dayInput.value = (await OC.api("GET", "/tenants/" + t() + "/finance/settlement?limit=1")).from_day;
      } catch (err) {
        OC.fail(MSG, err);
        return;
      }
    }
    load();
  }
  select.addEventListener("change", start);
  start();
});
