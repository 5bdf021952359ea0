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
    const [balance, cards, txns] = await Promise.all([
      OC.api("GET", "/people/" + id + "/balance"),
      OC.can("cards.read") ? OC.api("GET", "/people/" + id + "/cards") : Promise.resolve([]),
      OC.api("GET", "/people/" + id + "/recent?limit=20"),
    ]);
    shown = { balance: balance, cards: cards, txns: txns };
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
    section.hidden = false;
    OC.applyI18n(section);
  }

  let shown = null;
  window.OC_PERSON = { reload: load };
  document.addEventListener("oc:lang", () => { if (shown) render(); });
  load().catch((err) => OC.fail("person-message", err));
});
