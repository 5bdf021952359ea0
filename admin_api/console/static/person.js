// Card office: one person's wallets, cards (report lost, unfreeze) and latest transactions.
// Every figure comes from the API with the log-in's token; a person outside the log-in's
// subtree is a 404 there, and nothing of them is shown here.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  if (!OC.requireLogin()) return;
  const id = Number(OC.params().get("id"));
  const section = document.getElementById("person-body");

  function status(value) {
    return OC.el("span", { "class": "oc-status-" + value, "data-i18n": "status." + value });
  }

  function time(iso) {
    const d = new Date(iso);
    return d.toLocaleString(OC.lang(), { hour12: false });
  }

  async function cardAction(card, action) {
    const confirmKey = action === "report-loss" ? "card.confirm_loss" : "card.confirm_unfreeze";
    if (!window.confirm(OC.t(confirmKey, { card: card.card_no }))) return;
    try {
      await OC.api("POST", "/cards/" + card.card_no + "/" + action);
      await load();
      OC.message("card-message", action === "report-loss" ? "card.done_loss" : "card.done_unfreeze",
                 { card: card.card_no }, "ok");
    } catch (err) {
      OC.fail("card-message", err);
    }
  }

  function cardRow(card) {
    const actions = OC.el("td");
    if (OC.can("cards.write") && card.status === "active") {
      actions.append(OC.el("button", { type: "button", "class": "oc-danger",
        "data-i18n": "card.report_loss", "data-card": card.card_no,
        onclick: () => cardAction(card, "report-loss") }));
    }
    if (OC.can("cards.write") && card.status === "lost") {
      actions.append(OC.el("button", { type: "button", "data-i18n": "card.unfreeze",
        "data-card": card.card_no, onclick: () => cardAction(card, "unfreeze") }));
    }
    return OC.el("tr", { "data-card": card.card_no }, [
      OC.el("td", { text: String(card.card_no) }),
      OC.el("td", { text: OC.label("card_type", card.card_type) }),
      OC.el("td", { "class": "card-status" }, [status(card.status)]),
      OC.el("td", { text: card.valid_until || "" }),
      actions,
    ]);
  }

  async function load() {
    let person;
    try {
      person = await OC.api("GET", "/people/" + id);
    } catch (err) {
      section.hidden = true;
      if (err.status === 404 || err.status === 400) OC.message("person-message", "person.not_found", null, "error");
      else OC.fail("person-message", err);
      return;
    }
    const name = document.getElementById("person-name");
    name.removeAttribute("data-i18n");
    name.textContent = person.name;
    document.getElementById("person-facts").textContent =
      [person.external_id, person.phone].filter(Boolean).join(" · ");
    const [balance, cards, txns, docs, audit] = await Promise.all([
      OC.api("GET", "/people/" + id + "/balance"),
      OC.can("cards.read") ? OC.api("GET", "/people/" + id + "/cards") : Promise.resolve([]),
      OC.api("GET", "/people/" + id + "/recent?limit=20"),
      // The person's documents (newest 100) and audit rows (the first 200): only with the
      // permissions that read them; the API keeps both to the log-in's subtree.
      OC.can("documents.read") ? OC.api("GET", "/documents?person_id=" + id + "&limit=100")
        .then((p) => p.items) : Promise.resolve(null),
      OC.can("audit.read") ? OC.api("GET", "/audit?person_id=" + id + "&limit=200")
        .then((p) => p.items) : Promise.resolve(null),
    ]);
    shown = { balance: balance, cards: cards, txns: txns, docs: docs, audit: audit };
    render();
    // The card office's forms (office-person.js) follow what was read.
    document.dispatchEvent(new CustomEvent("oc:person", { detail: { person: person, balance: balance,
                                                                  cards: cards } }));
  }

  // What was read, in the page's language (again when the language changes).
  function render() {
    const { balance, cards, txns } = shown;
    document.getElementById("balance-main").textContent = OC.yuan(balance.main_fen);
    document.getElementById("balance-subsidy").textContent = OC.yuan(balance.subsidy_fen);
    document.getElementById("balance-total").textContent = OC.yuan(balance.balance_fen);
    const cardBody = document.querySelector("#cards-table tbody");
    cardBody.textContent = "";
    for (const card of cards) cardBody.append(cardRow(card));
    const txnBody = document.querySelector("#txns-table tbody");
    txnBody.textContent = "";
    for (const e of txns) {
      txnBody.append(OC.el("tr", {}, [
        OC.el("td", { text: time(e.at) }),
        OC.el("td", { text: OC.label("kind", e.kind) }),
        OC.el("td", { text: OC.label("result", e.result) }),
        OC.el("td", { text: e.merchant }),
        OC.el("td", { "class": "num", text: OC.yuan(e.main_delta_fen + e.subsidy_delta_fen) }),
        OC.el("td", { "class": "num", text: OC.yuan(e.balance_fen) }),
      ]));
    }
    if (txns.length === 0) {
      txnBody.append(OC.el("tr", {}, [OC.el("td", { colspan: 6, "data-i18n": "person.no_txns" })]));
    }
    renderDocs(shown.docs);
    renderAudit(shown.audit);
    section.hidden = false;
    OC.applyI18n(section);
  }

  // Documents with a line of this person, newest first: kind, state, amount, created; the
  // PDF, and the approvals page for one that waits for a decision this log-in may take.
  function renderDocs(docs) {
    const box = document.getElementById("docs-section");
    box.hidden = docs === null;
    if (docs === null) return;
    const body = document.querySelector("#docs-table tbody");
    body.textContent = "";
    for (const d of docs.slice().reverse()) {
      const actions = OC.el("td");
      actions.append(OC.el("button", { type: "button", "data-i18n": "person.doc_pdf",
        "aria-label": OC.t("person.doc_pdf_of", { doc: d.id }),
        onclick: () => pdf(d.id) }));
      if (d.status === "submitted" && OC.can("documents.approve")) {
        actions.append(" ", OC.el("a", { href: "/console/approvals.html?doc=" + d.id,
          "data-i18n": "person.doc_approvals",
          "aria-label": OC.t("person.doc_approvals_of", { doc: d.id }) }));
      }
      body.append(OC.el("tr", { "data-doc": d.id }, [
        OC.el("td", { "class": "num", text: String(d.id) }),
        OC.el("td", { text: OC.label("doc_type", d.doc_type) }),
        OC.el("td", { text: OC.label("doc_status", d.status) }),
        // The document's total: of every line, this person's and others' (a batch).
        OC.el("td", { "class": "num", text: OC.yuan(d.total_fen) + (d.lines_count > 1
          ? " · " + OC.t("person.doc_lines", { n: d.lines_count }) : "") }),
        OC.el("td", { text: time(d.created_at) + " · " + d.created_by }),
        actions,
      ]));
    }
    if (docs.length === 0) {
      body.append(OC.el("tr", {}, [OC.el("td", { colspan: 6, "data-i18n": "person.no_docs" })]));
    }
  }

  async function pdf(docId) {
    try { await OCX.download("/documents/" + docId + "/pdf", "document-" + docId + ".pdf"); }
    catch (err) { OC.fail("docs-message", err); }
  }

  function renderAudit(rows) {
    const box = document.getElementById("audit-section");
    box.hidden = rows === null;
    if (rows === null) return;
    const body = document.querySelector("#audit-table tbody");
    body.textContent = "";
    for (const r of rows) {
      body.append(OC.el("tr", {}, [
        OC.el("td", { text: time(r.at) }),
        OC.el("td", { text: r.username + " (" + r.role + ")" }),
        OC.el("td", { text: r.action }),
        OC.el("td", { text: r.entity + " " + r.entity_id }),
      ]));
    }
    if (rows.length === 0) {
      body.append(OC.el("tr", {}, [OC.el("td", { colspan: 4, "data-i18n": "person.no_audit" })]));
    }
  }

  let shown = null;
  window.OC_PERSON = { reload: load };
  document.addEventListener("oc:lang", () => { if (shown) render(); });
  load().catch((err) => OC.fail("person-message", err));
});
