// Card office, a person's page (with person.js): issue a card, replace one, bind or unbind a
// bank card (masked numbers only), and cancel the account with a refund (a cancellation
// document, submitted for approval). Each form is shown only to a role the API lets do it,
// and only while the account allows it (a closed account gets none).
"use strict";
(function () {
  const CARD_TYPES = ["standard", "special_shaped", "electronic_student_id", "temporary"];
  let built = false;
  let current = null;

  function section(id, titleKey, children) {
    return OC.el("section", { id: id, "class": "oc-office" },
                 [OC.el("h2", { "data-i18n": titleKey }), ...children]);
  }

  function submit(key, id) { return OC.el("button", { type: "submit", id: id, "data-i18n": key }); }

  function cardIn(form, prefix) {
    const text = form.querySelector("#" + prefix + "-no").value.trim();
    if (!/^[0-9]{1,18}$/.test(text) || Number(text) < 1) return null;
    const out = { card_no: Number(text) };
    const type = form.querySelector("#" + prefix + "-type");
    if (type) out.card_type = type.value;
    const until = form.querySelector("#" + prefix + "-until");
    if (until && until.value) out.valid_until = until.value;
    return out;
  }

  function build(person) {
    const cardsBox = document.getElementById("office-cards");
    const moreBox = document.getElementById("office-more");
    const id = person.id;

    // -- issue a card
    const issue = OC.el("form", { id: "issue-form", "class": "oc-inline" }, [
      OCX.field("issue-no", "office.card_no", OCX.input({ inputmode: "numeric", maxlength: 18,
                                                           required: true })),
      OCX.field("issue-type", "col.card_type",
                OCX.select(CARD_TYPES.map((t) => [t, "card_type." + t]))),
      OCX.field("issue-until", "col.valid_until", OCX.input({ type: "date" })),
      submit("office.issue", "issue-submit")]);
    const issueMsg = OC.el("p", { id: "issue-message", "class": "oc-message", role: "status" });
    issue.addEventListener("submit", async (event) => {
      event.preventDefault();
      const card = cardIn(issue, "issue");
      if (!card) { OC.message(issueMsg, "office.bad_card_no", null, "error"); return; }
      try {
        const out = await OC.api("POST", "/people/" + id + "/cards", card);
        issue.reset();
        await OC_PERSON.reload();
        OC.message(issueMsg, "office.issued", { card: out.card_no }, "ok");
      } catch (err) { OCX.refused(issueMsg, err); }
    });

    // -- replace a card
    const replace = OC.el("form", { id: "replace-form", "class": "oc-inline" }, [
      OCX.field("replace-old", "office.old_card", OC.el("select", {})),
      OCX.field("replace-no", "office.new_card_no", OCX.input({ inputmode: "numeric",
                                                                 maxlength: 18, required: true })),
      submit("office.replace", "replace-submit")]);
    const replaceMsg = OC.el("p", { id: "replace-message", "class": "oc-message", role: "status" });
    replace.addEventListener("submit", async (event) => {
      event.preventDefault();
      const card = cardIn(replace, "replace");
      const old = replace.querySelector("#replace-old").value;
      if (!card) { OC.message(replaceMsg, "office.bad_card_no", null, "error"); return; }
      if (!window.confirm(OC.t("office.confirm_replace", { old: old, card: card.card_no }))) return;
      try {
        const out = await OC.api("POST", "/cards/" + old + "/replace", { new_card: card });
        replace.reset();
        await OC_PERSON.reload();
        OC.message(replaceMsg, "office.replaced", { old: old, card: out.card_no }, "ok");
      } catch (err) { OCX.refused(replaceMsg, err); }
    });

    const cardForms = section("card-forms", "office.card_actions", [
      OC.el("h3", { "data-i18n": "office.issue_title" }), issue, issueMsg,
      OC.el("div", { id: "replace-box" }, [OC.el("h3", { "data-i18n": "office.replace_title" }),
                                           replace, replaceMsg])]);
    cardsBox.append(cardForms);

    // -- bank card
    const bankShown = OC.el("p", { id: "bank-card" });
    const unbind = OCX.button("office.unbind", { id: "bank-unbind", "class": "oc-danger" });
    const bind = OC.el("form", { id: "bank-form", "class": "oc-inline" }, [
      OCX.field("bank-pan", "office.pan", OCX.input({ inputmode: "numeric", maxlength: 19,
                                                       required: true })),
      OCX.field("bank-token", "office.bank_token", OCX.input({ maxlength: 64, required: true })),
      submit("office.bind", "bank-submit")]);
    const bankMsg = OC.el("p", { id: "bank-message", "class": "oc-message", role: "status" });
    bind.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const out = await OC.api("POST", "/people/" + id + "/bank-card", {
          pan: bind.querySelector("#bank-pan").value.replace(/\s+/g, ""),
          bank_token: bind.querySelector("#bank-token").value.trim() });
        bind.reset();  // the full number leaves the page at once
        await loadBankCard();
        OC.message(bankMsg, "office.bound", { pan: out.pan_masked }, "ok");
      } catch (err) { OCX.refused(bankMsg, err); }
    });
    unbind.addEventListener("click", async () => {
      if (!window.confirm(OC.t("office.confirm_unbind"))) return;
      try {
        await OC.api("DELETE", "/people/" + id + "/bank-card");
        await loadBankCard();
        OC.message(bankMsg, "office.unbound", null, "ok");
      } catch (err) { OCX.refused(bankMsg, err); }
    });
    const bank = section("bank-section", "office.bank_title", [bankShown, unbind, bind, bankMsg]);

    // -- cancellation with refund (a document)
    const cancel = OC.el("form", { id: "cancel-form" }, [
      OCX.field("cancel-title", "office.doc_title", OCX.input({ maxlength: 200, required: true })),
      OCX.field("cancel-reason", "office.doc_reason", OC.el("textarea", { maxlength: 2000, rows: 2 })),
      submit("office.cancel_submit", "cancel-submit")]);
    const cancelMsg = OC.el("p", { id: "cancel-message", "class": "oc-message", role: "status" });
    cancel.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!window.confirm(OC.t("office.confirm_cancel"))) return;
      try {
        const doc = await OC.api("POST", "/documents", {
          doc_type: "cancellation", title: cancel.querySelector("#cancel-title").value.trim(),
          reason: cancel.querySelector("#cancel-reason").value, lines: [{ person_id: id }] });
        await OC.api("POST", "/documents/" + doc.id + "/submit", { comment: "" });
        cancel.reset();
        await OC_PERSON.reload();
        OC.message(cancelMsg, "office.cancel_sent", { doc: doc.id, fen: OC.yuan(doc.total_fen) },
                   "ok");
      } catch (err) { OCX.refused(cancelMsg, err); }
    });
    const cancelBox = section("cancel-section", "office.cancel_title",
                              [OC.el("p", { "data-i18n": "office.cancel_help" }), cancel, cancelMsg]);
    moreBox.append(bank, cancelBox);
    OC.applyI18n(cardsBox);
    OC.applyI18n(moreBox);
  }

  async function loadBankCard() {
    const shown = document.getElementById("bank-card");
    const unbind = document.getElementById("bank-unbind");
    try {
      const card = await OC.api("GET", "/people/" + current.person.id + "/bank-card");
      OC.message(shown, "office.bank_bound", { pan: card.pan_masked });
      unbind.hidden = !OC.can("cards.write");
    } catch (err) {
      if (err.status !== 404) { OC.fail(shown, err); return; }
      OC.message(shown, "office.bank_none");
      unbind.hidden = true;
    }
  }

  function update() {
    const { person, cards } = current;
    const closed = person.account_status === "closed";
    const live = cards.filter((c) => c.status !== "cancelled");
    const writer = OC.can("cards.write") && !closed;
    document.getElementById("card-forms").hidden = !writer;
    const old = document.getElementById("replace-old");
    old.textContent = "";
    for (const c of live) old.append(OC.el("option", { value: c.card_no, text: String(c.card_no) }));
    // Frozen: a cancellation waiting for approval holds the account, and the API refuses a
    // replacement until it is rejected or done.
    document.getElementById("replace-box").hidden = live.length === 0
      || person.account_status === "frozen";
    document.getElementById("bank-section").hidden = !OC.can("cards.read") || closed;
    document.getElementById("bank-form").hidden = !writer;
    document.getElementById("cancel-section").hidden = !OC.can("documents.write") || closed
      || person.account_status === "frozen";  // frozen: a cancellation already holds it
    if (OC.can("cards.read") && !closed) loadBankCard();
  }

  document.addEventListener("oc:person", (event) => {
    current = event.detail;
    if (!built) { build(current.person); built = true; }
    update();
  });
})();
